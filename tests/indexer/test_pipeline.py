"""The indexing job end to end with the real tiny open_clip model."""

import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from sightline.indexer.pipeline import IndexJob
from sightline.search.engine import SearchEngine
from sightline.search.store import Store
from tests.helpers import bomb_png, photo, write_photos


@pytest.fixture
def index_dir(tmp_path):
    return tmp_path / "index"


def run_job(index_dir, encoder, folder, workers=0, batch_size=8):
    with Store.open(index_dir, create=True) as store:
        return IndexJob(store, encoder, batch_size=batch_size, workers=workers, progress=False).run(str(folder))


def stored(index_dir):
    with Store.open(index_dir) as store:
        return store.file_states()


def test_index_then_search_returns_exact_neighbours(tmp_path, index_dir, tiny_encoder):
    paths = write_photos(tmp_path / "photos", 40, size=(90, 70))
    report = run_job(index_dir, tiny_encoder, tmp_path / "photos", workers=2)
    assert report.indexed == 40 and not report.failed
    # Brute force over embeddings computed independently, image by image.
    matrix = tiny_encoder.encode_images([Image.open(p) for p in paths])
    engine = SearchEngine(Store.open(index_dir), tiny_encoder)
    for query in ["a red square", "green field", "the number seven"]:
        q = tiny_encoder.encode_texts([query])[0]
        order = np.argsort(-(matrix @ q), kind="stable")[:10]
        hits = engine.search_text(query, k=10)
        assert [h.path for h in hits] == [str(paths[i]) for i in order]
        assert np.allclose([h.score for h in hits], (matrix @ q)[order], atol=1e-4)


def test_rerun_embeds_nothing(tmp_path, index_dir, tiny_encoder):
    write_photos(tmp_path / "photos", 12)
    run_job(index_dir, tiny_encoder, tmp_path / "photos")
    again = run_job(index_dir, tiny_encoder, tmp_path / "photos")
    assert (again.indexed, again.reused, again.unchanged, again.removed) == (0, 0, 12, 0)


def test_incremental_changes(tmp_path, index_dir, tiny_encoder):
    folder = tmp_path / "photos"
    paths = write_photos(folder, 10)
    run_job(index_dir, tiny_encoder, folder)
    before = stored(index_dir)

    os.utime(paths[0], ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    photo(999).save(paths[1])  # content changed
    shutil.move(paths[2], folder / "moved.jpg")  # moved
    shutil.copy(paths[3], folder / "copy.jpg")  # duplicated
    paths[4].unlink()  # deleted
    write_photos(folder, 2, start=100)  # new

    report = run_job(index_dir, tiny_encoder, folder)
    assert report.touched == 1
    assert report.indexed == 3  # the changed file and the two new ones
    assert report.reused == 2  # moved and duplicated content reuse stored vectors
    assert report.removed == 2  # the deleted file and the moved file's old path
    after = stored(index_dir)
    assert str(paths[4]) not in after and str(paths[2]) not in after
    assert after[str(folder / "moved.jpg")].sha256 == before[str(paths[2])].sha256
    assert after[str(paths[0])].id == before[str(paths[0])].id  # touched: same row
    assert after[str(paths[1])].id != before[str(paths[1])].id  # changed: new vector, new id
    assert len(after) == 12
    with Store.open(index_dir) as store:
        assert set(store.vectors("files").ids().tolist()) == {s.id for s in after.values()}
        moved = store.records_by_hash([after[str(folder / "moved.jpg")].sha256])
        copy_vec = store.file_embedding(after[str(folder / "copy.jpg")].id)
        assert np.allclose(copy_vec, store.file_embedding(after[str(paths[3])].id))
        assert moved


def test_bad_files_are_reported_and_the_rest_indexed(tmp_path, index_dir, tiny_encoder):
    folder = tmp_path / "photos"
    write_photos(folder, 5)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a png")
    good = (folder / "photo_0000.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    photo(50).save(folder / "actually_png.jpg", "PNG")  # wrong extension, still an image
    (folder / "bomb.png").write_bytes(bomb_png())  # claims 10 gigapixels
    (folder / "notes.txt").write_text("ignored: not an image extension")
    report = run_job(index_dir, tiny_encoder, folder, workers=2)
    reasons = {os.path.basename(f.path): f.reason for f in report.failed}
    assert set(reasons) == {"empty.jpg", "text.png", "truncated.jpg", "bomb.png"}
    assert "empty" in reasons["empty.jpg"]
    assert "not a recognised image" in reasons["text.png"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    assert "too large" in reasons["bomb.png"] or "pixels" in reasons["bomb.png"]
    assert report.indexed == 6  # five photos and the PNG with a .jpg name
    with Store.open(index_dir) as store:
        assert {os.path.basename(f.path) for f in store.failures()} == set(reasons)
    # Failures are not retried until the file changes.
    again = run_job(index_dir, tiny_encoder, folder)
    assert again.still_failing == 4 and again.indexed == 0 and not again.failed
    photo(77).save(folder / "truncated.jpg")
    fixed = run_job(index_dir, tiny_encoder, folder)
    assert fixed.indexed == 1 and fixed.still_failing == 3


def test_unreadable_folder_does_not_sweep_its_files(tmp_path, index_dir, tiny_encoder, monkeypatch):
    folder = tmp_path / "photos"
    write_photos(folder / "album", 3)
    write_photos(folder, 1)
    run_job(index_dir, tiny_encoder, folder)
    # Tests run as root, which reads any folder; make listing this one fail as it would for a user.
    import sightline.indexer.scan as scan_module

    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("album"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(scan_module.os, "scandir", scandir)
    report = run_job(index_dir, tiny_encoder, folder)
    assert report.removed == 0 and len(stored(index_dir)) == 4
    assert [os.path.basename(f.path) for f in report.failed] == ["album"]
    assert "Permission denied" in report.failed[0].reason


def test_symlink_loops_and_hidden_folders(tmp_path, index_dir, tiny_encoder):
    folder = tmp_path / "photos"
    write_photos(folder / "a", 2)
    write_photos(folder / ".thumbnails", 2)
    (folder / "a" / "loop").symlink_to(folder, target_is_directory=True)
    (folder / "link.jpg").symlink_to(folder / "a" / "photo_0000.jpg")
    report = run_job(index_dir, tiny_encoder, folder)
    names = sorted(os.path.relpath(p, folder) for p in stored(index_dir))
    assert names == ["a/photo_0000.jpg", "a/photo_0001.jpg", "link.jpg"]
    assert report.reused == 1  # the symlinked file has known content


def test_odd_file_names(tmp_path, index_dir, tiny_encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["space name.jpg", "ünïcødé 写真.jpg", "x" * 200 + ".jpg", "new\nline.jpg", "-dash.jpg"]
    for i, name in enumerate(names):
        photo(i).save(folder / name, "JPEG")
    raw = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    photo(9).save(raw, "JPEG")
    report = run_job(index_dir, tiny_encoder, folder, workers=2)
    assert report.indexed == 6 and not report.failed
    assert os.fsdecode(raw) in stored(index_dir)


def test_index_a_single_file(tmp_path, index_dir, tiny_encoder):
    paths = write_photos(tmp_path / "photos", 3)
    report = run_job(index_dir, tiny_encoder, paths[0])
    assert report.indexed == 1
    report = run_job(index_dir, tiny_encoder, tmp_path / "photos")
    assert (report.indexed, report.unchanged) == (2, 1)


def test_unchanged_rescan_never_loads_the_model(tmp_path, index_dir, tiny_encoder):
    write_photos(tmp_path / "photos", 5)
    run_job(index_dir, tiny_encoder, tmp_path / "photos")
    calls = []

    def factory():
        calls.append(1)
        return tiny_encoder

    with Store.open(index_dir) as store:
        report = IndexJob(store, factory, model_id=tiny_encoder.model_id, progress=False, workers=0).run(
            str(tmp_path / "photos"))
    assert report.unchanged == 5 and calls == []
    write_photos(tmp_path / "photos", 1, start=50)
    with Store.open(index_dir) as store:
        report = IndexJob(store, factory, model_id=tiny_encoder.model_id, progress=False, workers=0).run(
            str(tmp_path / "photos"))
    assert report.indexed == 1 and calls == [1]


def test_model_mismatch_fails_before_loading(tmp_path, index_dir, tiny_encoder):
    from sightline.search.errors import ModelMismatchError

    write_photos(tmp_path / "photos", 2)
    run_job(index_dir, tiny_encoder, tmp_path / "photos")
    with Store.open(index_dir) as store, pytest.raises(ModelMismatchError):
        IndexJob(store, lambda: pytest.fail("must not load"), model_id="other/model", progress=False).run(
            str(tmp_path / "photos"))


def test_model_id_is_known_without_loading(tiny_encoder, tiny_checkpoint):
    from sightline.search.models import ModelSpec, model_id_for
    from tests.helpers import TINY_CONFIG

    assert model_id_for(ModelSpec(str(TINY_CONFIG), str(tiny_checkpoint))) == tiny_encoder.model_id
    assert model_id_for(ModelSpec("ViT-B-32", "laion2b_s34b_b79k")) == "ViT-B-32/laion2b_s34b_b79k"
