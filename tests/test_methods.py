"""Methods describe themselves (the record training writes into metrics.json for the card), and a new method is
one new file in pretrain/methods/."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pretrain.config import build_config
from pretrain.methods import describe_method, registry


def test_effssl_names_only_the_components_the_run_used():
    full = describe_method(build_config("cifar10-resnet18"))["name"]
    assert "CutMix" in full and "SqrtKL" in full and "every" not in full and "Cao & Wu 2024" in full
    quick = describe_method(build_config("cpu-quick", recalibrate_every=1))["name"]
    assert "CutMix" not in quick and "feature calibration every 1 epoch" in quick and "BatchNorm" in quick
    assert "SqrtKL" not in describe_method(build_config(sqrtkl_weight=0.0))["name"]


def test_every_method_is_cited_with_the_options_that_shape_it():
    keys = {}
    for name in registry():
        teacher = {"teacher": "tf_efficientnet_lite0.in1k"} if name == "distill" else {}  # distill requires one
        record = describe_method(build_config(method=name, temperature=0.3, **teacher))
        assert record["key"] == name and record["citation"]["bibtex"].startswith("@")
        assert record["engine_citation"]["key"] == "cao2024efficiency"
        keys[name] = record["citation"]["key"]
    assert keys == {"effssl": "cao2024efficiency", "npid": "wu2018unsupervised", "simclr": "chen2020simple",
                    "distill": "fang2021seed", "readout": "hariharan2015hypercolumns"}
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


TOY_METHOD = '''"""A method written for one test by tests/test_methods.py (and removed after it)."""

from typing import ClassVar

from pretrain.methods.base import Method, StepOutput
from pretrain.methods.info import Citation, MethodInfo


class ToyMethod(Method):
    name: ClassVar[str] = "toy_test_method"
    info: ClassVar[MethodInfo] = MethodInfo("Toy", Citation("toy2026", "A toy.", "@misc{toy2026}", ""))

    def training_step(self, views, idx, shared=None, local=None) -> StepOutput:
        return StepOutput(self.project(views[0]).pow(2).mean())
'''


@pytest.fixture
def toy_method():
    """A temporary module under pretrain/methods/, removed (with its bytecode) whatever the test does."""
    import pretrain.methods

    path = Path(pretrain.methods.__file__).parent / "toy_test_method.py"
    assert not path.exists()
    path.write_text(TOY_METHOD)
    try:
        yield "toy_test_method"
    finally:
        path.unlink()
        Path(importlib.util.cache_from_source(str(path))).unlink(missing_ok=True)
        sys.modules.pop("pretrain.methods.toy_test_method", None)


def test_a_new_method_is_one_new_file_in_pretrain_methods(toy_method, tmp_path, gallery):
    from app.cli import main

    out = tmp_path / "run"
    assert main(["pretrain", "--data", str(gallery), "--out", str(out), "--method", toy_method, "--epochs", "1",
                 "--batch-size", "8", "--max-images", "8", "--img-size", "32", "--model", "resnet18",
                 "--proj-hidden-dim", "32", "--proj-dim", "16", "--num-negatives", "0", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == toy_method and metrics["method_info"]["citation"]["key"] == "toy2026"
    assert (out / "backbone" / "model.safetensors").is_file()


def test_an_unknown_method_is_one_line_listing_the_methods(tmp_path, gallery, caplog):
    from app.cli import main

    assert main(["pretrain", "--data", str(gallery), "--out", str(tmp_path / "run"), "--method", "bogus"]) == 2
    assert "must be one of distill, effssl, npid, readout, simclr; got 'bogus'" in caplog.text
    assert not (tmp_path / "run").exists()
