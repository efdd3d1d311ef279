"""Watch mode: keep the index in step with its roots while files change.

The ``watchdog`` library reports file events (inotify on Linux, FSEvents on
macOS; a polling observer for network shares, where no events arrive).  Events
only mark paths as changed; when a burst has been quiet for ``debounce_s`` (a
camera import of 500 files is one batch) the changed paths go through the
same code as an indexing run (:meth:`IndexJob.update`), so exclusions, safe
sweeping, reuse of known content and failure records behave exactly as in
``sightline index``.  A file whose size or mtime moved since its last event is
still being written: it waits for the next batch.  Renames and moves update
the path in place (same id, vector and captions: nothing is read again).

Roots are checked every ``health_s``: one that vanishes (unmounted, renamed
away) stops being watched and keeps its photos; when it comes back it is
watched again and re-scanned.  The watcher holds the index's writer lock for
as long as it runs; :meth:`Watcher.close` (also on Ctrl-C or SIGTERM, which
the command line raises as ``KeyboardInterrupt``) stops the observer, and the
writer lock's release saves the FAISS files, leaving a consistent index.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from sightline.indexer.captions import SOURCE_SIDECAR, index_captions, sidecar_captions
from sightline.indexer.ignore import IGNORE_FILE
from sightline.indexer.pipeline import IndexJob, IndexReport
from sightline.indexer.roots import Health, exclusions_for, is_under, normalise, root_health, root_of
from sightline.indexer.scan import is_image_name
from sightline.search.errors import WatchError
from sightline.search.store_records import display_path

log = logging.getLogger(__name__)

#: How often the loop wakes up to look at the queue, the clock and the roots.
_TICK_S = 0.1


@dataclass(frozen=True)
class WatchOptions:
    #: A burst of events ends after this long without one.
    debounce_s: float = 1.0
    #: An endless stream of events is still applied this often.
    max_delay_s: float = 30.0
    #: Poll the file system instead of waiting for its events (network shares).
    poll: bool = False
    poll_interval_s: float = 5.0
    #: How often roots are checked for vanishing and coming back.
    health_s: float = 2.0


@dataclass
class Batch:
    """What one applied batch did (handed to ``on_batch``)."""

    paths: int
    moved: int
    report: IndexReport
    captions: int = 0
    seconds: float = 0.0


@dataclass
class _Pending:
    dirty: dict = field(default_factory=dict)  # path -> (size, mtime_ns) at its last event, or None
    moves: list = field(default_factory=list)  # (src, dest), in event order
    sidecars: set = field(default_factory=set)  # caption .txt files that changed
    first: float = 0.0
    last: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.dirty or self.moves or self.sidecars)


class Watcher:
    """Watch ``scopes`` (roots, or paths below them) and apply what changes with ``job``."""

    def __init__(self, job: IndexJob, scopes: list[str], options: WatchOptions = WatchOptions(),
                 on_batch: Optional[Callable[[Batch], None]] = None,
                 on_root: Optional[Callable[[str, Health], None]] = None):
        self.job = job
        self.store = job.store
        self.scopes = list(dict.fromkeys(normalise(s) for s in scopes))
        self.options = options
        self.on_batch = on_batch or (lambda batch: None)
        self.on_root = on_root or (lambda path, health: None)
        self._events: "queue.Queue" = queue.Queue()
        self._pending = _Pending()
        self._observer = None
        self._watches: dict[str, object] = {}  # scope -> watchdog ObservedWatch
        self._lost: set[str] = set()  # scopes not watched now (root missing or swapped)
        self._next_health = 0.0
        self._writer = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Take the writer lock and start watching (events queue up until :meth:`loop`)."""
        self._writer = self.store.writer(scopes=self.scopes)  # on a database server: these roots only
        self._writer.__enter__()
        try:
            self._observer = self._make_observer()
            self._observer.start()
            for scope in self.scopes:
                self._check_scope(scope, announce=False)
        except BaseException:
            self.close()
            raise

    def loop(self, stop: Optional[threading.Event] = None) -> None:
        """Apply changes until ``stop`` is set (or KeyboardInterrupt)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self._drain(_TICK_S)
            now = time.monotonic()
            if self._due(now):
                self._apply_batch()
            if now >= self._next_health:
                self._next_health = now + self.options.health_s
                for scope in self.scopes:
                    self._check_scope(scope)

    def run(self, stop: Optional[threading.Event] = None) -> None:
        self.start()
        try:
            self.loop(stop)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the observer and release the writer lock (saving the FAISS files)."""
        try:
            if self._observer is not None:
                self._observer.stop()
                self._observer.join(timeout=10)
                self._observer = None
        finally:
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.__exit__(None, None, None)

    # ---------------------------------------------------------------- events
    def _make_observer(self):
        if self.options.poll:
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=self.options.poll_interval_s)
        from watchdog.observers import Observer

        return Observer()

    def _schedule(self, scope: str):
        from watchdog.events import FileSystemEventHandler

        events = self._events

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # watchdog's thread: only queue it
                events.put(event)

        folder = scope if os.path.isdir(scope) else os.path.dirname(scope)
        try:
            return self._observer.schedule(Handler(), folder, recursive=os.path.isdir(scope))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EMFILE):
                raise WatchError(
                    f"cannot watch {display_path(scope)}: the system's inotify limit is reached ({exc}). Raise it "
                    f"(`sudo sysctl fs.inotify.max_user_watches=1048576`, and max_user_instances) or use --poll."
                ) from None
            raise WatchError(f"cannot watch {display_path(scope)}: {exc.strerror or exc}") from None

    def _drain(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._take(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return

    def _take(self, event) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write") or (event.is_directory and kind in ("modified", "closed")):
            return  # reads (ours included) and folder timestamps say nothing new
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if kind == "moved" and event.dest_path else None
        wanted = [p for p in (src, dest) if p and self._relevant(p, event.is_directory)]
        if not wanted:
            return
        if dest and src in wanted and dest in wanted:
            self._pending.moves.append((src, dest))
        for path in wanted:
            if path.endswith(".txt") and not event.is_directory:
                self._pending.sidecars.add(path)
            elif os.path.basename(path) == IGNORE_FILE:
                self._mark(os.path.dirname(path))  # its folder is re-scanned under the new rules
            else:
                self._mark(path)

    def _relevant(self, path: str, is_dir: bool) -> bool:
        scope = next((s for s in self.scopes if is_under(path, s)), None)
        if scope is None:
            return False
        parts = os.path.relpath(path, scope).split(os.sep)
        if any(p.startswith(".") for p in parts[:-1]) or (is_dir and parts[-1].startswith(".")):
            return False  # hidden folders are never indexed
        name = parts[-1]
        return is_dir or is_image_name(name) or name == IGNORE_FILE or name.endswith(".txt")

    def _mark(self, path: str) -> None:
        now = time.monotonic()
        pending = self._pending
        if not pending:
            pending.first = now
        pending.last = now
        pending.dirty[path] = _signature(path)

    # --------------------------------------------------------------- batches
    def _due(self, now: float) -> bool:
        pending = self._pending
        if not pending:
            return False
        # Polling reports a file once per interval: a burst is quiet only after more than one.
        quiet = max(self.options.debounce_s, 1.5 * self.options.poll_interval_s if self.options.poll else 0.0)
        return now - pending.last >= quiet or now - pending.first >= self.options.max_delay_s

    def _apply_batch(self) -> None:
        pending, self._pending = self._pending, _Pending()
        for path, seen in pending.dirty.items():
            now = _signature(path)
            if now != seen and now is not None and not os.path.isdir(path):
                self._mark(path)  # still being written: wait for it to settle
        ready = [p for p in pending.dirty if p not in self._pending.dirty]
        if not ready and not pending.moves and not pending.sidecars:
            return
        started = time.perf_counter()
        moved = self._apply_moves(pending.moves)
        report = self.job.update(ready)
        captions = self._update_captions(ready, pending.sidecars)
        batch = Batch(len(ready), moved, report, captions, time.perf_counter() - started)
        log.info("applied %d changed path(s): %d indexed, %d reused, %d moved, %d removed, %d failed (%.2f s)",
                 batch.paths, report.indexed, report.reused, moved, report.removed, len(report.failed),
                 batch.seconds)
        for held in report.held:
            if held.kept:
                log.warning("%s", held.error)
        self.on_batch(batch)

    def _apply_moves(self, moves: list) -> int:
        """Renames whose content is unchanged keep their row: a path update, nothing read."""
        if not moves:
            return 0
        roots = self.store.roots.all()
        renames: dict[int, str] = {}
        for src, dest in moves:
            for old, state in self.store.file_states(src).items():
                new = dest + old[len(src):]
                root = root_of(roots, new)
                if root is None or exclusions_for(self.store, root).excludes_path(new):
                    continue  # moved out of the library (or excluded): swept with src's scope
                if _signature(new) != (state.size, state.mtime_ns):
                    continue  # gone again, or changed: dest's scan handles it
                renames[state.id] = new
        if renames:
            self.store.move_files(list(renames.items()))
        return len(renames)

    def _update_captions(self, paths: list[str], sidecars: set[str]) -> int:
        images = {p for p in paths if os.path.isfile(p) and is_image_name(p)}
        for folder in (p for p in paths if os.path.isdir(p)):
            images.update(self.store.file_states(folder))
        for sidecar in sidecars:
            stem = os.path.splitext(sidecar)[0]
            images.update(p for p in self.store.file_states(os.path.dirname(sidecar))
                          if os.path.splitext(p)[0] == stem)
        captions = {p: sidecar_captions(p) for p in images}
        if not any(captions.values()) and not sidecars:
            return 0
        return index_captions(self.store, lambda: self.job.encoder, captions, source=SOURCE_SIDECAR)

    # ----------------------------------------------------------------- roots
    def _check_scope(self, scope: str, announce: bool = True) -> None:
        root = root_of(self.store.roots.all(), scope)
        health = Health.OK if root is None else root_health(root)
        if health is Health.OK and not os.path.lexists(scope):
            health = Health.MISSING
        watching = scope in self._watches
        if health is Health.OK and not watching:
            self._watches[scope] = self._schedule(scope)
            if scope in self._lost:
                self._lost.discard(scope)
                log.info("%s is back; watching it again and re-scanning it", scope)
                self._mark(scope)  # whatever changed while it was away
                self.on_root(scope, health)
        elif health is not Health.OK and (watching or (not announce and scope not in self._lost)):
            watch = self._watches.pop(scope, None)
            if watch is not None:
                try:
                    self._observer.unschedule(watch)
                except (KeyError, OSError):  # its emitter already ended with the folder
                    pass
            self._lost.add(scope)
            log.warning("%s is %s; keeping its photos and waiting for it to come back", scope, health.value)
            self.on_root(scope, health)


def _signature(path: str) -> Optional[tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
