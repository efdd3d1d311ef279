"""A generated corpus of hostile image files for the robustness tests.

Every case is built here from a seed (nothing is downloaded) and says what
indexing must do with it:

- ``index``: a valid image, however odd (CMYK, 16-bit, animated, broken EXIF,
  a strange name); it must end up in the index.
- ``fail``: it must be recorded as a failure whose reason matches ``reason``.
- ``either``: e.g. a JPEG missing only its last bytes, which a decoder may
  legitimately still read; indexing must then agree with ``decode_image``.
- ``skip``: not a regular image file (a FIFO, a device, a folder named
  ``x.jpg``); it must be neither indexed nor block the job.

Special file-system objects (symlink loops, FIFOs, devices) are made by
:func:`make_special_files`, since they are not plain bytes.
"""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from tests.helpers import bomb_png, photo

Name = Union[str, bytes]
#: Failure reasons are free text; these say which kind of reason is acceptable.
TOO_LARGE = r"too large|above the limit|pixels"
UNREADABLE = r"not a recognised|cannot open|corrupt|truncated|cannot decode|invalid|empty"


@dataclass(frozen=True)
class Case:
    name: Name  # path relative to the corpus folder; bytes for names that are not UTF-8
    data: bytes
    expect: str  # "index" | "fail" | "either" | "skip"
    group: str
    reason: str = ""  # regex a failure reason must match (expect == "fail")

    def path(self, folder: Path) -> bytes:
        name = self.name if isinstance(self.name, bytes) else self.name.encode()
        return os.path.join(os.fsencode(folder), name)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


# ----------------------------------------------------------------- raw formats
def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, row: bytes, extra: bytes = b"") -> bytes:
    """A PNG whose every row is ``row`` (filter byte included), compressed as a stream.

    Builds huge-but-valid images (real decompression bombs) in little memory.
    ``extra``: chunks placed before the image data (PLTE, tRNS).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    packer = zlib.compressobj(9)
    parts, rows_per_chunk = [], max(1, (1 << 22) // max(1, len(row)))
    for start in range(0, height, rows_per_chunk):
        parts.append(packer.compress(row * min(rows_per_chunk, height - start)))
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def tiff_bytes(entries: list[tuple[int, int, int, bytes]], ifd_offset: int = 8, next_ifd: int = 0,
               count_override: int | None = None, tail: bytes = b"") -> bytes:
    """A little-endian TIFF (or EXIF block) with one IFD of ``(tag, type, count, value4)`` entries."""
    head = b"II*\x00" + struct.pack("<I", ifd_offset)
    head += b"\x00" * max(0, ifd_offset - len(head))
    count = len(entries) if count_override is None else count_override
    ifd = struct.pack("<H", count)
    for tag, typ, n, value in sorted(entries):
        ifd += struct.pack("<HHI", tag, typ, n) + value.ljust(4, b"\x00")[:4]
    return head + ifd + struct.pack("<I", next_ifd) + tail


def short(value: int) -> bytes:
    return struct.pack("<H", value)


def long(value: int) -> bytes:
    return struct.pack("<I", value)


def grey_tiff(width: int, height: int, pixels: bytes | None = None) -> bytes:
    """An uncompressed 8-bit greyscale TIFF (pixel data after the IFD)."""
    entries = 10
    data_at = 8 + 2 + entries * 12 + 4
    pixels = pixels if pixels is not None else bytes(range(256)) * (width * height // 256 + 1)
    pixels = pixels[: width * height]
    return tiff_bytes([
        (256, 4, 1, long(width)), (257, 4, 1, long(height)), (258, 3, 1, short(8)), (259, 3, 1, short(1)),
        (262, 3, 1, short(1)), (273, 4, 1, long(data_at)), (277, 3, 1, short(1)), (278, 4, 1, long(height)),
        (279, 4, 1, long(len(pixels))), (284, 3, 1, short(1)),
    ], tail=pixels)


def exif_block(entries, **kwargs) -> bytes:
    return b"Exif\x00\x00" + tiff_bytes(entries, **kwargs)


def jpeg_with_app1(payload: bytes, seed: int = 0, size=(64, 48)) -> bytes:
    """A JPEG with a raw APP1 segment inserted right after SOI (no validation by Pillow)."""
    base = encode(photo(seed, size), "JPEG")
    return base[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + base[2:]


def jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(5, (16, 16)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(6, (16, 16)).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen
    desc = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[desc] == 0x21:  # skip extension blocks: label, then sub-blocks up to a zero length
        desc += 2
        while data[desc]:
            desc += data[desc] + 1
        desc += 1
    data[desc + 5:desc + 9] = struct.pack("<HH", width, height)  # first frame
    return bytes(data)


def webp_claiming(width: int, height: int) -> bytes:
    inner = encode(photo(7, (16, 16)), "WEBP", lossless=True)[12:]  # the VP8L chunk
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + long(10) + b"\x00\x00\x00\x00" + canvas
    body = b"WEBP" + vp8x + inner
    return b"RIFF" + long(len(body)) + body


def bmp_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(photo(8, (16, 16)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


# ------------------------------------------------------------------- the cases
def truncation_offsets(length: int) -> list[int]:
    fixed = [1, 2, 3, 4, 6, 8, 11, 16, 24, 33, 48, 64, 100, 150, 250, 400]
    fractions = [int(length * f) for f in (0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.97)]
    near_end = [length - 16, length - 4, length - 2, length - 1]
    return sorted({o for o in fixed + fractions + near_end if 0 < o < length})


def truncated_cases() -> list[Case]:
    cases = []
    for fmt, ext, kwargs in [("JPEG", "jpg", {}), ("JPEG", "jpg", {"progressive": True}), ("PNG", "png", {}),
                             ("WEBP", "webp", {}), ("GIF", "gif", {}), ("TIFF", "tif", {}), ("BMP", "bmp", {})]:
        label = fmt.lower() + ("-progressive" if kwargs else "")
        data = encode(photo(11, (160, 120)) if fmt != "GIF" else photo(11, (160, 120)).convert("P"), fmt, **kwargs)
        for offset in truncation_offsets(len(data)):
            # Cut well before the end: the pixels are not there, so the file must fail.
            expect = "fail" if offset <= len(data) * 0.6 else "either"
            cases.append(Case(f"truncated/{label}_{offset:06d}.{ext}", data[:offset], expect, "truncated",
                              UNREADABLE))
    return cases


def empty_and_random_cases(rng: random.Random) -> list[Case]:
    cases = [Case(f"empty/empty.{ext}", b"", "fail", "empty", "empty file")
             for ext in ("jpg", "JPEG", "png", "gif", "webp", "tiff", "bmp", "heic")]
    for size in (1, 7, 100, 4096, 65536):
        for ext in ("jpg", "png", "webp", "gif"):
            cases.append(Case(f"random/noise_{size}.{ext}", rng.randbytes(size), "fail", "random", UNREADABLE))
    magics = {"jpg": b"\xff\xd8\xff\xe0", "png": b"\x89PNG\r\n\x1a\n", "gif": b"GIF89a",
              "webp": b"RIFF\x00\x10\x00\x00WEBPVP8 ", "tif": b"II*\x00\x08\x00\x00\x00", "bmp": b"BM"}
    for ext, magic in magics.items():
        for size in (16, 300, 20_000):
            cases.append(Case(f"random/magic_{size}.{ext}", magic + rng.randbytes(size), "fail", "random", UNREADABLE))
    # Real images with a few random bytes flipped in the middle: decoders must not crash.
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif"), ("TIFF", "tif")):
        base = encode(photo(12, (96, 72)).convert("P") if fmt == "GIF" else photo(12, (96, 72)), fmt)
        for i in range(4):
            data = bytearray(base)
            for _ in range(8):
                data[rng.randrange(len(data) // 4, len(data))] = rng.randrange(256)
            cases.append(Case(f"random/flipped_{i}.{ext}", bytes(data), "either", "random", UNREADABLE))
    return cases


def bomb_cases() -> list[Case]:
    claims = [
        ("png_100k", "png", bomb_png(100_000, 100_000)), ("png_tall", "png", bomb_png(1, 2**31 - 1)),
        ("jpeg_65k", "jpg", jpeg_claiming(65_500, 65_500)), ("gif_65k", "gif", gif_claiming(65_535, 65_535)),
        ("webp_16m", "webp", webp_claiming(16_000_000, 16_000_000)),
        ("tiff_100k", "tif", grey_tiff(100_000, 100_000, b"\0" * 64)),
        ("bmp_100k", "bmp", bmp_claiming(100_000, 100_000)), ("bmp_negative", "bmp", bmp_claiming(-50_000, -50_000)),
    ]
    cases = [Case(f"bombs/{name}.{ext}", data, "fail", "bomb", TOO_LARGE + "|" + UNREADABLE)
             for name, ext, data in claims]
    cases.append(Case("bombs/png_zero_width.png", bomb_png(0, 10), "fail", "bomb", UNREADABLE))
    return cases


def _rgb16_png(width: int, height: int) -> bytes:
    arr = np.random.default_rng(3).integers(0, 65535, (height, width * 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def _palette_with_transparency(fmt: str) -> bytes:
    image = photo(13, (64, 48)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(image, fmt, transparency=0)


def mode_cases() -> list[Case]:
    base = photo(14, (64, 48))
    arr16 = (np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16)
    floats = np.linspace(-1e6, 1e6, 64 * 48, dtype=np.float32).reshape(48, 64)
    floats[0, :10] = np.nan
    floats[1, :10] = np.inf
    items = {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"), "cmyk.tif": encode(base.convert("CMYK"), "TIFF"),
        "grey16.png": encode(Image.fromarray(arr16), "PNG"), "rgb48.png": _rgb16_png(40, 30),
        "grey16.tif": encode(Image.fromarray(arr16), "TIFF"), "float.tif": encode(Image.fromarray(floats, "F"), "TIFF"),
        "all_nan.tif": encode(Image.fromarray(np.full((8, 8), np.nan, np.float32), "F"), "TIFF"),
        "int32.tif": encode(Image.fromarray(arr16.astype(np.int32) - 30000, "I"), "TIFF"),
        "la.png": encode(base.convert("LA"), "PNG"), "rgba.png": encode(base.convert("RGBA"), "PNG"),
        "palette_trns.png": _palette_with_transparency("PNG"), "palette_trns.gif": _palette_with_transparency("GIF"),
        "rgba.webp": encode(base.convert("RGBA"), "WEBP"), "lossless.webp": encode(base, "WEBP", lossless=True),
        "bilevel.png": encode(base.convert("1"), "PNG"), "grey.jpg": encode(base.convert("L"), "JPEG"),
        "palette.bmp": encode(base.convert("P"), "BMP"), "rgba.tif": encode(base.convert("RGBA"), "TIFF"),
        "ycbcr.jpg": encode(base, "JPEG", subsampling=2, quality=10), "lab.tif": encode(base.convert("LAB"), "TIFF"),
        "progressive.jpg": encode(base, "JPEG", progressive=True),
        "tiny_1x1.png": encode(Image.new("RGB", (1, 1)), "PNG"),
        "png_named.jpg": encode(base, "PNG"), "jpeg_named.png": encode(base, "JPEG"), "UPPER.JPG": encode(base, "JPEG"),
        # Extreme aspect ratios: the resize to the model's short side must not allocate gigabytes.
        "sliver_1x5000.png": encode(Image.new("RGB", (1, 5000), (200, 10, 10)), "PNG"),
        "sliver_65000x1.png": encode(Image.new("RGB", (65000, 1), (10, 200, 10)), "PNG"),
        "sliver_2x65000.png": encode(Image.new("L", (2, 65000), 128), "PNG"),
    }
    return [Case(f"modes/{name}", data, "index", "modes") for name, data in items.items()]


def animated_cases() -> list[Case]:
    frames = [photo(20 + i, (48, 36)) for i in range(5)]
    items = {
        "anim.gif": encode(frames[0].convert("P"), "GIF", save_all=True,
                           append_images=[f.convert("P") for f in frames[1:]], duration=50, loop=0, disposal=2),
        "anim.webp": encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=50, loop=0),
        "anim.png": encode(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
        "anim_sizes.gif": encode(frames[0].convert("P"), "GIF", save_all=True,
                                 append_images=[frames[1].resize((10, 10)).convert("P")], duration=10),
    }
    return [Case(f"animated/{name}", data, "index", "animated") for name, data in items.items()]


def exif_cases() -> list[Case]:
    orient = lambda v, t=3, n=1: (274, t, n, short(v) if t == 3 else long(v))  # noqa: E731
    blocks = {
        "orient_0": exif_block([orient(0)]), "orient_9": exif_block([orient(9)]),
        "orient_65535": exif_block([orient(65535)]), "orient_6": exif_block([orient(6)]),
        "orient_5": exif_block([orient(5)]), "orient_7": exif_block([orient(7)]),
        "orient_as_ascii": exif_block([(274, 2, 2, b"6\x00")]),
        "orient_as_long": exif_block([orient(6, t=4)]),
        "orient_count_huge": exif_block([(274, 3, 0x7FFFFFFF, long(0xFFFFFF00))]),
        "orient_rational_oob": exif_block([(274, 5, 1, long(0x7FFFFFF0))]),
        # b"Exif\0\0" + b"II*\0" + the IFD0 offset (bytes 10-14), here far past the end
        "ifd0_offset_oob": exif_block([orient(6)])[:10] + long(0xFFFFFFF0) + exif_block([orient(6)])[14:],
        "ifd_count_huge": exif_block([orient(6)], count_override=0xFFFF),
        "ifd_loop": exif_block([orient(6)], next_ifd=8),
        "exif_ifd_self": exif_block([orient(3), (0x8769, 4, 1, long(8))]),
        "exif_ifd_oob": exif_block([orient(3), (0x8769, 4, 1, long(0x7FFFFFFF))]),
        "gps_ifd_oob": exif_block([(0x8825, 4, 1, long(0xFFFFFFFF))]),
        "datetime_garbage": exif_block([(306, 2, 20, long(26))], tail=b"\xff\xfe\x00garbage\x80\x81 99:99:99\x00"),
        "datetime_huge_count": exif_block([(306, 2, 0x10000000, long(26))]),
        "bad_byte_order": b"Exif\x00\x00XX*\x00\x08\x00\x00\x00" + b"\x00" * 20,
        "truncated_ifd": exif_block([orient(6), (306, 2, 20, long(200))])[:17],
        "not_exif_at_all": b"Exif\x00\x00" + bytes(range(256)) * 4,
    }
    cases = [Case(f"exif/{name}.jpg", jpeg_with_app1(data, seed=i), "index", "exif")
             for i, (name, data) in enumerate(blocks.items())]
    for name in ("orient_9", "ifd_loop", "exif_ifd_self", "datetime_garbage"):
        raw = blocks[name][6:]
        cases.append(Case(f"exif/{name}.png", encode(photo(40, (64, 48)), "PNG", exif=raw), "index", "exif"))
        cases.append(Case(f"exif/{name}.webp", encode(photo(41, (64, 48)), "WEBP", exif=blocks[name]), "index", "exif"))
    # A TIFF *image* whose own structure is broken is not an image at all.
    good = grey_tiff(32, 32)
    cases += [
        # the next-IFD pointer (just before the pixels) points back at the first IFD
        Case("exif/tiff_ifd_loop.tif", good[:-4 - 32 * 32] + long(8) + good[-32 * 32:], "either", "exif"),
        Case("exif/tiff_ifd_oob.tif", good[:4] + long(0xFFFFFF00) + good[8:], "fail", "exif", UNREADABLE),
        Case("exif/tiff_strip_oob.tif", tiff_bytes([(256, 4, 1, long(32)), (257, 4, 1, long(32)), (258, 3, 1, short(8)),
                                                     (262, 3, 1, short(1)), (273, 4, 1, long(0x7FFFFFF0)),
                                                     (279, 4, 1, long(1024))]), "fail", "exif", UNREADABLE),
    ]
    return cases


def name_cases() -> list[Case]:
    jpeg = lambda seed: encode(photo(seed, (48, 36)), "JPEG")  # noqa: E731
    names: list[Name] = [
        "names/" + "L" * 251 + ".jpg",  # 255 bytes: the longest name ext4 allows
        "names/" + "é" * 125 + ".jpg",  # 254 bytes of UTF-8, 129 characters
        "names/写真 📷 фото.jpg", "names/\u202eRTL override gpj.jpg", "names/tab\tand\nnewline.jpg",
        "names/-leading dash.jpg", "names/ leading and trailing space .jpg", "names/trailing.dot.jpg.",
        "names/quote'\"back\\slash.jpg", "names/glob*?[x].jpg", "names/percent%2Fslash%00.jpg",
        "names/café_nfc.jpg", "names/cafe\u0301_nfd.jpg",  # look identical, are different files
        b"names/latin1_caf\xe9.jpg", b"names/invalid_\xff\xfe.jpg", b"names/lone_continuation_\x80.png",
        b"names/\xed\xa0\x80_surrogate_bytes.jpg",
        "names/" + "/".join(["d" * 60] * 12) + "/deep.jpg",  # ~740-byte path, 12 levels deep
    ]
    cases = []
    for i, name in enumerate(names):
        png = (name if isinstance(name, bytes) else name.encode()).endswith(b".png")
        data = encode(photo(60 + i, (48, 36)), "PNG") if png else jpeg(60 + i)
        is_image = not (isinstance(name, str) and name.endswith("."))  # "x.jpg." has no image extension
        cases.append(Case(name, data, "index" if is_image else "skip", "names"))
    return cases


def build_cases(seed: int = 0) -> list[Case]:
    rng = random.Random(seed)
    return (truncated_cases() + empty_and_random_cases(rng) + bomb_cases() + mode_cases() + animated_cases()
            + exif_cases() + name_cases())


def write_corpus(folder: Path, cases: list[Case]) -> dict[bytes, Case]:
    out = {}
    for case in cases:
        path = case.path(folder)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(case.data)
        out[path] = case
    return out


def make_special_files(folder: Path) -> dict[bytes, Case]:
    """File-system objects with image names that are not regular image files."""
    special = Path(folder) / "special"
    special.mkdir(parents=True, exist_ok=True)
    good = encode(photo(90, (48, 36)), "JPEG")
    (special / "real.jpg").write_bytes(good)
    os.mkfifo(special / "pipe.jpg")  # opening it would block forever
    (special / "zero_device.jpg").symlink_to("/dev/zero")  # reading it would never end
    (special / "dangling.jpg").symlink_to(special / "nowhere.jpg")
    (special / "self_loop.jpg").symlink_to(special / "self_loop.jpg")
    (special / "loop_a.jpg").symlink_to(special / "loop_b.jpg")
    (special / "loop_b.jpg").symlink_to(special / "loop_a.jpg")
    (special / "folder.jpg").mkdir()
    (special / "folder.jpg" / "inside.jpg").write_bytes(good)
    (special / "sub").mkdir()
    (special / "sub" / "up").symlink_to("..", target_is_directory=True)  # directory loop
    (special / "sub" / "again").symlink_to(special / "sub", target_is_directory=True)
    (special / "link_to_real.jpg").symlink_to("real.jpg")
    cases = {
        "real.jpg": "index", "pipe.jpg": "skip", "zero_device.jpg": "skip", "dangling.jpg": "skip",
        "self_loop.jpg": "fail", "loop_a.jpg": "fail", "loop_b.jpg": "fail", "folder.jpg/inside.jpg": "index",
        "link_to_real.jpg": "index",
    }
    return {os.path.join(os.fsencode(special), name.encode()): Case("special/" + name, b"", expect, "special",
                                                                    r"symbolic links|cannot stat")
            for name, expect in cases.items()}


# --------------------------------------------------- decoders that misbehave
#: Image sizes that make :class:`MisbehavingPreprocessor` crash or hang.
CRASH_SIZE, HANG_SIZE = (13, 17), (17, 13)


class MisbehavingPreprocessor:
    """Wraps a real preprocessor; dies or never returns on two magic sizes.

    Stands in for a C decoder that crashes (or is OOM-killed) or loops forever
    on a hostile file.  SIGKILL rather than SIGSEGV: same effect on the pool,
    no core dumps.  Picklable, so it reaches the decode worker processes.
    """

    def __init__(self, inner):
        self.inner = inner

    @property
    def draft_size(self):
        return self.inner.draft_size

    def __call__(self, image):
        import signal
        import time

        if image.size == CRASH_SIZE:
            os.kill(os.getpid(), signal.SIGKILL)
        if image.size == HANG_SIZE:
            while True:
                time.sleep(1)
        return self.inner(image)
