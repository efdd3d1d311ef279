"""The encoder searches use: the index's ONNX export where it has one, torch otherwise.

:func:`open_query_encoder` decides, without importing torch, from the model
the index records (or the one asked for, which must match it) and the export
in the index folder.  With an export, text queries never load torch; image
queries use the image graph, or (for an image tower the export does not
cover) the torch encoder, loaded on the first image query.  Without one, the
torch encoder serves everything, as before, and one log line says why and
what to do.  Either way the encoder carries the index's model id, so
:class:`~sightline.search.encoder.LazyEncoder` still refuses another model.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from sightline.search.encoder import Encoder, check_model
from sightline.search.errors import ModelMismatchError
from sightline.search.onnx_files import ExportUnusable, Manifest, NoExport, find_export

log = logging.getLogger(__name__)


class QueryEncoder:
    """ONNX text (and image) towers over one export, with torch for a tower it lacks."""

    def __init__(self, manifest: Manifest, providers: list, threads: Optional[int],
                 torch_factory: Callable[[], Encoder], prepack: bool = True):
        from sightline.search.onnx_encoder import OnnxTextEncoder

        self.manifest = manifest
        self.model_id = manifest.model_id
        self.dim = manifest.dim
        self.text = OnnxTextEncoder(manifest, providers, threads, prepack)
        self._session_args = (providers, threads, prepack)
        self._torch_factory = torch_factory
        self._image: Optional[object] = None
        self._lock = threading.Lock()

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        return self.text.encode_texts(texts, batch_size)

    def encode_images(self, images: Sequence[Image.Image], batch_size: int = 32) -> np.ndarray:
        return self.image_encoder().encode_images(images, batch_size)

    def image_encoder(self):
        """The image graph's encoder, or the torch encoder; made on the first image query."""
        if self._image is None:
            with self._lock:
                if self._image is None:
                    self._image = self._open_image()
        return self._image

    def _open_image(self):
        from sightline.search.onnx_encoder import OnnxImageEncoder

        try:
            return OnnxImageEncoder(self.manifest, *self._session_args)
        except ExportUnusable as why:
            log.info("image queries use torch: %s", why)
        encoder = self._torch_factory()
        if encoder.model_id != self.model_id:
            raise ModelMismatchError(f"the ONNX export is of model {self.model_id!r}, the torch encoder of "
                                     f"{encoder.model_id!r}; re-export with `sightline export --force`")
        return encoder

    def warm_up(self, lengths: int = 24) -> None:
        """Run both towers, so that no query pays for a first run (the server's start).

        onnxruntime plans its buffers per input shape: the text tower runs once
        at each query length up to ``lengths`` tokens (a few dozen ms in all).
        """
        for words in range(1, lengths - 1):
            self.encode_texts([" ".join(["photo"] * words)])
        self.encode_images([Image.new("RGB", (64, 64), (127, 127, 127))])

    def __repr__(self) -> str:
        return f"QueryEncoder({self.model_id!r}, dim={self.dim}, onnx)"


def open_query_encoder(settings, store, torch_factory: Optional[Callable[[], Encoder]] = None) -> Encoder:
    """The encoder for searching ``store`` with ``settings`` (see the module docstring).

    ``torch_factory`` loads the torch encoder (default: the settings' own).
    """
    torch_factory = torch_factory or settings.encoder_factory(store)
    recorded = store.model_info()
    if not settings.onnx or recorded is None:
        return torch_factory()  # asked for torch; or an empty index, which has no export yet
    model_id = recorded.model_id
    if settings.model.explicit:
        from sightline.search.models import model_id_for

        model_id = model_id_for(settings.spec_for(store))
        check_model(recorded, model_id, f"the index at {store.root}")  # before anything is loaded
    try:
        from sightline.search.onnx_encoder import providers_for

        manifest = find_export(store.root, model_id)
        if manifest.text is None:  # an architecture the export does not cover: known, nothing to do
            log.info("searching with torch: %s", manifest.unsupported.get("text", "no text graph"))
            return torch_factory()
        return QueryEncoder(manifest, providers_for(settings.device), settings.threads, torch_factory,
                            prepack=not settings.single_query)
    except NoExport:
        log.warning("searching with torch (slow to start): this index has no ONNX export of its model yet; "
                    "`sightline export --index %s` makes one once", store.root)
    except ExportUnusable as why:
        log.warning("searching with torch: %s", why)
    except ImportError as exc:  # onnxruntime missing from this installation
        log.warning("searching with torch: onnxruntime cannot be imported (%s)", exc)
    return torch_factory()
