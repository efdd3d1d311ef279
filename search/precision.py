"""Which number format the encoder runs in.

``bf16`` stores the model's weights as bfloat16 and runs every layer in it.
On CPUs with native bf16 arithmetic (x86 ``avx512_bf16`` or AMX) that is
about twice as fast as fp32 for ViT-B-32 images and text, and the embeddings
stay within cosine 0.9999 of fp32's (``benchmarks/precision.py`` measures
both on real photos).  Elsewhere bf16 is emulated and slower, so ``auto``
picks it only where the hardware has it.  ``fp32`` is always available.

The vectors in one index may come from either: they are the same model, and
a cosine of 0.9999 does not move search results.
"""

from __future__ import annotations

import functools

from sightline.search.errors import ConfigurationError

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(requested: str, device: str) -> str:
    """'fp32' or 'bf16' for ``requested`` ('auto', 'fp32' or 'bf16'; case and blanks ignored)."""
    value = (requested or "auto").strip().lower()
    if value not in PRECISIONS:
        raise ConfigurationError(f"precision must be one of {', '.join(PRECISIONS)}, not {value!r}")
    if value != "auto":
        return value
    return "bf16" if native_bf16(device) else "fp32"


def native_bf16(device: str) -> bool:
    """Whether ``device`` does bf16 arithmetic in hardware."""
    kind = device.split(":")[0]
    if kind == "cuda":
        import torch

        return bool(torch.cuda.is_bf16_supported())
    if kind == "cpu":
        return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    return False


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset:
    # Linux only; elsewhere ``auto`` means fp32, which is always correct.
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()
