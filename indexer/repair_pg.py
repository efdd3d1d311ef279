"""Checking and repairing an index kept in PostgreSQL (``sightline repair --db URL``).

There are no cache files to rebuild: the database holds the vectors and their
HNSW indexes.  What can go wrong is a stored embedding that is not a unit
vector of the model's width (repair drops the row; the next ``sightline
index`` embeds the file again), a vector index that is missing or left
invalid by an interrupted build (repair rebuilds it), and failure records of
files that are indexed (repair forgets them).  Damage to the server's own
files is PostgreSQL's to report and mend.
"""

from __future__ import annotations

from sqlalchemy import text

from sightline.search.store import Kind, Store
from sightline.search.store_pg import TABLES, index_name
from sightline.search.store_records import path_str

NORM_TOLERANCE = 1e-3


def verify_pg(store: Store, report, damaged: str, fatal: str) -> None:
    """Fill ``report`` (an :class:`~sightline.indexer.repair.Report`) for a PostgreSQL store."""
    where = store.location
    with store.engine.connect() as conn:
        report.images, report.captions = (conn.execute(text(f"SELECT count(*) FROM {TABLES[k].name}")).scalar_one()
                                          for k in Kind)
        info = store.model_info()
        if info is None:
            if report.images or report.captions:
                report.add(where, fatal, f"{where} holds vectors but records no model")
            return
        for kind, table in TABLES.items():
            bad = [r[0] for r in conn.execute(text(
                f"SELECT id FROM {table.name} WHERE vector_dims(embedding) <> :dim "
                f"OR abs(vector_norm(embedding) - 1) > :tol"), {"dim": info.dim, "tol": NORM_TOLERANCE})]
            report.bad_ids[kind].extend(bad)
            if bad:
                what = "image(s)" if kind == Kind.FILES else "caption(s)"
                report.add(table.name, damaged, f"{len(bad)} {what} with a damaged stored embedding (wrong width "
                                                f"or not unit length), e.g. id {bad[0]}")
            valid = conn.execute(text("SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                                      "WHERE c.relname = :name"), {"name": index_name(kind)}).scalar()
            if valid is not True:
                state = "is missing" if valid is None else "is invalid (an interrupted build?)"
                report.add(index_name(kind), damaged, f"the vector index {index_name(kind)} {state}")
        report.failed_but_indexed = [path_str(r[0]) for r in conn.execute(text(
            "SELECT path FROM failures WHERE path IN (SELECT path FROM files)"))]
        if report.failed_but_indexed:
            report.add("failures", damaged, f"{len(report.failed_but_indexed)} indexed file(s) also listed as failed")


def rebuild_vector_indexes(store: Store, report) -> list[str]:
    """Rebuild the vector indexes ``report`` found missing or invalid."""
    done = []
    info = store.model_info()
    for kind in Kind:
        name = index_name(kind)
        if any(p.where == name for p in report.problems):
            with store.engine.begin() as conn:
                conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
                store.vector_backend.bind(conn, info.dim)
            done.append(f"rebuilt the vector index {name}")
    return done
