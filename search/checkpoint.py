"""Sightline's own checkpoint format: a self-describing dual encoder.

A Sightline checkpoint records the open_clip architecture (its model config),
the tower weights, optional projection heads and the preprocessing, so it
loads from the file alone (``--pretrained FILE``, no ``--model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

FORMAT_KEY = "sightline_checkpoint"
FORMAT_VERSION = 1


def make_head(spec: Optional[dict]):
    """A projection head from its spec: ``{"type": "linear"|"mlp", "in", "out", "hidden"}``."""
    import torch.nn as nn

    if not spec:
        return nn.Identity()
    if spec["type"] == "linear":
        return nn.Linear(spec["in"], spec["out"], bias=False)
    if spec["type"] == "mlp":
        hidden = spec.get("hidden", spec["out"])
        return nn.Sequential(nn.Linear(spec["in"], hidden), nn.GELU(), nn.Linear(hidden, spec["out"]))
    raise ValueError(f"unknown head type {spec['type']!r}")


def make_dual_encoder(clip_model, head_specs: Optional[dict] = None):
    """Wrap an open_clip model with projection heads (identity when none)."""
    import torch.nn as nn

    class DualEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = clip_model
            self.image_head = make_head((head_specs or {}).get("image"))
            self.text_head = make_head((head_specs or {}).get("text"))
            self.head_specs = head_specs or {}

        def encode_image(self, pixels):
            return self.image_head(self.clip.encode_image(pixels))

        def encode_text(self, tokens):
            return self.text_head(self.clip.encode_text(tokens))

    return DualEncoder()


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
    """Write a self-contained checkpoint atomically (temp file + rename)."""
    import os
    import tempfile

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
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path) -> tuple[Any, dict, dict]:
    """Rebuild (dual_encoder, model_cfg, payload) from a Sightline checkpoint."""
    import open_clip

    payload = _load(path)
    model_cfg = dict(payload["model_cfg"])
    clip_model = open_clip.CustomTextCLIP(**model_cfg) if _custom_text(model_cfg) else open_clip.CLIP(**model_cfg)
    dual = make_dual_encoder(clip_model, payload.get("heads"))
    dual.load_state_dict(payload["state_dict"])
    return dual.eval(), model_cfg, payload


def _custom_text(model_cfg: dict) -> bool:
    return bool(model_cfg.get("custom_text")) or "hf_model_name" in model_cfg.get("text_cfg", {})
