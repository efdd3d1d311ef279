"""The index on disk: SQLite metadata (via SQLAlchemy) plus FAISS vectors.

One object owns the database.  SQLite is the source of truth: every vector is
also stored there as float32, and the FAISS files are caches that are brought
back in step by comparing id sets (ids are never reused), so a crash at any
moment costs at most a catch-up, never data.  The store records which model
made its vectors and refuses vectors from any other.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select, text, update

from sightline.search import schema
from sightline.search.errors import IndexLockedError, ModelMismatchError, NotFoundError
from sightline.search.chunks import chunked
from sightline.search.store_records import (
    CaptionRow,
    FailureRecord,
    FileRecord,
    FileRow,
    FileState,
    Kind,
    ModelInfo,
    path_key,
    path_str,
)
from sightline.search.store_db import DB_NAME, open_database
from sightline.search.store_roots import RootTable, under_clause
from sightline.search.store_vectors import VectorCaches
from sightline.search.vectors import IndexPlan, VectorIndex, vector_to_blob, vectors_from_blobs

log = logging.getLogger(__name__)


__all__ = ["DB_NAME", "Kind", "ModelInfo", "Store"]


class Store:
    """Open with :meth:`open`; close with :meth:`close` (or use as a context manager).

    ``faiss_index``: a FAISS index-factory string instead of the automatic
    choice (see :func:`sightline.search.vectors.choose_factory`).
    """

    def __init__(self, root: Path, engine, faiss_index: Optional[str] = None):
        self.root = root
        self._engine = engine
        self._lock = threading.RLock()
        self._vectors = VectorCaches(engine, root, lambda: self.dim, self._lock, faiss_index)
        self._writer_lock_file = None
        self._writer_depth = 0
        self.roots = RootTable(engine)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: os.PathLike | str, create: bool = False, faiss_index: Optional[str] = None) -> "Store":
        """The index at ``root`` (created when ``create``), its schema brought up to date."""
        root = Path(root).expanduser()
        return cls(root, open_database(root / DB_NAME, create), faiss_index)

    def close(self) -> None:
        self._release_writer_lock()
        self._writer_depth = 0
        self._engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def read(self):
        """A connection for library modules that compose their own queries on the schema
        (``with store.read() as conn: ...``); writes go through the store's methods."""
        return self._engine.connect()

    def files_signature(self) -> tuple[int, int]:
        """(count, highest id) of the files: changes whenever the set of files does (ids are never reused)."""
        with self._engine.connect() as conn:
            return tuple(conn.execute(select(func.count(), func.max(schema.files.c.id))).one())

    # ------------------------------------------------------------------- meta
    def get_meta(self, key: str) -> Optional[str]:
        with self._engine.connect() as conn:
            return conn.execute(select(schema.meta.c.value).where(schema.meta.c.key == key)).scalar()

    def _set_meta(self, conn, **values) -> None:
        for key, value in values.items():
            conn.execute(
                text("INSERT OR REPLACE INTO meta(key, value) VALUES (:k, :v)"), {"k": key, "v": str(value)}
            )

    def model_info(self) -> Optional[ModelInfo]:
        with self._engine.connect() as conn:
            rows = dict(conn.execute(select(schema.meta.c.key, schema.meta.c.value)).all())
        if "model_id" not in rows:
            return None
        return ModelInfo(rows["model_id"], int(rows["dim"]), rows.get("model_name", ""), rows.get("pretrained", ""))

    def bind_model(self, info: ModelInfo) -> None:
        """Record the model on first use; refuse a different one afterwards."""
        current = self.model_info()
        if current is None:
            with self._engine.begin() as conn:
                self._set_meta(conn, model_id=info.model_id, dim=info.dim, model_name=info.name,
                               pretrained=info.pretrained)
            return
        if current.model_id != info.model_id or current.dim != info.dim:
            raise ModelMismatchError(
                f"the index at {self.root} holds vectors from model {current.model_id!r} "
                f"({current.dim}-d); refusing to add vectors from {info.model_id!r}. Use the same "
                f"--model/--pretrained, or re-index into a new folder with --index NEW_DIR "
                f"(or delete {self.root} first)."
            )

    # ---------------------------------------------------------------- locking
    @contextmanager
    def writer(self) -> Iterator["Store"]:
        """Hold the index's writer lock: one writer at a time, across processes
        (an OS lock, freed on exit or kill).  Re-entrant; the FAISS caches are
        saved when the outermost block ends."""
        if self._writer_depth == 0:
            self._acquire_writer_lock()
        self._writer_depth += 1
        try:
            yield self
        finally:
            self._writer_depth -= 1
            if self._writer_depth == 0:
                try:
                    self.save()
                finally:
                    self._release_writer_lock()

    def _acquire_writer_lock(self) -> None:
        handle = open(self.root / "write.lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise IndexLockedError(
                f"another process is writing to the index at {self.root} (an `sightline index` run?). "
                f"Wait for it to finish, then try again."
            ) from None
        self._writer_lock_file = handle

    def _release_writer_lock(self) -> None:
        if self._writer_lock_file is not None:
            fcntl.flock(self._writer_lock_file.fileno(), fcntl.LOCK_UN)
            self._writer_lock_file.close()
            self._writer_lock_file = None

    # ------------------------------------------------------------- file reads
    def file_states(self, under: Optional[str] = None) -> dict[str, FileState]:
        """path -> (id, size, mtime_ns, sha256) for every file (at or below the path ``under``)."""
        t = schema.files
        query = select(t.c.id, t.c.path, t.c.size, t.c.mtime_ns, t.c.sha256)
        query = _under(query, t.c.path, under)
        with self._engine.connect() as conn:
            return {path_str(p): FileState(i, s, m, h) for i, p, s, m, h in conn.execute(query)}

    def failure_states(self, under: Optional[str] = None) -> dict[str, tuple[int, int]]:
        t = schema.failures
        query = _under(select(t.c.path, t.c.size, t.c.mtime_ns), t.c.path, under)
        with self._engine.connect() as conn:
            return {path_str(p): (s, m) for p, s, m in conn.execute(query)}

    def failures(self) -> list[FailureRecord]:
        t = schema.failures
        with self._engine.connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.path)).all()
        return [FailureRecord(path_str(r.path), r.size, r.mtime_ns, r.reason) for r in rows]

    def records_by_hash(self, hashes: Iterable[str]) -> dict[str, FileRecord]:
        """One stored record (with its embedding) per known content hash."""
        hashes = list(set(hashes))
        found: dict[str, FileRecord] = {}
        t = schema.files
        with self._engine.connect() as conn:
            for chunk in chunked(hashes):
                for row in conn.execute(select(t).where(t.c.sha256.in_(chunk))):
                    found.setdefault(row.sha256, FileRecord.from_row(row, self.dim))
        return found

    def get_files(self, ids: Sequence[int]) -> dict[int, FileRow]:
        t = schema.files
        cols = [c for c in t.c if c.name != "embedding"]
        out: dict[int, FileRow] = {}
        with self._engine.connect() as conn:
            for chunk in chunked(int(i) for i in ids):
                for row in conn.execute(select(*cols).where(t.c.id.in_(chunk))):
                    out[row.id] = FileRow.from_row(row)
        return out

    def get_file(self, file_id: int) -> FileRow:
        row = self.get_files([file_id]).get(int(file_id))
        if row is None:
            raise NotFoundError(f"no image with id {file_id} in the index")
        return row

    def file_embedding(self, file_id: int) -> np.ndarray:
        t = schema.files
        with self._engine.connect() as conn:
            blob = conn.execute(select(t.c.embedding).where(t.c.id == int(file_id))).scalar()
        if blob is None:
            raise NotFoundError(f"no image with id {file_id} in the index")
        return vectors_from_blobs([blob], self.dim)[0]

    # ------------------------------------------------------------ file writes
    def add_files(self, records: Sequence[FileRecord], replace_ids: Sequence[int] = ()) -> list[int]:
        """Insert files with their embeddings in one transaction; returns new ids.

        ``replace_ids`` are removed in the same transaction (a changed file is
        a delete plus an insert, so its id changes and stale ids never match).
        """
        t = schema.files
        now = time.time()
        with self._lock, self._engine.begin() as conn:
            removed_captions = self._delete_files(conn, replace_ids)
            ids = []
            for rec in records:
                result = conn.execute(insert(t).values(**rec.row_values(now)))
                ids.append(int(result.inserted_primary_key[0]))
            paths = [path_key(r.path) for r in records]
            if paths:
                conn.execute(delete(schema.failures).where(schema.failures.c.path.in_(paths)))
        self._vectors.apply(Kind.FILES, remove=replace_ids, ids=ids,
                            vectors=np.stack([r.embedding for r in records]) if records else None)
        self._vectors.apply(Kind.CAPTIONS, remove=removed_captions)
        return ids

    def touch_files(self, updates: Sequence[tuple[int, int, int]]) -> None:
        """Record a new size/mtime for files whose content hash did not change."""
        t = schema.files
        with self._engine.begin() as conn:
            for file_id, size, mtime_ns in updates:
                conn.execute(update(t).where(t.c.id == file_id).values(size=size, mtime_ns=mtime_ns))

    def move_files(self, moves: Sequence[tuple[int, str]]) -> None:
        """Give files a new path, keeping their id, vector and captions (a rename on disk:
        same content, size and mtime).  A row already holding a new path is replaced."""
        t = schema.files
        with self._lock, self._engine.begin() as conn:
            targets = [path_key(p) for _, p in moves]
            taken = [r[0] for chunk in chunked(targets)
                     for r in conn.execute(select(t.c.id).where(t.c.path.in_(chunk)))]
            taken = [i for i in taken if i not in {int(m) for m, _ in moves}]
            removed_captions = self._delete_files(conn, taken)
            # Two steps, so that chains and swaps (a -> b, b -> a) never collide on the unique path.
            for file_id, _ in moves:
                conn.execute(update(t).where(t.c.id == int(file_id)).values(path=b"\0moving\0%d" % int(file_id)))
            for file_id, key in zip((int(m) for m, _ in moves), targets):
                conn.execute(update(t).where(t.c.id == file_id).values(path=key))
            for chunk in chunked(targets):
                conn.execute(delete(schema.failures).where(schema.failures.c.path.in_(chunk)))
        self._vectors.apply(Kind.FILES, remove=taken)
        self._vectors.apply(Kind.CAPTIONS, remove=removed_captions)

    def remove_files(self, ids: Sequence[int]) -> None:
        with self._lock, self._engine.begin() as conn:
            removed_captions = self._delete_files(conn, ids)
        self._vectors.apply(Kind.FILES, remove=ids)
        self._vectors.apply(Kind.CAPTIONS, remove=removed_captions)

    def _delete_files(self, conn, ids: Sequence[int]) -> list[int]:
        if not ids:
            return []
        c = schema.captions
        caption_ids: list[int] = []
        for chunk in chunked(int(i) for i in ids):
            caption_ids += [r[0] for r in conn.execute(select(c.c.id).where(c.c.file_id.in_(chunk)))]
            conn.execute(delete(c).where(c.c.file_id.in_(chunk)))
            conn.execute(delete(schema.files).where(schema.files.c.id.in_(chunk)))
        return caption_ids

    def record_failures(self, items: Sequence[FailureRecord]) -> None:
        now = time.time()
        with self._engine.begin() as conn:
            for item in items:
                conn.execute(
                    text("INSERT OR REPLACE INTO failures(path, size, mtime_ns, reason, failed_at) "
                         "VALUES (:p, :s, :m, :r, :t)"),
                    {"p": path_key(item.path), "s": item.size, "m": item.mtime_ns, "r": item.reason, "t": now},
                )

    def forget_failures(self, paths: Iterable[str]) -> None:
        keys = [path_key(p) for p in paths]
        with self._engine.begin() as conn:
            for chunk in chunked(keys):
                conn.execute(delete(schema.failures).where(schema.failures.c.path.in_(chunk)))

    # --------------------------------------------------------------- captions
    def add_captions(self, items: Sequence[tuple[Optional[int], str, Optional[str], np.ndarray]]) -> list[int]:
        """Add (file_id or None, text, source, embedding) captions; returns their ids."""
        ids = []
        with self._lock, self._engine.begin() as conn:
            for file_id, caption, source, vector in items:
                result = conn.execute(insert(schema.captions).values(
                    file_id=file_id, text=caption, source=source, embedding=vector_to_blob(vector)))
                ids.append(int(result.inserted_primary_key[0]))
        if items:
            self._vectors.apply(Kind.CAPTIONS, ids=ids, vectors=np.stack([i[3] for i in items]))
        return ids

    def remove_captions(self, ids: Sequence[int]) -> None:
        """Delete captions by id, with their vectors."""
        ids = [int(i) for i in ids]
        with self._lock, self._engine.begin() as conn:
            for chunk in chunked(ids):
                conn.execute(delete(schema.captions).where(schema.captions.c.id.in_(chunk)))
        self._vectors.apply(Kind.CAPTIONS, remove=ids)

    def get_captions(self, ids: Sequence[int]) -> dict[int, CaptionRow]:
        c = schema.captions
        out: dict[int, CaptionRow] = {}
        with self._engine.connect() as conn:
            for chunk in chunked(int(i) for i in ids):
                for r in conn.execute(select(c.c.id, c.c.file_id, c.c.text, c.c.source).where(c.c.id.in_(chunk))):
                    out[r.id] = CaptionRow(r.id, r.file_id, r.text, r.source)
        return out

    def captions_for_file(self, file_id: int) -> list[CaptionRow]:
        c = schema.captions
        with self._engine.connect() as conn:
            rows = conn.execute(select(c.c.id, c.c.file_id, c.c.text, c.c.source)
                                .where(c.c.file_id == int(file_id)).order_by(c.c.id)).all()
        return [CaptionRow(r.id, r.file_id, r.text, r.source) for r in rows]

    # ---------------------------------------------------------------- vectors
    @property
    def dim(self) -> int:
        info = self.model_info()
        if info is None:
            raise NotFoundError(f"the index at {self.root} holds no vectors yet")
        return info.dim

    def search(self, kind: Kind, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, score) by inner product among ``kind``'s vectors."""
        return self._vectors.search(Kind(kind), query, k)

    def vectors(self, kind: Kind) -> VectorIndex:
        """The FAISS index of ``kind`` (loaded and caught up with the database)."""
        return self._vectors.index(Kind(kind))

    def index_plan(self, kind: Kind) -> IndexPlan:
        """Which FAISS index suits ``kind``'s collection now."""
        return self._vectors.plan(Kind(kind))

    def vector_file(self, kind: Kind) -> Path:
        return self._vectors.path(Kind(kind))

    def refresh(self) -> None:
        """Pick up changes another process committed (readers such as the server)."""
        self._vectors.refresh()

    def save(self) -> None:
        """Write changed FAISS caches to disk atomically."""
        self._vectors.save(has_vectors=self.model_info() is not None)

    # ----------------------------------------------------------------- status
    def counts(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            return {
                "images": conn.execute(select(func.count()).select_from(schema.files)).scalar_one(),
                "captions": conn.execute(select(func.count()).select_from(schema.captions)).scalar_one(),
                "failed": conn.execute(select(func.count()).select_from(schema.failures)).scalar_one(),
            }

    def start_run(self, root: str) -> int:
        with self._engine.begin() as conn:
            result = conn.execute(insert(schema.runs).values(root=path_key(root), started_at=time.time()))
            return int(result.inserted_primary_key[0])

    def finish_run(self, run_id: int, **counts: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(update(schema.runs).where(schema.runs.c.id == run_id)
                         .values(finished_at=time.time(), **counts))

    def last_run(self) -> Optional[dict]:
        r = schema.runs
        with self._engine.connect() as conn:
            row = conn.execute(select(r).order_by(r.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        out = dict(row._mapping)
        out["root"] = path_str(out["root"])
        return out

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())


def _under(query, column, under: Optional[str]):
    """Rows at or below the path ``under`` (a folder, or a file)."""
    return query if under is None else query.where(under_clause(column, under))
