"""The symmetric contrastive (InfoNCE) loss with a learnable, clamped temperature."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LogitScale(nn.Module):
    """``exp(s)`` multiplies cosine similarities; ``s`` is learnt.

    Clamped to ``max_scale`` (100, as in CLIP): past that the loss can be
    driven down by sharpening alone and training becomes unstable.
    """

    def __init__(self, init_temperature: float = 0.07, max_scale: float = 100.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log = math.log(max_scale)

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(0.0, self.max_log).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep the parameter itself in range, so its gradient never dies at the clamp."""
        self.log_scale.clamp_(0.0, self.max_log)


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy over the batch.

    Row ``i`` of both inputs is a matching pair; every other row is a
    negative.  Features must already be L2-normalised.
    """
    logits = scale * image_features @ text_features.t()
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2
