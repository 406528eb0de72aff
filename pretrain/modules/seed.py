"""SEED distillation loss: the student mimics the teacher's similarity distribution over a queue.

Fang et al., "SEED: Self-supervised Distillation For Visual Representation", ICLR 2021, arXiv:2101.04731. With
unit embeddings s (student, after its projector) and t (teacher) of one image and a queue D of K teacher
embeddings, both score the keys ``[t; D]`` (the image's own teacher embedding first, as the paper adds it):

    p_T = softmax([t.t, t.D] / tau_T),    p_S = softmax([s.t, s.D] / tau_S),    loss = KL(p_T || p_S)

SEED writes it as the cross-entropy -sum p_T log p_S; the KL differs by the entropy of p_T, a constant of the
student, so the gradient is the same and the loss is 0 when the student's distribution equals the teacher's.
The defaults are the authors' released ones (jacobswan1/SEED: tau_S 0.2, tau_T 1e-4): with tau_T that small
p_T is nearly one-hot on the own key, and the loss is a contrastive one with the teacher's embedding as the key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SEEDLoss(nn.Module):
    def __init__(self, student_temperature: float = 0.2, teacher_temperature: float = 1e-4) -> None:
        super().__init__()
        self.student_temperature = student_temperature
        self.teacher_temperature = teacher_temperature

    @staticmethod
    def scores(z: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K) similarities of z with each image's own teacher embedding, then with the queue."""
        return torch.cat([torch.linalg.vecdot(z, teacher, dim=1).unsqueeze(1), z @ queue.T], dim=1)

    def log_targets(self, teacher: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """log p_T: the teacher's distribution over its own embedding and the queue, (B, 1 + K)."""
        t = teacher.detach().float()
        return F.log_softmax(self.scores(t, t, queue.detach().float()) / self.teacher_temperature, dim=1)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor) -> torch.Tensor:
        """student (B, d) unit vectors (differentiated); teacher (B, d) and queue (K, d) unit vectors (not).
        Returns the batch mean of KL(p_T || p_S)."""
        t, q = teacher.detach().float(), queue.detach().float()
        log_s = F.log_softmax(self.scores(student.float(), t, q) / self.student_temperature, dim=1)
        return F.kl_div(log_s, self.log_targets(t, q), reduction="batchmean", log_target=True)
