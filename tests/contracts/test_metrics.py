import numpy as np
import pytest

from whaleutils.contracts import metrics


def map_at_k_loop(truth, predictions, k=5):
    """The Kaggle metric as a plain loop: the reference the vectorised version must match."""
    total = 0.0
    for label, predicted in zip(truth, predictions, strict=True):
        for rank, guess in enumerate(predicted[:k], start=1):
            if guess == label:
                total += 1.0 / rank
                break
    return total / len(truth)


@pytest.mark.parametrize(
    ("truth", "predictions", "expected"),
    [
        (["a"], [["a", "b", "c", "d", "e"]], 1.0),
        (["a"], [["b", "a", "c", "d", "e"]], 0.5),
        (["a"], [["b", "c", "d", "e", "a"]], 0.2),
        (["a"], [["b", "c", "d", "e", "f"]], 0.0),
        # Only the first k count: a hit at rank 6 scores 0.
        (["a"], [["b", "c", "d", "e", "f", "a"]], 0.0),
        # (1 + 1/3) / 2 = 2/3
        (["a", "b"], [["a", "x", "y", "z", "w"], ["x", "y", "b", "z", "w"]], 2 / 3),
        # A repeated correct label earns one hit only, at its first rank: 1/2.
        (["a"], [["b", "a", "a", "a", "a"]], 0.5),
        # Short lists are allowed.
        (["a", "b"], [["a"], []], 0.5),
        (["new_individual"], [["x", "new_individual", "y", "z", "w"]], 0.5),
    ],
)
def test_map_at_k_hand_cases(truth, predictions, expected):
    assert metrics.map_at_k(truth, predictions) == pytest.approx(expected)


def test_map_at_k_matches_loop_reference():
    rng = np.random.default_rng(0)
    labels = [f"id{i}" for i in range(12)] + ["new_individual"]
    truth = rng.choice(labels, size=500).tolist()
    predictions = [rng.choice(labels, size=int(rng.integers(0, 8))).tolist() for _ in truth]
    for k in (1, 3, 5):
        assert metrics.map_at_k(truth, predictions, k=k) == pytest.approx(
            map_at_k_loop(truth, predictions, k)
        )


def test_map_at_k_accepts_2d_array():
    predictions = np.array([["a", "b"], ["b", "a"]])
    assert metrics.map_at_k(["a", "a"], predictions) == pytest.approx(0.75)


def test_split_scores_known_and_new():
    truth = ["a", "b", "new_individual", "new_individual"]
    predictions = [["a"], ["x", "b"], ["new_individual"], ["x", "y", "z", "w", "v"]]
    scores = metrics.map_at_k_split(truth, predictions)
    # overall (1 + 1/2 + 1 + 0) / 4; known (1 + 1/2) / 2; new (1 + 0) / 2
    assert scores["map5"] == pytest.approx(0.625)
    assert scores["map5_known"] == pytest.approx(0.75)
    assert scores["map5_new"] == pytest.approx(0.5)
    assert (scores["n_known"], scores["n_new"]) == (2, 2)


def test_split_without_new_images_gives_nan():
    scores = metrics.map_at_k_split(["a"], [["a"]])
    assert np.isnan(scores["map5_new"]) and scores["map5_known"] == 1.0


@pytest.mark.parametrize(
    ("truth", "predictions", "k", "message"),
    [
        (["a", "b"], [["a"]], 5, r"len\(truth\)=2, len\(predictions\)=1"),
        ([], [], 5, "empty"),
        (["a"], [["a"]], 0, "k must be a positive integer, got k=0"),
        (["a"], ["a b c"], 5, "is the string 'a b c'"),
    ],
)
def test_map_at_k_rejects_bad_input(truth, predictions, k, message):
    with pytest.raises(ValueError, match=message):
        metrics.map_at_k(truth, predictions, k=k)
