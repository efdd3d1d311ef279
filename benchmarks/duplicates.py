"""How long finding duplicates takes at 10k and 100k images (synthetic vectors).

    python benchmarks/duplicates.py [--sizes 10000,100000] [--runs 3] [--dim 512]

Each size gets a real index (SQLite + the store) filled with clustered 512-d
unit vectors (like photos: groups of similar ones), of which 5 % have a near
copy (cosine ~0.99-0.999) and 1 % an exact copy (the same content hash).
``find_duplicates`` is timed end to end (reading the embeddings from SQLite,
the range search, the grouping), median of ``--runs``, next to the baseline
measured in the same invocation: the exact pairs by blocked brute force (numpy
matrix products over every pair).  Above 20,000 contents an IVF index answers
the range search; its pair recall against the exact pairs is reported.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import spread, table  # noqa: E402

THRESHOLD = 0.99


def synthetic(n: int, dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(1, n // 100), dim))
    base = centres[rng.integers(0, len(centres), n)] + rng.normal(size=(n, dim)) * 1.2
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    near = rng.choice(n, n // 20, replace=False)
    copies = base[near] + rng.normal(size=(len(near), dim)) * rng.uniform(0.0015, 0.004, (len(near), 1))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    exact = rng.choice(n, n // 100, replace=False)
    return base.astype(np.float32), copies.astype(np.float32), exact


def fill(index_dir: Path, n: int, dim: int):
    from sightline.search.store import ModelInfo, Store
    from sightline.search.store_records import FileRecord

    base, copies, exact = synthetic(n, dim)
    records = [FileRecord(f"/lib/{i // 1000:03d}/img{i:06d}.jpg", 1000, i, f"{i:064x}", 640, 480, None, None, "JPEG", v)
               for i, v in enumerate(base)]
    records += [FileRecord(f"/lib/near/n{k:06d}.jpg", 900, k, f"{10**9 + k:064x}", 320, 240, None, None, "JPEG", v)
                for k, v in enumerate(copies)]
    records += [FileRecord(f"/backup/img{i:06d}.jpg", 1000, i, f"{i:064x}", 640, 480, None, None, "JPEG", base[i])
                for i in map(int, exact)]
    with Store.open(index_dir, create=True) as store:
        store.bind_model(ModelInfo("synthetic/bench", dim, "synthetic", "bench"))
        for start in range(0, len(records), 5000):
            store.add_files(records[start:start + 5000])
        store.save()
    contents = np.concatenate([base, copies])
    return len(records), contents


def brute_force_pairs(x: np.ndarray, threshold: float, block: int = 1024) -> set:
    pairs = set()
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x.T
        rows, cols = np.nonzero(sims >= threshold)
        pairs.update((start + int(r), int(c)) for r, c in zip(rows, cols) if start + r < c)
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    from sightline.search.duplicates import find_duplicates, near_pairs
    from sightline.search.store import Store

    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            files, contents = fill(Path(tmp) / "index", n, args.dim)
            ours, base = [], []
            groups = None
            for _ in range(args.runs):  # alternate ours and the baseline
                with Store.open(Path(tmp) / "index") as store:
                    started = time.perf_counter()
                    groups = find_duplicates(store, THRESHOLD)
                    ours.append(time.perf_counter() - started)
                started = time.perf_counter()
                exact = brute_force_pairs(contents, THRESHOLD)
                base.append(time.perf_counter() - started)
            found = {(int(i), int(j)) for i, j, _ in near_pairs(contents, THRESHOLD)}
            recall = len(found & exact) / len(exact) if exact else 1.0
            rows.append([f"{n:,} (+{files - n:,} copies)", spread(ours), spread(base),
                         f"{np.median(base) / np.median(ours):.1f}x", len(groups), f"{recall:.4f}"])
            print(f"n={n}: {len(groups)} groups, {len(exact)} exact pairs, recall {recall:.4f}", file=sys.stderr)
    print(table(["images", "find_duplicates s", "brute-force pairs s", "speed-up", "groups", "pair recall"], rows))


if __name__ == "__main__":
    main()
