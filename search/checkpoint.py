"""Sightline's own checkpoint format: a self-describing dual encoder.

A Sightline checkpoint records the open_clip architecture (its model config),
the tower weights, optional projection heads and the preprocessing, so it
loads from the file alone (``--pretrained FILE``, no ``--model``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

from sightline.search.atomic import atomic_path

FORMAT_KEY = "sightline_checkpoint"
FORMAT_VERSION = 1


HEAD_TYPES = ("linear", "mlp")


def head_spec(kind: str, dim_in: int, dim_out: Optional[int] = None, hidden: Optional[int] = None) -> Optional[dict]:
    """The spec of a projection head; ``None`` for ``kind="none"``.

    An MLP whose output width equals its input is residual (``x + mlp(x)``),
    so it can start as the identity and never loses what the tower knew.
    """
    if kind == "none":
        return None
    if kind not in HEAD_TYPES:
        raise ValueError(f"unknown head type {kind!r}; use one of none, {', '.join(HEAD_TYPES)}")
    dim_out = dim_out or dim_in
    spec = {"type": kind, "in": int(dim_in), "out": int(dim_out)}
    if kind == "mlp":
        spec["hidden"] = int(hidden or 2 * dim_out)
        spec["residual"] = dim_in == dim_out
    return spec


def make_head(spec: Optional[dict]):
    """A projection head from its spec: ``{"type": "linear"|"mlp", "in", "out", "hidden", "residual"}``."""
    import torch.nn as nn

    if not spec:
        return nn.Identity()
    if spec["type"] == "linear":
        return nn.Linear(spec["in"], spec["out"], bias=False)
    if spec["type"] == "mlp":
        hidden = spec.get("hidden", spec["out"])
        mlp = nn.Sequential(nn.Linear(spec["in"], hidden), nn.GELU(), nn.Linear(hidden, spec["out"]))
        return _classes().Residual(mlp) if spec.get("residual") else mlp
    raise ValueError(f"unknown head type {spec['type']!r}")


def make_dual_encoder(clip_model, head_specs: Optional[dict] = None):
    """Wrap an open_clip model with projection heads (identity when none)."""
    return _classes().DualEncoder(clip_model, head_specs or {})


@functools.lru_cache(maxsize=None)
def _classes() -> SimpleNamespace:
    """The torch modules, defined on first use so importing this module needs no torch."""
    import torch.nn as nn

    class Residual(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return x + self.inner(x)

    class DualEncoder(nn.Module):
        def __init__(self, clip_model, head_specs: dict):
            super().__init__()
            self.clip = clip_model
            self.image_head = make_head(head_specs.get("image"))
            self.text_head = make_head(head_specs.get("text"))
            self.head_specs = head_specs

        def encode_image(self, pixels):
            return self.image_head(self.clip.encode_image(pixels))

        def encode_text(self, tokens):
            return self.text_head(self.clip.encode_text(tokens))

    return SimpleNamespace(Residual=Residual, DualEncoder=DualEncoder)


def is_sightline_checkpoint(path: Path) -> bool:
    """Cheap test without loading tensors: torch's zip format keeps the pickled
    structure in ``data.pkl``, which names ``FORMAT_KEY`` for our checkpoints."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            return bool(pickles) and FORMAT_KEY.encode() in archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile):
        return False


def _load(path: Path) -> Any:
    import torch

    # weights_only: a checkpoint is data (dicts, strings, tensors), never code.
    return torch.load(str(path), map_location="cpu", weights_only=True)


def save_checkpoint(path: Path, *, model_name: str, model_cfg: dict, preprocess_cfg: dict,
                    dual_encoder, extra: Optional[dict] = None) -> None:
    """Write a self-contained checkpoint atomically (see :mod:`sightline.search.atomic`)."""
    import torch

    payload = {
        FORMAT_KEY: FORMAT_VERSION,
        "model_name": model_name,
        "model_cfg": model_cfg,
        "preprocess_cfg": dict(preprocess_cfg),
        "heads": dual_encoder.head_specs,
        "state_dict": {k: v.detach().cpu() for k, v in dual_encoder.state_dict().items()},
        "extra": extra or {},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> tuple[Any, dict, dict]:
    """Rebuild (dual_encoder, model_cfg, payload) from a Sightline checkpoint."""
    payload = _load(path)
    if not isinstance(payload, dict) or payload.get(FORMAT_KEY) is None:
        raise ValueError("not a Sightline checkpoint")
    if payload[FORMAT_KEY] > FORMAT_VERSION:
        raise ValueError(f"checkpoint format {payload[FORMAT_KEY]} is newer than this Sightline reads "
                         f"({FORMAT_VERSION}); upgrade Sightline")
    model_cfg = dict(payload["model_cfg"])
    clip_model = build_clip(model_cfg)
    dual = make_dual_encoder(clip_model, payload.get("heads"))
    dual.load_state_dict(payload["state_dict"])
    return dual.eval(), model_cfg, payload


def build_clip(model_cfg: dict):
    """An open_clip model (random weights) from a model config, as open_clip's factory builds it."""
    import open_clip

    cfg = dict(model_cfg)
    custom = bool(cfg.pop("custom_text", False)) or "hf_model_name" in cfg.get("text_cfg", {})
    cfg.pop("multimodal_cfg", None)  # CoCa's text decoder: not part of a dual encoder
    return open_clip.CustomTextCLIP(**cfg) if custom else open_clip.CLIP(**cfg)
