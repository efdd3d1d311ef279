"""Indexing throughput: Sightline end to end vs the model alone, in one run,
optionally side by side with the peers (rclip, clip-retrieval).

    python benchmarks/indexing.py                 # harness photos + random ViT-B-32, 3 runs
    python benchmarks/indexing.py --peers         # also run the peers' harness scripts, print ratios
    python benchmarks/indexing.py --photos DIR --model NAME --pretrained FILE
    python benchmarks/indexing.py --ray           # also `sightline index --ray local`, alternating with plain runs

Prints medians with (min–max) spread.  "model only" is the forward pass on
already preprocessed batches in this process; "efficiency" is the indexing
job's own rate (model loaded, from the first file to the last commit) over it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_checkpoint, default_photos, peers_dir, require, run_measured, spread, table  # noqa: E402


def model_only(model: str, pretrained: str, photos: Path, batch_size: int, runs: int,
               precision: str | None = None) -> list[float]:
    """img/s of encode_preprocessed alone, on decoded and preprocessed photos."""
    from sightline.search.imageio import decode_image
    from sightline.search.models import ModelSpec, load_encoder

    encoder = load_encoder(ModelSpec(model, pretrained), device="cpu", precision=precision)
    files = sorted(photos.glob("*.jpg"))[: batch_size * 2]
    arrays = [encoder.preprocessor(decode_image(f.read_bytes())[0]) for f in files]
    encoder.encode_preprocessed(arrays[:batch_size])  # warm-up
    rates = []
    for _ in range(runs):
        start = time.perf_counter()
        for i in range(0, len(arrays), batch_size):
            encoder.encode_preprocessed(arrays[i:i + batch_size])
        rates.append(len(arrays) / (time.perf_counter() - start))
    return rates


def sightline_runs(args, n_images: int, extra: tuple = ()) -> list[dict]:
    results = []
    for run in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "sightline", "index", str(args.photos), "--index", f"{tmp}/index",
                   "--model", args.model, "--pretrained", args.pretrained, "--batch-size", str(args.batch_size),
                   "--precision", args.precision, "--no-export", "--json", *extra]
            if args.workers is not None:
                cmd += ["--workers", str(args.workers)]
            env = dict(os.environ, HF_HUB_OFFLINE="1")
            measured = run_measured(cmd, env)
            report = json.loads(measured["stdout"])
            assert report["indexed"] == n_images, report
            results.append({**measured, "job_img_s": report["images_per_second"],
                            "wall_img_s": n_images / measured["wall_s"]})
            print(f"run {run + 1}: wall {measured['wall_s']:.1f} s, job {report['images_per_second']:.2f} img/s, "
                  f"peak tree RSS {measured['peak_rss_mib']:.0f} MiB", file=sys.stderr)
    return results


def peer_runs(runs: int) -> dict:
    """Run the harness scripts now (same machine, same photos, same weights) and read their summaries."""
    out = {}
    for name, script, env in [("rclip 3.3.0 (ViT-B-32 @224)", "run_rclip.sh", {"RCLIP_VARIANT": "224"}),
                              ("clip-retrieval 2.45.0 (bs 32)", "run_cr.sh", {"BS": "32"})]:
        before = set((peers_dir() / "results").glob("*"))
        subprocess.run(["bash", str(require(peers_dir() / script, script)), str(runs)], check=True,
                       env=dict(os.environ, **env), stdout=sys.stderr)
        new = sorted(set((peers_dir() / "results").glob("*")) - before)
        summary = json.loads((new[-1] / "summary.json").read_text())
        phase = summary.get("index_plus_query") or summary.get("inference")
        mem = summary.get("index_plus_query_mem") or summary.get("inference_mem") or {}
        out[name] = {"walls": phase["wall_s"], "n": summary["n_images"],
                     "mem": mem.get("tree_peak_rss_mib_max", phase["peak_rss_mib_max"])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                        help="for the job and the model-only row (an fp32 model-only row is always added)")
    parser.add_argument("--peers", action="store_true", help="also run the peers' harness and print ratios")
    parser.add_argument("--ray", action="store_true", help="also index with --ray local (Ray Data on this machine)")
    args = parser.parse_args()
    args.photos = require(args.photos or default_photos(), "photo folder")
    args.pretrained = str(require(Path(args.pretrained) if args.pretrained else default_checkpoint(), "checkpoint"))
    n_images = len(list(args.photos.glob("*.jpg")))
    from sightline.search.precision import resolve_precision

    precision = resolve_precision(args.precision, "cpu")
    fp32_rates = model_only(args.model, args.pretrained, args.photos, args.batch_size, args.runs, "fp32")
    model_rates = fp32_rates if precision == "fp32" else \
        model_only(args.model, args.pretrained, args.photos, args.batch_size, args.runs, precision)
    ours = sightline_runs(args, n_images)
    job = [r["job_img_s"] for r in ours]
    rows = [
        ["model only, fp32", spread(fp32_rates), "", ""],
        [f"model only, {precision} (forward, preprocessed batches)", spread(model_rates), "", "the job's precision"],
        ["Sightline index: job rate", spread(job), "", f"{statistics.median(job) / statistics.median(model_rates):.0%} of model"],
        ["Sightline index: wall incl. start + model load", spread([r["wall_img_s"] for r in ours]),
         spread([r["wall_s"] for r in ours]), f"peak {max(r['peak_pss_mib'] for r in ours):.0f} MiB PSS ({max(r['peak_rss_mib'] for r in ours):.0f} RSS), process tree"],
    ]
    if args.ray:
        on_ray = sightline_runs(args, n_images, ("--ray", "local"))
        ratio = statistics.median(r["wall_s"] for r in on_ray) / statistics.median(r["wall_s"] for r in ours)
        rows.append(["Sightline index --ray local: wall incl. Ray start", spread([r["wall_img_s"] for r in on_ray]),
                     spread([r["wall_s"] for r in on_ray]),
                     f"{ratio:.2f}x the plain run's wall; job {spread([r['job_img_s'] for r in on_ray])} img/s"])
    if args.peers:
        ours_wall = statistics.median([r["wall_s"] for r in ours])
        for name, peer in peer_runs(args.runs).items():
            rate = [peer["n"] / w for w in peer["walls"]]
            rows.append([name, spread(rate), spread(peer["walls"]),
                         f"ours {statistics.median(peer['walls']) / ours_wall:.2f}x faster; {peer['mem']:.0f} MiB"])
    print(f"{n_images} photos in {args.photos}; {args.model} / {Path(args.pretrained).name}; "
          f"batch {args.batch_size}; {precision}; {os.cpu_count()} CPUs")
    print(table(["what", "img/s median (min–max)", "wall s", "notes"], rows))


if __name__ == "__main__":
    main()
