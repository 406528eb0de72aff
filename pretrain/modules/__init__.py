"""The method's building blocks: one loss or head per small module."""

from pretrain.modules.bank import MemoryBank
from pretrain.modules.cutmix import CutMix, cutmix_targets
from pretrain.modules.heads import ProjectionHead
from pretrain.modules.instance_ce import InstanceCELoss
from pretrain.modules.ntxent import NTXentLoss
from pretrain.modules.queue import EmbeddingQueue
from pretrain.modules.seed import SEEDLoss
from pretrain.modules.sqrtkl import SqrtKLLoss

__all__ = ["MemoryBank", "CutMix", "cutmix_targets", "ProjectionHead", "InstanceCELoss", "NTXentLoss",
           "EmbeddingQueue", "SEEDLoss", "SqrtKLLoss"]
