"""Index choice, approximate indexes, deletions and tombstones."""

import numpy as np
import pytest

from sightline.search.store import ModelInfo, Store
from sightline.search.store_records import FileRecord
from sightline.search.vectors import EXACT_LIMIT, IndexPlan, VectorIndex, choose_factory, describe, fits


def clustered(n, dim=64, clusters=50, seed=0):
    """Vectors with structure like real embeddings (random Gaussians have none)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def recall_at_10(index, data, ids, queries):
    exact = np.argsort(-(queries @ data.T), axis=1)[:, :10]
    _, found = index.search(queries, 10)
    return np.mean([len(set(ids[e]) & set(f)) / 10 for e, f in zip(exact, found)])


def test_choice_follows_collection_size():
    assert choose_factory(1000, 512).factory == "Flat"
    assert choose_factory(EXACT_LIMIT - 1, 512).factory == "Flat"
    plan = choose_factory(1_000_000, 512)
    assert plan.factory == "IVF2048,Flat" and plan.nprobe >= 16
    assert choose_factory(100_000_000, 512).factory.startswith("IVF") and "PQ" in choose_factory(100_000_000, 512).factory
    assert choose_factory(10, 512, override="HNSW32").factory == "HNSW32"


def test_ivf_recall_against_exact():
    data, queries = clustered(20_000), clustered(200, seed=1)
    ids = np.arange(100, 20_100, dtype=np.int64)
    plan = IndexPlan("IVF256,Flat", nprobe=32)
    index = VectorIndex.build(64, plan, ids, data)
    assert describe(index) == ("ivf", 256)
    assert recall_at_10(index, data, ids, queries) >= 0.95


def test_hnsw_deletions_use_tombstones_until_rebuild():
    data = clustered(2000)
    ids = np.arange(2000, dtype=np.int64)
    index = VectorIndex.build(64, IndexPlan("HNSW16", ef_search=64), ids, data)
    gone = ids[:100]
    index.remove(gone)
    assert index.ntotal == 1900
    _, found = index.search(data[:100], 5)
    assert not set(found.ravel().tolist()) & set(gone.tolist())
    assert not index.needs_rebuild
    index.remove(ids[100:400])
    assert index.needs_rebuild
    assert set(index.ids().tolist()) == set(ids[400:].tolist())


def test_fits_keeps_ivf_while_it_grows_within_bounds():
    data = clustered(5000)
    index = VectorIndex.build(64, IndexPlan("IVF64,Flat", nprobe=8), np.arange(5000), data)
    assert fits(index, IndexPlan("IVF128,Flat")) and fits(index, IndexPlan("IVF256,Flat"))
    assert not fits(index, IndexPlan("IVF512,Flat")) and not fits(index, IndexPlan("Flat"))


def _store_with(tmp_path, n, dim=64, faiss_index=None):
    store = Store.open(tmp_path / "idx", create=True, faiss_index=faiss_index)
    store.bind_model(ModelInfo("fake/x", dim, "fake", "x"))
    data = clustered(n, dim)
    ids = store.add_files([FileRecord(f"/p/{i}.jpg", 1, 1, f"{i:064d}", 1, 1, None, None, None, data[i])
                           for i in range(n)])
    return store, data, np.array(ids)


@pytest.mark.parametrize("factory", ["IVF32,Flat", "HNSW16"])
def test_store_with_override_stays_correct_across_deletes_and_reload(tmp_path, factory):
    store, data, ids = _store_with(tmp_path, 3000, faiss_index=factory)
    store.save()
    assert describe(store.vectors("files"))[0] == ("ivf" if factory.startswith("IVF") else "hnsw")
    store.remove_files(ids[:50].tolist())
    hits = store.search("files", data[0], 5)
    assert ids[0] not in [i for i, _ in hits]
    store.save()
    reopened = Store.open(tmp_path / "idx", faiss_index=factory)
    assert set(reopened.vectors("files").ids().tolist()) == set(ids[50:].tolist())
    top = reopened.search("files", data[100], 1)[0]
    assert top[0] == ids[100] and top[1] == pytest.approx(1.0, abs=1e-5)


def test_store_switches_to_ivf_when_large(tmp_path, monkeypatch):
    import sightline.search.vectors as vectors

    monkeypatch.setattr(vectors, "EXACT_LIMIT", 1000)
    store, data, ids = _store_with(tmp_path, 1500)
    store.save()
    assert describe(store.vectors("files"))[0] == "ivf"
    queries = clustered(100, seed=3)
    assert recall_at_10(store.vectors("files"), data, ids, queries) >= 0.9
