"""Command-line front of publishing (`edgezoo publish`) and the zoo's index (`edgezoo list`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

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


def add_list_arguments(parser: argparse.ArgumentParser) -> None:
    add_hub_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the index as JSON instead of a table")
    parser.add_argument("--table", action="store_true",
                        help="the zoo table: kNN against random init, size, GMACs, fp32/int8 latency, int8 validation")


_COLUMNS = (("repo_id", "model"), ("version", "latest"), ("versions", "versions"), ("architecture", "architecture"),
            ("method", "method"), ("data", "data"), ("img_size", "px"), ("embed_dim", "dim"),
            ("knn_top1", "kNN top-1"), ("rankme", "RankMe"), ("onnx_passed", "ONNX ok"))


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "knn_top1":
        return f"{100 * value:.2f}%"
    if key == "rankme":
        return f"{value:.1f}"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the index (fixed-width columns)."""
    cells = [[title for _, title in _COLUMNS]] + [[_cell(k, r.get(k)) for k, _ in _COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> list[dict[str, Any]]:
    from zoo.catalog import list_models
    from zoo.hub import choose_hub, default_hub_note
    from zoo.hub_local import local_hub_dir

    note = default_hub_note(args.hub, args.hub_dir, "lists")
    if note:
        log.info("listing the local hub %s: %s", local_hub_dir(args.hub_dir), note)
    rows = list_models(hub=args.hub, hub_dir=args.hub_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        where = "the Hub" if choose_hub(args.hub, args.hub_dir) == "hf" else str(local_hub_dir(args.hub_dir))
        print(f"no published models in {where}")
    elif args.table:
        from zoo.zoo_table import LEGEND, markdown_table

        print(markdown_table(rows))
        print()
        print(LEGEND)
    else:
        print(format_table(rows))
    return rows
