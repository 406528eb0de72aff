"""The local hub: a directory of bare git repositories, ``<root>/models/<org>/<name>``.

Branch ``main``, one commit and one ``vN`` tag per published version: the
layout olah serves read-only as a Hub-compatible mirror (its ``mirrors-path``),
so one machine publishes and an offline fleet downloads with the ordinary
huggingface_hub client. Everything goes through the git CLI: commits are built
with plumbing on a private index, and the branch and the version tag move in
one ref transaction, so an interrupted publish never leaves a half-written
version and a concurrent one cannot overwrite it. Publishes stage files in the
hub's ``.staging/`` (not TMPDIR), in folders named by host and pid, so the
next publish removes what a killed one left (`scratch_dir`). torch-free.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from zoo.hub.core import (DEFAULT_BRANCH, REPO_ID_RE, HubError, RefExistsError, Snapshot, UnknownRepoError,
                          UnknownRevisionError, check_ref_name, check_repo_id, check_repo_path)
from zoo.layout import MANIFEST
from zoo.manifest import ChecksumError, read_manifest, verify_folder

log = logging.getLogger(__name__)

_GIT_IDENTITY = ("-c", "user.name=edgezoo", "-c", "user.email=edgezoo@localhost")
STAGING_DIR = ".staging"  # <local hub>/.staging: scratch of publishes and commits (olah serves only models/)
_SCRATCH_RE = re.compile(r"^edgezoo-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def _snapshot_cache() -> Path:
    from zoo.datasets import cache_dir

    return cache_dir() / "snapshots"


def local_hub_dir(hub_dir: str | Path | None = None) -> Path:
    """--hub-dir, else EDGEZOO_HUB, else ``<edgezoo cache>/hub``."""
    if hub_dir:
        return Path(hub_dir).expanduser()
    if os.environ.get("EDGEZOO_HUB"):
        return Path(os.environ["EDGEZOO_HUB"]).expanduser()
    from zoo.datasets import cache_dir

    return cache_dir() / "hub"


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
    """A directory of bare git repos, ``models/<org>/<name>``, written with the git CLI (a `zoo.hub.Hub`)."""

    kind = "local"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    def describe(self, repo_id: str | None = None) -> str:
        return f"the local hub in {self.repo_dir(repo_id) if repo_id else self.root}"

    def location(self, repo_id: str) -> str:
        return str(self.repo_dir(repo_id))

    def tags(self, repo_id: str) -> dict[str, str]:
        return self.refs(repo_id)["tags"] if self.exists(repo_id) else {}

    def snapshot(self, repo_id: str, revision: str | None, files: Sequence[str],
                 optional: Sequence[str] = ()) -> Snapshot:
        """Check the files out once into the edgezoo cache (``snapshots/<repo>/<commit>``) and verify them."""
        self.require(repo_id)
        commit = self.resolve(repo_id, revision)
        if commit is None:
            raise UnknownRevisionError(f"{repo_id}: no revision {revision!r} in the local hub {self.root} "
                                       f"(versions: {', '.join(sorted(self.tags(repo_id))) or 'none'})")
        tree = set(self.files(repo_id, commit))
        missing = [p for p in (MANIFEST, *files) if p not in tree]
        if missing:
            raise ChecksumError(f"{repo_id}@{revision or DEFAULT_BRANCH}: {', '.join(missing)} not in the "
                                "repository (not an edgezoo repository); refusing unverified files")
        files = [*files, *(p for p in optional if p in tree)]
        folder = _snapshot_cache() / repo_id / commit
        try:
            manifest = read_manifest(folder / MANIFEST)
            verify_folder(folder, manifest, files)
        except ChecksumError:  # not checked out yet, or the cached copy was damaged: (re)write it from git
            self.checkout(repo_id, commit, folder, [MANIFEST, *files])
            manifest = read_manifest(folder / MANIFEST)
            verify_folder(folder, manifest, files)  # now a mismatch means the repository itself was tampered with
        return Snapshot(folder, repo_id, manifest.get("version") or revision or DEFAULT_BRANCH, commit, "local",
                        manifest)

    def publish_folder(self, repo_id: str, folder: Path, version: str, message: str) -> str:
        """One commit replacing the tree with `folder`'s files, and the `version` tag, in one ref transaction."""
        if self.create(repo_id):
            log.info("created %s in the local hub %s", repo_id, self.root)
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.commit(repo_id, files, message=message, replace=True, tag=version)

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
