"""Export a model's towers to ONNX, once per model, into the index folder.

Runs where torch is loaded anyway (after ``sightline index`` embedded
something, or ``sightline export``).  Each tower is exported from its fp32
weights on the CPU, through :mod:`sightline.search.onnx_graphs`, with a
dynamic batch (and, for text, a dynamic sequence length), then loaded back
with onnxruntime and checked against the torch encoder on probe texts and
images; the tokenizer is checked token for token.  A tower that cannot be
exported or disagrees is recorded as unsupported, with the reason, and its
queries keep using torch.  Files are written with
:mod:`sightline.search.atomic` and the manifest last (see
:mod:`sightline.search.onnx_files`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Optional
import numpy as np
from PIL import Image

from sightline.search.atomic import atomic_path, atomic_write
from sightline.search.clip_tokenizer import ClipTokenizer, write_merges
from sightline.search.errors import ModelNotAvailableError
from sightline.search.onnx_files import (
    IMAGE_GRAPH, MANIFEST, MERGES, TEXT_GRAPH, TOKEN_TABLE, ExportUnusable, Manifest, export_dir, read_manifest,
)

log = logging.getLogger(__name__)

OPSET = 17
#: Every probe must agree with torch at least this well (the issue's bar is 0.9999 per query).
MIN_COSINE = 0.99999
PROBE_TEXTS = [
    "a photo of a dog", "x", "", "Two RED cars, parked by the sea at night!", "café crème ümlaut naïve 東京 📷",
    "&amp; entities &lt;b&gt; and  odd   spacing\t\n", "a very long caption that goes on " * 12,
]


class ExportFailed(Exception):
    """A tower that cannot be exported (or whose export disagrees with torch)."""


def export_model(encoder, index_root: Path, force: bool = False) -> Manifest:
    """The export of ``encoder``'s model in the index at ``index_root``, made now unless one is there
    (a tower that failed is tried again by another version of the software).

    ``encoder`` is a :class:`~sightline.search.encoder.ClipEncoder`; a model
    running in another precision or on another device is reloaded in fp32 on
    the CPU for the export.  Never raises for an architecture it does not
    cover: the manifest then records why (``Manifest.unsupported``).
    """
    folder = export_dir(index_root, encoder.model_id)
    if not force and not needs_export(index_root, encoder.model_id):
        return read_manifest(folder, encoder.model_id)
    started = time.perf_counter()
    reference = _fp32_cpu(encoder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)  # readers ignore the folder until the new manifest is in place
    files: dict = {}
    unsupported: dict = {}
    info: dict = {"opset": OPSET, "versions": _versions()}
    text = image = None
    try:
        text = _export_text(reference, folder, files, info)
    except ExportFailed as why:
        unsupported["text"] = str(why)
        _remove(folder, TOKEN_TABLE, MERGES, TEXT_GRAPH, TEXT_GRAPH + ".data")
    try:
        image = _export_image(reference, folder, files, info)
    except ExportFailed as why:
        unsupported["image"] = str(why)
        _remove(folder, IMAGE_GRAPH, IMAGE_GRAPH + ".data")
    info["seconds"] = round(time.perf_counter() - started, 2)
    manifest = Manifest(folder, encoder.model_id, int(reference.dim), text, image, unsupported, files, info)
    atomic_write(folder / MANIFEST, json.dumps(manifest.as_json(), indent=2).encode("utf-8"))
    for tower, why in unsupported.items():
        log.info("%s queries of %s will use torch: %s", tower, encoder.model_id, why)
    log.info("exported %s to ONNX in %.1f s (%s)", encoder.model_id, info["seconds"],
             ", ".join(t for t in ("text", "image") if t not in unsupported) or "nothing")
    return manifest


def needs_export(index_root: Path, model_id: str) -> bool:
    """Whether :func:`export_model` would export now (no usable export, or one to retry)."""
    try:
        existing = read_manifest(export_dir(index_root, model_id), model_id)
    except ExportUnusable:
        return True
    return bool(existing.unsupported) and existing.info.get("versions") != _versions()


def export_after_indexing(index_root: Path, encoder) -> Optional[Manifest]:
    """:func:`export_model` at the end of an indexing run, whose index is complete either way:
    a failure is one warning (searches then use torch), never an error."""
    try:
        return export_model(encoder, index_root)
    except (OSError, ExportUnusable, ModelNotAvailableError) as exc:
        log.warning("could not export the model to ONNX (%s); searches use torch until `sightline export` "
                    "succeeds", exc)
        return None


def export_index(settings, force: bool = False) -> Manifest:
    """Export the model of the index of ``settings`` (``sightline export``), loading it in fp32 on the CPU."""
    from sightline.search.encoder import check_model
    from sightline.search.models import load_encoder

    with settings.open_store() as store:
        recorded = store.model_info()
        if recorded is None:
            raise ModelNotAvailableError(f"the index at {store.root} is empty, so it records no model to export yet; "
                                         f"`sightline index PHOTOS` indexes photos and exports their model")
        encoder = load_encoder(settings.spec_for(store), device="cpu", precision="fp32", threads=settings.threads)
        check_model(recorded, encoder.model_id, f"the index at {store.root}")
        return export_model(encoder, store.root, force=force)


def _remove(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).unlink(missing_ok=True)


def _fp32_cpu(encoder):
    if getattr(encoder, "precision", "fp32") == "fp32" and str(getattr(encoder, "device", "cpu")) == "cpu":
        return encoder
    from sightline.search.models import ModelSpec, load_encoder

    copy = load_encoder(ModelSpec(encoder.name or None, encoder.pretrained or None), device="cpu", precision="fp32")
    if copy.model_id != encoder.model_id:  # the weights changed on disk since the index loaded them
        raise ExportUnusable(f"the model's weights now have id {copy.model_id!r}, not {encoder.model_id!r}")
    return copy


# ------------------------------------------------------------------- text
def _export_text(reference, folder: Path, files: dict, info: dict) -> dict:
    import torch

    from sightline.search.onnx_encoder import OnnxTextEncoder
    from sightline.search.onnx_graphs import Unsupported, text_graph

    try:
        tokenizer = ClipTokenizer.from_open_clip(reference.tokenizer)
        graph = text_graph(reference.model)
    except (AttributeError, KeyError, ValueError, Unsupported) as why:
        raise ExportFailed(f"{type(why).__name__ if isinstance(why, AttributeError) else 'text tower'}: {why}")
    if tokenizer.encoder != dict(reference.tokenizer.encoder):
        raise ExportFailed("the torch-free tokenizer's vocabulary differs from the model's")
    if tokenizer.context_length > graph.context_length:
        raise ExportFailed(f"context length {tokenizer.context_length} exceeds the model's {graph.context_length}")
    table = graph.token_embedding.weight.detach().float().cpu().numpy()
    with atomic_path(folder / TOKEN_TABLE) as tmp, open(tmp, "wb") as handle:
        np.save(handle, table)
    atomic_write(folder / MERGES, write_merges(tokenizer.merges))
    ids = tokenizer(["a photo of a dog", "x"])[:, :8]  # any sample: both axes are dynamic
    sample = (torch.from_numpy(table[ids]), torch.from_numpy(ids.argmax(axis=1)))
    _onnx_export(graph, sample, folder / TEXT_GRAPH, ["embedded", "eot"],
                 {"embedded": {0: "batch", 1: "length"}, "eot": {0: "batch"}, "features": {0: "batch"}})
    settings = {"context_length": tokenizer.context_length, "clean": tokenizer.clean,
                "special_tokens": list(tokenizer.special_tokens)}
    for name in (TOKEN_TABLE, MERGES, TEXT_GRAPH, TEXT_GRAPH + ".data"):
        files[name] = (folder / name).stat().st_size
    draft = Manifest(folder, reference.model_id, int(reference.dim), settings, None, {}, files, {})
    fast = OnnxTextEncoder(draft, ["CPUExecutionProvider"])  # its tokenizer is read back from the file
    if not np.array_equal(fast.tokenizer(PROBE_TEXTS), np.asarray(reference.tokenizer(PROBE_TEXTS))):
        raise ExportFailed("the torch-free tokenizer does not reproduce the model's tokens")
    # One text at a time: a batch would pad every probe to the longest (77 tokens).
    info["text_min_cosine"] = _agreement(np.concatenate([fast.encode_texts([t]) for t in PROBE_TEXTS]),
                                         np.concatenate([reference.encode_texts([t]) for t in PROBE_TEXTS]), "text")
    return settings


# ------------------------------------------------------------------ image
def _export_image(reference, folder: Path, files: dict, info: dict) -> dict:
    import torch

    from sightline.search.onnx_encoder import OnnxImageEncoder
    from sightline.search.onnx_graphs import Unsupported, image_graph

    pre = reference.preprocessor
    if pre.fallback is not None:
        raise ExportFailed("its preprocessing needs torchvision (not a square resize and crop)")
    try:
        graph = image_graph(reference.model)
    except (AttributeError, Unsupported) as why:
        raise ExportFailed(f"image tower: {why}")
    if graph.image_size != pre.size:
        raise ExportFailed(f"the tower takes {graph.image_size} px, the preprocessing makes {pre.size} px")
    probes = _probe_images()
    sample = torch.from_numpy(pre.to_array([pre(img) for img in probes[:2]]))
    _onnx_export(graph, (sample,), folder / IMAGE_GRAPH, ["pixels"], {"pixels": {0: "batch"}, "features": {0: "batch"}})
    for name in (IMAGE_GRAPH, IMAGE_GRAPH + ".data"):
        files[name] = (folder / name).stat().st_size
    settings = {"size": pre.size, "mean": list(pre.mean), "std": list(pre.std), "interpolation": pre.interpolation,
                "resize_mode": pre.resize_mode}
    draft = Manifest(folder, reference.model_id, int(reference.dim), None, settings, {}, files, {})
    fast = OnnxImageEncoder(draft, ["CPUExecutionProvider"])
    info["image_min_cosine"] = _agreement(fast.encode_images(probes), reference.encode_images(probes), "image")
    return settings


def _probe_images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:80, 0:80]
    smooth = np.stack([x * 3, y * 3, (x + y) * 2], -1).clip(0, 255).astype(np.uint8)
    return [Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)), Image.fromarray(smooth)]


# ----------------------------------------------------------------- shared
def _onnx_export(graph, sample: tuple, path: Path, inputs: list[str], dynamic: dict) -> None:
    """Export ``graph`` to ``path`` (the graph) and ``path.data`` (its weights)."""
    import onnx
    import torch

    scratch = path.with_name(f".{path.name}.{os.getpid()}.export")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated in favour of torch.export, which takes
            # several times longer for the same graph; its warnings are not the user's concern.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, sample, str(scratch), input_names=inputs, output_names=["features"],
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        proto = onnx.load(str(scratch))
    except Exception as exc:  # an exporter that cannot trace this graph (or is missing): torch stays
        raise ExportFailed(f"torch.onnx.export failed: {type(exc).__name__}: {str(exc)[:300]}") from None
    finally:
        scratch.unlink(missing_ok=True)
    save_external(proto, path)


def save_external(proto, path: Path, align: int = 1 << 16) -> None:
    """Write an ONNX model as ``path`` (the graph) plus ``path.data`` (its weights, page-aligned).

    onnxruntime maps page-aligned external weights from the file instead of
    parsing them out of the graph: a text tower loads in a fraction of the time
    and memory.  Both files are replaced atomically, weights first, so a
    running server keeps reading the files it mapped.
    """
    from onnx.external_data_helper import set_external_data

    data_path = path.with_name(path.name + ".data")
    with atomic_path(data_path) as tmp, open(tmp, "wb") as out:
        for tensor in proto.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < 1024:
                continue
            out.write(b"\0" * (-out.tell() % align))
            offset = out.tell()
            out.write(tensor.raw_data)
            set_external_data(tensor, location=data_path.name, offset=offset, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
    atomic_write(path, proto.SerializeToString())


def _agreement(fast: np.ndarray, torch_side: np.ndarray, tower: str) -> float:
    cosine = float((fast * torch_side).sum(axis=1).min())
    if not cosine >= MIN_COSINE:
        raise ExportFailed(f"the exported {tower} graph disagrees with torch (cosine {cosine:.6f} < {MIN_COSINE})")
    return round(cosine, 7)


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for package in ("torch", "onnx", "onnxruntime", "sightline"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out
