"""`sightline duplicates` end to end: photos indexed with the tiny open_clip model, copies made
the way people make them (resized, re-encoded, copied to a backup), groups checked against a
brute-force computation over the stored embeddings, and --move-to with the index following."""

import json
import shutil

import pytest
from PIL import Image

from sightline.search.store import Store
from tests.cli.test_commands import run_cli
from tests.helpers import photo
from tests.search.test_duplicates import brute_force


@pytest.fixture
def library(tmp_path, tiny_model_args):
    photos, backup = tmp_path / "photos", tmp_path / "backup"
    photos.mkdir()
    backup.mkdir()
    for i in range(8):
        photo(i * 31, size=(400, 300)).save(photos / f"img{i}.jpg", quality=92)
    with Image.open(photos / "img1.jpg") as im:
        im.resize((200, 150)).save(photos / "img1_small.jpg", quality=92)
        im.save(photos / "img1_q60.jpg", quality=60)
    shutil.copy2(photos / "img2.jpg", backup / "img2.jpg")
    index = tmp_path / "index"
    result = run_cli("index", photos, backup, "--index", index, *tiny_model_args, "--workers", "0", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path, photos, backup, index


@pytest.mark.parametrize("threshold", ["0.99", "0.999"])
def test_groups_match_brute_force(library, threshold):
    _, photos, backup, index = library
    result = run_cli("duplicates", "--index", index, "--threshold", threshold, "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.stdout)
    with Store.open(index) as store:
        expected = {c for c, _ in brute_force(store, float(threshold))}
    assert {frozenset(f["id"] for f in g["files"]) for g in groups} == expected
    assert set(groups[0]) == {"kind", "score", "files"}
    assert set(groups[0]["files"][0]) == {"id", "path", "size", "width", "height", "taken_at", "similarity"}
    by_path = {f["path"]: g for g in groups for f in g["files"]}
    assert by_path[str(backup / "img2.jpg")] is by_path[str(photos / "img2.jpg")]
    family = by_path[str(photos / "img1.jpg")]  # the resized and re-encoded copies join the original
    assert {str(photos / n) for n in ("img1_small.jpg", "img1_q60.jpg")} <= {f["path"] for f in family["files"]}
    assert family["files"][0]["width"] == 400  # the full-size original before its half-size copy


def test_exact_only_folder_and_text(library):
    _, photos, backup, index = library
    groups = json.loads(run_cli("duplicates", "--index", index, "--exact-only", "--json").stdout)
    assert [(g["kind"], sorted(f["path"] for f in g["files"])) for g in groups] == [
        ("exact", sorted([str(backup / "img2.jpg"), str(photos / "img2.jpg")]))]
    assert json.loads(run_cli("duplicates", "--index", index, "--exact-only", "--folder", photos, "--json").stdout) == []
    text = run_cli("duplicates", "--index", index, "--exact-only")
    assert "Group 1: exact" in text.stdout and "keep" in text.stdout and "400x300" in text.stdout
    bad = run_cli("duplicates", "--index", index, "--threshold", "2")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_move_to_moves_the_copies_and_the_index_follows(library):
    tmp_path, photos, backup, index = library
    inside = run_cli("duplicates", "--index", index, "--move-to", photos / "dupes")
    assert inside.exit_code == 2 and "inside the indexed root" in inside.stderr
    result = run_cli("duplicates", "--index", index, "--exact-only", "--move-to", tmp_path / "review", "--json")
    assert result.exit_code == 0, result.output
    (group,) = json.loads(result.stdout)
    keep, extra = group["files"]
    assert keep["moved_to"] is None and extra["moved_to"].startswith(str(tmp_path / "review") + "/")
    assert (tmp_path / extra["moved_to"]).exists() and not (tmp_path / extra["path"]).exists()
    with Store.open(index) as store:  # moved out of the library: no longer indexed
        assert extra["path"] not in store.file_states() and keep["path"] in store.file_states()
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in store.file_states().values())
    assert json.loads(run_cli("duplicates", "--index", index, "--exact-only", "--json").stdout) == []
    again = run_cli("index", "--index", index, "--workers", "0", "--json")
    assert json.loads(again.stdout)["removed"] == 0  # nothing left for a rescan to clean up


def test_an_index_without_images_has_no_duplicates(tmp_path):
    Store.open(tmp_path / "index", create=True).close()
    result = run_cli("duplicates", "--index", tmp_path / "index", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert run_cli("duplicates", "--help").exit_code == 0
