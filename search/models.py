"""Which model, decided once, and loading it.

Conventions follow open_clip: a model name (or a model config JSON file) and
``pretrained``, a tag or a local weights file.  :func:`resolve_spec` is the
one place that decides which model a command uses (an explicit request, the
index's recorded model, or the default); :func:`load_encoder` builds it
through the first loader of :data:`LOADERS` that takes it, in one place.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from sightline.search.encoder import ClipEncoder, default_device

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


@dataclass(frozen=True)
class ModelSpec:
    """A model name (or config JSON) and its weights; either may be left out."""

    name: Optional[str] = None
    pretrained: Optional[str] = None

    @property
    def explicit(self) -> bool:
        """Whether anything was asked for (an empty spec defers to the index)."""
        return bool(self.name or self.pretrained)


def resolve_spec(requested: ModelSpec, recorded=None) -> ModelSpec:
    """The model to use: ``requested`` if it names anything, else the one the
    index records (``recorded``: its ModelInfo, or None), else the default.

    A requested weights file that is a Sightline checkpoint needs no name
    (the file describes its architecture); any other request without a name
    means the default architecture.
    """
    if requested.explicit:
        if requested.name is None and not names_a_file(requested.pretrained):
            return ModelSpec(DEFAULT_MODEL, requested.pretrained)
        return requested
    if recorded is not None:
        return ModelSpec(recorded.name or None, recorded.pretrained or None)
    return ModelSpec(DEFAULT_MODEL, DEFAULT_PRETRAINED)


def file_fingerprint(path: Path) -> str:
    """A fast content fingerprint of a weights file: size + first and last MiB.

    Enough to tell checkpoints apart (different weights differ everywhere)
    without hashing hundreds of megabytes at every start.
    """
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        if size > 2 << 20:
            handle.seek(-(1 << 20), os.SEEK_END)
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def model_id_for(spec: ModelSpec) -> str:
    """The id an encoder for ``spec`` will have, computed without loading it.

    Lets a rescan with nothing to embed skip loading torch and the model, and
    a model mismatch fail before any loading.  Weight files are identified by
    name and content fingerprint, so two different files never share an id.
    """
    pretrained = spec.pretrained or ""
    if pretrained and names_a_file(pretrained):
        path = Path(pretrained).expanduser().resolve()
        from sightline.search import checkpoint

        if checkpoint.is_sightline_checkpoint(path):
            return f"sightline:{path.name}#{file_fingerprint(path)}"
        return f"{model_name(spec.name or DEFAULT_MODEL)}/file:{path.name}#{file_fingerprint(path)}"
    name = model_name(spec.name or DEFAULT_MODEL)
    return f"{name}/{pretrained}" if pretrained else name


def model_name(name: str) -> str:
    """A model's registry name: a config JSON registers under its file stem (open_clip's convention)."""
    return Path(name).stem if name.endswith(".json") else name


@dataclass
class LoadedModel:
    """What a loader hands back: a torch module with ``encode_image``/``encode_text`` and what feeds it."""

    model: object
    tokenizer: Callable
    preprocessor: object
    name: str  # as the index records it, so another process reloads the same model
    pretrained: str


#: Loaders in the order they are tried; each returns None when the spec is not its kind.
#: lean: standard ViT CLIPs with local weights, built without importing open_clip (seconds
#: faster, same embeddings); open_clip: everything, the reference (training needs it).
def _loaders(lean: bool):
    from sightline.search import model_loaders

    chain = [("sightline checkpoint", model_loaders.from_sightline_checkpoint)]
    if lean:
        chain.append(("lean", model_loaders.from_lean_clip))
    chain.append(("open_clip", model_loaders.from_open_clip))
    return chain


def load_encoder(spec: ModelSpec, device: Optional[str] = None, precision: str = "auto", lean: bool = True,
                 threads: Optional[int] = None) -> ClipEncoder:
    """Build the encoder for ``spec``; raises :class:`ModelNotAvailableError`.

    ``precision``: 'auto', 'fp32' or 'bf16' (see :mod:`sightline.search.precision`).
    ``lean``: False always gives an open_clip model.  ``threads``: torch's
    intra-op threads (process-wide), set before the model is built.
    """
    from sightline.search.precision import resolve_precision

    device = default_device(device)
    precision = resolve_precision(precision, device)
    if threads:
        _set_torch_threads(threads)
    spec = resolve_spec(spec)
    for kind, loader in _loaders(lean):
        loaded = loader(spec, device)
        if loaded is not None:
            break
    encoder = ClipEncoder(loaded.model, loaded.tokenizer, loaded.preprocessor, model_id_for(spec), device=device,
                          name=loaded.name, pretrained=loaded.pretrained, precision=precision)
    log.info("loaded %s (%s loader) in %s", encoder.model_id, kind, precision)
    return encoder


def _set_torch_threads(count: int) -> None:
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
        log.info("torch intra-op threads: %d", count)


def names_a_file(value: Optional[str]) -> bool:
    return bool(value) and Path(value).expanduser().is_file()
