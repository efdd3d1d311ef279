"""Retrieval metrics: recall@k over a similarity matrix.

Pure functions over numpy arrays; nothing here knows about models or files.

Ties are ranked pessimistically: an irrelevant item that scores exactly as
high as the best relevant one is counted as ranked before it.  Otherwise a
degenerate model (every embedding equal, so every score tied) would get
perfect recall; argsort-based implementations silently depend on the
sort's tie order instead.  ``ties="optimistic"`` gives the other bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

DEFAULT_KS = (1, 5, 10)
#: Queries scored per block, so a 25,000 x 5,000 COCO matrix never sits in memory twice.
_BLOCK = 1024


def best_relevant_ranks(scores: np.ndarray, relevant: Sequence[Iterable[int]], ties: str = "pessimistic") -> np.ndarray:
    """The 0-based rank of each query's best-ranked relevant item.

    ``scores`` is (queries, items), higher is more similar; ``relevant[q]``
    lists the items relevant to query ``q`` (at least one).  The rank is the
    number of irrelevant items that beat the best relevant item's score
    (other relevant items never push it down); ties count as beating it
    unless ``ties="optimistic"``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D (queries, items) matrix, not shape {scores.shape}")
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{scores.shape[0]} queries but relevance given for {len(relevant)}")
    if ties not in ("pessimistic", "optimistic"):
        raise ValueError(f"ties must be 'pessimistic' or 'optimistic', not {ties!r}")
    mask = relevance_mask(relevant, scores.shape[1])
    return ranks_from_mask(scores, mask, ties)


def relevance_mask(relevant: Sequence[Iterable[int]], n_items: int) -> np.ndarray:
    """A boolean (queries, items) matrix from lists of relevant item indices."""
    mask = np.zeros((len(relevant), n_items), dtype=bool)
    for q, items in enumerate(relevant):
        items = np.fromiter((int(i) for i in items), dtype=np.int64)
        if items.size == 0:
            raise ValueError(f"query {q} has no relevant item")
        if items.min() < 0 or items.max() >= n_items:
            raise ValueError(f"query {q} names an item outside 0..{n_items - 1}")
        mask[q, items] = True
    return mask


def ranks_from_mask(scores: np.ndarray, mask: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """:func:`best_relevant_ranks` with relevance as a boolean matrix the shape of ``scores``."""
    if scores.shape != mask.shape:
        raise ValueError(f"scores {scores.shape} and relevance {mask.shape} differ in shape")
    if not mask.any(axis=1).all():
        raise ValueError("every query needs at least one relevant item")
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    for start in range(0, scores.shape[0], _BLOCK):
        s = scores[start:start + _BLOCK]
        m = mask[start:start + _BLOCK]
        best = np.where(m, s, -np.inf).max(axis=1, keepdims=True)
        beats = s >= best if ties == "pessimistic" else s > best
        ranks[start:start + _BLOCK] = (beats & ~m).sum(axis=1)
    return ranks


def recall_from_ranks(ranks: np.ndarray, ks: Iterable[int] = DEFAULT_KS) -> dict[int, float]:
    """Fraction of queries whose best relevant item is in the top k, per k."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to score")
    return {int(k): float(np.mean(ranks < k)) for k in ks}


def recall_at_k(scores: np.ndarray, relevant: Sequence[Iterable[int]], ks: Iterable[int] = DEFAULT_KS,
                ties: str = "pessimistic") -> dict[int, float]:
    """Recall@k (a fraction in [0, 1]) for each k: see :func:`best_relevant_ranks`."""
    return recall_from_ranks(best_relevant_ranks(scores, relevant, ties), ks)


def recall_curve(ranks: np.ndarray, max_k: int = 50) -> np.ndarray:
    """Recall@k for k = 1..max_k, as fractions."""
    ranks = np.asarray(ranks)
    counts = np.bincount(np.minimum(ranks, max_k), minlength=max_k + 1)[:max_k]
    return np.cumsum(counts) / ranks.size


# ------------------------------------------------------- image-text retrieval
@dataclass(frozen=True)
class RetrievalResult:
    """Ranks of both directions of image-text retrieval."""

    t2i_ranks: np.ndarray  # per caption: rank of its image among all images
    i2t_ranks: np.ndarray  # per image: rank of its best caption among all captions

    def summary(self, ks: Sequence[int] = DEFAULT_KS) -> dict:
        """``{"t2i": {"R@1": %, ...}, "i2t": {...}, "rsum": sum of all six}``, in percent."""
        out: dict = {}
        rsum = 0.0
        for direction, ranks in (("t2i", self.t2i_ranks), ("i2t", self.i2t_ranks)):
            recalls = recall_from_ranks(ranks, ks)
            out[direction] = {f"R@{k}": round(100 * r, 2) for k, r in recalls.items()}
            rsum += sum(100 * r for r in recalls.values())
        out["rsum"] = round(rsum, 2)
        out["images"] = int(self.i2t_ranks.size)
        out["captions"] = int(self.t2i_ranks.size)
        return out

    def curves(self, max_k: int = 50) -> dict[str, np.ndarray]:
        return {"t2i": recall_curve(self.t2i_ranks, max_k), "i2t": recall_curve(self.i2t_ranks, max_k)}


def image_text_retrieval(image_vectors: np.ndarray, text_vectors: np.ndarray,
                         text_to_image: Sequence[int], ties: str = "pessimistic") -> RetrievalResult:
    """Both directions for (images, captions) with ``text_to_image[c]`` = caption c's image.

    Text->image: each caption ranks every image, its own image is relevant.
    Image->text: each image ranks every caption, its own captions are relevant.
    Vectors are compared by inner product (cosine for normalised vectors).
    """
    image_vectors = np.asarray(image_vectors, dtype=np.float32)
    text_vectors = np.asarray(text_vectors, dtype=np.float32)
    owner = np.asarray(text_to_image, dtype=np.int64)
    n_images, n_texts = image_vectors.shape[0], text_vectors.shape[0]
    if owner.shape != (n_texts,):
        raise ValueError(f"{n_texts} captions but text_to_image has shape {owner.shape}")
    if n_texts and (owner.min() < 0 or owner.max() >= n_images):
        raise ValueError(f"text_to_image names an image outside 0..{n_images - 1}")
    if np.bincount(owner, minlength=n_images).min(initial=1) == 0:
        raise ValueError("every image needs at least one caption")
    t2i = np.empty(n_texts, dtype=np.int64)
    for start in range(0, n_texts, _BLOCK):
        block = text_vectors[start:start + _BLOCK] @ image_vectors.T
        mask = np.zeros(block.shape, dtype=bool)
        mask[np.arange(block.shape[0]), owner[start:start + _BLOCK]] = True
        t2i[start:start + _BLOCK] = ranks_from_mask(block, mask, ties)
    i2t = np.empty(n_images, dtype=np.int64)
    for start in range(0, n_images, _BLOCK):
        block = image_vectors[start:start + _BLOCK] @ text_vectors.T
        mask = owner[None, :] == np.arange(start, start + block.shape[0])[:, None]
        i2t[start:start + _BLOCK] = ranks_from_mask(block, mask, ties)
    return RetrievalResult(t2i, i2t)


def format_table(summary: Mapping, title: str = "") -> str:
    """A small fixed-width table of a :meth:`RetrievalResult.summary`."""
    lines = [title] if title else []
    ks = list(summary["t2i"])
    lines.append(f"{'':16}" + "".join(f"{k:>8}" for k in ks))
    for direction, label in (("t2i", "text -> image"), ("i2t", "image -> text")):
        lines.append(f"{label:16}" + "".join(f"{summary[direction][k]:8.2f}" for k in ks))
    lines.append(f"{'rsum':16}{summary['rsum']:8.2f}")
    return "\n".join(lines)
