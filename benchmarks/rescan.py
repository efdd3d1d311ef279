"""Re-running ``sightline index`` on an unchanged folder (default 10,000 files).

    python benchmarks/rescan.py [--files 10000] [--runs 5]

Builds the folder (small generated JPEGs) and indexes it once with the tiny
test model, then times the rescan: the whole CLI process (start, scan,
compare with the database, exit) and the job alone in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import spread, table  # noqa: E402


def make_folder(folder: Path, count: int) -> None:
    from PIL import Image

    for i in range(count):
        sub = folder / f"album_{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), ((i * 7) % 256, (i * 13) % 256, (i * 29) % 256)).save(sub / f"img_{i:05d}.jpg")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    from tests.helpers import TINY_CONFIG, make_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_folder(tmp / "photos", args.files)
        checkpoint = make_tiny_checkpoint(tmp / "tiny.pt")
        base = [sys.executable, "-m", "sightline", "index", str(tmp / "photos"), "--index", str(tmp / "index"),
                "--model", str(TINY_CONFIG), "--pretrained", str(checkpoint), "--json"]
        first = json.loads(subprocess.run(base, check=True, capture_output=True, text=True).stdout)
        assert first["indexed"] + first["reused"] == args.files, first
        walls = []
        for _ in range(args.runs):
            start = time.perf_counter()
            out = subprocess.run(base, check=True, capture_output=True, text=True).stdout
            walls.append(time.perf_counter() - start)
            assert json.loads(out)["unchanged"] == args.files
        jobs = []
        from sightline.indexer.pipeline import IndexJob
        from sightline.search.store import Store

        for _ in range(args.runs):
            with Store.open(tmp / "index") as store:
                job = IndexJob(store, lambda: None, model_id=first_model_id(store), progress=False)
                start = time.perf_counter()
                report = job.run(str(tmp / "photos"))
                jobs.append(time.perf_counter() - start)
                assert report.unchanged == args.files
    print(f"rescan of an unchanged folder of {args.files} files ({os.cpu_count()} CPUs, page cache warm)")
    print(table(["what", "seconds median (min–max)"], [
        ["`sightline index` CLI, whole process", spread(walls)],
        ["IndexJob.run in process (scan + compare + bookkeeping)", spread(jobs)],
    ]))


def first_model_id(store) -> str:
    return store.model_info().model_id


if __name__ == "__main__":
    main()
