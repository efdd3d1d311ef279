"""The decode side: a crashing or stuck decoder, files that are not what the scan saw,
files changed or deleted while the job runs, and the memory one job may take."""

from __future__ import annotations

import os
import subprocess
import sys
import time


import sightline.indexer.workers as workers_module
from sightline.indexer.decode import DecodeTask, DecoderConfig, decode_one
from sightline.indexer.pipeline import IndexJob
from sightline.indexer.workers import decode_all
from sightline.search.store import Store
from tests.helpers import REPO, photo, write_photos
from tests.hostile_corpus import CRASH_SIZE, HANG_SIZE, MisbehavingPreprocessor


def tasks_for(paths):
    out = []
    for p in paths:
        st = os.stat(p)
        out.append(DecodeTask(str(p), st.st_size, st.st_mtime_ns))
    return out


def test_a_crashing_and_a_stuck_decoder_cost_one_file_each(tmp_path, tiny_encoder, monkeypatch):
    folder = tmp_path / "photos"
    paths = write_photos(folder, 10, size=(40, 30))
    photo(1, CRASH_SIZE).save(folder / "crash.png")
    photo(2, HANG_SIZE).save(folder / "hang.png")
    monkeypatch.setattr(workers_module, "DECODE_TIMEOUT_S", 3.0)
    config = DecoderConfig(MisbehavingPreprocessor(tiny_encoder.preprocessor), max_pixels=10**8)
    started = time.monotonic()
    results = list(decode_all(tasks_for(sorted(folder.iterdir())), config, frozenset(), workers=2, window=8))
    assert time.monotonic() - started < 60
    by_name = {os.path.basename(r.task.path): r for r in results}
    assert sorted(by_name) == sorted([p.name for p in paths] + ["crash.png", "hang.png"])  # each exactly once
    assert len(results) == len(by_name)
    assert by_name["crash.png"].error == "the image decoder crashed on this file"
    assert "took longer than 3 s" in by_name["hang.png"].error
    assert all(by_name[p.name].error is None and by_name[p.name].pixels is not None for p in paths)


def test_fifo_device_and_directory_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")  # a path swapped for a FIFO after the scan: open() would block
    (tmp_path / "dir.jpg").mkdir()
    config = DecoderConfig(None, max_pixels=10**8)
    for name, path, expect in [("pipe", str(tmp_path / "pipe.jpg"), "not a regular file"),
                               ("device", "/dev/zero", "not a regular file"),
                               ("dir", str(tmp_path / "dir.jpg"), "cannot read file")]:
        result = decode_one(DecodeTask(path, 0, 0), config)
        assert expect in result.error, name


def test_oversized_file_is_refused_before_reading(tmp_path):
    big = tmp_path / "huge.jpg"
    with open(big, "wb") as handle:
        handle.truncate(600 * 1024 * 1024)  # sparse: no disk, but reading it would take 512 MB of memory
    code = ("import sys; from sightline.indexer.decode import read_bytes\n"
            "try:\n    read_bytes(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
            # VmHWM, not ru_maxrss: the latter keeps the (large) pytest parent's peak across exec.
            "print([int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    out = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.split("\n")
    assert "larger than 512 MiB" in out[0]
    assert int(out[1]) < 200  # MB: the file was never read


def run_job(index, encoder, folder, workers=0):
    with Store.open(index, create=True) as store:
        return IndexJob(store, encoder, batch_size=4, workers=workers, progress=False).run(str(folder))


def current_sha(path):
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def assert_index_matches_disk(index, folder):
    """Every stored file exists with the stored size, mtime and content; FAISS agrees with SQLite."""
    with Store.open(index) as store:
        states = store.file_states()
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in states.values())
    for path, state in states.items():
        st = os.stat(path)
        assert (state.size, state.mtime_ns, state.sha256) == (st.st_size, st.st_mtime_ns, current_sha(path)), path
    return states


def test_unreadable_files_are_recorded_and_retried_once_readable(tmp_path, tiny_encoder, monkeypatch):
    """Tests run as root, which reads anything: make opening two files fail as it would for a user."""
    folder = tmp_path / "photos"
    write_photos(folder, 4)
    blocked = {str(folder / "photo_0001.jpg"): (13, "Permission denied"),
               str(folder / "photo_0002.jpg"): (5, "Input/output error")}
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        if os.fspath(path) in blocked:
            raise OSError(*blocked[os.fspath(path)])
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    index = tmp_path / "index"
    first = run_job(index, tiny_encoder, folder)
    reasons = {os.path.basename(f.path): f.reason for f in first.failed}
    assert reasons == {"photo_0001.jpg": "cannot read file: Permission denied",
                       "photo_0002.jpg": "cannot read file: Input/output error"}
    assert first.indexed == 2
    # Still unreadable: tried again (cheap) and still recorded -- permissions can change without mtime changing.
    second = run_job(index, tiny_encoder, folder)
    assert second.still_failing == 0 and len(second.failed) == 2
    monkeypatch.setattr(os, "open", real_open)  # "chmod +r": no mtime change
    third = run_job(index, tiny_encoder, folder)
    assert third.indexed == 2 and not third.failed
    with Store.open(index) as store:
        assert store.failures() == []
    assert len(assert_index_matches_disk(index, folder)) == 4


def test_files_deleted_and_rewritten_while_indexing(tmp_path, tiny_encoder, monkeypatch):
    """Deterministic: while the job reads photo 2, other files are deleted, broken, replaced, added."""
    import sightline.indexer.decode as decode_module

    folder = tmp_path / "photos"
    paths = write_photos(folder, 10)
    real_read = decode_module.read_bytes

    def read_and_meddle(path, *args):
        if path == str(paths[2]):
            paths[5].unlink()
            paths[6].write_bytes(paths[6].read_bytes()[:200])  # rewritten, truncated
            photo(500, (120, 90)).save(paths[7])  # rewritten in place with another picture
            photo(501, (50, 40)).save(folder / "tmp.jpg")
            os.replace(folder / "tmp.jpg", paths[8])  # replaced atomically
            photo(502).save(folder / "photo_0100.jpg")  # appears after the scan
        return real_read(path, *args)

    monkeypatch.setattr(decode_module, "read_bytes", read_and_meddle)
    index = tmp_path / "index"
    first = run_job(index, tiny_encoder, folder)
    monkeypatch.setattr(decode_module, "read_bytes", real_read)
    reasons = {os.path.basename(f.path): f.reason for f in first.failed}
    assert reasons.keys() == {"photo_0005.jpg", "photo_0006.jpg"}
    assert reasons["photo_0005.jpg"] == "file disappeared while indexing"
    assert "truncated" in reasons["photo_0006.jpg"] or "cannot" in reasons["photo_0006.jpg"]
    assert first.indexed == 8
    # The next run notices every change: the rewritten files are re-read, the new one indexed,
    # the deleted one's failure forgotten, the truncated one retried (it changed) and failing again.
    second = run_job(index, tiny_encoder, folder)
    assert second.indexed == 1 and [os.path.basename(f.path) for f in second.failed] == ["photo_0006.jpg"]
    assert second.touched == 2  # photos 7 and 8: recorded with the scan's stat, content already current
    third = run_job(index, tiny_encoder, folder)
    assert (third.indexed, third.touched, third.still_failing, third.failed) == (0, 0, 1, [])
    with Store.open(index) as store:
        assert [os.path.basename(f.path) for f in store.failures()] == ["photo_0006.jpg"]
    assert len(assert_index_matches_disk(index, folder)) == 9


def test_files_churning_during_a_pooled_run_converge(tmp_path, tiny_encoder):
    """Random: a thread rewrites, breaks, deletes and recreates files while worker processes decode."""
    import random
    import threading

    folder = tmp_path / "photos"
    paths = write_photos(folder, 40)
    churn = paths[::3]
    stop = threading.Event()
    rng = random.Random(7)

    def mutate():
        while not stop.is_set():
            path = rng.choice(churn)
            action = rng.random()
            try:
                if action < 0.3:
                    path.unlink(missing_ok=True)
                elif action < 0.6:
                    path.write_bytes(rng.randbytes(rng.randrange(0, 3000)))
                else:
                    photo(rng.randrange(10**6), (rng.randrange(40, 120), 60)).save(path, "JPEG")
            except OSError:
                pass
            time.sleep(0.002)

    thread = threading.Thread(target=mutate)
    index = tmp_path / "index"
    thread.start()
    try:
        run_job(index, tiny_encoder, folder, workers=2)
    finally:
        stop.set()
        thread.join()
    time.sleep(0.05)  # past the file system's timestamp granularity
    for i, path in enumerate(churn):  # settle: each churned file ends as a valid image or garbage
        (photo(9000 + i, (70, 50)).save(path, "JPEG") if i % 2 else path.write_bytes(b"garbage" * (i + 1)))
    settled = run_job(index, tiny_encoder, folder, workers=2)
    states = assert_index_matches_disk(index, folder)
    garbage = {str(p) for i, p in enumerate(churn) if i % 2 == 0}
    assert set(states) == {str(p) for p in paths} - garbage
    assert {f.path for f in settled.failed} == garbage
    with Store.open(index) as store:
        assert {f.path for f in store.failures()} == garbage


def test_decode_window_stays_bounded_when_the_model_is_slow(tmp_path, tiny_encoder, monkeypatch):
    """Back-pressure: workers never run more than ``window`` tasks ahead of a slow consumer."""
    from concurrent.futures import ProcessPoolExecutor

    outstanding, peak = [0], [0]

    class CountingPool(ProcessPoolExecutor):
        def submit(self, *args, **kwargs):
            future = super().submit(*args, **kwargs)
            outstanding[0] += 1
            peak[0] = max(peak[0], outstanding[0])
            future.add_done_callback(lambda _: outstanding.__setitem__(0, outstanding[0] - 1))
            return future

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", CountingPool)
    paths = write_photos(tmp_path / "photos", 30, size=(40, 30))
    config = DecoderConfig(tiny_encoder.preprocessor, max_pixels=10**8)
    count = 0
    for result in decode_all(tasks_for(paths), config, frozenset(), workers=2, window=5):
        count += 1
        assert result.error is None
        time.sleep(0.02)  # a slow model
    assert count == 30 and peak[0] <= 5
