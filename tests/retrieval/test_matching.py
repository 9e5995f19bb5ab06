"""Candidate pairs from embeddings and local features, and their calibrated fusion."""

import numpy as np
import pandas as pd
import pytest
from test_local_features import rotated_crop, textured

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import local_features as lf
from whaleutils.retrieval import matching


def test_individual_maxima_and_own_rows_by_hand():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    labels = ["a", "b", "b"]
    similarities = matching.embedding_similarities(queries, gallery, labels, ["a", "b"])
    np.testing.assert_allclose(similarities, [[1.0, 0.6], [0.0, 1.0]])
    # the first query is gallery row 0 itself: a has no other photo
    own = matching.embedding_similarities(queries, gallery, labels, ["a", "b"], np.array([0, -1]))
    np.testing.assert_allclose(own, [[-np.inf, 0.6], [0.0, 1.0]])


def make_pairs(seed: int = 0, queries: int = 200) -> tuple[pd.DataFrame, dict]:
    """Pairs where the true individual tends to have more inliers and a higher similarity."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for q in range(queries):
        name = f"q{q}"
        known = q % 4 != 0
        truth[name] = "i0" if known else NEW_INDIVIDUAL
        for c in range(5):
            same = known and c == 0
            rows.append((
                name, f"i{c}", rng.normal(0.6 if same else 0.3, 0.1), c + 1,
                rng.normal(3 if same else 1, 0.5), c + 1,
                int(rng.poisson(20 if same else 3)), 30, c,
            ))  # fmt: skip
    return pd.DataFrame.from_records(rows, columns=matching.PAIR_COLUMNS), truth


def test_fusion_probabilities_are_sklearns_and_survive_json():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pairs, truth = make_pairs()
    fusion = matching.fit_fusion(pairs, truth)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    reference.fit(matching.fusion_features(pairs), matching.same_animal(pairs, truth))
    expected = reference.predict_proba(matching.fusion_features(pairs))[:, 1]
    np.testing.assert_allclose(fusion.probability(pairs), expected, atol=1e-6)
    again = matching.Fusion.from_json(fusion.to_json())
    np.testing.assert_allclose(again.probability(pairs), fusion.probability(pairs))
    with pytest.raises(ValueError, match="fit it again"):
        matching.Fusion.from_json({**fusion.to_json(), "features": ["similarity"]}, "f.json")


def test_fused_probability_rises_with_the_evidence():
    """Calibration is monotone: more inliers (all else equal) never lowers the probability, and
    on held-out pairs the predicted probabilities track the observed same-animal rate."""
    pairs, truth = make_pairs()
    fusion = matching.fit_fusion(pairs, truth)
    probe = pd.concat([pairs.iloc[[1]]] * 6, ignore_index=True)
    probe["inliers"] = [0, 2, 5, 10, 20, 40]
    assert np.all(np.diff(fusion.probability(probe)) > 0)
    held, held_truth = make_pairs(seed=1)
    probability = fusion.probability(held)
    same = matching.same_animal(held, held_truth)
    for low, high in ((0.0, 0.2), (0.8, 1.0)):
        chosen = (probability >= low) & (probability < high)
        assert low - 0.1 <= same[chosen].mean() <= high + 0.1


def test_fusion_needs_both_kinds_of_pairs():
    pairs, truth = make_pairs(queries=4)
    with pytest.raises(ValueError, match="both same-animal and other pairs"):
        matching.fit_fusion(pairs, dict.fromkeys(truth, NEW_INDIVIDUAL))


def test_predictions_put_new_individual_by_the_threshold_and_pad():
    ranked = {"x": [("a", 0.9), ("b", 0.2)], "y": [("b", 0.1)]}
    lists = matching.predictions(ranked, ["x", "y", "z"], 0.5, padding=["a", "b", "c", "d", "e"])
    assert lists == [
        ["a", NEW_INDIVIDUAL, "b", "c", "d"],
        [NEW_INDIVIDUAL, "b", "a", "c", "d"],
        [NEW_INDIVIDUAL, "a", "b", "c", "d"],
    ]
    truth = {"x": "a", "y": "a", "z": NEW_INDIVIDUAL}
    assert matching.known_accuracy(ranked, truth, 1) == 0.5
    assert matching.known_accuracy(ranked, truth, 5) == 0.5  # y never lists a
    assert matching.known_vs_new_auc(ranked, truth) == 1.0  # z has no score at all


def test_verified_tier_by_hand():
    pairs = pd.DataFrame.from_records(
        [("q1", "a", 0, 1, 0, 1, 40, 50, 0), ("q1", "b", 0, 2, 0, 2, 3, 9, 1),
         ("q2", "b", 0, 1, 0, 1, 12, 20, 1), ("q3", "a", 0, 1, 0, 1, 12, 20, 0),
         ("q4", "a", 0, 1, 0, 1, 2, 5, 0)],
        columns=matching.PAIR_COLUMNS,
    )  # fmt: skip
    truth = {"q1": "a", "q2": "b", "q3": NEW_INDIVIDUAL, "q4": "b"}
    # >= 12 inliers: q1 right, q2 right, q3 wrong (new): 2/3; >= 40: q1 alone, right
    assert matching.verified_inliers(pairs, truth, precision=0.98) == 40
    assert matching.verified_inliers(pairs, truth, precision=0.6) == 12
    assert matching.verified_inliers(pairs, {**truth, "q1": "b"}, precision=0.98) is None


def test_known_precision_curve_and_its_threshold_by_hand():
    ranked = {
        "a": [("w1", 0.9)],  # known, right
        "b": [("w2", 0.6)],  # known, wrong candidate
        "c": [("w1", 0.4)],  # new
        "d": [],  # known, no candidate
    }
    truth = {"a": "w1", "b": "w3", "c": NEW_INDIVIDUAL, "d": "w2"}
    curve = matching.known_precision_curve(ranked, truth, grid=[0.0, 0.5, 0.95])
    assert curve == [
        {"threshold": 0.0, "precision": 2 / 3, "recall": 2 / 3, "right": 1 / 3},
        {"threshold": 0.5, "precision": 1.0, "recall": 2 / 3, "right": 0.5},
        {"threshold": 0.95, "precision": None, "recall": 0.0, "right": None},
    ]
    assert matching.threshold_for_precision(curve, 0.9) == 0.5
    assert matching.threshold_for_precision(curve, 0.6) == 0.0
    # a dip above: the threshold must hold from there on up
    dipping = [{"threshold": t, "precision": p} for t, p in [(0.1, 0.95), (0.2, 0.8), (0.3, 0.96)]]
    assert matching.threshold_for_precision(dipping, 0.9) == 0.3
    with pytest.raises(ValueError, match=r"precision of 0.97 .*the highest is 0.960"):
        matching.threshold_for_precision(dipping, 0.97)
    with pytest.raises(ValueError, match=r"precision must be in \(0, 1\], got precision=0"):
        matching.threshold_for_precision(curve, 0)


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


def test_cross_fitted_probabilities_come_from_the_other_half():
    pairs, truth = make_pairs(queries=40)
    crossed = matching.cross_fitted_probability(pairs, truth)
    fitted = matching.fit_fusion(pairs, truth).probability(pairs)
    assert crossed.shape == fitted.shape and not np.allclose(crossed, fitted)
    np.testing.assert_allclose(crossed, matching.cross_fitted_probability(pairs, truth))
    same = matching.same_animal(pairs, truth)
    assert crossed[same].mean() > crossed[~same].mean() + 0.3


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
    # from the pairs written (as notebook 04's fused head writes them): the same results
    again = tmp_path / "again"
    argv = ["--data", str(small_synth), "--out", str(again), "--n-folds", "3", "--pairs", str(out)]
    assert local_matching.main(argv) == 0
    results = json.loads((again / "local_matching.json").read_text())["results"]
    assert results.keys() == report["results"].keys()
    for key, values in report["results"].items():  # as written to CSV: to the last digits
        assert results[key] == pytest.approx(values, rel=1e-6), key
    assert not (again / lf.CACHE_FILE).exists()  # no features computed
