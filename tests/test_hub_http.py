"""Round trip over HTTP with huggingface_hub's real client and no internet.

huggingface_hub's upload client publishes to zoo.hub.server's receiver; olah
serves the same git directory read-only; from_pretrained and plain timm
download through HF_ENDPOINT, then again with HF_HUB_OFFLINE=1 from the cache.
The client side runs in subprocesses because huggingface_hub reads HF_ENDPOINT
when it is imported. Both servers bind 127.0.0.1 and stop at the end.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hubutil import free_port, hf_env, olah, run_embeddings, run_python, sample_images, tiny_exported_run
from zoo.hub.local import LocalHub
from zoo.publish import publish

REPO = "edgezoo/tiny-http"
TOKEN = "hf_edgezooTestTokenNeverPrinted0123"

PRELUDE = """
import json, sys
import numpy as np
"""

PUBLISH = PRELUDE + """
from zoo.publish import publish
first = publish(RUN, REPO, hub="hf")  # the Hub (here the receiver in HF_ENDPOINT) only when asked
second = publish(RUN, REPO, hub="hf")
try:
    publish(RUN, REPO, version="v1", hub="hf")
    refused = None
except Exception as exc:
    refused = f"{type(exc).__name__}: {exc}"
print(json.dumps({"first": first.__dict__, "second": second.__dict__, "refused": refused}))
"""

# Downloads through HF_ENDPOINT (or the cache), embeds with every backend and plain timm, saves the arrays.
DOWNLOAD = PRELUDE + """
import timm, torch
import zoo  # after timm: registers the *_smallstem architectures with it
from zoo.preprocess import l2_normalize
images = json.loads(IMAGES)
out = {}
model = zoo.from_pretrained(REPO, revision="v1", backend="torch")
out["torch"], out["revision"], out["commit"] = model.embed(images), model.revision, model.commit
out["onnx"] = zoo.from_pretrained(REPO, revision="v1", backend="onnx").embed(images)
out["latest"] = zoo.from_pretrained(REPO, backend="torch").revision
try:
    tm = timm.create_model(f"hf-hub:{REPO}@v1", pretrained=True).eval()
    out["timm_bug"] = None
except RuntimeError as exc:  # see test: the small-stem entry point must honour the config's num_classes
    out["timm_bug"] = str(exc).splitlines()[0]
    tm = timm.create_model(f"hf-hub:{REPO}@v1", pretrained=True, num_classes=0).eval()
data_cfg = timm.data.resolve_data_config({}, model=tm)
out["timm_cfg"] = [list(data_cfg["input_size"]), list(data_cfg["mean"]), list(data_cfg["std"]),
                   data_cfg["crop_pct"], data_cfg["interpolation"]]
pixels, _ = model.preprocess.decode(images)
with torch.no_grad():
    out["timm"] = l2_normalize(tm(torch.from_numpy(model.preprocess.normalize(pixels))).numpy())
errors = []
for kwargs in ({"revision": "v9"}, {"repo_id": "edgezoo/absent", "revision": "v1"}):
    try:
        zoo.from_pretrained(**{"repo_id": REPO, **kwargs})
    except Exception as exc:
        errors.append(type(exc).__name__ + ": " + str(exc))
out["errors"] = errors
np.savez(OUT, **{k: v for k, v in out.items() if isinstance(v, np.ndarray)})
print(json.dumps({k: v for k, v in out.items() if not isinstance(v, np.ndarray)}))
"""

# What an edge device with an empty cache sees while offline.
COLD = PRELUDE + """
import zoo
try:
    zoo.from_pretrained(REPO, revision="v1", backend="onnx")
    print("loaded")
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""


def _script(template: str, **values: str) -> str:
    return "\n".join(f"{k} = {v!r}" for k, v in values.items()) + "\n" + template


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar_root) -> Path:
    return tiny_exported_run(tmp_path_factory.getbasetemp() / "hub-tiny-run", cifar_root)


def test_publish_over_http_then_download_with_olah_and_offline(run, tmp_path, cifar_root):
    from zoo.hub.server import HubReceiver

    hub_dir, hf_home, empty = tmp_path / "hub", tmp_path / "hf-home", tmp_path / "no-local-hub"
    images = [str(p) for p in sample_images(cifar_root)]
    expected = run_embeddings(run, [Path(p) for p in images])

    # 1. publish with huggingface_hub's upload client (create_repo, upload_folder, create_tag), with a token.
    with HubReceiver(hub_dir) as rx:
        env = hf_env(rx.endpoint, hf_home, EDGEZOO_HUB=str(empty), HF_TOKEN=TOKEN)
        proc = subprocess.run([sys.executable, "-c", _script(PUBLISH, RUN=str(run), REPO=REPO)], env=env,
                              capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    first, second = report["first"], report["second"]
    assert (first["version"], first["hub"], second["version"]) == ("v1", "hf", "v2")
    assert report["refused"].startswith("PublishRefused") and "v1 already exists" in report["refused"]
    hub = LocalHub(hub_dir)
    assert hub.refs(REPO)["tags"] == {"v1": first["commit"], "v2": second["commit"]}
    assert hub.read(REPO, "v1", "model.safetensors") == (run / "backbone/model.safetensors").read_bytes()
    assert TOKEN not in proc.stdout + proc.stderr  # the token reaches no output, error or published file
    assert not any(TOKEN.encode() in hub.read(REPO, "v2", f) for f in hub.files(REPO, second["commit"]))

    # 2. olah serves the same directory; everything downloads through HF_ENDPOINT.
    script = _script(DOWNLOAD, REPO=REPO, IMAGES=json.dumps(images), OUT=str(tmp_path / "online.npz"))
    with olah(hub_dir, tmp_path / "olah") as endpoint:
        online = json.loads(run_python(script, hf_env(endpoint, hf_home, EDGEZOO_HUB=str(empty))).splitlines()[-1])
    assert (online["revision"], online["commit"], online["latest"]) == ("v1", first["commit"], "v2")
    assert online["errors"][0].startswith("UnknownRevisionError") and "versions: v1, v2" in online["errors"][0]
    assert online["errors"][1].startswith("UnknownRepoError")
    config = json.loads((run / "backbone/config.json").read_text())["pretrained_cfg"]
    assert online["timm_cfg"] == [config["input_size"], config["mean"], config["std"], config["crop_pct"],
                                  config["interpolation"]]
    arrays = np.load(tmp_path / "online.npz")
    for backend in ("torch", "onnx", "timm"):
        np.testing.assert_allclose(arrays[backend], expected, atol=1e-4, err_msg=backend)

    # 3. HF_HUB_OFFLINE=1, server gone: the same calls are served from the cache.
    script = _script(DOWNLOAD, REPO=REPO, IMAGES=json.dumps(images), OUT=str(tmp_path / "offline.npz"))
    offline_env = hf_env(endpoint, hf_home, EDGEZOO_HUB=str(empty), HF_HUB_OFFLINE="1")
    offline = json.loads(run_python(script, offline_env).splitlines()[-1])
    assert (offline["revision"], offline["commit"]) == ("v1", first["commit"])
    assert offline["errors"][0].startswith("OfflineError")
    arrays = np.load(tmp_path / "offline.npz")
    for backend in ("torch", "onnx", "timm"):
        np.testing.assert_allclose(arrays[backend], expected, atol=1e-4, err_msg=backend)

    # 4. Offline with a cold cache: one clear error.
    cold = run_python(_script(COLD, REPO=REPO), hf_env(endpoint, tmp_path / "cold", HF_HUB_OFFLINE="1",
                                                       EDGEZOO_HUB=str(empty)))
    assert cold.strip().startswith("OfflineError") and "not in the local cache" in cold

    # 5. A tampered file in the Hub cache fails the checksum and names the file.
    blob = next(p for p in (hf_home / "hub").rglob("onnx/model.onnx")).resolve()
    blob.write_bytes(blob.read_bytes()[:-1] + b"\0")
    tampered = run_python(_script(COLD, REPO=REPO), offline_env)
    assert tampered.strip().startswith("ChecksumError: onnx/model.onnx: checksum mismatch"), tampered

    # Plain `timm.create_model("hf-hub:...", pretrained=True)` after `import timm, zoo`.
    assert not online["timm_bug"], online["timm_bug"]


def _code_blocks(card: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", card, flags=re.S | re.M)


def test_local_hub_card_gives_a_timm_recipe_that_works_through_olah(run, tmp_path, cifar_root):
    """The card of a locally published model: its olah.toml, HF_ENDPOINT and plain-timm snippet, run as written
    (only the port, the hub folder and the image are filled in), load the model from the local hub."""
    hub_dir = tmp_path / "hub"
    publish(run, "edgezoo/tiny-card", hub_dir=hub_dir)
    card = LocalHub(hub_dir).read("edgezoo/tiny-card", "v1", "README.md").decode()
    (toml,) = _code_blocks(card, "toml")
    (bash,) = _code_blocks(card, "bash")
    (snippet,) = [code for code in _code_blocks(card, "python") if "timm.create_model" in code]
    basic = tomllib.loads(toml)["basic"]
    endpoint = re.search(r"^export HF_ENDPOINT=(\S+)", bash, flags=re.M).group(1)
    assert endpoint == f"http://{basic['host']}:{basic['port']}" and "olah-cli -c olah.toml" in bash
    assert tomllib.loads(toml)["accessibility"]["offline"] is True
    assert "hf-hub:edgezoo/tiny-card@v1" in snippet

    port = free_port()
    config = (toml.replace(f"port = {basic['port']}", f"port = {port}")
              .replace(f'mirrors-path = ["{basic["mirrors-path"][0]}"]', f'mirrors-path = ["{hub_dir}"]'))
    image = str(sample_images(cifar_root, 1)[0])
    code = snippet.replace('"cat.jpg"', repr(image)) + "\nprint(tuple(emb.shape))\n"
    with olah(hub_dir, tmp_path / "olah", config=config, port=port) as served:
        assert served == endpoint.replace(str(basic["port"]), str(port))
        out = run_python(code, hf_env(served, tmp_path / "hf-home", EDGEZOO_HUB=str(tmp_path / "no-local-hub")))
    embed_dim = json.loads((run / "metrics.json").read_text())["embed_dim"]
    assert out.strip().splitlines()[-1] == str((1, embed_dim))
