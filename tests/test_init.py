"""`--init SOURCE`: the backbone starts from pretrained weights and takes their preprocessing (pretrain/init.py).

The ImageNet Lite0 weights come from the `imagenet` extra's wheel, converted once into the (hermetic) edgezoo
cache; nothing here reaches the network.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pretrain import init
from pretrain.config import build_config
from zoo.errors import ConfigError, EdgezooError, MissingDependencyError
from zoo.layout import RunDir
from zoo.manifest import ChecksumError, sha256_file

LITE0 = "tf_efficientnet_lite0.in1k"
# hymenoptera val photos and their ImageNet-1k classes (310 'ant', 309 'bee')
PHOTOS = {"ants/1053149811_f62a3410d3.jpg": 310, "ants/1073564163_225a64f170.jpg": 310,
          "ants/1119630822_cd325ea21a.jpg": 310, "bees/10870992_eebeeb3a12.jpg": 309,
          "bees/1181173278_23c36fac71.jpg": 309, "bees/1297972485_33266a18d9.jpg": 309}


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    pytest.importorskip(init.IMAGENET_WHEELS[LITE0].module, reason='pip install ".[imagenet]"')
    return init.converted_wheel_weights(LITE0)


def test_converted_lite0_names_the_photos_through_plain_timm(lite0_file, hymenoptera_root):
    """Every key mapped (the conversion loads strictly), and timm's own loader with the tag's own preprocessing
    classifies ants and bees as ImageNet does."""
    import timm
    from PIL import Image

    assert sha256_file(lite0_file) == init.IMAGENET_WHEELS[LITE0].sha256
    model = timm.create_model("tf_efficientnet_lite0", pretrained=True,
                              pretrained_cfg_overlay={"file": str(lite0_file)}).eval()
    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))
    x = torch.stack([transform(Image.open(hymenoptera_root / "val" / rel).convert("RGB")) for rel in PHOTOS])
    with torch.no_grad():
        assert model(x).argmax(1).tolist() == list(PHOTOS.values())


def test_the_mapping_refuses_a_checkpoint_that_does_not_cover_the_model(lite0_file):
    import timm

    model = timm.create_model("tf_efficientnet_lite0")
    theirs = {f"{init.efficientnet_pytorch_mapping(model)[k.rpartition('.')[0]]}.{k.rpartition('.')[2]}": v
              for k, v in model.state_dict().items()}
    assert init.efficientnet_pytorch_to_timm(theirs, model).keys() == model.state_dict().keys()
    theirs.pop("_blocks.3._depthwise_conv.weight")
    with pytest.raises(ConfigError, match=r"1 missing \(_blocks\.3\._depthwise_conv\.weight\)"):
        init.efficientnet_pytorch_to_timm(theirs, model)


def test_a_damaged_cache_is_converted_again_and_a_wrong_sha256_is_refused(lite0_file, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEZOO_CACHE", str(tmp_path))
    cached = tmp_path / "init" / f"{LITE0}.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    assert init.converted_wheel_weights(LITE0) == cached
    assert sha256_file(cached) == init.IMAGENET_WHEELS[LITE0].sha256
    pinned = dataclasses.replace(init.IMAGENET_WHEELS[LITE0], sha256="0" * 64)
    monkeypatch.setitem(init.IMAGENET_WHEELS, LITE0, pinned)
    with pytest.raises(ChecksumError, match="edgezoo pins 0000000000000000...: refusing them"):
        init.converted_wheel_weights(LITE0)
    assert not cached.exists()


def test_the_init_sets_architecture_and_preprocessing_unless_given(lite0_file):
    cfg = build_config(None, init=LITE0)
    assert (cfg.model, cfg.small_stem, cfg.img_size, cfg.crop_pct, cfg.mean, cfg.std, cfg.interpolation) == \
        ("tf_efficientnet_lite0", False, 224, 0.875, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    assert build_config(None, init="tf_efficientnet_lite2").img_size == 260  # a bare architecture: its default tag
    cfg = build_config(None, init=LITE0, img_size=64, mean=(0.4, 0.4, 0.4))
    assert (cfg.img_size, cfg.mean, cfg.std) == (64, (0.4, 0.4, 0.4), (0.5, 0.5, 0.5))
    with pytest.raises(ConfigError, match="init .*resume_from .*pass one"):
        build_config(None, init=LITE0, resume_from="runs/x")


def _pretrain_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--img-size", "64", "--proj-hidden-dim", "32", "--proj-dim", "16", "--num-negatives", "0",
            "--threads", "2", "--no-progress", *extra]


@pytest.fixture(scope="module")
def init_run(tmp_path_factory, gallery, lite0_file) -> Path:
    """`edgezoo pretrain --init tf_efficientnet_lite0.in1k --model tf_efficientnet_lite0`: 1 epoch at 64 px on the
    40 ant and bee photos of conftest's gallery."""
    from app.cli import main

    out = tmp_path_factory.mktemp("init-run") / "run"
    assert main(_pretrain_argv(gallery, out, "--init", LITE0, "--model", "tf_efficientnet_lite0")) == 0
    return out


def test_a_run_from_an_init_carries_its_preprocessing_and_names_it(init_run):
    run = RunDir(init_run)
    config = json.loads(run.backbone_config.read_text())
    pre = config["pretrained_cfg"]
    assert (pre["mean"], pre["std"], pre["crop_pct"], pre["interpolation"], pre["input_size"]) == \
        ([0.5] * 3, [0.5] * 3, 0.875, "bicubic", [3, 64, 64])  # --img-size 64 given, the rest the init's
    assert config["architecture"] == "tf_efficientnet_lite0"
    record = config["edgezoo"]["init"]
    assert record["source"] == LITE0 and record["kind"] == "imagenet-wheel" and record["license"] == "apache-2.0"
    assert record["sha256"] == init.IMAGENET_WHEELS[LITE0].sha256
    from zoo.card import init_info

    assert init_info(config)["license"] == "apache-2.0" and "EfficientNet-Lite0" in init_info(config)["origin"]


def test_a_run_dir_its_backbone_folder_and_its_weights_file_load_the_same_weights(init_run):
    import timm

    run = RunDir(init_run)
    saved = load_file(str(run.weights))
    for spec in (str(init_run), str(run.backbone), str(run.weights)):
        source = init.describe_init(spec)
        assert source.architecture == "tf_efficientnet_lite0" and source.pretrained_cfg["mean"] == [0.5] * 3
        backbone = timm.create_model("tf_efficientnet_lite0", num_classes=0)
        record = init.load_init(backbone, spec, "tf_efficientnet_lite0")
        assert record["sha256"] == sha256_file(run.weights)
        state = backbone.state_dict()
        assert state.keys() == saved.keys() and all(torch.equal(state[k], saved[k]) for k in saved), spec
    with pytest.raises(ConfigError, match=rf"--init {init_run}: its weights do not fit --model resnet18: .*missing"):
        init.load_init(timm.create_model("resnet18", num_classes=0), str(init_run), "resnet18")


def test_a_missing_source_is_one_line_and_exit_2(tmp_path, gallery, caplog, monkeypatch):
    from huggingface_hub import constants

    from app.cli import main

    missing = tmp_path / "weights.safetensors"
    assert main(_pretrain_argv(gallery, tmp_path / "run", "--init", str(missing))) == ConfigError.exit_code
    assert f"pretrain failed: --init {missing}: no such file" in caplog.text and "Traceback" not in caplog.text
    # without the wheel and offline: the extra that ships it
    caplog.clear()
    monkeypatch.setitem(init.IMAGENET_WHEELS, LITE0, dataclasses.replace(init.IMAGENET_WHEELS[LITE0],
                                                                         module="edgezoo_no_such_wheel"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(_pretrain_argv(gallery, tmp_path / "run", "--init", LITE0)) == MissingDependencyError.exit_code
    assert 'pip install ".[imagenet]"' in caplog.text and "Traceback" not in caplog.text
    assert not (tmp_path / "run").exists()


def _hf_cache_with(cache: Path, repo_id: str, files: dict[str, Path | dict]) -> None:
    """`repo_id` at main in a Hugging Face cache folder, as huggingface_hub lays one out (files, no blobs)."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, dict):
            (snapshot / name).write_text(json.dumps(content))
        else:
            shutil.copyfile(content, snapshot / name)


def test_hf_hub_repos_and_timm_tags_resolve_through_the_hf_cache_offline(lite0_file, tmp_path, monkeypatch):
    """Without the wheel a Lite0 tag is timm's Hub repo; both kinds read config and weights from the HF cache."""
    import timm
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setitem(init.IMAGENET_WHEELS, LITE0, dataclasses.replace(init.IMAGENET_WHEELS[LITE0],
                                                                         module="edgezoo_no_such_wheel"))
    pcfg = {k: v for k, v in timm.models.get_pretrained_cfg(LITE0).to_dict().items() if v is not None}
    _hf_cache_with(tmp_path, f"timm/{LITE0}", {"model.safetensors": lite0_file, "config.json": {
        "architecture": "tf_efficientnet_lite0", "num_classes": 1000, "pretrained_cfg": pcfg}})
    expected = load_file(str(lite0_file))
    for spec, kind in ((LITE0, "timm"), (f"hf-hub:timm/{LITE0}", "hf-hub")):
        source = init.describe_init(spec)
        assert (source.kind, source.architecture, source.license) == (kind, "tf_efficientnet_lite0", "apache-2.0")
        assert source.config_defaults()["img_size"] == 224 and source.config_defaults()["mean"] == [0.5] * 3
        backbone = timm.create_model("tf_efficientnet_lite0", num_classes=0)
        assert init.load_init(backbone, spec, "tf_efficientnet_lite0")["sha256"] == sha256_file(lite0_file)
        assert all(torch.equal(v, expected[k]) for k, v in backbone.state_dict().items()), spec
    with pytest.raises(EdgezooError, match=r"--init hf-hub:timm/elsewhere: .*not in the local cache"):
        init.describe_init("hf-hub:timm/elsewhere")


def test_eval_measures_the_starting_weights_beside_random_init_and_the_card_shows_them(init_run, gallery):
    """An --init run is worth what it adds to its starting weights: eval.json measures them untrained under the
    same protocol, and the card and the zoo table show them."""
    from types import SimpleNamespace

    from pretrain.evaluate import evaluate_run
    from zoo.card import knn_headline
    from zoo.records import CatalogRow, Evaluation, Metrics
    from app.zoo.table import markdown_table, reference_rows

    result = evaluate_run(init_run, eval_data=str(gallery), max_train=40, device="cpu")
    assert result["init"] == LITE0
    assert 0.5 <= result["init_knn_top1"] <= 1.0  # ImageNet features tell 40 ants from bees
    assert result["random_init_knn_top1"] is not None and result["init_knn_top1"] != result["random_init_knn_top1"]
    assert json.loads(RunDir(init_run).eval.read_text())["init_knn_top1"] == result["init_knn_top1"]
    headline = knn_headline(SimpleNamespace(evaluation=Evaluation.from_json(result), metrics=Metrics(), config={},
                                            data={}))
    assert (headline["init"], headline["init_top1"]) == (LITE0, result["init_knn_top1"])

    row = CatalogRow(repo_id="edgezoo/init", version="v1", architecture="tf_efficientnet_lite0", img_size=64,
                     knn_top1=result["knn_top1"], init=LITE0, init_knn_top1=result["init_knn_top1"], fp32_b1_ms=1.1,
                     int8_b1_ms=5.5)
    (ref,) = reference_rows([row, CatalogRow(repo_id="edgezoo/scratch", architecture="resnet18", knn_top1=0.3)])
    assert (ref.repo_id, ref.knn_top1, ref.fp32_b1_ms, ref.reference) == (LITE0, result["init_knn_top1"], 1.1, True)
    assert ref.int8_b1_ms is None  # its int8 model would be another quantization: not measured
    readout = CatalogRow(**{**row.__dict__, "readout": True, "params_m": 3.88})
    (trunk,) = reference_rows([readout])  # a stage readout started from the plain trunk: not the row's size or speed
    assert (trunk.knn_top1, trunk.architecture, trunk.params_m, trunk.fp32_b1_ms) == (
        result["init_knn_top1"], "tf_efficientnet_lite0", None, None)
    assert f"| {LITE0}, untrained (reference)" in markdown_table([row])
