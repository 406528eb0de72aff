"""Which hub: nothing is published anywhere but the local hub unless ``--hub hf`` asks, whatever token is set.

Every test runs "logged in": HF_TOKEN is a dummy and HF_ENDPOINT a closed port on 127.0.0.1, so a job that
went to the Hub would fail to connect rather than reach anything. Jobs that must stay on the machine run
with every HTTP request of the Hub client recorded and refused: they must make none.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import socket
import threading
from pathlib import Path

import pytest

from hubutil import free_port, tiny_exported_run
from zoo.hub import OfflineError, UnknownRepoError
from zoo.hub.local import LocalHub

TOKEN = "hf_edgezooDummyTokenNeverSent0123"
HINT = "only --hub hf publishes to the Hugging Face Hub"


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_root) -> Path:
    return tiny_exported_run(tmp_path_factory.getbasetemp() / "hub-tiny-run", cifar_root)


@pytest.fixture
def logged_in(monkeypatch, tmp_path) -> Path:
    """A dummy token and an unreachable HF_ENDPOINT (a closed port); the default local hub is tmp_path/hub.

    The local hub comes from EDGEZOO_HUB, not a hub_dir argument: a hub_dir alone would name the local hub.
    """
    import huggingface_hub.constants as hf_constants

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)  # huggingface_hub read the variable at import
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("EDGEZOO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEZOO_HUB", str(tmp_path / "hub"))
    return tmp_path / "hub"


@pytest.fixture
def no_http(monkeypatch) -> list[str]:
    """Every request the Hub client tries (httpx2 in huggingface_hub 2, httpx in 1), recorded and refused."""
    sent: list[str] = []

    def refuse(self, request, *args, **kwargs):
        sent.append(f"{request.method} {request.url}")
        raise AssertionError(f"the Hub client was called: {request.method} {request.url}")

    for name in ("httpx2", "httpx"):
        try:
            monkeypatch.setattr(importlib.import_module(name).Client, "send", refuse)
        except ImportError:
            continue
    return sent


def test_publish_and_list_without_hub_stay_local_with_a_token(run, logged_in, no_http, caplog, capsys):
    from app.cli import main

    caplog.set_level(logging.INFO)
    assert main(["publish", str(run), "--repo", "edgezoo/choice"]) == 0
    assert "edgezoo/choice@v1" in capsys.readouterr().out
    assert LocalHub(logged_in).refs("edgezoo/choice")["tags"].keys() == {"v1"}
    (published,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("published ")]
    assert published.endswith(f"to the local hub in {LocalHub(logged_in).repo_dir('edgezoo/choice')}"), published
    assert sum(HINT in r.getMessage() for r in caplog.records) == 1  # said once, so a logged-in user knows

    assert main(["list"]) == 0
    assert "edgezoo/choice" in capsys.readouterr().out
    assert no_http == []  # no connection to any hub was even attempted
    assert TOKEN not in caplog.text


def test_python_publish_and_list_models_default_to_the_local_hub(run, logged_in, no_http):
    from zoo.catalog import list_models
    from zoo.publish import publish

    result = publish(run, "edgezoo/choice-api")
    assert (result.hub, result.location) == ("local", str(LocalHub(logged_in).repo_dir("edgezoo/choice-api")))
    assert [r.repo_id for r in list_models()] == ["edgezoo/choice-api"]
    assert no_http == []


def test_pipeline_publish_stage_publishes_and_skips_on_the_local_hub(run, logged_in, no_http):
    """`edgezoo run` without --hub: its publish stage and its "published already" check ask the local hub."""
    from app.pipeline import PipelineResult, stage_publish

    args = argparse.Namespace(repo="edgezoo/choice-run", version=None, hub=None, hub_dir=None)
    first = PipelineResult(run_dir=run, repo_id=args.repo)
    assert stage_publish(args, run, first)[0] == "ran"
    second = PipelineResult(run_dir=run, repo_id=args.repo)
    assert stage_publish(args, run, second) == ("skipped", "edgezoo/choice-run@v1 already holds this run")
    local = LocalHub(logged_in)
    assert (first.version, first.location) == ("v1", str(local.repo_dir(args.repo)))
    assert (second.version, second.commit, second.location) == ("v1", first.commit, first.location)
    assert local.refs(args.repo)["tags"] == {"v1": first.commit}
    assert no_http == []


def test_hub_hf_with_an_unreachable_endpoint_fails_in_one_line_and_stages_nothing(run, logged_in, caplog):
    from app.cli import main
    from zoo.hub import HfHub

    caplog.set_level(logging.INFO)
    endpoint = os.environ["HF_ENDPOINT"]
    assert main(["publish", str(run), "--repo", "edgezoo/choice-hf", "--hub", "hf"]) != 0
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"edgezoo/choice-hf: the hub at {endpoint} cannot be reached" in error and "\n" not in error
    assert TOKEN not in caplog.text
    assert not any(HfHub().staging.glob("*")) and not logged_in.exists()  # no staging, no local publish either


@pytest.fixture
def silent_endpoint(logged_in, monkeypatch):
    """HF_ENDPOINT is a server on 127.0.0.1 that accepts connections and never answers; it stops with the test."""
    import huggingface_hub.constants as hf_constants

    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # read nothing, answer nothing
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setenv("EDGEZOO_HUB_TIMEOUT", "1")
    yield endpoint
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_hub_that_never_answers_fails_in_one_line_instead_of_hanging(run, silent_endpoint, caplog):
    """The Hub client's session has no timeout of its own: a silent server must not hang `publish --hub hf`."""
    from app.cli import main

    caplog.set_level(logging.INFO)
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(main(["publish", str(run), "--repo", "edgezoo/silent",
                                                                 "--hub", "hf"])), daemon=True)
    worker.start()
    worker.join(120)  # with the bound, about one second; without it, for ever
    assert not worker.is_alive(), "publish --hub hf hung on a server that never answers"
    assert codes and codes[0] != 0
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"the hub at {silent_endpoint} cannot be reached" in error and "Timeout" in error, error


def test_downloads_read_the_local_hub_first_and_never_upload(run, logged_in, no_http):
    """Reading is not leaving the machine: a published repo loads from the local hub without any request."""
    from zoo.pretrained import from_pretrained
    from zoo.publish import publish

    publish(run, "edgezoo/choice-read")
    model = from_pretrained("edgezoo/choice-read", backend="onnx")
    assert (model.revision, model.backend) == ("v1", "onnx")
    assert no_http == []


def test_a_repo_only_the_unreachable_hub_could_have_is_a_clear_error_not_a_hang(logged_in, monkeypatch):
    """Not in the local hub: the Hub is asked (a read), the closed port refuses, one clear line; no upload call."""
    import time

    from huggingface_hub import HfApi

    from zoo.pretrained import from_pretrained

    def no_upload(*args, **kwargs):
        raise AssertionError("an upload call was reached while downloading")

    for name in ("create_repo", "upload_folder", "upload_file", "create_commit", "create_tag", "preupload_lfs_files"):
        monkeypatch.setattr(HfApi, name, no_upload)
    start = time.monotonic()
    with pytest.raises((OfflineError, UnknownRepoError)) as err:
        from_pretrained("edgezoo/not-here", backend="onnx")
    assert time.monotonic() - start < 30
    assert "edgezoo/not-here" in str(err.value) and "\n" not in str(err.value) and TOKEN not in str(err.value)
