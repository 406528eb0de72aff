"""The torch.compile path: it trains like eager, and a backend that fails leaves an eager run, not a dead one."""

import os

import pytest
import torch
from torch import nn

from pretrain.config import build_config
from pretrain.trainer import Trainer, load_checkpoint
from zoo.layout import CHECKPOINT

TINY = dict(data="cifar10", model="resnet18", small_stem=False, img_size=32, max_images=128, epochs=1,
            batch_size=64, proj_hidden_dim=64, proj_dim=32, num_negatives=64, threads=2, eval_max_train=128,
            crop_scale=(1.0, 1.0), jitter_p=0.0, gray_p=0.0, flip_p=0.0, cutmix_alpha=0.0, lr=0.01)


@pytest.fixture(scope="module")
def eager_run(tmp_path_factory, cifar_test_200):
    out = tmp_path_factory.mktemp("eager") / "run"
    return out, Trainer(build_config(**TINY, eval_data=str(cifar_test_200)), out, progress=False).fit()


def _same_training(a_dir, b_dir, a, b) -> None:
    assert abs(b["final_loss"] - a["final_loss"]) < 1e-3 * abs(a["final_loss"])
    sa = load_checkpoint(a_dir / CHECKPOINT)["model"]
    sb = load_checkpoint(b_dir / CHECKPOINT)["model"]
    assert sa.keys() == sb.keys()  # compiling in place keeps the state dict's names
    assert torch.allclose(sa["backbone.conv1.weight"], sb["backbone.conv1.weight"], atol=1e-4)
    assert torch.equal(sa["backbone.bn1.num_batches_tracked"], sb["backbone.bn1.num_batches_tracked"])  # probe undone


def test_traced_backbone_trains_like_eager(tmp_path, eager_run, cifar_test_200):
    """aot_eager: dynamo + AOTAutograd, the path inductor builds on, without minutes of C++ compilation."""
    out = tmp_path / "traced"
    traced = Trainer(build_config(**TINY, eval_data=str(cifar_test_200), compile=True, compile_mode="aot_eager"),
                     out, progress=False).fit()
    assert traced["compile"]["compiled"] and traced["compile"]["mode"] == "aot_eager"
    _same_training(eager_run[0], out, eager_run[1], traced)


def test_a_failing_backend_falls_back_to_eager(tmp_path, eager_run, cifar_test_200, monkeypatch, caplog):
    def broken_compile(self, *args, **kwargs):
        def fail(*a, **k):
            raise RuntimeError("InductorError: no working C++ compiler found")

        self._compiled_call_impl = fail

    monkeypatch.setattr(nn.Module, "compile", broken_compile)
    out = tmp_path / "fallback"
    metrics = Trainer(build_config(**TINY, eval_data=str(cifar_test_200), compile=True), out, progress=False).fit()
    assert metrics["compile"]["compiled"] is False and "no working C++ compiler" in metrics["compile"]["error"]
    assert "training eagerly" in caplog.text
    _same_training(eager_run[0], out, eager_run[1], metrics)


def test_a_bad_compile_mode_is_refused_at_config_time():
    with pytest.raises(Exception, match="compile_mode .* must be one of"):
        build_config(**TINY, compile=True, compile_mode="fastest")


@pytest.mark.skipif(os.environ.get("EDGEZOO_SLOW_TESTS") != "1",
                    reason="inductor compiles C++ for minutes on 2 cores; run with EDGEZOO_SLOW_TESTS=1")
def test_inductor_backbone_trains_like_eager(tmp_path, eager_run, cifar_test_200):
    out = tmp_path / "compiled"
    compiled = Trainer(build_config(**TINY, eval_data=str(cifar_test_200), compile=True), out, progress=False).fit()
    assert compiled["compile"]["compiled"]
    _same_training(eager_run[0], out, eager_run[1], compiled)
