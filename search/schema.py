"""The metadata schema and its numbered migrations.

The store owns the database; this module only says what it looks like.  Each
migration moves the schema up by one version and is applied in order inside
one transaction, so a database is always at exactly one version.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

#: key/value settings: schema_version, model_id, dim, model spec, generation...
meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

#: One row per indexed file.  ``id`` is also the vector's FAISS id and is
#: never reused (AUTOINCREMENT), so ids held by clients stay unambiguous.
#: ``path`` holds the file system's own bytes (``os.fsencode``), so names that
#: are not valid UTF-8 round-trip exactly.
files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, nullable=False, unique=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("taken_at", String, nullable=True),
    Column("orientation", Integer, nullable=True),
    Column("format", String, nullable=True),
    Column("indexed_at", Float, nullable=False),
    # float32 little-endian, L2-normalised; the source of truth for FAISS.
    Column("embedding", LargeBinary, nullable=False),
    Index("ix_files_sha256", "sha256"),
    sqlite_autoincrement=True,
)

#: Captions, attached to an image or free-standing; embedded for image->text.
captions = Table(
    "captions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("file_id", Integer, ForeignKey("files.id", ondelete="CASCADE"), nullable=True),
    Column("text", Text, nullable=False),
    Column("source", String, nullable=True),
    Column("embedding", LargeBinary, nullable=False),
    Index("ix_captions_file_id", "file_id"),
    sqlite_autoincrement=True,
)

#: Files that could not be indexed, with why; retried only when they change.
failures = Table(
    "failures",
    metadata,
    Column("path", LargeBinary, primary_key=True),
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", Float, nullable=False),
)

#: One row per indexing run, for ``status``.
runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("root", LargeBinary, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("indexed", Integer, nullable=False, default=0),
    Column("reused", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("removed", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
)


#: The folders (or single files) an index covers: ``sightline index PATH...``
#: remembers each, with its exclusion globs and what it held when last
#: indexed, so that a missing, emptied or swapped disk is never swept.
roots = Table(
    "roots",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", LargeBinary, nullable=False, unique=True),
    #: JSON list of glob patterns matched against full paths (``--exclude``).
    Column("excludes", Text, nullable=False, default="[]"),
    #: ``st_dev`` of the root when it was last indexed (NULL: not yet known).
    Column("device", Integer, nullable=True),
    #: Photos under the root after its last run (0 with ``indexed_at`` NULL: never indexed).
    Column("files", Integer, nullable=False, default=0),
    Column("indexed_at", Float, nullable=True),
    Column("added_at", Float, nullable=False),
)


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)


def _v2_library_roots(conn: Connection) -> None:
    """The ``roots`` table, filled with the folders earlier runs indexed (outermost
    ones only), so an index made before roots existed keeps its safe sweeping."""
    roots.create(conn, checkfirst=True)  # a new database got it from _v1's create_all
    if conn.execute(roots.select().limit(1)).first() is not None:
        return
    seen = sorted({row[0] for row in conn.execute(text("SELECT DISTINCT root FROM runs"))}, key=len)
    outer: list[bytes] = []
    for path in seen:
        if not any(path == o or path.startswith(o.rstrip(b"/") + b"/") for o in outer):
            outer.append(path)
    for path in outer:
        prefix = path.rstrip(b"/") + b"/"
        count = conn.execute(text("SELECT count(*) FROM files WHERE path = :p OR (path >= :lo AND path < :hi)"),
                             {"p": path, "lo": prefix, "hi": prefix[:-1] + b"0"}).scalar()
        if count:
            conn.execute(roots.insert().values(path=path, excludes="[]", device=None, files=count,
                                               indexed_at=None, added_at=0.0))


#: Migration N takes a database from version N-1 to version N.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2_library_roots]
SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    has_meta = conn.execute(
        text("SELECT name FROM sqlite_master WHERE type='table' AND name='meta'")
    ).first()
    if not has_meta:
        return 0
    row = conn.execute(text("SELECT value FROM meta WHERE key='schema_version'")).first()
    return int(row[0]) if row else 0


def migrate(conn: Connection) -> int:
    """Apply pending migrations; returns the resulting version."""
    version = current_version(conn)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[number - 1](conn)
        conn.execute(
            text("INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', :v)"),
            {"v": str(number)},
        )
    return max(version, SCHEMA_VERSION)
