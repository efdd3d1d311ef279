"""Watch mode with real file events (inotify through watchdog, and the polling observer)
in a temporary folder, the real pipeline and the tiny open_clip model.  Every wait is bounded."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from contextlib import contextmanager

import pytest

from sightline.indexer.pipeline import IndexJob
from sightline.indexer.roots import Health
from sightline.indexer.watch import Watcher, WatchOptions
from sightline.search.store import Store
from tests.helpers import photo, write_photos

WAIT_S = 30


class Session:
    def __init__(self, index_dir, batches, roots_seen):
        self.index_dir = index_dir
        self.batches = batches
        self.roots_seen = roots_seen

    def next_batch(self):
        return self.batches.get(timeout=WAIT_S)

    def states(self):
        with Store.open(self.index_dir) as store:
            return store.file_states()

    def wait_root(self, health):
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                if self.roots_seen.get(timeout=0.5)[1] is health:
                    return
            except queue.Empty:
                pass
        raise AssertionError(f"the watcher never reported {health}")


@contextmanager
def watching(index_dir, encoder, roots, **options):
    with Store.open(index_dir, create=True) as store:
        job = IndexJob(store, encoder, workers=0, progress=False)
        job.run([str(r) for r in roots])
        batches, roots_seen = queue.Queue(), queue.Queue()
        opts = {"debounce_s": 0.4, "health_s": 0.2, **options}
        watcher = Watcher(job, [str(r) for r in roots], WatchOptions(**opts), on_batch=batches.put,
                          on_root=lambda path, health: roots_seen.put((path, health)))
        stop, failure = threading.Event(), []

        def run():
            try:
                watcher.loop(stop)
            except BaseException as exc:  # noqa: BLE001 - reported to the test below
                failure.append(exc)

        watcher.start()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield Session(index_dir, batches, roots_seen)
        finally:
            stop.set()
            thread.join(WAIT_S)
            watcher.close()
        assert not thread.is_alive() and not failure, failure


def test_additions_changes_moves_and_deletions(tmp_path, tiny_encoder):
    root = tmp_path / "photos"
    paths = write_photos(root, 4)
    with watching(tmp_path / "index", tiny_encoder, [root]) as w:
        before = w.states()
        write_photos(root / "new", 2, start=50)
        batch = w.next_batch()
        assert batch.report.indexed == 2 and str(root / "new" / "photo_0050.jpg") in w.states()

        photo(99).save(paths[0])  # changed content: a new vector
        shutil.move(paths[1], root / "renamed.jpg")  # a rename: the same row, nothing re-read
        shutil.move(root / "new", root / "moved-album")  # a folder moved within the root
        paths[2].unlink()
        batch = w.next_batch()
        after = w.states()
        assert batch.report.indexed == 1 and batch.report.removed == 1 and batch.moved == 3
        assert after[str(root / "renamed.jpg")].id == before[str(paths[1])].id
        assert str(root / "moved-album" / "photo_0051.jpg") in after and str(root / "new" / "photo_0051.jpg") not in after
        assert str(paths[2]) not in after and after[str(paths[0])].id != before[str(paths[0])].id
        with Store.open(w.index_dir) as store:
            assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in after.values())


def test_a_burst_is_one_batch_and_half_written_files_wait(tmp_path, tiny_encoder):
    root = tmp_path / "photos"
    root.mkdir()
    with watching(tmp_path / "index", tiny_encoder, [root], debounce_s=1.0) as w:
        write_photos(root / "import", 40, start=100)  # a camera import
        batch = w.next_batch()
        assert batch.paths >= 1 and batch.report.indexed == 40
        assert w.batches.empty()

        photo(7, size=(300, 200)).save(tmp_path / "big.jpg")
        big = (tmp_path / "big.jpg").read_bytes()
        piece = len(big) // 3 + 1
        with open(root / "slow.jpg", "wb") as f:  # a slow copy: pauses longer than the debounce
            for start in range(0, len(big), piece):
                f.write(big[start:start + piece])
                f.flush()
                time.sleep(1.3)
        deadline = time.monotonic() + WAIT_S
        while (w.states().get(str(root / "slow.jpg")) or (0, -1))[1] != len(big):
            assert time.monotonic() < deadline
            w.next_batch()
        with Store.open(w.index_dir) as store:  # a piece seen too early failed, then was retried and forgotten
            assert not [f for f in store.failures() if f.path.endswith("slow.jpg")]


def test_exclusions_apply_to_events(tmp_path, tiny_encoder):
    root = tmp_path / "photos"
    write_photos(root, 2)
    with Store.open(tmp_path / "index", create=True) as store:  # remember a glob for the root first
        IndexJob(store, tiny_encoder, workers=0, progress=False).run([str(root)], excludes=["*/private/*"])
    with watching(tmp_path / "index", tiny_encoder, [root]) as w:
        write_photos(root / "private", 2, start=30)
        write_photos(root / ".cache", 2, start=40)
        write_photos(root, 1, start=60)
        batch = w.next_batch()
        assert batch.report.indexed == 1 and len(w.states()) == 3
        (root / ".sightlineignore").write_text("photo_0000.jpg\n")  # new rules: that folder is re-scanned
        assert w.next_batch().report.removed == 1 and str(root / "photo_0000.jpg") not in w.states()


def test_a_root_that_disappears_keeps_its_photos_and_is_watched_again(tmp_path, tiny_encoder):
    root = tmp_path / "disk"
    write_photos(root, 3)
    with watching(tmp_path / "index", tiny_encoder, [root]) as w:
        shutil.move(root, tmp_path / "away")  # unplugged, renamed share...
        w.wait_root(Health.MISSING)
        time.sleep(1.0)  # whatever the watcher does now, it must not sweep
        assert len(w.states()) == 3
        write_photos(tmp_path / "away", 1, start=80)  # changed while it was away
        shutil.move(tmp_path / "away", root)
        w.wait_root(Health.OK)
        batch = w.next_batch()
        while batch.report.indexed == 0:
            batch = w.next_batch()
        assert len(w.states()) == 4
        write_photos(root, 1, start=90)  # and events flow again
        while str(root / "photo_0090.jpg") not in w.states():
            w.next_batch()


def test_polling_observer(tmp_path, tiny_encoder):
    root = tmp_path / "share"
    write_photos(root, 1)
    with watching(tmp_path / "index", tiny_encoder, [root], poll=True, poll_interval_s=0.3) as w:
        write_photos(root, 2, start=10)
        (root / "photo_0000.jpg").unlink()
        seen = set(w.states())
        while str(root / "photo_0011.jpg") not in seen or str(root / "photo_0000.jpg") in seen:
            w.next_batch()
            seen = set(w.states())


def test_sidecar_captions_follow(tmp_path, tiny_encoder):
    root = tmp_path / "photos"
    write_photos(root, 1)
    with watching(tmp_path / "index", tiny_encoder, [root]) as w:
        (root / "photo_0000.txt").write_text("a red square\nsomething else\n")
        batch = w.next_batch()
        assert batch.captions == 2
        with Store.open(w.index_dir) as store:
            file_id = store.file_states()[str(root / "photo_0000.jpg")].id
            assert [c.text for c in store.captions_for_file(file_id)] == ["a red square", "something else"]


def test_the_watcher_holds_the_writer_lock(tmp_path, tiny_encoder):
    from sightline.search.errors import IndexLockedError

    root = tmp_path / "photos"
    write_photos(root, 1)
    with watching(tmp_path / "index", tiny_encoder, [root]):
        with Store.open(tmp_path / "index") as other, pytest.raises(IndexLockedError):
            with other.writer():
                pass
    with Store.open(tmp_path / "index") as other, other.writer():
        pass  # released when the watcher stops


def test_inotify_limit_is_a_clear_error(tmp_path, tiny_encoder, monkeypatch):
    import errno

    from sightline.search.errors import WatchError

    root = tmp_path / "photos"
    write_photos(root, 1)
    with Store.open(tmp_path / "index", create=True) as store:
        job = IndexJob(store, tiny_encoder, workers=0, progress=False)
        job.run([str(root)])
        watcher = Watcher(job, [str(root)])
        from watchdog.observers import Observer

        # The kernel's limit cannot be lowered for one test (it is machine-wide): make schedule() hit it.
        monkeypatch.setattr(Observer, "schedule", lambda *a, **k: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "inotify watch limit reached")))
        with pytest.raises(WatchError, match="max_user_watches") as info:
            watcher.start()
        assert info.value.exit_code == 23
        with store.writer():
            pass  # start() failed: the lock is free again
