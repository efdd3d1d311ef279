"""kill -9 at any moment leaves a consistent index; a rerun finishes the job."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from sightline.search.store import Store
from tests.helpers import write_photos


def committed_count(db):
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2) as conn:
            return conn.execute("SELECT count(*) FROM files").fetchone()[0]
    except sqlite3.Error:
        return -1


def check_consistent(index_dir, total):
    with Store.open(index_dir) as store:
        states = store.file_states()
        if store.model_info() is None:  # killed before the model was bound: nothing stored yet
            assert not states
            return 0
        faiss_ids = store.vectors("files").ids().tolist()
        assert sorted(faiss_ids) == sorted(s.id for s in states.values())
        assert len(faiss_ids) == len(set(faiss_ids))
        assert len(states) <= total
    return len(states)


# Two fixed points through the real console script; test_random_kills covers 20+ random ones.
@pytest.mark.parametrize("kill_after", [0, 30])
def test_sigkill_mid_index_then_rerun(tmp_path, tiny_model_args, kill_after):
    total = 90
    folder = tmp_path / "photos"
    write_photos(folder, total, size=(160, 120))
    index_dir = tmp_path / "index"
    cmd = [sys.executable, "-m", "sightline", "index", str(folder), "--index", str(index_dir),
           *tiny_model_args, "--batch-size", "2", "--workers", "1", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = index_dir / "sightline.db"
    deadline = time.time() + 120
    # Kill as soon as at least `kill_after` files are committed (0: as soon as the db exists).
    while time.time() < deadline and proc.poll() is None:
        if db.exists() and committed_count(db) >= kill_after:
            break
        time.sleep(0.005)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()

    before = check_consistent(index_dir, total) if db.exists() else 0
    rerun = subprocess.run(cmd[:-1] + ["--json"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    import json

    report = json.loads(rerun.stdout)
    assert report["indexed"] == total - before  # nothing committed is embedded again
    assert check_consistent(index_dir, total) == total
