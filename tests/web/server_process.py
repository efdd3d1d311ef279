"""Run `sightline serve` as a real process on a free port (browser test, benchmark helpers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, timeout: float, token: Optional[str] = None) -> None:
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the server did not answer {url} within {timeout:.0f} s")


@contextmanager
def running_server(index_dir: Path, log_path: Path, *extra: str, timeout: float = 120.0,
                   token: Optional[str] = None):
    """Yield the base URL of a `sightline serve` process; stop it afterwards.

    ``token`` is passed through the environment (SIGHTLINE_TOKEN), as a user would.
    """
    port = free_port()
    command = [sys.executable, "-m", "indexer.cli", "serve", "--index", str(index_dir), "--port", str(port),
               "--no-access-log", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("SIGHTLINE_TOKEN", None)
    if token:
        env["SIGHTLINE_TOKEN"] = token
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            try:
                wait_ready(base + "/api/health", process, timeout, token)
            except Exception as exc:
                raise RuntimeError(f"{exc}; server log:\n{log_path.read_text(errors='replace')[-4000:]}") from None
            yield base
        finally:
            process.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
