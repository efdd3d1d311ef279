"""Helpers for the server tests: settings, an app client, small fake indexes."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from sightline.search.engine import SearchEngine
from sightline.search.store import Store
from sightline.search.store_records import FileRecord
from tests.helpers import FakeEncoder, photo

#: The token of the "exposed" server fixture (tests/web/conftest.py).
TOKEN = "correct-horse-battery"

PHOTOS = 36  # more than one UI page (30), so paging is exercised
CAPTIONS = ["a red square on grey", "a blue sky over the sea", "a green field", "a black cat",
            "a yellow taxi", "an orange at noon"]
LOCAL = "http://127.0.0.1"


def add_special_photos(folder: Path) -> dict[str, Path]:
    """An EXIF-rotated JPEG (stored landscape, shown portrait), a PNG and a non-ASCII name."""
    rotated = folder / "rotated.jpg"
    exif = Image.Exif()
    exif[274] = 6  # rotate 90° clockwise for display
    photo(900, size=(160, 80)).save(rotated, exif=exif)
    png = folder / "graphic.png"
    photo(901, size=(90, 90)).save(png)
    unicode_name = folder / "café ☕.jpg"
    photo(902, size=(120, 90)).save(unicode_name)
    return {"rotated": rotated, "png": png, "unicode": unicode_name}


def make_settings(index_dir: Path, tmp: Path, core: dict = None, **overrides):
    """Server settings over ``index_dir``; ``core``: library settings (model, limits...)."""
    from sightline.search.settings import Settings
    from sightline.web.settings import ServerSettings

    # torch_threads=0: in-process apps must not change torch's threads for the rest of the test run.
    values = dict(thumbnail_dir=tmp / "thumbs", refresh_seconds=0, torch_threads=0)
    values.update(overrides)
    return ServerSettings(Settings(index_dir, **(core or {})), **values)


@contextmanager
def serve(settings, base_url: str = LOCAL, **client_args):
    from fastapi.testclient import TestClient

    from sightline.web.app import create_app

    with TestClient(create_app(settings), base_url=base_url, **client_args) as client:
        yield client


def fake_record(path: Path, encoder) -> FileRecord:
    st = path.stat()
    with Image.open(path) as image:
        image.load()
        vector = encoder.encode_images([image])[0]
        size = image.size
    return FileRecord(str(path), st.st_size, st.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest(),
                      size[0], size[1], None, None, "JPEG", vector)


def fake_factory(index_dir: Path, encoder=None):
    encoder = encoder or FakeEncoder()
    return lambda: SearchEngine(Store.open(index_dir), encoder)
