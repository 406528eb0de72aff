"""Command-line fronts of the zoo: ``edgezoo zoo build|table SPEC`` and ``edgezoo list``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Sequence

from app.zoo.build import (BUILD_RECORD, DEFAULT_PLOT, DEFAULT_RUNS, DEFAULT_TABLE, ZooBuild, read_record, build_zoo,
                           list_specs, load_spec, spec_rows, write_table)
from zoo.cli import add_hub_arguments
from zoo.records import CatalogRow

log = logging.getLogger(__name__)


def add_zoo_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="zoo_command", required=True, metavar="ZOO_COMMAND")
    b = sub.add_parser("build", help="train, export, validate and publish every entry of a spec, then write ZOO.md",
                       description="Build a zoo spec entry by entry (finished stages are skipped), then ZOO.md and "
                                   "its plot from the published repos.")
    b.add_argument("spec", help=f"a spec YAML path, or a shipped spec: {', '.join(list_specs())}")
    b.add_argument("--only", nargs="+", metavar="NAME", default=None, help="build only these entries")
    add_hub_arguments(b, "hub to publish to and read the table from: hf or local (default: the spec's hub: key, "
                         "else local)")
    b.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help=f"where RUN_DIRs go (default: {DEFAULT_RUNS}/<spec>)")
    b.add_argument("--table", type=Path, default=DEFAULT_TABLE, help=f"the zoo table (default: {DEFAULT_TABLE})")
    b.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"the zoo plot (default: {DEFAULT_PLOT})")
    t = sub.add_parser("table", help="write ZOO.md and its plot for a spec from the hub, without building",
                       description="Rewrite a spec's ZOO.md and plot from the published repos.")
    t.add_argument("spec", help=f"a spec YAML path, or a shipped spec: {', '.join(list_specs())}")
    add_hub_arguments(t, "hub to read from: hf or local (default: the spec's hub: key, else local)")
    t.add_argument("--runs", type=Path, default=DEFAULT_RUNS, help="where the build record is")
    t.add_argument("--table", type=Path, default=DEFAULT_TABLE, help=f"the zoo table (default: {DEFAULT_TABLE})")
    t.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help=f"the zoo plot (default: {DEFAULT_PLOT})")


def run_zoo(args: argparse.Namespace) -> ZooBuild:
    spec = load_spec(args.spec)
    if args.zoo_command == "build":
        build = build_zoo(spec, only=args.only, hub=args.hub, hub_dir=args.hub_dir, runs=args.runs,
                          table=args.table, plot=args.plot)
    else:
        build = ZooBuild(spec=spec, record=read_record(args.runs / spec.name / BUILD_RECORD),
                         rows=spec_rows(spec, args.hub, args.hub_dir))
        write_table(build, args.table, args.plot)
    from app.zoo.table import COMPACT, markdown_table

    if build.rows:
        print(markdown_table(build.rows, limit=5, columns=COMPACT))
    print(f"{args.table}: {len(build.rows)} of {len(spec.entries)} entries published"
          + (f", built in {build.seconds:.0f} s" if build.seconds else ""))
    return build


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


def format_table(rows: Sequence[CatalogRow]) -> str:
    """A plain-text table of the index (fixed-width columns)."""
    cells = [[title for _, title in _COLUMNS]] + [[_cell(k, getattr(r, k)) for k, _ in _COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_list(args: argparse.Namespace) -> list[CatalogRow]:
    from zoo.catalog import list_models
    from zoo.hub import default_hub_note, open_hub

    hub = open_hub(args.hub, args.hub_dir)
    note = default_hub_note(args.hub, args.hub_dir, "lists")
    if note:
        log.info("listing %s: %s", hub.describe(), note)
    rows = list_models(hub=args.hub, hub_dir=args.hub_dir)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2))
    elif not rows:
        print(f"no published models in {hub.describe()}")
    elif args.table:
        from app.zoo.table import LEGEND, markdown_table

        print(markdown_table(rows))
        print()
        print(LEGEND)
    else:
        print(format_table(rows))
    return rows
