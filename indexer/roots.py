"""The roots of an index: which folders it covers, and when sweeping them is safe.

``sightline index PATH...`` remembers each PATH as a root (with its
``--exclude`` globs); a later run with no PATH re-indexes them all.  A PATH
inside a root is indexed as part of that root (its exclusions apply, only
that part is swept); a PATH that holds roots takes their place (their globs
carried over, so nothing they left out appears).

Sweeping (removing indexed photos that are no longer there) is refused for a
root that is missing, empty, or on another device than when it was last
indexed -- an unmounted disk or a renamed share looks exactly like that, and
sweeping it would throw away every embedding of the disk.  The run keeps
those photos, says so (:class:`HeldRoot`), and the command exits with the
error's code; ``prune`` sweeps them on purpose.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterable, Optional, Sequence

from sightline.indexer.ignore import Exclusions
from sightline.search.errors import (
    ConfigurationError,
    NotFoundError,
    RootDeviceChangedError,
    RootEmptyError,
    RootMissingError,
    SightlineError,
)
from sightline.search.store import Store
from sightline.search.store_records import display_path
from sightline.search.store_roots import RootRecord

log = logging.getLogger(__name__)


class Health(str, Enum):
    OK = "ok"
    MISSING = "missing"
    EMPTY = "empty"
    OTHER_DEVICE = "other device"


@dataclass
class Target:
    """One thing a run scans: a root, or a path below it (``scope``)."""

    scope: str
    root: RootRecord
    exclusions: Exclusions

    @property
    def whole_root(self) -> bool:
        return self.scope == self.root.path


@dataclass(frozen=True)
class HeldRoot:
    """A root whose vanished photos were kept instead of swept."""

    path: str
    health: Health
    kept: int

    @property
    def error(self) -> SightlineError:
        where = display_path(self.path)
        what = {Health.MISSING: (RootMissingError, "is missing (an unmounted disk or a renamed share?)"),
                Health.EMPTY: (RootEmptyError, "holds no photos (an empty mount point?)"),
                Health.OTHER_DEVICE: (RootDeviceChangedError, "is on another device than when it was indexed")}
        cls, why = what[self.health]
        if not self.kept:
            return cls(f"{where} {why}; none of its photos are indexed, so nothing was kept or removed.")
        return cls(f"{where} {why}: kept its {self.kept} indexed photo(s) instead of removing them. "
                   f"Mount it again and re-run, or run with --prune to remove them on purpose "
                   f"(`sightline roots remove {where}` forgets the root).")

    def as_dict(self) -> dict:
        return {"path": display_path(self.path), "reason": self.health.value, "kept": self.kept,
                "exit_code": self.error.exit_code, "message": str(self.error)}


def normalise(path: os.PathLike | str) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_under(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or lies below it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def root_of(roots: Iterable[RootRecord], path: str) -> Optional[RootRecord]:
    """The root that holds ``path`` (the innermost, should roots ever nest)."""
    holders = [r for r in roots if is_under(path, r.path)]
    return max(holders, key=lambda r: len(r.path)) if holders else None


def exclusions_for(store: Store, root: RootRecord) -> Exclusions:
    # The index folder is never indexed (its thumbnails are JPEGs).
    return Exclusions(root.path, root.excludes, always=[str(store.root)])


# ---------------------------------------------------------------- planning
def plan_roots(store: Store, paths: Sequence[os.PathLike | str], excludes: Optional[Sequence[str]] = None,
               clear_excludes: bool = False) -> list[Target]:
    """The targets of ``sightline index PATH...`` (no PATH: every remembered root),
    remembering new roots.  ``excludes`` (when given) or ``clear_excludes`` replace
    the globs of the roots involved."""
    known = store.roots.all()
    if not paths:
        if not known:
            raise ConfigurationError("this index remembers no folders yet: give one, e.g. "
                                     "`sightline index ~/Pictures`")
        paths = [r.path for r in known]
    wanted = sorted(dict.fromkeys(normalise(p) for p in paths), key=len)  # parents before children
    new_globs = tuple(excludes) if excludes is not None else (() if clear_excludes else None)
    targets: list[Target] = []
    for path in wanted:
        holder = root_of(known, path)
        if holder is None:
            if not os.path.lexists(path):
                raise ConfigurationError(f"{display_path(path)} does not exist (and is not a folder this "
                                         f"index remembers)")
            holder = _absorb(store, known, path, new_globs)
            known = store.roots.all()
        elif new_globs is not None and tuple(holder.excludes) != new_globs:
            holder = replace(holder, excludes=new_globs)
            store.roots.put(holder)
            known = store.roots.all()
        if any(t.root.path == holder.path and is_under(path, t.scope) for t in targets):
            continue  # already covered by an earlier target
        targets = [t for t in targets if not (t.root.path == holder.path and is_under(t.scope, path))]
        targets.append(Target(path, holder, exclusions_for(store, holder)))
    return targets


def _absorb(store: Store, known: list[RootRecord], path: str, globs: Optional[tuple]) -> RootRecord:
    """Remember ``path`` as a new root, taking the place of the roots below it."""
    inner = [r for r in known if is_under(r.path, path)]
    if globs is None:
        globs = tuple(dict.fromkeys(g for r in inner for g in r.excludes))
    record = RootRecord(path, globs, device=None, files=store.roots.count_files(path), indexed_at=None)
    store.roots.put(record)
    store.roots.delete([r.path for r in inner])
    if inner:
        log.info("%s takes the place of the roots below it: %s", path, ", ".join(r.path for r in inner))
    return store.roots.get(path)


def targets_for_paths(store: Store, paths: Iterable[str]) -> list[Target]:
    """Targets for changed paths under remembered roots (watch mode); paths outside
    every root, and paths a root excludes, are dropped (an excluded path that is
    indexed is still swept, as its root's walk would)."""
    roots = store.roots.all()
    targets: dict[tuple[str, str], Target] = {}
    exclusions = {r.path: exclusions_for(store, r) for r in roots}
    for path in sorted(set(normalise(p) for p in paths), key=len):
        root = root_of(roots, path)
        if root is None:
            continue
        if any(r == root.path and is_under(path, s) for r, s in targets):
            continue
        targets[(root.path, path)] = Target(path, root, exclusions[root.path])
    return list(targets.values())


# ----------------------------------------------------------------- health
def device_of(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_dev
    except OSError:
        return None


def root_health(root: RootRecord, found: Optional[int] = None, skipped: int = 0, known: int = 0) -> Health:
    """How a root looks now.  ``found``/``skipped``/``known``: images the walk of the
    whole root found / left out, and photos indexed under it (None: not walked)."""
    device = device_of(root.path)
    if device is None:
        return Health.MISSING
    if root.device is not None and device != root.device:
        return Health.OTHER_DEVICE
    if found == 0 and skipped == 0 and known > 0:
        return Health.EMPTY
    if found is None and known > 0 and _empty_folder(root.path):
        return Health.EMPTY  # a part of the root changed, and the root has nothing left at all
    return Health.OK


def _empty_folder(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return next(entries, None) is None
    except OSError:
        return False  # a file, or unreadable: not an empty folder


def record_indexed(store: Store, root: RootRecord) -> None:
    """After a run that swept (or had nothing to sweep) under ``root``: remember its device and size."""
    store.roots.put(replace(store.roots.get(root.path) or root, device=device_of(root.path),
                            files=store.roots.count_files(root.path), indexed_at=time.time()))


# ------------------------------------------------------------- listing etc.
def describe_roots(store: Store) -> list[dict]:
    """Every root with its photo count, exclusions and how it looks now."""
    out = []
    for root in store.roots.all():
        out.append({"path": display_path(root.path), "photos": store.roots.count_files(root.path),
                    "excludes": list(root.excludes), "state": root_health(root).value,
                    "indexed_at": root.indexed_at, "device": root.device})
    return out


def remove_root(store: Store, path: os.PathLike | str) -> int:
    """Forget a root and remove its photos from the index; returns how many were removed."""
    path = normalise(path)
    with store.writer():
        root = store.roots.get(path)
        if root is None:
            roots = ", ".join(display_path(r.path) for r in store.roots.all()) or "none"
            raise NotFoundError(f"{display_path(path)} is not a root of the index at {store.root} "
                                f"(its roots: {roots}; `sightline roots` lists them)")
        ids = [s.id for s in store.file_states(path).values()]
        store.remove_files(ids)
        store.forget_failures(p for p in store.failure_states(path))
        store.roots.delete([path])
    return len(ids)
