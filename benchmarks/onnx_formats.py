"""Reduced number formats for the ONNX text tower: accuracy on the demo index, speed on ViT-B-32.

    python benchmarks/onnx_formats.py --accuracy-index ~/.local/share/sightline/demo/index \\
        --speed-index $PEERS_DIR/bench-cli-search/sightline-index

The issue's bar for adopting a format: cosine >= 0.999 to fp32 and top-10
results unchanged for >= 99 % of the demo index's captions (a trained model:
``sightline demo`` makes it).  Formats: the fp32 export itself, onnxruntime's
dynamic int8 quantisation of the matrix products (per channel and per
tensor), and fp16 weights.  Speed is the warm text encoding of distinct
queries on the speed index's export (the harness's random ViT-B-32: the same
compute as trained weights), formats taking turns query by query.
Both indexes need an export (``sightline export``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentiles, table  # noqa: E402

BAR_COSINE, BAR_TOP10 = 0.999, 0.99


def export_of(index: Path):
    from sightline.search.onnx_files import find_export
    from sightline.search.store import Store

    with Store.open(index) as store:
        info = store.model_info()
    if info is None:
        raise SystemExit(f"{index} is empty")
    return find_export(index, info.model_id)


def variants(manifest, workdir: Path) -> dict:
    """Format name -> a manifest whose text graph is that format (or the reason it cannot be made)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from sightline.search.onnx_files import MERGES, TEXT_GRAPH, TOKEN_TABLE

    source = manifest.path(TEXT_GRAPH)
    out = {"fp32": manifest}
    makers = {
        "int8 per channel": lambda dst: quantize_dynamic(source, dst, weight_type=QuantType.QInt8, per_channel=True),
        "int8 per tensor": lambda dst: quantize_dynamic(source, dst, weight_type=QuantType.QInt8, per_channel=False),
        "fp16": lambda dst: _fp16(source, dst),
    }
    for name, make in makers.items():
        folder = workdir / name.replace(" ", "-")
        folder.mkdir()
        for shared in (TOKEN_TABLE, MERGES):
            (folder / shared).symlink_to(manifest.path(shared))
        try:
            make(folder / TEXT_GRAPH)
            out[name] = dataclasses.replace(manifest, folder=folder)
        except Exception as exc:  # a format this onnxruntime cannot make
            out[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return out


def _fp16(source: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(dst))


def encoders(formats: dict, threads) -> dict:
    from sightline.search.onnx_encoder import OnnxTextEncoder

    out = {}
    for name, manifest in formats.items():
        if isinstance(manifest, str):
            out[name] = manifest
            continue
        try:
            out[name] = OnnxTextEncoder(manifest, ["CPUExecutionProvider"], threads)
        except Exception as exc:  # e.g. no fp16 kernels for this CPU
            out[name] = f"{type(exc).__name__}: {str(exc)[:120]}"
    return out


def accuracy(index: Path, encs: dict) -> dict:
    from sightline.search.store import Kind, Store

    with Store.open(index) as store:
        count = store.counts()["captions"]
        rows = store.get_captions(range(1, 4 * count + 10))
        texts = [rows[i].text for i in sorted(rows)]
        reference = encs["fp32"].encode_texts(texts)
        top = [[i for i, _ in store.search(Kind.FILES, v, 10)] for v in reference]
        out = {}
        for name, enc in encs.items():
            if isinstance(enc, str) or name == "fp32":
                continue
            vectors = enc.encode_texts(texts)
            cos = (vectors * reference).sum(axis=1)
            same = [[i for i, _ in store.search(Kind.FILES, v, 10)] == t for v, t in zip(vectors, top)]
            out[name] = {"captions": len(texts), "cos_min": float(cos.min()), "cos_p01": float(np.percentile(cos, 1)),
                         "top10_same": float(np.mean(same))}
    return out


def speed(encs: dict, n: int) -> dict:
    from benchmarks.http_latency import queries

    live = {k: v for k, v in encs.items() if not isinstance(v, str)}
    texts = queries(n + 10)
    for enc in live.values():
        enc.encode_texts(texts[:10])  # warm-up
    samples: dict = {name: [] for name in live}
    for text in texts[10:]:
        for name, enc in live.items():
            started = time.perf_counter()
            enc.encode_texts([text])
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: percentiles(s) for name, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy-index", type=Path, required=True, help="The demo index (a trained model).")
    parser.add_argument("--speed-index", type=Path, required=True, help="An index of the ViT-B-32 to time.")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: all cores).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sightline-formats-") as tmp:
        acc_dir, speed_dir = Path(tmp, "acc"), Path(tmp, "speed")
        acc_dir.mkdir(), speed_dir.mkdir()
        acc = accuracy(args.accuracy_index, encoders(variants(export_of(args.accuracy_index), acc_dir), args.threads))
        speed_encs = encoders(variants(export_of(args.speed_index), speed_dir), args.threads)
        timing = speed(speed_encs, args.queries)
    rows = []
    for name, enc in speed_encs.items():
        if isinstance(enc, str):
            rows.append([name, enc, "-", "-", "-", "-"])
            continue
        t, a = timing[name], acc.get(name)
        passes = "-" if a is None else ("yes" if a["cos_min"] >= BAR_COSINE and a["top10_same"] >= BAR_TOP10 else "no")
        rows.append([name, f"{t['p50']:.2f} / {t['p90']:.2f}", f"{timing['fp32']['p50'] / t['p50']:.2f}",
                     "-" if a is None else f"{a['cos_min']:.5f} (1st pct {a['cos_p01']:.5f})",
                     "-" if a is None else f"{100 * a['top10_same']:.1f} % of {a['captions']}", passes])
    print(table(["format", "text encode ms p50 / p90", "speed-up", "cosine to fp32, min", "top-10 unchanged",
                 f"meets the bar (cos >= {BAR_COSINE}, top-10 >= {100 * BAR_TOP10:.0f} %)"], rows))


if __name__ == "__main__":
    main()
