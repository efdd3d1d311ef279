"""FAISS vector indexes: which kind to build, deletions, safe saving and loading.

The FAISS file is a cache of the embeddings kept in SQLite; it can always be
rebuilt from them.  Files are written to a temporary name and renamed, so a
crash never leaves a half-written index under the real name.

Index choice (:func:`choose_factory`) follows the collection size: exact
search while it is fast enough, then IVF (inverted lists, exact vectors),
then IVF-PQ when full vectors would not fit a memory budget.  A FAISS
index-factory string overrides the choice.  Indexes that cannot delete
(HNSW) get tombstones, filtered at query time until a rebuild.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from sightline.search.atomic import atomic_path

log = logging.getLogger(__name__)

#: Up to this many vectors, exact search (a brute-force scan is still a few ms).
EXACT_LIMIT = 50_000
#: Above this many bytes of raw float32 vectors, compress them (IVF-PQ).
DEFAULT_MEMORY_BUDGET = 8 * 1024**3
#: Rebuild an index whose tombstones exceed this fraction of its vectors.
TOMBSTONE_REBUILD_FRACTION = 0.1


@dataclass(frozen=True)
class IndexPlan:
    """A FAISS index-factory string plus the search-time knobs that go with it."""

    factory: str
    nprobe: int = 0
    ef_search: int = 0

    @property
    def needs_training(self) -> bool:
        return "IVF" in self.factory or "PQ" in self.factory


def choose_factory(n: int, dim: int, override: Optional[str] = None,
                   memory_budget: int = DEFAULT_MEMORY_BUDGET) -> IndexPlan:
    """The index for ``n`` vectors of width ``dim``.

    Parameters were picked with ``benchmarks/ann.py`` for recall@10 >= 0.95
    against exact search on clustered 512-d vectors (see the README).
    """
    if override:
        return IndexPlan(override, nprobe=_default_nprobe(override), ef_search=128)
    if n < EXACT_LIMIT:
        return IndexPlan("Flat")
    nlist = _nlist(n)
    nprobe = max(16, nlist // 64)
    if n * dim * 4 <= memory_budget:
        return IndexPlan(f"IVF{nlist},Flat", nprobe=nprobe)
    # PQ codes of dim/4 bytes per vector instead of 4*dim.
    return IndexPlan(f"IVF{nlist},PQ{dim // 4}x8", nprobe=2 * nprobe)


def _nlist(n: int) -> int:
    # ~2 sqrt(n) lists, a power of two: the low end of FAISS's guideline
    # (4-16 sqrt(n)) keeps k-means training affordable on a laptop CPU.
    return int(2 ** round(math.log2(2 * math.sqrt(n))))


def _default_nprobe(factory: str) -> int:
    if not factory.startswith("IVF"):
        return 0
    nlist = int("".join(ch for ch in factory[3:].split(",")[0].split("_")[0] if ch.isdigit()) or 1)
    return max(16, nlist // 64)


def build_index(dim: int, factory: Optional[str] = None):
    """The one function that creates FAISS indexes (ids are our SQLite keys).

    IVF indexes store our ids in their inverted lists themselves; wrapping
    them in ``IndexIDMap2`` would be wrong after a deletion (FAISS compacts
    the id map but not the ids inside the lists).  Everything else is wrapped.
    """
    import faiss

    if not factory or factory == "Flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    base = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if _as_ivf(base) is not None:
        _as_ivf(base).set_direct_map_type(faiss.DirectMap.Hashtable)
        return base
    return faiss.IndexIDMap2(base)


def _as_ivf(index):
    import faiss

    try:
        return faiss.try_extract_index_ivf(index)
    except Exception:  # pragma: no cover - not an IVF family index
        return None


def _inner(index):
    """The index doing the work: inside an id map, or the index itself."""
    import faiss

    return faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else faiss.downcast_index(index)


class VectorIndex:
    """A FAISS index keyed by int64 ids, searched by inner product."""

    def __init__(self, dim: int, index=None, plan: Optional[IndexPlan] = None):
        self.dim = dim
        self.plan = plan or IndexPlan("Flat")
        self._index = index if index is not None else build_index(dim, self.plan.factory)
        self._tombstones: set[int] = set()
        self._apply_search_params()

    @classmethod
    def build(cls, dim: int, plan: IndexPlan, ids: np.ndarray, vectors: np.ndarray) -> "VectorIndex":
        """A new index over ``vectors``, trained on them first if it needs training."""
        index = cls(dim, plan=plan)
        if plan.needs_training and len(vectors):
            sample = vectors
            # 64 points per list: above FAISS's 39 minimum, far cheaper than all.
            limit = 64 * max(1, _nlist(len(vectors)))
            if len(vectors) > limit:
                pick = np.random.default_rng(0).choice(len(vectors), limit, replace=False)
                sample = vectors[np.sort(pick)]
            log.info("training a %s index on %d vectors", plan.factory, len(sample))
            index._index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.add(ids, vectors)
        return index

    def _apply_search_params(self) -> None:
        base = _inner(self._index)
        ivf = _as_ivf(base)
        if ivf is not None:
            ivf.nprobe = self.plan.nprobe or max(1, ivf.nprobe)
        if self.plan.ef_search and hasattr(base, "hnsw"):
            base.hnsw.efSearch = self.plan.ef_search

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self._index.ntotal) - len(self._tombstones)

    @property
    def needs_rebuild(self) -> bool:
        return len(self._tombstones) > TOMBSTONE_REBUILD_FRACTION * max(1, int(self._index.ntotal))

    def ids(self) -> np.ndarray:
        import faiss

        if isinstance(self._index, faiss.IndexIDMap2):
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        else:
            ids = _ivf_ids(_as_ivf(self._index))
        if self._tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self._tombstones, np.int64))]
        return ids

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        self._index.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids) -> int:
        import faiss

        ids = np.asarray(list(ids), dtype=np.int64)
        if ids.size == 0:
            return 0
        # IVF with a hashtable direct map only accepts an IDSelectorArray.
        selector = faiss.IDSelectorArray(ids.size, faiss.swig_ptr(ids)) if _as_ivf(self._index) is not None \
            else faiss.IDSelectorBatch(ids)
        try:
            return int(self._index.remove_ids(selector))
        except RuntimeError:
            # This index type cannot delete (HNSW): hide the ids until a rebuild.
            self._tombstones.update(int(i) for i in ids)
            return int(ids.size)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if self.ntotal <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        k = max(1, min(k, self.ntotal))
        params = self._search_params() if self._tombstones else None
        return self._index.search(queries, k, params=params) if params else self._index.search(queries, k)

    def _search_params(self):
        import faiss

        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64)))
        if _as_ivf(self._index) is not None:
            params = faiss.SearchParametersIVF()
            params.nprobe = _as_ivf(self._index).nprobe
        elif "HNSW" in self.plan.factory:
            params = faiss.SearchParametersHNSW()
        else:
            params = faiss.SearchParameters()
        params.sel = selector
        if self.plan.ef_search and "HNSW" in self.plan.factory:
            params.efSearch = self.plan.ef_search
        params._keep = selector  # keep the selector alive as long as the params
        return params

    def save(self, path: Path) -> None:
        """Write atomically (see :mod:`sightline.search.atomic`)."""
        import faiss

        with atomic_path(path) as tmp:
            faiss.write_index(self._index, str(tmp))

    @classmethod
    def load(cls, path: Path, dim: int, plan: IndexPlan) -> "VectorIndex":
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dim:
            raise ValueError(f"{path} holds {index.d}-d vectors, expected {dim}")
        if not isinstance(index, faiss.IndexIDMap2) and _as_ivf(index) is None:
            raise ValueError(f"{path} is not an id-keyed index")
        return cls(dim, index=index, plan=plan)


def _ivf_ids(ivf) -> np.ndarray:
    import faiss

    lists = ivf.invlists
    parts = [faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
             for i in range(ivf.nlist) if lists.list_size(i)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def vectors_from_blobs(blobs: list[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim)


def vector_to_blob(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def family(factory: str) -> str:
    """Coarse kind of an index-factory string: flat, ivf, ivfpq, hnsw or other."""
    head = factory.split(",")[0]
    if factory == "Flat":
        return "flat"
    if head.startswith("IVF"):
        return "ivfpq" if "PQ" in factory else "ivf"
    if head.startswith("HNSW"):
        return "hnsw"
    return "other:" + factory


def describe(index: VectorIndex) -> tuple[str, int]:
    """(family, nlist) of a built index, read off the FAISS object itself."""
    import faiss

    base = _inner(index._index)
    name = type(base).__name__
    ivf = _as_ivf(base)
    if ivf is not None:
        pq = "PQ" in type(faiss.downcast_index(ivf)).__name__
        return ("ivfpq" if pq else "ivf"), int(ivf.nlist)
    if "HNSW" in name:
        return "hnsw", 0
    if name.startswith("IndexFlat"):
        return "flat", 0
    return "other:" + name, 0


def fits(index: VectorIndex, plan: IndexPlan) -> bool:
    """Whether ``index`` is close enough to ``plan`` to keep (no rebuild).

    IVF lists are kept while the wanted count is within 4x of the built one,
    so a growing collection is not retrained at every run.
    """
    kind, nlist = describe(index)
    wanted = family(plan.factory)
    if wanted.startswith("other:"):
        return not kind.startswith("flat") or plan.factory == "Flat"
    if kind != wanted:
        return False
    if kind in ("ivf", "ivfpq"):
        want_nlist = int("".join(c for c in plan.factory[3:].split(",")[0] if c.isdigit()) or 1)
        return want_nlist / 4 <= nlist <= want_nlist * 4
    return True
