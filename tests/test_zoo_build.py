"""`edgezoo zoo build` end to end on a two-entry tiny spec: every entry published, the table read from the
published files, and a rebuild that does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import cifar_test_subset

# Two families, both tiny: a small-stem MobileNet and a ViT made small through timm constructor arguments.
TINY_OPTIONS = dict(max_images=128, epochs=1, batch_size=64, proj_hidden_dim=128, proj_dim=64, num_negatives=32,
                    threads=2, eval_max_train=256)
ENTRIES = [
    dict(name="mnv3-tiny", model="mobilenetv3_small_050", options=dict(small_stem=True)),
    dict(name="vit-tiny", model="vit_tiny_patch16_224",
         options=dict(small_stem=False, lr=0.05, model_args=dict(img_size=32, patch_size=8, depth=2, embed_dim=64,
                                                                  num_heads=2))),
]
# Quick and loose, as for any barely trained network: the test checks the zoo, not quantization quality.
EXPORT = "--calib-images 256 --bank-images 1000 --max-knn-drop 100 --int8-median-cosine 0.5"


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def write_spec(path: Path, eval_data: Path, entries: list[dict] = ENTRIES) -> Path:
    spec = {"name": "tiny", "description": "Two tiny backbones for the test.",
            "defaults": {"org": "edgezoo-test", "data": "cifar10", "recipe": "cpu-quick", "export_options": EXPORT,
                         "options": {**TINY_OPTIONS, "eval_data": str(eval_data)}},
            "entries": entries}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, cifar_root) -> dict:
    from app.zoo.build import build_zoo, load_spec

    base = tmp_path_factory.mktemp("zoo")
    spec = load_spec(write_spec(base / "tiny.yaml", cifar_test_subset(cifar_root, base / "eval", 10)))
    paths = dict(hub_dir=base / "hub", runs=base / "runs", table=base / "ZOO.md", plot=base / "zoo.png")
    build = build_zoo(spec, hub="local", **paths)
    return {"spec": spec, "build": build, **paths}


def _published(zoo: dict, repo: str, path: str) -> dict:
    from zoo.hub.local import LocalHub

    hub = LocalHub(zoo["hub_dir"])
    return json.loads(hub.read(repo, hub.refs(repo)["tags"]["v1"], path))


def test_every_entry_is_built_and_published(zoo):
    from zoo.hub.local import LocalHub

    build, hub = zoo["build"], LocalHub(zoo["hub_dir"])
    assert set(build.results) == {"mnv3-tiny", "vit-tiny"} and not build.failed
    for name, result in build.results.items():
        assert _statuses(result) == {s: "ran" for s in ("pretrain", "evaluate", "export", "publish")}, name
        assert list(hub.refs(f"edgezoo-test/{name}")["tags"]) == ["v1"]
        assert result.run_dir.parent == zoo["runs"] / "tiny" and result.run_dir.name.startswith(f"{name}-")
    # the ViT's constructor arguments travel to the published, timm-native config.json
    config = _published(zoo, "edgezoo-test/vit-tiny", "config.json")
    assert config["model_args"]["patch_size"] == 8 and config["model_args"]["depth"] == 2
    record = json.loads((zoo["runs"] / "tiny" / "build.json").read_text())
    assert set(record["entries"]) == {"mnv3-tiny", "vit-tiny"}
    assert all(e["stage_seconds"]["pretrain"] > 0 for e in record["entries"].values())


def test_table_rows_are_the_published_files(zoo):
    rows = {r.repo_id: r for r in zoo["build"].rows}
    assert set(rows) == {"edgezoo-test/mnv3-tiny", "edgezoo-test/vit-tiny"}
    table = zoo["table"].read_text()
    for repo, row in rows.items():
        evaluation = _published(zoo, repo, "training/eval.json")
        validation = _published(zoo, repo, "onnx/validation.json")
        metrics = _published(zoo, repo, "training/metrics.json")
        assert row.knn_top1 == evaluation["knn_top1"]
        assert row.random_init_knn_top1 == evaluation["random_init_knn_top1"]
        assert row.int8_mb == validation["sizes"]["model.int8.onnx"] / 1e6
        assert row.int8_b1_ms == validation["latency_ms"]["ort_int8"]["batch1"]["p50_ms"]
        assert row.gmacs == validation["complexity"]["gmacs"] > 0
        assert row.params_m == validation["complexity"]["params"] / 1e6
        assert row.int8_scheme == validation["quantization"]["scheme"] and row.onnx_passed is True
        assert row.epochs == metrics["epochs"] and row.num_images == metrics["num_images"]
        line = next(ln for ln in table.splitlines() if ln.startswith(f"| {repo.split('/')[1]}@v1"))
        assert f"| {100 * row.knn_top1:.1f} |" in line and f"| {row.int8_mb:.1f} |" in line, line
        assert f"| {row.gmacs:.3f} |" in line, line
    assert "## Build time of each entry" in table and "| mnv3-tiny | edgezoo-test/mnv3-tiny |" in table
    png = zoo["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and "(zoo.png)" in table


def test_a_rebuild_does_nothing(zoo):
    from app.zoo.build import build_zoo
    from zoo.hub.local import LocalHub

    runs = zoo["runs"] / "tiny"
    before, table = _mtimes(runs), zoo["table"].read_text()
    tags = {e.repo: LocalHub(zoo["hub_dir"]).refs(e.repo)["tags"] for e in zoo["spec"].entries}
    again = build_zoo(zoo["spec"], hub="local", hub_dir=zoo["hub_dir"], runs=zoo["runs"], table=zoo["table"],
                      plot=zoo["plot"])
    for name, result in again.results.items():
        assert set(_statuses(result).values()) == {"skipped"}, (name, _statuses(result))
    assert {k: v for k, v in _mtimes(runs).items() if k != "build.json"} == \
        {k: v for k, v in before.items() if k != "build.json"}
    assert {e.repo: LocalHub(zoo["hub_dir"]).refs(e.repo)["tags"] for e in zoo["spec"].entries} == tags
    assert zoo["table"].read_text() == table  # the build times of the build that did the work are kept


def test_list_table_shows_the_zoo(zoo, capsys):
    from app.cli import main

    assert main(["list", "--table", "--hub", "local", "--hub-dir", str(zoo["hub_dir"])]) == 0
    out = capsys.readouterr().out
    assert "int8 b1 ms" in out and "mnv3-tiny@v1" in out and "vit-tiny@v1" in out


def test_a_changed_entry_gets_its_own_run_dir(tmp_path):
    from app.zoo.build import load_spec

    first = load_spec(write_spec(tmp_path / "a.yaml", tmp_path))
    changed = [dict(ENTRIES[0], options=dict(ENTRIES[0]["options"], lr=0.1)), ENTRIES[1]]
    second = load_spec(write_spec(tmp_path / "b.yaml", tmp_path, changed))
    assert first.entries[0].run_dir(tmp_path) != second.entries[0].run_dir(tmp_path)
    assert first.entries[1].run_dir(tmp_path) == second.entries[1].run_dir(tmp_path)


@pytest.mark.parametrize("entry, message", [
    (dict(name="x", model="resnet18", options=dict(learning_rate=0.1)), "entry x: unknown option(s) learning_rate"),
    (dict(name="x", model="resnet18", options=dict(method="byol")), "entry x: method"),
    (dict(name="x", model="resnet18", colour="red"), "unknown key(s) colour"),
    (dict(model="resnet18"), "'name' is required"),
])
def test_a_bad_spec_is_refused_before_any_work(tmp_path, entry, message):
    from app.zoo.build import load_spec
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_spec(write_spec(tmp_path / "bad.yaml", tmp_path, [entry]))


def test_only_names_entries_of_the_spec(tmp_path):
    from app.zoo.build import load_spec
    from zoo.errors import ConfigError

    spec = load_spec(write_spec(tmp_path / "a.yaml", tmp_path))
    assert [e.name for e in spec.select(["vit-tiny"])] == ["vit-tiny"]
    with pytest.raises(ConfigError, match="vit-small: not in a.yaml"):
        spec.select(["vit-small"])


def test_shipped_specs_load():
    from app.zoo.build import list_specs, load_spec

    assert {"cpu", "gpu", "photos"} <= set(list_specs())
    for name in ("cpu", "gpu"):  # the four families on CIFAR-10
        spec = load_spec(name)
        assert len(spec.entries) >= 4, name
        models = {e.model for e in spec.entries}
        assert {"resnet18", "mobilenetv3_large_100"} <= models and any(m.startswith("vit") for m in models), name
    from app.zoo.build import run_args
    from pretrain.cli import config_from_args

    photos = load_spec("photos")  # the photo benchmark's winners: an adapted ImageNet init and a distilled student
    configs = {e.model: config_from_args(run_args(e, Path("."))) for e in photos.entries}
    assert configs["tf_efficientnet_lite0"].init == "tf_efficientnet_lite0.in1k"
    student = configs["mobilenetv3_small_100"]
    assert (student.method, student.init, student.teacher) == ("distill", None, "tf_efficientnet_lite2.in1k")


@pytest.mark.parametrize("spec_hub, flags, where", [
    (None, {}, "local"),                        # no word anywhere: the local hub, whatever token is set
    ("hf", {}, "hf"),                           # the spec says so
    ("hf", {"hub": "local"}, "local"),          # the command line wins
    ("hf", {"hub_dir": "HUB"}, "local"),        # ... and a --hub-dir names the local hub
])
def test_a_spec_may_say_which_hub_and_the_flags_win(tmp_path, monkeypatch, spec_hub, flags, where):
    """`hub: hf` in a spec publishes (and lists) there; publish and table ask the same hub. Nothing is built."""
    import app.pipeline
    import zoo.catalog
    from app.zoo.build import build_zoo, load_spec
    from zoo.hub import choose_hub

    path = write_spec(tmp_path / "a.yaml", tmp_path, ENTRIES[:1])
    if spec_hub:
        path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "hub": spec_hub}, sort_keys=False))
    flags = {k: tmp_path / "hub" if v == "HUB" else v for k, v in flags.items()}
    asked = []
    monkeypatch.setattr(app.pipeline, "run_pipeline",
                        lambda args: asked.append(("publish", choose_hub(args.hub, args.hub_dir), args.hub_dir))
                        or app.pipeline.PipelineResult(run_dir=Path(args.out), repo_id=args.repo))
    monkeypatch.setattr(zoo.catalog, "list_models",
                        lambda hub, hub_dir: asked.append(("list", choose_hub(hub, hub_dir), hub_dir)) or [])
    spec = load_spec(path)
    assert spec.hub == spec_hub
    build_zoo(spec, runs=tmp_path / "runs", table=None, plot=None, **flags)
    hub_dir = flags.get("hub_dir")
    assert asked == [("publish", where, hub_dir), ("list", where, hub_dir)]


def test_a_spec_with_an_unknown_hub_is_refused(tmp_path):
    from app.zoo.build import load_spec
    from zoo.errors import ConfigError

    path = write_spec(tmp_path / "a.yaml", tmp_path, ENTRIES[:1])
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), "hub": "s3"}, sort_keys=False))
    with pytest.raises(ConfigError, match="hub 's3': expected one of hf, local"):
        load_spec(path)
