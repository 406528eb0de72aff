"""Servers started in subprocesses by the benchmarks and the tests: a free port, wait until one listens, stop it.

Not part of the product (nothing under zoo/, pretrain/, export/ or app/ imports it):
benchmarks/retrieval.py serves the demo with it, tests/hubutil.py olah.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0) -> None:
    """Block until something listens on 127.0.0.1:port; fail early if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen, timeout: float = 10.0, *, group: bool = False) -> None:
    """Terminate a server subprocess, killing it if it does not exit within `timeout` seconds.

    With ``group`` the signals go to its whole process group (a server started with
    ``start_new_session=True``), so that whatever it started goes too.
    """
    def send(sig: signal.Signals) -> None:
        try:
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        except ProcessLookupError:  # already gone
            pass

    send(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        send(signal.SIGKILL)
        proc.wait()
    if group:  # the leader is gone; anything left in its group goes now
        send(signal.SIGKILL)
