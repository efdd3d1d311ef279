"""Test data the project makes itself: tiny open_clip models and photos."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "data" / "models" / "tiny-vit.json"

COLOURS = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220), "yellow": (235, 220, 40),
    "purple": (140, 40, 170), "orange": (245, 140, 20), "white": (245, 245, 245), "black": (15, 15, 15),
}


def make_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    """Random weights for the tiny architecture, saved as a plain open_clip state_dict."""
    import open_clip
    import torch

    from sightline.search.model_loaders import resolve_model_name

    name = resolve_model_name(str(TINY_CONFIG))
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    torch.save(model.state_dict(), path)
    return path


def photo(seed: int, size=(96, 72), mode: str = "RGB") -> Image.Image:
    """A deterministic, varied picture: gradient background plus blocks of colour."""
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    base = rng.integers(0, 255, 3)
    tilt = rng.normal(0, 1.5, 3)
    arr = np.clip(base + tilt[None, None, :] * (x[..., None] + y[..., None]) / max(w, h) * 80, 0, 255)
    for _ in range(3):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        arr[y0:y0 + h // 3, x0:x0 + w // 3] = rng.integers(0, 255, 3)
    image = Image.fromarray(arr.astype(np.uint8), "RGB")
    return image if mode == "RGB" else image.convert(mode)


def write_photos(folder: Path, count: int, start: int = 0, ext: str = "jpg", size=(96, 72)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        path = folder / f"photo_{i:04d}.{ext}"
        photo(i, size).save(path)
        paths.append(path)
    return paths


class FakeEncoder:
    """A deterministic stand-in for fast unit tests of the store, engine and UI.

    Texts map to vectors by hashing their words; images by their mean colour
    and a hash of a thumbnail, so identical images give identical vectors.
    Not used where the thing under test is the encoder or the pipeline.
    """

    def __init__(self, dim: int = 16, model_id: str = "fake/test"):
        self.dim = dim
        self.model_id = model_id
        self.name = "fake"
        self.pretrained = "test"

    def _vec(self, key: bytes) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
        v = np.random.default_rng(seed).normal(size=self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row] += self._vec(word.encode())
            out[row] /= max(np.linalg.norm(out[row]), 1e-12)
        return out

    def encode_images(self, images, batch_size: int = 32) -> np.ndarray:
        rows = [self._vec(np.asarray(img.convert("RGB").resize((8, 8))).tobytes()) for img in images]
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)


def shuffled(seq, seed=0):
    items = list(seq)
    random.Random(seed).shuffle(items)
    return items


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr:ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


# Texts for tokenizer and text-encoder parity tests.
WORDS = ("a photo of the dog cat beach sunset mountain city night red blue green car bicycle person child "
         "tree river snow boat food table window street market bird flower house bridge train rain forest "
         "lake don't it's we're they've I'm you'll she'd photographing unbelievable xylophone zzz").split()
PUNCTUATION = list("!?.,;:-_()[]{}'\"/\\@#$%^*+=<>|~`")
UNICODE = ["café", "crème brûlée", "naïve", "Ünïcødé", "東京タワー", "北京", "서울", "Москва", "ελληνικά", "עברית",
           "العربية", "हिन्दी", "📷", "🐶🐱", "👩‍👩‍👧", "ﬁne ﬂower", "ｆｕｌｌｗｉｄｔｈ", "e\u0301", "zero\u200bwidth",
           "â€œmojibakeâ€\x9d", "ÃƒÂ©", "“curly” ‘quotes’", "ß", "İstanbul", "Ǆ", "½ ² ٣ ൬"]
ODD = ["&amp;", "&lt;b&gt;", "&amp;amp;amp;", "&#39;", "&nbsp;", "&unknown;", "\x1b[31mred\x1b[0m", "tab\there",
       "line\r\nbreak", "\x00nul", "\x7fdel", "\x0bvt\x0cff", "\x1cfs\x1f", "  padded  ", "", " ", "\n\n",
       "<start_of_text>", "<end_of_text>", "<END_OF_TEXT> upper", "a<end_of_text>b", "'s 't 're 've 'm 'll 'd",
       "'S 'T 'RE", "1234567890", "3.14159", "x" * 300, "ab" * 100]


def text_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Plain queries, punctuation, numbers, HTML entities, control characters, many scripts,
    emoji, mojibake, and texts far longer than the context."""
    rng = random.Random(seed)
    pieces = WORDS * 3 + PUNCTUATION + UNICODE + ODD + [str(rng.randint(0, 10**6)) for _ in range(20)]
    texts = list(UNICODE + ODD)
    while len(texts) < n:
        count = rng.choice([1, 2, 3, 5, 8, 13, 40, 120])  # 120 pieces is far past 77 tokens
        joiner = rng.choice([" ", " ", " ", "", "  ", "\t", "\n"])
        text = joiner.join(rng.choice(pieces) for _ in range(count))
        texts.append(text.upper() if rng.random() < 0.1 else text)
    return texts[:n]
