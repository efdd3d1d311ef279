"""Moving duplicates aside on request: all but the first (best) file of each group
go to a folder, and the index follows.

Nothing is ever deleted or overwritten: a file is moved only while it is still
what the index recorded (size and mtime), into a name that did not exist
(reserved with O_EXCL, so a concurrent writer cannot be clobbered), and across
devices it is copied, synced and checked before the original is unlinked.
A moved file whose new place lies under a root of the index keeps its row
(a path update); otherwise it leaves the index.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from typing import Optional, Sequence

from sightline.indexer.roots import exclusions_for, normalise, root_of
from sightline.search.duplicates import DuplicateFile, DuplicateGroup
from sightline.search.errors import ConfigurationError
from sightline.search.store import Store
from sightline.search.store_records import display_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Moved:
    file: DuplicateFile
    to: Optional[str]  # None: not moved (see ``reason``)
    reason: Optional[str] = None


def move_extras(store: Store, groups: Sequence[DuplicateGroup], dest: os.PathLike | str) -> list[Moved]:
    """Move every file but the first of each group below ``dest``; returns what happened to each."""
    dest = normalise(dest)
    with store.writer():
        roots = store.roots.all()
        holder = root_of(roots, dest)
        if holder is not None and not exclusions_for(store, holder).excludes_path(os.path.join(dest, "x.jpg")):
            raise ConfigurationError(
                f"{display_path(dest)} is inside the indexed root {display_path(holder.path)}: the moved copies would "
                f"be indexed (and found) again. Choose a folder outside the roots, or exclude it "
                f"(`sightline index {display_path(holder.path)} --exclude '{display_path(dest)}/*'`).")
        os.makedirs(dest, exist_ok=True)
        done: list[Moved] = []
        for group in groups:
            renames, removals = [], []
            for file in group.files[1:]:
                moved = _move_one(file, dest, roots)
                done.append(moved)
                if moved.to is None:
                    continue
                root = root_of(roots, moved.to)
                if root is not None and not exclusions_for(store, root).excludes_path(moved.to):
                    renames.append((file.id, moved.to))
                else:
                    removals.append(file.id)
            if renames:
                store.move_files(renames)
            if removals:
                store.remove_files(removals)
    return done


def _move_one(file: DuplicateFile, dest: str, roots) -> Moved:
    try:
        st = os.stat(file.path)
    except OSError as exc:
        return Moved(file, None, f"cannot read it: {exc.strerror or exc}")
    if (st.st_size, st.st_mtime_ns) != (file.size, file.mtime_ns):
        return Moved(file, None, "it changed since it was indexed (re-index first)")
    root = root_of(roots, file.path)
    relative = os.path.relpath(file.path, os.path.dirname(root.path) if root else os.path.dirname(file.path))
    target = _reserve(os.path.join(dest, relative))
    try:
        if os.stat(os.path.dirname(target)).st_dev == st.st_dev:
            os.replace(file.path, target)  # onto our own empty placeholder: atomic
        else:
            _copy_then_unlink(file.path, target, st.st_size)
    except OSError as exc:
        _drop_placeholder(target)
        return Moved(file, None, f"cannot move it: {exc.strerror or exc}")
    log.info("moved %s -> %s", file.path, target)
    return Moved(file, target)


def _reserve(wanted: str) -> str:
    """Create an empty file at ``wanted`` (or ``name (N).ext``) that did not exist; return its path."""
    os.makedirs(os.path.dirname(wanted), exist_ok=True)
    stem, ext = os.path.splitext(wanted)
    for n in range(10_000):
        candidate = wanted if n == 0 else f"{stem} ({n}){ext}"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            return candidate
        except FileExistsError:
            continue
    raise ConfigurationError(f"too many files named like {display_path(wanted)} already")


def _copy_then_unlink(src: str, target: str, size: int) -> None:
    with open(src, "rb") as source, open(target, "r+b") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
    shutil.copystat(src, target)
    if os.stat(target).st_size != size:
        raise OSError(f"the copy of {src} is incomplete")
    os.unlink(src)


def _drop_placeholder(target: str) -> None:
    try:
        if os.path.getsize(target) == 0:
            os.unlink(target)
    except OSError:
        pass

