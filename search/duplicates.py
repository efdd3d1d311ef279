"""Duplicate photos: exact copies (the same content hash under several paths) and
near copies (embeddings within a cosine threshold: resized, re-encoded, lightly
cropped or edited versions).

Files with the same content are one node; near pairs come from a FAISS range
search over one embedding per content (exact search up to
:data:`EXACT_SEARCH_LIMIT` contents, an inverted-file index beyond, whose pair
recall ``benchmarks/duplicates.py`` measures); groups are the connected
components of the pairs at or above the threshold.  A group's score is the
similarity at which it would split (the weakest link of its maximum spanning
tree): every file is joined to the rest by a chain of pairs at least that
similar.  Files are listed best quality first: most pixels, then largest
file, then earliest capture, then the shortest path.

:class:`DuplicateFinder` keeps the pairs found at the lowest threshold asked
so far and answers any higher one from them (the UI's threshold control);
they are recomputed when the index changes.  Nothing here changes any file.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np
from sqlalchemy import select

from sightline.search import schema
from sightline.search.chunks import chunked
from sightline.search.errors import InvalidQueryError
from sightline.search.store import Store
from sightline.search.store_records import path_str
from sightline.search.store_roots import under_clause
from sightline.search.vectors import vectors_from_blobs

log = logging.getLogger(__name__)

#: Default cosine threshold, chosen with benchmarks/duplicate_threshold.py (see the README's table).
DEFAULT_THRESHOLD = 0.99
#: Lowest threshold accepted: below it "duplicates" are merely similar photos, and groups grow huge.
MIN_THRESHOLD = 0.5
#: Up to this many distinct contents, near pairs come from exact search.
EXACT_SEARCH_LIMIT = 20_000
#: Queries per FAISS range search call (bounds the memory of one call's results).
_QUERY_CHUNK = 4096


@dataclass(frozen=True)
class DuplicateFile:
    id: int
    path: str
    size: int
    width: int
    height: int
    taken_at: Optional[str]
    mtime_ns: int
    sha256: str
    #: Cosine similarity to the group's first (best) file.
    similarity: float

    def as_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "size": self.size, "width": self.width, "height": self.height,
                "taken_at": self.taken_at, "similarity": round(self.similarity, 6)}


@dataclass(frozen=True)
class DuplicateGroup:
    kind: str  # "exact": one content under several paths; "near": close embeddings
    score: float
    files: list[DuplicateFile]

    @property
    def reclaimable_bytes(self) -> int:
        """What keeping only the first file would free."""
        return sum(f.size for f in self.files[1:])

    def as_dict(self) -> dict:
        return {"kind": self.kind, "score": round(self.score, 6), "files": [f.as_dict() for f in self.files]}


@dataclass
class _Rows:
    """The files considered (read afresh for every answer: paths change under renames)."""

    ids: np.ndarray
    paths: list[str]
    size: np.ndarray
    width: np.ndarray
    height: np.ndarray
    taken_at: list[Optional[str]]
    mtime_ns: np.ndarray
    sha256: list[str]


@dataclass
class _Pairs:
    """Near pairs over distinct contents, found at ``floor`` or above."""

    signature: tuple
    folder: Optional[str]
    floor: float
    contents: dict[str, int]  # sha256 -> content index
    pairs: np.ndarray  # (i, j, cosine) over content indices


class DuplicateFinder:
    """Duplicate groups of one store (thread-safe; see the module docstring)."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._cache: Optional[_Pairs] = None

    def groups(self, threshold: float = DEFAULT_THRESHOLD, exact_only: bool = False,
               folder: Optional[str] = None) -> list[DuplicateGroup]:
        """Groups of files under ``folder`` (None: all), best groups first."""
        threshold = check_threshold(threshold)
        rows = _load_rows(self.store, folder)
        if exact_only:
            contents: dict[str, int] = {}
            content = np.array([contents.setdefault(h, len(contents)) for h in rows.sha256], np.int64)
            pairs = np.zeros((0, 3))
        else:
            with self._lock:
                found = self._pairs(threshold, folder)
            # A file added since the pairs were computed would have changed the signature; the
            # row read a moment later may still be newer: it is then a content of its own.
            extra: dict[str, int] = {}
            content = np.array([found.contents.get(h, extra.setdefault(h, len(found.contents) + len(extra)))
                                for h in rows.sha256], np.int64)
            pairs = found.pairs[found.pairs[:, 2] >= threshold] if len(found.pairs) else found.pairs
        return _components(self.store, rows, content, pairs)

    def _pairs(self, floor: float, folder: Optional[str]) -> _Pairs:
        signature = self.store.files_signature()
        cached = self._cache
        if cached and (cached.signature, cached.folder) == (signature, folder) and cached.floor <= floor:
            return cached
        contents, vectors = _load_contents(self.store, folder)
        self._cache = _Pairs(signature, folder, floor, contents, near_pairs(vectors, floor))
        return self._cache


def find_duplicates(store: Store, threshold: float = DEFAULT_THRESHOLD, exact_only: bool = False,
                    folder: Optional[str] = None) -> list[DuplicateGroup]:
    """Duplicate groups of ``store`` (see :class:`DuplicateFinder`)."""
    return DuplicateFinder(store).groups(threshold, exact_only, folder)


def check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if math.isnan(threshold) or not MIN_THRESHOLD <= threshold <= 1.0:
        raise InvalidQueryError(f"the duplicate threshold must be a cosine similarity between {MIN_THRESHOLD} and 1 "
                                f"(default {DEFAULT_THRESHOLD}); got {threshold}")
    return threshold


# ------------------------------------------------------------------ loading
def _where(query, folder: Optional[str]):
    return query if folder is None else query.where(under_clause(schema.files.c.path, folder))


def _load_rows(store: Store, folder: Optional[str]) -> _Rows:
    t = schema.files
    query = _where(select(t.c.id, t.c.path, t.c.size, t.c.width, t.c.height, t.c.taken_at, t.c.mtime_ns,
                          t.c.sha256), folder)
    with store.read() as conn:
        result = conn.execute(query.order_by(t.c.id)).all()
    column = lambda name: np.array([getattr(r, name) for r in result], np.int64)  # noqa: E731
    return _Rows(column("id"), [path_str(r.path) for r in result], column("size"), column("width"),
                 column("height"), [r.taken_at for r in result], column("mtime_ns"), [r.sha256 for r in result])


def _load_contents(store: Store, folder: Optional[str]) -> tuple[dict[str, int], np.ndarray]:
    """One embedding per distinct content (copies share their vector)."""
    t = schema.files
    contents: dict[str, int] = {}
    blobs = []
    with store.read() as conn:
        for sha, blob in conn.execute(_where(select(t.c.sha256, t.c.embedding), folder).order_by(t.c.id)):
            if sha not in contents:
                contents[sha] = len(blobs)
                blobs.append(blob)
    dim = store.dim if blobs else 1
    return contents, vectors_from_blobs(blobs, dim)


# -------------------------------------------------------------------- pairs
def near_pairs(vectors: np.ndarray, floor: float, exact_limit: int = EXACT_SEARCH_LIMIT) -> np.ndarray:
    """(i, j, cosine) rows, i < j, for every pair of ``vectors`` at least ``floor`` similar.

    Exact up to ``exact_limit`` vectors; beyond, an IVF index probes the lists
    nearest each query, which finds pairs this close with high recall (a
    near-duplicate lies in or next to its twin's cell).
    """
    n = len(vectors)
    if n < 2:
        return np.zeros((0, 3))
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    index = _range_index(x, n > exact_limit)
    # FAISS returns similarities strictly above the radius, computed its own way:
    # ask a little lower, then decide on the same float32 dot products everywhere.
    radius = floor - 1e-3
    parts = []
    for start in range(0, n, _QUERY_CHUNK):
        lims, _, found = index.range_search(x[start:start + _QUERY_CHUNK], radius)
        queries = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims).astype(np.int64))
        keep = queries < found
        parts.append(np.stack([queries[keep], found[keep]], axis=1))
    pairs = np.concatenate(parts) if parts else np.zeros((0, 2), np.int64)
    sims = np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]])
    keep = sims >= floor
    return np.column_stack([pairs[keep].astype(np.float64), sims[keep].astype(np.float64)])


def _range_index(x: np.ndarray, approximate: bool):
    import faiss

    dim = x.shape[1]
    if not approximate:
        index = faiss.IndexFlatIP(dim)
    else:
        # ~4 sqrt(n) lists (a power of two), never fewer than FAISS's 39 training points each.
        nlist = max(1, min(int(2 ** round(math.log2(4 * math.sqrt(len(x))))), 2 ** int(math.log2(len(x) // 39 or 1))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = x if len(x) <= 64 * nlist else x[np.random.default_rng(0).choice(len(x), 64 * nlist, replace=False)]
        index.train(sample)
        index.nprobe = 8
    index.add(x)
    return index


# --------------------------------------------------------------- grouping
def _components(store: Store, rows: _Rows, content: np.ndarray, pairs: np.ndarray) -> list[DuplicateGroup]:
    """Connected components over contents (exact copies share one), in Kruskal order for the scores."""
    m = int(content.max()) + 1 if len(content) else 0
    parent = list(range(m))
    low = [1.0] * m  # weakest link joining each component so far

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for i, j, sim in sorted(pairs.tolist(), key=lambda p: -p[2]):
        a, b = find(int(i)), find(int(j))
        if a != b:
            parent[b] = a
            low[a] = min(low[a], low[b], sim)
    members: dict[int, list[int]] = {}
    for row, c in enumerate(content.tolist()):
        members.setdefault(find(c), []).append(row)
    found = [(rows_, low[root]) for root, rows_ in members.items() if len(rows_) > 1]
    vectors = _embeddings(store, [int(rows.ids[r]) for rows_, _ in found for r in rows_]) if len(pairs) else {}
    groups = [_group(rows, content, members_, score, vectors) for members_, score in found]
    groups.sort(key=lambda g: (-g.score, -len(g.files), g.files[0].path))
    return groups


def _embeddings(store: Store, ids: list[int]) -> dict[int, np.ndarray]:
    t = schema.files
    out = {}
    with store.read() as conn:
        for chunk in chunked(ids):
            for file_id, blob in conn.execute(select(t.c.id, t.c.embedding).where(t.c.id.in_(chunk))):
                out[file_id] = vectors_from_blobs([blob], store.dim)[0]
    return out


def _group(rows: _Rows, content: np.ndarray, found: list[int], score: float,
           vectors: dict[int, np.ndarray]) -> DuplicateGroup:
    def quality(r: int):
        taken = rows.taken_at[r]
        return (-int(rows.width[r] * rows.height[r]), -int(rows.size[r]), taken is None, taken or "",
                int(rows.mtime_ns[r]), len(rows.paths[r]), rows.paths[r])

    ordered = sorted(found, key=quality)
    exact = len({rows.sha256[r] for r in ordered}) == 1
    best = vectors.get(int(rows.ids[ordered[0]]))
    files = []
    for r in ordered:
        vector = vectors.get(int(rows.ids[r]))
        same = content[r] == content[ordered[0]]
        similarity = 1.0 if same or best is None or vector is None else float(np.dot(best, vector))
        files.append(DuplicateFile(int(rows.ids[r]), rows.paths[r], int(rows.size[r]), int(rows.width[r]),
                                   int(rows.height[r]), rows.taken_at[r], int(rows.mtime_ns[r]), rows.sha256[r],
                                   similarity))
    return DuplicateGroup("exact" if exact else "near", 1.0 if exact else score, files)
