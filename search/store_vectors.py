"""The FAISS side of the store: caches of the embeddings kept in SQLite.

A mixin of :class:`search.store.Store` (it uses the store's engine, lock and
meta table).  Each kind ('files', 'captions') has one FAISS index, loaded on
first use and brought in step with the database by comparing id sets (ids
are never reused), rebuilt when damaged or when the collection outgrows its
index type, and saved atomically by writers.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

import numpy as np
from sqlalchemy import delete, func, select

from search import schema
from search.errors import NotFoundError
from search.vectors import IndexPlan, VectorIndex, choose_factory, fits, vectors_from_blobs

log = logging.getLogger(__name__)

VECTOR_FILES = {"files": "images.faiss", "captions": "captions.faiss"}


class VectorCaches:
    """FAISS caches for :class:`search.store.Store` (see the module docstring)."""

    @property
    def dim(self) -> int:
        info = self.model_info()
        if info is None:
            raise NotFoundError(f"the index at {self.root} holds no vectors yet")
        return info.dim

    def search(self, kind: str, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (id, score) by inner product in ``kind`` ('files' or 'captions')."""
        index = self.vectors(kind)
        with self._lock:
            scores, ids = index.search(query.reshape(1, -1), k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def vectors(self, kind: str) -> VectorIndex:
        with self._lock:
            if self._vectors[kind] is None:
                self._vectors[kind] = self._load_vectors(kind)
            return self._vectors[kind]

    def _load_vectors(self, kind: str) -> VectorIndex:
        dim = self.dim
        path = self.root / VECTOR_FILES[kind]
        plan = self.index_plan(kind)
        if path.exists():
            try:
                index = VectorIndex.load(path, dim, plan)
                if self._sync(kind, index):
                    self._dirty.add(kind)
                return index
            except Exception as exc:  # a damaged cache is rebuilt, never fatal
                log.warning("vector file %s is damaged (%s); rebuilding it from the database", path, exc)
        self._dirty.add(kind)
        return self._build_vectors(kind, plan)

    def index_plan(self, kind: str, count: Optional[int] = None) -> IndexPlan:
        """Which FAISS index suits this collection now (or the user's override)."""
        if count is None:
            table = schema.files if kind == "files" else schema.captions
            with self._engine.connect() as conn:
                count = conn.execute(select(func.count()).select_from(table)).scalar_one()
        override = os.environ.get("SIGHTLINE_FAISS_INDEX") or self.get_meta("faiss_index")
        return choose_factory(count, self.dim, override)

    def set_index_override(self, factory: Optional[str]) -> None:
        """Persist a FAISS index-factory string for this index ('' or None: automatic)."""
        with self._engine.begin() as conn:
            if factory:
                self._set_meta(conn, faiss_index=factory)
            else:
                conn.execute(delete(schema.meta).where(schema.meta.c.key == "faiss_index"))
        self._dirty.update(k for k in self._vectors)

    def _build_vectors(self, kind: str, plan: IndexPlan) -> VectorIndex:
        table = schema.files if kind == "files" else schema.captions
        with self._engine.connect() as conn:
            rows = conn.execute(select(table.c.id, table.c.embedding).order_by(table.c.id)).all()
        ids = np.array([r[0] for r in rows], np.int64)
        vectors = vectors_from_blobs([r[1] for r in rows], self.dim)
        log.info("building %s vectors (%d) as %s", kind, len(ids), plan.factory)
        return VectorIndex.build(self.dim, plan, ids, vectors)

    def _sync(self, kind: str, index: VectorIndex) -> bool:
        """Bring ``index`` in step with the database by id; True if it changed.

        Ids only grow (AUTOINCREMENT), so (count, max id) changes whenever the
        set of ids does: any insert raises the max, deletes alone lower the
        count.  An unchanged signature skips reading every id.
        """
        table = schema.files if kind == "files" else schema.captions
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
        for start in range(0, missing.size, 20_000):
            chunk = [int(i) for i in missing[start:start + 20_000]]
            with self._engine.connect() as conn:
                rows = conn.execute(select(table.c.id, table.c.embedding).where(table.c.id.in_(chunk))).all()
            index.add(np.array([r[0] for r in rows], np.int64), vectors_from_blobs([r[1] for r in rows], index.dim))
        if stale.size or missing.size:
            log.info("%s vectors: caught up with the database (+%d, -%d)", kind, missing.size, stale.size)
        self._synced[kind] = (id(index), signature)
        return bool(stale.size or missing.size)

    def _apply_vectors(self, kind: str, remove: Sequence[int] = (), ids=None, vectors=None) -> None:
        with self._lock:
            index = self._vectors[kind]
            if index is None:
                # Not loaded: loading catches up from the database; save() does that.
                if len(remove) or ids:
                    self._dirty.add(kind)
                return
            if len(remove):
                index.remove(remove)
            if ids:
                index.add(np.asarray(ids, np.int64), vectors)
            if len(remove) or ids:
                self._dirty.add(kind)

    def refresh(self) -> None:
        """Pick up changes another process committed (readers such as the server)."""
        with self._lock:
            for kind, index in self._vectors.items():
                if index is not None:
                    self._sync(kind, index)

    def save(self) -> None:
        """Write changed FAISS caches to disk atomically."""
        with self._lock:
            for kind in list(self._dirty):
                if self.model_info() is not None:
                    index = self.vectors(kind)
                    plan = self.index_plan(kind)
                    if index.needs_rebuild or not fits(index, plan):
                        index = self._vectors[kind] = self._build_vectors(kind, plan)
                    index.save(self.root / VECTOR_FILES[kind])
                self._dirty.discard(kind)

