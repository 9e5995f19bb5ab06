"""Evidence per (query photo, candidate individual) from the embedding and from local features:
the candidate pairs the fused head (``fusion``) turns into a probability that they are the same
animal, and the settings they are made with (:class:`LocalSettings`).

The table of candidate pairs is the interface (one row per query and candidate individual)::

    query  individual  similarity  similarity_rank  lnbnn  lnbnn_rank  inliers  matches  photo

``similarity``: the best cosine similarity between the query's embedding and a gallery photo of
that individual; ``lnbnn``: its LNBNN score over all gallery descriptors
(``local_features.DescriptorIndex``); ranks start at 1 within the query; ``inliers`` and
``matches``: the geometric check (``local_features.verify``) against the individual's best
gallery photo, whose gallery row is ``photo``. A query's candidates are the union of its
``shortlist`` best individuals by each score, so that either opinion can bring the right one.

The candidates of a query depend only on the gallery and ``shortlist``: the evidence of a pair,
and so its fused probability, is the same however many candidates are shown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whaleutils.datasets import data
from whaleutils.images import photos
from whaleutils.retrieval import local_features

PAIR_COLUMNS = [
    "query", "individual", "similarity", "similarity_rank", "lnbnn", "lnbnn_rank",
    "inliers", "matches", "photo",
]  # fmt: skip


def individual_maxima(
    scores: np.ndarray, labels: Sequence[str], individuals: Sequence[str]
) -> np.ndarray:
    """Per query and individual the largest of ``scores`` (q, g) over that individual's gallery
    columns (``labels`` (g,)); (q, n) in ``individuals``' order, -inf where it has none."""
    labels = np.asarray(labels, dtype=str)
    position = {name: i for i, name in enumerate(individuals)}
    codes = np.array([position[label] for label in labels], np.int64)
    result = np.full((scores.shape[0], len(individuals)), -np.inf)
    if scores.shape[1] == 0:
        return result
    order = np.argsort(codes, kind="stable")  # each individual's columns together
    present, starts = np.unique(codes[order], return_index=True)
    result[:, present] = np.maximum.reduceat(scores[:, order], starts, axis=1)
    return result


def photos_by_individual(labels: Sequence[str], individuals: Sequence[str]) -> dict:
    """Each of ``individuals``' rows of ``labels`` (ascending; empty where it has none), by
    one sort (not one scan per individual: 15,000 individuals of 51,000 photos)."""
    labels = np.asarray(labels, dtype=str)
    order = np.argsort(labels, kind="stable")
    names, starts = np.unique(labels[order], return_index=True)
    groups = dict(zip(names.tolist(), np.split(order, starts[1:]), strict=True))
    empty = np.zeros(0, np.int64)
    return {name: groups.get(str(name), empty) for name in individuals}


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
    lnbnn_normaliser: str = "next",
    lnbnn_exclusion_depth: int | None = None,
    **verify_options,
) -> pd.DataFrame:
    """The candidate pairs of each query (``PAIR_COLUMNS``).

    ``similarities`` (q, n): :func:`embedding_similarities` over ``index.individuals`` (None:
    local features alone); ``own_rows`` (q,) or (q, r): the gallery photos each query must not
    find (-1: none), ``lnbnn_exclusion_depth`` the neighbours searched beyond them
    (``DescriptorIndex.lnbnn``'s ``exclusion_depth``);
    ``verify_photos``: how many of a candidate's gallery photos are checked geometrically, the
    most inliers kept: its best by ``photo_scores`` (q, g), e.g. :func:`photo_similarities`,
    else the first in gallery order."""
    gallery_labels = np.asarray(gallery_labels, dtype=str)
    if index is None:
        index = local_features.DescriptorIndex(gallery_features, gallery_labels)
    individuals = index.individuals
    own = np.full((len(query_names), 1), -1) if own_rows is None else np.asarray(own_rows)
    own = [set(row[row >= 0].tolist()) for row in own.reshape(len(query_names), -1)]
    rows_of = photos_by_individual(gallery_labels, individuals)
    lnbnn = np.stack(
        [
            index.lnbnn(
                features, lnbnn_k, sorted(own[i]), lnbnn_normaliser, lnbnn_exclusion_depth
            )
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


# ----------------------------------------------------------------- the fused head's settings


@dataclass(frozen=True)
class LocalSettings:
    """The fused head's settings (notebook 04's ``local_matching`` parameter: a dict of these,
    or True for the defaults)."""

    max_side: int | None = 224
    clahe: bool = False
    detector: str = "sift"  # or "xfeat": learned keypoints and descriptors (training.xfeat)
    max_keypoints: int = 0  # the strongest this many per photo, 0: all (SIFT's, XFeat's 4096)
    lnbnn_k: int = 1  # neighbours that earn their individual a score, per query descriptor
    lnbnn_normaliser: str = "next"  # the (k+1)-th neighbour, or "name": another individual's
    shortlist: int = 20
    ratio: float = 0.8
    transform: str = "affine"
    reprojection: float = 5.6
    verify_photos: int = 10
    verified_precision: float = 0.98

    def __post_init__(self):
        def whole(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"local_matching: {name} must be a whole number >= {low}, got {value!r}"
                )

        def number(name, low, high, low_open=True):
            value = getattr(self, name)
            inside = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and ((low < value if low_open else low <= value) and value <= high)
            )
            if not inside:
                bracket = "(" if low_open else "["
                raise ValueError(
                    f"local_matching: {name} must be in {bracket}{low}, {high}], got {value!r}"
                )

        if self.max_side is not None:
            whole("max_side", 32)
        whole("shortlist", 1)
        whole("lnbnn_k", 1)
        whole("max_keypoints", 0)
        if self.detector not in local_features.DETECTORS:
            raise ValueError(
                f"local_matching: detector must be one of {sorted(local_features.DETECTORS)}, "
                f"got {self.detector!r}"
            )
        if self.lnbnn_normaliser not in local_features.LNBNN_NORMALISERS:
            raise ValueError(
                "local_matching: lnbnn_normaliser must be one of "
                f"{local_features.LNBNN_NORMALISERS}, got {self.lnbnn_normaliser!r}"
            )
        whole("verify_photos", 1)
        number("ratio", 0.0, 1.0)
        number("reprojection", 0.0, 1e4)
        number("verified_precision", 0.0, 1.0)
        if not isinstance(self.clahe, bool):
            raise ValueError(f"local_matching: clahe must be true or false, got {self.clahe!r}")
        if self.transform not in local_features.TRANSFORMS:
            raise ValueError(
                f"local_matching: transform must be one of {local_features.TRANSFORMS}, "
                f"got {self.transform!r}"
            )

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
        return local_features.FeatureSettings(
            max_side=self.max_side, clahe=self.clahe, detector=self.detector,
            max_keypoints=self.max_keypoints,
        )  # fmt: skip

    def lnbnn_options(self) -> dict:
        return {"lnbnn_k": self.lnbnn_k, "lnbnn_normaliser": self.lnbnn_normaliser}

    def verify_options(self) -> dict:
        return {"ratio": self.ratio, "transform": self.transform, "reprojection": self.reprojection}


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
    cache.save(force=True)  # one file: notebook 04 lists it among its outputs
    return result


def read_pairs(path) -> pd.DataFrame:
    """Candidate pairs written as CSV (``pairs_valid.csv``, ``pairs_test.csv``: notebook 04's
    fused head's), ids as text and an empty similarity (no embedding) as NaN. Raises
    ValueError naming the file where its columns are not :data:`PAIR_COLUMNS`."""
    pairs = pd.read_csv(path, keep_default_na=False, dtype={"query": str, "individual": str})
    if list(pairs.columns) != PAIR_COLUMNS:
        raise ValueError(f"{path}: columns {list(pairs.columns)}, not {PAIR_COLUMNS}")
    pairs["similarity"] = pd.to_numeric(pairs["similarity"], errors="coerce")
    return pairs


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
        **settings.lnbnn_options(), **settings.verify_options(),
    )  # fmt: skip
