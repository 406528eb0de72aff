"""The demo under load: N concurrent gradio_client sessions x M searches each, p50 / p95 / max per search.

    python benchmarks/demo_load.py --out runs/demo_load.json                    # after `make demo`
    python benchmarks/demo_load.py --url http://127.0.0.1:7860/ --out x.json   # attach to a running demo
    python benchmarks/demo_load.py --smoke --out /tmp/smoke.json               # tiny, seconds (the test's)

Without --url it starts `edgezoo demo --model MODEL` (default: `make demo`'s published
`edgezoo/lite0-flowers-readout`, its default gallery: the flowers' 717 held-out photos) in
its own process group on 127.0.0.1, waits until the page answers, and stops the whole group
at the end, whatever happens. Each client thread opens its own gradio_client session, then
all start together (a barrier) and send their searches one after the other, each a query
image of its own (the flowers' held-out photos, or --queries FOLDER; a fixed random pick). A search
is timed as a user sees it: upload + queue + handler + the answer, `client.submit(...).result()`.
Every request loop is bounded (--request-timeout a search, --timeout the whole run), so the
benchmark always ends. Prints one table; --out writes the JSON (every latency, the command,
the machine and its load average before and after).

--smoke: a tiny random-weight ONNX model (no training) over 60 CIFAR-10 test images,
3 clients x 2 searches: the same code path in seconds, for tests/test_demo.py.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.servers import free_port, stop_process, wait_port  # noqa: E402 (after the path set-up)

log = logging.getLogger("demo_load")

MAKE_DEMO_MODEL = "edgezoo/lite0-flowers-readout"  # what `make demo` publishes and serves
SMOKE_IMAGES_PER_CLASS = 6


@dataclass
class Request:
    """One search as a client saw it."""

    client: int
    query: str
    latency_s: float
    ok: bool
    error: str = ""
    results: int = 0


@dataclass
class LoadRun:
    """What the threads share: the requests answered so far and the run's deadline."""

    deadline: float
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


# --- the server -----------------------------------------------------------------------------------------

def server_command(args: argparse.Namespace, port: int) -> list[str]:
    """`edgezoo demo` as a user starts it, on 127.0.0.1 and a free port; only what the flags say differs."""
    cmd = [sys.executable, "-m", "app.cli", "demo", "--model", args.model, "--host", "127.0.0.1",
           "--port", str(port)]
    for flag, value in (("--hub-dir", args.hub_dir), ("--gallery", args.gallery), ("--index-dir", args.index_dir),
                        ("--runs-dir", args.runs_dir)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd + list(args.server_arg)


def start_server(cmd: Sequence[str], log_path: Path) -> subprocess.Popen:
    """The demo in a process group of its own, so that stopping it stops whatever it started too."""
    log.info("starting: %s", shlex.join(cmd))
    with open(log_path, "wb") as out:
        return subprocess.Popen(list(cmd), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, port: int, proc: subprocess.Popen | None, timeout: float, plain: bool) -> Any:
    """A gradio_client session once the page answers (the demo listens only after its index is ready)."""
    if proc is not None:
        wait_port(port, proc, timeout=timeout)
    return connect(url, 1, plain)[0]


def gallery_size(client: Any) -> int | None:
    """The gallery's image count, from the status line of the page the server sent."""
    for comp in client.config.get("components", []):
        props = comp.get("props", {})
        if props.get("elem_id") == "status":
            found = re.search(r": (\d+) images", str(props.get("value", "")))
            return int(found.group(1)) if found else None
    return None


# --- queries and clients --------------------------------------------------------------------------------

def query_images(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` different images of the folder (a fixed random pick; repeats only if it has fewer)."""
    from zoo.images import find_images

    paths = find_images(folder)
    if not paths:
        raise SystemExit(f"{folder}: no query images")
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[int(order[i % len(paths)])] for i in range(count)]


def search_once(client: Any, query: Path, k: int, timeout: float) -> tuple[bool, str, int]:
    """(answered, error, results) for one search; a search that outlives `timeout` is cancelled."""
    from gradio_client import handle_file

    job = client.submit(handle_file(str(query)), k, api_name="/search")
    try:
        results, table, info, _ = job.result(timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - counted and reported, the run goes on
        job.cancel()
        return False, f"{type(exc).__name__}: {str(exc)[:200]}", 0
    rows = len(table.get("data", [])) if isinstance(table, dict) else 0
    if "L2 norm" not in str(info) or len(results) != k or rows != k:
        return False, f"unexpected answer: {len(results)} results, {rows} rows", len(results)
    return True, "", len(results)


def client_loop(index: int, client: Any, queries: Sequence[Path], k: int, run: LoadRun, start: threading.Barrier,
                request_timeout: float) -> None:
    """One user: its searches one after the other, none started after the run's deadline."""
    try:
        start.wait(timeout=max(1.0, run.deadline - time.monotonic()))
    except threading.BrokenBarrierError:
        return
    for query in queries:
        left = run.deadline - time.monotonic()
        if left <= 0:
            return
        t0 = time.perf_counter()
        ok, error, n = search_once(client, query, k, min(request_timeout, left))
        run.add(Request(index, str(query), time.perf_counter() - t0, ok, error, n))


def connect(url: str, count: int = 1, plain: bool = False) -> list[Any]:
    """gradio_client sessions, one per simulated user (each its own session hash, as separate browsers).

    gradio_client opens a new httpx client for every request, and each loads the CA
    bundle into a new SSL context (20-35 ms of CPU, holding the GIL) even for plain
    http: with ten clients in one process that is the load generator's CPU, taken
    from the server's two cores. Unless `plain`, every session gets one default SSL
    context (the same verification, made once).
    """
    from gradio_client import Client

    verify: Any = True
    if not plain:
        import certifi

        verify = ssl.create_default_context(cafile=certifi.where())
    return [Client(url, verbose=False, download_files=False, analytics_enabled=False, ssl_verify=verify)
            for _ in range(count)]


def run_load(url: str, queries: Sequence[Path], clients: int, per_client: int, k: int, timeout: float,
             request_timeout: float, plain: bool) -> tuple[LoadRun, float]:
    """All clients at once; returns the run and its wall time (first search sent to last answered)."""
    sessions = connect(url, clients, plain)
    run = LoadRun(deadline=time.monotonic() + timeout)
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client_loop, daemon=True, name=f"client-{c}",
                                args=(c, sessions[c], queries[c * per_client:(c + 1) * per_client], k, run, barrier,
                                      request_timeout))
               for c in range(clients)]
    for t in threads:
        t.start()
    barrier.wait(timeout=timeout)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=max(0.0, run.deadline - time.monotonic()) + request_timeout)
    wall = time.perf_counter() - t0
    for s in sessions:
        s.close()
    return run, wall


# --- smoke: a tiny model and gallery --------------------------------------------------------------------

def tiny_onnx_model(folder: Path, img_size: int = 32, dim: int = 16, seed: int = 0) -> Path:
    """A random-weight conv -> ReLU -> global-average-pool embedder with preprocess.json beside it (no torch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from zoo.edge import INPUT_NAME, OUTPUT_NAME, write_preprocess
    from zoo.layout import ONNX
    from zoo.preprocess import Preprocess

    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((dim, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", [INPUT_NAME, "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], [OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, img_size, img_size])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", dim])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ONNX
    onnx.save(model, str(path))
    write_preprocess(Preprocess(img_size=img_size), folder)
    return path


def small_gallery(cifar_test: Path, dest: Path, per_class: int) -> Path:
    """The first `per_class` images of every CIFAR-10 test class, copied under dest/<class>/.

    Copies, not links: a symlinked photo is allowed by its own target file (`app.demo.view.served_paths`),
    which gradio checks one allowed path at a time, unlike a gallery of files of its own.
    """
    for cls in sorted(p for p in cifar_test.iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True, exist_ok=True)
        for img in sorted(cls.iterdir())[:per_class]:
            shutil.copyfile(img, dest / cls.name / img.name)
    return dest


def cifar_test_split() -> Path:
    from zoo.datasets import find_cifar10

    return find_cifar10(download=False) / "test"


def flowers_val_split() -> Path:
    """`make demo`'s gallery: the flowers' held-out photos."""
    from zoo.datasets import find_named

    return find_named("flowers", download=False) / "val"


# --- report ---------------------------------------------------------------------------------------------

def summary(run: LoadRun, wall: float, sent: int) -> dict[str, Any]:
    """Latency percentiles of the answered searches and the throughput."""
    ok = np.asarray([r.latency_s for r in run.requests if r.ok], np.float64)
    stats: dict[str, Any] = {"sent": sent, "answered": int(len(ok)),
                             "failed": sum(not r.ok for r in run.requests),
                             "not_sent": sent - len(run.requests), "wall_s": round(wall, 3),
                             "searches_per_s": round(len(ok) / wall, 3) if wall > 0 else None}
    if len(ok):
        stats.update({f"{name}_s": round(float(v), 3) for name, v in
                      (("p50", np.percentile(ok, 50)), ("p95", np.percentile(ok, 95)), ("max", ok.max()),
                       ("mean", ok.mean()))})
    return stats


def machine() -> dict[str, Any]:
    from importlib.metadata import version  # not importing gradio: that alone takes seconds

    return {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            **{name: version(name) for name in ("numpy", "gradio", "gradio_client", "onnxruntime", "httpx")}}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process and its waited-for children (Linux /proc), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def table(result: dict[str, Any]) -> str:
    s, c, cpu = result["summary"], result["config"], result["cpu_s"]

    def per_search(seconds: float | None) -> str:
        return f"{1000 * seconds / s['answered']:.0f}" if seconds is not None and s["answered"] else "-"

    lines = ["| clients x searches | gallery | answered | p50 (s) | p95 (s) | max (s) | searches/s "
             "| CPU ms/search: server, clients | load avg |", "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    nan = float("nan")
    lines.append(f"| {c['clients']} x {c['per_client']} | {c['gallery_images'] or '?'} | {s['answered']}/{s['sent']} "
                 f"| {s.get('p50_s', nan):.2f} | {s.get('p95_s', nan):.2f} | {s.get('max_s', nan):.2f} "
                 f"| {s['searches_per_s']} | {per_search(cpu['server'])}, {per_search(cpu['clients'])} "
                 f"| {result['load_before'][0]:.1f} -> {result['load_after'][0]:.1f} |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="attach to a running demo (e.g. http://127.0.0.1:7860/) instead "
                                                    "of starting one")
    parser.add_argument("--model", default=MAKE_DEMO_MODEL,
                        help=f"--model of the demo it starts (default: {MAKE_DEMO_MODEL}, as `make demo`)")
    parser.add_argument("--hub-dir", type=Path, default=None, help="local hub of a published --model "
                                                                   "(default: as `edgezoo demo`)")
    parser.add_argument("--gallery", type=Path, default=None,
                        help="--gallery of the demo it starts (default: the model's own, as `edgezoo demo`)")
    parser.add_argument("--index-dir", type=Path, default=None, help="--index-dir of the demo it starts")
    parser.add_argument("--runs-dir", type=Path, default=None, help="--runs-dir of the demo it starts")
    parser.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                        help="one more `edgezoo demo` flag (repeatable, e.g. --server-arg=--concurrency=4)")
    parser.add_argument("--queries", type=Path, default=None,
                        help="folder of query images (default: --gallery, else the flowers' val split)")
    parser.add_argument("--clients", type=int, default=10, help="concurrent client sessions (default: 10)")
    parser.add_argument("--per-client", type=int, default=5, help="searches per client (default: 5)")
    parser.add_argument("--k", type=int, default=8, help="results per search (default: 8, the page's)")
    parser.add_argument("--warmup", type=int, default=2, help="searches before the timed run, one client "
                                                              "(default: 2)")
    parser.add_argument("--startup-timeout", type=float, default=900.0,
                        help="seconds for the demo to start (indexing a new gallery included; default: 900)")
    parser.add_argument("--request-timeout", type=float, default=60.0, help="seconds one search may take "
                                                                            "(default: 60)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole timed run (default: 600)")
    parser.add_argument("--plain-client", action="store_true",
                        help="gradio_client exactly as documented: a new CA-bundle SSL context per request "
                             "(default: one shared SSL context, see `connect`)")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny: a random-weight ONNX model, 60 CIFAR-10 images, 3 clients x 2 searches")
    args = parser.parse_args(argv)
    if args.smoke:
        args.clients, args.per_client, args.warmup = min(args.clients, 3), min(args.per_client, 2), 1
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a terminated benchmark still stops its server
    command = "python benchmarks/demo_load.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="edgezoo-demo-load-") as tmp:
        work = Path(tmp)
        if args.smoke and not args.url:
            gallery = small_gallery(cifar_test_split(), work / "gallery", SMOKE_IMAGES_PER_CLASS)
            args.model, args.gallery = str(tiny_onnx_model(work / "model")), gallery
            args.index_dir, args.runs_dir = work / "index", work
            args.hub_dir = args.hub_dir or work / "hub"  # the picker's zoo list: an empty hub, not the user's
        queries = query_images(args.queries or args.gallery or flowers_val_split(),
                               args.clients * args.per_client + args.warmup)
        proc, port = None, None
        load_before = os.getloadavg()
        try:
            if args.url:
                url = args.url if args.url.endswith("/") else args.url + "/"
            else:
                port = free_port()
                proc = start_server(server_command(args, port), work / "demo.log")
                url = f"http://127.0.0.1:{port}/"
            first = wait_ready(url, port or 0, proc, args.startup_timeout, args.plain_client)
            size = gallery_size(first)
            warm = [search_once(first, q, args.k, args.request_timeout) for q in queries[:args.warmup]]
            first.close()
            log.info("serving %s (%s gallery images); warm-up: %s", url, size, warm)
            cpu0 = (cpu_seconds(proc.pid) if proc else None, own_cpu_seconds())
            run, wall = run_load(url, queries[args.warmup:], args.clients, args.per_client, args.k, args.timeout,
                                 args.request_timeout, args.plain_client)
            cpu1 = (cpu_seconds(proc.pid) if proc else None, own_cpu_seconds())
        except (RuntimeError, TimeoutError) as exc:  # the demo did not come up: say why, from its own log
            tail = (work / "demo.log").read_text(errors="replace")[-3000:] if proc is not None else ""
            raise SystemExit(f"demo_load: {exc}\n{tail}") from None
        finally:
            if proc is not None:
                stop_process(proc, timeout=30, group=True)
            server_log = (work / "demo.log").read_text(errors="replace")[-4000:] if proc is not None else ""
    result = {"command": command, "url": url if args.url else None,
              "config": {"model": args.model, "gallery": str(args.gallery) if args.gallery else "the model's default",
                         "gallery_images": size, "clients": args.clients, "per_client": args.per_client, "k": args.k,
                         "warmup": args.warmup, "server_args": args.server_arg, "smoke": args.smoke,
                         "plain_client": args.plain_client},
              "machine": machine(), "load_before": load_before, "load_after": os.getloadavg(),
              "server_pid": proc.pid if proc is not None else None,
              "summary": summary(run, wall, args.clients * args.per_client),
              "cpu_s": {"server": round(cpu1[0] - cpu0[0], 2) if proc else None,
                        "clients": round(cpu1[1] - cpu0[1], 2)},
              "requests": [asdict(r) for r in run.requests]}
    errors = [r.error for r in run.requests if not r.ok]
    if errors:
        log.warning("%d searches failed, e.g. %s; server log tail:\n%s", len(errors), errors[0], server_log[-1500:])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))  # the benchmark's final table
    return result


if __name__ == "__main__":
    main()
