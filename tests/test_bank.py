"""Memory bank: calibration covers every row; the grad rule is a step along autograd's gradient."""

import torch
import torch.nn.functional as F

from pretrain.modules import MemoryBank, cutmix_targets


def test_calibrate_fills_every_row_including_last_partial_batch():
    torch.manual_seed(0)
    n, d, batch = 37, 8, 8
    bank = MemoryBank(n, d)
    feats = torch.randn(n, d)
    batches = [(feats[i:i + batch], torch.arange(i, min(i + batch, n))) for i in range(0, n, batch)]
    assert batches[-1][0].shape[0] == 5  # a partial last batch
    bank.calibrate(batches, encode=lambda x: x * 3.0)
    assert bool(bank.filled.all())
    assert torch.allclose(bank.weight, F.normalize(feats, dim=1), atol=1e-6)


def test_ema_update_rule():
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, update="ema", momentum=0.5)
    before = bank.weight.clone()
    idx = torch.tensor([1, 7])
    z = F.normalize(torch.randn(2, 4), dim=1)
    bank.update(idx, z)
    expect = F.normalize(0.5 * before[idx] + 0.5 * z, dim=1)
    assert torch.allclose(bank.weight[idx], expect, atol=1e-6)
    untouched = torch.ones(10, dtype=torch.bool)
    untouched[idx] = False
    assert torch.equal(bank.weight[untouched], before[untouched])


def test_grad_update_is_a_step_along_autograd_gradient_of_instance_ce():
    """W_sel <- normalize(W_sel - eta * tau * dL/dW_sel), rows repeated in the selection accumulate."""
    torch.manual_seed(0)
    n, d, b, tau, eta = 50, 16, 4, 0.2, 0.7
    bank = MemoryBank(n, d, update="grad", lr=eta)
    w0 = bank.weight.clone()
    idx = torch.tensor([3, 9, 20, 41])
    neg = torch.tensor([9, 11, 11, 30, 3])  # duplicates of each other and of batch rows
    rows = torch.cat([idx, neg])
    z = F.normalize(torch.randn(b, d), dim=1)
    targets = cutmix_targets(rows.numel(), torch.arange(b), torch.tensor([1, 0, 3, 2]), torch.tensor(0.8))

    w_sel = w0[rows].clone().requires_grad_(True)
    logits = z @ w_sel.T
    loss = -(targets * F.log_softmax(logits / tau, dim=1)).sum()  # summed instance CE
    loss.backward()
    # accumulate per bank row, as the rule must
    grad_rows = torch.zeros(n, d).index_add_(0, rows, w_sel.grad)
    expect = w0.clone()
    touched = torch.unique(rows)
    expect[touched] = F.normalize(w0[touched] - eta * tau * grad_rows[touched], dim=1)

    probs = torch.softmax(logits.detach() / tau, dim=1)
    bank.update(idx, z, rows, probs, targets)
    assert torch.allclose(bank.weight, expect, atol=1e-5), (bank.weight - expect).abs().max()
    # the positive moves toward z, a sampled negative away from it
    assert (bank.weight[41] @ z[3]) > (w0[41] @ z[3])
    assert (bank.weight[30] @ z.sum(0)) < (w0[30] @ z.sum(0)) + 1e-6


def test_select_reads_rows_before_update_and_masks_duplicate_negatives():
    bank = MemoryBank(20, 4)
    idx = torch.tensor([0, 1, 2])
    g = torch.Generator().manual_seed(0)
    rows, w_sel, dup = bank.select(idx, 200, g)
    assert torch.equal(rows[:3], idx)
    assert torch.equal(dup[:3], torch.zeros(3, dtype=torch.bool))
    assert torch.equal(dup[3:], torch.isin(rows[3:], idx))
    bank.update(idx, torch.ones(3, 4))
    assert not torch.allclose(w_sel[:3], bank.weight[idx])  # a copy, not a view


def test_bank_momentum_zero_replaces_rows_and_grad_rule_needs_an_explicit_step():
    import pytest

    from pretrain.config import build_config
    from zoo.errors import ConfigError

    cfg = build_config(bank_momentum=0.0)  # ema with m = 0: the row becomes the new feature
    bank = MemoryBank(4, 3, update=cfg.bank_update, momentum=cfg.bank_momentum)
    z = F.normalize(torch.randn(2, 3), dim=1)
    bank.update(torch.tensor([1, 3]), z)
    assert torch.allclose(bank.weight[torch.tensor([1, 3])], z, atol=1e-6)
    with pytest.raises(ConfigError, match="set bank_lr"):
        build_config(bank_momentum=0.0, bank_update="grad")
    assert build_config(bank_momentum=0.0, bank_update="grad", bank_lr=0.5).effective_bank_lr == 0.5
    with pytest.raises(ConfigError, match="bank_momentum"):
        build_config(bank_momentum=1.0)
