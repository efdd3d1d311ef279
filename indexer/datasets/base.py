"""What every caption dataset loader returns, and checks shared by all."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Optional

from sightline.search.errors import DatasetError

#: Split name given to items of a dataset that has no splits.
NO_SPLIT = "all"


class CaptionedImage(NamedTuple):
    """One image with its captions; unpacks as ``(image, captions, split)``."""

    image: str  # absolute path
    captions: list[str]
    split: str


@dataclass
class CaptionDataset:
    """Images with captions, read from ``annotations``; images under ``images_root``."""

    name: str
    annotations: Path
    images_root: Path
    items: list[CaptionedImage] = field(default_factory=list)

    def __iter__(self) -> Iterator[CaptionedImage]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def splits(self) -> dict[str, int]:
        """Images per split, in first-seen order."""
        return dict(Counter(item.split for item in self.items))

    @property
    def has_splits(self) -> bool:
        return set(self.splits()) != {NO_SPLIT}

    def split(self, *names: str) -> "CaptionDataset":
        """The images of the given split(s); ``all`` means every image."""
        if not names or NO_SPLIT in names:
            return self
        available = self.splits()
        unknown = [n for n in names if n not in available]
        if unknown:
            have = ", ".join(f"{k} ({v} images)" for k, v in available.items()) or "none"
            raise DatasetError(
                f"{self.annotations} has no split {unknown[0]!r}; its splits are: {have}. "
                f"Pick one with --split (or --split all for every image)."
            )
        return CaptionDataset(self.name, self.annotations, self.images_root,
                              [item for item in self.items if item.split in names])

    def captions_by_image(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for item in self.items:
            out.setdefault(item.image, []).extend(item.captions)
        return out

    def check_images(self, hint: str = "") -> None:
        """Raise :class:`DatasetError` naming what is missing when image files are absent."""
        if not self.images_root.is_dir():
            raise DatasetError(f"image folder {self.images_root} does not exist. {hint}".strip())
        missing = [item.image for item in self.items if not os.path.isfile(item.image)]
        if not missing:
            return
        if len(missing) == len(self.items):
            raise DatasetError(
                f"none of the {len(missing)} images listed in {self.annotations.name} is in {self.images_root} "
                f"(first expected: {missing[0]}). Is the image folder right? {hint}".strip()
            )
        examples = ", ".join(missing[:5])
        raise DatasetError(
            f"{len(missing)} of {len(self.items)} images listed in {self.annotations.name} are missing from "
            f"{self.images_root} (e.g. {examples}). The image folder is incomplete; {hint or 'restore them.'}"
        )


def require_file(path: Path, what: str, hint: str = "") -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{what} {path} does not exist{'' if path.parent.is_dir() else ' (nor its folder)'}. "
                           f"{hint}".strip())
    return path


def check_captions(captions: list, where: str) -> list[str]:
    """Captions as a list of non-empty stripped strings, or a DatasetError naming ``where``."""
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DatasetError(f"{where}: captions must be a list of strings")
    cleaned = [c.strip() for c in captions if c.strip()]
    if not cleaned:
        raise DatasetError(f"{where}: no captions")
    return cleaned


def image_path(images_root: Path, name: str, subdir: Optional[str] = None) -> str:
    """Absolute path of an image named in an annotation file (absolute names are kept)."""
    if os.path.isabs(name):
        return os.path.normpath(name)
    base = images_root / subdir if subdir else images_root
    return os.path.normpath(os.path.abspath(base / name))
