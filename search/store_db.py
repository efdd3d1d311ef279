"""Opening the index database: the SQLite engine, its settings, and errors that name the file.

:func:`open_database` is the store's only way in.  It turns what SQLite
reports at open (and later, on any query) into typed errors whose message
names the file and says what to do.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Optional, Sequence

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, OperationalError

from sightline.search import schema
from sightline.search.errors import IndexLockedError, IndexNotFoundError, StoreCorruptError

DB_NAME = "sightline.db"


def open_database(db_path: Path, create: bool = False) -> Engine:
    """An engine over ``db_path`` with the schema migrated to this version."""
    root = db_path.parent
    if not db_path.exists():
        if not create:
            raise IndexNotFoundError(
                f"no Sightline index at {root}. Create one with `sightline index PHOTO_FOLDER "
                f"--index {root}`, or point --index at an existing one."
            )
        root.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{db_path}")
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "handle_error", _corruption_names_the_file(db_path))
    try:
        with engine.begin() as conn:
            version = schema.current_version(conn)
            if version > schema.SCHEMA_VERSION:
                raise StoreCorruptError(
                    f"{db_path} has schema version {version}, newer than this Sightline "
                    f"understands ({schema.SCHEMA_VERSION}); upgrade Sightline."
                )
            schema.migrate(conn)
    except (DatabaseError, OperationalError) as exc:
        engine.dispose()
        raise StoreCorruptError(
            f"the index database {db_path} is damaged or not a Sightline database ({exc.orig}). "
            f"Move it away and re-index with `sightline index`."
        ) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def _corruption_names_the_file(db_path: Path):
    """Damage found after opening (a bad page deep in a table) surfaces on some later
    query; turn it into the same clear error as damage found at open, not a traceback."""

    def handle(context) -> None:
        orig = context.original_exception
        name = getattr(orig, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(orig):
            raise StoreCorruptError(
                f"the index database {db_path} is damaged ({orig}). `sightline repair` says what is "
                f"wrong; if it cannot fix it, move the file away and re-index with `sightline index`."
            ) from None

    return handle


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    # WAL: readers (the server) never block the writer; NORMAL is crash-safe in WAL mode.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


class FileWriterLock:
    """One writer at a time for a SQLite index: an OS lock on ``write.lock`` in its
    folder, freed on exit or kill.  SQLite serialises writes anyway, so scopes
    (roots) are not told apart: any writer excludes every other."""

    def __init__(self, root: Path):
        self._root = root
        self._handle = None

    def acquire(self, scopes: Optional[Sequence[str]] = None) -> None:
        handle = open(self._root / "write.lock", "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise IndexLockedError(
                f"another process is writing to the index at {self._root} (an `sightline index` run?). "
                f"Wait for it to finish, then try again."
            ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
