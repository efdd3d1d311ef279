"""Captions for indexed images: from a dataset file or ``.txt`` sidecars.

Captions are embedded with the index's model and stored with their image, so
image->text search (and showing captions) works.  Re-running is idempotent:
an image whose captions from a source are already exactly those given is
left alone; changed captions replace the old ones from the same source, so a
dataset and sidecar files can both describe one image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Union

from sightline.indexer.datasets import load_annotations
from sightline.search.encoder import LazyEncoder
from sightline.search.store import Store

log = logging.getLogger(__name__)

SOURCE_DATASET = "dataset"
SOURCE_SIDECAR = "sidecar"


def load_caption_file(path: os.PathLike | str, images_root: os.PathLike | str) -> dict[str, list[str]]:
    """Absolute image path -> captions, from any supported dataset format, every split."""
    return load_annotations(Path(path), Path(images_root)).captions_by_image()


def sidecar_captions(image_path: os.PathLike | str) -> list[str]:
    """Captions from ``photo.txt`` next to ``photo.jpg``: one per non-empty line."""
    sidecar = Path(image_path).with_suffix(".txt")
    try:
        text = sidecar.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return []
    except OSError as exc:
        log.warning("cannot read caption file %s: %s", sidecar, exc)
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def sidecars_under(store: Store, root: os.PathLike | str) -> dict[str, list[str]]:
    """Sidecar captions of every indexed image under ``root`` (empty lists included,
    so captions of a deleted sidecar are removed)."""
    root = os.path.abspath(root)
    under = None if os.path.isfile(root) else root
    paths = [p for p in store.file_states(under) if under is not None or p == root]
    return {p: sidecar_captions(p) for p in paths}


def caption_run(store: Store, encoder, root: os.PathLike | str, captions_file: Optional[os.PathLike | str] = None,
                batch_size: int = 64) -> int:
    """Captions after indexing ``root``: from ``captions_file`` (image paths relative to
    ``root``) and from sidecar files.  ``encoder`` may be a factory: it is called
    only if something needs embedding.  Returns how many captions were added."""
    root = os.path.abspath(root)
    added = 0
    with store.writer(scopes=[root]):
        if captions_file is not None:
            base = root if os.path.isdir(root) else os.path.dirname(root)
            added += index_captions(store, encoder, load_caption_file(captions_file, base), batch_size)
        sidecars = sidecars_under(store, root)
        # Without any sidecar and without any stored caption there is nothing to add or remove.
        if any(sidecars.values()) or store.counts()["captions"]:
            added += index_captions(store, encoder, sidecars, batch_size, SOURCE_SIDECAR)
    return added


EncoderOrFactory = Union[object, Callable[[], object]]


def index_captions(store: Store, encoder: EncoderOrFactory, captions: Mapping[str, Sequence[str]],
                   batch_size: int = 64, source: str = SOURCE_DATASET) -> int:
    """Embed and store ``captions`` (image path -> texts) for images in the index.

    Images that are not indexed are skipped (logged).  ``encoder`` may be a
    zero-argument factory, called only when there is something to embed.
    Returns how many captions were embedded and added.
    """
    get_encoder = LazyEncoder(encoder, store.model_info, f"the index at {store.location}").get
    states = store.file_states()
    wanted: list[tuple[int, list[str]]] = []
    stale: list[int] = []
    not_indexed = 0
    for path, texts in captions.items():
        state = states.get(os.path.abspath(path))
        if state is None:
            not_indexed += 1
            continue
        texts = list(dict.fromkeys(t.strip() for t in texts if t.strip()))  # dedupe, keep order
        current = [c for c in store.captions_for_file(state.id) if c.source == source]
        if [c.text for c in current] == texts:
            continue
        stale.extend(c.id for c in current)
        if texts:
            wanted.append((state.id, texts))
    if not_indexed:
        log.info("%d image(s) with captions are not in the index; their captions were skipped", not_indexed)
    added = _embed_and_add(store, get_encoder, wanted, batch_size, source) if wanted else 0
    # Old captions go after the new ones are in: a crash in between leaves
    # duplicates that the next run replaces, never an image without captions.
    if stale:
        store.remove_captions(stale)
    return added


def _embed_and_add(store: Store, get_encoder: Callable[[], object], wanted: list[tuple[int, list[str]]],
                   batch_size: int, source: str) -> int:
    encoder = get_encoder()
    flat = [(file_id, text) for file_id, texts in wanted for text in texts]
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        vectors = encoder.encode_texts([text for _, text in chunk], batch_size=batch_size)
        store.add_captions([(file_id, text, source, vector) for (file_id, text), vector in zip(chunk, vectors)])
    return len(flat)
