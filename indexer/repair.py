"""Checking an index, and repairing what can be repaired without the photos.

SQLite is the source of truth; the FAISS files are caches of its embeddings.
:func:`verify` checks both: the database's own ``PRAGMA integrity_check``,
every stored embedding (size, finite, unit length), and each FAISS file
against the database (readable, right width, no duplicate ids, the same ids,
the same vectors).  :func:`repair` then rebuilds damaged or stale FAISS files
from the stored embeddings and drops images whose stored embedding is damaged
(the next ``sightline index`` embeds them again).  A damaged database cannot
be rebuilt from anything here: that is an error that names the file.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from sightline.search.errors import StoreCorruptError
from sightline.search.store import Kind, Store
from sightline.search.store_records import path_str
from sightline.search.store_vectors import TABLES, VECTOR_FILES
from sightline.search.vectors import VectorIndex

log = logging.getLogger(__name__)

#: (store kind, table, FAISS file name)
KINDS = tuple((kind, TABLES[kind].name, VECTOR_FILES[kind]) for kind in Kind)
#: Stored embeddings are L2-normalised; anything further off than this is damage.
NORM_TOLERANCE = 1e-3
_CHUNK = 4096

# Severities: "stale" is a cache behind the database (normal after a crash; caught
# up automatically on next use), "damaged" is repairable, "fatal" is not.
STALE, DAMAGED, FATAL = "stale", "damaged", "fatal"


@dataclass(frozen=True)
class Problem:
    where: str  # the file concerned: sightline.db, images.faiss, captions.faiss
    severity: str
    message: str


@dataclass
class Report:
    index: str
    images: int = 0
    captions: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    # For repair: rows whose stored embedding is unusable; failure records of indexed files.
    bad_ids: dict[Kind, list[int]] = field(default_factory=lambda: {kind: [] for kind in Kind})
    failed_but_indexed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No damage (a stale cache is not damage)."""
        return all(p.severity == STALE for p in self.problems)

    def add(self, where: str, severity: str, message: str) -> None:
        self.problems.append(Problem(where, severity, message))

    def as_dict(self) -> dict:
        return {
            "index": self.index, "images": self.images, "captions": self.captions, "ok": self.ok,
            "problems": [{"where": p.where, "severity": p.severity, "message": p.message} for p in self.problems],
            "repaired": list(self.repaired),
        }


# ------------------------------------------------------------------- verify
def verify(store: Store) -> Report:
    """Check ``store`` without changing anything (no lock needed)."""
    report = Report(index=store.location)
    if store.backend == "postgresql":
        from sightline.indexer.repair_pg import verify_pg

        verify_pg(store, report, DAMAGED, FATAL)
        return report
    db = store.db_path
    try:
        conn = _read_only(db)
    except sqlite3.Error as exc:
        report.add(db.name, FATAL, f"cannot open {db}: {exc}")
        return report
    try:
        if not _integrity_ok(conn, db, report):
            return report  # rows read from a damaged file prove nothing
        report.images, report.captions = (_count(conn, table) for _, table, _ in KINDS)
        info = store.model_info()
        if info is None:
            if report.images or report.captions:
                report.add(db.name, FATAL, f"{db} holds vectors but records no model")
            return report
        for kind, table, filename in KINDS:
            _check_kind(store, conn, kind, table, store.vector_file(kind), info.dim, report)
        report.failed_but_indexed = [path_str(r[0]) for r in conn.execute(
            "SELECT path FROM failures WHERE path IN (SELECT path FROM files)")]
        if report.failed_but_indexed:
            report.add(db.name, DAMAGED, f"{len(report.failed_but_indexed)} indexed file(s) also listed as failed")
    except sqlite3.DatabaseError as exc:
        report.add(db.name, FATAL, f"{db} cannot be read: {exc}")
    finally:
        conn.close()
    return report


def _read_only(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def _integrity_ok(conn: sqlite3.Connection, db: Path, report: Report) -> bool:
    try:
        rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)")]
    except sqlite3.DatabaseError as exc:
        rows = [str(exc)]
    if rows == ["ok"]:
        return True
    report.add(db.name, FATAL, f"{db} failed SQLite's integrity check: " + "; ".join(rows[:5]))
    return False


def _count(conn: sqlite3.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - fixed table names


def _rows(conn: sqlite3.Connection, table: str) -> Iterator[list[tuple[int, bytes]]]:
    cursor = conn.execute(f"SELECT id, embedding FROM {table} ORDER BY id")  # noqa: S608
    while True:
        chunk = cursor.fetchmany(_CHUNK)
        if not chunk:
            return
        yield chunk


def _check_kind(store: Store, conn, kind: str, table: str, path: Path, dim: int, report: Report) -> None:
    index, raw = _load_faiss(store, kind, path, dim, report)
    faiss_ids = index.ids() if index is not None else np.zeros(0, np.int64)
    unique_ids = np.unique(faiss_ids)
    if unique_ids.size != faiss_ids.size:
        report.add(path.name, DAMAGED, f"{path.name} holds {faiss_ids.size - unique_ids.size} duplicate id(s)")
    db_ids, mismatched = [], 0
    for chunk in _rows(conn, table):
        ids = np.fromiter((r[0] for r in chunk), np.int64, len(chunk))
        db_ids.append(ids)
        good = np.array([isinstance(r[1], bytes) and len(r[1]) == 4 * dim for r in chunk], bool)
        vectors = np.zeros((len(chunk), dim), np.float32)
        if good.any():
            vectors[good] = np.frombuffer(b"".join(r[1] for r, ok in zip(chunk, good) if ok), "<f4").reshape(-1, dim)
        with np.errstate(all="ignore"):
            norms = np.linalg.norm(vectors, axis=1)
        good &= np.isfinite(vectors).all(axis=1) & (np.abs(norms - 1.0) <= NORM_TOLERANCE)
        report.bad_ids[kind].extend(int(i) for i in ids[~good])
        if raw is not None:
            mismatched += _count_mismatches(raw, ids[good], vectors[good], unique_ids)
    if report.bad_ids[kind]:
        what = "image(s)" if kind == Kind.FILES else "caption(s)"
        report.add(store.db_path.name, DAMAGED,
                   f"{len(report.bad_ids[kind])} {what} with a damaged stored embedding (wrong size, not finite "
                   f"or not unit length), e.g. id {report.bad_ids[kind][0]}")
    if mismatched:
        report.add(path.name, DAMAGED, f"{path.name}: {mismatched} vector(s) differ from the stored embeddings")
    if index is None:
        return
    db_all = np.concatenate(db_ids) if db_ids else np.zeros(0, np.int64)
    missing = np.setdiff1d(db_all, unique_ids).size
    stale = np.setdiff1d(unique_ids, db_all).size
    if missing or stale:
        report.add(path.name, STALE, f"{path.name} is behind the database ({missing} to add, {stale} to remove); "
                                     f"caught up automatically on next use")


def _load_faiss(store: Store, kind: str, path: Path, dim: int, report: Report):
    """The FAISS file as it is on disk (not through the store, which would quietly fix it).

    Returns (VectorIndex or None, the raw FAISS index when its vectors can be compared).
    """
    import faiss

    if not path.exists():
        if report.images if kind == Kind.FILES else report.captions:
            report.add(path.name, STALE, f"{path.name} is missing; rebuilt automatically on next use")
        return None, None
    plan = store.index_plan(kind)
    try:
        raw = faiss.read_index(str(path))
        if raw.d != dim:
            raise ValueError(f"it holds {raw.d}-d vectors, the index {dim}-d")
        index = VectorIndex(dim, index=raw, plan=plan)
        index.ids()  # fails on an index that is not keyed by our ids
    except Exception as exc:  # FAISS raises RuntimeError, ValueError, ... on a damaged file
        report.add(path.name, DAMAGED, f"{path} cannot be used ({str(exc).strip().splitlines()[0][:200]})")
        return None, None
    # Only indexes that keep the vectors themselves can be compared (not PQ codes).
    return index, (None if "PQ" in plan.factory else raw)


def _count_mismatches(raw, ids: np.ndarray, vectors: np.ndarray, faiss_ids: np.ndarray) -> int:
    shared = np.isin(ids, faiss_ids)
    if not shared.any():
        return 0
    try:
        stored = raw.reconstruct_batch(np.ascontiguousarray(ids[shared], dtype=np.int64))
    except Exception:  # this index type cannot give vectors back: nothing to compare
        return 0
    return int((np.abs(stored - vectors[shared]) > 1e-5).any(axis=1).sum())


# ------------------------------------------------------------------- repair
def repair(store: Store) -> Report:
    """Verify ``store``, then fix what can be fixed; returns the verification after repair.

    Takes the writer lock (an ``index`` run in progress makes this fail with
    :class:`~sightline.search.errors.IndexLockedError`).  Raises
    :class:`~sightline.search.errors.StoreCorruptError` for a damaged database.
    """
    with store.writer():
        before = verify(store)
        fatal = [p.message for p in before.problems if p.severity == FATAL]
        if fatal:
            raise StoreCorruptError(
                "; ".join(fatal) + ". It cannot be rebuilt from the FAISS files: move it away and re-index "
                "with `sightline index` (your photos are not touched).")
        repaired = _fix_database(store, before)
        if store.backend == "postgresql":
            from sightline.indexer.repair_pg import rebuild_vector_indexes

            repaired += rebuild_vector_indexes(store, before)
        for kind, _, filename in KINDS if store.backend == "sqlite" else ():
            if any(p.where == filename for p in before.problems) or before.bad_ids[kind]:
                store.vector_file(kind).unlink(missing_ok=True)  # the store then builds it from the database
                count = store.vectors(kind).ntotal
                repaired.append(f"rebuilt {filename} from {count} stored embedding(s)")
        store.save()
        after = verify(store)
    after.repaired = repaired
    for message in repaired:
        log.info("repair: %s", message)
    return after


def _fix_database(store: Store, report: Report) -> list[str]:
    done = []
    if report.bad_ids[Kind.FILES]:
        store.remove_files(report.bad_ids[Kind.FILES])
        done.append(f"removed {len(report.bad_ids[Kind.FILES])} image(s) with a damaged embedding; "
                    f"the next `sightline index` embeds them again")
    if report.bad_ids[Kind.CAPTIONS]:
        store.remove_captions(report.bad_ids[Kind.CAPTIONS])
        done.append(f"removed {len(report.bad_ids[Kind.CAPTIONS])} caption(s) with a damaged embedding; re-add them")
    if report.failed_but_indexed:
        store.forget_failures(report.failed_but_indexed)
        done.append(f"forgot {len(report.failed_but_indexed)} stale failure record(s) of indexed files")
    return done
