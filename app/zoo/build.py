"""`edgezoo zoo build SPEC`: a family of backbones from one spec, then the zoo table and plot.

A spec (YAML; the shipped ones are app/zoo/specs/*.yaml, named by their stem) lists
entries. Each entry is one `edgezoo run --no-serve`: the same parser and the same
stages (app/pipeline.py), so pretrain -> evaluate -> export + validation -> publish
each skip when done. An entry's RUN_DIR is ``<runs>/<spec>/<name>-<digest>``, the
digest hashing everything the entry says: an unchanged entry finds its finished
RUN_DIR and does nothing, a changed one gets a fresh RUN_DIR and is rebuilt and
published as the repo's next version. One entry failing does not stop the others;
the build ends with an error naming it.

After the entries, ZOO.md and its plot are written from the published repos' own
files (app/zoo/table.py, app/zoo/plot.py). build.json, beside the RUN_DIRs, keeps
each entry's stage times from the build that did the work, for the table's
"build time" column (a rerun that skips everything keeps them).

    name: cpu                       # optional, default: the file's stem
    description: ...
    hub: hf                         # optional: publish to (and list) the Hugging Face Hub; default: the local
                                    # hub, as `edgezoo run` (--hub / --hub-dir on the command line win)
    defaults:                       # merged under every entry (options merge key by key)
      recipe: cpu-quick
      data: cifar10
      org: edgezoo                  # repo = <org>/<name> unless an entry gives repo
      options: {time_budget: 420}   # PretrainConfig options (pretrain/config.py), as in a recipe
      export_options: "--val-images 2000"
    entries:
      - name: resnet18-cifar10-cpu
        model: resnet18
        options: {small_stem: false}
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from zoo.errors import ConfigError, EdgezooError
from zoo.fsutil import atomic_write_json, atomic_write_text
from zoo.hub import HUBS
from zoo.records import CatalogRow

log = logging.getLogger(__name__)

SPECS_DIR = Path(__file__).resolve().parent / "specs"
DEFAULT_RUNS = Path("runs") / "zoo"
DEFAULT_TABLE = Path("ZOO.md")
DEFAULT_PLOT = Path("docs") / "zoo.png"
BUILD_RECORD = "build.json"
_ENTRY_KEYS = {"name", "model", "repo", "recipe", "data", "org", "options", "export_options", "description"}
_SPEC_KEYS = {"name", "description", "hub", "defaults", "entries"}


class ZooBuildError(EdgezooError):
    """An entry of the spec could not be built (the others were)."""


@dataclass(frozen=True)
class ZooEntry:
    """One backbone of a zoo: everything `edgezoo run` needs to make and publish it."""

    name: str
    model: str
    repo: str
    data: str
    recipe: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    export_options: str | None = None
    description: str = ""

    def digest(self) -> str:
        """8 hex digits of everything that shapes the build (a change means a new RUN_DIR)."""
        shaped = {k: v for k, v in dataclasses.asdict(self).items() if k != "description"}
        return hashlib.sha1(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:8]

    def run_dir(self, runs: Path) -> Path:
        return runs / f"{self.name}-{self.digest()}"

    def argv(self, run_dir: Path) -> list[str]:
        """`edgezoo run` arguments of this entry (options are set on the parsed namespace: see `run_args`)."""
        argv = ["--repo", self.repo, "--out", str(run_dir), "--data", self.data, "--model", self.model,
                "--no-serve", "--no-progress"]
        if self.recipe:
            argv += ["--recipe", self.recipe]
        if self.export_options:
            argv.append(f"--export-options={self.export_options}")
        return argv


@dataclass
class ZooSpec:
    name: str
    path: Path
    description: str
    entries: list[ZooEntry]
    hub: str | None = None

    def hub_for(self, hub: str | None, hub_dir: str | Path | None) -> str | None:
        """The hub to publish to and list: the flags' when given (a --hub-dir means the local hub), else the spec's."""
        return hub if hub is not None or hub_dir is not None else self.hub

    def select(self, only: Sequence[str] | None) -> list[ZooEntry]:
        """The entries named by --only (all when None); an unknown name is refused before any work."""
        if not only:
            return list(self.entries)
        names = [e.name for e in self.entries]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not in {self.path.name} (entries: {', '.join(names)})")
        return [e for e in self.entries if e.name in only]


def list_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SPECS_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"no zoo spec {str(name_or_path)!r}: not a file, nor a shipped spec ({', '.join(list_specs())})")


def _entry(raw: Any, defaults: dict[str, Any], where: str) -> ZooEntry:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: an entry must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - _ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_ENTRY_KEYS))})")
    merged = {**defaults, **raw, "options": {**(defaults.get("options") or {}), **(raw.get("options") or {})}}
    for key in ("name", "model"):
        if not merged.get(key):
            raise ConfigError(f"{where}: '{key}' is required")
    repo = merged.get("repo") or (f"{merged['org']}/{merged['name']}" if merged.get("org") else None)
    if repo is None:
        raise ConfigError(f"{where} ({merged['name']}): give 'repo', or 'org' in the entry or the defaults")
    return ZooEntry(name=str(merged["name"]), model=str(merged["model"]), repo=str(repo),
                    data=str(merged.get("data") or "cifar10"), recipe=merged.get("recipe"),
                    options=dict(merged["options"]), export_options=merged.get("export_options"),
                    description=str(merged.get("description") or ""))


def load_spec(name_or_path: str | Path) -> ZooSpec:
    """Parse and check a spec: keys, unique names and repos, and every entry's pretraining config."""
    path = spec_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("entries"), list) or not raw["entries"]:
        raise ConfigError(f"{path}: a zoo spec is a mapping with a non-empty 'entries' list")
    unknown = sorted(set(raw) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_SPEC_KEYS))})")
    defaults = raw.get("defaults") or {}
    entries = [_entry(e, defaults, f"{path.name} entry {i + 1}") for i, e in enumerate(raw["entries"])]
    for key in ("name", "repo"):
        seen = [getattr(e, key) for e in entries]
        twice = sorted({v for v in seen if seen.count(v) > 1})
        if twice:
            raise ConfigError(f"{path}: entries share a {key}: {', '.join(twice)}")
    hub = raw.get("hub")
    if hub is not None and hub not in HUBS:
        raise ConfigError(f"{path}: hub {hub!r}: expected one of {', '.join(HUBS)}")
    spec = ZooSpec(name=str(raw.get("name") or path.stem), path=path, description=str(raw.get("description") or ""),
                   entries=entries, hub=hub)
    for entry in entries:  # a typo fails now, naming the entry, not after the entries before it trained
        run_args(entry, Path("."))
    return spec


def run_args(entry: ZooEntry, run_dir: Path, hub: str | None = None,
             hub_dir: str | Path | None = None) -> argparse.Namespace:
    """The namespace `edgezoo run` would get for this entry; its config is built here to check it."""
    from app.pipeline import add_run_arguments, export_options
    from pretrain.cli import config_from_args
    from pretrain.config import PretrainConfig

    parser = argparse.ArgumentParser(prog=f"edgezoo zoo build: {entry.name}")
    add_run_arguments(parser)
    args = parser.parse_args(entry.argv(run_dir))
    known = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(entry.options) - known)
    if unknown:
        raise ConfigError(f"entry {entry.name}: unknown option(s) {', '.join(unknown)} (see pretrain/config.py)")
    for key, value in entry.options.items():
        setattr(args, key, value)
    args.hub, args.hub_dir = hub, hub_dir
    try:
        config_from_args(args)
        export_options(entry.export_options)
    except SystemExit as exc:  # argparse inside export_options
        raise ConfigError(f"entry {entry.name}: bad export_options {entry.export_options!r}") from exc
    except ConfigError as exc:
        raise ConfigError(f"entry {entry.name}: {exc}") from exc
    return args


# --- the build record -----------------------------------------------------------------------------------

def read_record(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        log.warning("%s is not readable JSON: starting a new build record", path)
        data = {}
    return data if isinstance(data, dict) else {}


def record_entry(record: dict[str, Any], entry: ZooEntry, run_dir: Path, stages: Sequence[Any]) -> None:
    """Keep the stage times of the build that did the work: a skipped stage keeps its recorded time."""
    entries = record.setdefault("entries", {})
    old = entries.get(entry.name) or {}
    seconds = dict(old.get("stage_seconds") or {}) if old.get("digest") == entry.digest() else {}
    for stage in stages:
        if stage.status != "skipped" or stage.name not in seconds:
            seconds[stage.name] = stage.seconds
    entries[entry.name] = {"digest": entry.digest(), "repo": entry.repo, "run_dir": str(run_dir),
                           "stage_seconds": seconds, "seconds": round(sum(seconds.values()), 1)}


# --- the build ------------------------------------------------------------------------------------------

@dataclass
class ZooBuild:
    """What a build did: per entry the pipeline's result (or the error), then the table's rows."""

    spec: ZooSpec
    results: dict[str, Any] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    rows: list[CatalogRow] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def build_zoo(spec: ZooSpec, *, only: Sequence[str] | None = None, hub: str | None = None,
              hub_dir: str | Path | None = None, runs: Path = DEFAULT_RUNS, table: Path | None = DEFAULT_TABLE,
              plot: Path | None = DEFAULT_PLOT) -> ZooBuild:
    """Build the selected entries one after the other, then write the table and plot of the whole spec."""
    from app.pipeline import run_pipeline

    entries = spec.select(only)
    hub = spec.hub_for(hub, hub_dir)
    runs = runs / spec.name
    runs.mkdir(parents=True, exist_ok=True)
    record_path = runs / BUILD_RECORD
    build = ZooBuild(spec=spec, record=read_record(record_path))
    start = time.perf_counter()
    for i, entry in enumerate(entries, 1):
        run_dir = entry.run_dir(runs)
        log.info("zoo %s: entry %d/%d %s -> %s (%s)", spec.name, i, len(entries), entry.name, entry.repo, run_dir)
        try:
            result = run_pipeline(run_args(entry, run_dir, hub, hub_dir))
        except EdgezooError as exc:
            log.error("zoo %s: entry %s failed: %s (the other entries go on; run the build again to resume)",
                      spec.name, entry.name, exc)
            build.failed[entry.name] = str(exc)
            continue
        build.results[entry.name] = result
        record_entry(build.record, entry, run_dir, result.stages)
        atomic_write_json(record_path, build.record)
    build.seconds = time.perf_counter() - start
    build.rows = spec_rows(spec, hub, hub_dir)
    if table is not None:
        write_table(build, table, plot)
    if build.failed:
        raise ZooBuildError(f"{len(build.failed)} of {len(entries)} entries failed: "
                            + "; ".join(f"{n}: {e}" for n, e in build.failed.items()))
    return build


def spec_rows(spec: ZooSpec, hub: str | None, hub_dir: str | Path | None) -> list[CatalogRow]:
    """The index rows of the spec's published repos (an entry never published has none)."""
    from zoo.catalog import list_models

    repos = {e.repo for e in spec.entries}
    return [row for row in list_models(hub=spec.hub_for(hub, hub_dir), hub_dir=hub_dir) if row.repo_id in repos]


def write_table(build: ZooBuild, table: Path, plot: Path | None) -> None:
    """ZOO.md (and the plot beside the table's link to it) from the published rows and the build record."""
    from app.zoo.plot import plot_zoo
    from app.zoo.table import LEGEND, latency_machines, markdown_table, not_learned

    spec, rows = build.spec, build.rows
    if plot is not None and rows:
        plot_zoo([{**r.to_json(), "name": r.name} for r in rows], plot, title=f"edgezoo zoo: {spec.name}")
    by_repo = {e.repo: e for e in spec.entries}
    times = (build.record.get("entries") or {})
    lines = [f"# The edgezoo zoo: `{spec.name}`", "",
             "Generated by `edgezoo zoo build " + _spec_arg(spec) + "` from the published repos' own files "
             "(do not edit by hand). " + spec.description.strip(), ""]
    if rows and plot is not None:
        lines += [f"![kNN top-1 against int8 latency]({_relative(plot, table)})", ""]
    lines += [markdown_table(rows) if rows else "No entry of this spec is published yet.", "", LEGEND, ""]
    machines = latency_machines(rows)
    if machines:
        lines += [f"Latency measured on: {'; '.join(machines)}.", ""]
    weak = not_learned(rows)
    if weak:
        lines += ["Did not beat random init by 5 points: " + ", ".join(weak) + ".", ""]
    lines += ["## Build time of each entry", "",
              "Seconds per stage in the build that did the work (a later build that skips an entry keeps them).", "",
              "| entry | repo | pretrain | evaluate | export | publish | total |", "|---|---|---:|---:|---:|---:|---:|"]
    for row in sorted(rows, key=lambda r: r.repo_id):
        entry = by_repo[row.repo_id]
        rec = times.get(entry.name) or {}
        s = rec.get("stage_seconds") or {}
        cells = [f"{s[n]:.0f}" if n in s else "-" for n in ("pretrain", "evaluate", "export", "publish")]
        total = f"{rec['seconds']:.0f}" if "seconds" in rec else "-"
        lines.append(f"| {entry.name} | {entry.repo} | " + " | ".join(cells) + f" | {total} |")
    atomic_write_text(table, "\n".join(lines) + "\n")
    log.info("zoo table: %s (%d rows)%s", table, len(rows), f", plot: {plot}" if plot is not None and rows else "")


def _spec_arg(spec: ZooSpec) -> str:
    return spec.name if spec.path == SPECS_DIR / f"{spec.name}.yaml" else str(spec.path)


def _relative(target: Path, table: Path) -> str:
    import os

    return Path(os.path.relpath(target.resolve(), table.resolve().parent)).as_posix()
