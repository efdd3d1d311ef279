"""Decoding and preprocessing stay within memory bounds on hostile geometry:
huge (but allowed) images, 16-bit and palette images, and extreme aspect ratios."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sightline.search.imageio import decode_image, shrink
from sightline.search.preprocess import MAX_ASPECT, Preprocessor
from tests.helpers import REPO, photo
from tests.hostile_corpus import raw_png

CLIP = dict(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))


def _png(image: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(1, 65_000), (65_000, 1), (3, 40_000)])
def test_extreme_aspect_ratio_is_cropped_before_resizing(size, monkeypatch):
    """A 1x65000 sliver once meant a 224 x 14.5-million-pixel resize (13 GB) before the crop."""
    real_resize = Image.Image.resize
    biggest = []

    def guarded_resize(self, new_size, *args, **kwargs):
        biggest.append(new_size[0] * new_size[1])
        assert new_size[0] * new_size[1] <= 224 * 224 * MAX_ASPECT, f"resize to {new_size}"
        return real_resize(self, new_size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", guarded_resize)
    out = Preprocessor(size=224, **CLIP)(Image.new("RGB", size, (200, 30, 10)))
    assert out.shape == (224, 224, 3) and (out == (200, 30, 10)).all()


def test_aspect_limit_leaves_photos_and_panoramas_alone_and_slivers_nearly_unchanged():
    from sightline.search.preprocess import _limit_aspect

    for size in [(4000, 3000), (12_000, 1_500), (250, 8_000)]:  # up to 32:1 untouched (bit-exact path)
        image = Image.new("RGB", size)
        assert _limit_aspect(image) is image
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (5, 1)).T.copy()).convert("RGB")
    pre = Preprocessor(size=32, **CLIP)
    cropped = pre(gradient).astype(float)  # 5x400: 80:1, cropped to 5x160 first
    full = np.asarray(gradient.resize((32, 2560), Image.Resampling.BICUBIC).crop((0, 1264, 32, 1296))).astype(float)
    assert np.abs(cropped - full).mean() < 1.0


def test_shrink_reduces_every_mode_and_keeps_the_short_side():
    cases = {
        "RGB": photo(1, (900, 700)), "L": photo(1, (900, 700)).convert("L"), "1": photo(1, (900, 700)).convert("1"),
        "P": photo(1, (900, 700)).convert("P"), "RGBA": photo(1, (900, 700)).convert("RGBA"),
        "I;16": Image.fromarray(np.full((700, 900), 40_000, np.uint16)),
        "F": Image.fromarray(np.full((700, 900), 0.5, np.float32)),
    }
    for mode, image in cases.items():
        small = shrink(image, 100)
        assert min(small.size) >= 100 and small.size[0] < 300, mode
    assert shrink(photo(1, (150, 120)), 100).size == (150, 120)  # less than twice the bound: untouched


def test_shrink_keeps_transparency_over_white():
    image = Image.new("P", (2000, 1600), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 1000, 1600))  # left half red, right half transparent
    decoded, info = decode_image(_png(image, transparency=0), draft_size=64)
    arr = np.asarray(decoded)
    assert (info.width, info.height) == (2000, 1600) and min(decoded.size) >= 64 and decoded.size[0] < 200
    assert tuple(arr[10, 5]) == (255, 0, 0) and tuple(arr[10, -5]) == (255, 255, 255)


def test_high_depth_conversion_handles_nan_inf_and_scales():
    floats = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    floats[0, 0], floats[0, 1], floats[0, 2] = np.nan, np.inf, -np.inf
    buf = io.BytesIO()
    Image.fromarray(floats, "F").save(buf, "TIFF")
    decoded, _ = decode_image(buf.getvalue())
    arr = np.asarray(decoded)[..., 0]
    assert arr[0, 0] == 0 and arr[0, 1] == 255 and arr[0, 2] == 0 and arr[9, 9] == 255 and 100 < arr[5, 0] < 160
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4), np.nan, np.float32), "F").save(buf, "TIFF")
    assert not np.asarray(decode_image(buf.getvalue())[0]).any()


def test_shrunk_png_embeds_like_a_full_decode(tiny_encoder):
    data = _png(photo(7, (1600, 1200)).resize((1600, 1200)))
    pre = tiny_encoder.preprocessor
    full = tiny_encoder.encode_images([decode_image(data)[0]])[0]
    small_image, _ = decode_image(data, draft_size=pre.draft_size)
    assert min(small_image.size) < 1200
    small = tiny_encoder.encode_images([small_image])[0]
    assert float(full @ small) > 0.999


_MEASURE = r"""
import json, sys, time
from sightline.search.imageio import decode_image
from sightline.search.preprocess import Preprocessor

def hwm():
    return [int(l.split()[1]) // 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]

pre = Preprocessor(size=224, mean=(0.5,) * 3, std=(0.5,) * 3)
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak
    base = hwm()
    started = time.perf_counter()
    image, _ = decode_image(data, draft_size=pre.draft_size)
    pre(image)
    del image
    out[path] = (hwm() - base, time.perf_counter() - started)
print(json.dumps(out))
"""


def test_big_allowed_images_decode_in_bounded_memory(tmp_path):
    """Peak memory of one decode is a small multiple of the decoded image, whatever its mode.

    Before: a 300 kB 16-bit PNG of 144 MP peaked at 4.7 GB (float64 copies); 8-bit greyscale at
    5x its size (RGB conversion at full size); a 1x65535 sliver at several GB (see above).
    """
    side = 8000  # 64 megapixels, well inside the default 179-megapixel limit
    files = {  # name: (data, bytes per decoded pixel)
        "grey16.png": (raw_png(side, side, 16, 0, b"\0" + b"\x12\x34" * side), 2),
        "grey.png": (raw_png(side, side, 8, 0, b"\0" + b"\x80" * side), 1),
        "rgb.png": (raw_png(side, side, 8, 2, b"\0" + b"\x10\x20\x30" * side), 4),  # Pillow keeps RGB in 4 bytes
        "sliver.png": (raw_png(1, 65535, 8, 2, b"\0\x10\x20\x30"), 0),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    out = subprocess.run([sys.executable, "-c", _MEASURE, *(str(tmp_path / n) for n in files)], cwd=REPO,
                         capture_output=True, text=True, check=True)
    peaks = {k.rsplit("/", 1)[1]: v for k, v in json.loads(out.stdout).items()}
    for name, (_, bytes_per_pixel) in files.items():
        decoded_mb = side * side * bytes_per_pixel / 2**20
        assert peaks[name][0] <= 3.2 * decoded_mb + 60, (name, peaks[name])
