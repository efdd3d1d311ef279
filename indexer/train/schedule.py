"""Learning-rate schedule: linear warmup, then cosine decay."""

from __future__ import annotations

import math


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the base rate at ``step`` (0-based): 0 -> 1 over the
    warmup, then a half cosine down to ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer, multiplier: float) -> None:
    """Scale every parameter group's own base rate (``initial_lr``)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
