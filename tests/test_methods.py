"""Methods describe themselves: the record training writes into metrics.json for the card."""

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
        record = describe_method(build_config(method=name, temperature=0.3))
        assert record["key"] == name and record["citation"]["bibtex"].startswith("@")
        assert record["engine_citation"]["key"] == "cao2024efficiency"
        keys[name] = record["citation"]["key"]
    assert keys == {"effssl": "cao2024efficiency", "npid": "wu2018unsupervised", "simclr": "chen2020simple"}
    assert describe_method(build_config(temperature=0.3))["options"]["temperature"] == 0.3
    assert "temperature" not in describe_method(build_config(method="simclr"))["options"]  # SimCLR's is its own
    assert describe_method(build_config(method="npid"))["name"].startswith("NPID")
