import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from whaleutils.contracts import metrics, submission
from whaleutils.retrieval import embed, knn


def clustered(n_gallery, n_queries, dim, n_centres, seed=0, noise=0.6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim)).astype(np.float32)
    gallery_owner = rng.integers(0, n_centres, n_gallery)
    gallery = centres[gallery_owner] + noise * rng.normal(size=(n_gallery, dim)).astype(np.float32)
    queries = centres[rng.integers(0, n_centres, n_queries)] + noise * rng.normal(
        size=(n_queries, dim)
    ).astype(np.float32)
    return gallery, queries, gallery_owner


def assert_same_neighbours(similarities, indices, reference_similarities, reference_indices):
    """Equal neighbours, except that near-ties (within float32 noise) may swap places."""
    np.testing.assert_allclose(similarities, reference_similarities, atol=2e-6)
    differ = indices != reference_indices
    assert np.all(np.abs(similarities - reference_similarities)[differ] < 2e-6)
    assert differ.mean() < 1e-3


@pytest.mark.parametrize("method", ["float32", "bf16"])
@pytest.mark.parametrize(("n_gallery", "k"), [(60, 5), (9000, 10), (9000, 50)])
def test_cosine_topk_matches_sklearn(method, n_gallery, k):
    gallery, queries, _ = clustered(n_gallery, 300, 32, max(5, n_gallery // 6))
    distances, reference = (
        NearestNeighbors(n_neighbors=k, metric="cosine").fit(gallery).kneighbors(queries)
    )
    similarities, indices = knn.cosine_topk(gallery, queries, k, method=method)
    assert similarities.shape == indices.shape == (300, k)
    assert similarities.dtype == np.float32 and indices.dtype == np.int64
    assert np.all(np.diff(similarities, axis=1) <= 0)
    assert_same_neighbours(similarities, indices, 1 - distances, reference)


@pytest.mark.parametrize("method", ["float32", "bf16"])
@pytest.mark.parametrize("n_gallery", [300, 9000])  # one full top_k, and the two-level path
def test_cosine_topk_is_the_same_in_small_chunks(method, n_gallery):
    """Bit-identical whatever the chunk size, on CPUs with and without bfloat16 units: both
    methods run on any CPU (TensorFlow emulates bfloat16 where the CPU lacks it)."""
    gallery, queries, _ = clustered(n_gallery, 200, 32, n_gallery // 6, seed=1)
    whole = knn.cosine_topk(gallery, queries, 20, method=method)
    chunked = knn.cosine_topk(gallery, queries, 20, method=method, memory_mb=0.05)  # 1 per chunk
    np.testing.assert_array_equal(whole[1], chunked[1])
    np.testing.assert_array_equal(whole[0], chunked[0])


@pytest.mark.parametrize("has_bf16", [False, True])
def test_cosine_topk_auto_follows_the_cpu_and_gives_the_same_answer(monkeypatch, has_bf16):
    """``auto`` takes the path this CPU would take; both paths give the same neighbours."""
    monkeypatch.setattr(knn, "cpu_has_bf16", lambda: has_bf16)
    gallery, queries, _ = clustered(9000, 100, 32, 1500, seed=2)
    chosen = knn.cosine_topk(gallery, queries, 10)
    explicit = knn.cosine_topk(gallery, queries, 10, method="bf16" if has_bf16 else "float32")
    other = knn.cosine_topk(gallery, queries, 10, method="float32" if has_bf16 else "bf16")
    np.testing.assert_array_equal(chosen[0], explicit[0])
    np.testing.assert_array_equal(chosen[1], explicit[1])
    assert_same_neighbours(*chosen, *other)


@pytest.mark.parametrize("method", ["float32", "bf16"])
def test_cosine_topk_stays_exact_when_bf16_cannot_tell_neighbours_apart(method):
    """Gallery rows differ by far less than bfloat16 resolves: candidates alone would be
    wrong, so the error bound must send these queries to the exact path."""
    rng = np.random.default_rng(3)
    base = rng.normal(size=32).astype(np.float32)
    gallery = base + 1e-4 * rng.normal(size=(8000, 32)).astype(np.float32)
    queries = base + 1e-4 * rng.normal(size=(20, 32)).astype(np.float32)
    similarities, indices = knn.cosine_topk(gallery, queries, 10, method=method)
    reference_similarities, reference_indices = knn.cosine_topk(
        gallery, queries, 10, method="float32", memory_mb=1e9
    )
    exact = embed.l2_normalize(queries) @ embed.l2_normalize(gallery).T
    np.testing.assert_allclose(similarities, np.sort(exact, axis=1)[:, ::-1][:, :10], atol=1e-6)
    np.testing.assert_allclose(similarities, reference_similarities, atol=1e-6)


def test_cosine_topk_orders_ties_by_gallery_index():
    v, w = [1.0, 0.0], [0.0, 1.0]
    gallery = np.array([w, v, w, v, v], dtype=np.float32)
    similarities, indices = knn.cosine_topk(gallery, np.array([v, w]), 4)
    assert indices.tolist() == [[1, 3, 4, 0], [0, 2, 1, 3]]
    assert similarities[0].tolist() == [1.0, 1.0, 1.0, 0.0]


def test_cosine_topk_two_level_path_orders_ties_by_gallery_index():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(6000, 16)).astype(np.float32)
    gallery[[4000, 17, 2500]] = gallery[100]  # four copies of one row
    similarities, indices = knn.cosine_topk(gallery, gallery[[100]], 4, method="bf16")
    assert indices.tolist() == [[17, 100, 2500, 4000]]


def test_cosine_topk_scale_free_and_zero_rows():
    gallery = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 5.0]], dtype=np.float32)
    similarities, indices = knn.cosine_topk(gallery, np.array([[0.0, 3.0]]), 3)
    # The zero row and the orthogonal row tie at 0: lower index first.
    assert indices.tolist() == [[2, 0, 1]]
    np.testing.assert_allclose(similarities, [[1.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    ("gallery", "queries", "k", "message"),
    [
        (
            np.ones((3, 2)),
            np.ones((2, 3)),
            1,
            r"dimensions differ: gallery.shape=\(3, 2\), queries.shape=\(2, 3\)",
        ),
        (np.ones((3, 2)), np.ones((2, 2)), 4, r"k must be in \[1, 3\]"),
        (np.ones(3), np.ones((2, 3)), 1, "must be 2-D"),
        (np.array([[np.nan, 1.0]]), np.ones((1, 2)), 1, "NaN or infinite"),
    ],
)
def test_cosine_topk_rejects_bad_input(gallery, queries, k, message):
    with pytest.raises(ValueError, match=message):
        knn.cosine_topk(gallery, queries, k)


def test_cosine_topk_rejects_unknown_method():
    with pytest.raises(ValueError, match="method='fp8'"):
        knn.cosine_topk(np.ones((2, 2)), np.ones((1, 2)), 1, method="fp8")


# ---------------------------------------------------------------- decision rules

LABELS = np.array(["a", "b", "c", "d", "e", "f"], dtype=object)


def test_rank_individuals_max_rule():
    # Neighbours (best first) carry b, a, b, c: by best similarity b, a, c.
    ids, scores = knn.rank_individuals([[0.9, 0.8, 0.7, 0.1]], [[1, 0, 1, 2]], LABELS, rule="max")
    assert ids[0].tolist() == ["b", "a", "c", None, None]
    np.testing.assert_allclose(scores[0][:3], [0.9, 0.8, 0.1])
    assert np.isnan(scores[0][3:]).all()


def test_rank_individuals_vote_rule_counts_first():
    # a appears once at 0.9; c twice at 0.5 and 0.4: two votes beat one.
    ids, scores = knn.rank_individuals([[0.9, 0.5, 0.4]], [[0, 2, 2]], LABELS, rule="vote")
    assert ids[0][:2].tolist() == ["c", "a"]
    np.testing.assert_allclose(scores[0][:2], [2 / 3, 1 / 3])


def test_rank_individuals_vote_ties_by_summed_inverse_distance_then_rank():
    # a, b one vote each; b is nearer (distance 0.1 < 0.2): b first.
    ids, _ = knn.rank_individuals([[0.8, 0.9]], [[0, 1]], LABELS, rule="vote")
    assert ids[0][:2].tolist() == ["b", "a"]
    # Fully equal: the earlier neighbour wins.
    ids, _ = knn.rank_individuals([[0.5, 0.5]], [[3, 1]], LABELS, rule="vote")
    assert ids[0][:2].tolist() == ["d", "b"]
    # inverse distances: a 1/0.1 = 10 (one vote) vs c 1/0.5 + 1/0.5 = 4 (two votes): votes win.
    ids, _ = knn.rank_individuals([[0.9, 0.5, 0.5]], [[0, 2, 2]], LABELS, rule="vote")
    assert ids[0][:2].tolist() == ["c", "a"]


def test_rank_individuals_vote_matches_a_loop():
    rng = np.random.default_rng(0)
    similarities = np.sort(rng.uniform(0, 1, size=(50, 12)), axis=1)[:, ::-1]
    indices = rng.integers(0, len(LABELS), size=(50, 12))
    ids, _ = knn.rank_individuals(similarities, indices, LABELS, rule="vote")
    for row in range(50):
        votes = {}
        for position, (similarity, index) in enumerate(
            zip(similarities[row], indices[row], strict=True)
        ):
            count, inverse, first = votes.get(LABELS[index], (0, 0.0, position))
            votes[LABELS[index]] = (count + 1, inverse + 1 / (1 - similarity + 1e-6), first)
        expected = sorted(
            votes, key=lambda label: (-votes[label][0], -votes[label][1], votes[label][2])
        )[:5]
        assert [i for i in ids[row] if i is not None] == expected


def test_rank_individuals_rejects_unknown_rule():
    with pytest.raises(ValueError, match="rule='knn'"):
        knn.rank_individuals([[0.5]], [[0]], LABELS, rule="knn")


def test_insert_new_individual_rule_and_padding():
    ids = np.array([["a", "b", "c", "d", "e"], ["a", None, None, None, None]], dtype=object)
    lists = knn.insert_new_individual(
        ids, np.array([0.2, 0.9]), 0.62, frequent_ids=["x", "a", "y", "z"]
    )
    # distance 0.8 > 0.62: new first; distance 0.1: new second, padded with frequent ids.
    assert lists == [["new_individual", "a", "b", "c", "d"], ["a", "new_individual", "x", "y", "z"]]


def test_map5_by_threshold_matches_metric_on_built_lists():
    rng = np.random.default_rng(1)
    n = 400
    pool = np.array([f"id{i}" for i in range(30)], dtype=object)
    ids = np.array([rng.choice(pool, size=5, replace=False) for _ in range(n)], dtype=object)
    nearest = rng.uniform(0, 1, n)
    truth = np.where(rng.random(n) < 0.2, "new_individual", rng.choice(pool, size=n)).astype(object)
    thresholds = [0.0, 0.3, 0.62, 1.0]
    curve = knn.map5_by_threshold(ids, nearest, truth, thresholds)
    for threshold, row in zip(thresholds, curve.itertuples(), strict=True):
        lists = knn.insert_new_individual(ids, nearest, threshold)
        expected = metrics.map_at_k_split(truth, lists)
        assert row.map5 == pytest.approx(expected["map5"])
        assert row.map5_known == pytest.approx(expected["map5_known"])
        assert row.map5_new == pytest.approx(expected["map5_new"])


def test_search_k_and_threshold_finds_the_planted_optimum():
    gallery, queries, owner = clustered(2000, 300, 16, 100, seed=2, noise=0.3)
    labels = np.array([f"w{o}" for o in owner], dtype=object)
    # Queries of individuals 0-89 are known; of 90-99 removed from the gallery: new.
    in_gallery = owner < 90
    query_owner = np.argmax(
        embed.l2_normalize(queries)
        @ embed.l2_normalize(np.stack([gallery[owner == i].mean(0) for i in range(100)])).T,
        axis=1,
    )
    truth = np.where(query_owner < 90, [f"w{o}" for o in query_owner], "new_individual")
    similarities, indices = knn.cosine_topk(gallery[in_gallery], queries, 100)
    result = knn.search_k_and_threshold(
        similarities, indices, labels[in_gallery], truth, rule="max"
    )
    curve = result["curve"]
    assert set(curve.columns) == {"k", "threshold", "map5", "map5_known", "map5_new"}
    assert set(curve["k"]) == set(knn.K_GRID)
    assert result["map5"] == pytest.approx(curve["map5"].max())
    assert 0.0 < result["threshold"] < 1.0  # neither "always new" nor "never new"
    lists = knn.insert_new_individual(
        knn.rank_individuals(
            similarities[:, : result["k"]], indices[:, : result["k"]], labels[in_gallery], "max"
        )[0],
        similarities[:, 0],
        result["threshold"],
        frequent_ids=list(pd.Series(labels[in_gallery]).value_counts().index),
    )
    assert metrics.map_at_k(truth, lists) >= result["map5"] - 1e-9


def test_predict_and_prediction_files_round_trip(tmp_path):
    gallery, queries, owner = clustered(500, 40, 8, 50, seed=4, noise=0.2)
    labels = [f"w{o}" for o in owner]
    predictions, scores = knn.predict(
        gallery,
        labels,
        queries,
        k=10,
        distance_threshold=0.5,
        frequent_ids=["w1", "w2", "w3", "w4", "w5"],
    )
    assert all(len(p) == 5 and len(set(p)) == 5 and "new_individual" in p for p in predictions)
    path = submission.write_predictions(
        tmp_path / "test_predictions.csv", [f"q{i}.jpg" for i in range(40)], predictions, scores
    )
    frame = submission.read_predictions(path, with_scores=True)
    assert frame["labels"].tolist() == predictions
    np.testing.assert_allclose(np.array(frame["score_values"].tolist()), scores, atol=1e-5)
    with pytest.raises(FileExistsError):
        submission.write_predictions(path, ["q0.jpg"], predictions[:1], scores[:1])


def test_candidate_thresholds_resolve_a_small_distance_scale():
    nearest = 1.0 - np.array([0.001, 0.002, 0.004, 0.008])
    thresholds = knn.candidate_thresholds(nearest, n_quantiles=5)
    assert np.all(np.diff(thresholds) > 0)
    assert set(knn.THRESHOLD_GRID) <= set(thresholds)
    # quantiles 0, 1/4, 1/2, 3/4, 1 of the distances 0.001, 0.002, 0.004, 0.008 (by hand)
    below_grid = thresholds[thresholds < 0.02]
    np.testing.assert_allclose(below_grid, [0.0, 0.001, 0.00175, 0.003, 0.005, 0.008])


def test_search_finds_a_threshold_below_the_fixed_grid():
    """All nearest distances below 0.02: known photos at 0.001-0.004, new ones at 0.01-0.015.
    Only a threshold between them puts new_individual first for exactly the new photos."""
    gallery_labels = np.array(["a", "b", "c", "d", "e"], dtype=object)
    indices = np.tile(np.arange(5), (6, 1))
    distance = np.array([0.001, 0.002, 0.004, 0.010, 0.012, 0.015])
    similarities = np.repeat((1.0 - distance)[:, None], 5, axis=1) - np.arange(5) * 1e-4
    truth = ["a", "a", "a", "new_individual", "new_individual", "new_individual"]
    result = knn.search_k_and_threshold(
        similarities, indices, gallery_labels, truth, rule="max", k_grid=[5]
    )
    assert 0.004 <= result["threshold"] < 0.010
    assert result["map5"] == pytest.approx(1.0)  # each known photo: "a" first; each new: new first
    fixed = knn.search_k_and_threshold(
        similarities, indices, gallery_labels, truth, "max", [5], knn.THRESHOLD_GRID
    )
    assert fixed["map5"] == pytest.approx(0.75)  # at 0.0 the known ones lose half; at 0.02 the new


@pytest.mark.parametrize("method", ["float32", "bf16"])
def test_cosine_topk_excluding_matches_a_search_without_the_own_row(method):
    gallery, _, _ = clustered(3000, 1, 16, 300, seed=6)
    rows = np.array([5, 17, -1, 2999])
    queries = gallery[np.maximum(rows, 0)] + 0.01
    similarities, indices = knn.cosine_topk_excluding(gallery, queries, 7, rows, method=method)
    for i, own in enumerate(rows):
        keep = np.arange(len(gallery)) != own
        reference = knn.cosine_topk(gallery[keep], queries[[i]], 7, method="float32")
        np.testing.assert_array_equal(indices[i], np.flatnonzero(keep)[reference[1][0]])
        np.testing.assert_allclose(similarities[i], reference[0][0], atol=1e-6)
    assert 5 not in indices[0] and 2999 not in indices[3]


def test_cosine_topk_excluding_rejects_bad_rows():
    with pytest.raises(
        ValueError, match=r"one entry per query \(2\), or one row of entries, got shape \(1,\)"
    ):
        knn.cosine_topk_excluding(np.eye(3), np.eye(3)[:2], 1, np.array([0]))
    with pytest.raises(ValueError, match="k must be at most 2"):
        knn.cosine_topk_excluding(np.eye(3), np.eye(3)[:1], 3, np.array([0]))


def test_excluding_two_own_rows_matches_a_brute_force_reference():
    rng = np.random.default_rng(5)
    gallery = rng.normal(size=(40, 8))
    queries = np.concatenate(
        [gallery[:10] + 0.01 * rng.normal(size=(10, 8)), rng.normal(size=(5, 8))]
    )
    own = np.full((15, 2), -1)
    own[:10, 0], own[:10, 1] = np.arange(10), np.arange(10) + 20  # its photo, its mirror copy
    own[3, 1] = -1  # only one row of its own
    similarities, indices = knn.cosine_topk_excluding(gallery, queries, 6, own)
    unit = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    cosine = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
    for i in range(15):
        allowed = [j for j in np.argsort(-cosine[i], kind="stable") if j not in own[i]]
        assert indices[i].tolist() == allowed[:6]
        np.testing.assert_allclose(similarities[i], cosine[i, allowed[:6]], atol=1e-5)
    with pytest.raises(ValueError, match="k must be at most 38"):
        knn.cosine_topk_excluding(gallery, queries, 39, own)
