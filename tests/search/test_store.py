"""The store, on both backends (SQLite + FAISS and PostgreSQL + pgvector): exact
search, model binding, ids, odd paths, captions, locking; then what is particular
to the SQLite folder (FAISS caches, a damaged file)."""

import os

import numpy as np
import pytest

from sightline.search.errors import IndexLockedError, IndexNotFoundError, ModelMismatchError, NotFoundError, StoreCorruptError
from sightline.search.store import ModelInfo, Store
from sightline.search.store_records import FileRecord

DIM = 16
MODEL = ModelInfo("fake/test", DIM, "fake", "test")


def _vectors(n, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(n, seed=0, prefix="/photos/img"):
    vecs = _vectors(n, seed)
    return [FileRecord(f"{prefix}{i:04d}.jpg", 100 + i, 1_000 + i, f"{seed:04d}{i:060d}", 64, 48, None, None,
                       "JPEG", vecs[i]) for i in range(n)]


@pytest.fixture
def store(fresh_settings):
    s = fresh_settings.open_store(create=True)
    s.bind_model(MODEL)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path):
    s = Store.open(tmp_path / "idx", create=True)
    s.bind_model(MODEL)
    yield s
    s.close()


def test_open_missing_index_says_how_to_create_one(fresh_settings):
    with pytest.raises(IndexNotFoundError, match="sightline index"):
        fresh_settings.open_store()


def test_search_equals_brute_force(store):
    records = _records(300)
    ids = store.add_files(records)
    matrix = np.stack([r.embedding for r in records])
    for query in _vectors(10, seed=99):
        found = store.search("files", query, 10)
        expected = np.argsort(-(matrix @ query), kind="stable")[:10]
        assert [i for i, _ in found] == [ids[j] for j in expected]
        assert np.allclose([s for _, s in found], (matrix @ query)[expected], atol=1e-5)


def test_model_mismatch_is_refused_with_advice(store):
    with pytest.raises(ModelMismatchError, match="re-index"):
        store.bind_model(ModelInfo("other/model", DIM, "other", "x"))
    store.bind_model(MODEL)  # the same model is fine


def test_vectors_rebuilt_from_database(tmp_path, sqlite_store):
    ids = sqlite_store.add_files(_records(50))
    sqlite_store.save()
    (tmp_path / "idx" / "images.faiss").unlink()
    query = _vectors(1, 5)[0]
    before = sqlite_store.search("files", query, 5)
    reopened = Store.open(tmp_path / "idx")
    assert reopened.search("files", query, 5) == before
    assert sorted(reopened.vectors("files").ids().tolist()) == sorted(ids)


def test_damaged_vector_file_is_rebuilt(tmp_path, sqlite_store, caplog):
    sqlite_store.add_files(_records(20))
    sqlite_store.save()
    (tmp_path / "idx" / "images.faiss").write_bytes(b"garbage" * 10)
    reopened = Store.open(tmp_path / "idx")
    assert reopened.vectors("files").ntotal == 20
    assert "damaged" in caplog.text


def test_stale_vector_file_catches_up(tmp_path, sqlite_store):
    sqlite_store.add_files(_records(10))
    sqlite_store.save()
    # Another process (simulated by a second store) adds and removes without saving.
    other = Store.open(tmp_path / "idx")
    new_ids = other.add_files(_records(5, seed=1, prefix="/photos/new"))
    other.remove_files(new_ids[:2])
    reopened = Store.open(tmp_path / "idx")
    assert sorted(reopened.vectors("files").ids().tolist()) == sorted(reopened.get_files(
        list(range(1, 100))).keys())


def test_refresh_sees_other_writers(tmp_path, sqlite_store):
    sqlite_store.add_files(_records(10))
    reader = Store.open(tmp_path / "idx")
    assert reader.vectors("files").ntotal == 10
    ids = sqlite_store.add_files(_records(3, seed=2, prefix="/photos/more"))
    sqlite_store.remove_files(ids[:1])
    reader.refresh()
    assert reader.vectors("files").ntotal == 12


def test_ids_are_never_reused(store):
    first = store.add_files(_records(3))
    store.remove_files([first[-1]])
    again = store.add_files(_records(1, seed=3, prefix="/photos/again"))
    assert again[0] > first[-1]


def test_replace_and_remove_keep_faiss_and_sqlite_in_step(store):
    ids = store.add_files(_records(10))
    new = store.add_files(_records(2, seed=4, prefix="/photos/replacement"), replace_ids=ids[:2])
    store.remove_files(ids[2:4])
    expected = set(ids[4:]) | set(new)
    assert set(store.vector_ids("files").tolist()) == expected
    assert set(store.get_files(list(expected) + ids[:4]).keys()) == expected
    with pytest.raises(NotFoundError):
        store.get_file(ids[0])


def test_non_utf8_and_unicode_paths_round_trip(store):
    weird = [os.fsdecode(b"/photos/caf\xe9.jpg"), "/photos/日本語 写真.png", "/photos/" + "x" * 250 + ".jpg"]
    vecs = _vectors(3)
    ids = store.add_files([FileRecord(p, 1, 1, f"{i:064d}", 1, 1, None, None, None, vecs[i]) for i, p in enumerate(weird)])
    assert [store.get_file(i).path for i in ids] == weird
    assert set(store.file_states("/photos")) == set(weird)
    assert os.fsencode(store.get_file(ids[0]).path) == b"/photos/caf\xe9.jpg"


def test_file_states_under_a_folder(store):
    store.add_files(_records(2, prefix="/a/x") + _records(2, seed=1, prefix="/a-b/y") + _records(1, seed=2, prefix="/ab/z"))
    assert len(store.file_states("/a")) == 2
    assert len(store.file_states("/a/")) == 2
    assert len(store.file_states(None)) == 5


def test_captions_follow_their_file(store):
    ids = store.add_files(_records(2))
    cap_ids = store.add_captions([(ids[0], "a cat", "test", _vectors(1, 7)[0]),
                                  (ids[1], "a dog", "test", _vectors(1, 8)[0])])
    assert store.search("captions", _vectors(1, 7)[0], 1)[0][0] == cap_ids[0]
    store.remove_files([ids[0]])
    assert store.counts()["captions"] == 1
    assert set(store.vector_ids("captions").tolist()) == {cap_ids[1]}


def test_second_writer_is_refused(fresh_settings, store):
    other = fresh_settings.open_store()
    with store.writer():
        with pytest.raises(IndexLockedError, match="another process"):
            with other.writer():
                pass
        with store.writer():  # re-entrant for its holder; the lock is kept until the outer block ends
            pass
        with pytest.raises(IndexLockedError):
            with other.writer():
                pass
    with other.writer():
        pass


def test_damaged_database_names_the_file(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "sightline.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreCorruptError, match="sightline.db"):
        Store.open(folder)


def test_schema_version_recorded(store):
    from sightline.search.schema import SCHEMA_VERSION

    assert store.get_meta("schema_version") == str(SCHEMA_VERSION)
