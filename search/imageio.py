"""Safe image decoding shared by the indexer and the server.

Every decode goes through :func:`decode_image`: it refuses decompression
bombs before any pixel is decoded, reads EXIF capture time and orientation,
uses JPEG draft (reduced-size DCT) decoding when asked, applies the EXIF
orientation and always hands back an 8-bit RGB image.
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sightline.search.errors import ImageDecodeError, ImageTooLargeError

log = logging.getLogger(__name__)

#: Default decompression-bomb limit: Pillow's own error threshold.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
_TAG_ORIENTATION = 274
_TAG_DATETIME = 306
_TAG_DATETIME_ORIGINAL = 36867
_EXIF_IFD = 0x8769
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageInfo:
    """What we learn about an image besides its pixels."""

    width: int  # as displayed, i.e. after EXIF orientation
    height: int
    taken_at: Optional[str]  # ISO 8601, from EXIF DateTimeOriginal (or DateTime)
    orientation: Optional[int]
    format: Optional[str]


def _try_register_heif() -> None:
    try:  # HEIC/AVIF support is optional.
        from pillow_heif import register_heif_opener  # type: ignore

        register_heif_opener()
    except Exception:  # pragma: no cover - depends on an optional package
        pass


_heif_checked = False


def ensure_plugins() -> None:
    """Register optional decoders once per process, on first use."""
    global _heif_checked
    if not _heif_checked:
        _try_register_heif()
        _heif_checked = True


def decode_image(
    source: Union[bytes, BinaryIO],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: Optional[int] = None,
) -> tuple[Image.Image, ImageInfo]:
    """Decode ``source`` into an RGB image.

    ``draft_size``: when set and the image is a JPEG whose short side is at
    least twice that, decode at a reduced DCT scale that keeps both sides at
    or above ``draft_size``; other formats are box-reduced after decoding
    (:func:`shrink`) to the same bound.  Raises :class:`ImageDecodeError` (or
    :class:`ImageTooLargeError`) with a readable reason.
    """
    ensure_plugins()
    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            # The bomb warning (we check the size ourselves below) and warnings
            # about broken metadata Pillow skips: noise for a photo library.
            warnings.simplefilter("ignore")
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large (decompression bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"cannot open image: {exc}") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"invalid image dimensions {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image has {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (--max-pixels raises it)"
        )
    fmt = image.format
    orientation, taken_at = _read_exif(image)

    try:
        if draft_size and fmt == "JPEG" and min(width, height) >= 2 * draft_size:
            image.draft("RGB", (draft_size, draft_size))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image too large (decompression bomb guard): {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise ImageDecodeError(f"corrupt or truncated image data: {exc}") from None
    except Exception as exc:  # Pillow plugins raise assorted types on hostile input.
        raise ImageDecodeError(f"cannot decode image: {type(exc).__name__}: {exc}") from None

    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    try:
        if draft_size:
            image = shrink(image, draft_size)
        image = _apply_orientation(image, orientation)
        image = to_rgb(image)
    except (OSError, ValueError) as exc:
        raise ImageDecodeError(f"cannot convert image: {exc}") from None
    return image, ImageInfo(width=width, height=height, taken_at=taken_at, orientation=orientation, format=fmt)


def _read_exif(image: Image.Image) -> tuple[Optional[int], Optional[str]]:
    # EXIF is untrusted: any failure means "no EXIF", never a failed image.  Pillow
    # warns about every broken tag; in a photo library that is noise, not news.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _read_exif_quietly(image)


def _read_exif_quietly(image: Image.Image) -> tuple[Optional[int], Optional[str]]:
    try:
        exif = image.getexif()
    except Exception:
        return None, None
    orientation = None
    try:
        value = exif.get(_TAG_ORIENTATION)
        if isinstance(value, int) and 1 <= value <= 8:
            orientation = value
    except Exception:
        pass
    taken = None
    try:
        taken = exif.get_ifd(_EXIF_IFD).get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME)
    except Exception:
        taken = None
    return orientation, _parse_exif_datetime(taken)


def _parse_exif_datetime(value) -> Optional[str]:
    if isinstance(value, bytes):
        value = value.decode("ascii", "ignore")
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip("\x00 ")[:19], "%Y:%m:%d %H:%M:%S").isoformat()
    except ValueError:
        return None


def _apply_orientation(image: Image.Image, orientation: Optional[int]) -> Image.Image:
    if orientation is None or orientation == 1:
        return image
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ImageOps.exif_transpose(image)
    except Exception:
        log.debug("ignoring broken EXIF orientation", exc_info=True)
        return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparent areas are composited onto white (what a viewer shows), and
    16/32-bit greyscale is scaled rather than clipped.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _high_depth_to_rgb(image: Image.Image) -> Image.Image:
    # float32 and in place: a float64 pipeline needed ~30 bytes per pixel, i.e.
    # gigabytes for a few-hundred-kilobyte 16-bit PNG of 100+ megapixels.
    data = np.asarray(image, dtype=np.float32)
    if not data.flags.writeable:
        data = data.copy()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # all-NaN float images
        if image.mode == "F":
            lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
            if not np.isfinite(lo) or not np.isfinite(hi):
                finite = data[np.isfinite(data)]
                lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if hi > lo:
                data -= lo
                data *= 255.0 / (hi - lo)
            else:
                data.fill(0)
        else:
            data *= 255.0 / (65535.0 if data.max() > 255 else 255.0)
        np.nan_to_num(data, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        np.clip(data, 0, 255, out=data)
    grey = Image.fromarray(data.astype(np.uint8), mode="L")
    return grey.convert("RGB")


def shrink(image: Image.Image, min_side: int) -> Image.Image:
    """Box-reduce a decoded image by an integer factor, short side kept >= ``min_side``.

    What JPEG draft decoding does for JPEGs, for every other format: the later
    mode conversion and resize then touch a fraction of the pixels, so a huge
    PNG costs its decoded size once rather than several full-size copies.
    Palette images are subsampled (indices cannot be averaged).
    """
    width, height = image.size
    factor = min(width, height) // max(1, min_side)
    if factor < 2:
        return image
    small = (-(-width // factor), -(-height // factor))
    try:
        if image.mode in ("P", "PA"):
            return image.resize(small, Image.Resampling.NEAREST)
        if image.mode == "1":
            image = image.convert("L")
        elif image.mode.startswith("I;16"):
            image = image.convert("I")
        return image.reduce(factor)
    except (ValueError, OSError):  # a mode reduce() does not know: keep full size
        log.debug("cannot reduce a %s image; converting at full size", image.mode)
        return image
