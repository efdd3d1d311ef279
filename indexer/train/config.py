"""Training settings, with the defaults each mode starts from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Optional

MODES = ("heads", "finetune", "scratch")


@dataclass
class TrainConfig:
    """Everything that decides what a training run computes (saved with its state)."""

    mode: str = "heads"
    epochs: int = 10
    batch_size: int = 256
    lr: float = 1e-3  # heads (and everything, in scratch mode)
    tower_lr: Optional[float] = None  # finetune: towers' rate; default lr / 10
    weight_decay: float = 0.1
    warmup_steps: Optional[int] = None  # default: 10 % of the steps, at most 500
    min_lr_ratio: float = 0.0  # cosine decays to lr * this
    grad_clip: float = 1.0
    head: str = "linear"  # none, linear or mlp
    head_dim: Optional[int] = None  # default: the towers' embedding width
    unfreeze_blocks: Optional[int] = None  # finetune: last N blocks per tower; None: all
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    seed: int = 0
    val_max_images: int = 1000  # validation recall on at most this many images

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch size >= 2 (contrastive loss needs negatives)")

    def effective_tower_lr(self) -> float:
        if self.mode == "scratch":
            return self.lr
        return self.tower_lr if self.tower_lr is not None else self.lr / 10

    def warmup_for(self, total_steps: int) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return min(500, max(1, total_steps // 10))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
