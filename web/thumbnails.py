"""Reading indexed files safely, and the on-disk thumbnail cache.

Only files the index knows are ever opened, and only by the path the index
stored for them.  A file is served only while its size and modification time
still match what was indexed: if it was replaced (say by a link to some other
file) the server answers 404 until it is indexed again.

Thumbnails are JPEGs keyed by content hash and size, so renamed or duplicated
photos share one, and a changed photo (new hash after re-indexing) gets a new
one.  Each is generated once: concurrent requests for the same key wait on a
lock and then read the finished file.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import threading
from pathlib import Path
from typing import BinaryIO, Optional

from PIL import Image

from sightline.search.atomic import atomic_write
from sightline.search.errors import NotFoundError
from sightline.search.imageio import decode_image
from sightline.search.store_records import FileRow

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_LOCK_STRIPES = 64


def open_indexed(row: FileRow) -> BinaryIO:
    """Open an indexed file for reading; 404 unless it is still what was indexed."""
    try:
        handle = open(row.path, "rb")
    except OSError:
        raise NotFoundError(f"the file of image {row.id} is no longer readable on disk; "
                            f"run `sightline index` again to update the index") from None
    try:
        # fstat the open handle, not the path: what we checked is what we read.
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NotFoundError(f"image {row.id} is not a regular file any more")
        if st.st_size != row.size or st.st_mtime_ns != row.mtime_ns:
            raise NotFoundError(f"image {row.id} changed on disk since it was indexed; "
                                f"run `sightline index` again to update the index")
    except BaseException:
        handle.close()
        raise
    return handle


def iter_file(handle: BinaryIO, chunk_size: int = 256 * 1024):
    """Stream an open file, closing it at the end (or when the client goes away)."""
    try:
        while chunk := handle.read(chunk_size):
            yield chunk
    finally:
        handle.close()


class ThumbnailCache:
    def __init__(self, root: Path, max_pixels: int, quality: int = 85):
        self.root = Path(root)
        self.max_pixels = max_pixels
        self.quality = quality
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._cache_broken = False  # warn once when the folder is not writable

    def get(self, row: FileRow, size: int) -> bytes:
        """JPEG bytes of ``row`` scaled to fit ``size`` x ``size``, upright."""
        key = self._key(row, size)
        if key is None:
            return self._render(row, size)
        path = self.root / key
        with self._locks[hash(key) % _LOCK_STRIPES]:
            cached = _read(path)
            if cached is not None:
                return cached
            data = self._render(row, size)
            self._store(path, data)
            return data

    def _key(self, row: FileRow, size: int) -> Optional[str]:
        # The hash comes from our own database, but it becomes part of a path: check it.
        if not isinstance(row.sha256, str) or not _SHA256.fullmatch(row.sha256):
            return None
        return f"{row.sha256[:2]}/{row.sha256}-{int(size)}.jpg"

    def _render(self, row: FileRow, size: int) -> bytes:
        with open_indexed(row) as handle:
            # draft_size lets big JPEGs decode at a fraction of full size;
            # decode_image also applies the EXIF orientation.
            image, _ = decode_image(handle, max_pixels=self.max_pixels, draft_size=size)
        image.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=self.quality, optimize=True)
        return out.getvalue()

    def _store(self, path: Path, data: bytes) -> None:
        if self._cache_broken:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data)  # a reader sees all of it or nothing
        except OSError as exc:
            self._cache_broken = True
            log.warning("cannot write thumbnails under %s (%s); serving them uncached", self.root, exc)


def _read(path: Path) -> Optional[bytes]:
    try:
        return path.read_bytes()
    except OSError:
        return None
