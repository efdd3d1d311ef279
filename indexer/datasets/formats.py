"""Readers for caption annotation files.

* Karpathy-split JSON (``dataset_flickr30k.json``, ``dataset_coco.json``,
  ``dataset_flickr8k.json``): ``images[].filename`` (COCO adds ``filepath``),
  ``.split``, ``.sentences[].raw``.
* The Flickr30k annotations CSV (``flickr_annotations_30k.csv``): columns
  ``raw`` (a JSON list of the 5 captions), ``split`` and ``filename``.
* Generic CSV or JSONL: one image path and one caption per row (or a
  ``captions`` list per JSONL object), optionally a split; rows of the same
  image are merged.

Every reader raises :class:`DatasetError` saying what is wrong and where.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterable, Optional

from sightline.indexer.datasets.base import NO_SPLIT, CaptionDataset, CaptionedImage, check_captions, image_path, require_file
from sightline.search.errors import DatasetError

#: Accepted column / key names in generic files, most specific first.
IMAGE_KEYS = ("image", "image_path", "filepath", "file", "filename", "path", "img")
CAPTION_KEYS = ("caption", "text", "sentence", "raw", "captions")
SPLIT_KEYS = ("split",)

# Karpathy files reach 150 MB (COCO); csv's default field limit is 128 KiB.
csv.field_size_limit(1 << 30)


def load_annotations(path: Path, images_root: Path, fmt: str = "auto", name: Optional[str] = None) -> CaptionDataset:
    """Read any supported annotation file; ``fmt`` is auto, karpathy, flickr-csv, csv or jsonl."""
    path = require_file(Path(path), "annotation file")
    images_root = Path(images_root).expanduser().resolve()
    fmt = detect_format(path) if fmt == "auto" else fmt
    readers = {"karpathy": read_karpathy, "flickr-csv": read_flickr_csv, "csv": read_generic_csv,
               "jsonl": read_generic_jsonl}
    if fmt not in readers:
        raise DatasetError(f"unknown annotation format {fmt!r}; known: {', '.join(readers)}")
    items = readers[fmt](path, images_root)
    if not items:
        raise DatasetError(f"{path} lists no images")
    return CaptionDataset(name or path.stem, path.resolve(), images_root, items)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "karpathy"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv", ".txt"):
        header = _csv_header(path)
        return "flickr-csv" if {"raw", "filename"} <= set(header) else "csv"
    raise DatasetError(
        f"cannot tell the format of {path} from its name: use a .json (Karpathy split), .csv "
        f"(Flickr30k annotations or image,caption columns) or .jsonl file"
    )


# ----------------------------------------------------------------- Karpathy
def read_karpathy(path: Path, images_root: Path) -> list[CaptionedImage]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path} is not a Karpathy-split file: it needs a top-level \"images\" list")
    items = []
    for number, entry in enumerate(data["images"]):
        where = f"{path.name}, images[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise DatasetError(f"{where}: no \"filename\"")
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and "raw" in s for s in sentences):
            raise DatasetError(f"{where} ({entry['filename']}): \"sentences\" must be a list of {{\"raw\": ...}}")
        captions = check_captions([s["raw"] for s in sentences], f"{where} ({entry['filename']})")
        path_in_root = image_path(images_root, entry["filename"], entry.get("filepath"))
        items.append(CaptionedImage(path_in_root, captions, str(entry.get("split") or NO_SPLIT)))
    return items


# -------------------------------------------------------- Flickr30k CSV file
def read_flickr_csv(path: Path, images_root: Path) -> list[CaptionedImage]:
    items = []
    for line, row in _csv_rows(path, required=("raw", "filename")):
        where = f"{path.name}, line {line}"
        try:
            captions = json.loads(row["raw"])
        except ValueError:
            raise DatasetError(f"{where}: column \"raw\" must be a JSON list of captions") from None
        captions = check_captions(captions, where)
        items.append(CaptionedImage(image_path(images_root, row["filename"]), captions,
                                    row.get("split") or NO_SPLIT))
    return items


# ------------------------------------------------------------ generic files
def read_generic_csv(path: Path, images_root: Path) -> list[CaptionedImage]:
    header = _csv_header(path)
    image_key = _pick(header, IMAGE_KEYS, path, "image path")
    caption_key = _pick(header, CAPTION_KEYS, path, "caption")
    split_key = next((k for k in SPLIT_KEYS if k in header), None)
    rows = ((line, row.get(image_key), [row.get(caption_key) or ""], row.get(split_key) if split_key else None)
            for line, row in _csv_rows(path, required=(image_key, caption_key)))
    return _group(rows, path, images_root)


def read_generic_jsonl(path: Path, images_root: Path) -> list[CaptionedImage]:
    def rows():
        with open(path, encoding="utf-8") as handle:
            for line, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    obj = json.loads(text)
                except ValueError:
                    raise DatasetError(f"{path.name}, line {line}: not valid JSON") from None
                if not isinstance(obj, dict):
                    raise DatasetError(f"{path.name}, line {line}: expected a JSON object")
                image_key = _pick(obj, IMAGE_KEYS, path, "image path", line)
                caption_key = _pick(obj, CAPTION_KEYS, path, "caption", line)
                value = obj[caption_key]
                yield line, obj[image_key], value if isinstance(value, list) else [value], obj.get("split")

    try:
        return _group(rows(), path, images_root)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not UTF-8 text: {exc}") from None


def _group(rows: Iterable[tuple[int, object, list, Optional[str]]], path: Path,
           images_root: Path) -> list[CaptionedImage]:
    """Merge rows of the same image (first-seen order); one split per image."""
    by_image: dict[str, CaptionedImage] = {}
    for line, name, captions, split in rows:
        where = f"{path.name}, line {line}"
        if not isinstance(name, str) or not name.strip():
            raise DatasetError(f"{where}: empty image path")
        captions = check_captions(captions, where)
        image = image_path(images_root, name.strip())
        split = str(split) if split else NO_SPLIT
        known = by_image.get(image)
        if known is None:
            by_image[image] = CaptionedImage(image, captions, split)
        elif known.split != split:
            raise DatasetError(f"{where}: {name} is in split {known.split!r} earlier and {split!r} here")
        else:
            known.captions.extend(captions)
    return list(by_image.values())


# ---------------------------------------------------------------- CSV tools
def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [h.strip() for h in next(csv.reader(handle, _dialect(path)), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path} as CSV: {exc}") from None


def _csv_rows(path: Path, required: tuple[str, ...]):
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, dialect=_dialect(path))
            reader.fieldnames = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in reader.fieldnames]
            if missing:
                raise DatasetError(f"{path} has no column {missing[0]!r} (columns: {', '.join(reader.fieldnames)})")
            for row in reader:
                yield reader.line_num, row
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path} as CSV: {exc}") from None


def _dialect(path: Path):
    return csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel


def _pick(keys, candidates: tuple[str, ...], path: Path, what: str, line: Optional[int] = None) -> str:
    for key in candidates:
        if key in keys:
            return key
    where = f"{path.name}, line {line}" if line else str(path)
    raise DatasetError(f"{where}: no {what} column; name it one of: {', '.join(candidates)}")
