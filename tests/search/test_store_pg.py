"""What is particular to the PostgreSQL + pgvector backend: the planner uses the HNSW
index, a filter never truncates results, writers coordinate per root, and a missing
server or extension is a clear error."""

import threading

import numpy as np
import pytest
from sqlalchemy import text

from sightline.search import schema, store_pg
from sightline.search.errors import DatabaseUnavailableError, IndexLockedError, IndexNotFoundError
from sightline.search.store import ModelInfo, Store
from sightline.search.store_records import FileRecord, Kind
from tests.backends import new_database

DIM = 16


def _unit(n, seed):
    v = np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _fill(store, n, seed=0):
    vectors = _unit(n, seed)
    # size = i: filters on it keep an exact, known fraction of the rows.
    ids = []
    for start in range(0, n, 5000):
        ids += store.add_files([FileRecord(f"/p/{i:06d}.jpg", i, 1, f"{i:064d}", 8, 8, None, None, "JPEG", vectors[i])
                                for i in range(start, min(n, start + 5000))])
    return np.array(ids), vectors


@pytest.fixture
def pg_store(pg_server, tmp_path):
    store = Store.open_url(new_database(pg_server), tmp_path, create=True)
    store.bind_model(ModelInfo("fake/x", DIM, "fake", "x"))
    yield store
    store.close()


def _plan(store, statement) -> str:
    """PostgreSQL's plan for one of the store's own statements."""
    from sqlalchemy.dialects import postgresql

    compiled = statement.compile(dialect=postgresql.psycopg.dialect(), compile_kwargs={"literal_binds": True})
    with store._engine.connect() as conn:
        return "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))


def test_the_planner_walks_the_hnsw_index_unless_told_to_score_exactly(pg_store):
    _fill(pg_store, 3000)
    query = _unit(1, 9)[0]
    index = "Index Scan using ix_files_embedding_hnsw"
    assert index in _plan(pg_store, store_pg.approximate_query(schema.files, query, 10))
    assert index in _plan(pg_store, store_pg.approximate_query(schema.files, query, 10, schema.files.c.size < 1500))
    # The trap: ordering by the exact (32-bit) score ranks the same rows but defeats the
    # index — which is what the exact path, used only for small filtered sets, wants.
    exact = _plan(pg_store, store_pg.exact_query(schema.files, query, 10, schema.files.c.size < 30))
    assert index not in exact and "Sort" in exact


def test_unfiltered_search_finds_the_true_neighbours(pg_store):
    ids, vectors = _fill(pg_store, 3000)
    hits = 0
    for query in _unit(20, 5):
        expected = set(ids[np.argsort(-(vectors @ query))[:10]].tolist())
        found = pg_store.search(Kind.FILES, query, 10)
        assert len(found) == 10 and [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        exact = dict(zip(ids.tolist(), (vectors @ query).tolist()))
        assert all(abs(exact[i] - s) < 1e-5 for i, s in found)  # scores are the 32-bit inner products
        hits += len(expected & {i for i, _ in found})
    assert hits / 200 >= 0.95


@pytest.fixture(scope="module")
def filled(pg_server, tmp_path_factory):
    """20,000 rows whose ``size`` is their position, so ``size < n`` keeps exactly n of them."""
    store = Store.open_url(new_database(pg_server), tmp_path_factory.mktemp("cache"), create=True)
    store.bind_model(ModelInfo("fake/x", DIM, "fake", "x"))
    ids, vectors = _fill(store, 20_000)
    yield store, ids, vectors
    store.close()


@pytest.mark.parametrize("keep", [0.001, 0.01, 0.5])
@pytest.mark.parametrize("exact_limit", [store_pg.EXACT_FILTER_LIMIT, 10])
def test_a_filter_never_truncates_results(filled, monkeypatch, keep, exact_limit):
    """With a filter the results are the nearest among the matching rows, and all of them
    when fewer than k match — whether the rows are searched exactly or through HNSW."""
    store, ids, vectors = filled
    monkeypatch.setattr(store_pg, "EXACT_FILTER_LIMIT", exact_limit)
    k, cut = 50, int(len(ids) * keep)
    where = schema.files.c.size < cut
    recall = []
    for query in _unit(5, 11):
        found = store.search(Kind.FILES, query, k, where=where)
        expected = ids[np.argsort(-(vectors[:cut] @ query))[:k]].tolist()
        assert len(found) == min(k, cut)
        assert {i for i, _ in found} <= set(ids[:cut].tolist())
        if cut <= exact_limit:  # searched exactly: the true top k, in order
            assert [i for i, _ in found] == expected
        recall.append(len(set(expected) & {i for i, _ in found}) / len(expected))
    assert np.mean(recall) >= 0.9


def test_writers_of_different_roots_run_at_once_and_of_one_root_do_not(pg_store, pg_server, tmp_path):
    url = pg_store._engine.url.render_as_string(hide_password=False)
    other = Store.open_url(url, tmp_path)
    try:
        with pg_store.writer(scopes=["/photos/a"]):
            with other.writer(scopes=["/photos/b"]):
                pass  # another root: fine
            with pytest.raises(IndexLockedError, match="/photos/a"):
                with other.writer(scopes=["/photos/a"]):
                    pass
            with pytest.raises(IndexLockedError):
                with other.writer():  # an index-wide writer waits for every root
                    pass
        with other.writer():
            with pytest.raises(IndexLockedError):
                with pg_store.writer(scopes=["/photos/b"]):
                    pass
    finally:
        other.close()


def test_two_first_writers_bind_one_model(pg_server, tmp_path):
    url = new_database(pg_server)
    stores = [Store.open_url(url, tmp_path, create=True) for _ in range(2)]
    outcomes = []

    def bind(store, model_id):
        try:
            store.bind_model(ModelInfo(model_id, DIM, "m", "x"))
            outcomes.append("bound")
        except Exception as exc:  # noqa: BLE001 - the test looks at what came out
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=bind, args=(s, f"model/{i}")) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ModelMismatchError", "bound"]
    for s in stores:
        s.close()


def test_unreachable_server_and_missing_index_are_clear_errors(pg_server, tmp_path):
    with pytest.raises(DatabaseUnavailableError, match="cannot use the PostgreSQL database") as info:
        Store.open_url("postgresql+psycopg://nobody:secret@127.0.0.1:1/none", tmp_path)
    assert "secret" not in str(info.value)
    with pytest.raises(IndexNotFoundError, match="--db"):
        Store.open_url(new_database(pg_server), tmp_path)
