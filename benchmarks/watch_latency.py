"""From a photo appearing in a watched folder to it being searchable.

    python benchmarks/watch_latency.py [--model vit|tiny] [--photos 500] [--files 8] [--rounds 2] [--debounce 1.0]

Indexes ``--photos`` photos of the peer harness, then alternates two phases,
``--rounds`` times each:

- watch: a real ``sightline index ROOT --watch`` process runs; one new photo
  (a fresh crop of a harness photo: new content, so it is decoded and
  embedded) is copied in at a time, and the time until its row is committed
  (what a new ``sightline search`` and, within its ``--refresh``, a running
  server see) is measured;
- baseline: the same with no watcher: copy the photo, then run
  ``sightline index ROOT`` (as from cron) until it has finished.

Medians with their spread.  ``vit`` is the harness's random-weight ViT-B-32
(real compute per image), ``tiny`` the test model.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_checkpoint, default_photos, require, spread, table  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def committed(db: Path, path: Path) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
        return conn.execute("SELECT 1 FROM files WHERE path = ?", (os.fsencode(str(path)),)).fetchone() is not None


def new_photo(sources: list[Path], n: int, out: Path) -> None:
    from PIL import Image

    with Image.open(sources[n % len(sources)]) as im:
        w, h = im.size
        d = 8 + n  # a different crop every time: new content
        im.convert("RGB").crop((d, d, w - d, h - d)).save(out, quality=90)


def stage(sources: list[Path], n: int, tmp: Path, root: Path) -> tuple[Path, Path]:
    """A new photo ready outside the root, and where it will be copied."""
    staged = tmp / f"staged{n}.jpg"
    new_photo(sources, n, staged)
    return staged, root / f"new_{n:04d}.jpg"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["vit", "tiny"], default="vit")
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--files", type=int, default=8, help="new photos per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--debounce", type=float, default=1.0)
    args = parser.parse_args()
    sources = sorted(require(default_photos(), "the peer photos").glob("*.jpg"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model == "vit":
            model = ["--model", "ViT-B-32", "--pretrained", str(require(default_checkpoint(), "the ViT-B-32 weights"))]
        else:
            from tests.helpers import TINY_CONFIG, make_tiny_checkpoint

            model = ["--model", str(TINY_CONFIG), "--pretrained", str(make_tiny_checkpoint(tmp / "tiny.pt"))]
        root, index = tmp / "photos", tmp / "index"
        root.mkdir()
        for src in sources[:args.photos]:
            shutil.copy(src, root / src.name)
        base = [sys.executable, "-m", "sightline", "index", str(root), "--index", str(index), *model, "-q"]
        subprocess.run(base, check=True, capture_output=True, cwd=REPO)
        db = index / "sightline.db"
        watch, cron, n = [], [], 0
        for _ in range(args.rounds):
            log = open(tmp / "watch.log", "w+")
            proc = subprocess.Popen(base + ["--watch", "--debounce", str(args.debounce)], stderr=log,
                                    stdout=subprocess.DEVNULL, cwd=REPO)
            while "Watching" not in (tmp / "watch.log").read_text():
                if proc.poll() is not None:
                    raise SystemExit((tmp / "watch.log").read_text())
                time.sleep(0.05)
            try:
                for _ in range(args.files):
                    n += 1
                    staged, target = stage(sources, n, tmp, root)
                    started = time.perf_counter()
                    shutil.copyfile(staged, target)
                    while not committed(db, target):
                        time.sleep(0.005)
                    watch.append(time.perf_counter() - started)
                    time.sleep(0.5)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            for _ in range(args.files):
                n += 1
                staged, target = stage(sources, n, tmp, root)
                started = time.perf_counter()
                shutil.copyfile(staged, target)
                subprocess.run(base, check=True, capture_output=True, cwd=REPO)
                cron.append(time.perf_counter() - started)
                assert committed(db, target)
    print(f"{args.photos} photos indexed, model {args.model}, debounce {args.debounce} s")
    print(table(["", "seconds from copy to searchable"],
                [["index --watch", spread(watch)], ["re-run `sightline index` (baseline)", spread(cron)]]))


if __name__ == "__main__":
    main()
