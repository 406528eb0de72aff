"""A minimal receiver of the Hugging Face Hub commit API, writing into a local hub.

huggingface_hub's upload path (create_repo, upload_folder, create_tag) needs
only a few routes; this server answers them over plain HTTP and stores what it
receives with zoo.hub.local.LocalHub, the git layout olah serves back read-only. It
lets tests (and an air-gapped site) drive the real upload client end to end:

    POST /api/repos/create                          {"name", "organization"} -> {"url"}
    POST /api/models/<org>/<name>/preupload/<rev>   every file "regular" (content arrives inline, base64)
    POST /api/models/<org>/<name>/commit/<rev>      NDJSON header/file/deletedFile/deletedFolder -> one git commit
    POST /api/models/<org>/<name>/tag/<rev>         {"tag"} -> a new tag (409 if it exists)
    POST /api/validate-yaml                         README front matter must parse (upload_folder checks it)
    GET  /api/models/<org>/<name>/refs              branches and tags (`edgezoo publish` picks the next vN)

A commit is all-or-nothing: the whole body is read, parsed and decoded before
git is touched, and the branch moves in one ref update. Bad requests (malformed
NDJSON or base64, unsafe paths such as ``../x``, LFS pointers) get a 4xx and
write nothing. Binds 127.0.0.1 by default; port 0 picks a free port.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from zoo.hub.core import (DEFAULT_BRANCH, HubError, RefExistsError, UnknownRevisionError, check_ref_name, check_repo_id,
                     check_repo_path)
from zoo.hub.local import LocalHub

log = logging.getLogger(__name__)

_REPO_ROUTE = re.compile(r"^/api/models/(?P<org>[^/]+)/(?P<name>[^/]+)/(?P<action>preupload|commit|tag)/(?P<rev>.+)$")
_REFS_ROUTE = re.compile(r"^/api/models/(?P<org>[^/]+)/(?P<name>[^/]+)/refs$")
DEFAULT_MAX_BODY = 4 << 30


class RequestError(Exception):
    """An HTTP error answer: status, message and the Hub's X-Error-Code (which the client maps to exceptions)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _front_matter(readme: str) -> Any:
    """The YAML metadata block of a model card, parsed (None without one)."""
    import yaml

    match = re.match(r"^\s*---\s*\n(.*?)\n---\s*(\n|$)", readme, flags=re.S)
    return yaml.safe_load(match.group(1)) if match else None


def parse_commit(body: bytes) -> tuple[dict[str, Any], dict[str, bytes], list[str]]:
    """NDJSON commit payload -> (header, {path: content}, deleted paths); RequestError(400) if anything is off."""
    header: dict[str, Any] | None = None
    files: dict[str, bytes] = {}
    deletes: list[str] = []
    for number, raw in enumerate(body.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
            key, value = item["key"], item["value"]
        except (ValueError, TypeError, KeyError) as exc:
            raise RequestError(400, f"commit line {number}: not a {{key, value}} JSON object ({exc})") from exc
        if not isinstance(value, dict):
            raise RequestError(400, f"commit line {number}: value must be an object")
        try:
            if key == "header":
                header = value
            elif key == "file":
                path = check_repo_path(value.get("path"))
                if value.get("encoding") != "base64":
                    raise RequestError(400, f"{path}: only base64 file content is accepted")
                files[path] = base64.b64decode(value.get("content", ""), validate=True)
            elif key in ("deletedFile", "deletedFolder"):
                deletes.append(check_repo_path(str(value.get("path", "")).rstrip("/")))
            elif key == "lfsFile":
                raise RequestError(400, f"{value.get('path')}: LFS uploads are not supported (preupload answers "
                                        "'regular' for every file)")
            else:
                raise RequestError(400, f"commit line {number}: unknown key {key!r}")
        except (binascii.Error, ValueError) as exc:
            raise RequestError(400, f"commit line {number}: {exc}") from exc
        except HubError as exc:
            raise RequestError(400, str(exc)) from exc
    if header is None or not isinstance(header.get("summary"), str) or not header["summary"].strip():
        raise RequestError(400, "commit has no header line with a summary")
    return header, files, deletes


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    # --- plumbing -------------------------------------------------------------------------------------
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _endpoint(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.server.receiver.endpoint

    def _send(self, status: int, payload: Any, code: str | None = None, message: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code:
            self.send_header("X-Error-Code", code)
        if message:
            self.send_header("X-Error-Message", message.encode("ascii", "replace").decode()[:500])
        if status >= 400:  # the request body may be unread: do not reuse this connection
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        limit = self.server.receiver.max_body
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._chunked(limit)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError(411, "Content-Length required")
        if int(length) > limit:
            raise RequestError(413, f"body larger than {limit} bytes")
        data = self.rfile.read(int(length))
        if len(data) != int(length):
            raise RequestError(400, "body shorter than Content-Length (interrupted upload)")
        return data

    def _chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            total += size
            if total > limit:
                raise RequestError(413, f"body larger than {limit} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _json(self) -> dict[str, Any]:
        try:
            value = json.loads(self._body() or b"{}")
        except ValueError as exc:
            raise RequestError(400, f"malformed JSON body: {exc}") from exc
        if not isinstance(value, dict):
            raise RequestError(400, "JSON body must be an object")
        return value

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        try:
            if method == "POST" and path == "/api/repos/create":
                self._create_repo()
            elif method == "POST" and path == "/api/validate-yaml":
                self._validate_yaml()
            elif method == "POST" and (m := _REPO_ROUTE.match(path)):
                repo_id = self._repo(m["org"], m["name"])
                rev = unquote(m["rev"])
                getattr(self, f"_{m['action']}")(repo_id, rev)
            elif method == "GET" and (m := _REFS_ROUTE.match(path)):
                self._refs(self._repo(m["org"], m["name"]))
            else:
                raise RequestError(404 if method in ("GET", "POST") else 405, f"no route {method} {path}")
        except RequestError as exc:
            self._send(exc.status, {"error": str(exc)}, exc.code, str(exc))
        except RefExistsError as exc:
            self._send(409, {"error": str(exc)}, None, str(exc))
        except UnknownRevisionError as exc:
            self._send(404, {"error": str(exc)}, "RevisionNotFound", str(exc))
        except HubError as exc:
            self._send(400, {"error": str(exc)}, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - the client gets a 500, the server keeps serving
            log.exception("receiver failed on %s %s", method, path)
            self._send(500, {"error": f"internal error: {type(exc).__name__}"})

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    # --- routes ---------------------------------------------------------------------------------------
    def _repo(self, org: str, name: str) -> str:
        repo_id = f"{unquote(org)}/{unquote(name)}"
        try:
            check_repo_id(repo_id)
        except HubError as exc:
            raise RequestError(400, str(exc)) from exc
        if not self.server.receiver.hub.exists(repo_id):
            raise RequestError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo_id

    def _create_repo(self) -> None:
        body = self._json()
        if body.get("type", "model") != "model":
            raise RequestError(400, "only model repositories are supported")
        if not body.get("organization"):
            raise RequestError(400, "an organization (org/name repository id) is required")
        repo_id = f"{body['organization']}/{body.get('name')}"
        try:
            check_repo_id(repo_id)
        except HubError as exc:
            raise RequestError(400, str(exc)) from exc
        url = f"{self._endpoint()}/{repo_id}"
        with self.server.receiver.lock:
            created = self.server.receiver.hub.create(repo_id)
        if not created:  # the client (exist_ok=True) still reads "url" from the 409 answer
            message = f"You already created this model repo: {repo_id}"
            self._send(409, {"error": message, "url": url}, None, message)
            return
        log.info("created %s", repo_id)
        self._send(200, {"url": url, "name": repo_id, "id": repo_id})

    def _preupload(self, repo_id: str, revision: str) -> None:
        files = self._json().get("files")
        if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
            raise RequestError(400, "preupload: 'files' must be a list of objects")
        answer = [{"path": check_repo_path(f.get("path")), "uploadMode": "regular", "shouldIgnore": False}
                  for f in files]
        self._send(200, {"files": answer})

    def _commit(self, repo_id: str, revision: str) -> None:
        query = urlsplit(self.path).query
        if "create_pr=1" in query:
            raise RequestError(400, "pull requests are not supported by this receiver")
        check_ref_name(revision, "branch")
        hub = self.server.receiver.hub
        if revision != DEFAULT_BRANCH and hub.resolve(repo_id, f"refs/heads/{revision}") is None:
            raise RequestError(404, f"{repo_id}: no branch {revision!r}", "RevisionNotFound")
        header, files, deletes = parse_commit(self._body())
        with self.server.receiver.lock:  # one writer per hub: the ref check and update stay consistent
            sha = hub.commit(repo_id, files, message=header["summary"], description=header.get("description") or "",
                             branch=revision, deletes=deletes, parent=header.get("parentCommit"))
        log.info("commit %s on %s@%s (%d files, %d deletions)", sha[:12], repo_id, revision, len(files), len(deletes))
        self._send(200, {"success": True, "commitOid": sha, "commitUrl": f"{self._endpoint()}/{repo_id}/commit/{sha}",
                         "commitMessage": header["summary"], "pullRequestUrl": None})

    def _tag(self, repo_id: str, revision: str) -> None:
        tag = self._json().get("tag")
        with self.server.receiver.lock:
            sha = self.server.receiver.hub.tag(repo_id, check_ref_name(tag, "tag"), revision)
        log.info("tag %s -> %s on %s", tag, sha[:12], repo_id)
        self._send(200, {})

    def _refs(self, repo_id: str) -> None:
        refs = self.server.receiver.hub.refs(repo_id)

        def rows(group: str, prefix: str) -> list[dict[str, str]]:
            return [{"name": n, "ref": f"{prefix}{n}", "targetCommit": c} for n, c in sorted(refs[group].items())]

        self._send(200, {"branches": rows("branches", "refs/heads/"), "tags": rows("tags", "refs/tags/"),
                         "converts": [], "pullRequests": []})

    def _validate_yaml(self) -> None:
        import yaml

        content = self._json().get("content")
        if not isinstance(content, str):
            raise RequestError(400, "validate-yaml: 'content' must be a string")
        try:
            meta = _front_matter(content)
        except yaml.YAMLError as exc:
            self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}], "warnings": []})
            return
        if meta is not None and not isinstance(meta, dict):
            self._send(400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []})
            return
        self._send(200, {"errors": [], "warnings": []})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: "HubReceiver"


class HubReceiver:
    """Serve the upload routes for the local hub at `root`; a context manager that stops itself.

    >>> with HubReceiver(tmp_dir) as rx:       # doctest: +SKIP
    ...     os.environ["HF_ENDPOINT"] = rx.endpoint   # before huggingface_hub is imported
    """

    def __init__(self, root: str | Path, host: str = "127.0.0.1", port: int = 0,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        self.hub = LocalHub(root)
        self.max_body = max_body
        self.lock = threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.receiver = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        return f"http://{self._server.server_address[0]}:{self.port}"

    def start(self) -> "HubReceiver":
        self._thread = threading.Thread(target=self._server.serve_forever, name="hub-receiver", daemon=True)
        self._thread.start()
        log.info("hub receiver on %s writing to %s", self.endpoint, self.hub.root)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> "HubReceiver":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """``python -m zoo.hub.server HUB_DIR [--port N]``: receive uploads until interrupted."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hub_dir", type=Path, help="local hub directory (olah's mirrors-path)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with HubReceiver(args.hub_dir, args.host, args.port) as rx:
        print(f"HF_ENDPOINT={rx.endpoint}", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
