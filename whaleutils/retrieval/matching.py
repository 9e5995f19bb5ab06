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
:meth:`Fusion.probability` applies it: a probability per pair, calibrated on validation, that
ranks the candidates and, through its maximum per query, decides ``new_individual``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import metrics, outputs
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.datasets import data
from whaleutils.images import photos
from whaleutils.retrieval import heads, local_features

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


def photo_similarities(
    queries: np.ndarray, gallery: np.ndarray, own_rows: np.ndarray | None = None
) -> np.ndarray:
    """(q, g) cosine similarity of each query (q, d) to each gallery photo (g, d), rows
    L2-normalised; ``own_rows`` (q,) or (q, r): the gallery rows each query must not find (its
    own photo, its encounter's: ``Split.own_gallery_rows``), -1 for none, set to -inf."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    if own_rows is not None:
        own = np.asarray(own_rows).reshape(len(scores), -1)
        query, column = np.nonzero(own >= 0)
        scores[query, own[query, column]] = -np.inf
    return scores


def embedding_similarities(
    queries: np.ndarray,
    gallery: np.ndarray,
    gallery_labels: Sequence[str],
    individuals: Sequence[str],
    own_rows: np.ndarray | None = None,
) -> np.ndarray:
    """(q, n) best cosine similarity of each query to each individual's gallery photos
    (:func:`photo_similarities`, per individual in ``individuals``' order)."""
    scores = photo_similarities(queries, gallery, own_rows)
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
    photo_scores: np.ndarray | None = None,
    **verify_options,
) -> pd.DataFrame:
    """The candidate pairs of each query (``PAIR_COLUMNS``).

    ``similarities`` (q, n): :func:`embedding_similarities` over ``index.individuals`` (None:
    local features alone); ``own_rows`` (q,) or (q, r): the gallery photos each query must not
    find (-1: none);
    ``verify_photos``: how many of a candidate's gallery photos are checked geometrically, the
    most inliers kept: its best by ``photo_scores`` (q, g), e.g. :func:`photo_similarities`,
    else the first in gallery order."""
    gallery_labels = np.asarray(gallery_labels, dtype=str)
    if index is None:
        index = local_features.DescriptorIndex(gallery_features, gallery_labels)
    individuals = index.individuals
    own = np.full((len(query_names), 1), -1) if own_rows is None else np.asarray(own_rows)
    own = [set(row[row >= 0].tolist()) for row in own.reshape(len(query_names), -1)]
    rows_of = {name: np.flatnonzero(gallery_labels == name) for name in individuals}
    lnbnn = np.stack(
        [
            index.lnbnn(features, lnbnn_k, sorted(own[i]))
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
            photos = [row for row in rows_of[individuals[code]] if row not in own[i]]
            if not photos:
                continue
            if photo_scores is not None:
                photos = sorted(photos, key=lambda row: -photo_scores[i, row])
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


def known_precision_curve(ranked: dict, truth: dict[str, str], grid=None) -> list[dict]:
    """The "known" verdict at each threshold of ``grid`` (default 0.00-1.00 by 0.01): the
    queries whose best candidate scores at least the threshold are called known.
    ``precision``: the share of them that are known individuals; ``recall``: the share of
    known queries called known; ``right``: the share of them whose best candidate is their
    individual (precision and right None where no query is called known: the curve is saved
    as JSON)."""
    grid = np.round(np.linspace(0, 1, 101), 2) if grid is None else grid
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
            }
        )
    return curve


def threshold_for_precision(curve: Sequence[dict], precision: float) -> float:
    """The lowest threshold of a :func:`known_precision_curve` from which on the "known"
    verdict's precision is at least ``precision`` (at it and every higher threshold that
    calls any photo known).

    Raises
    ------
    ValueError
        When no threshold reaches it, naming the highest precision there is.
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got precision={precision}")
    points = sorted((p["threshold"], p["precision"]) for p in curve if p["precision"] is not None)
    chosen = None
    for threshold, reached in reversed(points):
        if reached < precision:
            break
        chosen = threshold
    if chosen is None:
        best = max((reached for _, reached in points), default=float("nan"))
        raise ValueError(
            f"no threshold gives the known verdict a precision of {precision} on validation "
            f"(the highest is {best:.3f})"
        )
    return float(chosen)


# ---------------------------------------------------------------------------- the fused head

LOCAL_FOLDER = "local"  # a trained notebook's fused head, a blend member of its own
FUSION_FILE = "fusion.json"
LOCAL_OUTPUTS = (
    "pairs_valid.csv", "pairs_test.csv", FUSION_FILE, "calibration.png",
    "oof_predictions.csv", "test_predictions.csv", "submission.csv", "scores.json",
)  # fmt: skip


@dataclass(frozen=True)
class LocalSettings:
    """The fused head's settings (notebook 04's ``local_matching`` parameter: a dict of these,
    or True for the defaults)."""

    max_side: int | None = 224
    clahe: bool = False
    shortlist: int = 20
    ratio: float = 0.8
    transform: str = "affine"
    reprojection: float = 5.6
    verify_photos: int = 10
    verified_precision: float = 0.98

    @classmethod
    def from_parameter(cls, value) -> LocalSettings | None:
        if value in (None, False):
            return None
        if value is True:
            return cls()
        if not isinstance(value, dict):
            raise ValueError(f"local_matching must be True, False or a dict, got {value!r}")
        unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"local_matching: unknown setting(s) {unknown}")
        return cls(**value)

    @property
    def features(self) -> local_features.FeatureSettings:
        return local_features.FeatureSettings(max_side=self.max_side, clahe=self.clahe)

    def verify_options(self) -> dict:
        return {"ratio": self.ratio, "transform": self.transform, "reprojection": self.reprojection}


def local_output_files(settings: LocalSettings | None) -> list[str]:
    """The files :func:`fused_head` writes, relative to the notebook's folder ([] without it)."""
    if settings is None:
        return []
    names = (*LOCAL_OUTPUTS, local_features.CACHE_FILE)
    return [f"{LOCAL_FOLDER}/{name}" for name in names]


def split_features(split, settings: local_features.FeatureSettings, cache_path=None) -> dict:
    """Local features of every photo of the split, by part (lists in each part's row order),
    read by ``photos.prepare``, cropped to the boxes the split uses."""

    if split.crop_cache is not None and not split.frames_match_cache:
        raise ValueError(
            "local matching reads the photos themselves, framed as the crop cache "
            f"{split.crop_cache} was, but the split's boxes are not the cache's: pass the "
            "boxes it was written with (boxes=...), or run without the cache"
        )
    cache = local_features.FeatureCache(cache_path, settings)
    result = {}
    for part in ("train", "valid", "test"):
        frame = split.frame(part)
        paths = [split.image_folder(part) / name for name in frame["image"]]
        boxes = (
            [data.parse_box(text) for text in frame["box"]]
            if split.crop_to_box and "box" in frame
            else [None] * len(frame)
        )
        keys = [local_features.photo_key(p, b) for p, b in zip(paths, boxes, strict=True)]
        result[part] = cache.features(
            keys,
            lambda i, paths=paths, boxes=boxes: photos.prepare(
                paths[i], boxes[i], margin=split.box_margin
            ),
        )
    cache.save()
    return result


def part_pairs(
    split, part: str, features: dict, embeddings: dict | None, settings: LocalSettings
) -> pd.DataFrame:
    """The candidate pairs of ``part``'s queries against its gallery (``splits.Split``'s
    rules: validation photos never find themselves nor validation-only individuals);
    ``embeddings`` by part, or None for local features alone."""
    held = split._valid_in_gallery(part)
    gallery = features["train"] + [f for f, h in zip(features["valid"], held, strict=True) if h]
    labels = split.gallery_labels(part).astype(str)
    index = local_features.DescriptorIndex(gallery, labels)
    own = split.own_gallery_rows(part)
    similarities = scores = None
    if embeddings is not None:
        scores = photo_similarities(embeddings[part], split.gallery(part, embeddings), own)
        similarities = individual_maxima(scores, labels, index.individuals)
    return candidate_pairs(
        list(split.frame(part)["image"]), features[part], gallery, labels, similarities, own,
        settings.shortlist, index, verify_photos=settings.verify_photos, photo_scores=scores,
        **settings.verify_options(),
    )  # fmt: skip


def cross_fitted_probability(pairs: pd.DataFrame, truth: dict[str, str], seed: int = 0):
    """Validation probabilities, each half of the queries scored by a fusion fitted on the
    other half (so the threshold chosen on them is not chosen on fitted scores). A half too
    small to fit on (no same-animal pair) is scored by the fusion fitted on all pairs."""
    queries = np.array(sorted(pairs["query"].unique()))
    half = set(np.random.default_rng(seed).permutation(queries)[: len(queries) // 2])
    first = pairs["query"].isin(half).to_numpy()
    result = np.zeros(len(pairs))
    for held in (first, ~first):
        try:
            fusion = fit_fusion(pairs[~held], truth)
        except ValueError:
            fusion = fit_fusion(pairs, truth)
        result[held] = fusion.probability(pairs[held])
    return result


def best_threshold(
    ranked: dict, queries: Sequence[str], truth: Sequence[str], padding, grid=None
) -> float:
    """The ``new_individual`` threshold on the best candidate's score with the best MAP@5
    (ties: the lower threshold), from ``grid`` (default: probabilities 0.00-1.00 by 0.01)."""
    grid = np.round(np.linspace(0, 1, 101), 2) if grid is None else grid
    scored = [
        (metrics.map_at_k(list(truth), predictions(ranked, queries, t, padding)), -t) for t in grid
    ]
    return float(-max(scored)[1])


def fused_head(
    split, embeddings: dict, out_dir, settings: LocalSettings, member: str | None = None
):
    """Notebook 04's fused head: local features of every photo (cached in ``out_dir``),
    candidate pairs for validation and test, the fusion fitted on validation, the
    ``new_individual`` threshold chosen on cross-fitted validation probabilities for MAP@5,
    the verified tier (inliers for ``settings.verified_precision`` on validation). Writes
    ``LOCAL_OUTPUTS`` into ``out_dir`` (a blend member: ``scores.json`` as every head's);
    returns the scores."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = split_features(split, settings.features, out_dir / local_features.CACHE_FILE)
    pairs = {
        part: part_pairs(split, part, features, embeddings, settings) for part in ("valid", "test")
    }
    for part, frame in pairs.items():
        frame.to_csv(out_dir / f"pairs_{part}.csv", index=False)
    queries = {part: list(split.frame(part)["image"]) for part in ("valid", "test")}
    padding = {part: split.frequent_ids(part) for part in ("valid", "test")}
    truth = dict(zip(queries["valid"], split.truth("valid", queries["valid"]), strict=True))
    fusion = fit_fusion(pairs["valid"], truth)
    outputs.write_json(out_dir / FUSION_FILE, fusion.to_json())
    crossed = cross_fitted_probability(pairs["valid"], truth)
    ranked = {
        "valid": ranked_candidates(pairs["valid"], crossed),
        "test": ranked_candidates(pairs["test"], fusion.probability(pairs["test"])),
    }
    threshold = best_threshold(
        ranked["valid"], queries["valid"], [truth[q] for q in queries["valid"]], padding["valid"]
    )
    results = {}
    for part in ("valid", "test"):
        lists = predictions(ranked[part], queries[part], threshold, padding[part])
        scores = np.array(
            [
                _list_scores(ranked[part].get(q, []), labels)
                for q, labels in zip(queries[part], lists, strict=True)
            ]
        )
        results[part] = (lists, scores)
    figure = plot_calibration(crossed, same_animal(pairs["valid"], truth), ranked["valid"], truth)
    figure.savefig(out_dir / "calibration.png", dpi=110)
    settings_record = {
        "local_matching": dataclasses.asdict(settings),
        "threshold": threshold,
        "verified_inliers": verified_inliers(pairs["valid"], truth, settings.verified_precision),
        "valid_known_top1": known_accuracy(ranked["valid"], truth, 1),
        "valid_auc": known_vs_new_auc(ranked["valid"], truth),
        "known_precision_curve": known_precision_curve(ranked["valid"], truth),
        **({"member": f"{member} local"} if member else {}),
    }
    return heads.write_predictions(
        split, out_dir, results["valid"], results["test"], settings_record
    )


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
