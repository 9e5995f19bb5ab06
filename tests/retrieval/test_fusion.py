"""The fused head: the fusion fitted, cross-fitted and applied, its thresholds, and its files
saved, loaded and refused when hostile."""

import json

import numpy as np
import pandas as pd
import pytest

from whaleutils.contracts import outputs
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import answers, fusion, matching


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


def make_photo_pairs(queries: int = 40) -> tuple[pd.DataFrame, np.ndarray, dict]:
    """:func:`make_pairs` with a third of the known photos' individual not among their
    candidates, and the fused probabilities of a fit on them."""
    pairs, truth = make_pairs(queries=queries)
    truth = {q: ("far" if t != NEW_INDIVIDUAL and i % 3 == 0 else t)
             for i, (q, t) in enumerate(truth.items())}  # fmt: skip
    return pairs, fusion.fit_fusion(pairs, truth).probability(pairs), truth


def test_fusion_probabilities_are_sklearns_and_survive_json():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pairs, truth = make_pairs()
    fitted = fusion.fit_fusion(pairs, truth)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    reference.fit(fusion.fusion_features(pairs), fusion.same_animal(pairs, truth))
    expected = reference.predict_proba(fusion.fusion_features(pairs))[:, 1]
    np.testing.assert_allclose(fitted.probability(pairs), expected, atol=1e-6)
    again = fusion.Fusion.from_json(fitted.to_json())
    np.testing.assert_allclose(again.probability(pairs), fitted.probability(pairs))
    with pytest.raises(ValueError, match="fit it again"):
        fusion.Fusion.from_json({**fitted.to_json(), "features": ["similarity"]}, "f.json")


def test_fused_probability_rises_with_the_evidence():
    """Calibration is monotone: more inliers (all else equal) never lowers the probability, and
    on held-out pairs the predicted probabilities track the observed same-animal rate."""
    pairs, truth = make_pairs()
    fitted = fusion.fit_fusion(pairs, truth)
    probe = pd.concat([pairs.iloc[[1]]] * 6, ignore_index=True)
    probe["inliers"] = [0, 2, 5, 10, 20, 40]
    assert np.all(np.diff(fitted.probability(probe)) > 0)
    held, held_truth = make_pairs(seed=1)
    probability = fitted.probability(held)
    same = fusion.same_animal(held, held_truth)
    for low, high in ((0.0, 0.2), (0.8, 1.0)):
        chosen = (probability >= low) & (probability < high)
        assert low - 0.1 <= same[chosen].mean() <= high + 0.1


def test_fusion_needs_both_kinds_of_pairs():
    pairs, truth = make_pairs(queries=4)
    with pytest.raises(ValueError, match="both same-animal and other pairs"):
        fusion.fit_fusion(pairs, dict.fromkeys(truth, NEW_INDIVIDUAL))


def test_predictions_put_new_individual_by_the_threshold_and_pad():
    ranked = {"x": [("a", 0.9), ("b", 0.2)], "y": [("b", 0.1)]}
    lists = fusion.predictions(ranked, ["x", "y", "z"], 0.5, padding=["a", "b", "c", "d", "e"])
    assert lists == [
        ["a", NEW_INDIVIDUAL, "b", "c", "d"],
        [NEW_INDIVIDUAL, "b", "a", "c", "d"],
        [NEW_INDIVIDUAL, "a", "b", "c", "d"],
    ]
    truth = {"x": "a", "y": "a", "z": NEW_INDIVIDUAL}
    assert fusion.known_accuracy(ranked, truth, 1) == 0.5
    assert fusion.known_accuracy(ranked, truth, 5) == 0.5  # y never lists a
    assert fusion.known_vs_new_auc(ranked, truth) == 1.0  # z has no score at all


def test_verified_tier_by_hand():
    pairs = pd.DataFrame.from_records(
        [("q1", "a", 0, 1, 0, 1, 40, 50, 0), ("q1", "b", 0, 2, 0, 2, 3, 9, 1),
         ("q2", "b", 0, 1, 0, 1, 12, 20, 1), ("q3", "a", 0, 1, 0, 1, 12, 20, 0),
         ("q4", "a", 0, 1, 0, 1, 2, 5, 0)],
        columns=matching.PAIR_COLUMNS,
    )  # fmt: skip
    truth = {"q1": "a", "q2": "b", "q3": NEW_INDIVIDUAL, "q4": "b"}
    # >= 12 inliers: q1 right, q2 right, q3 wrong (new): 2/3; >= 40: q1 alone, right
    assert fusion.verified_inliers(pairs, truth, precision=0.98) == 40
    assert fusion.verified_inliers(pairs, truth, precision=0.6) == 12
    assert fusion.verified_inliers(pairs, {**truth, "q1": "b"}, precision=0.98) is None


def test_pseudo_labels_are_the_verified_tier_by_hand():
    pairs = pd.DataFrame.from_records(
        [("q1", "a", 0, 1, 0, 1, 40, 50, 0), ("q1", "b", 0, 2, 0, 2, 3, 9, 1),
         ("q2", "b", 0, 1, 0, 1, 11, 20, 1), ("q3", "d", 0, 1, 0, 1, 30, 40, 2),
         ("q4", "b", 0, 1, 0, 1, 2, 5, 1), ("q4", "c", 0, 2, 0, 2, 12, 20, 3)],
        columns=matching.PAIR_COLUMNS,
    )  # fmt: skip
    labels = fusion.pseudo_labels(pairs, 12, classes=["a", "b", "c"])
    # q2 (11 inliers) is below the tier; q3's whale d is no training class; q4 by its best (c)
    assert labels.to_dict("list") == {
        "image": ["q1", "q4"], "individual_id": ["a", "c"], "inliers": [40, 12],
    }  # fmt: skip
    assert fusion.pseudo_labels(pairs, 12)["image"].tolist() == ["q1", "q3", "q4"]
    assert fusion.pseudo_labels(pairs, None).empty  # no count reached the precision
    with pytest.raises(ValueError, match="count >= 1"):
        fusion.pseudo_labels(pairs, 0)


def test_pseudo_labels_never_hold_a_photo_below_the_tier():
    rng = np.random.default_rng(3)
    records = [
        (f"q{q}", f"w{w}", 0, 1, 0, 1, int(rng.integers(0, 60)), 60, 0)
        for q in range(200)
        for w in rng.choice(30, size=4, replace=False)
    ]
    pairs = pd.DataFrame.from_records(records, columns=matching.PAIR_COLUMNS)
    best = fusion.best_by_inliers(pairs).set_index("query")
    truth = {  # right where the best candidate has many inliers, else any whale
        query: row["individual"] if row["inliers"] >= 40 else f"w{rng.integers(0, 30)}"
        for query, row in best.iterrows()
    }
    tiers = [fusion.verified_inliers(pairs, truth, p) for p in (0.5, 0.9, 0.98, 1.0)]
    assert 0 < tiers[0] <= tiers[1] <= tiers[2] <= tiers[3]
    for tier in [*tiers, None]:
        labels = fusion.pseudo_labels(pairs, tier)
        most = pairs.groupby("query")["inliers"].max()
        expected = [] if tier is None else sorted(most.index[most >= tier])
        assert sorted(labels["image"]) == expected
        assert (labels["inliers"].to_numpy() == most[labels["image"]].to_numpy()).all()
        assert tier is None or (labels["inliers"] >= tier).all()


def test_known_precision_curve_and_its_threshold_by_hand():
    ranked = {
        "a": [("w1", 0.9)],  # known, right
        "b": [("w2", 0.6)],  # known, wrong candidate
        "c": [("w1", 0.4)],  # new
        "d": [],  # known, no candidate
    }
    truth = {"a": "w1", "b": "w3", "c": NEW_INDIVIDUAL, "d": "w2"}
    curve = fusion.known_precision_curve(ranked, truth, grid=[0.0, 0.5, 0.95])
    assert curve == [
        {
            "threshold": 0.0,
            "precision": 2 / 3,
            "recall": 2 / 3,
            "right": 1 / 3,
            "called": 3,
            "named_right": 1,
        },
        {
            "threshold": 0.5,
            "precision": 1.0,
            "recall": 2 / 3,
            "right": 0.5,
            "called": 2,
            "named_right": 1,
        },
        {
            "threshold": 0.95,
            "precision": None,
            "recall": 0.0,
            "right": None,
            "called": 0,
            "named_right": 0,
        },
    ]
    assert fusion.threshold_for_precision(curve, 0.9) == 0.5
    assert fusion.threshold_for_precision(curve, 0.6) == 0.0
    # a dip above: the threshold must hold from there on up
    dipping = [{"threshold": t, "precision": p} for t, p in [(0.1, 0.95), (0.2, 0.8), (0.3, 0.96)]]
    assert fusion.threshold_for_precision(dipping, 0.9) == 0.3
    with pytest.raises(ValueError, match=r"precision of 0.97 .*the highest is 0.960"):
        fusion.threshold_for_precision(dipping, 0.97)
    with pytest.raises(ValueError, match=r"precision must be in \(0, 1\], got precision=0"):
        fusion.threshold_for_precision(curve, 0)
    # the named whale: right for 1 of 2 from 0.5, for 1 of 3 from 0
    named = fusion.named_precision(curve, 0.5)
    assert named["threshold"] == 0.5 and named["called"] == 2 and named["right"] == 0.5
    assert named["lower_bound"] == pytest.approx(fusion.wilson_lower_bound(1, 2))
    with pytest.raises(ValueError, match=r"named whale a precision of 0.6 .*highest is 0.500"):
        fusion.named_precision(curve, 0.6)


def test_cross_fitted_probabilities_come_from_the_other_half():
    pairs, truth = make_pairs(queries=40)
    crossed = fusion.cross_fitted_probability(pairs, truth)
    fitted = fusion.fit_fusion(pairs, truth).probability(pairs)
    assert crossed.shape == fitted.shape and not np.allclose(crossed, fitted)
    np.testing.assert_allclose(crossed, fusion.cross_fitted_probability(pairs, truth))
    same = fusion.same_animal(pairs, truth)
    assert crossed[same].mean() > crossed[~same].mean() + 0.3


def test_calibrate_chooses_on_cross_fitted_probabilities_and_the_saved_head_is_the_one_loaded(
    tmp_path,
):
    pairs, truth = make_pairs(queries=80)
    settings = matching.LocalSettings(shortlist=5, verified_precision=0.9)
    head, crossed = fusion.FusedHead.calibrate(pairs, truth, settings, padding=["i0"])
    np.testing.assert_allclose(crossed, fusion.cross_fitted_probability(pairs, truth))
    ranked = fusion.ranked_candidates(pairs, crossed)
    queries = list(truth)
    assert head.threshold == fusion.best_threshold(
        ranked, queries, [truth[q] for q in queries], ["i0"]
    )
    assert head.verified_inliers == fusion.verified_inliers(pairs, truth, 0.9)
    assert list(head.known_precision_curve) == fusion.known_precision_curve(ranked, truth)
    np.testing.assert_allclose(
        head.probability(pairs), fusion.fit_fusion(pairs, truth).probability(pairs)
    )
    head.save(tmp_path)
    outputs.write_json(tmp_path / outputs.SCORES, {"valid": {"map5": 0.5}, **head.record()})
    loaded = fusion.FusedHead.load(tmp_path)
    assert loaded.settings == settings and loaded.threshold == head.threshold
    assert loaded.verified_inliers == head.verified_inliers
    assert loaded.rank(pairs) == head.rank(pairs)
    assert loaded.threshold_for_precision(0.75) == fusion.threshold_for_precision(
        head.known_precision_curve, 0.75
    )
    # the per-photo answer: fitted on the cross-fitted probabilities of the shortlist's pairs
    short = head.in_shortlist(pairs)
    expected = answers.fit_answer(pairs[short], crossed[short], truth)
    np.testing.assert_allclose(head.answer.coefficients, expected.coefficients)
    assert loaded.answer.to_json() == head.answer.to_json()
    candidates, photos = loaded.answer_photos(pairs, queries)
    assert photos["query"].tolist() == queries
    totals = candidates.groupby("query")["p"].sum().reindex(queries).to_numpy()
    np.testing.assert_allclose(totals + photos["p_new"] + photos["p_other"], 1.0)


def test_a_head_fitted_with_encounters_answers_them_once(tmp_path):
    """With validation encounters (the three known photos of each four), the head chooses its
    rule on cross-fitted answers, saves and loads it, and gives every photo of an encounter
    the encounter's answer; without encounters it has none, and says why."""
    pairs, truth = make_pairs(queries=80)
    encounters = {q: f"e{i // 4}" for i, q in enumerate(truth) if i % 4}
    settings = matching.LocalSettings(shortlist=5)
    head, crossed = fusion.FusedHead.calibrate(pairs, truth, settings, encounters=encounters)
    chosen, photos = fusion.fit_encounter_answer(pairs, crossed, truth, encounters)
    assert (
        head.encounter_answer.to_json() == chosen.to_json() and chosen.rule in answers.GROUP_RULES
    )
    right = {r: (f["answer"] == f["query"].map(truth)).mean() for r, f in photos.items()}
    assert right[chosen.rule] == max(right.values())
    head.save(tmp_path)
    outputs.write_json(tmp_path / outputs.SCORES, {"valid": {"map5": 0.5}, **head.record()})
    loaded = fusion.FusedHead.load(tmp_path)
    assert loaded.encounter_answer.to_json() == head.encounter_answer.to_json()
    answered = loaded.answer_encounters(pairs, list(truth), encounters)
    assert answered["query"].tolist() == list(truth)
    for _, rows in answered.groupby(answered["query"].map(lambda q: encounters.get(q, q))):
        assert rows["answer"].nunique() == 1 and rows["p_answer"].nunique() == 1
    plain, _ = fusion.FusedHead.calibrate(pairs, truth, settings)
    assert plain.encounter_answer is None
    with pytest.raises(ValueError, match="its validation photos had no encounters"):
        plain.answer_encounters(pairs, list(truth), encounters)
    with pytest.raises(ValueError, match="encounter_answer: an answer by encounter is a rule"):
        payload = {**GOOD_SCORES, "encounter_answer": {**chosen.to_json(), "rule": "median"}}
        (tmp_path / outputs.SCORES).write_text(json.dumps(payload))
        fusion.FusedHead.load(tmp_path)


def test_a_pairs_probability_does_not_depend_on_other_queries():
    """Standardisation is within a query: a query's probabilities are the same scored alone
    or among others (what ``identify`` relies on to answer each photo alike)."""
    pairs, truth = make_pairs(queries=20)
    fitted = fusion.fit_fusion(pairs, truth)
    alone = pairs[pairs["query"] == "q3"]
    np.testing.assert_allclose(
        fitted.probability(alone), fitted.probability(pairs)[pairs["query"] == "q3"]
    )


GOOD_FUSION = {"features": list(fusion.FUSION_FEATURES), "mean": [0.0] * 5, "scale": [1.0] * 5,
               "coefficients": [0.0, 0.0, 3.0, 0.0, 0.0], "intercept": -6.0}  # fmt: skip
GOOD_SCORES = {"valid": {"map5": 0.5}, "local_matching": {"max_side": 160}, "threshold": 0.5,
               "verified_inliers": 5, "known_precision_curve": [],
               "photo_answer": answers.fit_answer(*make_photo_pairs()).to_json()}  # fmt: skip


@pytest.mark.parametrize(
    ("fusion_payload", "scores", "message"),
    [
        ([1, 2], None, "fusion.json: a fusion is a JSON object, not list"),
        ("{trunc", None, "fusion.json: not a readable JSON file"),
        ({**GOOD_FUSION, "intercept": None}, None, "intercept must be a finite number, got None"),
        ({**GOOD_FUSION, "intercept": 1e400}, None, "intercept must be a finite number, got inf"),
        ({**GOOD_FUSION, "scale": [0.0] * 5}, None, "scale must be positive"),
        ({**GOOD_FUSION, "mean": [0.0] * 4}, None, "mean must be 5 finite numbers"),
        ({**GOOD_FUSION, "coefficients": "abc"}, None, "coefficients must be 5 finite numbers"),
        ({**GOOD_FUSION, "features": 3}, None, "are not"),
        (None, {**GOOD_SCORES, "threshold": None}, "threshold must be a probability"),
        (None, {**GOOD_SCORES, "threshold": float("nan")}, "threshold must be a probability"),
        (None, {**GOOD_SCORES, "threshold": 2}, "threshold must be a probability"),
        (None, {**GOOD_SCORES, "verified_inliers": -1}, "verified_inliers must be null"),
        (None, {**GOOD_SCORES, "verified_inliers": "5"}, "verified_inliers must be null"),
        (None, {**GOOD_SCORES, "local_matching": {"max_side": -1}}, "max_side must be"),
        (None, {**GOOD_SCORES, "local_matching": {"shortlist": 0}}, "shortlist must be"),
        (None, {**GOOD_SCORES, "local_matching": {"ratio": "x"}}, "ratio must be in"),
        (None, {**GOOD_SCORES, "local_matching": {"transform": "x"}}, "transform must be one"),
        (None, {**GOOD_SCORES, "local_matching": {"shortlist": 5, "extra": 1}}, "unknown"),
        (None, {**GOOD_SCORES, "local_matching": [1]}, "must be True, False or a dict"),
        (None, {**GOOD_SCORES, "local_matching": None}, "no local_matching settings"),
        (None, {**GOOD_SCORES, "known_precision_curve": "abc"}, "known_precision_curve must"),
        (None, {**GOOD_SCORES, "photo_answer": None}, "no photo_answer (the per-photo answer)"),
        (None, {**GOOD_SCORES, "photo_answer": {"features": []}}, "photo_answer: the answer is"),
        (None, [1], "scores.json: must hold an object, not list"),
    ],
)
def test_a_hostile_head_is_refused_naming_the_file(tmp_path, fusion_payload, scores, message):
    fusion_text = (
        fusion_payload if isinstance(fusion_payload, str)
        else json.dumps(GOOD_FUSION if fusion_payload is None else fusion_payload)
    )  # fmt: skip
    (tmp_path / fusion.FUSION_FILE).write_text(fusion_text)
    (tmp_path / outputs.SCORES).write_text(json.dumps(GOOD_SCORES if scores is None else scores))
    with pytest.raises(ValueError, match="(fusion|scores).json") as error:
        fusion.FusedHead.load(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_run_without_a_fused_head_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="fusion.json not found: the run has no fused head"):
        fusion.FusedHead.load(tmp_path)


def test_wilson_lower_bound_by_hand():
    # 8 of 10: centre (0.8 + z^2/20) / (1 + z^2/10), the interval's lower end 0.4902
    assert fusion.wilson_lower_bound(8, 10) == pytest.approx(0.49016, abs=1e-4)
    assert fusion.wilson_lower_bound(0, 5) == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(fusion.wilson_lower_bound(0, 0))
    # more photos, a tighter bound for the same share
    assert fusion.wilson_lower_bound(90, 100) > fusion.wilson_lower_bound(9, 10)
