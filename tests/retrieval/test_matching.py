"""Candidate pairs from embeddings and local features."""

import numpy as np
import pytest
from test_local_features import rotated_crop, textured

from whaleutils.retrieval import answers, matching
from whaleutils.retrieval import local_features as lf


def test_individual_maxima_and_own_rows_by_hand():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = ["a", "b", "b"]
    similarities = matching.embedding_similarities(queries, gallery, labels, ["a", "b"])
    np.testing.assert_allclose(similarities, [[1.0, 0.6], [0.0, 1.0]])
    # the first query is gallery row 0 itself: a has no other photo
    own = matching.embedding_similarities(queries, gallery, labels, ["a", "b"], np.array([0, -1]))
    np.testing.assert_allclose(own, [[-np.inf, 0.6], [0.0, 1.0]])


def test_candidate_pairs_find_a_rotated_copy_among_other_animals():
    """Gallery: two photos each of three 'individuals' (different textures); the query is a
    rotated, cropped copy of b's first photo, and is b's second photo's sibling: b comes first
    by LNBNN and by inliers, and its best photo is the one copied."""
    gallery = [lf.extract(textured(seed)) for seed in (10, 11, 12, 13, 14, 15)]
    labels = ["a", "a", "b", "b", "c", "c"]
    query = lf.extract(rotated_crop(textured(12), 15, 12))
    pairs = matching.candidate_pairs(["q"], [query], gallery, labels, shortlist=3)
    assert sorted(pairs["individual"]) == ["a", "b", "c"]
    best = pairs.sort_values("inliers", ascending=False).iloc[0]
    assert best["individual"] == "b" and best["photo"] == 2 and best["lnbnn_rank"] == 1
    assert best["inliers"] >= 20 and pairs["inliers"].nlargest(2).iloc[1] <= 8
    # excluding that photo (as a validation query's own), b keeps only its other photo
    excluded = matching.candidate_pairs(["q"], [query], gallery, labels, None, np.array([2]), 3)
    assert excluded.set_index("individual").loc["b", "photo"] == 3
    # with one photo verified per candidate, the one the photo scores rank first is checked
    scores = np.zeros((1, 6))
    scores[0, 3] = 1.0
    one = matching.candidate_pairs(
        ["q"], [query], gallery, labels, shortlist=3, verify_photos=1, photo_scores=scores
    )
    assert one.set_index("individual").loc["b", "photo"] == 3
    first = matching.candidate_pairs(["q"], [query], gallery, labels, shortlist=3, verify_photos=1)
    assert first.set_index("individual").loc["b", "photo"] == 2


def test_the_ablation_script_runs_on_a_small_set(small_synth, tmp_path, capsys):
    """scripts/local_matching.py without a model: local features alone and fused, the
    validation choices applied to test; its report holds what it printed."""
    import json

    from scripts import local_matching

    out = tmp_path / "out"
    assert (
        local_matching.main(["--data", str(small_synth), "--out", str(out), "--n-folds", "3"]) == 0
    )
    report = json.loads((out / "local_matching.json").read_text())
    assert set(report["results"]) == {
        f"{method} {part}" for method in ("lnbnn", "lnbnn+inliers", "fused")
        for part in ("valid", "test")
    }  # fmt: skip
    for result in report["results"].values():
        assert 0 <= result["known_top1"] <= result["known_top5"] <= 1
    assert (out / "pairs_test.csv").is_file() and (out / lf.CACHE_FILE).is_file()
    assert "verified tier" in capsys.readouterr().out
    # the per-photo answer's calibration: on validation (cross-fitted), test, and test with
    # its own share of new photos stated
    calibration = report["photo_answer"]
    assert len(calibration) == 3 and (out / "reliability.png").is_file()
    for scores in calibration.values():
        assert 0 <= scores["answer_ece"] <= 1 and 0 <= scores["new_brier"] <= 1
        assert scores["named_from_0.9"]["named"] <= scores["named_from_0.5"]["named"]
    # from the pairs written (as notebook 04's fused head writes them): the same results
    again = tmp_path / "again"
    argv = ["--data", str(small_synth), "--out", str(again), "--n-folds", "3", "--pairs", str(out)]
    assert local_matching.main(argv) == 0
    results = json.loads((again / "local_matching.json").read_text())["results"]
    assert results.keys() == report["results"].keys()
    for key, values in report["results"].items():  # as written to CSV: to the last digits
        assert results[key] == pytest.approx(values, rel=1e-6), key
    assert not (again / lf.CACHE_FILE).exists()  # no features computed


def test_local_settings_check_the_detector_and_lnbnn_rule():
    settings = matching.LocalSettings.from_parameter(
        {"detector": "xfeat", "lnbnn_k": 4, "lnbnn_normaliser": "name"}
    )
    assert settings.features.detector == "xfeat"
    assert settings.lnbnn_options() == {"lnbnn_k": 4, "lnbnn_normaliser": "name"}
    for bad, message in (
        ({"detector": "orb"}, "detector must be one of"),
        ({"lnbnn_k": 0}, "lnbnn_k must be a whole number >= 1"),
        ({"lnbnn_normaliser": "first"}, "lnbnn_normaliser must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            matching.LocalSettings.from_parameter(bad)


@pytest.mark.slow
def test_the_encounter_script_compares_photo_by_photo_with_by_encounter(small_synth, tmp_path):
    """scripts/encounter_answers.py on local_matching.py's pairs: photo by photo on both
    parts, every rule on validation, the one chosen there on test."""
    import json

    from scripts import encounter_answers, local_matching

    pairs = tmp_path / "pairs"
    assert (
        local_matching.main(["--data", str(small_synth), "--out", str(pairs), "--n-folds", "3"])
        == 0
    )
    out = tmp_path / "out"
    argv = ["--data", str(small_synth), "--pairs", str(pairs), "--out", str(out), "--n-folds", "3"]
    assert encounter_answers.main(argv) == 0
    report = json.loads((out / "encounter_answers.json").read_text())
    chosen = report["chosen_rule"]
    assert set(report["results"]) == {
        "photo by photo valid", "photo by photo test", f"by encounter ({chosen}) test",
        *(f"by encounter ({rule}) valid" for rule in answers.GROUP_RULES),
    }  # fmt: skip
    valid = {
        rule: report["results"][f"by encounter ({rule}) valid"] for rule in answers.GROUP_RULES
    }
    assert valid[chosen]["answer_right"] == max(v["answer_right"] for v in valid.values())
    encounters = report["encounters"]["valid"]
    assert encounters["encounters"] < encounters["photos"]  # the synthetic set has encounters
    assert report["encounters"]["test"]["encounters"] < report["encounters"]["test"]["photos"]
