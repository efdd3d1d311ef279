"""Where an index keeps its ONNX export of a model, and what the export holds.

One folder per model under ``INDEX/onnx/``, named by a hash of the model id
(ids hold slashes, colons and file names).  ``manifest.json`` is written last
and lists every file with its size, so a folder whose export was interrupted
or is being replaced is recognised and not used.  Torch-free: the query path
reads this.

::

    INDEX/onnx/<sha256(model_id)[:16]>/
        manifest.json          model id, dim, tokenizer and preprocessing settings, files and sizes,
                               and why a tower has no graph (an architecture the export does not cover)
        text.onnx              token embeddings + end-of-text positions -> text features
        token_embedding.npy    the token table, memory-mapped at query time
        bpe_merges.txt         the tokenizer's merges, in rank order
        image.onnx             normalised pixels -> image features (ViT image towers only)
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger(__name__)

FORMAT = 1
FOLDER = "onnx"
MANIFEST = "manifest.json"
TEXT_GRAPH, TOKEN_TABLE, MERGES, IMAGE_GRAPH = "text.onnx", "token_embedding.npy", "bpe_merges.txt", "image.onnx"


class ExportUnusable(Exception):
    """An export folder that cannot be used as it is; the message says why."""


class NoExport(ExportUnusable):
    """The index has no export of this model (yet)."""


def export_dir(index_root: Path, model_id: str) -> Path:
    return Path(index_root) / FOLDER / hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` records (see the module docstring)."""

    folder: Path
    model_id: str
    dim: int
    text: Optional[dict]  # tokenizer settings (context_length, clean, special_tokens); None: no text graph
    image: Optional[dict]  # preprocessing settings; None: no image graph
    unsupported: dict  # tower ("text", "image") -> why it has no graph
    files: dict  # file name -> size in bytes
    info: dict  # how it was made: versions, opset, the agreement measured against torch

    def path(self, name: str) -> Path:
        return self.folder / name

    def as_json(self) -> dict:
        return {"format": FORMAT, "model_id": self.model_id, "dim": self.dim, "text": self.text, "image": self.image,
                "unsupported": self.unsupported, "files": self.files, "info": self.info}


def read_manifest(folder: Path, model_id: Optional[str] = None) -> Manifest:
    """The export in ``folder``; :class:`ExportUnusable` if it is missing, partial, or of another model."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoExport(f"no export at {folder}") from None
    except (OSError, ValueError) as exc:
        raise ExportUnusable(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ExportUnusable(f"{path} is not an export this version reads (format {data.get('format')!r})")
    try:
        manifest = Manifest(Path(folder), str(data["model_id"]), int(data["dim"]), data.get("text"),
                            data.get("image"), dict(data.get("unsupported") or {}), dict(data["files"]),
                            dict(data.get("info") or {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportUnusable(f"{path} is incomplete ({exc})") from None
    if model_id is not None and manifest.model_id != model_id:
        raise ExportUnusable(f"{folder} holds an export of {manifest.model_id!r}, not {model_id!r}")
    for name, size in manifest.files.items():
        try:
            actual = (Path(folder) / name).stat().st_size
        except OSError:
            raise ExportUnusable(f"{folder / name} is missing") from None
        if actual != size:
            raise ExportUnusable(f"{folder / name} has {actual} bytes, the manifest says {size}")
    return manifest


def find_export(index_root: Path, model_id: str) -> Manifest:
    """The export of ``model_id`` in the index at ``index_root``; raises :class:`ExportUnusable`."""
    return read_manifest(export_dir(index_root, model_id), model_id)


def export_status(index_root: Path, model_id: str) -> Optional[dict]:
    """What ``sightline status`` shows: which towers have a graph, or None without an export."""
    try:
        manifest = find_export(index_root, model_id)
    except ExportUnusable:
        return None
    return {"text": manifest.text is not None, "image": manifest.image is not None,
            "unsupported": manifest.unsupported, "bytes": sum(manifest.files.values())}
