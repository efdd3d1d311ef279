"""Training state for resuming, kept next to the checkpoint (``model.pt.state``).

The checkpoint itself stays a plain Sightline checkpoint (the best epoch);
the state holds what a resumed run needs: the settings, the last epoch's
trainable weights (frozen ones are rebuilt from the same starting model),
the optimizer, counters and history.  Written atomically after each epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sightline.search.atomic import atomic_path
from sightline.search.errors import SightlineError

STATE_VERSION = 1


class ResumeError(SightlineError):
    """A run cannot be resumed (no state, or it belongs to another set-up)."""

    exit_code = 11


def state_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".state")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What training changes: trainable parameters, and every buffer (batch-norm
    statistics move in train mode; the rest are small)."""
    params = dict(model.named_parameters())
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()
            if k not in params or params[k].requires_grad}


def save_state(out: Path, **state: Any) -> None:
    path = state_path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)


def load_state(out: Path) -> dict:
    path = state_path(out)
    if not path.is_file():
        raise ResumeError(f"nothing to resume: {path} does not exist (it is written after each epoch of a run "
                          f"with --out {out})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ResumeError(f"cannot read training state {path}: {exc}") from None
    if state.get("version") != STATE_VERSION:
        raise ResumeError(f"{path} was written by another version of Sightline; start a new run")
    return state
