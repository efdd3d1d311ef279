"""Fixtures for the server tests: a real index built by `sightline index` with
the tiny open_clip model (plus captions), and app/clients over it."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sightline.search.engine import SearchEngine
from sightline.search.settings import Settings
from sightline.search.store import ModelInfo, Store
from tests.backends import BACKENDS, index_settings
from tests.helpers import FakeEncoder, write_photos
from tests.web.support import CAPTIONS, PHOTOS, add_special_photos, fake_record, make_settings, serve


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder, PHOTOS - 3, size=(160, 120))
    add_special_photos(folder)
    return folder


def build_index(settings: Settings, photo_dir: Path, tiny_model_args, tiny_encoder) -> Settings:
    """An index made by the real `sightline index` command (on the settings' backend), plus stored captions."""
    from sightline.cli import main

    where = ["--index", str(settings.index_dir)] + (["--db", settings.db_url] if settings.db_url else [])
    result = CliRunner().invoke(main, ["index", str(photo_dir), *where, "--workers", "0", "--quiet",
                                       *tiny_model_args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with settings.open_store() as store:
        first = sorted(store.file_states().values())[0].id
        vectors = tiny_encoder.encode_texts(CAPTIONS)
        store.add_captions([(first if i == 0 else None, text, "test", vec)
                            for i, (text, vec) in enumerate(zip(CAPTIONS, vectors))])
        store.save()
    return settings


@pytest.fixture(scope="session")
def built_index(tmp_path_factory, photo_dir, tiny_model_args, tiny_encoder) -> Path:
    """The SQLite index folder built by `sightline index` (tests that need the folder itself)."""
    return build_index(Settings(tmp_path_factory.mktemp("index")), photo_dir, tiny_model_args,
                       tiny_encoder).index_dir


@pytest.fixture(scope="session", params=BACKENDS)
def built(request, tmp_path_factory, photo_dir, tiny_model_args, tiny_encoder) -> Settings:
    """The same index built on each backend: SQLite (the folder from ``built_index``) and PostgreSQL."""
    if request.param == "sqlite":
        return Settings(request.getfixturevalue("built_index"))
    settings = index_settings("postgresql", tmp_path_factory.mktemp("index"), request.getfixturevalue("pg_server"))
    return build_index(settings, photo_dir, tiny_model_args, tiny_encoder)


@pytest.fixture(scope="session")
def client(built, tiny_encoder, tmp_path_factory):
    """The app over the real index, once per backend; the encoder is the session's tiny
    model (the same weights the index was built with, loaded once)."""
    tmp = tmp_path_factory.mktemp("server")
    factory = lambda: SearchEngine(built.open_store(), tiny_encoder)  # noqa: E731
    with serve(make_settings(built.index_dir, tmp, core={"db_url": built.db_url}, engine_factory=factory)) as c:
        yield c


@pytest.fixture
def fake_index(tmp_path) -> tuple[Path, list[Path]]:
    """A small index without captions, from the fake encoder, whose files tests may change."""
    photos = write_photos(tmp_path / "photos", 6)
    index_dir = tmp_path / "index"
    encoder = FakeEncoder()
    with Store.open(index_dir, create=True) as store:
        store.bind_model(ModelInfo(encoder.model_id, encoder.dim, encoder.name, encoder.pretrained))
        store.add_files([fake_record(p, encoder) for p in photos])
        store.save()
    return index_dir, photos


@pytest.fixture
def exposed(fake_index, tmp_path):
    """A client of a server bound to a non-loopback address, guarded by ``TOKEN``."""
    from tests.web.support import TOKEN, fake_factory, make_settings, serve

    index_dir, _ = fake_index
    settings = make_settings(index_dir, tmp_path, engine_factory=fake_factory(index_dir), host="0.0.0.0",
                             token=TOKEN)
    with serve(settings, base_url="http://photos.example:8000") as c:
        yield c


@pytest.fixture(scope="session")
def duplicate_index(tmp_path_factory, tiny_model_args) -> tuple[Path, Path]:
    """An index (real `sightline index`, tiny model) with exact and near copies:
    photo_0001 resized and re-encoded, photo_0002 copied into a second root."""
    import shutil

    from PIL import Image

    from sightline.cli import main

    photos, backup = tmp_path_factory.mktemp("dup-photos"), tmp_path_factory.mktemp("dup-backup")
    write_photos(photos, 8, size=(320, 240))
    with Image.open(photos / "photo_0001.jpg") as im:
        im.resize((160, 120)).save(photos / "photo_0001_small.jpg", quality=90)
        im.save(photos / "photo_0001_q60.jpg", quality=60)
    shutil.copy2(photos / "photo_0002.jpg", backup / "photo_0002.jpg")
    index_dir = tmp_path_factory.mktemp("dup-index")
    result = CliRunner().invoke(main, ["index", str(photos), str(backup), "--index", str(index_dir), "--workers", "0",
                                       "--quiet", *tiny_model_args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return index_dir, photos
