"""Exclusions: --exclude globs against full paths, and .sightlineignore files (gitignore rules)."""

import os

from sightline.indexer.ignore import IGNORE_FILE, Exclusions
from sightline.indexer.scan import walk_images
from tests.helpers import write_photos


def names(root, exclusions):
    return sorted(os.path.relpath(f.path, root) for f in walk_images(str(root), exclusions=exclusions))


def test_globs_match_the_full_path(tmp_path):
    write_photos(tmp_path / "a" / "private", 2)
    write_photos(tmp_path / "a", 2)
    (tmp_path / "a" / "x.tmp.jpg").write_bytes((tmp_path / "a" / "photo_0000.jpg").read_bytes())
    rules = Exclusions(str(tmp_path), ["*/private/*", "*.tmp.jpg"])
    assert names(tmp_path, rules) == ["a/photo_0000.jpg", "a/photo_0001.jpg"]
    assert rules.skipped == 1  # the private folder is not even entered; the .tmp file is counted
    assert rules.excludes_path(str(tmp_path / "a" / "private" / "new.jpg"))
    assert not rules.excludes_path(str(tmp_path / "a" / "new.jpg"))
    assert Exclusions(str(tmp_path), ["*/PRIVATE/*"]).excludes_path(str(tmp_path / "a/private/p.jpg")) is False


def test_sightlineignore_is_gitignore_style_and_nests(tmp_path):
    write_photos(tmp_path / "raw", 1)
    write_photos(tmp_path / "trip" / "raw", 1)
    write_photos(tmp_path / "trip", 3)
    (tmp_path / IGNORE_FILE).write_text("# drafts\nraw/\n/photo_0000.jpg\n")
    (tmp_path / "trip" / IGNORE_FILE).write_text("photo_0*.jpg\n!photo_0002.jpg\n")
    write_photos(tmp_path, 2)
    rules = Exclusions(str(tmp_path))
    # raw/ anywhere below; /photo_0000.jpg only at the top; trip's own file re-includes one.
    assert names(tmp_path, rules) == ["photo_0001.jpg", "trip/photo_0002.jpg"]
    assert rules.excludes_path(str(tmp_path / "trip" / "raw" / "photo_0000.jpg"))
    assert not rules.excludes_path(str(tmp_path / "trip" / "photo_0002.jpg"))
    assert rules.excludes_path(str(tmp_path / ".hidden" / "a.jpg"))


def test_the_index_folder_is_always_left_out(tmp_path):
    write_photos(tmp_path / "index" / "thumbnails", 2)
    write_photos(tmp_path, 1)
    assert names(tmp_path, Exclusions(str(tmp_path), always=[str(tmp_path / "index")])) == ["photo_0000.jpg"]


def test_an_unreadable_or_broken_ignore_file_is_not_fatal(tmp_path):
    write_photos(tmp_path, 2)
    (tmp_path / IGNORE_FILE).mkdir()  # a folder where the file should be
    assert len(names(tmp_path, Exclusions(str(tmp_path)))) == 2
