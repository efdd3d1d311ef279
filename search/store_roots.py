"""The store's table of roots: the folders (or files) an index covers.

:class:`RootTable` belongs to a :class:`~sightline.search.store.Store` (as
``store.roots``) and only reads and writes rows; what a root means for
indexing (exclusions, safe sweeping) is the indexer's business
(:mod:`sightline.indexer.roots`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

from sqlalchemy import delete, func, insert, or_, select, update

from sightline.search import schema
from sightline.search.store_records import path_key, path_str


@dataclass(frozen=True)
class RootRecord:
    """A remembered root, as the index records it."""

    path: str
    excludes: tuple[str, ...] = ()
    #: ``st_dev`` when last indexed (None: not known yet).
    device: Optional[int] = None
    #: Photos under it after its last run.
    files: int = 0
    indexed_at: Optional[float] = None
    added_at: float = field(default_factory=time.time)


def under_clause(column, path: str):
    """``column`` is ``path`` itself or lies below it (a byte-range prefix match that can use the path index)."""
    key = path_key(path)
    prefix = key.rstrip(b"/") + b"/"
    return or_(column == key, (column >= prefix) & (column < prefix[:-1] + b"0"))


class RootTable:
    def __init__(self, engine):
        self._engine = engine

    def all(self) -> list[RootRecord]:
        t = schema.roots
        with self._engine.connect() as conn:
            return [_record(r) for r in conn.execute(select(t).order_by(t.c.path))]

    def get(self, path: str) -> Optional[RootRecord]:
        t = schema.roots
        with self._engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.path == path_key(path))).first()
        return _record(row) if row is not None else None

    def put(self, record: RootRecord) -> None:
        """Insert the root, or replace what is recorded for its path."""
        t = schema.roots
        values = dict(excludes=json.dumps(list(record.excludes)), device=record.device, files=record.files,
                      indexed_at=record.indexed_at)
        with self._engine.begin() as conn:
            done = conn.execute(update(t).where(t.c.path == path_key(record.path)).values(**values)).rowcount
            if not done:
                conn.execute(insert(t).values(path=path_key(record.path), added_at=record.added_at, **values))

    def delete(self, paths: Sequence[str]) -> None:
        with self._engine.begin() as conn:
            for path in paths:
                conn.execute(delete(schema.roots).where(schema.roots.c.path == path_key(path)))

    def count_files(self, path: str) -> int:
        """Indexed files at or below ``path``."""
        t = schema.files
        with self._engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(t).where(under_clause(t.c.path, path))).scalar_one()


def _record(row) -> RootRecord:
    return RootRecord(path_str(row.path), tuple(json.loads(row.excludes or "[]")), row.device, row.files,
                      row.indexed_at, row.added_at)
