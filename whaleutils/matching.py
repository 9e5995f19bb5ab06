"""Evidence per (query photo, candidate individual) from the embedding and from local features,
fused into a calibrated probability that they are the same animal.

The table of candidate pairs is the interface (one row per query and candidate individual)::

    query  individual  similarity  similarity_rank  lnbnn  lnbnn_rank  inliers  matches  photo

``similarity``: the best cosine similarity between the query's embedding and a gallery photo of
that individual; ``lnbnn``: its LNBNN score over all gallery descriptors
(``local_features.DescriptorIndex``); ranks start at 1 within the query; ``inliers`` and
``matches``: the geometric check (``local_features.verify``) against the individual's best
gallery photo, whose gallery row is ``photo``. A query's candidates are the union of its
``shortlist`` best individuals by each score, so that either opinion can bring the right one.

:func:`fit_fusion` fits a logistic regression on validation pairs (scikit-learn) and
:func:`fused_probability` applies it: a probability per pair, calibrated on validation, that
ranks the candidates and, through its maximum per query, decides ``new_individual``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whaleutils import local_features
from whaleutils.metrics import NEW_INDIVIDUAL

PAIR_COLUMNS = [
    "query", "individual", "similarity", "similarity_rank", "lnbnn", "lnbnn_rank",
    "inliers", "matches", "photo",
]  # fmt: skip
FUSION_FEATURES = ("similarity", "lnbnn_z", "log_inliers", "log_similarity_rank", "log_lnbnn_rank")


def individual_maxima(
    scores: np.ndarray, labels: Sequence[str], individuals: Sequence[str]
) -> np.ndarray:
    """Per query and individual the largest of ``scores`` (q, g) over that individual's gallery
    columns (``labels`` (g,)); (q, n) in ``individuals``' order, -inf where it has none."""
    labels = np.asarray(labels, dtype=str)
    position = {name: i for i, name in enumerate(individuals)}
    codes = np.array([position[label] for label in labels], np.int64)
    result = np.full((scores.shape[0], len(individuals)), -np.inf)
    for code in np.unique(codes):
        result[:, code] = scores[:, codes == code].max(axis=1)
    return result


def embedding_similarities(
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    individuals: Sequence[str],
    own_rows: np.ndarray | None = None,
) -> np.ndarray:
    """(q, n) best cosine similarity of each query (q, d) to each individual's gallery photos
    (g, d), L2-normalised rows; ``own_rows`` (q,): a gallery row each query must not find
    (its own photo), -1 for none."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if own_rows is not None:
        held = np.flatnonzero(np.asarray(own_rows) >= 0)
        scores[held, np.asarray(own_rows)[held]] = -np.inf
    return individual_maxima(scores, gallery_labels, individuals)


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of each column within its row, highest first (ties in column order)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[1] + 1)[None], axis=1)
    return ranks


def candidate_pairs(
    query_names: Sequence[str],
    query_features: Sequence[local_features.PhotoFeatures],
    gallery_features: Sequence[local_features.PhotoFeatures],
    gallery_labels: Sequence[str],
    similarities: np.ndarray | None = None,
    own_rows: np.ndarray | None = None,
    shortlist: int = 20,
    index: local_features.DescriptorIndex | None = None,
    lnbnn_k: int = 1,
    verify_photos: int = 10,
    **verify_options,
) -> pd.DataFrame:
    """The candidate pairs of each query (``PAIR_COLUMNS``).

    ``similarities`` (q, n): :func:`embedding_similarities` over ``index.individuals`` (None:
    local features alone); ``own_rows`` (q,): the gallery photo each query must not find;
    ``verify_photos``: how many of a candidate's gallery photos are checked geometrically (its
    best by embedding similarity, else by order), the most inliers kept."""
    gallery_labels = np.asarray(gallery_labels, dtype=str)
    if index is None:
        index = local_features.DescriptorIndex(gallery_features, gallery_labels)
    individuals = index.individuals
    own = np.full(len(query_names), -1) if own_rows is None else np.asarray(own_rows)
    rows_of = {name: np.flatnonzero(gallery_labels == name) for name in individuals}
    lnbnn = np.stack(
        [
            index.lnbnn(features, lnbnn_k, [own[i]] if own[i] >= 0 else [])
            for i, features in enumerate(query_features)
        ]
    ) if len(query_features) else np.zeros((0, len(individuals)))  # fmt: skip
    lnbnn_rank = _ranks(lnbnn)
    if similarities is not None:
        similarity_rank = _ranks(similarities)
    records = []
    for i, name in enumerate(query_names):
        chosen = set(np.argsort(-lnbnn[i], kind="stable")[:shortlist])
        if similarities is not None:
            chosen |= set(np.argsort(-similarities[i], kind="stable")[:shortlist])
        for code in sorted(chosen):
            photos = [row for row in rows_of[individuals[code]] if row != own[i]]
            if not photos:
                continue
            best, best_row = None, -1
            for row in photos[:verify_photos]:
                check = local_features.verify(
                    query_features[i], gallery_features[row], **verify_options
                )
                if best is None or check.inliers > best.inliers:
                    best, best_row = check, row
            records.append(
                (
                    name, individuals[code],
                    np.nan if similarities is None else similarities[i, code],
                    0 if similarities is None else int(similarity_rank[i, code]),
                    float(lnbnn[i, code]), int(lnbnn_rank[i, code]),
                    best.inliers, best.matches, best_row,
                )
            )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)


def fusion_features(pairs: pd.DataFrame) -> np.ndarray:
    """(pairs, len(FUSION_FEATURES)) inputs of the fusion model: the similarity, the LNBNN score
    standardised within its query (scores differ in scale between photos), log(1 + inliers)
    and the log ranks. Without similarities (NaN) those columns are 0."""
    grouped = pairs.groupby("query")["lnbnn"]
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

    def probability(self, pairs: pd.DataFrame) -> np.ndarray:
        """(pairs,) the probability that each pair shows one animal."""
        logit = ((fusion_features(pairs) - self.mean) / self.scale) @ self.coefficients
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
    def from_json(cls, payload: dict, source: str = "fusion") -> Fusion:
        """Raises naming ``source`` if the features are not this version's."""
        if tuple(payload.get("features", ())) != FUSION_FEATURES:
            raise ValueError(
                f"{source}: fusion features {payload.get('features')} are not "
                f"{list(FUSION_FEATURES)}; fit it again"
            )
        return cls(
            np.asarray(payload["mean"], np.float64),
            np.asarray(payload["scale"], np.float64),
            np.asarray(payload["coefficients"], np.float64),
            float(payload["intercept"]),
        )


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


def verified_inliers(
    pairs: pd.DataFrame, truth: dict[str, str], precision: float = 0.98
) -> int | None:
    """The smallest inlier count at which a query's best candidate by inliers is right at
    least ``precision`` of the time on these (validation) pairs, counting every query (new
    ones can only be wrong): the "verified" tier a reviewer may accept in bulk. None if no
    count reaches it."""
    best = pairs.sort_values(["query", "inliers"], ascending=[True, False]).drop_duplicates("query")
    right = best["individual"].to_numpy() == best["query"].map(truth).to_numpy()
    inliers = best["inliers"].to_numpy()
    for count in np.unique(inliers):
        accepted = inliers >= count
        if count > 0 and accepted.any() and right[accepted].mean() >= precision:
            return int(count)
    return None


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
