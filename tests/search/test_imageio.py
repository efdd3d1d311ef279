"""Decoding: orientation, odd modes, bombs, broken files, JPEG draft decoding."""

import io

import numpy as np
import pytest
from PIL import Image

from sightline.search.errors import ImageDecodeError, ImageTooLargeError
from sightline.search.imageio import decode_image
from sightline.search.preprocess import Preprocessor
from tests.helpers import photo


def _bytes(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def test_exif_orientation_is_applied_and_recorded():
    image = photo(1, (120, 60))
    exif = Image.Exif()
    exif[274] = 6  # rotate 90 degrees clockwise for display
    exif.get_ifd(0x8769)[36867] = "2021:07:04 12:30:00"
    decoded, info = decode_image(_bytes(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (60, 120)
    assert (info.width, info.height) == (60, 120)
    assert info.orientation == 6
    assert info.taken_at == "2021-07-04T12:30:00"


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_absurd_orientation_is_ignored(value):
    exif = Image.Exif()
    exif[274] = value
    decoded, info = decode_image(_bytes(photo(2, (40, 30)), "JPEG", exif=exif.tobytes()))
    assert decoded.size == (40, 30) and info.orientation is None


@pytest.mark.parametrize("mode,fmt", [
    ("P", "PNG"), ("L", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"),
    ("I;16", "PNG"), ("1", "BMP"), ("RGBA", "WEBP"), ("P", "GIF"),
])
def test_modes_become_rgb(mode, fmt):
    image = photo(3, (64, 48)).convert(mode) if mode != "I;16" else Image.fromarray(
        (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16))
    decoded, info = decode_image(_bytes(image, fmt))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)


def test_sixteen_bit_is_scaled_not_clipped():
    arr = np.full((10, 10), 30000, np.uint16)
    decoded, _ = decode_image(_bytes(Image.fromarray(arr), "PNG"))
    assert 100 < np.asarray(decoded)[0, 0, 0] < 130  # 30000/65535*255 = 116.7


def test_transparent_palette_composited_on_white():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0] * 256)
    image.info["transparency"] = 0
    decoded, _ = decode_image(_bytes(image, "PNG", transparency=0))
    assert np.asarray(decoded)[0, 0].tolist() == [255, 255, 255]


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    decoded, _ = decode_image(buf.getvalue())
    r, g, b = np.asarray(decoded)[8, 8]
    assert r > 200 and b < 50


def test_decompression_bomb_refused_before_decoding():
    data = _bytes(Image.new("L", (5000, 5000)), "PNG")
    with pytest.raises(ImageTooLargeError, match="above the limit"):
        decode_image(data, max_pixels=10_000_000)


@pytest.mark.parametrize("data,match", [
    (b"", "not a recognised"), (b"GIF89a garbage", "image"), (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "image"),
    (b"random bytes that are not an image at all", "not a recognised"),
])
def test_garbage_is_a_decode_error(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF"])
def test_truncated_files_are_decode_errors(fmt):
    data = _bytes(photo(4, (200, 150)), fmt)
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def _big_jpeg() -> bytes:
    return _bytes(photo(7, (3000, 2000)).resize((3000, 2000)), "JPEG", quality=92)


def test_draft_only_reduces_to_twice_the_model_input():
    data = _big_jpeg()
    full, _ = decode_image(data)
    drafted, info = decode_image(data, draft_size=448)
    assert full.size == (3000, 2000)
    assert min(drafted.size) >= 448 and drafted.size[0] < 3000
    assert (info.width, info.height) == (3000, 2000)  # metadata keeps the true size
    small, _ = decode_image(_bytes(photo(8, (800, 600)), "JPEG"), draft_size=448)
    assert small.size == (800, 600)  # not large enough to draft


def test_draft_decoding_matches_full_decoding_at_model_input():
    """Pixels the model sees differ little between draft and full decoding."""
    data = _big_jpeg()
    pre = Preprocessor(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
    full = pre(decode_image(data)[0]).astype(np.float64)
    draft = pre(decode_image(data, draft_size=pre.draft_size)[0]).astype(np.float64)
    assert np.abs(full - draft).mean() < 2.0  # out of 255
    assert np.corrcoef(full.ravel(), draft.ravel())[0, 1] > 0.995


def test_draft_embeddings_match_full_decoding(tiny_encoder):
    data = _big_jpeg()
    pre = tiny_encoder.preprocessor
    full = tiny_encoder.encode_images([decode_image(data)[0]])[0]
    draft = tiny_encoder.encode_images([decode_image(data, draft_size=pre.draft_size)[0]])[0]
    assert float(full @ draft) > 0.999


@pytest.mark.parametrize("fmt", ["HEIF", "AVIF"])
def test_heic_and_avif_when_pillow_heif_is_installed(fmt):
    pillow_heif = pytest.importorskip("pillow_heif")  # an optional extra: sightline[heif]
    pillow_heif.register_heif_opener()
    decoded, info = decode_image(_bytes(photo(11, (64, 48)), fmt))
    assert decoded.mode == "RGB" and decoded.size == (64, 48)
