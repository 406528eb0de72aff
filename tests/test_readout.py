"""`--method readout`: a linear embedding over a frozen trunk's last stages (zoo/readout.py, pretrain/readout.py).

The trunk is a small random-init timm backbone folder made by the test and passed as --init; the runs are 32 px
on the module's 40 hymenoptera photos.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pretrain.config import INIT_DEFAULTS, build_config
from pretrain.trainer import Trainer, load_checkpoint
from zoo.edge import ModelFileError
from zoo.errors import ConfigError
from zoo.layout import READOUT, READOUT_KEY, RunDir
from zoo.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from zoo.readout import StageReadout

ARCH = "mobilenetv3_small_050"
SIZE = 32


def _trunk(seed: int = 0) -> torch.nn.Module:
    from zoo.backbones import create_backbone

    torch.manual_seed(seed)
    return create_backbone(ARCH).eval()


def _save(model: torch.nn.Module, folder: Path, extra: dict | None = None) -> Path:
    from zoo.timm_files import make_config, save_backbone

    pre = Preprocess(SIZE, IMAGENET_MEAN, IMAGENET_STD)
    dim = int(model(torch.zeros(1, 3, SIZE, SIZE)).shape[1])
    return save_backbone(model, folder, make_config(ARCH, dim, pre, extra=extra))


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    return _save(_trunk(), tmp_path_factory.mktemp("init") / "backbone")


def _config(gallery: Path, init: Path, **overrides):
    values = dict(data=str(gallery), eval_data=str(gallery), method="readout", init=str(init), model=ARCH,
                  img_size=SIZE, readout_stages=2, readout_views=3, proj_dim=16, epochs=4, batch_size=16,
                  max_images=32, eval_max_train=32, threads=1, device="cpu")
    return build_config(None, **{**values, **overrides})


# --- the module and its files --------------------------------------------------------------------------------

def test_the_readout_round_trips_and_its_trunk_stays_plain_timm(tmp_path):
    import timm
    from safetensors.torch import load_file

    from zoo.timm_files import load_backbone

    readout = StageReadout.build(_trunk(), 2, 16, SIZE)
    assert readout.stages == (5, 6) and readout.part_dims[0] == 1024  # the trunk's embedding, then 2 stages
    readout.set_means(readout.pooled(torch.randn(8, 3, SIZE, SIZE)))
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    folder = _save(readout, tmp_path / "backbone", extra={READOUT_KEY: readout.spec()})
    assert set(load_file(str(folder / READOUT))) == {"means", "proj.weight", "proj.bias"}
    loaded = load_backbone(folder)
    assert isinstance(loaded, StageReadout)
    with torch.no_grad():
        assert torch.allclose(loaded(x), readout(x), atol=1e-6) and loaded(x).shape == (3, 16)
        plain = timm.create_model(ARCH, num_classes=0).eval()  # what timm alone makes of the repo's weights
        plain.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
        assert torch.allclose(plain(x), readout.trunk(x), atol=1e-6)

    (folder / READOUT).unlink()
    with pytest.raises(ModelFileError, match="readout.safetensors: missing"):
        load_backbone(folder)
    _save(readout, folder, extra={READOUT_KEY: readout.spec()})
    _save(_trunk(), folder)  # a plain model written over it: no readout left to be loaded with other weights
    assert not (folder / READOUT).exists() and not isinstance(load_backbone(folder), StageReadout)


def test_the_readout_keeps_none_of_the_fine_tuning_defaults_of_init_and_checks_its_options(init_dir, gallery):
    cfg = _config(gallery, init_dir)
    assert (cfg.head_warmup_steps, cfg.freeze_bn, cfg.wise_alpha) == (0, False, 1.0)
    assert build_config(None, init=str(init_dir), model=ARCH).wise_alpha == INIT_DEFAULTS["wise_alpha"]
    with pytest.raises(ConfigError, match="readout_views"):
        _config(gallery, init_dir, readout_views=1)


# --- a run -----------------------------------------------------------------------------------------------------

class _Killed(Exception):
    pass


@pytest.fixture(scope="module")
def readout_run(tmp_path_factory, gallery, init_dir) -> dict:
    """A run killed while caching its second view, then resumed: the trunk passes each run made."""
    import pretrain.readout as fitting

    run = tmp_path_factory.mktemp("readout") / "run"
    real, calls = fitting.pooled_pass, []

    def killed_at_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the clean pass, view 1, then view 2
            raise _Killed
        return real(*args, **kwargs)

    fitting.pooled_pass = killed_at_third
    try:
        with pytest.raises(_Killed):
            Trainer(_config(gallery, init_dir), run, progress=False).fit()
        killed = len(load_checkpoint(RunDir(run).checkpoint)["views"])
        calls.clear()
        fitting.pooled_pass = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
        metrics = Trainer(None, run, resume=True, progress=False).fit()  # type: ignore[arg-type]
    finally:
        fitting.pooled_pass = real
    return {"run": run, "killed_views": killed, "resumed_passes": len(calls), "metrics": metrics}


def test_a_killed_run_resumes_at_the_next_view_and_the_head_trains_its_epochs(readout_run):
    run, metrics = readout_run["run"], readout_run["metrics"]
    assert readout_run["killed_views"] == 1 and readout_run["resumed_passes"] == 2  # views 2 and 3, no clean pass
    assert metrics["method"] == "readout" and metrics["images_seen"] == 3 * 32
    assert metrics["method_info"]["citation"]["key"] == "hariharan2015hypercolumns"
    rows = (run / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 4 and rows[-1].split(",")[4]  # every head epoch; kNN at the last
    assert float(rows[0].split(",")[1]) > float(rows[-1].split(",")[1])  # the NT-Xent loss falls
    assert metrics["embed_dim"] == 16


def test_the_trunk_is_the_inits_bit_for_bit_and_config_json_describes_the_readout(readout_run, init_dir):
    from safetensors.torch import load_file

    run = RunDir(readout_run["run"])
    trunk, init = load_file(str(run.weights)), load_file(str(init_dir / "model.safetensors"))
    assert trunk.keys() == init.keys() and all(torch.equal(trunk[k], init[k]) for k in init)
    config = json.loads(run.backbone_config.read_text())
    assert config["edgezoo"][READOUT_KEY]["stages"] == [5, 6] and config["embed_dim"] == 16
    assert run.readout.is_file() and run.readout.stat().st_mtime_ns <= run.weights.stat().st_mtime_ns


def test_a_readout_model_exports_publishes_and_loads_as_it_was_trained(readout_run, gallery, tmp_path):
    """The ONNX files hold the readout (validated against torch), and from_pretrained's torch backend fetches
    readout.safetensors, verified by the manifest: every way in embeds alike."""
    import numpy as np

    import zoo
    from export.pipeline import export_run
    from zoo.images import find_images
    from zoo.pretrained import TorchEmbedder
    from zoo.publish import publish

    from export.quantize import float_head, graph_nodes

    run = readout_run["run"]
    report = export_run(run)
    assert report["passed"] and report["embed_dim"] == 16
    head = float_head(graph_nodes(RunDir(run).onnx))  # the readout's own nodes stay float in the int8 model
    assert head and report["quantization"]["float_nodes"] >= len(head)
    from zoo.hub.local import LocalHub

    publish(run, "edgezoo/readout", hub_dir=tmp_path / "hub")
    card = LocalHub(tmp_path / "hub").read("edgezoo/readout", "v1", "README.md").decode()
    assert "This model's embedding is a stage readout" in card and "stages 5, 6" in card
    paths = find_images(gallery)[:6]
    expected = TorchEmbedder(RunDir(run).backbone).embed(paths)
    torch_model = zoo.from_pretrained("edgezoo/readout", hub_dir=tmp_path / "hub", backend="torch")
    assert (torch_model.path / READOUT).is_file()
    np.testing.assert_allclose(torch_model.embed(paths), expected, atol=1e-5)
    onnx_model = zoo.from_pretrained("edgezoo/readout", hub_dir=tmp_path / "hub", backend="onnx")
    assert float(np.min(np.sum(onnx_model.embed(paths) * expected, axis=1))) > 0.999


def test_the_demos_references_for_a_readout_model_are_its_plain_trunk(readout_run, gallery):
    """The gallery score compares the model with its architecture at random init and with its --init weights:
    for a readout those are the trunk, whose embedding is wider than the readout's."""
    from app.gallery import init_embedder, random_init_embedder
    from zoo.images import find_images

    config = json.loads(RunDir(readout_run["run"]).backbone_config.read_text())
    paths = find_images(gallery)[:3]
    assert random_init_embedder(config)(paths).shape == (3, 1024)
    assert init_embedder(config)(paths).shape == (3, 1024)
