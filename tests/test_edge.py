"""The torch-free edge runtime (zoo.edge): same embeddings as torch on real photos, clear errors, no torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from zoo.edge import (EdgeEmbedder, ExportNotValidatedError, InputSizeError, ModelFileError, read_validation,
                      write_preprocess)
from zoo.images import ImageError, find_images
from zoo.manifest import file_record, sha256_file
from zoo.preprocess import Preprocess

ROOT = Path(__file__).resolve().parents[1]
SIZE, CROP_PCT = 96, 0.875
PRE = Preprocess(SIZE, crop_pct=CROP_PCT)  # ImageNet mean/std, bicubic


@pytest.fixture(scope="module")
def photos(hymenoptera_root) -> list[Path]:
    """Real JPEG photos of different sizes and aspect ratios (ants and bees)."""
    paths = find_images(hymenoptera_root / "val")
    return paths[::max(1, len(paths) // 12)][:12]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small timm backbone exported like `edgezoo export` does (random weights: the runtime is under test)."""
    import torch

    from export.onnx_export import export_onnx
    from zoo.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone("mobilenetv3_small_050").eval()
    folder = tmp_path_factory.mktemp("edge-export")
    export_onnx(model, folder / "model.onnx", SIZE)
    write_preprocess(PRE, folder)
    return model, folder


def _torchvision_inputs(images: list[Image.Image]):
    """The independent reference: torchvision v2 eval transform (timm's), uint8 pixels -> normalised tensor."""
    import torch
    from torchvision.transforms import v2

    tf = v2.Compose([v2.Resize(math.floor(SIZE / CROP_PCT), interpolation=v2.InterpolationMode.BICUBIC,
                               antialias=True),
                     v2.CenterCrop(SIZE), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(mean=list(PRE.mean), std=list(PRE.std))])
    return torch.stack([tf(img) for img in images])


def _pil(paths: list[Path]) -> list[Image.Image]:
    out = []
    for p in paths:
        with Image.open(p) as img:
            out.append(ImageOps.exif_transpose(img).convert("RGB"))
    return out


def test_preprocessing_matches_torchvision_on_real_photos(photos):
    images = _pil(photos)
    assert len({img.size for img in images}) > 1, "want photos of several sizes"
    ours = PRE.normalize(PRE.decode(images)[0])
    ref = _torchvision_inputs(images).numpy()
    assert ours.shape == ref.shape == (len(images), 3, SIZE, SIZE)
    assert np.abs(ours - ref).max() <= 1e-3
    # The tensor path (torch's own antialiased bicubic, rounded to uint8) lands within a level or two.
    import torch
    from torchvision.transforms import v2

    resize = v2.Compose([v2.PILToTensor(), v2.Resize(math.floor(SIZE / CROP_PCT), antialias=True,
                                                     interpolation=v2.InterpolationMode.BICUBIC), v2.CenterCrop(SIZE)])
    tensor_path = torch.stack([resize(img) for img in images]).permute(0, 2, 3, 1).numpy().astype(np.int16)
    assert np.abs(tensor_path - PRE.decode(images)[0].astype(np.int16)).mean() < 1.0


def test_embeddings_match_torch_on_real_photos(exported, photos):
    import torch

    model, folder = exported
    emb = EdgeEmbedder(folder / "model.onnx")
    assert emb.preprocess == PRE and emb.input_name == "input"
    got = emb.embed(photos, batch_size=5)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model(_torchvision_inputs(_pil(photos))), dim=1).numpy()
    assert got.shape == (len(photos), emb.dim) and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.sum(got * ref, axis=1).min() > 0.9999


def test_mixed_inputs_give_the_same_embedding(exported, photos):
    _, folder = exported
    emb = EdgeEmbedder(folder / "model.onnx", threads=1)
    path = photos[0]
    img = _pil([path])[0]
    arr = np.asarray(img)
    out = emb.embed([path, str(path), img, arr])
    np.testing.assert_allclose(out, np.repeat(out[:1], 4, axis=0), atol=1e-6)
    np.testing.assert_allclose(emb.embed(img), out[:1], atol=1e-6)  # a single image is accepted as such
    assert emb.embed([]).shape == (0, emb.dim)


def test_edge_runtime_never_imports_torch(exported, photos):
    _, folder = exported
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "timm", "torchvision", "pretrain", "export"):
                    raise ImportError("edge runtime must not import " + name)
        sys.meta_path.insert(0, Block())
        from zoo.edge import EdgeEmbedder
        emb = EdgeEmbedder({str(folder / "model.onnx")!r})
        x = emb.embed({[str(p) for p in photos]!r})
        print(json.dumps({{"shape": list(x.shape), "norms": [float((r * r).sum()) for r in x],
                          "torch": "torch" in sys.modules, "timm": "timm" in sys.modules}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"][0] == len(photos) and out["shape"][1] > 0
    assert out["torch"] is False and out["timm"] is False
    assert np.allclose(out["norms"], 1.0, atol=1e-4)


def test_published_repo_layout_reads_config_json(exported, tmp_path):
    """root config.json (timm pretrained_cfg) + onnx/model.onnx: preprocessing comes from config.json."""
    _, folder = exported
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model.onnx").write_bytes((folder / "model.onnx").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "x", "pretrained_cfg": PRE.to_pretrained_cfg()}))
    emb = EdgeEmbedder(tmp_path / "onnx" / "model.onnx")
    assert emb.preprocess == PRE


def test_missing_and_corrupt_model_files(exported, tmp_path):
    _, folder = exported
    with pytest.raises(ModelFileError, match="no such model file"):
        EdgeEmbedder(tmp_path / "nope.onnx", preprocess=PRE)
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"\x08\x07 this is not a protobuf" * 50)
    with pytest.raises(ModelFileError, match="not a loadable"):
        EdgeEmbedder(garbage, preprocess=PRE)
    truncated = tmp_path / "truncated" / "model.onnx"
    truncated.parent.mkdir()
    truncated.write_bytes((folder / "model.onnx").read_bytes()[:5000])
    with pytest.raises(ModelFileError):
        EdgeEmbedder(truncated, preprocess=PRE)
    bare = tmp_path / "bare" / "model.onnx"  # no preprocess.json, no ../config.json, no argument
    bare.parent.mkdir()
    bare.write_bytes((folder / "model.onnx").read_bytes())
    with pytest.raises(ModelFileError, match="preprocess"):
        EdgeEmbedder(bare)


def test_wrong_input_size_is_refused(exported):
    _, folder = exported
    with pytest.raises(InputSizeError, match=f"{SIZE}x{SIZE}"):
        EdgeEmbedder(folder / "model.onnx", preprocess=Preprocess(SIZE + 32))


def test_non_image_inputs_raise_image_error(exported, tmp_path):
    _, folder = exported
    emb = EdgeEmbedder(folder / "model.onnx")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ImageError, match="notes.jpg"):
        emb.embed([text])
    with pytest.raises(ImageError):
        emb.embed([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(ImageError):
        emb.embed([{"not": "an image"}])


def test_read_validation_refuses_missing_failed_and_changed_exports(tmp_path):
    with pytest.raises(ExportNotValidatedError, match="missing"):
        read_validation(tmp_path)
    model, ort_file = tmp_path / "model.onnx", tmp_path / "model.ort"
    model.write_bytes(b"weights")
    ort_file.write_bytes(b"ort")
    report = {"passed": True, "checks": [{"name": "fp32_min_cosine", "passed": True}],
              "files": {"model.onnx": file_record(model), "model.ort": file_record(ort_file)}}
    (tmp_path / "validation.json").write_text(json.dumps(report))
    assert read_validation(tmp_path).passed is True
    ort_file.unlink()  # a published copy may carry only some of the files
    assert read_validation(tmp_path).passed is True
    model.write_bytes(b"weightz")  # same size, other content
    with pytest.raises(ExportNotValidatedError, match="changed since validation"):
        read_validation(tmp_path)
    report["passed"], report["checks"][0]["passed"] = False, False
    (tmp_path / "validation.json").write_text(json.dumps(report))
    with pytest.raises(ExportNotValidatedError, match="fp32_min_cosine"):
        read_validation(tmp_path, verify_files=False)
    assert read_validation(tmp_path, require_passed=False, verify_files=False).passed is False


def test_validation_written_before_the_one_record_shape_still_verifies(tmp_path):
    """Exports validated (and repos published) before the records became ``{sha256, size}`` listed their files as
    ``{bytes, sha256}``: they still verify, and a changed file is still refused."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"weights")
    assert file_record(model) == {"sha256": sha256_file(model), "size": 7}  # what new reports write
    report = {"passed": True, "checks": [], "files": {"model.onnx": {"bytes": 7, "sha256": sha256_file(model)}}}
    (tmp_path / "validation.json").write_text(json.dumps(report))
    assert read_validation(tmp_path).passed is True
    model.write_bytes(b"weightz")  # same size, other content
    with pytest.raises(ExportNotValidatedError, match="changed since validation"):
        read_validation(tmp_path)
    model.write_bytes(b"weights, longer")
    with pytest.raises(ExportNotValidatedError, match="changed since validation"):
        read_validation(tmp_path)
