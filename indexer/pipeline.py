"""The indexing job: folder -> parallel decode -> batched embedding -> store.

Incremental (unchanged path, size and mtime: skipped; known content: vector
reused), resumable (every batch is committed in one transaction, so a kill at
any moment loses at most the batch in flight), and it loses nothing: a file
that cannot be read is recorded with its reason and the job goes on.
Disappeared files are swept at the end (mark and sweep), only under the roots
of the run, never under folders that could not be read this time, nor under a
root that looks unmounted (see :mod:`sightline.indexer.roots`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

from sightline.indexer.decode import Decoded, DecodeTask, DecoderConfig
from sightline.indexer.roots import HeldRoot, Health, Target, plan_roots, record_indexed, root_health, targets_for_paths
from sightline.indexer.scan import ScanProblem, walk_images
from sightline.indexer.workers import decode_all
from sightline.search.encoder import ClipEncoder, LazyEncoder, check_model
from sightline.search.imageio import DEFAULT_MAX_PIXELS
from sightline.search.store import Kind, ModelInfo, Store
from sightline.search.store_records import FailureRecord, FileRecord, FileState

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    root: str  # the first root of the run (``roots`` lists them all)
    roots: list[str] = field(default_factory=list)
    indexed: int = 0  # embedded by the model
    reused: int = 0  # moved/duplicated content: stored vector reused
    touched: int = 0  # mtime changed, content did not
    unchanged: int = 0
    removed: int = 0
    still_failing: int = 0  # failed before and unchanged since: not retried
    failed: list[FailureRecord] = field(default_factory=list)
    held: list[HeldRoot] = field(default_factory=list)  # roots not swept (missing, empty, other device)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {
            "root": self.root, "indexed": self.indexed, "reused": self.reused, "touched": self.touched,
            "unchanged": self.unchanged, "removed": self.removed, "still_failing": self.still_failing,
            "failed": [{"path": f.path, "reason": f.reason} for f in self.failed],
            "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
            "roots": self.roots, "held_back": [h.as_dict() for h in self.held],
        }

    @property
    def exit_error(self):
        """The error of the first root whose photos were kept (its exit code is the run's), or None."""
        return next((h.error for h in self.held if h.kept), None)


@dataclass
class _Plan:
    todo: list[DecodeTask]
    replace: dict[str, FileState]  # path -> stored state of a changed file
    gone: list[int]  # ids of files no longer present


class IndexJob:
    """Index folders or files (the index's roots) into ``store`` with ``encoder``.

    ``encoder`` may be a zero-argument factory: it is then called only if
    something needs embedding, so a rescan of an unchanged folder never loads
    torch or the model.  ``model_id`` (see ``search.models.model_id_for``)
    lets a model mismatch fail before anything is loaded.
    """

    def __init__(self, store: Store, encoder: "ClipEncoder | Callable[[], ClipEncoder]", *,
                 model_id: Optional[str] = None, batch_size: int = 32, workers: Optional[int] = None,
                 progress: bool = True, use_draft: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                 ray: Optional[tuple] = None):
        self.store = store
        self._encoder = LazyEncoder(encoder, store.model_info, f"the index at {store.location}")
        self.model_id = model_id or getattr(encoder, "model_id", None)
        self.batch_size = max(1, batch_size)
        self.workers = default_workers() if workers is None else workers
        self.progress = progress
        self.use_draft = use_draft
        self.max_pixels = max_pixels
        #: (RayOptions, EncoderRecipe): decode and embed on Ray (see ``indexer/ray_embed.py``).
        self.ray = ray

    @property
    def encoder(self) -> ClipEncoder:
        return self._encoder.get()

    @property
    def encoder_loaded(self) -> bool:
        """Whether the model was loaded (something needed embedding)."""
        return self._encoder.loaded

    def _bind_model(self) -> None:
        enc = self.encoder
        self.store.bind_model(ModelInfo(enc.model_id, enc.dim, enc.name, enc.pretrained))

    def run(self, paths: "str | os.PathLike | Sequence[str | os.PathLike] | None" = None, *,
            excludes: Optional[Sequence[str]] = None, clear_excludes: bool = False,
            prune: bool = False) -> IndexReport:
        """Index folders or files (remembered as roots; none: every remembered root).

        ``excludes`` (or ``clear_excludes``) replace the roots' remembered globs;
        ``prune`` sweeps roots that look unmounted (see :mod:`sightline.indexer.roots`).
        """
        if paths is None or isinstance(paths, (str, os.PathLike)):
            paths = [] if paths is None else [paths]
        # On a database server, writers of other roots run meanwhile; no paths: every root.
        scopes = [os.path.abspath(p) for p in paths] or None
        with self.store.writer(scopes=scopes):
            targets = plan_roots(self.store, paths, excludes, clear_excludes)
            return self._run(targets, prune)

    def update(self, paths: Iterable[str]) -> IndexReport:
        """Bring changed paths (files or folders, existing or not) under the remembered
        roots up to date: watch mode's batch.  Roots are neither added nor changed."""
        with self.store.writer():
            return self._run(targets_for_paths(self.store, paths), prune=False)

    def _run(self, targets: list[Target], prune: bool) -> IndexReport:
        started = time.perf_counter()
        roots = list(dict.fromkeys(t.root.path for t in targets))
        report = IndexReport(root=roots[0] if roots else "", roots=roots)
        current = self.store.model_info()
        if self.model_id is not None:
            check_model(current, self.model_id, f"the index at {self.store.location}")
        previous = self.store.last_run()
        run_id = self.store.start_run(", ".join(roots))
        if previous is not None and previous["finished_at"] is None and current is not None:
            # The last run was killed: what it committed never reached the FAISS files.
            # Catch them up once here (saved below), not in every reader until the next change.
            self.store.vectors(Kind.FILES), self.store.vectors(Kind.CAPTIONS)
        plan = _Plan([], {}, [])
        held = {}
        for target in targets:
            self._plan_target(target, plan, report, prune, held)
        if plan.todo:
            self._bind_model()
            self._process(plan, report)
        if plan.gone:
            self.store.remove_files(plan.gone)
            report.removed = len(plan.gone)
        for target in targets:
            if target.root.path not in held:
                record_indexed(self.store, target.root)
        report.held = list(held.values())
        report.seconds = time.perf_counter() - started
        self.store.save()  # before the run is marked finished: "finished" means the FAISS files are current
        self.store.finish_run(run_id, indexed=report.indexed, reused=report.reused,
                              skipped=report.unchanged, removed=report.removed, failed=len(report.failed))
        return report

    # ------------------------------------------------------------------ plan
    def _plan_target(self, target: Target, plan: "_Plan", report: IndexReport, prune: bool, held: dict) -> None:
        scope = target.scope
        problems: list[ScanProblem] = []
        target.exclusions.reset()
        root_there = os.path.lexists(target.root.path)
        scanned = list(walk_images(scope, problems, target.exclusions)) if root_there else []
        if not target.whole_root and not os.path.lexists(scope):
            # A folder or file under a present root that is gone: deleted, not unreadable.
            problems = [p for p in problems if p.path != scope]
        elif not root_there:
            problems = []  # reported as a missing root below, not as a failure
        known = self.store.file_states(scope)
        failed_before = self.store.failure_states(scope)
        for f in scanned:
            state = known.get(f.path)
            if state is not None and (state.size, state.mtime_ns) == (f.size, f.mtime_ns):
                report.unchanged += 1
            elif state is None and failed_before.get(f.path) == (f.size, f.mtime_ns):
                report.still_failing += 1
            else:
                if state is not None:
                    plan.replace[f.path] = state
                plan.todo.append(DecodeTask(f.path, f.size, f.mtime_ns))
        unreadable = [FailureRecord(p.path, 0, 0, p.reason) for p in problems]
        report.failed.extend(unreadable)
        self.store.record_failures(unreadable)
        present = {f.path for f in scanned}
        gone = [s.id for p, s in known.items() if p not in present and not _inside_any(p, problems)]
        health = root_health(target.root, len(scanned) if target.whole_root else None,
                             target.exclusions.skipped, len(known))
        if gone and health is not Health.OK and not prune:
            log.warning("%s: root %s; keeping %d photo(s) that are not there", target.root.path, health.value,
                        len(gone))
            previous = held.get(target.root.path)
            held[target.root.path] = HeldRoot(target.root.path, health, len(gone) + (previous.kept if previous else 0))
            return
        if health is not Health.OK and not gone and target.root.path not in held and health is Health.MISSING:
            held[target.root.path] = HeldRoot(target.root.path, health, 0)  # nothing to keep; still said
        plan.gone.extend(gone)
        self._forget_vanished_failures(failed_before, present, problems)

    def _forget_vanished_failures(self, failed_before: dict, present: set, problems: list[ScanProblem]) -> None:
        # A path that could not be read this time (or lies under such a folder) has not
        # vanished: forgetting it would make its failure flicker in and out of `status`.
        vanished = [p for p in failed_before if p not in present and not _inside_any(p, problems)]
        if vanished:
            self.store.forget_failures(vanished)

    # --------------------------------------------------------------- process
    def _process(self, plan: _Plan, report: IndexReport) -> None:
        known_hashes = frozenset(s.sha256 for s in self.store.file_states().values())
        self._embedded_this_run: set[str] = set()
        batch = _Batch()
        bar = _progress_bar(len(plan.todo), self.progress)
        try:
            config = DecoderConfig(self.encoder.preprocessor, self.max_pixels, self.use_draft)
            for item in self._decoded(plan.todo, config, known_hashes):
                self._accept(item, plan, batch, report)
                if len(batch.to_embed) >= self.batch_size or len(batch.reuse) >= self.batch_size:
                    self._flush(batch, report)
                bar.update(1)
            self._flush(batch, report)
        finally:
            bar.close()

    def _decoded(self, tasks: list[DecodeTask], config: DecoderConfig, known_hashes: frozenset):
        """Decoded files in completion order: from this machine's decode workers, or from Ray
        (which embeds them too)."""
        if self.ray is not None:
            from sightline.indexer.ray_embed import embed_on_ray

            options, recipe = self.ray
            return embed_on_ray(tasks, config, known_hashes, recipe, options)
        return decode_all(tasks, config, known_hashes, self.workers, max(2 * self.batch_size, 4 * self.workers))

    def _accept(self, item: Decoded, plan: _Plan, batch: "_Batch", report: IndexReport) -> None:
        task = item.task
        if item.error is not None:
            # A transient error (unreadable now) is recorded with a stamp no file has, so it
            # never looks unchanged: fixing permissions changes no mtime.
            failure = FailureRecord(task.path, task.size, -1 if item.transient else task.mtime_ns, item.error)
            batch.failures.append(failure)
            report.failed.append(failure)
            if task.path in plan.replace:  # was indexed, changed, now broken: its old vector is stale
                batch.replace_ids.append(plan.replace[task.path].id)
            return
        previous = plan.replace.get(task.path)
        if previous is not None and previous.sha256 == item.sha256:
            batch.touched.append((previous.id, task.size, task.mtime_ns))
            return
        if item.known_content or item.sha256 in self._embedded_this_run:
            batch.reuse.append(item)  # same content as a stored or just-embedded file
        else:
            batch.to_embed.append(item)
            self._embedded_this_run.add(item.sha256)
        if previous is not None:
            batch.replace_ids.append(previous.id)

    def _flush(self, batch: "_Batch", report: IndexReport) -> None:
        records = []
        if batch.to_embed:
            local = [d for d in batch.to_embed if d.vector is None]
            if local:
                for d, v in zip(local, self.encoder.encode_preprocessed([d.pixels for d in local])):
                    d.vector = v
            records += [_record(d, d.vector) for d in batch.to_embed]
            report.indexed += len(batch.to_embed)
        if batch.reuse:
            fresh = {r.sha256: r for r in records}
            stored = self.store.records_by_hash(d.sha256 for d in batch.reuse if d.sha256 not in fresh)
            for d in batch.reuse:
                source = fresh.get(d.sha256) or stored.get(d.sha256)
                if source is None:  # removed since the run started: treat as new next run
                    report.failed.append(FailureRecord(d.task.path, d.task.size, d.task.mtime_ns,
                                                       "content vanished from the index mid-run; re-run"))
                    continue
                records.append(_reused(d, source))
                report.reused += 1
        if records or batch.replace_ids:
            self.store.add_files(records, replace_ids=batch.replace_ids)
        if batch.touched:
            self.store.touch_files(batch.touched)
            report.touched += len(batch.touched)
        if batch.failures:
            self.store.record_failures(batch.failures)
        batch.clear()


@dataclass
class _Batch:
    to_embed: list[Decoded] = field(default_factory=list)
    reuse: list[Decoded] = field(default_factory=list)
    replace_ids: list[int] = field(default_factory=list)
    touched: list[tuple[int, int, int]] = field(default_factory=list)
    failures: list[FailureRecord] = field(default_factory=list)

    def clear(self) -> None:
        for items in (self.to_embed, self.reuse, self.replace_ids, self.touched, self.failures):
            items.clear()


def _record(d: Decoded, vector) -> FileRecord:
    t, info = d.task, d.info
    return FileRecord(t.path, t.size, t.mtime_ns, d.sha256, info.width, info.height, info.taken_at,
                      info.orientation, info.format, vector)


def _reused(d: Decoded, source: FileRecord) -> FileRecord:
    t = d.task
    return FileRecord(t.path, t.size, t.mtime_ns, d.sha256, source.width, source.height, source.taken_at,
                      source.orientation, source.format, source.embedding)


def _inside_any(path: str, problems: Iterable[ScanProblem]) -> bool:
    return any(path == p.path or path.startswith(p.path.rstrip("/") + "/") for p in problems)


def default_workers() -> int:
    """Decode workers when none are asked for: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="indexing", file=sys.stderr, disable=not enabled or total == 0,
                dynamic_ncols=True, smoothing=0.1)
