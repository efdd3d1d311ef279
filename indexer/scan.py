"""Walking a photo folder: which files are images, without looping forever.

Directory symlinks are followed (people link albums in), but each real
directory is visited once, keyed by (device, inode), so symlink loops end.
Files that vanish or cannot be stat'ed mid-walk are reported, never fatal.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from sightline.indexer.ignore import Exclusions

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
    ".heic", ".heif", ".avif",
})


@dataclass(frozen=True)
class ScannedFile:
    path: str  # absolute; str from os.fsdecode, so any bytes round-trip
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    path: str
    reason: str


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk_images(root: str, problems: list[ScanProblem] | None = None,
                exclusions: "Exclusions | None" = None) -> Iterator[ScannedFile]:
    """Yield every image file below ``root`` (or ``root`` itself if it is a file).

    Unreadable directories and files are appended to ``problems`` when given.
    ``exclusions`` (:class:`~sightline.indexer.ignore.Exclusions`) leaves out
    folders and files.
    """
    problems = problems if problems is not None else []
    root = os.path.abspath(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        problems.append(ScanProblem(root, f"cannot read: {exc.strerror or exc}"))
        return
    if stat.S_ISREG(st.st_mode):
        if exclusions is None or not exclusions.excludes_path(root):
            yield ScannedFile(root, st.st_size, st.st_mtime_ns)
        return
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            dst = os.stat(directory)
        except OSError as exc:
            problems.append(ScanProblem(directory, f"cannot read folder: {exc.strerror or exc}"))
            continue
        key = (dst.st_dev, dst.st_ino)
        if key in seen:
            continue  # a symlink loop, or the same folder linked twice
        seen.add(key)
        try:
            with os.scandir(directory) as entries:
                entries = sorted(entries, key=lambda e: e.name)
        except OSError as exc:
            problems.append(ScanProblem(directory, f"cannot list folder: {exc.strerror or exc}"))
            continue
        subdirs = []
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=True):
                    if not entry.name.startswith(".") and not (exclusions and exclusions.excludes_dir(entry.path)):
                        subdirs.append(entry.path)
                    continue
                if not is_image_name(entry.name) or not entry.is_file(follow_symlinks=True):
                    continue
                if exclusions is not None and exclusions.excludes_file(entry.path):
                    continue
                est = entry.stat(follow_symlinks=True)
            except OSError as exc:
                problems.append(ScanProblem(entry.path, f"cannot stat: {exc.strerror or exc}"))
                continue
            yield ScannedFile(entry.path, est.st_size, est.st_mtime_ns)
        stack.extend(reversed(subdirs))
