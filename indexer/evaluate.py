"""Benchmarking a model: embed a dataset split, compute recall both ways, plot it.

Text->image: every caption ranks every image of the split; image->text:
every image ranks every caption (Flickr30k / COCO 5K protocol).  The
metrics themselves are pure functions in :mod:`search.metrics`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from sightline.indexer.datasets import CaptionDataset
from sightline.indexer.datasets.pixels import pixel_batches
from sightline.search.errors import SightlineError
from sightline.search.imageio import DEFAULT_MAX_PIXELS
from sightline.search.metrics import RetrievalResult, format_table, image_text_retrieval

log = logging.getLogger(__name__)

#: Benchmarks score the first five captions of each image (COCO has a few with six or seven).
BENCHMARK_CAPTIONS = 5


class PlotUnavailableError(SightlineError):
    """matplotlib is not installed, so no plot can be drawn."""


@dataclass
class EvalResult:
    dataset: str
    split: str
    model_id: str
    retrieval: RetrievalResult
    seconds: float

    @property
    def summary(self) -> dict:
        return self.retrieval.summary()

    def as_dict(self) -> dict:
        return {**self.summary, "dataset": self.dataset, "split": self.split, "model": self.model_id,
                "seconds": round(self.seconds, 2)}

    def table(self) -> str:
        s = self.summary
        title = (f"{self.dataset} [{self.split}]: {s['images']} images, {s['captions']} captions; "
                 f"model {self.model_id}")
        return format_table(s, title)


def embed_dataset(encoder, dataset: CaptionDataset, batch_size: int = 64, workers: Optional[int] = None,
                  progress: bool = False, max_captions: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image vectors, caption vectors, caption -> image index) for every image of ``dataset``."""
    from tqdm import tqdm

    paths = [item.image for item in dataset]
    image_vectors: Optional[np.ndarray] = None
    bar = tqdm(total=len(paths), desc="images", unit="img", file=sys.stderr, disable=not progress)
    for indices, arrays in pixel_batches(paths, encoder.preprocessor, batch_size, workers, max_pixels=max_pixels):
        vectors = encoder.encode_preprocessed(arrays)
        if image_vectors is None:
            image_vectors = np.zeros((len(paths), vectors.shape[1]), np.float32)
        image_vectors[indices] = vectors
        bar.update(len(indices))
    bar.close()
    texts, owner = [], []
    for i, item in enumerate(dataset):
        captions = item.captions[:max_captions] if max_captions else item.captions
        texts.extend(captions)
        owner.extend([i] * len(captions))
    text_vectors = np.concatenate([
        encoder.encode_texts(texts[s:s + 1024], batch_size=batch_size)
        for s in tqdm(range(0, len(texts), 1024), desc="captions", unit="chunk", file=sys.stderr,
                      disable=not progress)
    ]) if texts else np.zeros((0, encoder.dim), np.float32)
    if image_vectors is None:
        image_vectors = np.zeros((0, encoder.dim), np.float32)
    return image_vectors, text_vectors, np.asarray(owner, dtype=np.int64)


def evaluate(encoder, dataset: CaptionDataset, split_name: str, batch_size: int = 64,
             workers: Optional[int] = None, progress: bool = False,
             max_captions: Optional[int] = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> EvalResult:
    """Recall@k both ways on ``dataset`` (already narrowed to the split)."""
    started = time.perf_counter()
    images, texts, owner = embed_dataset(encoder, dataset, batch_size, workers, progress, max_captions, max_pixels)
    retrieval = image_text_retrieval(images, texts, owner)
    return EvalResult(dataset.name, split_name, encoder.model_id, retrieval, time.perf_counter() - started)


def plot_recall(results: Sequence[EvalResult], path: Path, max_k: int = 50) -> Path:
    """Recall@k for k = 1..max_k, both directions, one line per result; a PNG at ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailableError(
            "matplotlib is not installed, so no plot was drawn; install it with "
            "`pip install 'sightline[plot]'` (or `pip install matplotlib`)"
        ) from None
    ks = np.arange(1, max_k + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, direction, label in ((axes[0], "t2i", "text \u2192 image"), (axes[1], "i2t", "image \u2192 text")):
        for result in results:
            curve = 100 * result.retrieval.curves(max_k)[direction]
            ax.plot(ks, curve, label=f"{result.model_id} (R@1 {curve[0]:.1f})")
        ax.set_title(f"{label}: {results[0].dataset} [{results[0].split}]")
        ax.set_xlabel("k")
        ax.set_xlim(1, max_k)
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("recall@k (%)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
