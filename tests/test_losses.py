"""Loss math: SqrtKL's gradient identity, CutMix targets, instance CE."""

import torch
import torch.nn.functional as F

from pretrain.modules import CutMix, InstanceCELoss, NTXentLoss, SqrtKLLoss, cutmix_targets


def test_sqrtkl_gradient_is_scaled_negative_entropy_gradient():
    """With u detached, grad KL(p || sg(u)) = -(1 - a) grad H(p) (METHOD.md)."""
    torch.manual_seed(0)
    for power in (0.5, 0.3):
        logits = torch.randn(6, 40, dtype=torch.float64, requires_grad=True)
        SqrtKLLoss(power)(logits).backward()
        g_kl = logits.grad.clone()
        logits.grad = None
        p = torch.softmax(logits, dim=1)
        entropy = -(p * torch.log(p)).sum(dim=1).mean()
        entropy.backward()
        g_h = logits.grad
        assert torch.allclose(g_kl.double(), -(1 - power) * g_h, atol=1e-6), (power, (g_kl - -(1 - power) * g_h).abs().max())


def test_sqrtkl_is_zero_for_uniform_and_positive_otherwise():
    loss = SqrtKLLoss(0.5)
    assert loss(torch.zeros(3, 10)).abs() < 1e-6
    assert loss(torch.randn(3, 10) * 3) > 1e-3


def test_instance_ce_matches_cross_entropy_for_hard_targets():
    torch.manual_seed(1)
    logits = torch.randn(8, 20)
    target = torch.randint(0, 20, (8,))
    ours = InstanceCELoss(0.2)(logits, F.one_hot(target, 20).float())
    assert torch.allclose(ours, F.cross_entropy(logits / 0.2, target), atol=1e-5)


def test_hand_written_backwards_match_autograd_of_the_textbook_formulas():
    """The memory-lean backwards equal autograd through log_softmax, for soft targets and both losses."""
    torch.manual_seed(2)
    logits = torch.randn(5, 30, dtype=torch.float64, requires_grad=True)
    targets = torch.softmax(torch.randn(5, 30, dtype=torch.float64) * 3, dim=1)
    for ours, reference in (
        (lambda s: InstanceCELoss(0.2)(s, targets),
         lambda s: -(targets * F.log_softmax(s / 0.2, dim=1)).sum(dim=1).mean()),
        (lambda s: SqrtKLLoss(0.5)(s),
         lambda s: (lambda lp: (lp.exp() * (lp - (0.5 * lp - torch.logsumexp(0.5 * lp, 1, keepdim=True)).detach()))
                    .sum(dim=1).mean())(F.log_softmax(s, dim=1))),
    ):
        (g_ours,) = torch.autograd.grad(3.0 * ours(logits), logits)
        (g_ref,) = torch.autograd.grad(3.0 * reference(logits), logits)
        # The losses compute in float32 whatever the input dtype (the bank logits are fp32 or bf16).
        assert torch.allclose(ours(logits).double(), reference(logits), atol=1e-5)
        assert torch.allclose(g_ours.double(), g_ref, atol=1e-6), (g_ours - g_ref).abs().max()


def test_cutmix_targets_put_ratio_on_own_and_rest_on_partner():
    own = torch.tensor([0, 1, 2])
    partner = torch.tensor([2, 1, 0])
    t = cutmix_targets(5, own, partner, torch.tensor(0.7))
    assert torch.allclose(t.sum(dim=1), torch.ones(3))
    assert torch.isclose(t[0, 0], torch.tensor(0.7)) and torch.isclose(t[0, 2], torch.tensor(0.3))
    assert torch.isclose(t[1, 1], torch.tensor(1.0))  # own == partner: all mass on one row
    assert t[:, 3:].abs().sum() == 0


def test_cutmix_ratio_is_the_kept_area_and_at_least_half():
    g = torch.Generator().manual_seed(0)
    cm = CutMix(alpha=0.5)
    for _ in range(20):
        x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 1, 32, 32).contiguous()
        mixed, perm, ratio = cm(x, g)
        kept = (mixed == x).float().mean(dim=(1, 2, 3))
        moved = perm != torch.arange(4)
        assert torch.allclose(kept[moved], ratio.expand(int(moved.sum())), atol=1e-6)
        assert 0.5 - 1e-6 <= float(ratio) <= 1.0


def test_ntxent_lower_for_matching_views():
    torch.manual_seed(0)
    z = torch.randn(16, 32)
    loss = NTXentLoss(0.5)
    assert loss(z, z + 0.01 * torch.randn_like(z)) < loss(z, torch.randn(16, 32))


def test_projector_out_bn_centres_the_batch_and_default_head_does_not():
    """--proj-out-bn: z has zero batch mean, so calibrated rows do not share one direction."""
    from pretrain.modules import ProjectionHead

    torch.manual_seed(0)
    x = torch.randn(64, 16).abs()
    plain, centred = ProjectionHead(16, 32, 8), ProjectionHead(16, 32, 8, out_bn=True)
    assert len(centred) == len(plain) + 1
    assert centred(x).mean(dim=0).abs().max() < 1e-5
    assert plain(x).mean(dim=0).abs().max() > 1e-3
