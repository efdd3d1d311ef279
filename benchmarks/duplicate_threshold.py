"""How well a cosine threshold separates near-duplicate photos from distinct ones.

    python benchmarks/duplicate_threshold.py [--originals 120] [--models vit,tiny] [--json]

Takes ``--originals`` photos of the peer harness (camera-sized JPEGs cut from
19 real source pictures), makes five edited copies of each (half size, JPEG
quality 60, a 5 % crop, brightness +10 % and -10 %), indexes all of them
through the real pipeline (``IndexJob``: decoding, preprocessing, the model)
and reads the stored embeddings back.  Then, for each threshold:

- recall of each variant kind: the fraction of (original, copy) pairs whose
  cosine is at least the threshold;
- recall of "same scene": other photos of the harness cut from the same source
  picture (different crop, colours, noise) -- a different photo of the same
  scene; reported, but neither a positive nor a negative below;
- precision / recall / F1 / F2 of duplicate pairs: positives are the pairs within
  one original's family (original and its copies, copies among themselves),
  negatives are pairs of photos from different source pictures.

Models: ``vit`` is the harness's random-weight ViT-B-32 (the real
architecture and preprocessing; no trained weights can be had offline),
``tiny`` the test suite's tiny ViT.  Both run in the same invocation;
``--model NAME --pretrained FILE`` measures any other model (``custom``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_checkpoint, default_photos, require, table  # noqa: E402

VARIANTS = ("half", "jpeg60", "crop5", "bright+10", "bright-10")
THRESHOLDS = (0.80, 0.90, 0.94, 0.96, 0.97, 0.98, 0.985, 0.99, 0.993, 0.995, 0.997, 0.998, 0.999)


def make_variant(image, kind: str):
    from PIL import Image, ImageEnhance

    w, h = image.size
    if kind == "half":
        return image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS), {}
    if kind == "jpeg60":
        return image, {"quality": 60}
    if kind == "crop5":  # 5 % of each dimension, taken off the edges
        dx, dy = round(w * 0.025), round(h * 0.025)
        return image.crop((dx, dy, w - dx, h - dy)), {}
    if kind in ("bright+10", "bright-10"):
        return ImageEnhance.Brightness(image).enhance(1.1 if kind.endswith("+10") else 0.9), {}
    raise ValueError(kind)


def pick_originals(photos: Path, count: int) -> list[tuple[Path, str]]:
    """``count`` photos, spread round-robin over the source pictures they were cut from."""
    manifest = photos.parent / "photos_manifest.csv"
    by_source: dict[str, list[str]] = defaultdict(list)
    with open(require(manifest, "the peer photo manifest")) as f:
        for row in csv.DictReader(f):
            by_source[row["source"]].append(row["file"])
    picked, lists = [], [sorted(v) for _, v in sorted(by_source.items())]
    while len(picked) < count and any(lists):
        for files in lists:
            if files and len(picked) < count:
                name = files.pop(0)
                picked.append((photos / name, next(s for s, v in by_source.items() if name in v)))
    return picked


def build_folder(folder: Path, originals: list[tuple[Path, str]], max_side: int) -> list[dict]:
    """Write each original (shrunk to ``max_side`` to keep the run short) and its variants."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for n, (path, source) in enumerate(originals):
        with Image.open(path) as im:
            image = im.convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        base = folder / f"p{n:04d}"
        image.save(f"{base}_orig.jpg", quality=92)
        items.append({"file": f"{base}_orig.jpg", "family": n, "source": source, "kind": "orig"})
        for kind in VARIANTS:
            variant, save = make_variant(image, kind)
            variant.save(f"{base}_{kind}.jpg", quality=save.get("quality", 92))
            items.append({"file": f"{base}_{kind}.jpg", "family": n, "source": source, "kind": kind})
    return items


def embed(folder: Path, index_dir: Path, encoder) -> dict[str, np.ndarray]:
    from sightline.indexer.pipeline import IndexJob
    from sightline.search.store import Store

    with Store.open(index_dir, create=True) as store:
        report = IndexJob(store, encoder, workers=1, progress=False).run(str(folder))
        assert not report.failed, report.failed[:3]
        states = store.file_states()
        return {path: store.file_embedding(state.id) for path, state in states.items()}


def evaluate(items: list[dict], vectors: dict[str, np.ndarray]) -> list[dict]:
    matrix = np.stack([vectors[it["file"]] for it in items])
    sims = matrix @ matrix.T
    family = np.array([it["family"] for it in items])
    source = np.array([it["source"] for it in items])
    kind = np.array([it["kind"] for it in items])
    upper = np.triu(np.ones_like(sims, dtype=bool), k=1)
    positive = (family[:, None] == family[None, :]) & upper
    negative = (source[:, None] != source[None, :]) & upper
    same_scene = (source[:, None] == source[None, :]) & (family[:, None] != family[None, :]) & upper
    same_scene &= (kind[:, None] == "orig") & (kind[None, :] == "orig")
    originals = np.flatnonzero(kind == "orig")
    rows = []
    for t in THRESHOLDS:
        hit = sims >= t
        tp, fp = int((hit & positive).sum()), int((hit & negative).sum())
        fn = int((~hit & positive).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        row = {"threshold": t, "precision": precision, "recall": recall,
               "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
               # Recall counted twice: a review tool that never deletes should rather show one pair too many.
               "f2": 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0,
               "false_pairs": fp, "same_scene": float(hit[same_scene].mean()) if same_scene.any() else None}
        for variant in VARIANTS:
            idx = np.flatnonzero(kind == variant)
            row[variant] = float(np.mean([sims[o, v] >= t for o, v in zip(originals, idx)]))
        rows.append(row)
    return rows, {
        "pairs": {"positive": int(positive.sum()), "negative": int(negative.sum()), "same_scene": int(same_scene.sum())},
        "median_cos": {v: float(np.median([sims[o, i] for o, i in zip(originals, np.flatnonzero(kind == v))]))
                       for v in VARIANTS}
                      | {"same_scene": float(np.median(sims[same_scene])) if same_scene.any() else None,
                         "distinct": float(np.median(sims[negative])),
                         "distinct_p99.9": float(np.quantile(sims[negative], 0.999)),
                         "distinct_max": float(sims[negative].max())},
    }


def load_models(names: list[str], tmp: Path, custom=None) -> dict:
    from sightline.search.models import ModelSpec, load_encoder
    from tests.helpers import TINY_CONFIG, make_tiny_checkpoint

    models = {}
    for name in names:
        if name == "vit":
            spec = ModelSpec("ViT-B-32", str(require(default_checkpoint(), "the random ViT-B-32 checkpoint")))
        elif name == "custom":
            spec = ModelSpec(*custom)
        elif name == "tiny":
            spec = ModelSpec(str(TINY_CONFIG), str(make_tiny_checkpoint(tmp / "tiny.pt")))
        else:
            raise SystemExit(f"unknown model {name!r} (vit, tiny)")
        models[name] = load_encoder(spec, device="cpu")
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=default_photos())
    parser.add_argument("--originals", type=int, default=120)
    parser.add_argument("--max-side", type=int, default=1024, help="shrink originals to this (speed)")
    parser.add_argument("--models", default="vit,tiny")
    parser.add_argument("--model", help="with --pretrained: measure this model too (as 'custom')")
    parser.add_argument("--pretrained")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        originals = pick_originals(require(args.photos, "the peer photos"), args.originals)
        items = build_folder(tmp / "photos", originals, args.max_side)
        names = args.models.split(",") + (["custom"] if args.model else [])
        models = load_models(names, tmp, (args.model, args.pretrained))
        for name, encoder in models.items():
            started = time.perf_counter()
            vectors = embed(tmp / "photos", tmp / f"index-{name}", encoder)
            rows, summary = evaluate(items, vectors)
            results[name] = {"rows": rows, **summary, "images": len(items),
                             "embed_s": round(time.perf_counter() - started, 1)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, result in results.items():
        print(f"\n{name}: {result['images']} images, pairs {result['pairs']}, embedded in {result['embed_s']} s")
        print("median cosine:", {k: round(v, 4) if v is not None else None for k, v in result["median_cos"].items()})
        headers = ["threshold", "precision", "recall", "F1", "F2", "false pairs", *VARIANTS, "same scene"]
        body = [[f"{r['threshold']:g}", f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                 f"{r['f2']:.3f}",
                 r["false_pairs"], *(f"{r[v]:.2f}" for v in VARIANTS),
                 "-" if r["same_scene"] is None else f"{r['same_scene']:.2f}"] for r in result["rows"]]
        print(table(headers, body))


if __name__ == "__main__":
    main()
