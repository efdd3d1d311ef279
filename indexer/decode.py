"""Decode workers: read a file, hash it, decode it and preprocess it.

Runs in worker processes (torch-free, so they start fast and fork safely).
A file whose content hash is already in the index is not decoded at all: the
indexer reuses the stored vector.  Every failure becomes a reason string.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from search.errors import ImageDecodeError
from search.imageio import ImageInfo, decode_image
from search.preprocess import Preprocessor

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


@dataclass(frozen=True)
class DecoderConfig:
    preprocessor: Preprocessor
    max_pixels: int
    use_draft: bool = True


def read_bytes(path: str, limit: int = MAX_FILE_BYTES) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ImageDecodeError(f"file is larger than {limit // (1024 * 1024)} MiB")
    return data


def decode_one(task: DecodeTask, config: DecoderConfig, known_hashes: frozenset = frozenset()) -> Decoded:
    result = Decoded(task)
    try:
        data = read_bytes(task.path)
    except FileNotFoundError:
        result.error = "file disappeared while indexing"
        return result
    except ImageDecodeError as exc:
        result.error = str(exc)
        return result
    except OSError as exc:
        result.error = f"cannot read file: {exc.strerror or exc}"
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
        os.nice(5)
    except OSError:
        pass


def decode_in_worker(task: DecodeTask) -> Decoded:
    return decode_one(task, _worker_config, _worker_known)
