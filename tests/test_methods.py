"""Methods describe themselves: the record training writes into metrics.json for the card."""

import pytest

from pretrain.config import build_config
from pretrain.methods import METHOD_CLASSES, describe_method


def test_effssl_names_only_the_components_the_run_used():
    full = describe_method(build_config("cifar10-resnet18"))["name"]
    assert "CutMix" in full and "SqrtKL" in full and "every" not in full and "Cao & Wu 2024" in full
    quick = describe_method(build_config("cpu-quick", recalibrate_every=1))["name"]
    assert "CutMix" not in quick and "feature calibration every 1 epoch" in quick and "BatchNorm" in quick
    assert "SqrtKL" not in describe_method(build_config(sqrtkl_weight=0.0))["name"]


def test_every_method_is_cited_with_the_options_that_shape_it():
    keys = {}
    for name in METHOD_CLASSES:
        teacher = {"teacher": "tf_efficientnet_lite0.in1k"} if name == "distill" else {}  # distill requires one
        record = describe_method(build_config(method=name, temperature=0.3, **teacher))
        assert record["key"] == name and record["citation"]["bibtex"].startswith("@")
        assert record["engine_citation"]["key"] == "cao2024efficiency"
        keys[name] = record["citation"]["key"]
    assert keys == {"effssl": "cao2024efficiency", "npid": "wu2018unsupervised", "simclr": "chen2020simple",
                    "distill": "fang2021seed"}
    assert describe_method(build_config(temperature=0.3))["options"]["temperature"] == 0.3
    assert "temperature" not in describe_method(build_config(method="simclr"))["options"]  # SimCLR's is its own
    assert describe_method(build_config(method="npid"))["name"].startswith("NPID")


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_optimizer_option_picks_the_optimizer(tmp_path, name):
    """--optimizer adamw (the zoo's ViT) trains with AdamW and its weight decay; sgd keeps the momentum."""
    import torch

    from pretrain.config import build_config
    from pretrain.trainer import Trainer

    cfg = build_config(None, model="mobilenetv3_small_050", small_stem=True, proj_hidden_dim=32, proj_dim=16,
                       num_negatives=8, batch_size=8, optimizer=name, lr=0.01, weight_decay=0.05, device="cpu")
    trainer = Trainer(cfg, tmp_path / "run")
    opt = trainer._optimizer(trainer._build(num_samples=32))
    assert isinstance(opt, {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name])
    group = opt.param_groups[0]
    assert group["lr"] == 0.01 and group["weight_decay"] == 0.05
    assert ("momentum" in group) == (name == "sgd")
