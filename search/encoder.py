"""The encoder interface and its open_clip implementation.

An encoder turns images and texts into L2-normalised float32 vectors in one
shared space.  :class:`Encoder` is the interface the engine, the indexer and
the tests rely on; :class:`ClipEncoder` wraps any module with
``encode_image``/``encode_text`` (an open_clip model, or a Sightline-trained
dual encoder with projection heads); :class:`LazyEncoder` loads one on first
use and checks it against the index.  Loading lives in ``search.models``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from sightline.search.errors import ModelMismatchError
from sightline.search.preprocess import Preprocessor

log = logging.getLogger(__name__)


@runtime_checkable
class Encoder(Protocol):
    model_id: str
    dim: int

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class ClipEncoder:
    """Dual encoder over a torch module with ``encode_image`` and ``encode_text``.

    ``preprocessor`` is picklable and torch-free on its fast path, so decode
    workers can run it; :meth:`encode_preprocessed` takes what it returns.
    """

    def __init__(self, model, tokenizer: Callable, preprocessor: Preprocessor, model_id: str, *,
                 device: str = "cpu", name: str = "", pretrained: str = "", precision: str = "fp32"):
        import torch

        from sightline.search.text_fast import text_encoder_fn

        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.model = model.to(device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.preprocessor = preprocessor
        self.model_id = model_id
        self.device = device
        self.name = name
        self.pretrained = pretrained
        self.precision = precision
        self._encode_text = text_encoder_fn(self.model)
        # The width is read off the model: projection heads may change it.
        self.dim = int(self.encode_texts(["a photo"]).shape[1])

    @property
    def image_size(self) -> int:
        return self.preprocessor.size

    # ----------------------------------------------------------------- images
    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        """Embed decoded PIL images (any mode) with the model's own preprocessing."""
        out = []
        for start in range(0, len(images), batch_size):
            arrays = [self.preprocessor(img) for img in images[start:start + batch_size]]
            out.append(self.encode_preprocessed(arrays))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_preprocessed(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """Embed one batch of arrays produced by :attr:`preprocessor`."""
        import torch

        pixels = self.preprocessor.to_batch(arrays).to(self.device, self.dtype)
        with torch.inference_mode():
            features = self.model.encode_image(pixels)
        return l2_normalize(features.float().cpu().numpy())

    # ------------------------------------------------------------------ texts
    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start:start + batch_size])).to(self.device)
            with torch.inference_mode():
                features = self._encode_text(tokens)
            out.append(l2_normalize(features.float().cpu().numpy()))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def __repr__(self) -> str:
        return f"ClipEncoder({self.model_id!r}, dim={self.dim}, device={self.device!r}, precision={self.precision!r})"


class LazyEncoder:
    """An encoder made on first use, once, and checked against the index's model.

    ``source`` is an encoder or a zero-argument factory returning one; a
    factory is called only when something needs the model, so work that
    never embeds (a rescan of unchanged files, status, metadata) never loads
    torch.  ``recorded`` returns the model the index records (``None`` while
    it is empty); an encoder of another model raises
    :class:`~sightline.search.errors.ModelMismatchError` instead of being used.
    """

    def __init__(self, source: "Encoder | Callable[[], Encoder]", recorded: Callable[[], object],
                 index: object = "the index"):
        self._encoder = source if hasattr(source, "encode_texts") else None
        self._factory = None if self._encoder is not None else source
        self._recorded = recorded
        self._index = index
        self._lock = threading.Lock()
        self._checked = False

    @property
    def loaded(self) -> bool:
        return self._encoder is not None and self._checked

    def get(self) -> Encoder:
        if not self.loaded:
            with self._lock:
                if not self.loaded:
                    encoder = self._encoder if self._encoder is not None else self._factory()
                    check_model(self._recorded(), encoder.model_id, self._index)
                    self._encoder, self._checked = encoder, True
        return self._encoder


def check_model(recorded, model_id: str, index: object = "the index") -> None:
    """Refuse a model (``model_id``) other than the one the index records
    (``recorded``: its ModelInfo, or None while it is empty)."""
    if recorded is not None and recorded.model_id != model_id:
        raise ModelMismatchError(
            f"{index} holds vectors from model {recorded.model_id!r}, not {model_id!r}; use the same model "
            f"(omit --model/--pretrained: the index's own is used), or re-index into a new folder with --index NEW_DIR."
        )


def default_device(requested: Optional[str] = None) -> str:
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
