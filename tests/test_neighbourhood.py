"""AND's neighbourhood positives (`--neighbours K`): the mined neighbours, the targets and the effssl step."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pretrain.config import build_config
from pretrain.methods import build_method
from pretrain.modules import MemoryBank
from pretrain.modules.bank import repeated
from pretrain.modules.neighbourhood import nearest_neighbours, neighbourhood_targets


def test_nearest_neighbours_are_the_most_similar_other_rows():
    torch.manual_seed(0)
    feats = torch.randn(50, 8)
    sim = F.normalize(feats, dim=1) @ F.normalize(feats, dim=1).T
    sim.fill_diagonal_(-2.0)
    assert torch.equal(nearest_neighbours(feats, 3, chunk=7), sim.topk(3, dim=1).indices)


def test_the_targets_give_the_gradient_of_the_and_loss():
    """-log(softmax mass on the neighbourhood) has gradient (p - q) / tau: a soft-target CE with target q."""
    torch.manual_seed(0)
    tau = 0.2
    logits = torch.randn(4, 10, requires_grad=True)
    rows = torch.arange(10)
    sets = torch.tensor([[0, 3], [1, 2], [2, 9], [3, 4]])
    p = torch.softmax(logits / tau, dim=1)
    inside = (rows.view(1, 1, -1) == sets.unsqueeze(2)).any(dim=1)
    (-torch.log((p * inside).sum(dim=1))).sum().backward()
    q = neighbourhood_targets(logits.detach(), rows, [sets], [torch.ones(())], tau)
    assert torch.allclose(logits.grad, (p.detach() - q) / tau, atol=1e-5)
    assert torch.allclose(q.sum(dim=1), torch.ones(4)) and not bool((q * ~inside).any())


def test_cutmix_splits_the_mass_between_the_two_neighbourhoods():
    logits, rows = torch.zeros(1, 6), torch.arange(6)
    q = neighbourhood_targets(logits, rows, [torch.tensor([[0, 1]]), torch.tensor([[4, 5]])],
                              [torch.tensor(0.7), torch.tensor(0.3)], 0.2)
    assert torch.allclose(q, torch.tensor([[0.35, 0.35, 0.0, 0.0, 0.15, 0.15]]))


def test_neighbour_rows_that_repeat_a_column_are_left_out():
    assert repeated(torch.tensor([3, 1, 3, 2, 1, 5])).tolist() == [False, False, True, False, True, False]
    bank = MemoryBank(20, 4)
    rows, w, dup = bank.select(torch.tensor([0, 1]), 0, extra=torch.tensor([1, 7, 7]))
    assert rows.tolist() == [0, 1, 1, 7, 7] and dup.tolist() == [False, False, True, False, True]
    assert torch.equal(w, bank.weight[rows])
    rows, _, dup = bank.select(torch.tensor([0, 1]), 30, torch.Generator().manual_seed(0), extra=torch.tensor([7]))
    assert torch.equal(dup[3:], torch.isin(rows[3:], torch.tensor([0, 1, 7])))


def _method(neighbours: int, n: int = 24):
    cfg = build_config(None, model="resnet18", small_stem=True, img_size=16, proj_hidden_dim=32, proj_dim=16,
                       num_negatives=0, batch_size=8, neighbours=neighbours, device="cpu")
    backbone = cfg.create_backbone()
    return build_method("effssl", cfg=cfg, backbone=backbone, embed_dim=512, num_samples=n)


def test_effssl_mines_the_backbones_neighbours_and_keeps_them_in_its_state():
    torch.manual_seed(0)
    method = _method(neighbours=3)
    images = torch.randn(24, 3, 16, 16)
    batches = [(images[i:i + 8], torch.arange(i, i + 8)) for i in range(0, 24, 8)]
    method.backbone.eval()
    with torch.no_grad():  # before setup: its calibration (train-mode BatchNorm) moves the running statistics
        expect = nearest_neighbours(method.backbone(images), 3)
    method.train()
    method.setup(lambda: iter(batches))
    assert torch.equal(method.neighbours, expect)
    assert torch.equal(method.state_dict()["neighbours"], expect)  # a resumed run keeps them


def test_effssl_puts_each_images_target_mass_on_its_neighbourhood():
    """The step's instance-CE targets cover the image's neighbours' columns (CutMix off: all its mass)."""
    torch.manual_seed(0)
    images = torch.randn(24, 3, 16, 16)
    batches = [(images[i:i + 8], torch.arange(i, i + 8)) for i in range(0, 24, 8)]
    seen = {}
    for k in (0, 3):
        method = _method(neighbours=k)
        method.cutmix = None
        method.setup(lambda: iter(batches))
        ce = method.ce.forward
        method.ce.forward = lambda logits, targets: seen.setdefault(k, targets) is not None and ce(logits, targets)
        method.training_step([images[:8]], torch.arange(8))
        if k:
            rows = torch.cat([torch.arange(8), method.neighbours[:8].flatten()])
            nbr = method.neighbours[:8]
    own = torch.zeros(8, seen[0].shape[1])
    own[torch.arange(8), torch.arange(8)] = 1.0
    assert torch.equal(seen[0], own)  # without neighbours: the own row only
    q = seen[3]
    assert torch.allclose(q.sum(dim=1), torch.ones(8))
    inside = (rows.view(1, 1, -1) == torch.cat([torch.arange(8).view(-1, 1), nbr], 1).unsqueeze(2)).any(dim=1)
    assert not bool((q * ~inside).any()) and bool(((q * inside).sum(dim=1) > 0).all())
    assert bool((q[torch.arange(8), torch.arange(8)] < 1.0).all())  # shared with the neighbours
