"""The PostgreSQL + pgvector backend of the store.

Metadata lives in the same SQLAlchemy schema as on SQLite (the same numbered
migrations); embeddings are pgvector ``vector`` columns, typed to the model's
width when the index records its model, with an HNSW index per kind.  Search
runs in the database: no cache to load, to keep in step or to save, so any
number of servers and indexers can share one database.

- :func:`open_postgres` connects, makes sure the ``vector`` extension exists
  and migrates the schema (serialised across processes by an advisory lock);
- :class:`PgVectors` is the store's vector component for PostgreSQL;
- :class:`PgWriterLock` coordinates writers through advisory locks: a writer
  of one root excludes other writers of that root, not writers of other roots.

HNSW parameters: ``m`` (graph degree) and ``ef_construction`` (build-time
candidate list) are set when the index is created (:data:`HNSW_M`,
:data:`HNSW_EF_CONSTRUCTION`); ``hnsw.ef_search`` is set per query to at least
twice k.  The index is built over ``halfvec`` (16-bit) copies of the vectors —
half the memory, within cosine 0.9999 of the full vectors (measured in
``benchmarks/pgvector.py``) — while the table keeps full 32-bit vectors and
every score is computed from them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Optional, Sequence

import numpy as np
from sqlalchemy import Float, bindparam, cast, create_engine, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from sightline.search import schema
from sightline.search.errors import DatabaseUnavailableError, IndexLockedError, IndexNotFoundError
from sightline.search.store_records import Kind

log = logging.getLogger(__name__)

TABLES = {Kind.FILES: schema.files, Kind.CAPTIONS: schema.captions}
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: Filters matching at most this many rows are searched exactly (a scan of their
#: vectors costs less than walking the graph past all the rows that fail them).
EXACT_FILTER_LIMIT = 20_000
#: Advisory-lock namespace (the first key of pg_advisory_lock's two-int form).
_LOCK_SPACE = 0x51647  # "SiGhT"
_GLOBAL_SCOPE = "*"


def is_postgres_url(location: str) -> bool:
    return str(location).startswith(("postgresql:", "postgresql+", "postgres:"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given, minus anything after '@' credentials
        return url.split("@")[-1]


def open_postgres(url: str, create: bool = False) -> Engine:
    """An engine over the database at ``url``, with pgvector and the schema in place."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 is the driver we ship
    engine = create_engine(parsed, pool_pre_ping=True)
    try:
        with engine.begin() as conn:
            schema.lock_for_migration(conn)
            _ensure_vector_extension(conn, url)
            version = schema.current_version(conn)
            if version == 0 and not create:
                raise IndexNotFoundError(
                    f"the database {redact(url)} holds no Sightline index yet. Create one with "
                    f"`sightline index PHOTO_FOLDER --db URL`.")
            schema.migrate(conn)
    except (IndexNotFoundError, DatabaseUnavailableError):
        engine.dispose()
        raise
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        raise DatabaseUnavailableError(
            f"cannot use the PostgreSQL database {redact(url)}: {_first_line(exc)}. Check that the server "
            f"runs, the URL (user, host, database) and the user's rights.") from None
    return engine


def _ensure_vector_extension(conn, url: str) -> None:
    if conn.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")).first():
        return
    try:
        with conn.begin_nested():
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        raise DatabaseUnavailableError(
            f"the database {redact(url)} lacks the pgvector extension and this user cannot create it "
            f"({_first_line(exc)}). As a superuser, run `CREATE EXTENSION vector;` in that database "
            f"(pgvector 0.8 or newer: https://github.com/pgvector/pgvector#installation).") from None


def _first_line(exc: Exception) -> str:
    orig = getattr(exc, "orig", exc)
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__


class PgVectors:
    """Vector search for PostgreSQL: the database is the index (see the module docstring)."""

    def __init__(self, engine: Engine, dim):
        self._engine = engine
        self._dim = dim  # raises when the index holds no vectors yet

    # The store calls these after every committed change; the database already has it.
    def apply(self, kind: Kind, remove: Sequence[int] = (), ids: Sequence[int] = (), vectors=None) -> None:
        pass

    def refresh(self) -> None:
        pass

    def save(self, has_vectors: bool) -> None:
        pass

    def bind(self, conn, dim: int) -> None:
        """Fix the vector columns' width and build their HNSW indexes (the index's first model)."""
        for kind, table in TABLES.items():
            conn.execute(text(f"ALTER TABLE {table.name} ALTER COLUMN embedding TYPE vector({int(dim)})"))
            conn.execute(text(
                f"CREATE INDEX IF NOT EXISTS {index_name(kind)} ON {table.name} USING hnsw "
                f"((embedding::halfvec({int(dim)})) halfvec_ip_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})"))

    def ids(self, kind: Kind) -> np.ndarray:
        table = TABLES[kind]
        with self._engine.connect() as conn:
            return np.fromiter((r[0] for r in conn.execute(select(table.c.id))), np.int64)

    def search(self, kind: Kind, query: np.ndarray, k: int, where=None) -> list[tuple[int, float]]:
        """Top-k (id, score) by inner product, among the rows matching ``where`` (all if None).

        A filter never truncates the result: few matching rows are searched
        exactly; many go through the HNSW index with pgvector's iterative scan,
        and should that still come back short, exactly.
        """
        table = TABLES[kind]
        vector = np.ascontiguousarray(query, np.float32).reshape(-1)
        with self._engine.begin() as conn:
            if where is not None:
                matching = conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()
                if matching <= EXACT_FILTER_LIMIT:
                    return self._exact(conn, table, vector, k, where)
            found = self._approximate(conn, table, vector, k, where)
            if where is not None and len(found) < min(k, matching):
                log.info("the HNSW scan found %d of %d matching rows; searching them exactly", len(found), k)
                return self._exact(conn, table, vector, k, where)
        return found

    def _approximate(self, conn, table, vector: np.ndarray, k: int, where) -> list[tuple[int, float]]:
        conn.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * int(k)))}"))
        if where is not None:
            conn.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        # Scores are exact (32-bit); relaxed order may swap near-equal neighbours: re-sort.
        rows = conn.execute(approximate_query(table, vector, k, where))
        return sorted(((int(i), float(s)) for i, s in rows), key=lambda r: -r[1])

    def _exact(self, conn, table, vector: np.ndarray, k: int, where) -> list[tuple[int, float]]:
        return [(int(i), float(s)) for i, s in conn.execute(exact_query(table, vector, k, where))]


def approximate_query(table, vector: np.ndarray, k: int, where=None):
    """Nearest rows through the HNSW index.  ORDER BY must be exactly the indexed
    expression (the 16-bit copies' distance): ordering by the 32-bit score instead,
    though it ranks the same, makes PostgreSQL score and sort every row."""
    query = select(table.c.id, _score(table, vector)).order_by(_half_distance(table, vector)).limit(int(k))
    return query if where is None else query.where(where)


def exact_query(table, vector: np.ndarray, k: int, where=None):
    """Nearest rows by their exact scores, without the index (for small filtered sets)."""
    score = _score(table, vector)
    query = select(table.c.id, score).order_by(score.desc()).limit(int(k))
    return query if where is None else query.where(where)


def _query_vector(vector: np.ndarray):
    from pgvector.sqlalchemy import VECTOR

    return bindparam("q", vector, type_=VECTOR(vector.shape[0]))


def _score(table, vector: np.ndarray):
    """The exact inner product (pgvector's ``<#>`` is its negative)."""
    return (-table.c.embedding.op("<#>", return_type=Float)(_query_vector(vector))).label("score")


def _half_distance(table, vector: np.ndarray):
    """The expression the HNSW index orders by (over 16-bit copies of the vectors)."""
    from pgvector.sqlalchemy import HALFVEC

    half = HALFVEC(vector.shape[0])
    return cast(table.c.embedding, half).op("<#>", return_type=Float)(cast(_query_vector(vector), half))


def index_name(kind: Kind) -> str:
    """The HNSW index of ``kind``'s vectors."""
    return f"ix_{TABLES[kind].name}_embedding_hnsw"


class PgWriterLock:
    """Writers coordinate through advisory locks held on a connection of their own.

    Every writer holds the index-wide key shared and its scope's key
    exclusively, so writers of different roots run at once, two writers of one
    root do not, and an index-wide writer (scope None: repair, removing a root)
    excludes everyone.  PostgreSQL frees the locks when the connection ends,
    also when the process is killed.
    """

    def __init__(self, engine: Engine, location: str):
        self._engine = engine
        self._location = location
        self._conn = None
        self._lock = threading.Lock()

    def acquire(self, scopes: Optional[Sequence[str]] = None) -> None:
        conn = self._engine.connect()
        try:
            keys = [(_key(_GLOBAL_SCOPE), scopes is not None)] + [(_key(s), False) for s in sorted(set(scopes or ()))]
            for key, shared in keys:
                function = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
                if not conn.execute(text(f"SELECT {function}(:space, :key)"), {"space": _LOCK_SPACE, "key": key}).scalar():
                    what = ", ".join(scopes) if scopes and not shared else "the index"
                    raise IndexLockedError(
                        f"another process is writing to {what} in {self._location} (an `sightline index` run?). "
                        f"Wait for it to finish, then try again.")
        except BaseException:
            conn.close()  # closing the session frees whatever it took
            raise
        self._conn = conn

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock_all()"))
            finally:
                self._conn.close()
                self._conn = None


def _key(scope: str) -> int:
    """A 32-bit key for a scope (a root path); collisions only make two writers wait."""
    return int.from_bytes(hashlib.sha256(scope.encode("utf-8", "surrogateescape")).digest()[:4], "big", signed=True)
