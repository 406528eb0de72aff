"""Backbone factory, small stems registered with timm, timm-native files."""

import subprocess
import sys
from pathlib import Path

import timm
import torch

from zoo.backbones import SMALL_STEM_BASES, create_backbone, embedding_dim
from zoo.errors import ConfigError
from zoo.preprocess import Preprocess
from zoo.timm_files import load_backbone, make_config, read_config, save_backbone


def test_embedding_size_is_measured_not_num_features():
    m = create_backbone("mobilenetv3_large_100")
    assert m.num_features == 960 and embedding_dim(m, 64) == 1280


def test_small_stem_keeps_resolution_and_is_recreated_by_name():
    for base in ("resnet18", "mobilenetv3_small_100", "efficientnet_b0"):
        assert base in SMALL_STEM_BASES
        small = create_backbone(base, small_stem=True).eval()
        stock = create_backbone(base).eval()
        x = torch.randn(1, 3, 32, 32)
        fs = small.forward_features(x)
        fb = stock.forward_features(x)
        assert fs.shape[-1] > fb.shape[-1], base  # less downsampling
        again = timm.create_model(f"{base}_smallstem", num_classes=0)
        assert type(again) is type(small)
        assert again.state_dict().keys() == small.state_dict().keys()


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    m = create_backbone("resnet18", small_stem=True).eval()
    pre = Preprocess(32, (0.4, 0.4, 0.4), (0.2, 0.2, 0.2))
    save_backbone(m, tmp_path / "bb", make_config("resnet18_smallstem", 512, pre))
    cfg = read_config(tmp_path / "bb")
    assert cfg["architecture"] == "resnet18_smallstem" and cfg["num_features"] == 512
    assert cfg["pretrained_cfg"]["mean"] == [0.4, 0.4, 0.4] and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    loaded = load_backbone(tmp_path / "bb")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(m(x), loaded(x), atol=1e-6)
    # plain timm loads the same folder (file source)
    plain = timm.create_model("resnet18_smallstem", pretrained=True, num_classes=0,
                              pretrained_cfg_overlay={"file": str(tmp_path / "bb" / "model.safetensors")}).eval()
    assert torch.allclose(m(x), plain(x), atol=1e-6)


def test_unknown_model_is_a_clear_error():
    import pytest

    with pytest.raises(ConfigError, match="unknown timm model"):
        create_backbone("resnet9000")
    with pytest.raises(ConfigError, match="small stem supports"):
        create_backbone("vit_tiny_patch16_224", small_stem=True)


def test_plain_timm_finds_small_stems_whichever_is_imported_first():
    """`import zoo` then `import timm` (and the other order): timm.create_model knows *_smallstem by name,
    which is what plain `timm.create_model("hf-hub:org/name")` of a published repo needs."""
    check = ("m = timm.create_model('resnet18_smallstem', num_classes=0)\n"
             "assert m.conv1.stride == (1, 1), m.conv1\n"
             "assert timm.is_model('mobilenetv3_small_050_smallstem')\n"
             "print('ok')\n")
    orders = ("import zoo\nimport timm\n", "import timm\nimport zoo\n", "import zoo\nimport timm.models\n")
    for imports in orders:
        proc = subprocess.run([sys.executable, "-c", imports + check], capture_output=True, text=True, timeout=300,
                              cwd=Path(__file__).resolve().parents[1])
        assert proc.returncode == 0 and "ok" in proc.stdout, (imports, proc.stderr[-2000:])
