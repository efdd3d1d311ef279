"""Reduced precision on this CPU: speed and agreement with fp32.

    python benchmarks/precision.py [--model ViT-B-32 --pretrained FILE] [--runs 3]

Image throughput (batch 32, preprocessed) and text latency for fp32, bf16
weights and int8 dynamic quantisation of the Linear layers, and the cosine
between each mode's embeddings and fp32's on the harness photos.  A mode may
become a default only if its minimum cosine stays >= 0.999.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import default_checkpoint, default_photos, percentiles, require, spread, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--photos", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    import torch

    from sightline.search.imageio import decode_image
    from sightline.search.models import ModelSpec, load_encoder

    pretrained = str(require(Path(args.pretrained) if args.pretrained else default_checkpoint(), "checkpoint"))
    photos = require(args.photos or default_photos(), "photo folder")
    base = load_encoder(ModelSpec(args.model, pretrained), device="cpu", precision="fp32")
    files = sorted(photos.glob("*.jpg"))[:64]
    arrays = [base.preprocessor(decode_image(f.read_bytes(), draft_size=base.preprocessor.draft_size)[0]) for f in files]
    texts = [f"a photo of a dog number {i}" for i in range(40)]
    reference = np.concatenate([base.encode_preprocessed(arrays[i:i + 32]) for i in range(0, len(arrays), 32)])
    ref_text = base.encode_texts(texts)

    bf16 = load_encoder(ModelSpec(args.model, pretrained), device="cpu", precision="bf16")
    int8 = _int8_encoder(base)
    rows = []
    for name, enc in [("fp32", base), ("bf16 weights", bf16), ("int8 dynamic (Linear)", int8)]:
        enc.encode_preprocessed(arrays[:32])
        rates = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = np.concatenate([enc.encode_preprocessed(arrays[i:i + 32]) for i in range(0, len(arrays), 32)])
            rates.append(len(arrays) / (time.perf_counter() - t0))
        text_ms = []
        for t in texts:
            t0 = time.perf_counter()
            enc.encode_texts([t])
            text_ms.append((time.perf_counter() - t0) * 1000)
        cos = (out * reference).sum(1)
        cos_t = (enc.encode_texts(texts) * ref_text).sum(1)
        rows.append([name, spread(rates), f"{percentiles(text_ms)['p50']:.1f}", f"{cos.min():.5f}", f"{cos_t.min():.5f}"])
        print(" | ".join(rows[-1]), file=sys.stderr)
    print(f"{args.model} / {Path(pretrained).name}, {torch.get_num_threads()} threads, {len(arrays)} photos")
    print(table(["mode", "image img/s median (min–max)", "text ms p50", "min cos image vs fp32", "min cos text vs fp32"], rows))


def _int8_encoder(base):
    """fp32 model with its Linear layers dynamically quantised to int8."""
    import torch

    from sightline.search.text_fast import text_encoder_fn

    enc = copy.copy(base)
    enc.model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(base.model), {torch.nn.Linear}, dtype=torch.qint8)
    # open_clip reads the cast dtype off a Linear weight, which quantised layers no longer have.
    for tower in (enc.model.transformer, enc.model.visual.transformer):
        tower.get_cast_dtype = lambda: torch.float32
    enc._encode_text = text_encoder_fn(enc.model)
    return enc


if __name__ == "__main__":
    main()
