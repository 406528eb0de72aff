"""Command-line front of publishing (`edgezoo publish`); the hub flags every command declares."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from zoo.hub import HUBS

log = logging.getLogger(__name__)

_HUB_HELP = ("where to publish/read: hf (the Hugging Face Hub, or HF_ENDPOINT) or local (a directory of git "
             "repos); default: local, whatever token or HF_ENDPOINT is configured")
_HUB_DIR_HELP = "local hub directory (implies --hub local; default: $EDGEZOO_HUB, else ~/.cache/edgezoo/hub)"


def add_hub_arguments(parser: argparse.ArgumentParser, hub_help: str = _HUB_HELP) -> None:
    """``--hub {hf,local}`` and ``--hub-dir DIR``, as every command declares them (`zoo.hub.choose_hub` reads them)."""
    parser.add_argument("--hub", choices=HUBS, default=None, help=hub_help)
    parser.add_argument("--hub-dir", type=Path, default=None, help=_HUB_DIR_HELP)


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a finished RUN_DIR with backbone/ and a validated export/")
    parser.add_argument("--repo", required=True, help="repository id, org/name")
    parser.add_argument("--version", default=None,
                        help="version tag to create (default: the next vN); an existing version is refused")
    add_hub_arguments(parser)


def run_publish(args: argparse.Namespace) -> Any:
    from zoo.publish import publish

    result = publish(args.run_dir, args.repo, version=args.version, hub=args.hub, hub_dir=args.hub_dir)  # logs where
    print(f"published {result.repo_id}@{result.version} commit {result.commit[:12]} -> {result.location}")
    print(f'load it: zoo.from_pretrained("{result.repo_id}", revision="{result.version}")')
    return result
