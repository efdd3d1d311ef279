"""kill -9 at random moments, many times in a row (seeded).

Each round changes the photo folder (new, changed, moved, copied, deleted and
broken files), starts a real ``sightline index`` process, kills it with
SIGKILL after a random delay, and checks: the index opens, SQLite passes its
integrity check, every stored embedding is sound, the FAISS file on disk is
readable with no duplicate or wrong vectors, FAISS ids and SQLite rows agree
exactly once loaded, and no file is stored twice.  A rerun must then complete
and embed exactly what was not yet committed -- nothing twice.

Processes are forked from a pre-warmed CLI (tests/forking_cli.py), so a round
costs the job itself, not seconds of imports.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import time

import pytest

from sightline.indexer.repair import verify
from sightline.search.errors import ImageDecodeError
from sightline.search.imageio import decode_image
from sightline.search.store import Store
from tests.forking_cli import ForkingCli
from tests.helpers import photo

SEED = int(os.environ.get("SIGHTLINE_KILL_SEED", "20240611"))
KILLS = int(os.environ.get("SIGHTLINE_KILLS", "20"))


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def decodable(path) -> bool:
    try:
        decode_image(open(path, "rb").read())
        return True
    except ImageDecodeError:
        return False


class Folder:
    """The photo folder and the seeded changes made to it between runs."""

    def __init__(self, root, rng: random.Random):
        self.root, self.rng, self.serial = root, rng, 0
        root.mkdir()

    def files(self) -> list:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def _new_name(self, ext="jpg"):
        self.serial += 1
        sub = self.root / self.rng.choice(["", "album", "album/deep"])
        sub.mkdir(parents=True, exist_ok=True)
        return sub / f"img_{self.serial:04d}.{ext}"

    def _write_photo(self, path):
        size = (self.rng.randrange(40, 110), self.rng.randrange(30, 90))
        photo(self.rng.randrange(10**9), size).save(path, "PNG" if path.suffix == ".png" else "JPEG")

    def mutate(self) -> None:
        rng = self.rng
        for _ in range(rng.randrange(3, 9)):
            self._write_photo(self._new_name(rng.choice(["jpg", "jpg", "png"])))
        existing = self.files()
        if existing and rng.random() < 0.5:
            rng.choice(existing).unlink()
        existing = self.files()
        if existing and rng.random() < 0.5:
            self._write_photo(rng.choice(existing))  # same name, new content
        if existing and rng.random() < 0.3:
            shutil.copy(rng.choice(existing), self._new_name())  # duplicate content
        if existing and rng.random() < 0.3:
            source = rng.choice(existing)
            source.rename(self._new_name(source.suffix[1:]))  # moved
        if rng.random() < 0.25:
            good = self._new_name()
            self._write_photo(good)
            good.write_bytes(good.read_bytes()[: rng.randrange(10, 300)])  # broken


def committed_state(index) -> dict:
    with Store.open(index) as store:
        return store.file_states()


def check_after_kill(index, folder: Folder) -> dict:
    """What must hold whenever the index process dies, wherever it was."""
    with Store.open(index) as store:
        report = verify(store)
        assert report.ok, report.problems  # only "stale" caches allowed: integrity, embeddings, FAISS file sound
        states = store.file_states()
        loaded = store.vectors("files").ids().tolist()
        assert len(loaded) == len(set(loaded)), "duplicate FAISS ids"
        assert sorted(loaded) == sorted(s.id for s in states.values()), "FAISS and SQLite disagree"
        assert len({s.id for s in states.values()}) == len(states)
    for path, state in states.items():
        if os.path.exists(path):
            st = os.stat(path)
            if (st.st_size, st.st_mtime_ns) == (state.size, state.mtime_ns):
                assert state.sha256 == sha(path), f"{path}: stored vector belongs to other content"
    return states


def expected_rerun(before: dict, folder: Folder) -> tuple[int, int]:
    """(unchanged, newly embedded) for a complete rerun after ``before`` was committed."""
    known_hashes = {s.sha256 for s in before.values()}
    unchanged, new_hashes = 0, set()
    for path in folder.files():
        state = before.get(str(path))
        st = path.stat()
        if state is not None and (state.size, state.mtime_ns) == (st.st_size, st.st_mtime_ns):
            unchanged += 1
        elif decodable(path) and sha(path) not in known_hashes:
            new_hashes.add(sha(path))
    return unchanged, len(new_hashes)


def check_complete(index, folder: Folder) -> None:
    with Store.open(index) as store:
        report = verify(store)
        assert report.problems == [], report.problems  # saved at the end: not even stale
        states = store.file_states()
        failed = {f.path for f in store.failures()}
    on_disk = {str(p): p for p in folder.files()}
    good = {p for p, path in on_disk.items() if decodable(path)}
    assert set(states) == good
    assert failed == set(on_disk) - good
    for path in good:
        st = os.stat(path)
        state = states[path]
        assert (state.size, state.mtime_ns, state.sha256) == (st.st_size, st.st_mtime_ns, sha(path)), path


def phase(index, last_run_before: int, committed: int) -> str:
    with sqlite3.connect(index / "sightline.db") as conn:
        runs = conn.execute("SELECT finished_at FROM runs WHERE id > ?", (last_run_before,)).fetchall()
    if not runs:
        return "starting"
    if runs[-1][0] is not None:
        return "finished, not exited"
    return "mid-commits" if committed else "scanning/loading/decoding"


def last_run_id(index) -> int:
    with sqlite3.connect(index / "sightline.db") as conn:
        return conn.execute("SELECT coalesce(max(id), 0) FROM runs").fetchone()[0]


def wait_for_kill_moment(rng, index, typical: float, stored: int, todo: int, runs_before: int) -> None:
    """Anywhere in the run, or right after a random commit, or right as the run finishes.

    Commits take a small part of a run's time (loading the model dominates),
    so two of the three strategies watch the database to land among them.
    """
    strategy = rng.choice(["anytime", "after a commit", "at the finish"])
    if strategy == "anytime":
        time.sleep(rng.uniform(0, 1.2 * typical))
        return
    target = stored + rng.randrange(1, max(2, todo + 1))
    deadline = time.monotonic() + 3 * typical + 5
    conn = sqlite3.connect(f"file:{index / 'sightline.db'}?mode=ro", uri=True, timeout=1, isolation_level=None)
    try:
        while time.monotonic() < deadline:
            try:
                if strategy == "after a commit":
                    if conn.execute("SELECT count(*) FROM files").fetchone()[0] >= target:
                        break
                elif conn.execute("SELECT count(*) FROM runs WHERE id > ? AND finished_at IS NOT NULL",
                                  (runs_before,)).fetchone()[0]:
                    break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.001)
    finally:
        conn.close()
    time.sleep(rng.uniform(0, 0.01))


@pytest.fixture
def forking_cli(tmp_path):
    (tmp_path / "runs").mkdir()
    cli = ForkingCli(tmp_path / "runs")
    yield cli
    cli.close()


def reap(pid: int) -> None:
    """Kill whatever the killed run left in its process group (decode workers, forkserver)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def test_random_sigkills_leave_a_consistent_index(tmp_path, tiny_model_args, forking_cli):
    rng = random.Random(SEED)
    folder = Folder(tmp_path / "photos", rng)
    index = tmp_path / "index"
    folder.mutate()

    def index_args():
        return ["index", folder.root, "--index", index, *tiny_model_args, "--json",
                "--batch-size", rng.choice([1, 2, 3]), "--workers", rng.choice([0, 1, 2])]

    def run_to_completion():
        started = time.monotonic()
        pid, out, err = forking_cli.start(index_args())
        status = forking_cli.wait(pid)
        reap(pid)
        assert status == 0, err.read_text()
        return json.loads(out.read_text()), time.monotonic() - started

    _, took = run_to_completion()
    durations = [took]
    landed, rounds, phases, committed_by_killed = 0, 0, {}, 0
    while landed < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS, f"only {landed} kills landed in {rounds} rounds"
        folder.mutate()
        runs_before, before_kill = last_run_id(index), committed_state(index)
        _, todo = expected_rerun(before_kill, folder)
        pid, _, err = forking_cli.start(index_args())
        wait_for_kill_moment(rng, index, statistics.median(durations), len(before_kill), todo, runs_before)
        os.kill(pid, signal.SIGKILL)  # a zombie if it already exited: then nothing happens
        status = forking_cli.wait(pid)
        reap(pid)
        if status != -signal.SIGKILL:
            assert status == 0, err.read_text()

        before = check_after_kill(index, folder)
        committed = len(set(before.items()) - set(before_kill.items()))
        if status == -signal.SIGKILL:
            landed += 1
            committed_by_killed += committed
            where = phase(index, runs_before, committed)
            phases[where] = phases.get(where, 0) + 1
        unchanged, new = expected_rerun(before, folder)
        report, took = run_to_completion()
        if report["indexed"]:  # a run with nothing to embed never loads the model: not typical
            durations.append(took)
        assert report["unchanged"] == unchanged, "something committed before the kill was processed again"
        assert report["indexed"] == new, "content embedded twice, or missed"
        check_complete(index, folder)

    print(f"\nrandom kills: seed {SEED}, {landed} landed in {rounds} rounds; where: {phases}; "
          f"{committed_by_killed} file(s) committed by killed runs and kept; "
          f"median run {statistics.median(durations):.2f} s")
    assert len(phases) >= 2  # the kills did not all land in the same phase
