"""A pre-warmed ``sightline`` that forks one real command process per request.

Starting Python with torch and open_clip takes seconds on a small CI machine;
the random-kill test needs dozens of indexing processes to kill.  This server
imports everything once, then forks: each child runs the real CLI entry point
(``sightline.cli.main``) in its own process group and exits, exactly like a
fresh ``sightline`` process except for the import time.  torch is limited to
one thread before forking, so no OpenMP pool exists that a fork could break.

Protocol, one JSON object per line on stdin / stdout:
``{"run": [args...], "stdout": path, "stderr": path}`` -> ``{"pid": N}``;
``{"wait": N}`` -> ``{"status": S}`` (exit code, or minus the signal).
A child stays a zombie until waited for, so its pid cannot be reused meanwhile.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from pathlib import Path


def _child(request: dict) -> None:
    code = 70
    try:
        os.setpgid(0, 0)  # its decode workers join this group: the test can reap them all
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        from sightline.cli import main

        main.main(args=request["run"], prog_name="sightline")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report anything, then exit
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve() -> None:
    import torch

    torch.set_num_threads(1)
    import faiss  # noqa: F401 - the slow imports, done once
    import open_clip  # noqa: F401
    import sqlalchemy  # noqa: F401

    import sightline.cli  # noqa: F401
    import sightline.indexer.pipeline  # noqa: F401
    import sightline.search.models  # noqa: F401

    reply = lambda obj: print(json.dumps(obj), flush=True)  # noqa: E731
    reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request)
            reply({"pid": pid})
        elif "wait" in request:
            _, status = os.waitpid(request["wait"], 0)
            reply({"status": os.waitstatus_to_exitcode(status)})


class ForkingCli:
    """Client side, used by the tests: ``start`` a command, ``wait`` for it."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        repo = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen([sys.executable, "-c", "from tests.forking_cli import serve; serve()"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        self.count = 0

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, args: list) -> tuple[int, Path, Path]:
        self.count += 1
        out, err = self.workdir / f"run{self.count}.out", self.workdir / f"run{self.count}.err"
        pid = self._ask({"run": [str(a) for a in args], "stdout": str(out), "stderr": str(err)})["pid"]
        return pid, out, err

    def wait(self, pid: int) -> int:
        return self._ask({"wait": pid})["status"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()
