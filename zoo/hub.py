"""Hubs a model is published to and read from: the Hugging Face Hub, or a local hub.

A local hub is a directory of bare git repositories, ``<root>/models/<org>/<name>``
(branch ``main``, one commit and one ``vN`` tag per published version): the
layout olah serves read-only as a Hub-compatible mirror (its ``mirrors-path``),
so one machine publishes and an offline fleet downloads with the ordinary
huggingface_hub client. Everything goes through the git CLI: commits are built
with plumbing on a private index, and the branch and the version tag move in
one ref transaction, so an interrupted publish never leaves a half-written
version and a concurrent one cannot overwrite it. Publishes stage files in the
hub's ``.staging/`` (not TMPDIR), in folders named by host and pid, so the
next publish removes what a killed one left (`scratch_dir`).

Which hub: ``--hub`` if given; a ``--hub-dir`` means the local hub; otherwise the
Hugging Face Hub when HF_ENDPOINT or a token is configured, else the local hub
at EDGEZOO_HUB or the per-user cache. torch-free.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from zoo.errors import EdgezooError

log = logging.getLogger(__name__)

HUBS = ("hf", "local")
DEFAULT_BRANCH = "main"
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
REPO_ID_RE = re.compile(rf"^{_NAME}/{_NAME}$")
REF_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
VERSION_RE = re.compile(r"^v(\d+)$")
_GIT_IDENTITY = ("-c", "user.name=edgezoo", "-c", "user.email=edgezoo@localhost")
STAGING_DIR = ".staging"  # <local hub>/.staging: scratch of publishes and commits (olah serves only models/)
_SCRATCH_RE = re.compile(r"^edgezoo-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


class HubError(EdgezooError):
    """A hub operation failed (the message says which and why)."""


class UnknownRepoError(HubError):
    """No such repository on the hub that was asked."""


class UnknownRevisionError(HubError):
    """The repository exists but not the branch, tag or commit."""


class OfflineError(HubError):
    """The files are not cached and the hub cannot be reached (or HF_HUB_OFFLINE=1)."""


class RefExistsError(HubError):
    """A tag (version) or branch that must be new already exists, or the branch moved meanwhile."""


# --- names ----------------------------------------------------------------------------------------------

def check_repo_id(repo_id: str) -> str:
    """``org/name`` with Hub-safe characters (no paths, no '..')."""
    if not isinstance(repo_id, str) or not REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise HubError(f"invalid repository id {repo_id!r}: expected 'org/name' (letters, digits, '-', '_', '.')")
    return repo_id


def check_ref_name(name: str, what: str = "revision") -> str:
    if not isinstance(name, str) or not REF_NAME_RE.match(name) or ".." in name or name.endswith(".lock"):
        raise HubError(f"invalid {what} name {name!r}: letters, digits, '-', '_', '.' only")
    return name


def check_repo_path(path: str) -> str:
    """A file path inside a repo: relative, POSIX, no '..', no '.git', no control characters."""
    parts = path.split("/") if isinstance(path, str) else []
    if (not parts or path.startswith("/") or "\\" in path or any(p in ("", ".", "..", ".git") for p in parts)
            or any(ord(c) < 32 for c in path)):
        raise HubError(f"invalid path in repository: {path!r}")
    return path


def next_version(tags: Iterable[str]) -> str:
    """``v(N+1)`` after the highest ``vN`` tag (``v1`` for a new repo)."""
    numbers = [int(m.group(1)) for t in tags if (m := VERSION_RE.match(t))]
    return f"v{max(numbers, default=0) + 1}"


def scrub(text: str, secret: str | None) -> str:
    """Remove a token from a message that is about to be logged or raised."""
    return text.replace(secret, "***") if secret else text


# --- which hub ------------------------------------------------------------------------------------------

def local_hub_dir(hub_dir: str | Path | None = None) -> Path:
    """--hub-dir, else EDGEZOO_HUB, else ``<edgezoo cache>/hub``."""
    if hub_dir:
        return Path(hub_dir).expanduser()
    if os.environ.get("EDGEZOO_HUB"):
        return Path(os.environ["EDGEZOO_HUB"]).expanduser()
    from zoo.datasets import cache_dir

    return cache_dir() / "hub"


def hf_token() -> str | None:
    """The configured Hugging Face token (HF_TOKEN or `hf auth login`); never logged."""
    from huggingface_hub import get_token

    return get_token()


def choose_hub(hub: str | None = None, hub_dir: str | Path | None = None) -> str:
    """'hf' or 'local' (see the module docstring for the order)."""
    if hub is not None:
        if hub not in HUBS:
            raise HubError(f"unknown hub {hub!r}: expected one of {', '.join(HUBS)}")
        return hub
    if hub_dir:
        return "local"
    return "hf" if os.environ.get("HF_ENDPOINT") or hf_token() else "local"


# --- scratch folders that outlive a killed process only until the next one -----------------------------

def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_dead_scratch(parent: Path) -> list[Path]:
    """Remove the scratch folders in `parent` whose owner (a process on this host) is gone; returns them.

    Folders of other hosts (a hub on shared storage) and of live processes are left alone.
    """
    removed = []
    for path in parent.glob("edgezoo-*") if parent.is_dir() else ():
        match = _SCRATCH_RE.match(path.name)
        if match and match["host"] == _host() and not _pid_alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    if removed:
        log.info("removed %d scratch folder(s) left in %s by killed processes", len(removed), parent)
    return removed


@contextmanager
def scratch_dir(parent: Path) -> Iterator[Path]:
    """A private folder ``parent/edgezoo-<host>-<pid>-<token>``, removed on exit.

    A process killed with SIGKILL cannot clean up after itself; its folder is named by its
    host and pid so that the next user of `parent` finds and removes it (`remove_dead_scratch`).
    """
    parent.mkdir(parents=True, exist_ok=True)
    remove_dead_scratch(parent)
    path = parent / f"edgezoo-{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- the local hub: bare git repositories ---------------------------------------------------------------

class LocalHub:
    """A directory of bare git repos, ``models/<org>/<name>``, written with the git CLI."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / "models" / check_repo_id(repo_id)

    def exists(self, repo_id: str) -> bool:
        return (self.repo_dir(repo_id) / "HEAD").is_file()

    @property
    def staging(self) -> Path:
        """Where publishes and commits stage files (beside the repositories, cleaned by the next one)."""
        return self.root / STAGING_DIR

    def _git(self, repo_id: str, *args: str, stdin: bytes | None = None,
             env: Mapping[str, str] | None = None) -> bytes:
        cmd = ["git", *_GIT_IDENTITY, f"--git-dir={self.repo_dir(repo_id)}", *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            if "reference already exists" in err or "but expected" in err or "cannot lock ref" in err:
                raise RefExistsError(f"{repo_id}: {err.splitlines()[-1]}")
            raise HubError(f"git {args[0]} failed in {self.repo_dir(repo_id)}: {err}")
        return proc.stdout

    def create(self, repo_id: str) -> bool:
        """Create the bare repo (branch main); False if it already existed."""
        path = self.repo_dir(repo_id)
        if self.exists(repo_id):
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["git", "init", "--quiet", "--bare", f"--initial-branch={DEFAULT_BRANCH}", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise HubError(f"cannot create {path}: {proc.stderr.strip()}")
        return True

    def require(self, repo_id: str) -> None:
        if not self.exists(repo_id):
            raise UnknownRepoError(f"{repo_id}: no such repository in the local hub {self.root}")

    def list_repos(self) -> list[str]:
        base = self.root / "models"
        found = [f"{p.parent.name}/{p.name}" for p in base.glob("*/*") if (p / "HEAD").is_file()]
        return sorted(r for r in found if REPO_ID_RE.match(r))

    def refs(self, repo_id: str) -> dict[str, dict[str, str]]:
        """``{"branches": {name: commit}, "tags": {name: commit}}`` (tags peeled)."""
        self.require(repo_id)
        out = self._git(repo_id, "for-each-ref", "--format=%(refname) %(objectname) %(*objectname)").decode()
        refs: dict[str, dict[str, str]] = {"branches": {}, "tags": {}}
        for line in out.splitlines():
            name, sha, *peeled = line.split(" ")
            for prefix, group in (("refs/heads/", "branches"), ("refs/tags/", "tags")):
                if name.startswith(prefix):
                    refs[group][name[len(prefix):]] = (peeled[0] if peeled and peeled[0] else sha)
        return refs

    def resolve(self, repo_id: str, revision: str | None = None) -> str | None:
        """The commit of a branch, tag or (abbreviated) sha; None if unknown."""
        self.require(repo_id)
        rev = revision or DEFAULT_BRANCH
        if rev.startswith("-") or any(c.isspace() for c in rev):
            return None
        try:
            return self._git(repo_id, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
        except HubError:
            return None

    def files(self, repo_id: str, commit: str) -> list[str]:
        out = self._git(repo_id, "ls-tree", "-r", "-z", "--name-only", commit)
        return [p.decode() for p in out.split(b"\0") if p]

    def read(self, repo_id: str, commit: str, path: str) -> bytes | None:
        try:
            return self._git(repo_id, "cat-file", "blob", f"{commit}:{check_repo_path(path)}")
        except HubError:
            return None

    def checkout(self, repo_id: str, commit: str, dest: str | Path, paths: Iterable[str] | None = None) -> Path:
        """Write the files of `commit` (or only `paths`) under `dest`."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        # The index lives beside `dest` (a reader may not write to the hub): never left in TMPDIR.
        with scratch_dir(dest.parent) as tmp:
            env = {"GIT_INDEX_FILE": str(tmp / "index")}
            self._git(repo_id, "read-tree", commit, env=env)
            wanted = ["-a"] if paths is None else ["--", *(check_repo_path(p) for p in paths)]
            self._git(repo_id, f"--work-tree={dest}", "checkout-index", "-f", *wanted, env=env)
        return dest

    def commit(self, repo_id: str, files: Mapping[str, str | Path | bytes], *, message: str,
               description: str = "", branch: str = DEFAULT_BRANCH, deletes: Iterable[str] = (),
               replace: bool = False, parent: str | None = None, tag: str | None = None) -> str:
        """One commit on `branch` (and optionally a new `tag` on it), atomically; returns its sha.

        `files` maps repo paths to local files or bytes; `deletes` removes files or
        folders; `replace` starts from an empty tree (a publish is a full snapshot).
        The branch moves only if it still points where it did when we started (or
        at `parent`, when given), and the tag must be new: both or neither.
        """
        self.require(repo_id)
        check_ref_name(branch, "branch")
        if tag is not None:
            check_ref_name(tag, "tag")
        head = self.resolve(repo_id, f"refs/heads/{branch}")
        if parent is not None and parent != head:
            raise RefExistsError(f"{repo_id}: {branch} is at {head or 'nothing'}, not at the parent {parent}")
        entries: dict[str, tuple[str, str]] = {}
        if head and not replace:
            listing = self._git(repo_id, "ls-tree", "-r", "-z", "--full-tree", head)
            for item in filter(None, listing.split(b"\0")):
                meta, path = item.decode().split("\t", 1)
                mode, _, sha = meta.split(" ")
                entries[path] = (mode, sha)
        for gone in deletes:
            gone = check_repo_path(gone.rstrip("/"))
            entries = {p: e for p, e in entries.items() if p != gone and not p.startswith(gone + "/")}
        with scratch_dir(self.staging) as tmp:
            entries.update(self._write_blobs(repo_id, files, tmp))
            index = "".join(f"{mode} {sha}\t{path}\0" for path, (mode, sha) in sorted(entries.items()))
            env = {"GIT_INDEX_FILE": str(tmp / "index")}
            self._git(repo_id, "update-index", "--add", "-z", "--index-info", stdin=index.encode(), env=env)
            tree = self._git(repo_id, "write-tree", env=env).decode().strip()
        text = message if not description else f"{message}\n\n{description}"
        sha = self._git(repo_id, "commit-tree", tree, *(["-p", head] if head else []), "-F", "-",
                        stdin=text.encode()).decode().strip()
        updates = [f"update refs/heads/{branch} {sha} {head}" if head else f"create refs/heads/{branch} {sha}"]
        if tag is not None:
            updates.append(f"create refs/tags/{tag} {sha}")
        self._update_refs(repo_id, updates)
        return sha

    def _write_blobs(self, repo_id: str, files: Mapping[str, str | Path | bytes],
                     tmp: Path) -> dict[str, tuple[str, str]]:
        """Store every file as a git blob (one git call); returns {path: (mode, sha)}."""
        sources: list[tuple[str, Path]] = []
        for i, (rel, src) in enumerate(sorted(files.items())):
            check_repo_path(rel)
            if isinstance(src, bytes):
                spool = tmp / f"blob-{i}"
                spool.write_bytes(src)
                src = spool
            sources.append((rel, Path(src).resolve()))
        if not sources:
            return {}
        listing = "".join(f"{p}\n" for _, p in sources).encode()
        shas = self._git(repo_id, "hash-object", "-w", "--no-filters", "--stdin-paths", stdin=listing).split()
        return {rel: ("100644", sha.decode()) for (rel, _), sha in zip(sources, shas)}

    def tag(self, repo_id: str, tag: str, revision: str | None = None) -> str:
        """Create `tag` at `revision` (default main); RefExistsError if it exists."""
        check_ref_name(tag, "tag")
        sha = self.resolve(repo_id, revision)
        if sha is None:
            raise UnknownRevisionError(f"{repo_id}: no revision {revision or DEFAULT_BRANCH!r} to tag")
        self._update_refs(repo_id, [f"create refs/tags/{tag} {sha}"])
        return sha

    def _update_refs(self, repo_id: str, updates: list[str]) -> None:
        script = "start\n" + "".join(u + "\n" for u in updates) + "prepare\ncommit\n"
        self._git(repo_id, "update-ref", "--stdin", stdin=script.encode())


# --- reading either hub ---------------------------------------------------------------------------------

def hf_errors_to_hub_errors(exc: BaseException, repo_id: str, revision: str | None) -> HubError:
    """Map huggingface_hub's exceptions to ours (order matters: subclasses first)."""
    from huggingface_hub import errors as hf

    token = hf_token()
    if isinstance(exc, hf.RevisionNotFoundError):
        return UnknownRevisionError(f"{repo_id}: no revision {revision or DEFAULT_BRANCH!r} on the hub")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return UnknownRepoError(f"{repo_id}: no such repository on the hub (or no access to it)")
    if isinstance(exc, hf.LocalEntryNotFoundError):
        return OfflineError(f"{repo_id}@{revision or DEFAULT_BRANCH}: not in the local cache and the hub cannot be "
                            "reached (HF_HUB_OFFLINE=1 or no network); download it once while online")
    if isinstance(exc, hf.EntryNotFoundError):
        return HubError(f"{repo_id}@{revision or DEFAULT_BRANCH}: a file is missing: {scrub(str(exc), token)}")
    return HubError(f"{repo_id}: hub request failed: {scrub(str(exc), token)}")


_INDEX_FILES = ("config.json", "training/metrics.json", "onnx/validation.json")


def _json_or_none(data: bytes | str | None) -> dict[str, Any] | None:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return None


def _latest_version(tags: Iterable[str]) -> str | None:
    numbered = sorted((int(m.group(1)), t) for t in tags if (m := VERSION_RE.match(t)))
    return numbered[-1][1] if numbered else None


def _index_row(repo_id: str, tags: Sequence[str], read: Callable[[str], bytes | str | None]) -> dict[str, Any]:
    """One row of the zoo's index from a repo's own files (`read(path)` at its latest version)."""
    config, metrics, validation = (_json_or_none(read(p)) or {} for p in _INDEX_FILES)
    return {
        "repo_id": repo_id, "version": _latest_version(tags), "versions": sum(bool(VERSION_RE.match(t)) for t in tags),
        "architecture": config.get("architecture"), "method": metrics.get("method"),
        "data": (config.get("edgezoo") or {}).get("data"), "img_size": metrics.get("img_size"),
        "embed_dim": config.get("embed_dim"), "knn_top1": metrics.get("knn_top1"), "rankme": metrics.get("rankme"),
        "epochs": metrics.get("epochs"), "onnx_passed": validation.get("passed"),
    }


def list_local(hub_dir: str | Path | None = None) -> list[dict[str, Any]]:
    hub = LocalHub(local_hub_dir(hub_dir))
    rows = []
    for repo_id in hub.list_repos():
        tags = hub.refs(repo_id)["tags"]
        latest = _latest_version(tags)
        commit = tags[latest] if latest else hub.resolve(repo_id)
        if commit is not None:  # else created but never published
            rows.append(_index_row(repo_id, list(tags), partial(hub.read, repo_id, commit)))
    return rows


def list_hf(author: str | None = None) -> list[dict[str, Any]]:
    """edgezoo models on the Hugging Face Hub (tag ``edgezoo``), with their metrics files."""
    from huggingface_hub import HfApi, hf_hub_download

    def read(repo_id: str, revision: str, path: str) -> str:
        return Path(hf_hub_download(repo_id, path, revision=revision)).read_text()

    api = HfApi()
    rows = []
    try:
        for info in api.list_models(filter="edgezoo", author=author):
            tags = [t.name for t in api.list_repo_refs(info.id).tags]
            rows.append(_index_row(info.id, tags, partial(read, info.id, _latest_version(tags) or DEFAULT_BRANCH)))
    except Exception as exc:  # noqa: BLE001 - every client failure becomes one clear line
        raise hf_errors_to_hub_errors(exc, author or "edgezoo models", None) from exc
    return rows


def list_models(hub: str | None = None, hub_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The zoo's index: every published model of the configured hub with its key metrics."""
    return list_hf() if choose_hub(hub, hub_dir) == "hf" else list_local(hub_dir)


# --- publishing a RUN_DIR -------------------------------------------------------------------------------

class PublishRefused(HubError):
    """The RUN_DIR or its export is not fit to publish, or the version exists."""


@dataclass(frozen=True)
class RunFiles:
    """A RUN_DIR that passed `check_run`, with the files the repo and the card are made of."""

    run_dir: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    backbone_config: dict[str, Any]
    validation: dict[str, Any]
    log_rows: list[dict[str, str]]
    data: dict[str, Any]
    lineage: Any = None
    evaluation: dict[str, Any] | None = None  # eval.json (`edgezoo eval`), when not older than the weights

    @property
    def backbone(self) -> Path:
        return self.run_dir / "backbone"

    @property
    def export(self) -> Path:
        return self.run_dir / "export"


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    version: str
    commit: str
    hub: str
    location: str
    files: int
    bytes: int


# repo path -> RUN_DIR path; the optional ones are published when the run has them.
REQUIRED_FILES = {
    "config.json": "backbone/config.json",
    "model.safetensors": "backbone/model.safetensors",
    "onnx/model.onnx": "export/model.onnx",
    "onnx/model.int8.onnx": "export/model.int8.onnx",
    "onnx/validation.json": "export/validation.json",
    "training/log.csv": "log.csv",
    "training/metrics.json": "metrics.json",
}
_OPTIONAL_FILES = {"onnx/preprocess.json": "export/preprocess.json", "lineage.json": "lineage.json"}
EVAL_FILE = "training/eval.json"  # the run's eval.json (`edgezoo eval`), when it describes these weights
# A local path in a published config or report: only its last component is published.
_LOCAL_PATH = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _refuse(run_dir: Path, why: str) -> PublishRefused:
    return PublishRefused(f"refusing to publish {run_dir}: {why}")


def _read_json(path: Path, run_dir: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _refuse(run_dir, f"{path.relative_to(run_dir)} is unreadable ({exc})") from exc


def _check_export(run_dir: Path, weights_mtime: int) -> dict[str, Any]:
    """A passed validation.json whose files are unchanged since validation, and newer than the weights."""
    from zoo.edge import ExportNotValidatedError, read_validation

    export = run_dir / "export"
    if not (export / "validation.json").is_file():
        raise _refuse(run_dir, "no validated export (export/validation.json missing): run `edgezoo export "
                               f"{run_dir}` first")
    try:
        validation = read_validation(export)
    except ExportNotValidatedError as exc:
        raise _refuse(run_dir, str(exc)) from exc
    for rel in ("model.onnx", "model.int8.onnx"):
        path = export / rel
        if not path.is_file():
            raise _refuse(run_dir, f"export/{rel} is missing")
        if path.stat().st_mtime_ns < weights_mtime:
            raise _refuse(run_dir, f"export/{rel} is older than backbone/model.safetensors: re-run `edgezoo export`")
    return validation


def check_run(run_dir: str | Path) -> RunFiles:
    """Refuse a RUN_DIR that is incomplete, inconsistent or not validated; else load what publishing needs."""
    import csv

    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise _refuse(run_dir, "no such directory")
    if not (run_dir / "metrics.json").is_file():
        raise _refuse(run_dir, "no metrics.json: the run did not complete (finish it with `edgezoo pretrain "
                               f"--resume --out {run_dir}`)")
    for rel in ("config.yaml", *REQUIRED_FILES.values()):
        if not rel.startswith("export/") and not (run_dir / rel).is_file():
            raise _refuse(run_dir, f"{rel} is missing (a partial or damaged run)")
    leftovers = sorted(p.relative_to(run_dir).as_posix() for pattern in ("*.tmp", "*/*.tmp")
                       for p in run_dir.glob(pattern))
    if leftovers:
        raise _refuse(run_dir, f"half-written files ({', '.join(leftovers)}): a stage was interrupted")
    weights_mtime = (run_dir / "backbone/model.safetensors").stat().st_mtime_ns
    checkpoint = run_dir / "checkpoint.pt"
    if checkpoint.is_file() and checkpoint.stat().st_mtime_ns > weights_mtime:
        raise _refuse(run_dir, "checkpoint.pt is newer than backbone/: training continued after the backbone was "
                               "written (finish the run first)")
    if (run_dir / "metrics.json").stat().st_mtime_ns < weights_mtime:
        raise _refuse(run_dir, "metrics.json is older than backbone/: the metrics do not describe these weights")
    validation = _check_export(run_dir, weights_mtime)
    metrics = _read_json(run_dir / "metrics.json", run_dir)
    backbone_config = _read_json(run_dir / "backbone/config.json", run_dir)
    if metrics.get("embed_dim") != backbone_config.get("embed_dim"):
        raise _refuse(run_dir, f"metrics.json embed_dim {metrics.get('embed_dim')} != backbone/config.json "
                               f"{backbone_config.get('embed_dim')}")
    with open(run_dir / "log.csv", newline="") as fh:
        log_rows = list(csv.DictReader(fh))
    if not log_rows:
        raise _refuse(run_dir, "log.csv has no epochs")
    data_json = run_dir / "data.json"
    lineage = run_dir / "lineage.json"
    return RunFiles(run_dir=run_dir, config=yaml.safe_load((run_dir / "config.yaml").read_text()) or {},
                    metrics=metrics, backbone_config=backbone_config, validation=validation, log_rows=log_rows,
                    data=_read_json(data_json, run_dir) if data_json.is_file() else {},
                    lineage=_read_json(lineage, run_dir) if lineage.is_file() else None,
                    evaluation=_fresh_evaluation(run_dir, weights_mtime))


def _fresh_evaluation(run_dir: Path, weights_mtime: int) -> dict[str, Any] | None:
    """eval.json, unless it is missing or older than the weights (it would describe other weights)."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return None
    if path.stat().st_mtime_ns < weights_mtime:
        log.warning("%s is older than backbone/model.safetensors: not used (re-run `edgezoo eval %s`)", path,
                    run_dir)
        return None
    return _read_json(path, run_dir)


def public_path(value: str) -> str:
    """A local path (absolute or ~) reduced to its last component, a ``:split`` suffix kept; else unchanged."""
    from zoo.datasets import split_spec

    base, split = split_spec(value)
    if not _LOCAL_PATH.match(base):
        return value
    name = re.split(r"[\\/]", base.rstrip("/\\"))[-1] or base
    return f"{name}:{split}" if split else name


def public_json(value: Any) -> Any:
    """`value` with every local path in it reduced by `public_path`: what configs and reports publish."""
    if isinstance(value, dict):
        return {k: public_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [public_json(v) for v in value]
    return public_path(value) if isinstance(value, str) else value


def stage_repo(run: RunFiles, repo_id: str, version: str, dest: str | Path, *, hub: str) -> Path:
    """Write the complete repository for `version` into `dest` (the card from the staged files, manifest.json last).

    `hub` ("local" or "hf") is where it is published: the card's plain-timm snippet depends on it.
    """
    import yaml

    from zoo import card
    from zoo.manifest import write_manifest

    dest = Path(dest)
    sources = {**REQUIRED_FILES, **{k: v for k, v in _OPTIONAL_FILES.items() if (run.run_dir / v).is_file()}}
    for rel, src in sources.items():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.run_dir / src, dest / rel)
    for rel, value in (("config.json", run.backbone_config), ("onnx/validation.json", run.validation),
                       ("lineage.json", run.lineage)):
        if value is not None and public_json(value) != value:  # same layout as the stages write
            (dest / rel).write_text(json.dumps(public_json(value), indent=2) + "\n")
    if run.evaluation is not None:
        (dest / EVAL_FILE).write_text(json.dumps(public_json(run.evaluation), indent=2) + "\n")
    (dest / "training/config.yaml").write_text(yaml.safe_dump(public_json(run.config), sort_keys=False))
    card.plot_training_curve(run.log_rows, dest / card.CURVE_NAME, title=f"{repo_id} {version}")
    published = {rel: p.stat().st_size for rel, p in _repo_size(dest)[0].items()}  # what the card lists
    context = card.card_context(run, repo_id, version, hub=hub, files=published)
    (dest / "README.md").write_text(card.render_card(context))
    write_manifest(dest, repo_id=repo_id, version=version)
    return dest


def _pick_version(version: str | None, tags: Iterable[str], repo_id: str) -> str:
    tags = set(tags)
    if version is None:
        return next_version(tags)
    check_ref_name(version, "version")
    if version in tags:
        raise PublishRefused(f"{repo_id}: version {version} already exists (versions are immutable; the next free "
                             f"one is {next_version(tags)})")
    return version


def _repo_size(folder: Path) -> tuple[dict[str, Path], int]:
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    return files, sum(p.stat().st_size for p in files.values())


def _publish_local(run: RunFiles, repo_id: str, version: str | None, hub_dir: str | Path | None,
                   message: str) -> PublishResult:
    hub = LocalHub(local_hub_dir(hub_dir))
    if hub.create(repo_id):
        log.info("created %s in the local hub %s", repo_id, hub.root)
    version = _pick_version(version, hub.refs(repo_id)["tags"], repo_id)
    with scratch_dir(hub.staging) as tmp:
        staged = stage_repo(run, repo_id, version, tmp / "repo", hub="local")
        files, size = _repo_size(staged)
        try:
            sha = hub.commit(repo_id, files, message=f"{message} {version}", replace=True, tag=version)
        except RefExistsError as exc:
            raise PublishRefused(f"{repo_id}: version {version} was published meanwhile ({exc})") from exc
    return PublishResult(repo_id, version, sha, "local", str(hub.repo_dir(repo_id)), len(files), size)


def hf_staging_dir() -> Path:
    """Where publishes to the Hugging Face Hub stage the repository: ``<edgezoo cache>/staging``."""
    from zoo.datasets import cache_dir

    return cache_dir() / "staging"


def _publish_hf(run: RunFiles, repo_id: str, version: str | None, message: str) -> PublishResult:
    from huggingface_hub import HfApi, constants

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        version = _pick_version(version, [t.name for t in api.list_repo_refs(repo_id).tags], repo_id)
        with scratch_dir(hf_staging_dir()) as tmp:
            staged = stage_repo(run, repo_id, version, tmp / "repo", hub="hf")
            files, size = _repo_size(staged)
            info = api.upload_folder(repo_id=repo_id, folder_path=staged, repo_type="model",
                                     commit_message=f"{message} {version}")
        api.create_tag(repo_id, tag=version, revision=info.oid, repo_type="model")
    except HubError:
        raise
    except Exception as exc:  # noqa: BLE001 - client errors become one line, token scrubbed
        raise hf_errors_to_hub_errors(exc, repo_id, version) from exc
    return PublishResult(repo_id, version, info.oid, "hf", f"{constants.ENDPOINT}/{repo_id}", len(files), size)


def publish(run_dir: str | Path, repo_id: str, *, version: str | None = None, hub: str | None = None,
            hub_dir: str | Path | None = None) -> PublishResult:
    """Publish a finished, exported RUN_DIR as one commit + a version tag (default: the next vN)."""
    check_repo_id(repo_id)
    run = check_run(run_dir)
    target = choose_hub(hub, hub_dir)
    message = f"edgezoo: {run.metrics.get('architecture')} {run.metrics.get('method')}"
    if target == "hf":
        return _publish_hf(run, repo_id, version, message)
    return _publish_local(run, repo_id, version, hub_dir, message)
