"""The per-photo answer: its features and outcomes by hand, answers that sum to 1, the
temperature and the regression fitted, the new share moved, its JSON refused when hostile, and
calibration measured against scikit-learn's references."""

import math

import numpy as np
import pandas as pd
import pytest

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import answers, fusion, matching


def hand_pairs(rows) -> pd.DataFrame:
    """Pairs from (query, individual, similarity, lnbnn, inliers) rows."""
    return pd.DataFrame.from_records(
        [(q, i, s, 1, z, 1, n, 30, 0) for q, i, s, z, n in rows], columns=matching.PAIR_COLUMNS
    )


def intercept_only(shares, temperature: float = 1.0) -> answers.PhotoAnswer:
    """An answer whose outcome probabilities are ``shares`` whatever the features."""
    size = len(answers.PHOTO_FEATURES)
    with np.errstate(divide="ignore"):
        intercepts = np.log(np.asarray(shares, np.float64))
    return answers.PhotoAnswer(
        np.zeros(size), np.ones(size), np.zeros((3, size)), intercepts, temperature, tuple(shares)
    )


def test_photo_features_and_outcomes_by_hand():
    pairs = hand_pairs([
        ("a", "x", 0.8, 2.0, 10), ("a", "y", 0.6, 3.0, 30), ("b", "z", np.nan, 1.0, 0),
    ])  # fmt: skip
    probability = np.array([0.8, 0.5, 0.2])
    features = answers.photo_features(pairs, probability, ["a", "b", "c"])
    columns = dict(zip(answers.PHOTO_FEATURES, features.T, strict=True))
    # a: best x (logit log 4), gap to y (logit 0); b: one candidate, no gap; c: no candidates
    np.testing.assert_allclose(columns["best_logit"], [math.log(4), math.log(0.25), -13.8155106])
    np.testing.assert_allclose(columns["gap_logit"], [math.log(4), 0, 0])
    np.testing.assert_allclose(columns["log_inliers_best"], [math.log(11), 0, 0])
    np.testing.assert_allclose(columns["log_inliers_most"], [math.log(31), 0, 0])
    np.testing.assert_allclose(columns["log_inliers_second"], [math.log(11), 0, 0])
    np.testing.assert_allclose(columns["similarity"], [0.8, 0.0, 0.0])
    np.testing.assert_allclose(columns["lnbnn_max"], [3.0, 1.0, 0.0])
    truth = {"a": "y", "b": "w", "c": NEW_INDIVIDUAL}
    assert answers.outcomes(pairs, truth, ["a", "b", "c"]).tolist() == [0, 1, 2]


def test_an_answer_by_hand_sums_to_one():
    """Outcomes (0.5, 0.2, 0.3) whatever the features; candidates' logits log 4 and 0 share
    the listed 0.5 as 4:1 at temperature 1, as 2:1 at temperature 2."""
    pairs = hand_pairs([("a", "x", 0.8, 2.0, 10), ("a", "y", 0.6, 3.0, 30)])
    probability = np.array([0.8, 0.5])
    candidates, photos = intercept_only((0.5, 0.2, 0.3)).answer(pairs, probability, ["a"])
    assert candidates["individual"].tolist() == ["x", "y"]
    np.testing.assert_allclose(candidates["p"], [0.4, 0.1])
    row = photos.iloc[0]
    assert row["answer"] == "x" and row["p_answer"] == pytest.approx(0.4)
    assert (row["p_new"], row["p_other"]) == pytest.approx((0.3, 0.2))
    assert candidates["p"].sum() + row["p_new"] + row["p_other"] == pytest.approx(1.0)
    warm = intercept_only((0.5, 0.2, 0.3), temperature=2.0).answer(pairs, probability, ["a"])[0]
    np.testing.assert_allclose(warm["p"], [0.5 * 2 / 3, 0.5 / 3])
    # new wins where it is likelier than the best candidate; a photo without candidates is new
    _, photos = intercept_only((0.5, 0.1, 0.4)).answer(pairs, probability, ["a", "nothing"])
    assert photos["answer"].tolist() == ["x", NEW_INDIVIDUAL]
    assert photos["p_answer"].tolist() == pytest.approx([0.4, 0.4])
    _, photos = intercept_only((0.3, 0.1, 0.6)).answer(pairs, probability, ["a"])
    assert photos["answer"].tolist() == [NEW_INDIVIDUAL]


def test_the_new_share_moves_by_bayes_rule():
    answer = intercept_only((0.5, 0.2, 0.3))
    moved = answer.with_new_share(0.6)
    assert moved.new_share == pytest.approx(0.6) and answer.new_share == pytest.approx(0.3)
    features = np.zeros((1, len(answers.PHOTO_FEATURES)))
    np.testing.assert_allclose(
        moved.outcome_probabilities(features)[0], [0.5 / 0.7 * 0.4, 0.2 / 0.7 * 0.4, 0.6]
    )
    # moved from any features: the odds of new against listed scale by the prior's odds ratio
    fitted = make_fit()
    probe = np.random.default_rng(3).normal(size=(5, len(answers.PHOTO_FEATURES)))
    before, after = (a.outcome_probabilities(probe) for a in (fitted, fitted.with_new_share(0.5)))
    (listed, _, new), moved_shares = fitted.shares, fitted.with_new_share(0.5).answer_shares
    ratio = (moved_shares[2] / new) / (moved_shares[0] / listed)
    np.testing.assert_allclose(after[:, 2] / after[:, 0], before[:, 2] / before[:, 0] * ratio)
    for share in (0, 1, 1.5, -0.1, True, "0.3", None):
        with pytest.raises(ValueError, match="new share must be"):
            answer.with_new_share(share)
    with pytest.raises(ValueError, match="new share of 0.0: the answer cannot be moved"):
        intercept_only((0.8, 0.2, 0.0)).with_new_share(0.3)


def make_photos(seed: int = 0, photos: int = 300):
    """Pairs of photos of three outcomes: a listed photo's true candidate has a higher
    probability and more inliers than the rest, a new photo's best is weak."""
    rng = np.random.default_rng(seed)
    rows, probability, truth = [], [], {}
    for q in range(photos):
        name, kind = f"q{q}", ("listed", "listed", "other", "new")[q % 4]
        truth[name] = {"listed": "i0", "other": "far", "new": NEW_INDIVIDUAL}[kind]
        for c in range(4):
            same = kind == "listed" and c == 0
            inliers = int(rng.poisson(25 if same else 3))
            rows.append((name, f"i{c}", rng.normal(0.6 if same else 0.3, 0.1), 1.0, inliers))
            probability.append(1 / (1 + math.exp(-(rng.normal(1.5 if same else -3, 1.0)))))
    return hand_pairs(rows), np.array(probability), truth


def make_fit() -> answers.PhotoAnswer:
    pairs, probability, truth = make_photos()
    return answers.fit_answer(pairs, probability, truth)


def test_a_fitted_answer_is_sklearns_regression_and_tells_the_outcomes_apart():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pairs, probability, truth = make_photos()
    fitted = answers.fit_answer(pairs, probability, truth)
    queries = list(truth)
    features = answers.photo_features(pairs, probability, queries)
    outcome = answers.outcomes(pairs, truth, queries)
    reference = LogisticRegression(max_iter=2000).fit(
        StandardScaler().fit_transform(features), outcome
    )
    np.testing.assert_allclose(
        fitted.outcome_probabilities(features), reference.predict_proba(
            StandardScaler().fit_transform(features)
        ), atol=1e-6,
    )  # fmt: skip
    assert fitted.shares == pytest.approx((0.5, 0.25, 0.25))
    held_pairs, held_probability, held_truth = make_photos(seed=1)
    candidates, photos = fitted.answer(held_pairs, held_probability, list(held_truth))
    totals = candidates.groupby("query")["p"].sum().reindex(photos["query"]).to_numpy()
    np.testing.assert_allclose(totals + photos["p_new"] + photos["p_other"], 1.0)
    scores = answers.answer_calibration(photos, held_truth)
    # listed photos stand out, "other" ones look new: the AUC near 2/3 * 1 + 1/3 * 1/2
    assert scores["known_vs_new_auc"] == pytest.approx(5 / 6, abs=0.05)
    assert scores["answer_right"] > 0.7
    # a restored answer is the same answer
    again = answers.PhotoAnswer.from_json(fitted.to_json())
    pd.testing.assert_frame_equal(
        again.answer(held_pairs, held_probability, list(held_truth))[1], photos
    )


def test_an_outcome_validation_never_had_gets_probability_zero():
    pairs, probability, truth = make_photos(photos=200)
    without_other = {q: t for q, t in truth.items() if t != "far"}
    fitted = answers.fit_answer(pairs, probability, without_other)
    assert fitted.shares[1] == 0.0 and math.isinf(fitted.intercepts[1])
    candidates, photos = fitted.answer(pairs, probability, list(truth))
    assert (photos["p_other"] == 0).all()
    totals = candidates.groupby("query")["p"].sum().reindex(photos["query"]).to_numpy()
    np.testing.assert_allclose(totals + photos["p_new"], 1.0)
    assert answers.PhotoAnswer.from_json(fitted.to_json()).shares == fitted.shares
    only_listed = {q: t for q, t in truth.items() if t == "i0"}
    fitted = answers.fit_answer(pairs, probability, only_listed)
    photos = fitted.answer(pairs, probability, list(only_listed))[1]
    assert (photos["p_new"] == 0).all() and fitted.shares == (1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="needs validation photos"):
        answers.fit_answer(pairs, probability, {})


def test_the_temperature_is_recovered():
    """True candidates drawn from a softmax of the logits at temperature 2: the fit finds it."""
    rng = np.random.default_rng(0)
    rows, probability, truth = [], [], {}
    for q in range(2000):
        logits = rng.normal(0, 3, size=5)
        weights = np.exp(logits / 2.0)
        truth[f"q{q}"] = f"i{rng.choice(5, p=weights / weights.sum())}"
        for c, value in enumerate(logits):
            rows.append((f"q{q}", f"i{c}", 0.5, 1.0, 3))
            probability.append(1 / (1 + math.exp(-value)))
    temperature = answers.fit_temperature(hand_pairs(rows), np.array(probability), truth)
    assert temperature == pytest.approx(2.0, rel=0.1)
    single = hand_pairs([("a", "x", 0.5, 1.0, 3)])
    assert answers.fit_temperature(single, np.array([0.7]), {"a": "x"}) == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["best_logit"]}, "not of this version's features"),
        ({"mean": [0.0] * 3}, "mean must be finite numbers of shape"),
        ({"scale": [float("nan")] * 7}, "scale must be finite numbers"),
        ({"coefficients": "x"}, "coefficients must be finite numbers"),
        ({"intercepts": [0.0, 0.0]}, "intercepts must be 3 numbers or nulls"),
        ({"intercepts": [None, None, None]}, "an outcome without intercept must have a share"),
        ({"intercepts": [0.0, None, 0.0]}, "an outcome without intercept must have a share"),
        ({"temperature": 0.0}, "the temperature must be positive"),
        ({"shares": [0.5, 0.5, 0.5]}, "shares must be 3 shares summing to 1"),
        ({"shares": [1.5, -0.5, 0.0]}, "shares must be 3 shares summing to 1"),
    ],
)
def test_a_hostile_answer_is_refused_naming_its_source(change, message):
    payload = {**intercept_only((0.5, 0.2, 0.3)).to_json(), **change}
    with pytest.raises(ValueError, match="scores.json: photo_answer") as error:
        answers.PhotoAnswer.from_json(payload, "scores.json: photo_answer")
    assert message in str(error.value)
    with pytest.raises(ValueError, match="a JSON object, not list"):
        answers.PhotoAnswer.from_json([1], "a")


def test_reliability_and_brier_are_sklearns():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(0)
    confidence = rng.uniform(size=500)
    confidence[:3] = (0.0, 1.0, 0.5)
    correct = rng.uniform(size=500) < confidence
    table = answers.reliability(confidence, correct, bins=8)
    observed, predicted = calibration_curve(correct, confidence, n_bins=8, strategy="uniform")
    np.testing.assert_allclose(table["observed"], observed)
    np.testing.assert_allclose(table["confidence"], predicted)
    assert table["count"].sum() == 500
    assert answers.brier_score(confidence, correct) == pytest.approx(
        brier_score_loss(correct, confidence)
    )
    with pytest.raises(ValueError, match="must be probabilities"):
        answers.reliability([1.2], [1])


def test_expected_calibration_error_and_answer_calibration_by_hand():
    # bins [0, 0.1]: confidence 0.1, observed 0.5 (gap 0.4, 2 photos); (0.8, 0.9]: 0.9 vs 1
    assert answers.expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1]) == pytest.approx(
        (2 * 0.4 + 2 * 0.1) / 4
    )
    assert math.isnan(answers.expected_calibration_error([], []))
    photos = pd.DataFrame(
        [("a", "x", 0.9, "x", 0.9, 0.05, 0.05), ("b", NEW_INDIVIDUAL, 0.6, "x", 0.3, 0.6, 0.1),
         ("c", "y", 0.5, "y", 0.5, 0.4, 0.1)],
        columns=answers.ANSWER_COLUMNS,
    )  # fmt: skip
    truth = {"a": "x", "b": NEW_INDIVIDUAL, "c": NEW_INDIVIDUAL}
    scores = answers.answer_calibration(photos, truth)
    assert scores["photos"] == 3 and scores["answer_right"] == pytest.approx(2 / 3)
    assert scores["answer_brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.5**2) / 3)
    assert scores["new_brier"] == pytest.approx((0.05**2 + 0.4**2 + 0.6**2) / 3)
    assert scores["known_vs_new_auc"] == pytest.approx(1.0)  # a: 0.95 against 0.4 and 0.6
    assert scores["known_top1"] == 1.0  # a, the one known photo: its best candidate is x


def test_cross_fitted_answers_answer_each_half_from_the_other():
    """Every validation photo answered once, in truth's order (a photo without candidates
    too); relabelling one half's photos changes only the other half's answers."""
    pairs, probability, truth = make_photos(photos=120)
    truth["lonely"] = NEW_INDIVIDUAL
    photos = fusion.cross_fitted_answers(pairs, probability, truth)
    assert photos["query"].tolist() == list(truth)
    assert photos.loc[photos["query"] == "lonely", "answer"].item() == NEW_INDIVIDUAL
    first = set(pairs["query"][fusion.query_halves(pairs)]) | {"lonely"}
    relabelled = {q: (NEW_INDIVIDUAL if q in first and t == "far" else t) for q, t in truth.items()}
    again = fusion.cross_fitted_answers(pairs, probability, relabelled)
    held = photos["query"].isin(first).to_numpy()
    pd.testing.assert_frame_equal(photos[held], again[held])
    assert not np.allclose(photos.loc[~held, "p_new"], again.loc[~held, "p_new"])


def test_plot_reliability_draws_each_part_with_counts():
    pairs, probability, truth = make_photos(photos=80)
    photos = make_fit().answer(pairs, probability, list(truth))[1]
    figure = answers.plot_reliability({"validation": (photos, truth), "test": (photos, truth)})
    axes = figure.axes
    assert len(axes) == 4 and "ECE" in axes[0].get_title()
    counts = [int(text.get_text()) for text in axes[0].texts]
    assert sum(counts) == 80


def test_an_encounters_photos_add_up_per_whale_by_hand():
    """a1 and a2 are one encounter: x listed by both (p 0.8 and 0.6), y by a1 only (p 0.5;
    a2's lowest, p 0.2, stands in for a2's), z by a2 only (p 0.2; a1's lowest, 0.5, for
    a1's); b stays alone."""
    pairs = hand_pairs([
        ("a1", "x", 0.7, 2.0, 12), ("a1", "y", 0.5, 1.0, 3),
        ("a2", "x", 0.6, 3.0, 20), ("a2", "z", 0.4, 0.5, 1), ("b", "x", 0.9, 4.0, 40),
    ])  # fmt: skip
    probability = np.array([0.8, 0.5, 0.6, 0.2, 0.9])
    group_of = {"a1": "E", "a2": "E"}
    expected = {  # (encounter, whale) -> p by rule
        "mean": {("E", "x"): 6**0.5 / (1 + 6**0.5), ("E", "y"): 1 / 3, ("E", "z"): 1 / 3},
        "sum": {("E", "x"): 6 / 7, ("E", "y"): 0.2, ("E", "z"): 0.2},
        "max": {("E", "x"): 0.8, ("E", "y"): 0.5, ("E", "z"): 0.5},
    }
    for rule, values in expected.items():
        grouped, p = answers.group_pairs(pairs, probability, group_of, rule)
        assert list(grouped.columns) == matching.PAIR_COLUMNS
        got = dict(zip(zip(grouped["query"], grouped["individual"], strict=True), p, strict=True))
        assert got == pytest.approx({**values, ("b", "x"): 0.9}), rule
    grouped = grouped.set_index(["query", "individual"])
    assert grouped.loc[("E", "x"), "inliers"] == 20 and grouped.loc[("E", "x"), "lnbnn"] == 3.0
    assert grouped.loc[("E", "x"), "similarity"] == 0.7
    with pytest.raises(ValueError, match="rule must be one of max, mean, sum"):
        answers.group_pairs(pairs, probability, group_of, "median")
    truth = {"a1": "x", "a2": "x", "b": NEW_INDIVIDUAL}
    assert answers.group_truth(truth, group_of) == {"E": "x", "b": NEW_INDIVIDUAL}
    with pytest.raises(ValueError, match="encounter 'E' holds photos of 'x' and of 'y'"):
        answers.group_truth({**truth, "a2": "y"}, group_of)
    with pytest.raises(ValueError, match="encounter 'b' is named as a photo that is not in it"):
        answers.group_pairs(pairs, probability, {"a1": "b", "a2": "b"})
    encounter_answers = intercept_only((0.5, 0.2, 0.3)).answer(
        *answers.group_pairs(pairs, probability, group_of), ["E", "b"]
    )[1]
    photos = answers.photos_of_groups(encounter_answers, ["a1", "b", "a2"], group_of)
    assert photos["query"].tolist() == ["a1", "b", "a2"]
    assert photos["answer"].tolist() == ["x", "x", "x"]
    assert photos["p_answer"].iloc[0] == photos["p_answer"].iloc[2]


def test_an_encounter_of_one_photo_is_answered_as_the_photo():
    pairs, probability, truth = make_photos(photos=60)
    alone = {q: q for q in list(truth)[:30]}  # photos named as their own encounter, or not
    for rule in answers.GROUP_RULES:
        grouped, p = answers.group_pairs(pairs, probability, alone, rule)
        order = np.lexsort((grouped["individual"], grouped["query"]))
        expected = np.lexsort((pairs["individual"], pairs["query"]))
        np.testing.assert_allclose(p[order], probability[expected])
        fitted = make_fit()
        photos = fitted.answer(pairs, probability, list(truth))[1]
        by_encounter = answers.photos_of_groups(
            fitted.answer(grouped, p, list(truth))[1], list(truth), alone
        )
        pd.testing.assert_frame_equal(by_encounter, photos)
