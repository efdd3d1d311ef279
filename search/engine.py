"""The query engine: the one object the CLI and the web app search through.

Given an encoder and a store, it answers text->image, image->image and
image->text queries.  The encoder is loaded lazily (status and metadata
queries never need the model) and recent text-query embeddings are cached.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
from PIL import Image

from sightline.search.encoder import Encoder, LazyEncoder
from sightline.search.errors import InvalidQueryError
from sightline.search.settings import Settings
from sightline.search.store import Kind, Store
from sightline.search.store_records import CaptionRow, FileRow

log = logging.getLogger(__name__)

MAX_QUERY_CHARS = 1000
MAX_K = 1000


@dataclass(frozen=True)
class ImageHit:
    id: int
    score: float
    file: FileRow

    @property
    def path(self) -> str:
        return self.file.path


@dataclass(frozen=True)
class CaptionHit:
    id: int
    score: float
    caption: CaptionRow


class SearchEngine:
    """Search an index.  ``encoder`` may be an encoder or a zero-argument
    factory returning one (called on first use, once)."""

    def __init__(self, store: Store, encoder: "Encoder | Callable[[], Encoder]", cache_size: int = 256):
        self.store = store
        self._encoder = LazyEncoder(encoder, store.model_info, f"the index at {store.location}")
        # One forward pass at a time: torch already spreads each one over all
        # cores, and concurrent passes only fight over them (each caller
        # thread gets its own OpenMP team), which costs more than it overlaps.
        self._model_lock = threading.Lock()
        self._text_cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = cache_size

    @classmethod
    def open(cls, settings: Settings) -> "SearchEngine":
        """Open the existing index of ``settings``; the model is the one the index
        was built with unless ``settings.model`` names another (which must then match it).

        The model is chosen when first needed, not now: an index that is
        still empty gets the model its first indexing run records.  Queries
        run on the index's ONNX export where it has one (no torch).
        """
        store = settings.open_store()
        return cls(store, settings.query_encoder_factory(store))

    def close(self) -> None:
        self.store.close()

    @property
    def encoder(self) -> Encoder:
        return self._encoder.get()

    @property
    def model_loaded(self) -> bool:
        return self._encoder.loaded

    # ------------------------------------------------------------- embeddings
    def embed_text(self, query: str) -> np.ndarray:
        query = _validate_text(query)
        with self._cache_lock:
            cached = self._text_cache.get(query)
            if cached is not None:
                self._text_cache.move_to_end(query)
                return cached
        encoder = self.encoder
        with self._model_lock:
            vector = encoder.encode_texts([query])[0]
        with self._cache_lock:
            self._text_cache[query] = vector
            while len(self._text_cache) > self._cache_size:
                self._text_cache.popitem(last=False)
        return vector

    def embed_image(self, image: Image.Image) -> np.ndarray:
        encoder = self.encoder
        with self._model_lock:
            return encoder.encode_images([image])[0]

    # ---------------------------------------------------------------- queries
    def search_text(self, query: str, k: int = 20, offset: int = 0, min_score: Optional[float] = None) -> list[ImageHit]:
        """Images best matching a text query, best first."""
        return self.search_vector(self.embed_text(query), k, offset, min_score)

    def search_image(self, image: Image.Image, k: int = 20, offset: int = 0,
                     min_score: Optional[float] = None) -> list[ImageHit]:
        """Images most similar to a decoded image."""
        return self.search_vector(self.embed_image(image), k, offset, min_score)

    def similar_to(self, file_id: int, k: int = 20, offset: int = 0,
                   min_score: Optional[float] = None) -> list[ImageHit]:
        """"More like this": neighbours of an indexed image, itself excluded."""
        k, offset = _validate_page(k, offset)
        vector = self.store.file_embedding(file_id)
        # One neighbour more than the page, as the image itself is dropped.  The page
        # limit applies to k, not to k + offset + 1 (which made every valid request
        # with k + offset >= MAX_K fail).
        found = [(i, s) for i, s in self._neighbours(vector, k + offset + 1, min_score) if i != int(file_id)]
        return self._hits(found[offset:offset + k])

    def search_vector(self, vector: np.ndarray, k: int = 20, offset: int = 0,
                      min_score: Optional[float] = None) -> list[ImageHit]:
        k, offset = _validate_page(k, offset)
        return self._hits(self._neighbours(vector, k + offset, min_score)[offset:])

    def _neighbours(self, vector: np.ndarray, n: int, min_score: Optional[float]) -> list[tuple[int, float]]:
        """The n nearest (id, score), best first, cut at min_score."""
        if self._is_empty():
            return []
        found = self.store.search(Kind.FILES, vector, n)
        return found if min_score is None else [(i, s) for i, s in found if s >= min_score]

    def _hits(self, found: list[tuple[int, float]]) -> list[ImageHit]:
        rows = self.store.get_files([i for i, _ in found])
        # A file removed between the vector search and the row lookup is skipped.
        return [ImageHit(i, s, rows[i]) for i, s in found if i in rows]

    def captions_for_image(self, image: Optional[Image.Image] = None, file_id: Optional[int] = None,
                           k: int = 10) -> list[CaptionHit]:
        """Image->text: the stored captions that best match an image."""
        if (image is None) == (file_id is None):
            raise InvalidQueryError("give exactly one of an image or an indexed image id")
        k, _ = _validate_page(k, 0)
        vector = self.embed_image(image) if image is not None else self.store.file_embedding(file_id)
        if self._is_empty() or self.store.counts()["captions"] == 0:
            return []
        found = self.store.search(Kind.CAPTIONS, vector, k)
        rows = self.store.get_captions([i for i, _ in found])
        return [CaptionHit(i, s, rows[i]) for i, s in found if i in rows]

    def _is_empty(self) -> bool:
        return self.store.model_info() is None

    def get_image(self, file_id: int) -> FileRow:
        return self.store.get_file(file_id)

    def status(self) -> dict:
        info = self.store.model_info()
        counts = self.store.counts()
        return {
            "index": self.store.location,
            "backend": self.store.backend,
            "images": counts["images"],
            "captions": counts["captions"],
            "failed": counts["failed"],
            "model": info.model_id if info else None,
            "model_name": info.name if info else None,
            "pretrained": info.pretrained if info else None,
            "dim": info.dim if info else None,
            "disk_bytes": self.store.disk_bytes(),
            "last_run": self.store.last_run(),
        }


def _validate_text(query: str) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidQueryError("the query text is empty")
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidQueryError(f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}")
    return query.strip()


def _validate_page(k: int, offset: int) -> tuple[int, int]:
    if not 1 <= int(k) <= MAX_K:
        raise InvalidQueryError(f"k must be between 1 and {MAX_K}")
    if int(offset) < 0:
        raise InvalidQueryError("offset must not be negative")
    return int(k), int(offset)
