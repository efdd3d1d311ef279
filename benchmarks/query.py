"""Query latency in process at several index sizes, and throughput under
concurrent clients.

    python benchmarks/query.py [--sizes 10000 100000 1000000] [--queries 300] [--clients 1 4 16]

Uses the harness's random ViT-B-32 checkpoint for the text tower (compute is
the same as with trained weights) and inserts synthetic clustered vectors to
reach each size.  Every query text is distinct, so the embedding cache never
helps; the cached figure is measured separately.  The HTTP figures come from
benchmarks/http_latency.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_checkpoint, percentiles, require, table  # noqa: E402

WORDS = ("dog cat beach mountain city night red blue green car bicycle person child tree river snow sunset "
         "boat food table window street market bird flower house bridge train rain forest lake").split()


def queries(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a photo of a {' '.join(rng.choice(WORDS, 3))} {i}" for i in range(n)]


def fill_store(folder: Path, encoder, n: int):
    from sightline.search.store import ModelInfo, Store
    from sightline.search.store_records import FileRecord

    store = Store.open(folder, create=True)
    store.bind_model(ModelInfo(encoder.model_id, encoder.dim, encoder.name, encoder.pretrained))
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(2000, encoder.dim)).astype(np.float32)
    for start in range(0, n, 50_000):
        m = min(50_000, n - start)
        x = centres[rng.integers(0, 2000, m)] + rng.normal(scale=0.05, size=(m, encoder.dim)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        store.add_files([FileRecord(f"/synthetic/{start + i:08d}.jpg", 1, 1, f"{start + i:064x}", 640, 480,
                                    None, None, "JPEG", x[i]) for i in range(m)])
    store.save()
    return Store.open(folder)


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def throughput(engine, texts: list[str], clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(slot):
        i = slot
        while time.perf_counter() < stop:
            engine.search_text(texts[i % len(texts)] + f" c{slot}", k=20)
            done[slot] += 1
            i += clients

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args()
    from sightline.search.engine import SearchEngine
    from sightline.search.models import ModelSpec, load_encoder

    pretrained = str(require(Path(args.pretrained) if args.pretrained else default_checkpoint(), "checkpoint"))
    encoder = load_encoder(ModelSpec(args.model, pretrained), device="cpu")
    texts = queries(args.queries)
    encode_ms = timed(lambda t: encoder.encode_texts([t]), texts[:100])
    rows, tp_rows = [], []
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            engine = SearchEngine(fill_store(Path(tmp), encoder, size), encoder)
            engine.store.vectors("files")
            print(f"{size:,}: store filled in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            vecs = encoder.encode_texts(texts[:100])
            search_ms = timed(lambda v: engine.search_vector(v, k=20), vecs)
            full_ms = timed(lambda t: engine.search_text(t, k=20), texts)
            cached_ms = timed(lambda t: engine.search_text(t, k=20), texts[:100])
            plan = engine.store.vectors("files").plan
            for label, samples in [("text query (encode + search + rows)", full_ms),
                                   ("search + rows only", search_ms), ("repeated query (cached)", cached_ms)]:
                p = percentiles(samples)
                rows.append([f"{size:,}", plan.factory, label, f"{p['p50']:.1f}", f"{p['p90']:.1f}", f"{p['p99']:.1f}"])
            for clients in args.clients:
                tp_rows.append([f"{size:,}", clients, f"{throughput(engine, texts, clients, args.seconds):.1f}"])
            engine.close()
    p = percentiles(encode_ms)
    print(f"in-process, {args.model} / {Path(pretrained).name}, {os.cpu_count()} CPUs, k=20; "
          f"text encoding alone p50 {p['p50']:.1f} ms (p90 {p['p90']:.1f})")
    print(table(["images", "index", "what", "p50 ms", "p90 ms", "p99 ms"], rows))
    print(table(["images", "concurrent clients", "queries/s"], tp_rows))


if __name__ == "__main__":
    main()
