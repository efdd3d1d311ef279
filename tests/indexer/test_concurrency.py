"""A second `sightline index` (or `repair`) on an index being written is refused with
a clear message and its own exit code; the first run is not disturbed.

The first run is frozen with SIGSTOP while it holds the index, so the test does
not depend on how fast anything runs.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sightline.search.errors import IndexLockedError
from sightline.search.store import Store
from tests.helpers import REPO, write_photos


def committed(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return -1


def sightline(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sightline", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=300, **kwargs)


def test_second_index_run_is_refused_while_the_first_runs(tmp_path, tiny_model_args):
    folder, other = tmp_path / "photos", tmp_path / "more"
    write_photos(folder, 60)
    write_photos(other, 3, start=500)
    index = tmp_path / "index"
    first = subprocess.Popen([sys.executable, "-m", "sightline", "index", str(folder), "--index", str(index),
                              *tiny_model_args, "--batch-size", "1", "--workers", "0", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while committed(index / "sightline.db") < 1 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(first.pid, signal.SIGSTOP)  # holds the index (and its lock) until continued
        assert first.poll() is None, first.stderr.read()
        frozen_at = committed(index / "sightline.db")

        for command in (["index", other, *tiny_model_args], ["repair"]):
            second = sightline(*command, "--index", index)
            assert second.returncode == IndexLockedError.exit_code == 6, second.stderr
            assert second.stderr.startswith("Error: another process is writing to the index at ")
            assert "Wait for it to finish" in second.stderr and "Traceback" not in second.stderr
        assert committed(index / "sightline.db") == frozen_at  # the refused runs wrote nothing

        reader = sightline("status", "--index", index, "--json")  # reading needs no lock
        assert reader.returncode == 0 and json.loads(reader.stdout)["images"] >= 1
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert json.loads(out)["indexed"] == 60
    with Store.open(index) as store:
        paths = store.file_states()
        assert len(paths) == 60 and all(p.startswith(str(folder)) for p in paths)
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in paths.values())
    # Once the first has finished, the same command goes through.
    from click.testing import CliRunner

    from sightline.cli import main

    again = CliRunner().invoke(main, ["index", str(other), "--index", str(index), "--workers", "0", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["indexed"] == 3


def test_lock_is_released_when_the_holder_is_killed(tmp_path):
    """flock is the kernel's: a kill -9 of the writer never leaves a stale lock behind."""
    index = tmp_path / "index"
    Store.open(index, create=True).close()
    code = ("import sys, time; from sightline.search.store import Store\n"
            "s = Store.open(sys.argv[1]); w = s.writer(); w.__enter__(); print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(index)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with Store.open(index) as store, pytest.raises(IndexLockedError):
            with store.writer():
                raise AssertionError("the lock was not held")
    finally:
        holder.kill()
        holder.wait()
    with Store.open(index) as store, store.writer():
        pass
