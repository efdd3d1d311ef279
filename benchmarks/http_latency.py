"""Warm latency of a text query through HTTP, end to end.

Builds an index (real generated photos through the indexing job, topped up
with synthetic vectors to reach ``--images``), starts the real server
(`sightline serve`, uvicorn) in a subprocess on a free port, waits until it
is ready, warms it up, then sends ``--queries`` text queries one after
another over a keep-alive connection and prints p50/p90/p99.

    python benchmarks/http_latency.py --images 10000            # tiny open_clip model (default)
    python benchmarks/http_latency.py --images 10000 --model ViT-B-32 --pretrained FILE_OR_TAG
    python benchmarks/http_latency.py --index DIR                # an existing index, as it is

Every query text is distinct, so each one runs the text encoder and the
vector search (the server's query-embedding cache never hits); a second,
shorter pass repeats one query to show the cached case.  Not part of the
test run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "grey", "pink"]
THINGS = ["dog", "cat", "car", "bicycle", "house", "tree", "boat", "mountain", "flower", "person"]
PLACES = ["on a beach", "in the snow", "at night", "in a city", "in a forest", "by a lake"]


def queries(n: int) -> list[str]:
    combos = [f"a {c} {t} {p}" for c, t, p in itertools.product(COLOURS, THINGS, PLACES)]
    if n > len(combos):
        combos += [f"{q} #{i}" for i, q in enumerate(combos * (n // len(combos)))]
    return combos[:n]


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def summary(samples: list[float]) -> dict:
    return {"n": len(samples), "p50": pct(samples, 50), "p90": pct(samples, 90), "p99": pct(samples, 99),
            "mean": statistics.fmean(samples), "max": max(samples)}


# ---------------------------------------------------------------- the index
def tiny_model(workdir: Path) -> tuple[str, str]:
    from tests.helpers import TINY_CONFIG, make_tiny_checkpoint

    return str(TINY_CONFIG), str(make_tiny_checkpoint(workdir / "tiny.pt"))


def build_index(index_dir: Path, workdir: Path, model: str, pretrained: str, images: int, real: int,
                export: bool = True) -> None:
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.models import ModelSpec, load_encoder
    from sightline.search.store import Store
    from tests.helpers import write_photos

    encoder = load_encoder(ModelSpec(model, pretrained), device="cpu")
    real = min(real, images)
    photos = workdir / "photos"
    write_photos(photos, real, size=(320, 240))
    started = time.perf_counter()
    with Store.open(index_dir, create=True) as store:
        IndexJob(store, encoder, batch_size=32, workers=0, progress=False).run(str(photos))
        add_synthetic(store, encoder.dim, images - real)
        store.save()
    if export:  # as `sightline index` does: the server answers from the ONNX export
        from sightline.search.onnx_export import export_model

        export_model(encoder, index_dir)
    print(f"index: {real} photos + {images - real} synthetic vectors in {time.perf_counter() - started:.1f} s",
          file=sys.stderr)


def add_synthetic(store, dim: int, count: int, batch: int = 5000) -> None:
    """Random unit vectors with made-up paths: as costly to search as real ones."""
    import numpy as np

    from sightline.search.store_records import FileRecord

    rng = np.random.default_rng(0)
    for start in range(0, count, batch):
        n = min(batch, count - start)
        vectors = rng.normal(size=(n, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        store.add_files([
            FileRecord(f"/synthetic/{start + i:08d}.jpg", 100_000, 0,
                       hashlib.sha256(str(start + i).encode()).hexdigest(), 640, 480, None, None, "JPEG", v)
            for i, v in enumerate(vectors)
        ])


# ------------------------------------------------------------- measurement
def measure(base: str, texts: list[str], k: int) -> tuple[list[float], list[float]]:
    import httpx

    wall, server = [], []
    with httpx.Client(base_url=base, timeout=60) as client:
        for text in texts:
            started = time.perf_counter()
            response = client.get("/api/search/text", params={"q": text, "k": k})
            wall.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
            body = response.json()
            if len(body["results"]) != min(k, body["index_images"]):
                raise SystemExit(f"unexpected answer for {text!r}: {len(body['results'])} results")
            server.append(body["took_ms"])
    return wall, server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="Index size to build (default 10000).")
    parser.add_argument("--real", type=int, default=64, help="How many of them are real photos (default 64).")
    parser.add_argument("--index", type=Path, help="Use this existing index instead of building one.")
    parser.add_argument("--model", help="Model name or config JSON (default: the tiny test model).")
    parser.add_argument("--pretrained", help="Weights: tag or file (default: random tiny weights).")
    parser.add_argument("--queries", type=int, default=300, help="Measured queries (at least 200).")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("-k", type=int, default=20, help="Results per query (default 20).")
    parser.add_argument("--threads", type=int, default=4, help="Server worker threads.")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="Server's torch threads per inference (default: the server's own default).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args()
    if args.queries < 200:
        parser.error("--queries must be at least 200")

    from tests.web.server_process import running_server

    with tempfile.TemporaryDirectory(prefix="sightline-http-bench-") as tmp:
        workdir = Path(tmp)
        index_dir = args.index
        if index_dir is None:
            model, pretrained = (args.model, args.pretrained) if (args.model or args.pretrained) else tiny_model(workdir)
            index_dir = workdir / "index"
            build_index(index_dir, workdir, model, pretrained, args.images, args.real)
        texts = queries(args.warmup + args.queries)
        server_args = ["--threads", str(args.threads), "--refresh", "0"]
        if args.torch_threads is not None:
            server_args += ["--torch-threads", str(args.torch_threads)]
        launched = time.perf_counter()
        with running_server(index_dir, workdir / "server.log", *server_args) as base:
            import httpx

            ready_s = time.perf_counter() - launched  # process start to /api/health answering, model loaded

            status = httpx.get(base + "/api/status").json()
            # The first query after start (a text never seen): the server preloads, so no cold path is left.
            first_wall, first_server = measure(base, ["the very first query after start"] + texts[:args.warmup], args.k)
            wall, server = measure(base, texts[args.warmup:], args.k)
            cached_wall, cached_server = measure(base, [texts[0]] * 100, args.k)
    report = {"images": status["images"], "model": status["model"], "dim": status["dim"], "k": args.k,
              "ready_s": round(ready_s, 2), "first_http_ms": first_wall[0], "first_server_ms": first_server[0],
              "http_ms": summary(wall), "server_ms": summary(server), "cached_http_ms": summary(cached_wall),
              # Cached: everything the server does except the encoder (its overhead above the encoder).
              "cached_server_ms": summary(cached_server)}
    print(f"index: {status['images']} images, model {status['model']} ({status['dim']}-d), k={args.k}; "
          f"server ready (model loaded) {ready_s:.2f} s after start")
    for label, key in (("HTTP round trip, distinct queries", "http_ms"), ("  of which server-side", "server_ms"),
                       ("HTTP round trip, cached embedding", "cached_http_ms"),
                       ("  of which server-side (no encoder)", "cached_server_ms")):
        s = report[key]
        print(f"{label:36s} n={s['n']:4d}  p50 {s['p50']:7.2f} ms  p90 {s['p90']:7.2f} ms  "
              f"p99 {s['p99']:7.2f} ms  mean {s['mean']:7.2f} ms  max {s['max']:7.2f} ms")
    print(f"first query after start: HTTP {first_wall[0]:.2f} ms (server {first_server[0]:.2f} ms) = "
          f"{first_wall[0] / report['http_ms']['p50']:.2f}x the warm p50")
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
