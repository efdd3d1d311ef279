"""Duplicate groups against a brute-force computation over every pair of stored embeddings."""

import itertools

import numpy as np
import pytest

from sightline.search.duplicates import DuplicateFinder, find_duplicates, near_pairs
from sightline.search.errors import InvalidQueryError
from sightline.search.store import ModelInfo, Store
from sightline.search.store_records import FileRecord

DIM = 64


def _unit(v):
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def planted(n=240, seed=0):
    """Random photos, some with near copies (noise at several strengths) and some with exact copies."""
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(n, DIM)))
    records = []
    for i, v in enumerate(base):
        records.append(FileRecord(f"/lib/{i % 7}/img{i:04d}.jpg", 1000 + i, i, f"{i:064x}", 640 + i, 480, None, None,
                                  "JPEG", v))
    for k, i in enumerate(range(0, n, 5)):  # near copies at cosines from ~0.80 to ~0.999
        noise = rng.normal(size=DIM) * [0.02, 0.08, 0.15, 0.25, 0.5][k % 5]
        records.append(FileRecord(f"/lib/copies/near{i:04d}.jpg", 500 + k, 10**6 + k, f"{10**6 + i:064x}", 320, 240,
                                  None, None, "JPEG", _unit(base[i] + noise)))
    for i in range(3, n, 17):  # exact copies: same content, same vector
        records.append(FileRecord(f"/backup/img{i:04d}.jpg", 1000 + i, 2 * 10**6 + i, f"{i:064x}", 640 + i, 480,
                                  None, None, "JPEG", base[i]))
    return records


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "idx", create=True)
    s.bind_model(ModelInfo("fake/test", DIM, "fake", "test"))
    s.add_files(planted())
    yield s
    s.close()


def ids_of(groups) -> set:
    """Groups as a set of id sets (frozensets only compare by inclusion, so they cannot be sorted)."""
    return {frozenset(f.id for f in g.files) for g in groups}


def brute_force(store, threshold, exact_only=False, under=None):
    states = {p: s for p, s in store.file_states().items() if under is None or p.startswith(under.rstrip("/") + "/")}
    ids = [s.id for s in states.values()]
    sha = {s.id: s.sha256 for s in states.values()}
    vec = {i: store.file_embedding(i) for i in ids}
    edges = {}
    for a, b in itertools.combinations(ids, 2):
        sim = 1.0 if sha[a] == sha[b] else float(np.dot(vec[a], vec[b]))
        if sha[a] == sha[b] or (not exact_only and sim >= threshold):
            edges[(a, b)] = sim
    groups = []
    for component in _components(ids, edges):
        if len(component) > 1:
            groups.append((frozenset(component), _bottleneck(component, edges)))
    return groups


def _components(ids, edges):
    adjacent = {i: set() for i in ids}
    for a, b in edges:
        adjacent[a].add(b)
        adjacent[b].add(a)
    seen, out = set(), []
    for start in ids:
        if start in seen:
            continue
        todo, component = [start], set()
        while todo:
            node = todo.pop()
            if node not in component:
                component.add(node)
                todo.extend(adjacent[node] - component)
        seen |= component
        out.append(component)
    return out


def _bottleneck(component, edges):
    """The highest t at which the component stays connected using only edges >= t."""
    inner = {e: w for e, w in edges.items() if e[0] in component and e[1] in component}
    for t in sorted(set(inner.values()), reverse=True):
        kept = {e: w for e, w in inner.items() if w >= t}
        if len(_components(list(component), kept)) == 1:
            return t
    return 1.0


@pytest.mark.parametrize("threshold", [0.8, 0.9, 0.95, 0.99, 0.999])
def test_groups_equal_brute_force(store, threshold):
    groups = find_duplicates(store, threshold)
    expected = brute_force(store, threshold)
    assert ids_of(groups) == set(c for c, _ in expected)
    scores = dict(expected)
    for g in groups:
        assert g.score == pytest.approx(scores[frozenset(f.id for f in g.files)], abs=1e-5)
        assert g.kind == ("exact" if len({f.sha256 for f in g.files}) == 1 else "near")
        pixels = [f.width * f.height for f in g.files]
        assert pixels[0] == max(pixels)  # best quality first
        assert g.files[0].similarity == 1.0 and all(f.similarity >= -1 for f in g.files)
    assert [g.score for g in groups] == sorted((g.score for g in groups), reverse=True)


def test_exact_only_and_folder(store):
    exact = find_duplicates(store, exact_only=True)
    assert ids_of(exact) == set(
        c for c, _ in brute_force(store, 1.0, exact_only=True))
    assert all(g.kind == "exact" and len(g.files) == 2 and g.score == 1.0 for g in exact)
    under = find_duplicates(store, 0.9, folder="/lib")
    assert ids_of(under) == set(
        c for c, _ in brute_force(store, 0.9, under="/lib"))
    assert all(f.path.startswith("/lib/") for g in under for f in g.files)


def test_the_finder_reuses_pairs_for_higher_thresholds_and_notices_changes(store):
    finder = DuplicateFinder(store)
    low = finder.groups(0.8)
    cached = finder._cache
    high = finder.groups(0.95)
    assert finder._cache is cached  # answered from the pairs found at 0.8
    assert ids_of(high) == set(c for c, _ in brute_force(store, 0.95))
    assert len(high) <= len(low)
    store.remove_files([low[0].files[-1].id])
    again = finder.groups(0.95)
    assert finder._cache is not cached
    assert ids_of(again) == set(c for c, _ in brute_force(store, 0.95))


def test_bad_thresholds_are_refused(store):
    for bad in (0.2, 1.5, float("nan")):
        with pytest.raises(InvalidQueryError, match="between"):
            find_duplicates(store, bad)


def test_approximate_pairs_have_high_recall():
    """Beyond the exact limit an IVF index is used: it must still find (nearly) every close pair."""
    rng = np.random.default_rng(3)
    base = _unit(rng.normal(size=(6000, DIM)))
    copies = _unit(base[:600] + rng.normal(size=(600, DIM)) * 0.03)  # cosine ~0.97
    x = np.concatenate([base, copies])
    exact = {(int(i), int(j)) for i, j, _ in near_pairs(x, 0.9)}
    approx = {(int(i), int(j)) for i, j, _ in near_pairs(x, 0.9, exact_limit=1000)}
    assert approx <= exact and len(exact) >= 600
    assert len(approx) / len(exact) >= 0.98
