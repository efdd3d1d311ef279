"""Frozen tower features for ``heads`` mode, computed once and cached on disk.

With the towers frozen, an image's (and a caption's) tower output never
changes, so the heads train on stored features: each epoch costs a few
matrix products instead of a pass through the towers.  The cache is keyed
by the towers' identity and the split's files and captions.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from pathlib import Path
from typing import Optional

import torch

from sightline.search.atomic import atomic_path
from sightline.indexer.datasets.pixels import pixel_batches
from sightline.indexer.train.data import Split, tokenize

log = logging.getLogger(__name__)


def tower_features(model, split: Split, cache_dir: Path, device: str = "cpu", batch_size: int = 64,
                   workers: Optional[int] = None, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(image features, caption features) of ``split`` from the frozen towers (float32, CPU)."""
    towers = model.towers
    key = hashlib.sha256(f"{towers.model_id}\0{split.signature()}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "features" / f"{key}.pt"
    if path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            return cached["images"], cached["texts"]
        except Exception as exc:  # a damaged cache is recomputed, never fatal
            log.warning("feature cache %s is unreadable (%s); recomputing", path, exc)
    images, texts = _compute(model, split, device, batch_size, workers, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"images": images, "texts": texts}, tmp)
    return images, texts


@torch.inference_mode()
def _compute(model, split: Split, device: str, batch_size: int, workers: Optional[int],
             progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from tqdm import tqdm

    clip = model.dual.clip.to(device).eval()
    preprocessor = model.towers.preprocessor
    images: Optional[torch.Tensor] = None
    for indices, arrays in pixel_batches(split.images, preprocessor, batch_size, workers, progress,
                                         "image features"):
        features = clip.encode_image(preprocessor.to_batch(arrays).to(device)).float().cpu()
        if images is None:
            images = torch.empty(len(split), features.shape[1])
        images[torch.from_numpy(indices)] = features
    tokens = tokenize(model.towers.tokenizer, split.captions)
    parts = []
    for start in tqdm(range(0, len(tokens), batch_size), desc="text features", unit="batch", file=sys.stderr,
                      disable=not progress, leave=False):
        parts.append(clip.encode_text(tokens[start:start + batch_size].to(device)).float().cpu())
    return images, torch.cat(parts)
