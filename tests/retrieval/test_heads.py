"""The heads on hand-made embeddings and probabilities: the choices they make and the files they
write, every score recomputed from the written files."""

import json

import numpy as np
import pytest
from test_splits import tiny_split

from whaleutils.contracts import metrics, submission
from whaleutils.retrieval import heads, knn


def unit(degrees):
    radians = np.radians(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# train a a b c; valid a (known), d d (validation-only), b (known); test: truth a, d
EMBEDDINGS = {
    "train": unit([0, 3, 90, 180]),
    "valid": unit([6, -45, -44, 87]),
    "test": unit([1, -44.5]),
}


def assert_scores_match_the_file(split, out_dir, part, file_name):
    """``scores.json``'s entry for ``part`` equals MAP@5 recomputed from the written file."""
    frame = submission.read_predictions(out_dir / file_name)
    recomputed = metrics.map_at_k_split(split.truth(part, frame["image"]), frame["labels"].tolist())
    written = json.loads((out_dir / "scores.json").read_text())[part]
    assert written == pytest.approx(recomputed, abs=1e-6, nan_ok=True)


def test_a_validation_photo_never_finds_itself():
    split = tiny_split()
    similarities, indices, labels = heads.neighbours(split, EMBEDDINGS, "valid", 3)
    assert 4 not in indices[0] and 5 not in indices[3]  # their own gallery rows
    assert labels[indices[0, 0]] == "a" and labels[indices[3, 0]] == "b"
    # d's photos are not in the validation gallery: its nearest match is an "a" 45+ degrees off
    np.testing.assert_allclose(similarities[1, 0], np.cos(np.radians(45)), atol=1e-6)


def test_knn_head_chooses_on_validation_and_writes_files_that_score_as_reported(tmp_path):
    split = tiny_split()
    result = heads.knn_head(split, EMBEDDINGS, tmp_path, rule="max", k_grid=[1, 3])
    # known validation photos lie 3 degrees from their match (distance 0.0014), new ones 45
    # (distance 0.29): any threshold between separates them, and the smallest such is chosen
    distance_known = 1 - np.cos(np.radians(3))
    assert distance_known <= result["threshold"] < 1 - np.cos(np.radians(45))
    assert result["valid"]["map5"] == pytest.approx(1.0)
    assert result["test"]["map5"] == pytest.approx(1.0)  # q2's individual d is in the gallery
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert (scores["k"], scores["threshold"], scores["rule"]) == (1, result["threshold"], "max")
    assert_scores_match_the_file(split, tmp_path, "valid", "oof_predictions.csv")
    assert_scores_match_the_file(split, tmp_path, "test", "test_predictions.csv")
    predictions = submission.read_predictions(tmp_path / "test_predictions.csv", with_scores=True)
    assert predictions["labels"].tolist() == [
        ["a", "new_individual", "b", "d", "c"],  # padded with the most photographed
        ["d", "new_individual", "a", "b", "c"],
    ]
    written = submission.read_predictions(tmp_path / "submission.csv")
    assert written["labels"].tolist() == predictions["labels"].tolist()
    assert {"knn_search.csv", "knn_search.png"} <= {p.name for p in tmp_path.iterdir()}


def test_classifier_head_picks_the_lowest_separating_confidence(tmp_path):
    split = tiny_split()  # classes a, b, c
    valid = np.array([[0.8, 0.1, 0.1], [0.4, 0.3, 0.3], [0.35, 0.35, 0.3], [0.1, 0.7, 0.2]])
    test = np.array([[0.9, 0.05, 0.05], [0.3, 0.3, 0.4]])
    result = heads.classifier_head(split, valid, test, tmp_path)
    # new photos top out at 0.40, known ones start at 0.70: 0.42 is the first grid value between
    assert result["confidence_threshold"] == pytest.approx(0.42)
    assert result["valid"]["map5"] == pytest.approx(1.0)
    # test: q1 -> a first (0.9 >= 0.42): 1; q2 (truth d, no class of the classifier) -> new,
    # c, a, b, then d as padding (the test gallery's most photographed): 1/5. (1 + 0.2) / 2
    assert result["test"]["map5"] == pytest.approx(0.6)
    assert_scores_match_the_file(split, tmp_path, "valid", "oof_predictions.csv")
    assert_scores_match_the_file(split, tmp_path, "test", "test_predictions.csv")
    frame = submission.read_predictions(tmp_path / "test_predictions.csv", with_scores=True)
    assert frame["labels"][1] == ["new_individual", "c", "a", "b", "d"]
    np.testing.assert_allclose(frame["score_values"][1], [0.42, 0.4, 0.3, 0.3, 0.0])


def test_classifier_predictions_rejects_a_shape_mismatch():
    with pytest.raises(ValueError, match=r"shape \(n, 3\), got \(2, 2\)"):
        heads.classifier_predictions(np.ones((2, 2)), ["a", "b", "c"], 0.5)


def test_best_rule_is_the_better_of_vote_and_max_on_validation(tmp_path):
    """v_a3 lies 1 degree from c's photo and 5-6 degrees from a's two: among 3 neighbours the
    vote ranks a first, the best similarity c. The other photos rank alike under both."""
    split = tiny_split()
    embeddings = {
        "train": unit([-5, -6, 90, 1]),  # a a b c
        "valid": unit([0, -45, -44, 87]),  # a, d, d, b
        "test": unit([1, -44.5]),
    }
    vote, best_max = (heads.knn_search(split, embeddings, r, [3]) for r in ("vote", "max"))
    assert vote["map5"] == pytest.approx(1.0) and best_max["map5"] < 0.9
    best = heads.knn_search(split, embeddings, "best", [3])
    assert (best["rule"], best["map5"]) == ("vote", vote["map5"])
    assert sorted(set(best["curve"]["rule"])) == ["max", "vote"]
    result = heads.knn_head(split, embeddings, tmp_path, "best", [3])
    assert json.loads((tmp_path / "scores.json").read_text())["rule"] == "vote"
    assert result["valid"]["map5"] == pytest.approx(1.0)


def new_first_share(path):
    labels = submission.read_predictions(path)["labels"]
    return float(np.mean([row[0] == "new_individual" for row in labels]))


@pytest.mark.parametrize("new_share", [None, 0.5])
def test_a_new_individual_share_sets_each_parts_threshold(tmp_path, new_share):
    split = tiny_split()
    heads.knn_head(split, EMBEDDINGS, tmp_path, "max", [1, 3], new_share=new_share)
    scores = json.loads((tmp_path / "scores.json").read_text())
    if new_share is not None:
        nearest = {
            part: heads.neighbours(split, EMBEDDINGS, part, 1)[0][:, 0]
            for part in ("valid", "test")
        }
        assert scores["valid_threshold"] == knn.share_threshold(nearest["valid"], 0.5)
        assert scores["threshold"] == knn.share_threshold(nearest["test"], 0.5)
        assert scores["new_share"] == 0.5 and "searched_threshold" in scores
        # half of each part's photos get new_individual first: d's two of four, one of two
        assert new_first_share(tmp_path / "oof_predictions.csv") == 0.5
        assert new_first_share(tmp_path / "test_predictions.csv") == 0.5
        assert_scores_match_the_file(split, tmp_path, "valid", "oof_predictions.csv")
    # the settings reproduce the head's own predictions (what the snapshot members rely on)
    for part, file_name in (("valid", "oof_predictions.csv"), ("test", "test_predictions.csv")):
        lists, _ = heads.settings_predictions(split, EMBEDDINGS, part, scores)
        assert lists == submission.read_predictions(tmp_path / file_name)["labels"].tolist()
    with pytest.raises(ValueError, match=r"share must be in \[0, 1\], got share=1.5"):
        knn.share_threshold(np.array([0.5]), 1.5)


def test_a_flipped_gallery_finds_a_photo_seen_from_the_other_side(tmp_path):
    """v_a3 (individual a) lies at 50 degrees, nearest to b's photo at 90 - 40 off; the mirror
    image of a's first photo lies at 51. Its own mirror image (at 50, the same point) is never
    its own match."""
    split = tiny_split()
    embeddings = {
        "train": unit([0, 3, 90, 180]),
        "valid": unit([50, -45, -44, 87]),
        "test": unit([1, -44.5]),
        "train_mirrored": unit([51, -160, -90, 200]),
        "valid_mirrored": unit([50, 130, 131, -87]),
    }
    plain = heads.neighbours(split, embeddings, "valid", 2)
    flipped = heads.neighbours(split, embeddings, "valid", 2, flipped=True)
    assert plain[2][plain[1][0, 0]] == "b"
    assert flipped[1][0, 0] == 6 and flipped[2][6] == "a"  # t_a1's mirror row
    np.testing.assert_allclose(flipped[0][0, 0], np.cos(np.radians(1)), atol=1e-6)
    assert 10 not in flipped[1][0]  # its own mirror image (row 6 + 4) is left out
    search = heads.knn_search(split, embeddings, "max", [1], flipped="best")
    assert search["flipped_gallery"] is True
    assert sorted(set(search["curve"]["flipped_gallery"])) == [False, True]
    heads.knn_head(split, embeddings, tmp_path, "max", [1], flipped_gallery="best")
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["flipped_gallery"] is True
    lists, _ = heads.settings_predictions(split, embeddings, "valid", scores)
    assert lists == submission.read_predictions(tmp_path / "oof_predictions.csv")["labels"].tolist()
    assert lists[0][0] == "a"
    with pytest.raises(
        ValueError, match="flipped must be False, True or 'best', got flipped='yes'"
    ):
        heads.knn_search(split, embeddings, "max", [1], flipped="yes")


def test_the_answering_head_comes_first():
    knn = {"valid": {"map5": 0.5}, "test": {"map5": 0.55, "map5_known": 0.4, "map5_new": 0.9}}
    fused = {"valid": {"map5": 0.6}, "test": {"map5": 0.7, "map5_known": 0.6, "map5_new": 0.95}}
    table = heads.answering_heads(knn, fused)
    assert list(table["head"]) == ["fused head (answers identify)", "KNN head"]
    assert list(table["test_map5"]) == [0.7, 0.55]
    alone = heads.answering_heads({"valid": {"map5": 0.5}, "test": None})
    assert list(alone["head"]) == ["KNN head (answers identify)"]
    assert alone["test_map5"].isna().all()
