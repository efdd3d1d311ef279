"""Caption datasets: loaders yielding ``(image file, [captions], split)``."""

from sightline.indexer.datasets.base import NO_SPLIT, CaptionDataset, CaptionedImage
from sightline.indexer.datasets.formats import detect_format, load_annotations
from sightline.indexer.datasets.named import LAYOUTS, dataset_hint, load_named

__all__ = ["NO_SPLIT", "CaptionDataset", "CaptionedImage", "LAYOUTS", "dataset_hint", "detect_format",
           "load_annotations", "load_named"]
