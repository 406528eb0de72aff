"""`edgezoo --help` and each subcommand's --help explain every option."""

import os
import re
import subprocess
import sys

from app.cli import build_parser


def _help(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "200"}  # one option per line, whatever the terminal
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args, "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_every_subcommand_documents_every_option():
    parser = build_parser()
    top = _help()
    sub_actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    assert set(sub_actions.choices) >= {"pretrain", "eval"}
    for name, sub in sub_actions.choices.items():
        assert name in top
        text = _help(name)
        for action in sub._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help and len(action.help) > 8, (name, action.dest)
            assert any(opt in text for opt in action.option_strings), (name, action.option_strings)


def test_pretrain_help_shows_defaults_from_the_config():
    text = _help("pretrain")
    assert re.search(r"--num-negatives.*\n?.*default: 10000", text)
    assert "cpu-quick" in text


def test_every_shipped_recipe_builds_a_valid_config():
    """A recipe that does not parse (or names an unknown option) fails here, not in `make demo`."""
    from pretrain.config import build_config, list_recipes

    names = list_recipes()
    assert {"cpu-quick", "cifar10-resnet18", "folder-small"} <= set(names)
    for name in names:
        cfg = build_config(name)
        assert cfg.extra["recipe"] == name
