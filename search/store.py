"""The index: metadata and embeddings in a database (via SQLAlchemy), and vector search.

One object owns the database, whichever it is:

- SQLite (the embedded default, one folder): every vector is stored in the
  database as float32, and FAISS files are caches of them, brought back in
  step by comparing id sets (ids are never reused), so a crash at any moment
  costs at most a catch-up, never data (:mod:`~sightline.search.store_vectors`);
- PostgreSQL with pgvector (``Store.open_url``): vectors are ``vector``
  columns searched in the database through HNSW indexes, so many servers and
  indexers can share it (:mod:`~sightline.search.store_pg`).

Both use the same schema and code for everything but vector search and
writer locking.  The store records which model made its vectors and refuses
vectors from any other.
"""

from __future__ import annotations

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
from sightline.search.errors import ModelMismatchError, NotFoundError
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
from sightline.search.store_db import DB_NAME, FileWriterLock, open_database
from sightline.search.store_roots import RootTable, under_clause
from sightline.search.store_vectors import VectorCaches
from sightline.search.vectors import IndexPlan, VectorIndex

log = logging.getLogger(__name__)


__all__ = ["DB_NAME", "Kind", "ModelInfo", "Store"]


class Store:
    """Open with :meth:`open`; close with :meth:`close` (or use as a context manager).

    ``faiss_index``: a FAISS index-factory string instead of the automatic
    choice (see :func:`sightline.search.vectors.choose_factory`).
    """

    def __init__(self, root: Path, engine, vectors, writer_lock, location: Optional[str] = None):
        #: A local folder: the SQLite index itself, or the caches beside a database server's index.
        self.root = root
        #: Where the index is, for messages (a folder, or a database URL without its password).
        self.location = location or str(root)
        self._engine = engine
        self._lock = threading.RLock()
        self._vectors = vectors
        self._writer_lock = writer_lock
        self._writer_depth = 0
        self.roots = RootTable(engine)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(cls, root: os.PathLike | str, create: bool = False, faiss_index: Optional[str] = None) -> "Store":
        """The SQLite index at ``root`` (created when ``create``), its schema brought up to date."""
        root = Path(root).expanduser()
        store = cls(root, open_database(root / DB_NAME, create), None, FileWriterLock(root))
        store._vectors = VectorCaches(store._engine, root, lambda: store.dim, store._lock, faiss_index)
        return store

    @classmethod
    def open_url(cls, url: str, cache_dir: os.PathLike | str, create: bool = False) -> "Store":
        """The index in the PostgreSQL database at ``url`` (a SQLAlchemy URL such as
        ``postgresql+psycopg://user@host/db``); ``cache_dir`` is a local folder for
        thumbnails and model exports."""
        from sightline.search.store_pg import PgVectors, PgWriterLock, open_postgres, redact

        engine = open_postgres(url, create)
        store = cls(Path(cache_dir).expanduser(), engine, None, PgWriterLock(engine, redact(url)), redact(url))
        store._vectors = PgVectors(engine, lambda: store.dim)
        return store

    @property
    def engine(self):
        """The SQLAlchemy engine, for maintenance tools (repair, benchmarks); the store's methods
        are the way to read and write an index."""
        return self._engine

    @property
    def vector_backend(self):
        """The vector search component: FAISS caches (SQLite) or pgvector (PostgreSQL)."""
        return self._vectors

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engine.dialect.name

    def close(self) -> None:
        self._writer_lock.release()
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

    def model_info(self) -> Optional[ModelInfo]:
        with self._engine.connect() as conn:
            return _model_info(conn)

    def bind_model(self, info: ModelInfo) -> None:
        """Record the model on first use; refuse a different one afterwards."""
        current = self.model_info()
        if current is None:
            with self._engine.begin() as conn:
                schema.lock_for_migration(conn)  # two first writers on a server: one binds, the other checks
                current = _model_info(conn)
                if current is None:
                    schema.set_meta(conn, model_id=info.model_id, dim=info.dim, model_name=info.name,
                                    pretrained=info.pretrained)
                    if hasattr(self._vectors, "bind"):
                        self._vectors.bind(conn, info.dim)
                    return
        if current.model_id != info.model_id or current.dim != info.dim:
            raise ModelMismatchError(
                f"the index at {self.location} holds vectors from model {current.model_id!r} "
                f"({current.dim}-d); refusing to add vectors from {info.model_id!r}. Use the same "
                f"--model/--pretrained, or re-index into a new folder with --index NEW_DIR "
                f"(or delete {self.location} first)."
            )

    # ---------------------------------------------------------------- locking
    @contextmanager
    def writer(self, scopes: Optional[Sequence[str]] = None) -> Iterator["Store"]:
        """Hold the writer lock, across processes, freed on exit or kill.

        ``scopes``: the roots this writer changes.  On a database server, writers
        of different roots run at once and writers of one root one at a time; a
        writer without scopes (repair, removing a root) excludes every other.
        A SQLite index has one writer at a time, whatever the scopes.
        Re-entrant (the outermost block's scopes hold); the FAISS caches are
        saved when the outermost block ends.
        """
        if self._writer_depth == 0:
            self._writer_lock.acquire(scopes)
        self._writer_depth += 1
        try:
            yield self
        finally:
            self._writer_depth -= 1
            if self._writer_depth == 0:
                try:
                    self.save()
                finally:
                    self._writer_lock.release()

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
            vector = conn.execute(select(t.c.embedding).where(t.c.id == int(file_id))).scalar()
        if vector is None:
            raise NotFoundError(f"no image with id {file_id} in the index")
        return np.asarray(vector, np.float32).reshape(self.dim)

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
            ids = _insert_returning_ids(conn, t, [rec.row_values(now) for rec in records])
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
                schema.upsert(conn, schema.failures, {"path": path_key(item.path), "size": item.size,
                                                      "mtime_ns": item.mtime_ns, "reason": item.reason,
                                                      "failed_at": now})

    def forget_failures(self, paths: Iterable[str]) -> None:
        keys = [path_key(p) for p in paths]
        with self._engine.begin() as conn:
            for chunk in chunked(keys):
                conn.execute(delete(schema.failures).where(schema.failures.c.path.in_(chunk)))

    # --------------------------------------------------------------- captions
    def add_captions(self, items: Sequence[tuple[Optional[int], str, Optional[str], np.ndarray]]) -> list[int]:
        """Add (file_id or None, text, source, embedding) captions; returns their ids."""
        rows = [dict(file_id=file_id, text=caption, source=source, embedding=vector)
                for file_id, caption, source, vector in items]
        with self._lock, self._engine.begin() as conn:
            ids = _insert_returning_ids(conn, schema.captions, rows)
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
            raise NotFoundError(f"the index at {self.location} holds no vectors yet")
        return info.dim

    def search(self, kind: Kind, query: np.ndarray, k: int, where=None) -> list[tuple[int, float]]:
        """Top-k (id, score) by inner product among ``kind``'s vectors (those of the rows
        matching ``where``, a SQLAlchemy condition on the kind's table, when given)."""
        if where is None:
            return self._vectors.search(Kind(kind), query, k)
        return self._vectors.search(Kind(kind), query, k, where=where)

    def vector_ids(self, kind: Kind) -> np.ndarray:
        """The ids the vector search sees (the database's, once caches have caught up)."""
        return self._vectors.ids(Kind(kind))

    def vectors(self, kind: Kind) -> VectorIndex:
        """The FAISS index of ``kind`` (loaded and caught up with the database); SQLite only."""
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
        """Bytes the index takes: its folder's files, or its tables and indexes on the server."""
        if self.backend == "postgresql":
            with self._engine.connect() as conn:
                return int(conn.execute(text(
                    "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r'")).scalar() or 0)
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())


def _under(query, column, under: Optional[str]):
    """Rows at or below the path ``under`` (a folder, or a file)."""
    return query if under is None else query.where(under_clause(column, under))


def _model_info(conn) -> Optional[ModelInfo]:
    rows = dict(conn.execute(select(schema.meta.c.key, schema.meta.c.value)).all())
    if "model_id" not in rows:
        return None
    return ModelInfo(rows["model_id"], int(rows["dim"]), rows.get("model_name", ""), rows.get("pretrained", ""))


def _insert_returning_ids(conn, table, rows: list[dict]) -> list[int]:
    """Insert ``rows`` in one statement per batch; their new ids, in order."""
    if not rows:
        return []
    result = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [int(r[0]) for r in result]
