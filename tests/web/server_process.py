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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Server:
    base: str  #: e.g. http://127.0.0.1:PORT
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def server_process(index_dir: Path, log_path: Path, *extra: str, timeout: float = 120.0,
                   token: Optional[str] = None):
    """Yield a :class:`Server` running `sightline serve` on a free port; stop it afterwards.

    ``token`` is passed through the environment (SIGHTLINE_TOKEN), as a user would.
    """
    port = free_port()
    command = [sys.executable, "-m", "sightline", "serve", "--index", str(index_dir), "--port", str(port),
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
            yield Server(base, process, Path(log_path))
        finally:
            process.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def running_server(index_dir: Path, log_path: Path, *extra: str, timeout: float = 120.0,
                   token: Optional[str] = None):
    """Yield the base URL of a `sightline serve` process; stop it afterwards."""
    with server_process(index_dir, log_path, *extra, timeout=timeout, token=token) as server:
        yield server.base


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")
