"""The per-photo answer: what a researcher acts on, "this is whale X" or "this is a new animal",
as probabilities of one photo that sum to 1.

The fused head scores each (photo, candidate whale) pair on its own; a photo's pairs do not sum
to anything, and the best of ~30 pair probabilities is biased upward as a "known" verdict. A
:class:`PhotoAnswer` is a second stage fitted on validation photos, on the fused head's
(cross-fitted) pair probabilities:

- a multinomial logistic regression on per-photo features (:data:`PHOTO_FEATURES`: the best
  candidate's logit, its gap to the second, the inliers of the best and the most inliers, the
  nearest embedding similarity) gives each photo three outcomes: its animal is one of its
  candidates (``listed``), a catalogued whale the candidates missed (``other``), or a new
  animal (``new``);
- within ``listed``, a softmax of the candidates' pair logits at a fitted ``temperature`` shares
  that probability among them.

So for a photo, ``p_new + p_other + sum(p_candidate) == 1``. The share of new photos is
validation's (``new_share``); :meth:`PhotoAnswer.with_new_share` moves it to one the user gives
(Bayes' rule on the prior: the features' likelihoods are kept). :func:`reliability`,
:func:`expected_calibration_error` and :func:`brier_score` measure how well the answers are
calibrated; scikit-learn's ``calibration_curve`` and ``brier_score_loss`` are the references
they are tested against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import NEW_INDIVIDUAL

PHOTO_FEATURES = (
    "best_logit", "gap_logit", "log_inliers_best", "log_inliers_most", "log_inliers_second",
    "similarity", "lnbnn_max",
)  # fmt: skip
OUTCOMES = ("listed", "other", "new")  # the photo's animal: a candidate, another known, new
EPSILON = 1e-6  # probabilities are clipped to [EPSILON, 1 - EPSILON] before their logit
TEMPERATURE_RANGE = (0.05, 20.0)
ANSWER_COLUMNS = ["query", "answer", "p_answer", "best", "p_best", "p_new", "p_other"]


def logit(probability) -> np.ndarray:
    """The log-odds of probabilities clipped to [EPSILON, 1 - EPSILON]."""
    p = np.clip(np.asarray(probability, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def _candidate_frame(pairs: pd.DataFrame, probability: np.ndarray) -> pd.DataFrame:
    """The pairs with their logit, each query's candidates best first (ties by id)."""
    frame = pairs[["query", "individual", "similarity", "inliers", "lnbnn"]].assign(
        logit=logit(probability)
    )
    return frame.sort_values(["query", "logit", "individual"], ascending=[True, False, True])


def photo_features(
    pairs: pd.DataFrame, probability: np.ndarray, queries: Sequence[str]
) -> np.ndarray:
    """(queries, len(PHOTO_FEATURES)): per photo, the best candidate's pair logit, its gap to
    the second best's (0 with one candidate), log(1 + inliers) of the best candidate, the most
    and the second most any candidate has, the best embedding similarity (NaN: 0) and the best
    raw LNBNN score. A photo without candidates gets the logit of EPSILON and zeros."""
    frame = _candidate_frame(pairs, probability)
    grouped = frame.groupby("query", sort=False)
    first = grouped.nth(0).set_index("query")
    second = grouped.nth(1).set_index("query")["logit"]
    table = pd.DataFrame(
        {
            "best_logit": first["logit"],
            "gap_logit": (first["logit"] - second).fillna(0.0),
            "log_inliers_best": np.log1p(first["inliers"]),
            "log_inliers_most": np.log1p(grouped["inliers"].max()),
            "log_inliers_second": np.log1p(grouped["inliers"].apply(_second_largest)),
            "similarity": grouped["similarity"].max().fillna(0.0),
            "lnbnn_max": grouped["lnbnn"].max(),
        }
    )
    empty = {"best_logit": float(logit(EPSILON))}
    table = table.reindex(list(queries)).fillna(empty).fillna(0.0)
    return table[list(PHOTO_FEATURES)].to_numpy(np.float64)


def _second_largest(values: pd.Series) -> float:
    """The second largest value (0 with fewer than two)."""
    return float(np.sort(values.to_numpy())[-2]) if len(values) > 1 else 0.0


def outcomes(pairs: pd.DataFrame, truth: dict[str, str], queries: Sequence[str]) -> np.ndarray:
    """(queries,) each photo's outcome as an index into :data:`OUTCOMES`: 0 its individual is
    among its candidates, 1 it is a catalogued one that is not, 2 it is ``new_individual``."""
    listed = set(zip(pairs["query"], pairs["individual"], strict=True))
    result = []
    for query in queries:
        individual = truth[query]
        if individual == NEW_INDIVIDUAL:
            result.append(2)
        else:
            result.append(0 if (query, individual) in listed else 1)
    return np.array(result, dtype=int)


@dataclass(frozen=True)
class PhotoAnswer:
    """A fitted per-photo answer, kept as plain numbers (saved as JSON, never a pickle): the
    standardisation (``mean``, ``scale`` (f,)), the multinomial regression's ``coefficients``
    (outcomes, f) and ``intercepts`` (outcomes,) over :data:`OUTCOMES` (an outcome validation
    never had: -inf intercept, probability 0), the candidates' softmax ``temperature``, and the
    outcome shares it was fitted with (``shares``, validation's) and answers with
    (``answer_shares``: the same unless :meth:`with_new_share` moved them)."""

    mean: np.ndarray
    scale: np.ndarray
    coefficients: np.ndarray
    intercepts: np.ndarray
    temperature: float
    shares: tuple[float, float, float]
    answer_shares: tuple[float, float, float] | None = None

    @property
    def new_share(self) -> float:
        """The share of new photos the answers assume."""
        return float((self.answer_shares or self.shares)[2])

    def outcome_probabilities(self, features: np.ndarray) -> np.ndarray:
        """(photos, 3) P(listed), P(other), P(new) of each photo's :func:`photo_features`."""
        scores = ((features - self.mean) / self.scale) @ self.coefficients.T + self.intercepts
        if self.answer_shares is not None:
            moved, fitted = np.asarray(self.answer_shares), np.asarray(self.shares)
            with np.errstate(divide="ignore", invalid="ignore"):  # log(0): masked
                shift = np.where(fitted > 0, np.log(moved) - np.log(fitted), 0.0)
            scores = scores + shift
        scores = scores - scores.max(axis=1, keepdims=True)
        weights = np.exp(scores)
        return weights / weights.sum(axis=1, keepdims=True)

    def answer(
        self, pairs: pd.DataFrame, probability: np.ndarray, queries: Sequence[str]
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The answer of each photo of ``queries`` from its pairs and their fused
        ``probability``: ``(candidates, photos)``. ``candidates``: one row per pair (``query``,
        ``individual``, ``p``: P(the photo shows it)), best first; ``photos``: one row per
        photo (:data:`ANSWER_COLUMNS`): the most probable of its candidates and new
        (``answer``, ``p_answer``), the best candidate (``best``, "" without candidates) and
        its ``p_best``, ``p_new`` and ``p_other``
        (a catalogued whale the candidates missed). Per photo, ``p_new + p_other`` and its
        candidates' ``p`` sum to 1."""
        queries = list(queries)
        outcome = self.outcome_probabilities(photo_features(pairs, probability, queries))
        listed = dict(zip(queries, outcome[:, 0], strict=True))
        frame = _candidate_frame(pairs, probability)
        scaled = frame["logit"] / self.temperature
        scaled = scaled - scaled.groupby(frame["query"]).transform("max")
        weight = np.exp(scaled)
        share = weight / weight.groupby(frame["query"]).transform("sum")
        candidates = pd.DataFrame(
            {
                "query": frame["query"].to_numpy(),
                "individual": frame["individual"].to_numpy(),
                "p": (share * frame["query"].map(listed)).to_numpy(),
            }
        )
        best = candidates.drop_duplicates("query").set_index("query")
        rows = []
        for query, (_, p_other, p_new) in zip(queries, outcome, strict=True):
            if query in best.index:
                individual, p_best = best.at[query, "individual"], float(best.at[query, "p"])
            else:
                individual, p_best = "", 0.0
            if individual and p_best >= p_new:
                answer, p_answer = individual, p_best
            else:
                answer, p_answer = NEW_INDIVIDUAL, float(p_new)
            rows.append((query, answer, p_answer, individual, p_best, float(p_new), float(p_other)))
        return candidates, pd.DataFrame(rows, columns=ANSWER_COLUMNS)

    def with_new_share(self, share: float) -> PhotoAnswer:
        """The same answer for catalogues where a share ``share`` of the photos are of new
        animals (validation's known photos keep their listed / other ratio)."""
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise ValueError(f"the new share must be a number in (0, 1), got {share!r}")
        if not 0.0 < share < 1.0:
            raise ValueError(f"the new share must be in (0, 1), got {share}")
        listed, other, new = self.shares
        if new <= 0.0 or new >= 1.0:
            raise ValueError(
                f"validation had a new share of {new}: the answer cannot be moved to another"
            )
        known = listed + other
        moved = (listed / known * (1 - share), other / known * (1 - share), float(share))
        return PhotoAnswer(
            self.mean, self.scale, self.coefficients, self.intercepts, self.temperature,
            self.shares, moved,
        )  # fmt: skip

    def to_json(self) -> dict:
        return {
            "features": list(PHOTO_FEATURES),
            "outcomes": list(OUTCOMES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coefficients": self.coefficients.tolist(),
            "intercepts": [None if math.isinf(v) else float(v) for v in self.intercepts],
            "temperature": float(self.temperature),
            "shares": list(self.shares),
        }

    @classmethod
    def from_json(cls, payload, source: str = "answer") -> PhotoAnswer:
        """Raises ValueError naming ``source`` unless ``payload`` is an answer of this
        version's features and outcomes, with finite numbers where numbers belong."""
        if not isinstance(payload, dict):
            raise ValueError(f"{source}: an answer is a JSON object, not {type(payload).__name__}")
        if payload.get("features") != list(PHOTO_FEATURES) or payload.get("outcomes") != list(
            OUTCOMES
        ):
            raise ValueError(f"{source}: the answer is not of this version's features; fit again")
        size = len(PHOTO_FEATURES)
        mean = _numbers(payload.get("mean"), (size,), f"{source}: mean")
        scale = _numbers(payload.get("scale"), (size,), f"{source}: scale")
        coefficients = _numbers(
            payload.get("coefficients"), (len(OUTCOMES), size), f"{source}: coefficients"
        )
        raw = payload.get("intercepts")
        if not isinstance(raw, list) or len(raw) != len(OUTCOMES):
            raise ValueError(f"{source}: intercepts must be {len(OUTCOMES)} numbers or nulls")
        intercepts = _numbers(
            [-np.inf if v is None else v for v in raw], (len(OUTCOMES),), f"{source}: intercepts",
            allow_minus_inf=True,
        )  # fmt: skip
        temperature = _numbers(payload.get("temperature"), (), f"{source}: temperature")
        shares = _numbers(payload.get("shares"), (len(OUTCOMES),), f"{source}: shares")
        if (scale <= 0).any() or temperature <= 0:
            raise ValueError(f"{source}: scales and the temperature must be positive")
        if (shares < 0).any() or not math.isclose(shares.sum(), 1.0, abs_tol=1e-6):
            raise ValueError(f"{source}: shares must be 3 shares summing to 1, got {raw}")
        if np.isinf(intercepts).all() or (np.isinf(intercepts) != (shares == 0)).any():
            raise ValueError(f"{source}: an outcome without intercept must have a share of 0")
        return cls(
            mean, scale, coefficients, intercepts, float(temperature), tuple(map(float, shares))
        )


def _numbers(value, shape: tuple, name: str, allow_minus_inf: bool = False) -> np.ndarray:
    try:
        array = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        array = None
    finite = (
        array is not None and (np.isfinite(array) | (allow_minus_inf & (array == -np.inf))).all()
    )
    if array is None or array.shape != shape or not finite:
        raise ValueError(f"{name} must be finite numbers of shape {shape}, got {str(value)[:80]}")
    return array


def fit_temperature(pairs: pd.DataFrame, probability: np.ndarray, truth: dict[str, str]) -> float:
    """The softmax temperature over each photo's candidate logits that maximises the
    likelihood of the true candidate, on the photos whose individual is among their
    candidates (1.0 when there is no such photo or one candidate each)."""
    from scipy.optimize import minimize_scalar

    frame = _candidate_frame(pairs, probability)
    right = (frame["individual"] == frame["query"].map(truth)).to_numpy()
    has_right = pd.Series(right).groupby(frame["query"].to_numpy()).transform("any").to_numpy()
    frame, right = frame[has_right], right[has_right]
    if not right.any() or frame["query"].value_counts().max() < 2:
        return 1.0
    codes = pd.factorize(frame["query"])[0]
    logits = frame["logit"].to_numpy()

    def loss(log_temperature: float) -> float:
        scaled = logits / math.exp(log_temperature)
        top = np.full(codes.max() + 1, -np.inf)
        np.maximum.at(top, codes, scaled)
        total = np.zeros(codes.max() + 1)
        np.add.at(total, codes, np.exp(scaled - top[codes]))
        normaliser = top + np.log(total)
        return float(-(scaled[right] - normaliser[codes[right]]).sum())

    low, high = (math.log(t) for t in TEMPERATURE_RANGE)
    return float(math.exp(minimize_scalar(loss, bounds=(low, high), method="bounded").x))


def fit_answer(
    pairs: pd.DataFrame, probability: np.ndarray, truth: dict[str, str], c: float = 1.0
) -> PhotoAnswer:
    """Fit a :class:`PhotoAnswer` on (validation) photos: ``truth`` (query -> individual or
    ``new_individual``) names them, ``pairs`` and their fused ``probability`` (cross-fitted,
    as the head's threshold is chosen on) are their candidates. scikit-learn's
    ``LogisticRegression`` (multinomial, L2 with ``c``) fits the outcomes; an outcome no photo
    had gets probability 0 (photos of one outcome only: that outcome, always)."""
    from sklearn.linear_model import LogisticRegression

    queries = list(truth)
    if not queries:
        raise ValueError("fitting the per-photo answer needs validation photos; there are none")
    features = photo_features(pairs, probability, queries)
    outcome = outcomes(pairs, truth, queries)
    present = np.unique(outcome)
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    coefficients = np.zeros((len(OUTCOMES), len(PHOTO_FEATURES)))
    intercepts = np.full(len(OUTCOMES), -np.inf)
    if len(present) == 1:
        intercepts[present] = 0.0
    else:
        model = LogisticRegression(C=c, max_iter=2000).fit((features - mean) / scale, outcome)
        if len(present) == 2:  # scikit-learn fits one logit for two classes: the second's
            coefficients[present[1]] = model.coef_[0]
            intercepts[present] = (0.0, float(model.intercept_[0]))
        else:
            coefficients[:] = model.coef_
            intercepts[:] = model.intercept_
    shares = np.bincount(outcome, minlength=len(OUTCOMES)) / len(outcome)
    temperature = fit_temperature(pairs, probability, truth)
    shares = tuple(map(float, shares))
    return PhotoAnswer(mean, scale, coefficients, intercepts, temperature, shares)


# -------------------------------------------------------------------------- encounters

GROUP_RULES = ("max", "mean", "sum")  # how a group's photos' pair logits add up per whale


def group_pairs(
    pairs: pd.DataFrame, probability: np.ndarray, group_of: dict[str, str], rule: str = "mean"
) -> tuple[pd.DataFrame, np.ndarray]:
    """The pairs of groups of photos (an encounter: photos of one animal) as pairs of one query
    per group, and their probabilities: ``(pairs, probability (pairs,))``, ``query`` the group.

    ``group_of``: photo -> group (photos it does not name stay alone, their own group). Each
    whale listed for any of a group's photos is a candidate of the group; a photo that does
    not list it gives it its lowest pair logit (it was not shortlisted: no better than the
    worst that was). The group's logit for the whale is the ``rule`` (:data:`GROUP_RULES`) of
    its photos' logits: ``max`` (the best photo), ``mean`` (the evidence averaged) or ``sum``
    (added, as if the photos were independent); its similarity, LNBNN score and inliers are
    the photos' best, its ranks the best, its ``photo`` the best photo's by inliers."""
    if rule not in GROUP_RULES:
        raise ValueError(f"rule must be one of {', '.join(GROUP_RULES)}, got {rule!r}")
    frame = pairs.assign(
        logit=logit(probability), group=groups_of(pairs["query"].unique(), group_of)
        .reindex(pairs["query"]).to_numpy(),
    )  # fmt: skip
    lowest = frame.groupby("query")["logit"].min()
    members = frame[["query", "group"]].drop_duplicates()
    wanted = members.merge(frame[["group", "individual"]].drop_duplicates(), on="group")
    full = wanted.merge(frame, on=["query", "group", "individual"], how="left")
    full["logit"] = full["logit"].fillna(full["query"].map(lowest))
    by = full.groupby(["group", "individual"], sort=False)
    aggregate = {"max": by["logit"].max, "mean": by["logit"].mean, "sum": by["logit"].sum}
    best = frame.sort_values("inliers", ascending=False).drop_duplicates(["group", "individual"])
    listed = frame.groupby(["group", "individual"], sort=False)
    grouped = pd.DataFrame({
        "similarity": listed["similarity"].max(),
        "similarity_rank": listed["similarity_rank"].min(),
        "lnbnn": listed["lnbnn"].max(), "lnbnn_rank": listed["lnbnn_rank"].min(),
        "inliers": listed["inliers"].max(), "matches": listed["matches"].max(),
        "photo": best.set_index(["group", "individual"])["photo"],
        "logit": aggregate[rule](),
    }).reset_index().rename(columns={"group": "query"})  # fmt: skip
    values = grouped.pop("logit").to_numpy(np.float64)
    return grouped[list(pairs.columns)], 1.0 / (1.0 + np.exp(-values))


def groups_of(queries, group_of: dict[str, str]) -> pd.Series:
    """query -> its group (its encounter in ``group_of``, else itself), in ``queries``' order;
    raises ValueError where an encounter is named as a photo alone is, so two groups would be
    one."""
    groups = pd.Series({q: group_of.get(q, q) for q in queries}, dtype=object)
    alone = set(q for q in queries if q not in group_of)
    clash = sorted(set(group_of.values()) & alone)
    if clash:
        raise ValueError(
            f"encounter {clash[0]!r} is named as a photo that is not in it: rename the encounter"
        )
    return groups


def group_truth(truth: dict[str, str], group_of: dict[str, str]) -> dict[str, str]:
    """Each group's individual (``truth``: photo -> individual, in photo order; groups in the
    order of their first photo). Raises ValueError naming a group whose photos differ."""
    result: dict[str, str] = {}
    groups = groups_of(list(truth), group_of)
    for photo, individual in truth.items():
        group = groups[photo]
        if result.setdefault(group, individual) != individual:
            raise ValueError(
                f"encounter {group!r} holds photos of {result[group]!r} and of {individual!r}: "
                "an encounter is one animal"
            )
    return result


def photos_of_groups(
    group_answers: pd.DataFrame, queries: Sequence[str], group_of: dict[str, str]
) -> pd.DataFrame:
    """Each photo of ``queries`` with its group's answer (rows of ``group_answers``, one per
    group, :data:`ANSWER_COLUMNS`), ``query`` the photo's again."""
    by_group = group_answers.set_index("query")
    groups = groups_of(list(queries), group_of).to_numpy()
    return by_group.loc[groups].reset_index(drop=True).assign(query=list(queries))[ANSWER_COLUMNS]


# ------------------------------------------------------------------------- calibration


def reliability(confidence, correct, bins: int = 10) -> pd.DataFrame:
    """The reliability table of ``confidence`` (predicted probabilities) against ``correct``
    (0/1 outcomes): one row per non-empty bin of ``bins`` equal-width bins on [0, 1] (closed
    on the right, as scikit-learn's ``calibration_curve``: 0.5 of 2 bins is in the first), with
    its ``low`` and ``high`` edges, ``count``, ``confidence`` (mean predicted) and
    ``observed`` (share correct)."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError("confidence and correct must be two vectors of one length")
    if ((confidence < 0) | (confidence > 1)).any():
        raise ValueError("confidence must be probabilities in [0, 1]")
    which = np.searchsorted(np.linspace(0.0, 1.0, bins + 1)[1:-1], confidence)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                (b / bins, (b + 1) / bins, int(inside.sum()),
                 float(confidence[inside].mean()), float(correct[inside].mean()))
            )  # fmt: skip
    return pd.DataFrame(rows, columns=["low", "high", "count", "confidence", "observed"])


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """The count-weighted mean gap between mean confidence and observed share over
    :func:`reliability`'s bins (NaN without predictions)."""
    table = reliability(confidence, correct, bins)
    if table.empty:
        return float("nan")
    gaps = (table["confidence"] - table["observed"]).abs()
    return float((gaps * table["count"]).sum() / table["count"].sum())


def brier_score(confidence, correct) -> float:
    """The mean squared difference between probabilities and 0/1 outcomes."""
    confidence = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    return float(np.mean((confidence - correct) ** 2)) if len(confidence) else float("nan")


def answer_calibration(
    photos: pd.DataFrame, truth: dict[str, str], bins: int = 10
) -> dict[str, float | int]:
    """How well a :meth:`PhotoAnswer.answer`'s ``photos`` are calibrated against ``truth``:
    the top answer's (``answer_*``: is the answer, a whale or new, right at ``p_answer``?) and
    the new verdict's (``new_*``: is the photo new at ``p_new``?) Brier score and ECE, the
    known-vs-new AUC of ``1 - p_new``, the share of answers right and of known photos whose
    best candidate is their whale (``known_top1``, whatever the new verdict)."""
    from sklearn.metrics import roc_auc_score

    true = photos["query"].map(truth)
    right = (photos["answer"] == true).to_numpy()
    new = (true == NEW_INDIVIDUAL).to_numpy()
    p_answer, p_new = photos["p_answer"].to_numpy(), photos["p_new"].to_numpy()
    auc = roc_auc_score(~new, 1 - p_new) if 0 < new.sum() < len(new) else float("nan")
    return {
        "photos": len(photos),
        "answer_right": float(right.mean()) if len(right) else float("nan"),
        "answer_brier": brier_score(p_answer, right),
        "answer_ece": expected_calibration_error(p_answer, right, bins),
        "new_brier": brier_score(p_new, new),
        "new_ece": expected_calibration_error(p_new, new, bins),
        "known_vs_new_auc": float(auc),
        "known_top1": float((photos["best"] == true)[~new].mean())
        if (~new).any()
        else float("nan"),
    }


def plot_reliability(parts: dict[str, tuple[pd.DataFrame, dict]], bins: int = 10):
    """Reliability diagrams of per-photo answers, one column per part (``name -> (photos,
    truth)``, e.g. validation cross-fitted and test): the top answer's (top row) and the new
    verdict's (bottom), each bin's count written by its point, ECE and Brier in the title."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(parts), figsize=(4.5 * len(parts), 8), squeeze=False)
    for column, (name, (photos, truth)) in enumerate(parts.items()):
        true = photos["query"].map(truth)
        scores = answer_calibration(photos, truth, bins)
        panels = (
            ("answer", photos["p_answer"], photos["answer"] == true, "top answer right"),
            ("new", photos["p_new"], true == NEW_INDIVIDUAL, "photo is new"),
        )
        for row, (key, confidence, correct, what) in enumerate(panels):
            axis = axes[row][column]
            table = reliability(confidence.to_numpy(), correct.to_numpy(), bins)
            axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
            axis.plot(table["confidence"], table["observed"], marker="o")
            for point in table.itertuples():
                axis.annotate(str(point.count), (point.confidence, point.observed),
                              textcoords="offset points", xytext=(4, -10), fontsize=8)  # fmt: skip
            axis.set(xlim=(0, 1), ylim=(0, 1), xlabel=f"predicted P({what})",
                     ylabel="observed share", title=f"{name}: ECE {scores[f'{key}_ece']:.3f}, "
                     f"Brier {scores[f'{key}_brier']:.3f}")  # fmt: skip
    figure.tight_layout()
    return figure
