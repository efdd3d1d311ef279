"""Decode workers: read a file, hash it, decode it and preprocess it.

Runs in worker processes (torch-free, so they start fast and fork safely).
A file whose content hash is already in the index is not decoded at all: the
indexer reuses the stored vector.  Every failure becomes a reason string.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from typing import Optional

import numpy as np

from sightline.search.errors import ImageDecodeError
from sightline.search.imageio import ImageInfo, decode_image
from sightline.search.preprocess import Preprocessor

#: Files larger than this are refused before being read into memory.
MAX_FILE_BYTES = 512 * 1024 * 1024


@dataclass(frozen=True)
class DecodeTask:
    path: str
    size: int
    mtime_ns: int


@dataclass
class Decoded:
    task: DecodeTask
    sha256: Optional[str] = None
    pixels: Optional[np.ndarray] = None
    info: Optional[ImageInfo] = None
    error: Optional[str] = None
    known_content: bool = False  # hash already in the index: reuse its vector
    # The error may go away without the file changing (permissions fixed by
    # chmod, which leaves mtime alone; an I/O error): retry on every run.
    transient: bool = False
    #: The embedding, when it was computed where the file was decoded (on Ray).
    vector: Optional[np.ndarray] = None


@dataclass(frozen=True)
class DecoderConfig:
    preprocessor: Preprocessor
    max_pixels: int
    use_draft: bool = True


def read_bytes(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    """The file's content, refusing anything but a regular file of at most ``limit`` bytes.

    The scan only lists regular files, but a path can be swapped for a FIFO
    (an open that blocks forever) or a device (a read that never ends) before
    we get to it: open without blocking and check what was opened.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError("not a regular file (a pipe, device or socket)")
        too_big = ImageDecodeError(f"file is larger than {limit // (1024 * 1024)} MiB")
        if st.st_size > limit:
            raise too_big  # refused before reading a byte
        data = handle.read(limit + 1)  # bounded even if the file grows meanwhile
    if len(data) > limit:
        raise too_big
    return data


def decode_one(task: DecodeTask, config: DecoderConfig, known_hashes: frozenset = frozenset()) -> Decoded:
    result = Decoded(task)
    try:
        data = read_bytes(task.path)
    except FileNotFoundError:
        result.error, result.transient = "file disappeared while indexing", True
        return result
    except ImageDecodeError as exc:
        result.error = str(exc)
        return result
    except OSError as exc:
        result.error, result.transient = f"cannot read file: {exc.strerror or exc}", True
        return result
    if not data:
        result.error = "empty file (0 bytes)"
        return result
    result.sha256 = hashlib.sha256(data).hexdigest()
    if result.sha256 in known_hashes:
        result.known_content = True
        return result
    draft = config.preprocessor.draft_size if config.use_draft else None
    try:
        image, result.info = decode_image(data, max_pixels=config.max_pixels, draft_size=draft)
        result.pixels = config.preprocessor(image)
    except ImageDecodeError as exc:
        result.error = str(exc)
    except MemoryError:
        result.error = "out of memory while decoding"
    except Exception as exc:  # a hostile file must never stop the job
        result.error = f"cannot decode image: {type(exc).__name__}: {exc}"
    return result


# --- worker-process state: set once per worker by the pool initializer -------
_worker_config: Optional[DecoderConfig] = None
_worker_known: frozenset = frozenset()


def init_worker(config: DecoderConfig, known_hashes: frozenset) -> None:
    global _worker_config, _worker_known
    _worker_config, _worker_known = config, known_hashes
    # Leave the cores to the model process when it is busy.
    try:
        os.nice(19)
    except OSError:
        pass


def decode_in_worker(task: DecodeTask) -> Decoded:
    return decode_one(task, _worker_config, _worker_known)
