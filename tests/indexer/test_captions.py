"""Captions for indexed images: dataset files, sidecars, incremental re-runs."""

import json

import pytest

from sightline.indexer.captions import (
    SOURCE_DATASET,
    SOURCE_SIDECAR,
    index_captions,
    load_caption_file,
    sidecar_captions,
    sidecars_under,
)
from sightline.indexer.pipeline import IndexJob
from sightline.search.errors import ModelMismatchError
from sightline.search.store import Store
from tests.helpers import FakeEncoder, write_photos


@pytest.fixture
def encoder(tiny_encoder):
    return tiny_encoder


@pytest.fixture
def indexed(tmp_path, encoder):
    photos = write_photos(tmp_path / "photos", 3)
    store = Store.open(tmp_path / "index", create=True)
    IndexJob(store, encoder, workers=0, progress=False).run(str(tmp_path / "photos"))
    yield store, photos
    store.close()


def _texts(store, path, source=None):
    file_id = store.file_states()[str(path)].id
    return [c.text for c in store.captions_for_file(file_id) if source is None or c.source == source]


def test_load_caption_file_any_format(tmp_path):
    (tmp_path / "c.csv").write_text("image,caption\na.jpg,one\na.jpg,two\nb.jpg,three\n")
    assert load_caption_file(tmp_path / "c.csv", tmp_path) == {
        str(tmp_path / "a.jpg"): ["one", "two"], str(tmp_path / "b.jpg"): ["three"]}
    (tmp_path / "d.json").write_text(json.dumps({"images": [
        {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "x"}]},
        {"filename": "b.jpg", "split": "train", "sentences": [{"raw": "y"}]}]}))
    assert load_caption_file(tmp_path / "d.json", tmp_path) == {
        str(tmp_path / "a.jpg"): ["x"], str(tmp_path / "b.jpg"): ["y"]}


def test_sidecar_captions(tmp_path):
    photo = write_photos(tmp_path, 1)[0]
    assert sidecar_captions(photo) == []
    photo.with_suffix(".txt").write_text("a dog on a beach\n\n  two people  \n")
    assert sidecar_captions(photo) == ["a dog on a beach", "two people"]


def test_index_captions_is_incremental_and_idempotent(indexed, encoder, tmp_path):
    store, photos = indexed
    captions = {str(photos[0]): ["a red thing", "a red thing", "something else"], str(photos[1]): ["blue"],
                str(tmp_path / "not-indexed.jpg"): ["ignored"]}
    assert index_captions(store, encoder, captions) == 3
    assert _texts(store, photos[0]) == ["a red thing", "something else"]  # duplicates dropped
    assert index_captions(store, encoder, captions) == 0  # nothing changed: nothing done
    assert store.counts()["captions"] == 3
    # The stored captions are searchable, image -> text.
    hits = store.search("captions", encoder.encode_texts(["blue"])[0], 1)
    assert store.get_captions([hits[0][0]])[hits[0][0]].text == "blue"


@pytest.mark.skipif(not hasattr(Store, "remove_captions"), reason="needs Store.remove_captions")
def test_changed_captions_replace_those_of_the_same_source(indexed, encoder):
    store, photos = indexed
    index_captions(store, encoder, {str(photos[0]): ["old one", "old two"]})
    index_captions(store, encoder, {str(photos[0]): ["from a sidecar"]}, source=SOURCE_SIDECAR)
    index_captions(store, encoder, {str(photos[0]): ["new"]})
    assert _texts(store, photos[0], SOURCE_DATASET) == ["new"]
    assert _texts(store, photos[0], SOURCE_SIDECAR) == ["from a sidecar"]
    assert store.counts()["captions"] == 2


@pytest.mark.skipif(not hasattr(Store, "remove_captions"), reason="needs Store.remove_captions")
def test_sidecars_under_picks_up_changes_and_removals(indexed, encoder, tmp_path):
    store, photos = indexed
    photos[0].with_suffix(".txt").write_text("first\nsecond\n")
    found = sidecars_under(store, tmp_path / "photos")
    assert found[str(photos[0])] == ["first", "second"] and found[str(photos[1])] == []
    assert index_captions(store, encoder, found, source=SOURCE_SIDECAR) == 2
    photos[0].with_suffix(".txt").unlink()
    index_captions(store, encoder, sidecars_under(store, tmp_path / "photos"), source=SOURCE_SIDECAR)
    assert _texts(store, photos[0]) == []


def test_captions_need_the_index_model(indexed):
    store, photos = indexed
    with pytest.raises(ModelMismatchError, match="same model"):
        index_captions(store, FakeEncoder(model_id="other/model"), {str(photos[0]): ["x"]})


def test_cli_index_with_captions_file_and_sidecars(tmp_path, tiny_model_args):
    from click.testing import CliRunner

    from sightline.cli import main

    photos = write_photos(tmp_path / "photos", 3)
    (tmp_path / "captions.csv").write_text(f"image,caption\n{photos[0].name},a caption from the file\n")
    photos[1].with_suffix(".txt").write_text("a sidecar caption\nanother one\n")
    index = tmp_path / "index"
    args = ["index", str(tmp_path / "photos"), "--index", str(index), *tiny_model_args, "--workers", "0",
            "--captions", str(tmp_path / "captions.csv"), "--json"]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["captions_added"] == 3
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert json.loads(again.stdout)["captions_added"] == 0  # idempotent
    with Store.open(index) as store:
        assert _texts(store, photos[0]) == ["a caption from the file"]
        assert _texts(store, photos[1], SOURCE_SIDECAR) == ["a sidecar caption", "another one"]
    bad = CliRunner().invoke(main, ["index", str(tmp_path / "photos"), "--index", str(index), "--captions",
                                    str(tmp_path / "photos" / photos[2].name)])
    assert bad.exit_code == 10 and "cannot tell the format" in bad.output
