"""Recall@k against a slow, obviously-correct reference, and hand-made cases."""

import numpy as np
import pytest

from sightline.search.metrics import (
    best_relevant_ranks,
    format_table,
    image_text_retrieval,
    recall_at_k,
    recall_curve,
)


def reference_recall(scores, relevant, k, ties="pessimistic"):
    """Sort each row with an explicit tie rule, walk down, count hits."""
    hits = 0
    for q, row in enumerate(scores):
        rel = set(relevant[q])
        # Pessimistic: among equal scores irrelevant items come first.
        tie_key = (lambda j: 0 if j in rel else -1) if ties == "pessimistic" else (lambda j: 0 if j in rel else 1)
        order = sorted(range(len(row)), key=lambda j: (-row[j], tie_key(j)))
        # Only irrelevant items before the first relevant one count toward its rank.
        rank = 0
        for j in order:
            if j in rel:
                break
            rank += 1
        hits += rank < k
    return hits / len(scores)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
def test_matches_reference_on_random_data(seed, ties):
    rng = np.random.default_rng(seed)
    n_queries, n_items = rng.integers(5, 40), rng.integers(5, 60)
    # Coarse scores so that ties are common.
    scores = rng.integers(0, 6, size=(n_queries, n_items)).astype(np.float32)
    relevant = [rng.choice(n_items, size=rng.integers(1, 4), replace=False) for _ in range(n_queries)]
    got = recall_at_k(scores, relevant, ks=(1, 2, 5, 10), ties=ties)
    for k, value in got.items():
        assert value == pytest.approx(reference_recall(scores, relevant, k, ties))


@pytest.mark.parametrize("seed", range(3))
def test_image_text_retrieval_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_images, per = 30, 5
    images = rng.normal(size=(n_images, 8)).astype(np.float32)
    owner = np.repeat(np.arange(n_images), per)
    texts = images[owner] + rng.normal(scale=1.5, size=(n_images * per, 8)).astype(np.float32)
    result = image_text_retrieval(images, texts, owner)
    sims = texts @ images.T
    for k in (1, 5, 10):
        expected_t2i = reference_recall(sims, [[o] for o in owner], k)
        expected_i2t = reference_recall(sims.T, [np.flatnonzero(owner == i) for i in range(n_images)], k)
        summary = result.summary(ks=(k,))
        assert summary["t2i"][f"R@{k}"] == pytest.approx(100 * expected_t2i, abs=0.01)
        assert summary["i2t"][f"R@{k}"] == pytest.approx(100 * expected_i2t, abs=0.01)


def test_hand_made_ranks():
    scores = np.array([
        [0.9, 0.5, 0.1],  # relevant 0 is first
        [0.9, 0.5, 0.1],  # relevant 2 is last
        [0.9, 0.5, 0.1],  # relevant 1 and 2: best is 1, rank 1 (item 2 doesn't count)
    ])
    assert best_relevant_ranks(scores, [[0], [2], [1, 2]]).tolist() == [0, 2, 1]
    assert recall_at_k(scores, [[0], [2], [1, 2]], ks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 1.0}


def test_other_relevant_items_never_push_rank_down():
    scores = np.array([[0.9, 0.8, 0.7, 0.1]])
    assert best_relevant_ranks(scores, [[0, 1, 2]]).tolist() == [0]
    assert best_relevant_ranks(scores, [[1, 2]]).tolist() == [1]


def test_ties_are_pessimistic_by_default():
    # A model that gives every item the same score must not get perfect recall.
    scores = np.zeros((4, 10))
    relevant = [[i] for i in range(4)]
    assert recall_at_k(scores, relevant, ks=(1, 10)) == {1: 0.0, 10: 1.0}
    assert best_relevant_ranks(scores, relevant).tolist() == [9] * 4
    assert best_relevant_ranks(scores, relevant, ties="optimistic").tolist() == [0] * 4
    # A tie between two relevant items is no penalty.
    assert best_relevant_ranks(np.array([[0.5, 0.5, 0.1]]), [[0, 1]]).tolist() == [0]


def test_recall_curve():
    ranks = np.array([0, 0, 1, 4, 60])
    curve = recall_curve(ranks, max_k=50)
    assert curve.shape == (50,)
    assert curve[0] == pytest.approx(0.4) and curve[1] == pytest.approx(0.6)
    assert curve[4] == pytest.approx(0.8) and curve[-1] == pytest.approx(0.8)
    assert np.all(np.diff(curve) >= 0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no relevant item"):
        recall_at_k(np.zeros((2, 3)), [[0], []])
    with pytest.raises(ValueError, match="outside"):
        recall_at_k(np.zeros((1, 3)), [[3]])
    with pytest.raises(ValueError, match="2 queries"):
        recall_at_k(np.zeros((2, 3)), [[0]])
    with pytest.raises(ValueError, match="at least one caption"):
        image_text_retrieval(np.eye(3), np.eye(3)[:2], [0, 1])


def test_perfect_retrieval_and_table():
    images = np.eye(4, dtype=np.float32)
    texts = np.repeat(images, 2, axis=0)
    summary = image_text_retrieval(images, texts, np.repeat(np.arange(4), 2)).summary()
    assert summary["t2i"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    assert summary["i2t"] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0}
    assert summary["rsum"] == 600.0
    table = format_table(summary, "test")
    assert "text -> image" in table and "600.00" in table


def test_blocks_give_the_same_answer(monkeypatch):
    import sightline.search.metrics as metrics

    rng = np.random.default_rng(7)
    images = rng.normal(size=(50, 6)).astype(np.float32)
    texts = rng.normal(size=(120, 6)).astype(np.float32)
    owner = rng.integers(0, 50, size=120)
    owner[:50] = np.arange(50)
    whole = image_text_retrieval(images, texts, owner)
    monkeypatch.setattr(metrics, "_BLOCK", 7)
    blocked = image_text_retrieval(images, texts, owner)
    assert np.array_equal(whole.t2i_ranks, blocked.t2i_ranks)
    assert np.array_equal(whole.i2t_ranks, blocked.i2t_ranks)
