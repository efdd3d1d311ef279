"""Splitting long id lists into pieces a single SQL statement can take."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

#: Ids per ``IN (...)`` list: far below SQLite's bound-parameter limit, and a
#: statement still does real work per round trip.
SQL_CHUNK = 500


def chunked(items: Iterable[T], size: int = SQL_CHUNK) -> Iterator[list[T]]:
    """Consecutive lists of at most ``size`` items (none for no items)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
