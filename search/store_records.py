"""Plain records the store takes and returns, and path encoding.

Paths are stored as the file system's bytes so that any name (including ones
that are not valid UTF-8) round-trips; in Python they are ``str`` decoded
with ``surrogateescape`` (``os.fsdecode``), as ``os`` itself does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Optional

import numpy as np



class Kind(str, Enum):
    """What a vector belongs to: an indexed file (image) or a caption."""

    FILES = "files"
    CAPTIONS = "captions"


@dataclass(frozen=True)
class ModelInfo:
    """The model an index's vectors come from, as the index records it."""

    model_id: str
    dim: int
    name: str
    pretrained: str


def path_key(path: str) -> bytes:
    return os.fsencode(path)


def path_str(key: bytes) -> str:
    return os.fsdecode(key)


def display_path(path: str) -> str:
    """A printable form of a path (undecodable bytes shown as U+FFFD)."""
    return os.fsencode(path).decode("utf-8", "replace")


class FileState(NamedTuple):
    id: int
    size: int
    mtime_ns: int
    sha256: str


@dataclass
class FileRecord:
    """A file ready to be stored, with its embedding."""

    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    taken_at: Optional[str]
    orientation: Optional[int]
    format: Optional[str]
    embedding: np.ndarray

    def row_values(self, indexed_at: float) -> dict:
        return dict(
            path=path_key(self.path), size=self.size, mtime_ns=self.mtime_ns, sha256=self.sha256,
            width=self.width, height=self.height, taken_at=self.taken_at, orientation=self.orientation,
            format=self.format, indexed_at=indexed_at, embedding=self.embedding,
        )

    @classmethod
    def from_row(cls, row, dim: int) -> "FileRecord":
        return cls(
            path=path_str(row.path), size=row.size, mtime_ns=row.mtime_ns, sha256=row.sha256,
            width=row.width, height=row.height, taken_at=row.taken_at, orientation=row.orientation,
            format=row.format, embedding=np.asarray(row.embedding, np.float32).reshape(dim),
        )


@dataclass(frozen=True)
class FileRow:
    """An indexed file as readers see it (no embedding)."""

    id: int
    path: str
    size: int
    mtime_ns: int
    sha256: str
    width: int
    height: int
    taken_at: Optional[str]
    orientation: Optional[int]
    format: Optional[str]
    indexed_at: float

    @classmethod
    def from_row(cls, row) -> "FileRow":
        return cls(
            id=row.id, path=path_str(row.path), size=row.size, mtime_ns=row.mtime_ns, sha256=row.sha256,
            width=row.width, height=row.height, taken_at=row.taken_at, orientation=row.orientation,
            format=row.format, indexed_at=row.indexed_at,
        )


@dataclass(frozen=True)
class CaptionRow:
    id: int
    file_id: Optional[int]
    text: str
    source: Optional[str]


@dataclass(frozen=True)
class FailureRecord:
    path: str
    size: int
    mtime_ns: int
    reason: str
