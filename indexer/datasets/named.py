"""Benchmarks by name: where their files live under a root folder.

``flickr30k``: ``dataset_flickr30k.json`` (Karpathy split) or the Flickr30k
annotations CSV, and the ``flickr30k-images/`` folder the official archive
unpacks to.  ``coco``: ``dataset_coco.json`` with ``val2014/`` and
``train2014/`` (the 5K test split is in val2014).  ``flickr8k``:
``dataset_flickr8k.json`` and ``Flicker8k_Dataset/`` (sic, as distributed).
``shapes``: the dataset ``sightline demo`` generates.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sightline.indexer.datasets.base import CaptionDataset
from sightline.indexer.datasets.formats import load_annotations
from sightline.search.errors import DatasetError


@dataclass(frozen=True)
class Layout:
    annotations: tuple[str, ...]  # candidate file names, preferred first
    images: tuple[str, ...]  # candidate image folders ("." is the root itself)
    hint: str  # how to get the missing pieces


LAYOUTS = {
    "flickr30k": Layout(
        ("dataset_flickr30k.json", "flickr_annotations_30k.csv", "flickr30k.csv"),
        ("flickr30k-images", "flickr30k-images/flickr30k-images", "flickr30k_images", "images"),
        "Put dataset_flickr30k.json (Karpathy split) or flickr_annotations_30k.csv in ROOT and unpack "
        "the official flickr30k-images.tar.gz there (giving ROOT/flickr30k-images/*.jpg).",
    ),
    "coco": Layout(
        ("dataset_coco.json",),
        (".", "images"),
        "Put dataset_coco.json (Karpathy split) in ROOT and unpack val2014.zip (and train2014.zip for "
        "training) there (giving ROOT/val2014/COCO_val2014_*.jpg).",
    ),
    "flickr8k": Layout(
        ("dataset_flickr8k.json",),
        ("Flicker8k_Dataset", "Flickr8k_Dataset", "images"),
        "Put dataset_flickr8k.json (Karpathy split) in ROOT and unpack Flickr8k_Dataset.zip there.",
    ),
    "shapes": Layout(
        ("dataset_shapes.json",),
        ("images",),
        "Generate it with `sightline demo --no-serve --out ROOT` (or indexer.synthetic.generate).",
    ),
}


def load_named(name: str, root: Path) -> CaptionDataset:
    """Load benchmark ``name`` from ``root``; DatasetError says which piece is missing."""
    if name not in LAYOUTS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(LAYOUTS)} "
                           f"(or give --annotations FILE --images DIR)")
    layout = LAYOUTS[name]
    root = Path(root).expanduser()
    hint = layout.hint.replace("ROOT", str(root))
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist. {hint}")
    annotations = next((root / a for a in layout.annotations if (root / a).is_file()), None)
    if annotations is None:
        raise DatasetError(f"no {name} annotations in {root}: expected {' or '.join(layout.annotations)}. {hint}")
    images = next((root / d for d in layout.images if (root / d).is_dir() and _has_files(root / d)), None)
    if images is None:
        raise DatasetError(f"no {name} image folder in {root}: expected {' or '.join(layout.images)}. {hint}")
    dataset = load_annotations(annotations, images, name=name)
    return dataset


def dataset_hint(name: str, root: Path) -> str:
    layout = LAYOUTS.get(name)
    return layout.hint.replace("ROOT", str(root)) if layout else ""


def _has_files(folder: Path) -> bool:
    try:
        return any(True for _ in folder.iterdir())
    except OSError:
        return False
