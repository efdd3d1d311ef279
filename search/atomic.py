"""Writing a file so that its name always holds either the old content or all of the new.

The one policy for every file Sightline writes whole (FAISS indexes,
checkpoints, training state, caches, thumbnails): write under a unique
temporary name in the same folder, flush it to disk, rename it over the real
name, then flush the folder so the rename itself survives a power cut.  A
crash leaves at most a ``*.tmp`` file behind, never a torn file under the real
name.  New files get the usual permissions (0666 less the umask), like any
file ``open`` creates, so every file in an index folder has the same ones.
"""

from __future__ import annotations

import itertools
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

_counter = itertools.count()


@contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``.

    For writers that want a file name (``faiss.write_index``, ``torch.save``,
    ``np.save``).  On an exception the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_counter)}.tmp")
    # Created here (not by the writer) with O_EXCL: never someone else's file, and the usual mode.
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write(path: Union[str, os.PathLike], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # a platform that cannot open folders: the rename is all we can do
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)
