"""Loading encoders: open_clip names and pretrained tags, local checkpoint
files, model config JSON files and Sightline's own checkpoints.

Conventions follow open_clip: ``--model NAME --pretrained TAG_OR_FILE``.
Weights for tags come from the Hugging Face cache (``HF_HOME`` /
``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` is respected).  When weights cannot be
had, :class:`ModelNotAvailableError` says which model, where the cache is and
how to point at a local file instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from search.encoder import ClipEncoder, default_device
from search.errors import ModelNotAvailableError
from search.preprocess import Preprocessor

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


@dataclass(frozen=True)
class ModelSpec:
    """What the user asked for: a model name (or config JSON) and weights."""

    name: Optional[str]
    pretrained: Optional[str]

    @classmethod
    def from_env(cls, name: Optional[str] = None, pretrained: Optional[str] = None) -> "ModelSpec":
        """Explicit values win, then ``SIGHTLINE_MODEL``/``SIGHTLINE_PRETRAINED``, then defaults.

        A Sightline checkpoint needs no model name, so none is defaulted when
        the weights are such a file.
        """
        name = name or os.environ.get("SIGHTLINE_MODEL") or None
        pretrained = pretrained or os.environ.get("SIGHTLINE_PRETRAINED") or None
        if name is None and pretrained is None:
            return cls(DEFAULT_MODEL, DEFAULT_PRETRAINED)
        if name is None and not _is_file(pretrained):
            name = DEFAULT_MODEL
        return cls(name, pretrained)


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub ships with open_clip
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


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
    if pretrained and _is_file(pretrained):
        path = Path(pretrained).expanduser().resolve()
        from search import checkpoint

        if checkpoint.is_sightline_checkpoint(path):
            return f"sightline:{path.name}#{file_fingerprint(path)}"
        return f"{_model_name(spec.name or DEFAULT_MODEL)}/file:{path.name}#{file_fingerprint(path)}"
    name = _model_name(spec.name or DEFAULT_MODEL)
    return f"{name}/{pretrained}" if pretrained else name


def _model_name(name: str) -> str:
    # A config JSON registers under its file stem (open_clip's convention).
    return Path(name).stem if name.endswith(".json") else name


def load_encoder(spec: ModelSpec, device: Optional[str] = None, precision: Optional[str] = None,
                 lean: bool = True) -> ClipEncoder:
    """Build the encoder for ``spec``; raises :class:`ModelNotAvailableError`.

    ``precision``: 'auto' (default), 'fp32' or 'bf16'; None reads
    ``SIGHTLINE_PRECISION`` (see :mod:`search.precision`).  ``lean``: build
    standard architectures with local weights through :mod:`search.lean_clip`
    (seconds faster to load, same embeddings); False always gives an
    open_clip model (training needs one).
    """
    from search.precision import resolve_precision

    device = default_device(device)
    precision = resolve_precision(precision, device)
    encoder = None
    if spec.pretrained and _is_file(spec.pretrained):
        from search import checkpoint

        path = Path(spec.pretrained).expanduser().resolve()
        if checkpoint.is_sightline_checkpoint(path):
            encoder = _from_sightline_checkpoint(path, device)
    if encoder is None and lean:
        encoder = _from_lean_clip(spec, device)
    encoder = encoder or _from_open_clip(spec, device)
    encoder.set_precision(precision)
    log.info("loaded %s in %s", encoder.model_id, precision)
    return encoder


def _is_file(value: Optional[str]) -> bool:
    return bool(value) and Path(value).expanduser().is_file()


def _from_sightline_checkpoint(path: Path, device: str) -> ClipEncoder:
    from search import checkpoint

    try:
        model, model_cfg, payload = checkpoint.load_checkpoint(path)
    except Exception as exc:
        raise ModelNotAvailableError(f"cannot load Sightline checkpoint {path}: {exc}") from None
    tokenizer = _tokenizer_for_cfg(model_cfg)
    preprocessor = Preprocessor.from_open_clip(payload["preprocess_cfg"], transform=None)
    name = payload.get("model_name", "sightline")
    model_id = model_id_for(ModelSpec(None, str(path)))
    return _probe_dim(ClipEncoder(model.to(device), tokenizer, preprocessor, model_id, 0, device, name, str(path)))


def _tokenizer_for_cfg(model_cfg: dict):
    import open_clip

    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"],
                                               context_length=text_cfg.get("context_length", 77))
    return open_clip.tokenizer.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))


def resolve_model_name(name: str) -> str:
    """Accept a model config JSON path: register it with open_clip, return its name."""
    import open_clip

    path = Path(name).expanduser()
    if path.suffix == ".json":
        if not path.is_file():
            raise ModelNotAvailableError(f"model config file {path} does not exist")
        try:
            json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelNotAvailableError(f"model config {path} is not valid JSON: {exc}") from None
        open_clip.add_model_config(str(path))
        return path.stem
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    if name.replace("/", "-") not in open_clip.list_models():
        raise ModelNotAvailableError(
            f"unknown model {name!r}. `python -c 'import open_clip; print(open_clip.list_models())'` "
            f"lists the known names; a custom architecture can be given as a model config JSON file."
        )
    return name


def _from_open_clip(spec: ModelSpec, device: str) -> ClipEncoder:
    import open_clip

    name = resolve_model_name(spec.name or DEFAULT_MODEL)
    # Remember what the user gave (a config JSON as an absolute path) so the
    # index can reload the same model in another process.
    given_name = str(Path(spec.name).expanduser().resolve()) if name != spec.name and spec.name else name
    pretrained = spec.pretrained
    is_file = _is_file(pretrained)
    if is_file:
        pretrained = str(Path(pretrained).expanduser().resolve())
    elif not pretrained and not name.startswith(("hf-hub:", "local-dir:")):
        raise ModelNotAvailableError(
            f"no weights given for model {name!r}: pass --pretrained TAG_OR_FILE (or set SIGHTLINE_PRETRAINED)."
        )
    try:
        with _offline_unless_hub_reachable(needed=not is_file and bool(pretrained)):
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except Exception as exc:
        raise _not_available(name, pretrained, is_file, exc) from None
    tokenizer = open_clip.get_tokenizer(name)
    preprocessor = Preprocessor.from_open_clip(dict(model.visual.preprocess_cfg), transform)
    model_id = model_id_for(ModelSpec(spec.name or DEFAULT_MODEL, pretrained))
    return _probe_dim(ClipEncoder(model, tokenizer, preprocessor, model_id, 0, device, given_name, pretrained or ""))


def _from_lean_clip(spec: ModelSpec, device: str) -> Optional[ClipEncoder]:
    """The encoder built by search.lean_clip, or None where it does not apply."""
    if not _is_file(spec.pretrained):
        return None  # tags resolve through open_clip's registry and the HF cache
    from search import lean_clip

    name = spec.name or DEFAULT_MODEL
    path = Path(name).expanduser()
    try:
        config = json.loads(path.read_text()) if path.suffix == ".json" else lean_clip.builtin_config(name)
    except (OSError, ValueError):
        return None  # open_clip's path reports the problem
    if config is None:
        return None
    weights = Path(spec.pretrained).expanduser().resolve()
    try:
        model = lean_clip.load(config, weights)
        tokenizer = lean_clip.tokenizer(config)
    except lean_clip.Unsupported as why:
        log.info("loading %s through open_clip: %s", name, why)
        return None
    given_name = str(path.resolve()) if path.suffix == ".json" else name
    preprocessor = Preprocessor.from_open_clip(lean_clip.preprocess_cfg(config), transform=None)
    model_id = model_id_for(ModelSpec(name, str(weights)))
    return _probe_dim(ClipEncoder(model.to(device), tokenizer, preprocessor, model_id, 0, device, given_name,
                                  str(weights)))


@contextmanager
def _offline_unless_hub_reachable(needed: bool):
    """Use only the cache when the hub cannot be reached at all.

    Without this, huggingface_hub retries every candidate file for most of a
    minute before failing; a 2 s connection probe lets a cached model load
    at once and a missing one fail at once with our message.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield
        return
    if not needed or constants.HF_HUB_OFFLINE or _hub_reachable(constants.ENDPOINT):
        yield
        return
    log.info("cannot reach %s; using only the Hugging Face cache", constants.ENDPOINT)
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


def _hub_reachable(endpoint: str, timeout: float = 2.0) -> bool:
    import socket
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _not_available(name: str, pretrained: Optional[str], is_file: bool, exc: Exception) -> ModelNotAvailableError:
    if is_file:
        return ModelNotAvailableError(
            f"cannot load weights for model {name!r} from {pretrained}: {exc}. The file must be an open_clip "
            f"state_dict for this architecture (or a Sightline checkpoint)."
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "HF_HUB_OFFLINE is set and they are not cached" if offline else \
        "they are not in the cache and could not be downloaded (no connection to the Hugging Face hub?)"
    return ModelNotAvailableError(
        f"weights for model {name!r} (pretrained {pretrained!r}) are not available: {why}. "
        f"Hugging Face cache: {hf_cache_dir()}. Either download them on a machine with network access "
        f"into that cache, or point --pretrained (or SIGHTLINE_PRETRAINED) at a local checkpoint file, e.g. "
        f"`sightline index PHOTOS --model {name} --pretrained /path/to/{name}.pt`."
    )


def _probe_dim(encoder: ClipEncoder) -> ClipEncoder:
    """Read the embedding width off the model (projection heads may change it)."""
    encoder.dim = int(encoder.encode_texts(["a photo"]).shape[1])
    return encoder
