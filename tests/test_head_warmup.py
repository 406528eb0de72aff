"""--head-warmup-steps, --freeze-bn and --freeze-stages: what starting from pretrained weights keeps of them while
the head (and the later stages) learn.

One epoch of 4 steps on 64 CIFAR-10 images, the backbone's state read before and after (pretrain/trainer.py
`_set_modes`).
"""

from __future__ import annotations

import pytest
import torch

from pretrain.config import INIT_DEFAULTS, build_config
from pretrain.trainer import Trainer
from hubutil import TINY
from zoo.timm_files import load_backbone


def _fit(tmp_path, name: str, **values) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The starting and the trained backbone's state (the same seed builds the same random init)."""
    cfg = build_config(None, **{**TINY, "epochs": 1, "batch_size": 16, "eval_max_train": 64, **values})
    torch.manual_seed(cfg.seed)
    start = {k: v.clone() for k, v in cfg.create_backbone().state_dict().items()}
    Trainer(cfg, tmp_path / name, progress=False).fit()
    return start, load_backbone(tmp_path / name / "backbone").state_dict()


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], stats: bool) -> bool:
    keys = [k for k in a if ("running" in k) == stats and a[k].is_floating_point()]
    assert keys
    return any(not torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("method", ["effssl", "simclr"])
def test_head_warmup_longer_than_the_run_leaves_the_backbone_as_it_started(tmp_path, cifar_test_200, method):
    # (effssl's feature calibration runs BatchNorm in train mode: --freeze-bn keeps the statistics through it)
    start, end = _fit(tmp_path, method, method=method, head_warmup_steps=100, freeze_bn=True,
                      eval_data=str(cifar_test_200))
    assert not _changed(start, end, stats=False) and not _changed(start, end, stats=True)


def test_head_warmup_then_the_whole_network_trains(tmp_path, cifar_test_200):
    start, end = _fit(tmp_path, "lpft", head_warmup_steps=2, eval_data=str(cifar_test_200))
    assert _changed(start, end, stats=False) and _changed(start, end, stats=True)


def test_freeze_bn_trains_the_weights_and_keeps_the_statistics(tmp_path, cifar_test_200):
    start, end = _fit(tmp_path, "bn", freeze_bn=True, eval_data=str(cifar_test_200))
    assert _changed(start, end, stats=False) and not _changed(start, end, stats=True)


def test_frozen_stages_keep_weights_and_statistics_and_the_rest_trains(tmp_path, cifar_test_200):
    from pretrain.stages import stage_modules

    cfg = build_config(None, **TINY)
    frozen_prefixes = ("conv_stem", "bn1", "blocks.0.", "blocks.1.")  # the stem and two block stages
    assert len(stage_modules(cfg.create_backbone())) > 3
    start, end = _fit(tmp_path, "stages", freeze_stages=3, eval_data=str(cifar_test_200))
    frozen = {k: v for k, v in start.items() if k.startswith(frozen_prefixes)}
    rest = {k: v for k, v in start.items() if not k.startswith(frozen_prefixes)}
    assert frozen and all(torch.equal(v, end[k]) for k, v in frozen.items())  # weights and running statistics
    assert _changed(rest, end, stats=False) and _changed(rest, end, stats=True)


def test_freezing_every_stage_is_refused_with_the_count(tmp_path, cifar_test_200):
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--freeze-stages must be in \[0, \d+\] for MobileNetV3"):
        _fit(tmp_path, "all", freeze_stages=99, eval_data=str(cifar_test_200))


def test_wise_ft_saves_the_average_of_the_init_and_the_trained_weights(tmp_path, cifar_test_200):
    import json

    from pretrain.trainer import Trainer as T

    source = tmp_path / "source"
    T(build_config(None, **{**TINY, "epochs": 1, "batch_size": 16, "eval_max_train": 64},
                   eval_data=str(cifar_test_200)), source, progress=False).fit()
    init = load_backbone(source / "backbone").state_dict()
    plain = dict(init=str(source), head_warmup_steps=0, freeze_bn=False, eval_data=str(cifar_test_200))
    _, trained = _fit(tmp_path, "trained", wise_alpha=1.0, **plain)
    _, averaged = _fit(tmp_path, "wise", wise_alpha=0.25, **plain)
    floats = [k for k in init if init[k].is_floating_point()]
    assert any(not torch.equal(init[k], trained[k]) for k in floats)
    for k in floats:
        assert torch.allclose(averaged[k], 0.25 * trained[k] + 0.75 * init[k], atol=1e-5), k
    record = json.loads((tmp_path / "wise" / "backbone" / "config.json").read_text())["edgezoo"]["init"]
    assert record["wise_ft_alpha"] == 0.25


def test_wise_ft_without_an_init_is_refused():
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\(--wise-alpha\) 0.5 averages the trained weights with the starting weights of init \(--init\), "
                                          r"and this run has none"):
        build_config(None, **TINY, wise_alpha=0.5)


def test_an_init_run_defaults_to_lp_ft_and_a_flag_wins(tmp_path):
    from pretrain.init import IMAGENET_WHEELS

    lite0 = "tf_efficientnet_lite0.in1k"
    pytest.importorskip(IMAGENET_WHEELS[lite0].module, reason='pip install ".[imagenet]"')
    cfg = build_config(None, data=str(tmp_path), init=lite0)
    assert cfg.head_warmup_steps == INIT_DEFAULTS["head_warmup_steps"] > 0 and cfg.freeze_bn
    assert not build_config(None, data=str(tmp_path), init=lite0, freeze_bn=False).freeze_bn
    plain = build_config(None, data=str(tmp_path))
    assert plain.head_warmup_steps == 0 and not plain.freeze_bn  # random init: nothing to keep
