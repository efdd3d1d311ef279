"""The loaders behind :func:`sightline.search.models.load_encoder`.

Each takes a :class:`~sightline.search.models.ModelSpec` and a device and
returns a :class:`~sightline.search.models.LoadedModel`, or None when the
spec is not its kind:

- :func:`from_sightline_checkpoint`: Sightline's own self-describing checkpoints;
- :func:`from_lean_clip`: standard ViT CLIPs with local weights, without open_clip
  (:mod:`sightline.search.lean_clip`);
- :func:`from_open_clip`: any open_clip name, pretrained tag (from the Hugging
  Face cache: ``HF_HOME`` / ``HF_HUB_CACHE``; ``HF_HUB_OFFLINE=1`` is respected),
  local file or config JSON.  It never returns None: what it cannot load is
  a :class:`ModelNotAvailableError` that says which model, where the cache is
  and how to point at a local file instead.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from sightline.search.errors import ModelNotAvailableError
from sightline.search.models import DEFAULT_MODEL, LoadedModel, ModelSpec, names_a_file
from sightline.search.preprocess import Preprocessor

log = logging.getLogger(__name__)


def from_sightline_checkpoint(spec: ModelSpec, device: str) -> Optional[LoadedModel]:
    from sightline.search import checkpoint

    if not names_a_file(spec.pretrained):
        return None
    path = Path(spec.pretrained).expanduser().resolve()
    if not checkpoint.is_sightline_checkpoint(path):
        return None
    try:
        model, model_cfg, payload = checkpoint.load_checkpoint(path)
    except Exception as exc:
        raise ModelNotAvailableError(f"cannot load Sightline checkpoint {path}: {exc}") from None
    preprocessor = Preprocessor.from_open_clip(payload["preprocess_cfg"], transform=None)
    return LoadedModel(model, tokenizer_for_config(model_cfg), preprocessor, payload.get("model_name", "sightline"),
                       str(path))


def tokenizer_for_config(model_cfg: dict):
    """open_clip's tokenizer for a model config (what loading uses, and training too)."""
    import open_clip

    text_cfg = model_cfg.get("text_cfg", {})
    if text_cfg.get("hf_tokenizer_name"):
        return open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"],
                                               context_length=text_cfg.get("context_length", 77))
    return open_clip.tokenizer.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))


def from_lean_clip(spec: ModelSpec, device: str) -> Optional[LoadedModel]:
    if not names_a_file(spec.pretrained):
        return None  # tags resolve through open_clip's registry and the HF cache
    from sightline.search import lean_clip

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
    return LoadedModel(model, tokenizer, preprocessor, given_name, str(weights))


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


def from_open_clip(spec: ModelSpec, device: str) -> LoadedModel:
    import open_clip

    name = resolve_model_name(spec.name or DEFAULT_MODEL)
    # Remember what the user gave (a config JSON as an absolute path) so the
    # index can reload the same model in another process.
    given_name = str(Path(spec.name).expanduser().resolve()) if name != spec.name and spec.name else name
    pretrained = spec.pretrained
    is_file = names_a_file(pretrained)
    if is_file:
        pretrained = str(Path(pretrained).expanduser().resolve())
    elif not pretrained and not name.startswith(("hf-hub:", "local-dir:")):
        raise ModelNotAvailableError(f"no weights given for model {name!r}: pass --pretrained TAG_OR_FILE.")
    try:
        with _offline_unless_hub_reachable(needed=not is_file and bool(pretrained)):
            model, _, transform = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except Exception as exc:
        raise _not_available(name, pretrained, is_file, exc) from None
    preprocessor = Preprocessor.from_open_clip(dict(model.visual.preprocess_cfg), transform)
    return LoadedModel(model, open_clip.get_tokenizer(name), preprocessor, given_name, pretrained or "")


def hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - huggingface_hub ships with open_clip
        return os.path.join(os.environ.get("HF_HOME", "~/.cache/huggingface"), "hub")


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
        f"into that cache, or point --pretrained at a local checkpoint file, e.g. "
        f"`sightline index PHOTOS --model {name} --pretrained /path/to/{name}.pt`."
    )
