"""The metadata schema and its numbered migrations.

The store owns the database; this module only says what it looks like.  Each
migration moves the schema up by one version and is applied in order inside
one transaction, so a database is always at exactly one version.

The same schema and migrations serve SQLite (the embedded default) and
PostgreSQL: columns use portable types (64-bit integers where values need
them, :class:`Embedding` for vectors), and :func:`upsert` stands in for
SQLite's ``INSERT OR REPLACE``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from sqlalchemy import (
    BigInteger,
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
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

#: Row ids: SQLite's INTEGER PRIMARY KEY (the rowid, AUTOINCREMENT so never
#: reused) or PostgreSQL's 64-bit identity (a sequence, never reused either).
RowId = BigInteger().with_variant(Integer, "sqlite")


class Embedding(TypeDecorator):
    """An L2-normalised float32 vector: little-endian bytes in SQLite, pgvector's
    ``vector`` in PostgreSQL (its width is fixed once the index records its model).
    Python sees ``np.ndarray`` (float32) either way."""

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            from pgvector.sqlalchemy import VECTOR

            return dialect.type_descriptor(VECTOR())
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        array = np.ascontiguousarray(value, dtype="<f4").reshape(-1)
        return array if dialect.name == "postgresql" else array.tobytes()

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if dialect.name == "postgresql":
            return np.asarray(value, dtype=np.float32)
        return np.frombuffer(value, dtype="<f4")

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
    Column("id", RowId, primary_key=True),
    Column("path", LargeBinary, nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("taken_at", String, nullable=True),
    Column("orientation", Integer, nullable=True),
    Column("format", String, nullable=True),
    Column("indexed_at", Float, nullable=False),
    # L2-normalised; the source of truth (FAISS files are caches of it).
    Column("embedding", Embedding, nullable=False),
    Index("ix_files_sha256", "sha256"),
    sqlite_autoincrement=True,
)

#: Captions, attached to an image or free-standing; embedded for image->text.
captions = Table(
    "captions",
    metadata,
    Column("id", RowId, primary_key=True),
    Column("file_id", RowId, ForeignKey("files.id", ondelete="CASCADE"), nullable=True),
    Column("text", Text, nullable=False),
    Column("source", String, nullable=True),
    Column("embedding", Embedding, nullable=False),
    Index("ix_captions_file_id", "file_id"),
    sqlite_autoincrement=True,
)

#: Files that could not be indexed, with why; retried only when they change.
failures = Table(
    "failures",
    metadata,
    Column("path", LargeBinary, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("failed_at", Float, nullable=False),
)

#: One row per indexing run, for ``status``.
runs = Table(
    "runs",
    metadata,
    Column("id", RowId, primary_key=True),
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
    if not inspect(conn).has_table("meta"):
        return 0
    value = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
    return int(value) if value else 0


def migrate(conn: Connection) -> int:
    """Apply pending migrations; returns the resulting version."""
    version = current_version(conn)
    for number in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[number - 1](conn)
        set_meta(conn, schema_version=number)
    return max(version, SCHEMA_VERSION)


def lock_for_migration(conn: Connection) -> None:
    """On a database server, serialise schema changes and the first model binding
    across processes until this transaction ends (SQLite's writes are serial anyway)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": MIGRATION_LOCK_SPACE})


#: Advisory-lock namespace of schema changes on PostgreSQL.
MIGRATION_LOCK_SPACE = 0x51647


def upsert(conn: Connection, table: Table, values: dict) -> None:
    """Insert a row, or replace the one with the same primary key (both backends)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    keys = [c.name for c in table.primary_key.columns]
    statement = insert(table).values(**values)
    others = {k: statement.excluded[k] for k in values if k not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=others) if others
                 else statement.on_conflict_do_nothing(index_elements=keys))


def set_meta(conn: Connection, **values) -> None:
    for key, value in values.items():
        upsert(conn, meta, {"key": key, "value": str(value)})
