"""Approximate vs exact search at scale: build time, memory, latency, recall@10.

    python benchmarks/ann.py [--n 1000000] [--dim 512] [--queries 300] [--hnsw-max 200000]
                             [--clusters 2000] [--noise 0.05]

Vectors are synthetic but structured like embeddings (a mixture of Gaussian
clusters on the unit sphere; uniform random vectors have no neighbourhood
structure and would understate every approximate index).  With the default
2,000 clusters of ~500 vectors a query's 10 neighbours share its cluster,
which is easy; ``--clusters 100000`` (~10 per cluster) puts most of them in
other clusters and is the harder test.
Queries are fresh draws from the same mixture.  Latency is per single query
(the server's case), on this machine's threads.  The "auto" row is the index
Sightline picks for this size (search/vectors.py: choose_factory).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentiles, table  # noqa: E402
from sightline.search.vectors import IndexPlan, VectorIndex, choose_factory  # noqa: E402


def clustered(n: int, dim: int, seed: int, centres: np.ndarray, noise: float = 0.05) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, len(centres), m)] + rng.normal(scale=noise, size=(m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def exact_top10(data: np.ndarray, queries: np.ndarray) -> np.ndarray:
    out = []
    for q in queries:
        scores = data @ q
        top = np.argpartition(-scores, 10)[:10]
        out.append(top[np.argsort(-scores[top])])
    return np.array(out)


def measure(plan: IndexPlan, data, ids, queries, truth) -> list:
    start = time.perf_counter()
    index = VectorIndex.build(data.shape[1], plan, ids, data)
    build = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "x.faiss")
        size = (Path(tmp) / "x.faiss").stat().st_size
    index.search(queries[:5], 10)  # warm-up
    times, recalls = [], []
    for q, t in zip(queries, truth):
        t0 = time.perf_counter()
        _, found = index.search(q[None, :], 10)
        times.append((time.perf_counter() - t0) * 1000)
        recalls.append(len(set(found[0].tolist()) & set(ids[t].tolist())) / 10)
    p = percentiles(times)
    return [plan.factory + (f" nprobe={plan.nprobe}" if plan.nprobe else "") + (f" efSearch={plan.ef_search}" if plan.ef_search else ""),
            f"{build:.1f}", f"{size / len(data):.0f}", f"{p['p50']:.3f}", f"{p['p99']:.3f}", f"{np.mean(recalls):.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--hnsw-max", type=int, default=200_000, help="skip HNSW above this size (slow to build)")
    parser.add_argument("--clusters", type=int, default=2000, help="mixture components (more: harder)")
    parser.add_argument("--noise", type=float, default=0.05, help="per-dimension spread around each centre")
    parser.add_argument("--only", nargs="*", help="factory strings to run instead of the default set")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.clusters, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = clustered(args.n, args.dim, 1, centres, args.noise)
    queries = clustered(args.queries, args.dim, 2, centres, args.noise)
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    truth = exact_top10(data, queries)
    auto = choose_factory(args.n, args.dim)
    nlist = int(2 ** round(np.log2(2 * np.sqrt(args.n))))
    plans = [IndexPlan("Flat"), auto]
    plans += [IndexPlan(f"IVF{nlist},Flat", nprobe=p) for p in (16, 32, 64) if p != auto.nprobe]
    plans += [IndexPlan(f"IVF{nlist},PQ{args.dim // 4}x8", nprobe=64)]
    if args.n <= args.hnsw_max:
        plans += [IndexPlan("HNSW32", ef_search=64), IndexPlan("HNSW32", ef_search=128)]
    if args.only:
        plans = [IndexPlan(f, nprobe=64, ef_search=128) for f in args.only]
    rows = []
    for plan in plans:
        rows.append(measure(plan, data, ids, queries, truth))
        print(" | ".join(rows[-1]), file=sys.stderr)
    print(f"{args.n:,} x {args.dim}-d vectors in {args.clusters:,} clusters (noise {args.noise}), {args.queries} single queries, k=10, "
          f"{os.cpu_count()} CPUs; auto choice: {auto.factory} nprobe={auto.nprobe}")
    print(table(["index", "build s", "bytes/vector", "p50 ms", "p99 ms", "recall@10"], rows))


if __name__ == "__main__":
    main()
