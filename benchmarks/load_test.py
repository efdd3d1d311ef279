"""Bounded load test of the real server on loopback.

Starts `sightline serve` in a subprocess on a free port (over a generated index
with the tiny test model by default), then drives it from this process with
``--clients`` concurrent keep-alive clients: a mix of text queries (distinct
texts, so the query-embedding cache mostly misses), image uploads and "more
like this".  After a warm-up it measures for ``--duration`` seconds, or for
exactly ``--requests`` requests, while sampling the server's resident memory.

    python benchmarks/load_test.py                          # 16 clients, 60 s, tiny model
    python benchmarks/load_test.py --requests 10000          # and fail if memory grows
    python benchmarks/load_test.py --model ViT-B-32 --pretrained FILE_OR_TAG --images 20000
    python benchmarks/load_test.py --index DIR               # an existing index, as it is

Prints requests, errors, throughput, p50/p90/p99 (overall and per kind) and
the server's RSS after warm-up, at the end and at its peak.  Exits 1 on any
error, and in ``--requests`` mode when RSS grew by more than ``--tolerance-mib``
between the end of the warm-up and the end of the run.  Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.common import percentiles  # noqa: E402
from benchmarks.http_latency import build_index, queries, tiny_model  # noqa: E402

KINDS = ("text", "image", "similar")


@dataclass
class Run:
    """What the clients record; ``measuring`` is off during the warm-up."""

    measuring: bool = False
    latencies: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    errors: list[str] = field(default_factory=list)
    warmup_requests: int = 0

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.latencies.values())


@dataclass
class Workload:
    texts: list[str]
    uploads: list[bytes]
    ids: list[int]
    weights: tuple[float, float, float]


# ------------------------------------------------------------------ client
async def one_request(client, kind: str, rng: random.Random, work: Workload):
    if kind == "text":
        return await client.get("/api/search/text", params={"q": rng.choice(work.texts), "k": 20})
    if kind == "image":
        files = {"file": ("query.jpg", rng.choice(work.uploads), "image/jpeg")}
        return await client.post("/api/search/image", params={"k": 20}, files=files)
    return await client.get(f"/api/images/{rng.choice(work.ids)}/similar", params={"k": 20})


async def client_loop(base: str, seed: int, work: Workload, run: Run, stop: asyncio.Event, budget: list[int]):
    import httpx

    rng = random.Random(seed)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=1)) as client:
        while not stop.is_set():
            measured = run.measuring  # a request counts where it started: warm-up or measurement
            if measured:
                if budget[0] <= 0:
                    break
                budget[0] -= 1
            kind = rng.choices(KINDS, weights=work.weights)[0]
            started = time.perf_counter()
            try:
                response = await one_request(client, kind, rng, work)
                problem = None if response.status_code == 200 else \
                    f"{kind}: HTTP {response.status_code} {response.text[:200]}"
            except Exception as exc:  # refused, reset, timed out: all errors
                problem = f"{kind}: {type(exc).__name__}: {exc}"
            took = (time.perf_counter() - started) * 1000
            if not measured:
                run.warmup_requests += 1
            elif problem:
                run.errors.append(problem)
            else:
                run.latencies[kind].append(took)


async def sample_memory(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event, every: float = 0.5):
    from tests.web.server_process import rss_bytes

    while not stop.is_set():
        samples.append((time.monotonic(), rss_bytes(pid)))
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def drive(base: str, pid: int, work: Workload, args) -> tuple[Run, list, float, int]:
    """Warm up, then measure; returns (run, RSS samples, measured seconds, RSS after warm-up)."""
    run, stop, samples = Run(), asyncio.Event(), []
    budget = [args.requests if args.requests else 1 << 62]
    clients = [asyncio.create_task(client_loop(base, i, work, run, stop, budget)) for i in range(args.clients)]
    sampler = asyncio.create_task(sample_memory(pid, samples, stop))
    await asyncio.sleep(args.warmup)
    from tests.web.server_process import rss_bytes

    after_warmup = rss_bytes(pid)
    run.measuring, started = True, time.monotonic()
    if args.requests:
        await asyncio.gather(*clients)  # each client stops when the shared budget is spent
    else:
        await asyncio.sleep(args.duration)
    measured = time.monotonic() - started
    stop.set()
    await asyncio.gather(*clients, sampler)
    samples.append((time.monotonic(), rss_bytes(pid)))
    return run, [s for s in samples if s[0] >= started], measured, after_warmup


# ----------------------------------------------------------------- set-up
def workload(base: str, seed: int = 0) -> Workload:
    """Texts, upload payloads (thumbnails of indexed photos, so any index works) and ids."""
    import httpx

    with httpx.Client(base_url=base, timeout=120) as client:
        ids, uploads = [], []
        for offset in range(0, 1_000_000, 1000):
            page = client.get("/api/search/text", params={"q": "a photo", "k": 1000, "offset": offset}).json()
            ids += [hit["id"] for hit in page["results"]]
            uploads += photos_of(client, page["results"], 16 - len(uploads))
            if len(uploads) >= 16 or page["next_offset"] is None:
                break
    if not uploads:
        raise SystemExit("no indexed photo could be read back to use as an upload")
    texts = queries(1000)
    random.Random(seed).shuffle(texts)
    return Workload(texts, uploads, ids[:1000], (0.6, 0.2, 0.2))


def photos_of(client, hits: list[dict], wanted: int) -> list[bytes]:
    """Up to ``wanted`` thumbnails of these hits (entries without a file on disk have none)."""
    found = []
    for hit in hits:
        if len(found) >= wanted:
            break
        response = client.get(hit["thumbnail_url"])
        if response.status_code == 200:
            found.append(response.content)
    return found


def report(run: Run, samples: list, measured: float, after_warmup: int, args) -> dict:
    every = [x for v in run.latencies.values() for x in v]
    rss = [r for _, r in samples]
    out = {
        "clients": args.clients, "requests": run.count, "errors": len(run.errors), "seconds": round(measured, 1),
        "requests_per_s": round(run.count / measured, 1), "warmup_requests": run.warmup_requests,
        "latency_ms": {k: _rounded(percentiles(v)) for k, v in [("all", every), *run.latencies.items()] if v},
        "rss_mib": {"after_warmup": _mib(after_warmup), "end": _mib(rss[-1]), "peak": _mib(max(rss)),
                    "growth": _mib(rss[-1] - after_warmup), "samples": len(rss)},
    }
    print(f"{out['requests']} requests from {args.clients} clients in {out['seconds']} s "
          f"({out['requests_per_s']}/s) after {run.warmup_requests} warm-up requests; errors: {out['errors']}")
    for kind, s in out["latency_ms"].items():
        print(f"  {kind:8s} n={s['n']:6d}  p50 {s['p50']:8.2f} ms  p90 {s['p90']:8.2f} ms  p99 {s['p99']:8.2f} ms")
    m = out["rss_mib"]
    print(f"  server RSS: {m['after_warmup']} MiB after warm-up, {m['end']} MiB at the end "
          f"(growth {m['growth']:+} MiB), peak {m['peak']} MiB, {m['samples']} samples")
    for problem in run.errors[:10]:
        print(f"  error: {problem}")
    return out


def _rounded(stats: dict) -> dict:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in stats.items()}


def _mib(value: int) -> float:
    return round(value / 2**20, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16, help="Concurrent clients (default 16).")
    parser.add_argument("--duration", type=float, default=60.0, help="Measured seconds (default 60).")
    parser.add_argument("--requests", type=int, help="Measure exactly this many requests instead, and check memory.")
    parser.add_argument("--warmup", type=float, default=10.0, help="Warm-up seconds, not measured (default 10).")
    parser.add_argument("--tolerance-mib", type=float, default=32.0,
                        help="Allowed RSS growth after warm-up in --requests mode (default 32).")
    parser.add_argument("--images", type=int, default=5000, help="Size of the generated index (default 5000).")
    parser.add_argument("--real", type=int, default=64, help="How many of them are real photos (default 64).")
    parser.add_argument("--index", type=Path, help="Use this existing index instead of generating one.")
    parser.add_argument("--model", help="Model name or config JSON (default: the tiny test model).")
    parser.add_argument("--pretrained", help="Weights: tag or file (default: random tiny weights).")
    parser.add_argument("--threads", type=int, default=4, help="Server worker threads (default 4).")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON too.")
    args = parser.parse_args()

    from tests.web.server_process import server_process

    with tempfile.TemporaryDirectory(prefix="sightline-load-") as tmp:
        workdir = Path(tmp)
        index_dir = args.index
        if index_dir is None:
            custom = args.model or args.pretrained
            model, pretrained = (args.model, args.pretrained) if custom else tiny_model(workdir)
            index_dir = workdir / "index"
            build_index(index_dir, workdir, model, pretrained, args.images, args.real)
        with server_process(index_dir, workdir / "server.log", "--threads", str(args.threads)) as server:
            work = workload(server.base)
            run, samples, measured, after_warmup = asyncio.run(drive(server.base, server.process.pid, work, args))
        figures = report(run, samples, measured, after_warmup, args)
    if args.json:
        print(json.dumps(figures, indent=2))
    failed = figures["errors"] > 0
    if args.requests and figures["rss_mib"]["growth"] > args.tolerance_mib:
        print(f"FAIL: server memory grew by {figures['rss_mib']['growth']} MiB "
              f"(tolerance {args.tolerance_mib} MiB)")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
