"""Several roots in one index, exclusions remembered per root, and safe sweeping
(a missing, empty or swapped root keeps its photos) -- through the real pipeline
with the tiny open_clip model."""

import os
import shutil
from pathlib import Path

import pytest

from sightline.indexer.pipeline import IndexJob
from sightline.indexer.roots import Health, remove_root
from sightline.search.errors import ConfigurationError, NotFoundError, RootDeviceChangedError, RootEmptyError, RootMissingError
from sightline.search.store import Store
from tests.helpers import write_photos


def index(index_dir, encoder, paths=None, **kwargs):
    with Store.open(index_dir, create=True) as store:
        return IndexJob(store, encoder, workers=0, progress=False).run(paths, **kwargs)


def paths_in(index_dir):
    with Store.open(index_dir) as store:
        return set(store.file_states())


@pytest.fixture
def library(tmp_path):
    a, b = tmp_path / "disk-a", tmp_path / "disk-b"
    write_photos(a, 4)
    write_photos(b / "album", 3, start=10)
    return tmp_path / "index", a, b


def test_several_roots_are_remembered_and_swept_separately(library, tiny_encoder):
    index_dir, a, b = library
    report = index(index_dir, tiny_encoder, [str(a), str(b)])
    assert report.indexed == 7 and report.roots == [str(a), str(b)]
    (a / "photo_0000.jpg").unlink()
    (b / "album" / "photo_0010.jpg").unlink()
    only_a = index(index_dir, tiny_encoder, [str(a)])
    assert only_a.removed == 1  # b is not part of this run: its deletion waits
    assert str(b / "album" / "photo_0010.jpg") in paths_in(index_dir)
    everything = index(index_dir, tiny_encoder)  # no path: every remembered root
    assert everything.removed == 1 and len(paths_in(index_dir)) == 5
    with Store.open(index_dir) as store:
        roots = {r.path: r for r in store.roots.all()}
    assert set(roots) == {str(a), str(b)}
    assert roots[str(a)].files == 3 and roots[str(a)].device == os.stat(a).st_dev


def test_a_path_inside_a_root_is_part_of_it_and_a_parent_takes_over(library, tiny_encoder):
    index_dir, a, b = library
    index(index_dir, tiny_encoder, [str(b / "album")], excludes=["*/photo_0011.jpg"])
    write_photos(b, 1, start=50)
    report = index(index_dir, tiny_encoder, [str(b)])  # the parent becomes the root, the globs carry over
    assert report.indexed == 1
    with Store.open(index_dir) as store:
        assert [(r.path, r.excludes) for r in store.roots.all()] == [(str(b), ("*/photo_0011.jpg",))]
    (b / "album" / "photo_0012.jpg").unlink()
    sub = index(index_dir, tiny_encoder, [str(b / "album")])  # a sub-folder: swept there only
    assert sub.removed == 1 and sub.roots == [str(b)]


def test_excluded_files_are_removed_on_the_next_run(library, tiny_encoder):
    index_dir, a, _ = library
    index(index_dir, tiny_encoder, [str(a)])
    report = index(index_dir, tiny_encoder, [str(a)], excludes=["*/photo_0001.jpg"])
    assert report.removed == 1
    again = index(index_dir, tiny_encoder)  # remembered
    assert again.removed == 0 and str(a / "photo_0001.jpg") not in paths_in(index_dir)
    (a / ".sightlineignore").write_text("photo_0002.jpg\n")
    assert index(index_dir, tiny_encoder).removed == 1
    back = index(index_dir, tiny_encoder, [str(a)], clear_excludes=True)
    assert back.indexed == 1 and len(paths_in(index_dir)) == 3  # the ignore file still holds one back


def test_a_missing_root_keeps_its_photos_until_pruned(library, tiny_encoder):
    index_dir, a, b = library
    index(index_dir, tiny_encoder, [str(a), str(b)])
    shutil.move(b, b.with_name("unplugged"))
    report = index(index_dir, tiny_encoder)
    assert report.removed == 0 and len(paths_in(index_dir)) == 7
    assert [(h.path, h.health, h.kept) for h in report.held] == [(str(b), Health.MISSING, 3)]
    assert isinstance(report.exit_error, RootMissingError) and report.exit_error.exit_code == 20
    assert not report.failed  # a missing root is not an unreadable file
    shutil.move(b.with_name("unplugged"), b)  # plugged back in: nothing to embed again
    back = index(index_dir, tiny_encoder)
    assert (back.indexed, back.unchanged, back.exit_error) == (0, 7, None)
    shutil.rmtree(b)
    pruned = index(index_dir, tiny_encoder, prune=True)
    assert pruned.removed == 3 and pruned.exit_error is None and len(paths_in(index_dir)) == 4


def test_an_emptied_root_is_not_swept(library, tiny_encoder):
    index_dir, a, _ = library
    index(index_dir, tiny_encoder, [str(a)])
    for p in a.iterdir():
        p.unlink()  # what an unmounted disk's mount point looks like
    report = index(index_dir, tiny_encoder, [str(a)])
    assert report.removed == 0 and isinstance(report.exit_error, RootEmptyError)
    assert report.exit_error.exit_code == 21 and "--prune" in str(report.exit_error)
    assert index(index_dir, tiny_encoder, [str(a)], prune=True).removed == 4


def test_a_root_on_another_device_keeps_what_it_cannot_find(library, tiny_encoder):
    index_dir, a, _ = library
    index(index_dir, tiny_encoder, [str(a)])
    with Store.open(index_dir) as store:  # as if another disk were mounted here
        root = store.roots.get(str(a))
        store.roots.put(root.__class__(root.path, root.excludes, root.device + 1, root.files, root.indexed_at))
    write_photos(a, 1, start=70)
    (a / "photo_0003.jpg").unlink()
    report = index(index_dir, tiny_encoder, [str(a)])
    assert report.indexed == 1 and report.removed == 0  # what is there is indexed; nothing is swept
    assert isinstance(report.exit_error, RootDeviceChangedError) and report.exit_error.exit_code == 22
    assert index(index_dir, tiny_encoder, [str(a)], prune=True).removed == 1
    with Store.open(index_dir) as store:
        assert store.roots.get(str(a)).device == os.stat(a).st_dev  # pruning accepts the new device


def test_a_real_device_change_behind_a_symlinked_root(tmp_path, tiny_encoder):
    other = "/dev/shm"
    if not os.path.isdir(other) or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second file system (/dev/shm)")
    disk = tmp_path / "disk"
    write_photos(disk, 2)
    mount = tmp_path / "mnt"
    mount.symlink_to(disk, target_is_directory=True)
    index(tmp_path / "index", tiny_encoder, [str(mount)])
    swap = os.path.join(other, f"sightline-test-{os.getpid()}")
    os.makedirs(swap, exist_ok=True)
    try:
        write_photos(Path(swap), 1, start=40)
        mount.unlink()
        mount.symlink_to(swap, target_is_directory=True)
        report = index(tmp_path / "index", tiny_encoder, [str(mount)])
        assert [h.health for h in report.held] == [Health.OTHER_DEVICE] and report.removed == 0
    finally:
        shutil.rmtree(swap)


def test_roots_remove_forgets_one_root_and_its_photos(library, tiny_encoder):
    index_dir, a, b = library
    index(index_dir, tiny_encoder, [str(a), str(b)])
    with Store.open(index_dir) as store:
        assert remove_root(store, str(b)) == 3
        assert [r.path for r in store.roots.all()] == [str(a)]
        assert sorted(store.vectors("files").ids().tolist()) == sorted(s.id for s in store.file_states().values())
        with pytest.raises(NotFoundError, match="not a root"):
            remove_root(store, str(b))
    assert len(paths_in(index_dir)) == 4


def test_bad_paths_are_refused_before_anything_changes(tmp_path, tiny_encoder):
    with pytest.raises(ConfigurationError, match="remembers no folders"):
        index(tmp_path / "index", tiny_encoder)
    with pytest.raises(ConfigurationError, match="does not exist"):
        index(tmp_path / "index", tiny_encoder, [str(tmp_path / "nowhere")])


def test_an_index_from_before_roots_gets_its_roots_from_its_runs(library, tiny_encoder):
    """The migration remembers the folders earlier runs indexed (outermost only)."""
    import sqlite3

    from sightline.search import schema

    index_dir, a, b = library
    index(index_dir, tiny_encoder, [str(a)])
    index(index_dir, tiny_encoder, [str(b / "album")])
    db = sqlite3.connect(index_dir / "sightline.db")
    db.execute("DELETE FROM roots")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
               (str(schema.MIGRATIONS.index(schema._v2_library_roots)),))
    db.commit()
    db.close()
    with Store.open(index_dir) as store:
        assert [(r.path, r.files, r.device) for r in store.roots.all()] == [(str(a), 4, None),
                                                                             (str(b / "album"), 3, None)]
