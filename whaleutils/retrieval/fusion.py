"""The fused head: the evidence of ``matching``'s candidate pairs turned into a calibrated
probability that a pair shows one animal, and the choices made on it, in one place.

One flow, used by notebook 04 (:func:`write_fused_head`), ``scripts/local_matching.py`` and
``identify`` (:meth:`FusedHead.load`)::

    head, crossed = FusedHead.calibrate(valid_pairs, truth, queries, padding, settings)
    head.save(folder)                       # fusion.json (scores.json holds head.record())
    head = FusedHead.load(folder)           # checked: a hostile or stale file is refused
    ranked = head.rank(test_pairs)          # query -> [(individual, probability)], best first
    lists = predictions(ranked, queries, head.threshold, padding)

:func:`fit_fusion` fits a logistic regression on validation pairs (scikit-learn) and
:meth:`Fusion.probability` applies it; :meth:`FusedHead.calibrate` also cross-fits it (each half
of the validation queries scored by a fusion fitted on the other half), chooses the
``new_individual`` threshold for MAP@5 on those cross-fitted probabilities, the verified tier
(inliers) and the known-verdict precision curve. The probability of a pair depends only on its
query's candidate set, which ``settings.shortlist`` fixes: how many candidates are shown
(``identify --top``) never changes it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import metrics, outputs
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import answers, heads, local_features, matching
from whaleutils.retrieval.matching import LocalSettings

FUSION_FEATURES = ("similarity", "lnbnn_z", "log_inliers", "log_similarity_rank", "log_lnbnn_rank")
LOCAL_FOLDER = outputs.LOCAL_FOLDER  # a trained notebook's fused head, a blend member of its own
FUSION_FILE = "fusion.json"
PSEUDO_LABELS_FILE = "pseudo_labels.csv"  # test photos in the verified tier (notebook 04)
LOCAL_OUTPUTS = (
    "pairs_valid.csv", "pairs_test.csv", FUSION_FILE, "calibration.png",
    "oof_predictions.csv", "test_predictions.csv", "submission.csv", "scores.json",
    PSEUDO_LABELS_FILE, "answers_valid.csv", "answers_test.csv", "reliability.png",
)  # fmt: skip
PROBABILITY_GRID = np.round(np.linspace(0, 1, 101), 2)  # thresholds on a probability


def fusion_features(pairs: pd.DataFrame, shortlist: int | None = None) -> np.ndarray:
    """(pairs, len(FUSION_FEATURES)) inputs of the fusion model: the similarity, the LNBNN score
    standardised within its query (scores differ in scale between photos), log(1 + inliers)
    and the log ranks. Without similarities (NaN) those columns are 0.

    The standardisation's mean and spread are those of the query's candidates in its
    ``shortlist`` (ranked within it by LNBNN or by similarity: the set ``candidate_pairs``
    makes with that shortlist), so candidates listed beyond it change no other's features;
    None: all of the query's pairs."""
    within = pairs["lnbnn"].where(_in_shortlist(pairs, shortlist))
    grouped = within.groupby(pairs["query"])
    spread = grouped.transform("std").fillna(0.0).replace(0.0, 1.0)
    lnbnn_z = (pairs["lnbnn"] - grouped.transform("mean")) / spread
    similarity = pairs["similarity"].fillna(0.0)
    return np.column_stack(
        [
            similarity,
            lnbnn_z,
            np.log1p(pairs["inliers"]),
            np.log(pairs["similarity_rank"].clip(lower=1)) * pairs["similarity"].notna(),
            np.log(pairs["lnbnn_rank"].clip(lower=1)),
        ]
    )


def _in_shortlist(pairs: pd.DataFrame, shortlist: int | None) -> pd.Series:
    """(pairs,) bool: ranked within ``shortlist`` by LNBNN or by similarity (all: None)."""
    if shortlist is None:
        return pd.Series(True, index=pairs.index)
    by_similarity = pairs["similarity_rank"].between(1, shortlist)
    return (pairs["lnbnn_rank"] <= shortlist) | by_similarity


@dataclass
class Fusion:
    """A fitted fusion: a logistic regression on the standardised :data:`FUSION_FEATURES`,
    kept as plain numbers (``mean``, ``scale``, ``coefficients`` (f,), ``intercept``) so that
    it is saved as JSON, never as a pickle."""

    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercept: float
    features: tuple[str, ...] = FUSION_FEATURES

    def probability(self, pairs: pd.DataFrame, shortlist: int | None = None) -> np.ndarray:
        """(pairs,) the probability that each pair shows one animal (``shortlist``: see
        :func:`fusion_features`)."""
        logit = ((fusion_features(pairs, shortlist) - self.mean) / self.scale) @ self.coefficients
        return 1.0 / (1.0 + np.exp(-(logit + self.intercept)))

    def to_json(self) -> dict:
        return {
            "features": list(self.features),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercept": float(self.intercept),
        }

    @classmethod
    def from_json(cls, payload, source: str = "fusion") -> Fusion:
        """Raises ValueError naming ``source`` unless ``payload`` is a fusion of this
        version's features: an object with finite numbers, one per feature, positive scales."""
        if not isinstance(payload, dict):
            raise ValueError(f"{source}: a fusion is a JSON object, not {type(payload).__name__}")
        if payload.get("features") != list(FUSION_FEATURES):
            raise ValueError(
                f"{source}: fusion features {payload.get('features')} are not "
                f"{list(FUSION_FEATURES)}; fit it again"
            )
        mean, scale, coefficients = (
            _finite_numbers(payload.get(name), len(FUSION_FEATURES), f"{source}: {name}")
            for name in ("mean", "scale", "coefficients")
        )
        if (scale <= 0).any():
            raise ValueError(f"{source}: scale must be positive, got {scale.tolist()}")
        intercept = _finite_numbers(payload.get("intercept"), None, f"{source}: intercept")
        return cls(mean, scale, coefficients, float(intercept))


def _finite_numbers(value, length: int | None, name: str) -> np.ndarray:
    """``value`` as float64: ``length`` finite numbers, or one (``length`` None)."""
    shape = () if length is None else (length,)
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != shape or not np.isfinite(array).all():
        wanted = "a finite number" if length is None else f"{length} finite numbers"
        raise ValueError(f"{name} must be {wanted}, got {str(value)[:80]}")
    return array


def fit_fusion(pairs: pd.DataFrame, truth: dict[str, str], c: float = 1.0) -> Fusion:
    """Fit the fusion on (validation) pairs with scikit-learn's ``StandardScaler`` and
    ``LogisticRegression``: a pair is positive when its individual is its query's true one
    (``truth``: query -> individual id or ``new_individual``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    same = same_animal(pairs, truth)
    if same.all() or not same.any():
        raise ValueError("fitting the fusion needs both same-animal and other pairs")
    inputs = fusion_features(pairs)
    scaler = StandardScaler().fit(inputs)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    model = LogisticRegression(C=c, max_iter=1000).fit((inputs - scaler.mean_) / scale, same)
    return Fusion(scaler.mean_, scale, model.coef_[0], float(model.intercept_[0]))


def same_animal(pairs: pd.DataFrame, truth: dict[str, str]) -> np.ndarray:
    """(pairs,) bool: whether each pair's individual is its query's true one."""
    return (pairs["individual"] == pairs["query"].map(truth)).to_numpy()


def query_halves(pairs: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """(pairs,) bool: whether each pair's query is in the first of two random halves of the
    queries (the split that cross-fitting fits on one half and scores the other)."""
    queries = np.array(sorted(pairs["query"].unique()))
    half = set(np.random.default_rng(seed).permutation(queries)[: len(queries) // 2])
    return pairs["query"].isin(half).to_numpy()


def cross_fitted_probability(pairs: pd.DataFrame, truth: dict[str, str], seed: int = 0):
    """Validation probabilities, each half of the queries scored by a fusion fitted on the
    other half (so the threshold chosen on them is not chosen on fitted scores). A half too
    small to fit on (no same-animal pair) is scored by the fusion fitted on all pairs."""
    first = query_halves(pairs, seed)
    result = np.zeros(len(pairs))
    for held in (first, ~first):
        try:
            fusion = fit_fusion(pairs[~held], truth)
        except ValueError:
            fusion = fit_fusion(pairs, truth)
        result[held] = fusion.probability(pairs[held])
    return result


def cross_fitted_answers(
    pairs: pd.DataFrame, probability: np.ndarray, truth: dict[str, str], seed: int = 0
) -> pd.DataFrame:
    """Validation's per-photo answers (``answers.ANSWER_COLUMNS``, in ``truth``'s query
    order), each half of the queries answered by a :class:`answers.PhotoAnswer` fitted on the
    other half (the halves of :func:`query_halves`; photos without candidates join the
    first); ``probability``: the pairs' cross-fitted fused probabilities."""
    first = query_halves(pairs, seed)
    first_queries = set(pairs["query"][first]) | (set(truth) - set(pairs["query"]))
    photos = []
    for held, held_queries in ((first, first_queries), (~first, set(truth) - first_queries)):
        fit_truth = {q: t for q, t in truth.items() if q not in held_queries}
        answer = answers.fit_answer(pairs[~held], probability[~held], fit_truth)
        queries = [q for q in truth if q in held_queries]
        photos.append(answer.answer(pairs[held], probability[held], queries)[1])
    photos = pd.concat(photos, ignore_index=True)
    order = {query: i for i, query in enumerate(truth)}
    return photos.sort_values("query", key=lambda q: q.map(order)).reset_index(drop=True)


@dataclass(frozen=True)
class EncounterAnswer:
    """The answer by encounter: the ``rule`` (``answers.GROUP_RULES``) that adds up an
    encounter's photos' pair logits per whale, and the per-photo answer fitted on validation
    encounters grouped by it."""

    rule: str
    answer: answers.PhotoAnswer

    def answer_photos(
        self,
        pairs: pd.DataFrame,
        probability: np.ndarray,
        queries: Sequence[str],
        encounters: dict[str, str],
    ) -> pd.DataFrame:
        """Each photo of ``queries`` with its encounter's answer (``answers.ANSWER_COLUMNS``)."""
        grouped = answers.group_pairs(pairs, probability, encounters, self.rule)
        groups = list(answers.groups_of(queries, encounters).unique())
        return answers.photos_of_groups(
            self.answer.answer(*grouped, groups)[1], queries, encounters
        )

    def to_json(self) -> dict:
        return {"rule": self.rule, "answer": self.answer.to_json()}

    @classmethod
    def from_json(cls, payload, source: str = "encounter answer") -> EncounterAnswer:
        if not isinstance(payload, dict) or payload.get("rule") not in answers.GROUP_RULES:
            raise ValueError(
                f"{source}: an answer by encounter is a rule ({', '.join(answers.GROUP_RULES)}) "
                "and an answer"
            )
        return cls(payload["rule"], answers.PhotoAnswer.from_json(payload.get("answer"), source))


def fit_encounter_answer(
    pairs: pd.DataFrame,
    probability: np.ndarray,
    truth: dict[str, str],
    encounters: dict[str, str],
    seed: int = 0,
) -> tuple[EncounterAnswer, dict[str, pd.DataFrame]]:
    """Choose the rule of :data:`answers.GROUP_RULES` whose answers by encounter, cross-fitted
    by halves of the validation encounters (:func:`cross_fitted_answers` on the grouped
    pairs), answer the most validation photos rightly, and fit its answer on all of them.
    ``pairs`` and their cross-fitted ``probability``: the shortlist's; returns the answer and
    each rule's cross-fitted photos (``answers.ANSWER_COLUMNS``, in ``truth``'s order)."""
    photos, right = {}, {}
    for rule in answers.GROUP_RULES:
        photos[rule] = cross_fitted_encounter_answers(
            pairs, probability, truth, encounters, rule, seed
        )
        right[rule] = float((photos[rule]["answer"] == photos[rule]["query"].map(truth)).mean())
    rule = max(answers.GROUP_RULES, key=lambda r: right[r])  # ties: the first listed
    grouped = answers.group_pairs(pairs, probability, encounters, rule)
    answer = answers.fit_answer(*grouped, answers.group_truth(truth, encounters))
    return EncounterAnswer(rule, answer), photos


def cross_fitted_encounter_answers(
    pairs: pd.DataFrame,
    probability: np.ndarray,
    truth: dict[str, str],
    encounters: dict[str, str],
    rule: str,
    seed: int = 0,
) -> pd.DataFrame:
    """Each validation photo (in ``truth``'s order) with its encounter's answer by ``rule``,
    cross-fitted by halves of the encounters (:func:`cross_fitted_answers` on the grouped
    pairs)."""
    grouped = answers.group_pairs(pairs, probability, encounters, rule)
    crossed = cross_fitted_answers(*grouped, answers.group_truth(truth, encounters), seed)
    return answers.photos_of_groups(crossed, list(truth), encounters)


# ------------------------------------------------------------------ rankings and thresholds


def ranked_candidates(pairs: pd.DataFrame, score: np.ndarray) -> dict[str, list[tuple[str, float]]]:
    """Each query's candidates (individual, score), best first (ties by id)."""
    frame = pairs[["query", "individual"]].assign(score=score)
    frame = frame.sort_values(["query", "score", "individual"], ascending=[True, False, True])
    return {
        query: list(zip(group["individual"], group["score"], strict=True))
        for query, group in frame.groupby("query", sort=False)
    }


def predictions(
    ranked: dict[str, list[tuple[str, float]]],
    queries: Sequence[str],
    threshold: float,
    padding: Sequence[str] = (),
) -> list[list[str]]:
    """Five labels per query: ``new_individual`` first where its best score is below
    ``threshold``, else second; padded with ``padding`` (frequent ids)."""
    result = []
    for query in queries:
        candidates = ranked.get(query, [])
        ids = [individual for individual, _ in candidates]
        best = candidates[0][1] if candidates else -np.inf
        at = 0 if best < threshold else 1
        labels = ids[:at] + [NEW_INDIVIDUAL] + ids[at:]
        labels += [p for p in padding if p not in labels]
        result.append(labels[:5])
    return result


def best_threshold(
    ranked: dict, queries: Sequence[str], truth: Sequence[str], padding, grid=None
) -> float:
    """The ``new_individual`` threshold on the best candidate's score with the best MAP@5
    (ties: the lower threshold), from ``grid`` (default :data:`PROBABILITY_GRID`)."""
    grid = PROBABILITY_GRID if grid is None else grid
    scored = [
        (metrics.map_at_k(list(truth), predictions(ranked, queries, t, padding)), -t) for t in grid
    ]
    return float(-max(scored)[1])


def best_by_inliers(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each query's pair with the most inliers (one row per query)."""
    return pairs.sort_values(["query", "inliers"], ascending=[True, False]).drop_duplicates("query")


def verified_inliers(
    pairs: pd.DataFrame, truth: dict[str, str], precision: float = 0.98
) -> int | None:
    """The smallest inlier count at which a query's best candidate by inliers is right at
    least ``precision`` of the time on these (validation) pairs, counting every query (new
    ones can only be wrong): the "verified" tier a reviewer may accept in bulk. None if no
    count reaches it."""
    best = best_by_inliers(pairs)
    right = best["individual"].to_numpy() == best["query"].map(truth).to_numpy()
    inliers = best["inliers"].to_numpy()
    for count in np.unique(inliers):
        accepted = inliers >= count
        if count > 0 and accepted.any() and right[accepted].mean() >= precision:
            return int(count)
    return None


def pseudo_labels(
    pairs: pd.DataFrame, verified: int | None, classes: Sequence[str] = ()
) -> pd.DataFrame:
    """The queries of ``pairs`` in the verified tier, labelled with their best candidate by
    inliers: a second training round's pseudo-labels (columns ``image, individual_id,
    inliers``, in query order). A query is in the tier when that candidate has at least
    ``verified`` inliers (:func:`verified_inliers`, chosen on validation for its precision);
    none when ``verified`` is None. ``classes``: the individuals a model can be trained on
    (its training classes); a query whose candidate is another (e.g. seen only in validation)
    is left out. Empty ``classes``: any."""
    columns = ["image", "individual_id", "inliers"]
    if verified is None or pairs.empty:
        return pd.DataFrame(columns=columns)
    if isinstance(verified, bool) or not isinstance(verified, int | np.integer) or verified < 1:
        raise ValueError(f"verified must be None or a count >= 1, got {verified!r}")
    position = {query: i for i, query in enumerate(dict.fromkeys(pairs["query"]))}
    best = best_by_inliers(pairs)
    keep = best["inliers"] >= verified
    if len(classes):
        keep &= best["individual"].isin(set(classes))
    best = best[keep].sort_values("query", key=lambda query: query.map(position))
    return pd.DataFrame(
        {
            "image": best["query"].astype(str).to_numpy(),
            "individual_id": best["individual"].astype(str).to_numpy(),
            "inliers": best["inliers"].astype(int).to_numpy(),
        },
        columns=columns,
    )


def known_accuracy(ranked: dict, truth: dict[str, str], k: int) -> float:
    """Share of known queries (truth not ``new_individual``) whose true individual is among
    their ``k`` best candidates."""
    known = [q for q, t in truth.items() if t != NEW_INDIVIDUAL]
    hits = [truth[q] in [i for i, _ in ranked.get(q, [])[:k]] for q in known]
    return float(np.mean(hits)) if hits else float("nan")


def known_vs_new_auc(ranked: dict, truth: dict[str, str]) -> float:
    """ROC AUC of the best candidate's score telling known queries from new ones."""
    from sklearn.metrics import roc_auc_score

    queries = list(truth)
    best = [ranked[q][0][1] if ranked.get(q) else -np.inf for q in queries]
    known = [truth[q] != NEW_INDIVIDUAL for q in queries]
    if all(known) or not any(known):
        return float("nan")
    return float(roc_auc_score(known, np.nan_to_num(best, neginf=-1e9)))


def known_precision_curve(ranked: dict, truth: dict[str, str], grid=None) -> list[dict]:
    """The "known" verdict at each threshold of ``grid`` (default :data:`PROBABILITY_GRID`): the
    queries whose best candidate scores at least the threshold are called known.
    ``precision``: the share of them that are known individuals; ``recall``: the share of
    known queries called known; ``right``: the share of them whose best candidate is their
    individual (precision and right None where no query is called known: the curve is saved
    as JSON); ``called`` and ``named_right``: the counts behind ``right`` (for its confidence
    bound, :func:`wilson_lower_bound`)."""
    grid = PROBABILITY_GRID if grid is None else grid
    queries = list(truth)
    best = np.array([ranked[q][0][1] if ranked.get(q) else -np.inf for q in queries])
    known = np.array([truth[q] != NEW_INDIVIDUAL for q in queries])
    right = np.array([bool(ranked.get(q)) and ranked[q][0][0] == truth[q] for q in queries])
    curve = []
    for threshold in grid:
        called = best >= threshold
        curve.append(
            {
                "threshold": float(threshold),
                "precision": float(known[called].mean()) if called.any() else None,
                "recall": float(called[known].mean()) if known.any() else None,
                "right": float(right[called].mean()) if called.any() else None,
                "called": int(called.sum()),
                "named_right": int(right[called].sum()),
            }
        )
    return curve


def threshold_for_precision(
    curve: Sequence[dict], precision: float, of: str = "precision"
) -> float:
    """The lowest threshold of a :func:`known_precision_curve` from which on the "known"
    verdict's precision (``of="right"``: the share whose named whale is right) is at least
    ``precision`` (at it and every higher threshold that calls any photo known).

    Raises
    ------
    ValueError
        When no threshold reaches it, naming the highest precision there is.
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got precision={precision}")
    points = sorted((p["threshold"], p[of]) for p in curve if p.get(of) is not None)
    chosen = None
    for threshold, reached in reversed(points):
        if reached < precision:
            break
        chosen = threshold
    if chosen is None:
        best = max((reached for _, reached in points), default=float("nan"))
        what = "the known verdict" if of == "precision" else "the named whale"
        raise ValueError(
            f"no threshold gives {what} a precision of {precision} on validation "
            f"(the highest is {best:.3f})"
        )
    return float(chosen)


WILSON_Z = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson_lower_bound(successes: int, trials: int, z: float = WILSON_Z) -> float:
    """The lower end of the Wilson score interval for a proportion ``successes / trials``
    (95% two-sided by default); NaN for no trials.

    >>> round(wilson_lower_bound(10, 10), 4), round(wilson_lower_bound(95, 100), 4)
    (0.7225, 0.8882)
    """
    if trials <= 0:
        return float("nan")
    share = successes / trials
    centre = share + z * z / (2 * trials)
    margin = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials))
    return (centre - margin) / (1 + z * z / trials)


def named_precision(curve: Sequence[dict], precision: float) -> dict:
    """The threshold at which "the named whale is right" held with ``precision`` on
    validation (:func:`threshold_for_precision` of ``right``), and what it rests on:
    ``right`` (the share), ``lower_bound`` (its 95% Wilson lower bound), ``called`` (photos
    called known there), ``recall`` (the share of known photos called known).

    Raises
    ------
    ValueError
        When no threshold reaches it (naming the highest share), or when the curve has no
        counts (a head fitted before they were kept: fit it again).
    """
    threshold = threshold_for_precision(curve, precision, of="right")
    point = next(p for p in curve if p["threshold"] == threshold)
    if "called" not in point:
        raise ValueError("the known-precision curve has no counts: fit the head again")
    return {
        "threshold": threshold,
        "right": point["right"],
        "lower_bound": wilson_lower_bound(point["named_right"], point["called"]),
        "called": point["called"],
        "recall": point["recall"],
    }


# ---------------------------------------------------------------------------- the fused head


@dataclass(frozen=True)
class FusedHead:
    """A fusion and what was chosen on validation with it: the ``new_individual``
    ``threshold`` on the best candidate's probability (for MAP@5), the ``verified_inliers``
    tier (None: no count reached its precision), the ``known_precision_curve`` (the
    known verdict's precision per threshold) and the per-photo ``answer`` (P(new) and
    P(whale X) summing to 1, :mod:`answers`), with the ``settings`` its pairs were made with.
    Saved as ``fusion.json`` (the fusion) and the head's ``scores.json`` (:meth:`record`)."""

    fusion: Fusion
    settings: LocalSettings
    threshold: float
    verified_inliers: int | None = None
    known_precision_curve: tuple[dict, ...] = ()
    answer: answers.PhotoAnswer | None = None
    encounter_answer: EncounterAnswer | None = None

    @classmethod
    def calibrate(
        cls,
        pairs: pd.DataFrame,
        truth: dict[str, str],
        settings: LocalSettings,
        padding: Sequence[str] = (),
        seed: int = 0,
        encounters: dict[str, str] | None = None,
    ) -> tuple[FusedHead, np.ndarray]:
        """Fit on validation ``pairs`` (``truth``: query -> individual or
        ``new_individual``, in query order), choose the threshold and the tiers on
        cross-fitted probabilities and fit the per-photo answer on those of the shortlist's
        candidates; with ``encounters`` (photo -> encounter) holding one of two photos or
        more, also the answer by encounter (:func:`fit_encounter_answer`). Returns the head
        and the cross-fitted probabilities (pairs,)."""
        fusion = fit_fusion(pairs, truth)
        crossed = cross_fitted_probability(pairs, truth, seed)
        ranked = ranked_candidates(pairs, crossed)
        queries = list(truth)
        threshold = best_threshold(ranked, queries, [truth[q] for q in queries], padding)
        short = _in_shortlist(pairs, settings.shortlist).to_numpy()
        head = cls(
            fusion,
            settings,
            threshold,
            verified_inliers(pairs, truth, settings.verified_precision),
            tuple(known_precision_curve(ranked, truth)),
            answers.fit_answer(pairs[short], crossed[short], truth),
        )
        if encounters and len(set(encounters.values())) < len(encounters):
            by_encounter = fit_encounter_answer(
                pairs[short], crossed[short], truth, encounters, seed
            )
            head = dataclasses.replace(head, encounter_answer=by_encounter[0])
        return head, crossed

    def answer_encounters(
        self, pairs: pd.DataFrame, queries: Sequence[str], encounters: dict[str, str]
    ) -> pd.DataFrame:
        """Each photo of ``queries`` with its encounter's answer (``answers.ANSWER_COLUMNS``):
        the evidence of the encounter's photos (``encounters``: photo -> encounter; a photo
        without one is alone) added per candidate whale by the head's rule, answered once."""
        if self.encounter_answer is None:
            raise ValueError(
                "the fused head has no answer by encounter: its validation photos had no "
                "encounters (train.csv's encounter column) when it was fitted"
            )
        short = self.in_shortlist(pairs)
        return self.encounter_answer.answer_photos(
            pairs[short], self.probability(pairs)[short], queries, encounters
        )

    def answer_photos(
        self, pairs: pd.DataFrame, queries: Sequence[str], probability: np.ndarray | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The per-photo answers of ``queries`` (:meth:`answers.PhotoAnswer.answer`) over the
        candidates of the head's shortlist; ``probability``: the pairs' (default: the head's)."""
        if self.answer is None:
            raise ValueError("the fused head has no per-photo answer: fit the head again")
        probability = self.probability(pairs) if probability is None else probability
        short = self.in_shortlist(pairs)
        return self.answer.answer(pairs[short], probability[short], queries)

    def probability(self, pairs: pd.DataFrame) -> np.ndarray:
        """(pairs,) the probability that each pair shows one animal, standardised over each
        query's candidates within the head's shortlist (pairs made with a longer one keep the
        probabilities of those candidates)."""
        return self.fusion.probability(pairs, self.settings.shortlist)

    def in_shortlist(self, pairs: pd.DataFrame) -> np.ndarray:
        """(pairs,) bool: the candidates the head answers with (its shortlist's)."""
        return _in_shortlist(pairs, self.settings.shortlist).to_numpy()

    def rank(self, pairs: pd.DataFrame) -> dict[str, list[tuple[str, float]]]:
        """Each query's candidates (individual, probability), best first: the head's own
        (within its shortlist), then any listed beyond it, each by probability."""
        probability = self.probability(pairs)
        beyond = ~self.in_shortlist(pairs)
        if not beyond.any():
            return ranked_candidates(pairs, probability)
        short = ranked_candidates(pairs[~beyond], probability[~beyond])
        extra = ranked_candidates(pairs[beyond], probability[beyond])
        return {q: short.get(q, []) + extra.get(q, []) for q in dict.fromkeys(pairs["query"])}

    def threshold_for_precision(self, precision: float) -> float:
        """The lowest threshold whose known verdict had ``precision`` on validation
        (:func:`threshold_for_precision`)."""
        if not self.known_precision_curve:
            raise ValueError("no known_precision_curve (notebook 04 of this version writes it)")
        return threshold_for_precision(self.known_precision_curve, precision)

    def named_precision(self, precision: float) -> dict:
        """The threshold at which the named whale was right for ``precision`` of the
        validation photos called known, with its Wilson lower bound (:func:`named_precision`)."""
        if not self.known_precision_curve:
            raise ValueError("no known_precision_curve (notebook 04 of this version writes it)")
        return named_precision(self.known_precision_curve, precision)

    def record(self) -> dict:
        """What ``scores.json`` holds of the head (read back by :meth:`load`)."""
        return {
            "local_matching": dataclasses.asdict(self.settings),
            "threshold": self.threshold,
            "verified_inliers": self.verified_inliers,
            "known_precision_curve": list(self.known_precision_curve),
            "photo_answer": None if self.answer is None else self.answer.to_json(),
            "encounter_answer": (
                None if self.encounter_answer is None else self.encounter_answer.to_json()
            ),
        }

    def save(self, folder: str | Path) -> None:
        """Write ``fusion.json`` into ``folder`` (its ``scores.json`` is the head's
        predictions', written with :meth:`record` by ``heads.write_predictions``)."""
        outputs.write_json(Path(folder) / FUSION_FILE, self.fusion.to_json())

    @classmethod
    def load(cls, folder: str | Path) -> FusedHead:
        """The head saved in ``folder`` (``fusion.json`` and ``scores.json``), every value
        checked: a file that is not this version's, or holds values out of range, is refused
        with a ValueError naming it (FileNotFoundError when ``fusion.json`` is missing)."""
        folder = Path(folder)
        path = folder / FUSION_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: the run has no fused head (notebook 04 with local_matching)"
            )
        fusion = Fusion.from_json(outputs.read_json(path, kind=None), str(path))
        scores = outputs.read_scores(folder)
        source = folder / outputs.SCORES
        try:
            settings = LocalSettings.from_parameter(scores.get("local_matching"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from None
        if settings is None:
            raise ValueError(f"{source}: no local_matching settings")
        threshold = scores.get("threshold")
        if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
            raise ValueError(
                f"{source}: threshold must be a probability in [0, 1], got {threshold!r}"
            )
        verified = scores.get("verified_inliers")
        if verified is not None and not (isinstance(verified, int) and verified >= 1):
            raise ValueError(
                f"{source}: verified_inliers must be null or a count >= 1, got {verified!r}"
            )
        curve = scores.get("known_precision_curve") or []
        if not isinstance(curve, list) or not all(_is_curve_point(p) for p in curve):
            raise ValueError(
                f"{source}: known_precision_curve must be a list of thresholds and precisions"
            )
        if scores.get("photo_answer") is None:
            raise ValueError(
                f"{source}: no photo_answer (the per-photo answer): the fused head is of an "
                "older version; run notebook 04 again"
            )
        answer = answers.PhotoAnswer.from_json(scores["photo_answer"], f"{source}: photo_answer")
        by_encounter = scores.get("encounter_answer")
        if by_encounter is not None:
            by_encounter = EncounterAnswer.from_json(by_encounter, f"{source}: encounter_answer")
        return cls(fusion, settings, float(threshold), verified, tuple(curve), answer, by_encounter)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_curve_point(point) -> bool:
    return (
        isinstance(point, dict)
        and _is_number(point.get("threshold"))
        and all(point.get(key) is None or _is_number(point.get(key)) for key in CURVE_SHARES)
        and all(
            isinstance(point.get(key, 0), int) and point.get(key, 0) >= 0 for key in CURVE_COUNTS
        )
    )


CURVE_SHARES = ("precision", "recall", "right")
CURVE_COUNTS = ("called", "named_right")


def local_output_files(settings: LocalSettings | None) -> list[str]:
    """The files :func:`write_fused_head` writes, relative to the notebook's folder ([]
    without it)."""
    if settings is None:
        return []
    names = (*LOCAL_OUTPUTS, local_features.CACHE_FILE)
    return [f"{LOCAL_FOLDER}/{name}" for name in names]


def write_fused_head(
    split, embeddings: dict, out_dir, settings: LocalSettings, member: str | None = None
) -> dict:
    """Notebook 04's fused head: local features of every photo (cached in ``out_dir``),
    candidate pairs for validation and test, the head calibrated on validation
    (:meth:`FusedHead.calibrate`). Writes ``LOCAL_OUTPUTS`` into ``out_dir`` (a blend
    member: ``scores.json`` as every head's); returns the scores."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = matching.split_features(
        split, settings.features, out_dir / local_features.CACHE_FILE
    )
    pairs = {
        part: matching.part_pairs(split, part, features, embeddings, settings)
        for part in ("valid", "test")
    }
    for part, frame in pairs.items():
        frame.to_csv(out_dir / f"pairs_{part}.csv", index=False)
    queries = {part: list(split.frame(part)["image"]) for part in ("valid", "test")}
    padding = {part: split.frequent_ids(part) for part in ("valid", "test")}
    truth = dict(zip(queries["valid"], split.truth("valid", queries["valid"]), strict=True))
    head, crossed = FusedHead.calibrate(
        pairs["valid"], truth, settings, padding["valid"], encounters=split.encounters("valid")
    )
    head.save(out_dir)
    ranked = {"valid": ranked_candidates(pairs["valid"], crossed), "test": head.rank(pairs["test"])}
    results = {}
    for part in ("valid", "test"):
        lists = predictions(ranked[part], queries[part], head.threshold, padding[part])
        scores = np.array(
            [
                _list_scores(ranked[part].get(q, []), labels)
                for q, labels in zip(queries[part], lists, strict=True)
            ]
        )
        results[part] = (lists, scores)
    figure = plot_calibration(crossed, same_animal(pairs["valid"], truth), ranked["valid"], truth)
    figure.savefig(out_dir / "calibration.png", dpi=110)
    tier = pseudo_labels(pairs["test"], head.verified_inliers, split.encoding.individual_ids)
    tier.to_csv(out_dir / PSEUDO_LABELS_FILE, index=False)
    calibration = write_answers(split, head, pairs, crossed, out_dir)
    record = {
        **head.record(),
        "valid_known_top1": known_accuracy(ranked["valid"], truth, 1),
        "valid_auc": known_vs_new_auc(ranked["valid"], truth),
        "test_verified_photos": len(tier),  # PSEUDO_LABELS_FILE's rows
        **calibration,
        **({"member": f"{member} local"} if member else {}),
    }
    return heads.write_predictions(split, out_dir, results["valid"], results["test"], record)


def write_answers(split, head: FusedHead, pairs: dict, crossed: np.ndarray, out_dir: Path) -> dict:
    """The per-photo answers of validation (cross-fitted) and test, ``answers_valid.csv`` and
    ``answers_test.csv`` (``answers.ANSWER_COLUMNS``; where the head answers by encounter and
    the part has encounters, also each photo's ``encounter`` and its ``encounter_answer``,
    ``encounter_p_answer``, ``encounter_p_new``), and their reliability diagrams
    (``reliability.png``); returns their calibration (``answer_calibration``,
    ``encounter_calibration`` by part; None for test without a solution)."""
    queries = {part: list(split.frame(part)["image"]) for part in pairs}
    truths = {}
    for part in pairs:
        labels = split.truth(part, queries[part])
        truths[part] = None if labels is None else dict(zip(queries[part], labels, strict=True))
    short = head.in_shortlist(pairs["valid"])
    photos = {
        "valid": cross_fitted_answers(pairs["valid"][short], crossed[short], truths["valid"]),
        "test": head.answer_photos(pairs["test"], queries["test"])[1],
    }
    by_encounter, encounters = {}, {part: split.encounters(part) for part in pairs}
    if head.encounter_answer is not None:
        by_encounter["valid"] = cross_fitted_encounter_answers(
            pairs["valid"][short], crossed[short], truths["valid"], encounters["valid"],
            head.encounter_answer.rule,
        )  # fmt: skip
        if encounters["test"]:
            by_encounter["test"] = head.answer_encounters(
                pairs["test"], queries["test"], encounters["test"]
            )
    for part, frame in photos.items():
        if part in by_encounter:
            encounter = by_encounter[part]
            frame = frame.assign(
                encounter=[encounters[part].get(q, "") for q in frame["query"]],
                encounter_answer=encounter["answer"].to_numpy(),
                encounter_p_answer=encounter["p_answer"].to_numpy(),
                encounter_p_new=encounter["p_new"].to_numpy(),
            )
        frame.to_csv(out_dir / f"answers_{part}.csv", index=False)
    titles = {"valid": "validation (cross-fitted)", "test": "test"}
    figure = answers.plot_reliability(
        {titles[part]: (photos[part], truths[part]) for part in photos if truths[part] is not None}
    )
    figure.savefig(out_dir / "reliability.png", dpi=110)

    def calibration(frames: dict) -> dict:
        return {
            part: None if truths[part] is None else answers.answer_calibration(frame, truths[part])
            for part, frame in frames.items()
        }

    record = {"answer_calibration": calibration(photos)}
    if by_encounter:
        record["encounter_calibration"] = calibration(by_encounter)
    return record


def _list_scores(candidates: list[tuple[str, float]], labels: list[str]) -> list[float]:
    """The probability of each label of a list (a new individual's: 1 - the best candidate's)."""
    score_of = dict(candidates)
    best = candidates[0][1] if candidates else 0.0
    return [1.0 - best if label == NEW_INDIVIDUAL else score_of.get(label, 0.0) for label in labels]


def plot_calibration(
    probability: np.ndarray, same: np.ndarray, ranked: dict, truth: dict, bins: int = 10
):
    """Two panels: the reliability diagram (observed same-animal share per probability bin)
    and the ROC of the best candidate's probability telling known photos from new ones."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    observed, predicted = calibration_curve(same, probability, n_bins=bins, strategy="uniform")
    left.plot([0, 1], [0, 1], color="grey", linestyle=":")
    left.plot(predicted, observed, marker="o")
    left.set(xlabel="predicted probability (cross-fitted)", ylabel="same animal, observed share",
             title="Reliability, validation pairs")  # fmt: skip
    queries = list(truth)
    best = [ranked[q][0][1] if ranked.get(q) else 0.0 for q in queries]
    known = [truth[q] != NEW_INDIVIDUAL for q in queries]
    if 0 < sum(known) < len(known):
        false_positive, true_positive, _ = roc_curve(known, best)
        right.plot(false_positive, true_positive)
    right.plot([0, 1], [0, 1], color="grey", linestyle=":")
    right.set(xlabel="new photos called known", ylabel="known photos called known",
              title=f"Known vs new, AUC {known_vs_new_auc(ranked, truth):.3f}")  # fmt: skip
    figure.tight_layout()
    return figure
