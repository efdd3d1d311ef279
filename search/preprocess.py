"""Image preprocessing that matches open_clip's inference transform exactly.

open_clip's transform is a torchvision ``Compose`` (resize, centre crop,
to-tensor, normalise).  We reproduce the resize and crop with Pillow alone so
that decode workers need neither torch nor torchvision (cheap to start, safe to
fork) and ship compact uint8 arrays; normalisation then runs once per batch in
the model process.  A test checks the result is bit-identical to open_clip's.
Configurations we do not reproduce fall back to the model's own transform.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image

_INTERPOLATIONS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


# open_clip's defaults (PreprocessCfg) when a model config names no others.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class Preprocessor:
    """Turns a decoded RGB image into model input.

    ``__call__`` returns a uint8 ``(S, S, 3)`` array on the fast path, or a
    normalised float32 ``(3, H, W)`` array when falling back to the model's
    own torchvision transform; ``to_batch`` turns a list of either into the
    float tensor the model takes.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fallback: Optional[Callable[[Image.Image], Any]] = field(default=None, compare=False)

    @classmethod
    def from_open_clip(cls, preprocess_cfg: dict, transform: Callable) -> "Preprocessor":
        size = preprocess_cfg.get("size", 224)
        if isinstance(size, (list, tuple)):
            square = size[0] == size[1]
            size = int(size[0])
        else:
            square = True
            size = int(size)
        interpolation = preprocess_cfg.get("interpolation", "bicubic")
        resize_mode = preprocess_cfg.get("resize_mode", "shortest")
        fast = square and interpolation in _INTERPOLATIONS and resize_mode in ("shortest", "squash")
        return cls(
            size=size,
            mean=tuple(float(m) for m in _three(preprocess_cfg.get("mean", OPENAI_MEAN))),
            std=tuple(float(s) for s in _three(preprocess_cfg.get("std", OPENAI_STD))),
            interpolation=interpolation,
            resize_mode=resize_mode,
            fallback=None if fast else transform,
        )

    @property
    def draft_size(self) -> int:
        """Smallest short side JPEG draft decoding may reduce a photo to.

        Twice the model input keeps the later bicubic downscale close to a
        full decode (tested against full decoding).
        """
        return 2 * self.size

    def __call__(self, image: Image.Image) -> np.ndarray:
        if self.fallback is not None:
            return np.asarray(self.fallback(_limit_aspect(image)), dtype=np.float32)
        if image.mode != "RGB":
            image = image.convert("RGB")
        resample = _INTERPOLATIONS[self.interpolation]
        if self.resize_mode != "squash":
            image = _limit_aspect(image)
        if self.resize_mode == "squash":
            out = image.resize((self.size, self.size), resample)
        else:
            out = _center_crop(_resize_shortest(image, self.size, resample), self.size)
        return np.asarray(out, dtype=np.uint8)

    def to_batch(self, arrays: Sequence[np.ndarray]):
        """Stack per-image arrays into a normalised float tensor (N, 3, S, S)."""
        import torch

        stacked = torch.from_numpy(np.stack(arrays))
        if stacked.dtype != torch.uint8:
            return stacked.float()
        # Same operations, in the same order, as torchvision's ToTensor + Normalize.
        x = stacked.permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).view(1, 3, 1, 1)
        return x.sub_(mean).div_(std).contiguous()

    def to_array(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """:meth:`to_batch` in numpy, for onnxruntime: the same float32 operations, so the same values."""
        stacked = np.stack(arrays)
        if stacked.dtype != np.uint8:
            return stacked.astype(np.float32)
        x = stacked.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
        mean = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1)
        return np.ascontiguousarray((x - mean) / std)


def _three(values) -> tuple:
    if isinstance(values, (int, float)):
        return (values,) * 3
    return tuple(values)


#: Resizing the short side to the model's input scales the long side by the
#: same factor, so a 1x65000 sliver would become 224x14,560,000 pixels
#: (gigabytes) before the centre crop.  Beyond this aspect ratio the centre is
#: cut out first; photos (even panoramas) are far below it and stay bit-exact.
MAX_ASPECT = 32


def _limit_aspect(image: Image.Image, ratio: int = MAX_ASPECT) -> Image.Image:
    w, h = image.size
    short = max(1, min(w, h))
    keep = short * ratio
    if max(w, h) <= keep:
        return image
    if w > h:
        left = (w - keep) // 2
        return image.crop((left, 0, left + keep, h))
    top = (h - keep) // 2
    return image.crop((0, top, w, top + keep))


def _resize_shortest(image: Image.Image, size: int, resample) -> Image.Image:
    # torchvision's _compute_resized_output_size for a scalar size.
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return image
    return image.resize((new_w, new_h), resample)


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if (w, h) == (size, size):
        return image
    top = int(round((h - size) / 2.0))
    left = int(round((w - size) / 2.0))
    return image.crop((left, top, left + size, top + size))
