"""What a root leaves out: ``--exclude`` globs and ``.sightlineignore`` files.

- A glob (``--exclude '*/private/*'``, ``'*.tmp'``) is matched, case-sensitively,
  against a file's full path; ``*`` matches across ``/``, as in ``fnmatch``.
- A ``.sightlineignore`` file in a folder holds gitignore-style patterns
  (``pathspec``'s GitIgnoreSpec: ``raw/``, ``*.tmp``, ``/top-level-only.jpg``,
  ``!keep.jpg``) for the paths below that folder; deeper files refine what
  shallower ones say, and a folder left out takes everything below it along.
- The index's own folder (thumbnails are JPEGs) is always left out.

Files left out are not indexed, and the ones already in the index are swept
like deleted files on the next run.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from typing import Iterable, Optional

log = logging.getLogger(__name__)

IGNORE_FILE = ".sightlineignore"


class Exclusions:
    """The exclusion rules of one root (``root``: an absolute path)."""

    def __init__(self, root: str, globs: Iterable[str] = (), always: Iterable[str] = ()):
        self.root = os.path.abspath(root)
        self.globs = tuple(globs)
        self._always = tuple(os.path.abspath(p) for p in always)
        # A folder whose path + "/" matches a glob ending in "*" has every path below it
        # matched too (the final * takes the rest), so the walk need not enter it.
        self._dir_globs = tuple(g for g in self.globs if g.endswith("*"))
        self._specs: dict[str, object] = {}  # folder -> its GitIgnoreSpec, or None
        #: Files left out since the last :meth:`reset` (counted by the walk).
        self.skipped = 0

    def reset(self) -> None:
        """Forget loaded ``.sightlineignore`` files (they may have changed) and the count."""
        self._specs.clear()
        self.skipped = 0

    def forget(self, folder: str) -> None:
        """The ``.sightlineignore`` of ``folder`` changed: read it again when next needed."""
        self._specs.pop(os.path.abspath(folder), None)

    # ------------------------------------------------------------ the walk
    def excludes_dir(self, path: str) -> bool:
        """Whether the walk should skip the folder ``path`` (and all below it)."""
        if any(path == a or path.startswith(a.rstrip("/") + "/") for a in self._always):
            return True
        if any(fnmatch.fnmatchcase(path + "/", g) for g in self._dir_globs):
            return True
        return self._ignored(path, is_dir=True)

    def excludes_file(self, path: str) -> bool:
        """Whether the file ``path`` (whose folders are not excluded) is left out."""
        if any(fnmatch.fnmatchcase(path, g) for g in self.globs) or self._ignored(path, is_dir=False):
            self.skipped += 1
            return True
        return False

    # ------------------------------------------------------ single paths
    def excludes_path(self, path: str, is_dir: bool = False) -> bool:
        """Whether ``path`` is left out, its folders included (for one changed file or
        folder, without a walk): hidden or excluded folders above it, then itself."""
        path = os.path.abspath(path)
        rel = os.path.relpath(path, self.root)
        if rel == ".":
            return False
        if rel.startswith(".." + os.sep) or rel == "..":
            return True  # not below this root
        parts = rel.split(os.sep)
        folder = self.root
        for part in parts[:-1]:
            folder = os.path.join(folder, part)
            if part.startswith(".") or self.excludes_dir(folder):
                return True
        if is_dir:
            return parts[-1].startswith(".") or self.excludes_dir(path)
        return self.excludes_file(path)

    # ------------------------------------------------------------ helpers
    def _ignored(self, path: str, is_dir: bool) -> bool:
        """The verdict of the ``.sightlineignore`` files from the root down to ``path``'s folder."""
        verdict = False
        folder = os.path.dirname(path)
        chain = []
        while True:
            chain.append(folder)
            if folder == self.root or len(folder) <= len(self.root):
                break
            folder = os.path.dirname(folder)
        if chain[-1] != self.root:
            return False  # outside the root: no ignore files apply
        for folder in reversed(chain):
            spec = self._spec(folder)
            if spec is None:
                continue
            rel = os.path.relpath(path, folder) + ("/" if is_dir else "")
            result = spec.check_file(rel).include
            if result is not None:
                verdict = result
        return verdict

    def _spec(self, folder: str) -> Optional[object]:
        if folder not in self._specs:
            self._specs[folder] = _load_spec(os.path.join(folder, IGNORE_FILE))
        return self._specs[folder]


def _load_spec(path: str):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        log.warning("cannot read %s (%s); its patterns are not applied", path, exc.strerror or exc)
        return None
    from pathspec import GitIgnoreSpec

    try:
        return GitIgnoreSpec.from_lines(lines)
    except Exception as exc:  # a malformed pattern must not stop indexing
        log.warning("cannot parse %s (%s); its patterns are not applied", path, exc)
        return None
