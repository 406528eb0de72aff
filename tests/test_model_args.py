"""timm constructor arguments (`model_args`, `--model-args`): a ViT at 32 px, trained, saved and rebuilt by timm."""

import json

import pytest
import timm
import torch

from pretrain.config import build_config
from pretrain.trainer import Trainer
from zoo.errors import ConfigError
from zoo.timm_files import backbone_from_config, load_backbone, read_config

# A ViT small enough to train in seconds: 16 patches of 8 px, 2 blocks of width 64.
VIT_ARGS = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 2}
TINY = dict(data="cifar10", model="vit_tiny_patch16_224", small_stem=False, model_args=VIT_ARGS, img_size=32,
            max_images=64, batch_size=32, epochs=1, lr=0.1, proj_hidden_dim=64, proj_dim=32, num_negatives=32,
            threads=1, eval_max_train=64)


@pytest.fixture(scope="module")
def vit_run(tmp_path_factory, cifar_test_200):
    run = tmp_path_factory.mktemp("vit") / "run"
    metrics = Trainer(build_config(None, eval_data=str(cifar_test_200), **TINY), run, progress=False).fit()
    return run, metrics


def test_model_args_are_written_to_the_backbone_config(vit_run):
    run, metrics = vit_run
    cfg = read_config(run / "backbone")
    assert cfg["architecture"] == "vit_tiny_patch16_224" and cfg["model_args"] == VIT_ARGS
    assert metrics["model_args"] == VIT_ARGS and metrics["embed_dim"] == cfg["embed_dim"] == 64
    # A ViT pools its class token and takes one input size only: config.json says so, as timm's own export would.
    assert cfg["global_pool"] == "token"
    assert cfg["pretrained_cfg"]["fixed_input_size"] is True and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    # The run's resolved config keeps them too (a --resume or a continual step rebuilds the same network).
    assert (run / "config.yaml").read_text().count("patch_size: 8") == 1


def test_plain_timm_rebuilds_the_architecture_from_the_folder(vit_run):
    """timm's hub loader path (config.json model_args -> create_model), from the folder as `local-dir:`."""
    run, _ = vit_run
    folder = run / "backbone"
    ours = load_backbone(folder)
    plain = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # strict load of model.safetensors
    assert type(plain) is type(ours) and plain.num_classes == 0
    assert plain.patch_embed.patch_size == (8, 8) and len(plain.blocks) == 2 and plain.embed_dim == 64
    assert plain.global_pool == read_config(folder)["global_pool"]
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(plain(x), ours(x), atol=1e-5)
    # The same from the dict alone, as the random-init baselines (eval, gallery, benchmarks) build it.
    fresh = backbone_from_config(read_config(folder))
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {k: v.shape for k, v in ours.state_dict().items()}


def _pretrain_args(*flags: str):
    from app.cli import build_parser

    return build_parser().parse_args(["pretrain", "--out", "unused", *flags])


def test_cli_flag_parses_a_json_object_and_refuses_anything_else(capsys):
    from pretrain.cli import config_from_args

    args = _pretrain_args("--model", "vit_tiny_patch16_224", "--model-args", json.dumps(VIT_ARGS))
    assert args.model_args == VIT_ARGS and config_from_args(args).model_args == VIT_ARGS
    assert config_from_args(_pretrain_args()).model_args == {}  # not given: the default
    for bad, says in (("[32, 4]", "expected a JSON object"), ("32", "expected a JSON object"),
                      ("{img_size: 32}", "not valid JSON")):
        with pytest.raises(SystemExit):
            _pretrain_args("--model-args", bad)
        err = capsys.readouterr().err
        assert "argument --model-args" in err and says in err, err


def test_a_fixed_size_model_at_another_size_says_how_to_fix_it():
    with pytest.raises(ConfigError, match=r"fixed 224x224 input but img_size is 32.*--model-args"):
        build_config(None, model="vit_tiny_patch16_224", small_stem=False, img_size=32).create_backbone()
    with pytest.raises(ConfigError, match="num_classes cannot be set"):
        build_config(None, model_args={"num_classes": 10})
