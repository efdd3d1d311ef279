"""The FAISS side of the store: caches of the embeddings kept in SQLite.

:class:`VectorCaches` belongs to a :class:`~sightline.search.store.Store`,
which hands it what it needs: the database engine (to read embeddings), the
index folder (for the files), the store's lock and a way to learn the
vector width.  Each :class:`~sightline.search.store_records.Kind` has one
FAISS index, loaded on first use and brought in step with the database by
comparing id sets (ids are never reused), rebuilt when damaged or when the
collection outgrows its index type, and saved atomically by writers.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from sqlalchemy import LargeBinary, func, select, type_coerce

from sightline.search import schema
from sightline.search.store_records import Kind
from sightline.search.vectors import IndexPlan, VectorIndex, choose_factory, fits, vectors_from_blobs

log = logging.getLogger(__name__)

VECTOR_FILES = {Kind.FILES: "images.faiss", Kind.CAPTIONS: "captions.faiss"}
TABLES = {Kind.FILES: schema.files, Kind.CAPTIONS: schema.captions}
#: Vectors read from the database per query while catching up.
_SYNC_CHUNK = 20_000


class VectorCaches:
    """FAISS caches of one store's embeddings (see the module docstring)."""

    def __init__(self, engine, root: Path, dim: Callable[[], int], lock: threading.RLock,
                 factory_override: Optional[str] = None):
        self._engine = engine
        self._root = root
        self._dim = dim  # raises when the index holds no vectors yet
        self._lock = lock
        self._override = factory_override
        self._indexes: dict[Kind, Optional[VectorIndex]] = {kind: None for kind in Kind}
        self._dirty: set[Kind] = set()
        self._synced: dict[Kind, tuple] = {}  # kind -> (index object id, db signature) at the last sync

    def search(self, kind: Kind, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, score) by inner product."""
        index = self.index(kind)
        with self._lock:
            scores, ids = index.search(query.reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def index(self, kind: Kind) -> VectorIndex:
        """The FAISS index of ``kind``, loaded (and caught up) on first use."""
        with self._lock:
            if self._indexes[kind] is None:
                self._indexes[kind] = self._load(kind)
            return self._indexes[kind]

    def plan(self, kind: Kind, count: Optional[int] = None) -> IndexPlan:
        """Which FAISS index suits this collection now (or the configured override)."""
        if count is None:
            with self._engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(TABLES[kind])).scalar_one()
        return choose_factory(count, self._dim(), self._override)

    def ids(self, kind: Kind) -> np.ndarray:
        return self.index(kind).ids()

    def path(self, kind: Kind) -> Path:
        return self._root / VECTOR_FILES[kind]

    def _load(self, kind: Kind) -> VectorIndex:
        path, plan = self.path(kind), self.plan(kind)
        if path.exists():
            try:
                index = VectorIndex.load(path, self._dim(), plan)
                if self._sync(kind, index):
                    self._dirty.add(kind)
                return index
            except Exception as exc:  # a damaged cache is rebuilt, never fatal
                log.warning("vector file %s is damaged (%s); rebuilding it from the database", path, exc)
        self._dirty.add(kind)
        return self._build(kind, plan)

    def _build(self, kind: Kind, plan: IndexPlan) -> VectorIndex:
        table = TABLES[kind]
        with self._engine.connect() as conn:
            rows = conn.execute(select(table.c.id, _raw(table)).order_by(table.c.id)).all()
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = vectors_from_blobs([r[1] for r in rows], self._dim())
        log.info("building %s vectors (%d) as %s", kind.value, len(ids), plan.factory)
        return VectorIndex.build(self._dim(), plan, ids, vectors)

    def _sync(self, kind: Kind, index: VectorIndex) -> bool:
        """Bring ``index`` in step with the database by id; True if it changed.

        Ids only grow (AUTOINCREMENT), so (count, max id) changes whenever the
        set of ids does: any insert raises the max, deletes alone lower the
        count.  An unchanged signature skips reading every id.
        """
        table = TABLES[kind]
        with self._engine.connect() as conn:
            signature = tuple(conn.execute(select(func.count(), func.max(table.c.id)).select_from(table)).one())
            if self._synced.get(kind) == (id(index), signature):
                return False
            db_ids = np.fromiter((r[0] for r in conn.execute(select(table.c.id))), dtype=np.int64)
        have = index.ids()
        stale = np.setdiff1d(have, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, have, assume_unique=True)
        if stale.size:
            index.remove(stale)
        for start in range(0, missing.size, _SYNC_CHUNK):
            chunk = [int(i) for i in missing[start:start + _SYNC_CHUNK]]
            with self._engine.connect() as conn:
                rows = conn.execute(select(table.c.id, _raw(table)).where(table.c.id.in_(chunk))).all()
            index.add(np.array([r[0] for r in rows], np.int64), vectors_from_blobs([r[1] for r in rows], index.dim))
        if stale.size or missing.size:
            log.info("%s vectors: caught up with the database (+%d, -%d)", kind.value, missing.size, stale.size)
        self._synced[kind] = (id(index), signature)
        return bool(stale.size or missing.size)

    def apply(self, kind: Kind, remove: Sequence[int] = (), ids: Sequence[int] = (), vectors=None) -> None:
        """Mirror a committed change: ``remove`` these ids, add ``ids`` with ``vectors``."""
        if not len(remove) and not len(ids):
            return
        with self._lock:
            index = self._indexes[kind]
            self._dirty.add(kind)
            if index is None:
                return  # not loaded: loading catches up from the database (save() does that)
            if len(remove):
                index.remove(remove)
            if len(ids):
                index.add(np.asarray(ids, np.int64), vectors)

    def refresh(self) -> None:
        """Pick up changes another process committed (readers such as the server)."""
        with self._lock:
            for kind, index in self._indexes.items():
                if index is not None:
                    self._sync(kind, index)

    def save(self, has_vectors: bool) -> None:
        """Write changed caches to disk atomically (``has_vectors``: the index records a model)."""
        with self._lock:
            for kind in list(self._dirty):
                if has_vectors:
                    index, plan = self.index(kind), self.plan(kind)
                    if index.needs_rebuild or not fits(index, plan):
                        index = self._indexes[kind] = self._build(kind, plan)
                    index.save(self.path(kind))
                self._dirty.discard(kind)


def _raw(table):
    """The embedding column as stored bytes: one join and one frombuffer for a whole
    chunk instead of an array per row (FAISS caches exist for SQLite only)."""
    return type_coerce(table.c.embedding, LargeBinary).label("embedding")
