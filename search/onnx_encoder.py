"""Text and image encoders over an index's ONNX export, run by onnxruntime; no torch.

:class:`OnnxTextEncoder` tokenizes with :class:`~sightline.search.clip_tokenizer.ClipTokenizer`,
looks the tokens up in the memory-mapped token table (a query reads a dozen
of its 49,408 rows) and runs the text graph over the real tokens only: the
tower is causal and pooled at the end-of-text token, so padding after it
could not change the result (as ``search.text_fast`` does in torch).
:class:`OnnxImageEncoder` preprocesses with the model's own
:class:`~sightline.search.preprocess.Preprocessor` and runs the image graph.
Both return L2-normalised float32 vectors, as every encoder does.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from sightline.search.clip_tokenizer import ClipTokenizer, read_merges
from sightline.search.encoder import l2_normalize
from sightline.search.onnx_files import IMAGE_GRAPH, MERGES, TEXT_GRAPH, TOKEN_TABLE, ExportUnusable, Manifest
from sightline.search.preprocess import Preprocessor

log = logging.getLogger(__name__)

#: Execution providers tried, in order, when no device is asked for (those onnxruntime has).
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "OpenVINOExecutionProvider")


def providers_for(device: Optional[str]) -> list[str]:
    """onnxruntime's execution providers for a torch-style device name; :class:`ExportUnusable`
    for a device onnxruntime cannot use here (the torch encoder then runs on it)."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    kind = (device or "").split(":")[0]
    if kind in ("", "auto"):
        return [p for p in PREFERRED_PROVIDERS if p in available] + ["CPUExecutionProvider"]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda" and "CUDAExecutionProvider" in available:
        index = device.split(":")[1] if ":" in device else "0"
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise ExportUnusable(f"onnxruntime has no provider for device {device!r} (it has {', '.join(available)})")


def open_session(path: Path, providers: list, threads: Optional[int] = None, prepack: bool = True):
    """An onnxruntime session for one graph: one run at a time uses ``threads`` cores (None: all).

    ``prepack``: repack the weights for the matrix kernels when loading.  It
    makes every run faster but reads and copies all of them first; a process
    that answers one query (``sightline search``) is faster without, running
    straight from the memory-mapped weights file (measured: load 50 instead of
    200 ms for the ViT-B-32 text tower, first run about as fast).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the export is checked, its warnings are noise here
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = int(threads)
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # a damaged or foreign file: the caller falls back to torch
        raise ExportUnusable(f"onnxruntime cannot load {path}: {exc}") from None


class OnnxTextEncoder:
    """Texts -> vectors with the export's text graph (see the module docstring)."""

    def __init__(self, manifest: Manifest, providers: list, threads: Optional[int] = None, prepack: bool = True):
        if manifest.text is None:
            raise ExportUnusable(f"the export has no text graph: {manifest.unsupported.get('text', 'not exported')}")
        self.model_id = manifest.model_id
        self.dim = manifest.dim
        settings = manifest.text
        self.tokenizer = ClipTokenizer(read_merges(manifest.path(MERGES)), settings["context_length"],
                                       settings["clean"], settings["special_tokens"])
        # Memory-mapped: only the rows of the tokens actually used are ever read.
        self.table = np.load(manifest.path(TOKEN_TABLE), mmap_mode="r")
        self.session = open_session(manifest.path(TEXT_GRAPH), providers, threads, prepack)

    def tokens(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(token ids cut after the last end-of-text, (n, L) int64; end-of-text positions, (n,))."""
        lists = self.tokenizer.token_lists(list(texts))
        ids = np.zeros((len(lists), max(len(t) for t in lists)), np.int64)
        for row, tokens in enumerate(lists):
            ids[row, :len(tokens)] = tokens
        # The pooled position is the largest id's, the end-of-text token, as the torch towers pool.
        eot = ids.argmax(axis=1)
        return ids[:, :int(eot.max()) + 1], eot

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return in_batches(texts, batch_size, self.dim, self._run)

    def _run(self, texts: Sequence[str]) -> np.ndarray:
        ids, eot = self.tokens(texts)
        embedded = np.ascontiguousarray(self.table[ids], dtype=np.float32)
        return self.session.run(None, {"embedded": embedded, "eot": eot})[0]


class OnnxImageEncoder:
    """Decoded images -> vectors with the export's image graph."""

    def __init__(self, manifest: Manifest, providers: list, threads: Optional[int] = None, prepack: bool = True):
        if manifest.image is None:
            raise ExportUnusable(f"the export has no image graph: {manifest.unsupported.get('image', 'not exported')}")
        self.model_id = manifest.model_id
        self.dim = manifest.dim
        cfg = manifest.image
        self.preprocessor = Preprocessor(int(cfg["size"]), tuple(cfg["mean"]), tuple(cfg["std"]),
                                         cfg["interpolation"], cfg["resize_mode"])
        self.session = open_session(manifest.path(IMAGE_GRAPH), providers, threads, prepack)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return in_batches(images, batch_size, self.dim, self._run)

    def _run(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = self.preprocessor.to_array([self.preprocessor(img) for img in images])
        return self.session.run(None, {"pixels": pixels})[0]


def in_batches(items: Sequence, batch_size: int, dim: int, run) -> np.ndarray:
    """``run`` over ``items`` in batches, L2-normalised and stacked: (len(items), dim) float32."""
    out = [l2_normalize(run(items[start:start + batch_size])) for start in range(0, len(items), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)
