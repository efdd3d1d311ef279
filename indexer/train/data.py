"""Training data: splits, one random caption per image per epoch, and caches.

Images are decoded and preprocessed once into a uint8 array file (memory
mapped, in the cache folder) that every epoch reads; captions are
tokenised once.  Every random choice of an epoch derives from (seed,
epoch), so an epoch can be replayed exactly after a resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from sightline.search.atomic import atomic_path
from sightline.indexer.datasets import CaptionDataset, CaptionedImage
from sightline.indexer.datasets.pixels import input_shape, pixel_batches
from sightline.search.errors import DatasetError
from sightline.search.preprocess import Preprocessor

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "restval")  # Karpathy's restval is training data too
VAL_SPLIT = "val"


@dataclass
class Split:
    """Images and their captions; image ``i`` owns captions ``offsets[i]:offsets[i+1]``."""

    images: list[str]
    captions: list[str]
    offsets: np.ndarray

    @classmethod
    def from_items(cls, items: Sequence[CaptionedImage]) -> "Split":
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum([len(item.captions) for item in items], out=offsets[1:])
        return cls([i.image for i in items], [c for i in items for c in i.captions], offsets)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def owner(self) -> np.ndarray:
        """Caption index -> image index."""
        return np.repeat(np.arange(len(self.images)), np.diff(self.offsets))

    def signature(self) -> str:
        """Changes when an image file or a caption changes (cache keys)."""
        digest = hashlib.sha256()
        for path in self.images:
            st = os.stat(path)
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        digest.update(json.dumps(self.captions).encode())
        digest.update(self.offsets.tobytes())
        return digest.hexdigest()[:24]


def train_val_splits(dataset: CaptionDataset, val_max_images: int, seed: int) -> tuple[Split, Split]:
    """Karpathy-style train (+restval) and val splits; without them, a seeded hold-out."""
    splits = dataset.splits()
    if "train" in splits:
        train = [i for i in dataset if i.split in TRAIN_SPLITS]
        val = [i for i in dataset if i.split == VAL_SPLIT]
        if not val:
            train, val = _hold_out(train, val_max_images, seed)
            log.info("%s has no %r split; validating on %d held-out training images", dataset.annotations,
                     VAL_SPLIT, len(val))
    else:
        train, val = _hold_out(list(dataset), val_max_images, seed)
        log.info("%s has no train/val splits; validating on %d held-out images", dataset.annotations, len(val))
    if len(val) > val_max_images:
        val = val[:val_max_images]
    if len(train) < 2:
        raise DatasetError(f"{dataset.annotations} has {len(train)} training image(s); need at least 2")
    return Split.from_items(train), Split.from_items(val)


def _hold_out(items: list, max_images: int, seed: int) -> tuple[list, list]:
    order = np.random.default_rng(seed).permutation(len(items))
    n_val = max(1, min(max_images, len(items) // 20))
    val = set(order[:n_val].tolist())
    return [x for i, x in enumerate(items) if i not in val], [x for i, x in enumerate(items) if i in val]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def one_caption_each(offsets: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """A random caption index for every image."""
    counts = torch.from_numpy(np.diff(offsets))
    pick = (torch.rand(len(counts), generator=generator) * counts).long().clamp(max=counts - 1)
    return offsets[:-1] + pick.numpy()


def tokenize(tokenizer, texts: Sequence[str], chunk: int = 4096) -> torch.Tensor:
    parts = [tokenizer(list(texts[i:i + chunk])) for i in range(0, len(texts), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 1, dtype=torch.long)


def default_cache_dir() -> Path:
    """Where decoded pixels and tower features are cached when no folder is given: the user cache dir."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sightline", appauthor=False))


def cached_pixels(split: Split, preprocessor: Preprocessor, cache_dir: Path, workers: Optional[int] = None,
                  progress: bool = False) -> np.ndarray:
    """All images of ``split`` as preprocessed model input, decoded once and memory-mapped."""
    shape, dtype = input_shape(preprocessor)
    key = hashlib.sha256(json.dumps([split.signature(), preprocessor.size, preprocessor.interpolation,
                                     preprocessor.resize_mode, list(shape), str(dtype)]).encode()).hexdigest()[:24]
    path = Path(cache_dir) / "pixels" / f"{key}.npy"
    if path.is_file():
        try:
            return np.load(path, mmap_mode="r")
        except (OSError, ValueError):
            log.warning("pixel cache %s is damaged; decoding again", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(len(split), *shape))
        for indices, arrays in pixel_batches(split.images, preprocessor, 256, workers, progress, "decoding"):
            out[indices] = np.stack(arrays)
        out.flush()
        del out
    return np.load(path, mmap_mode="r")


def pixel_batch(pixels: np.ndarray, indices: np.ndarray, preprocessor: Preprocessor) -> torch.Tensor:
    """Rows of the pixel cache as a normalised float batch."""
    order = np.argsort(indices)  # sorted reads are kinder to the page cache
    rows = np.empty((len(indices), *pixels.shape[1:]), dtype=pixels.dtype)
    rows[order] = pixels[indices[order]]
    return preprocessor.to_batch(list(rows))
