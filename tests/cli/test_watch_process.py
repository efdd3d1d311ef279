"""A real `sightline index --watch` process: it picks files up within seconds, refuses a
second writer, and stops cleanly on SIGTERM or Ctrl-C (exit 0) with a consistent index."""

from __future__ import annotations

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

WAIT_S = 60


def indexed(db, path: str) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
        return conn.execute("SELECT 1 FROM files WHERE path = ?", (os.fsencode(path),)).fetchone() is not None


def wait_for(predicate, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > WAIT_S:
            raise AssertionError(f"timed out after {WAIT_S} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def start_watch(tmp_path, tiny_model_args, root):
    log = open(tmp_path / "watch.log", "w+")
    proc = subprocess.Popen([sys.executable, "-m", "sightline", "index", str(root), "--index", str(tmp_path / "index"),
                             *tiny_model_args, "--workers", "0", "--watch", "--debounce", "0.5"],
                            stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    wait_for(lambda: "Watching" in (tmp_path / "watch.log").read_text() or proc.poll() is not None, "the watch to start")
    assert proc.poll() is None, (tmp_path / "watch.log").read_text()
    return proc, log


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_watch_process_end_to_end(tmp_path, tiny_model_args, stop_signal):
    root = tmp_path / "photos"
    write_photos(root, 3)
    proc, log = start_watch(tmp_path, tiny_model_args, root)
    db = tmp_path / "index" / "sightline.db"
    try:
        latencies = []
        for i in range(3):
            write_photos(root, 1, start=100 + i)
            latencies.append(wait_for(lambda: indexed(db, str(root / f"photo_{100 + i:04d}.jpg")), "a new photo"))
        os.rename(root / "photo_0000.jpg", root / "renamed.jpg")
        wait_for(lambda: indexed(db, str(root / "renamed.jpg")) and not indexed(db, str(root / "photo_0000.jpg")),
                 "a rename")
        second = subprocess.run([sys.executable, "-m", "sightline", "index", str(root), "--index",
                                 str(tmp_path / "index"), *tiny_model_args], capture_output=True, text=True, cwd=REPO)
        assert second.returncode == IndexLockedError.exit_code, second.stderr
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=WAIT_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log.seek(0)
    text = log.read()
    assert "Stopped watching" in text and "Traceback" not in text, text
    assert "1 new" in text and "1 moved" in text
    with Store.open(tmp_path / "index") as store, store.writer():  # the lock is free, the index consistent
        states = store.file_states()
        assert len(states) == 6
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in states.values())
        assert store.last_run()["finished_at"] is not None
    print(f"watch latency (file written -> committed), s: {[round(x, 2) for x in latencies]}")
