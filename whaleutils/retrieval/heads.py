"""The heads: from a model's output to five labels per photo, tuned on validation, written out.

- :func:`knn_head` (notebooks 03, 04): embeddings -> the k nearest gallery photos -> five
  individuals, ``new_individual`` first when the nearest match is further than a threshold;
  k and the threshold are searched on the validation fold.
- :func:`classifier_head` (notebook 02): class probabilities -> the five most probable
  individuals, ``new_individual`` first when the top probability is below a threshold searched
  on the validation fold.

Both write the same files into the notebook's folder: ``oof_predictions.csv`` (validation),
``test_predictions.csv`` and ``submission.csv`` (schemas in ``contracts.submission``),
``scores.json`` (schema in ``contracts.outputs``, with the head's settings), and their search
curve as CSV and PNG. Validation queries are matched against the mirrored gallery of
``splits.Split`` (every labelled photo but their own and those of validation-only
individuals), test queries against every labelled photo.

The KNN head's options, chosen on validation where they say so: the rule (``vote``, ``max`` or
``best``), a flipped gallery (each gallery photo's mirror image as a row of its own; True or
``best``) and ``new_individual`` by a distance threshold or by a share of the photos
(``new_share``). :func:`settings_predictions` applies a head's chosen settings to other
embeddings (the snapshot members).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import metrics, outputs, submission
from whaleutils.retrieval import embed, knn
from whaleutils.retrieval.splits import Split

PREDICTION_FILES = ("oof_predictions.csv", "test_predictions.csv", "submission.csv", "scores.json")
KNN_HEAD_FILES = ("knn_search.csv", "knn_search.png", *PREDICTION_FILES)  # what knn_head writes
KNN_OUTPUTS = (*embed.PART_FILES, *KNN_HEAD_FILES)  # with the embeddings it reads
CLASSIFIER_OUTPUTS = ("confidence_search.csv", "confidence_search.png", *PREDICTION_FILES)
CONFIDENCE_GRID = np.round(np.arange(0.0, 1.0001, 0.02), 2)


def score(truth: Sequence[str], predictions) -> dict:
    """MAP@5 overall, known and new (``metrics.map_at_k_split``), rounded for JSON."""
    return {
        key: (round(value, 6) if isinstance(value, float) else value)
        for key, value in metrics.map_at_k_split(list(truth), predictions).items()
    }


def split_scores(split: Split, part: str, images: Sequence[str], predictions) -> dict | None:
    """Scores of ``part``'s predictions (images in any order) against the split's truth; None
    for test without a solution."""
    truth = split.truth(part, images)
    return None if truth is None else score(truth, predictions)


def write_predictions(
    split: Split,
    out_dir: str | os.PathLike,
    valid: tuple[list[list[str]], np.ndarray],
    test: tuple[list[list[str]], np.ndarray],
    settings: dict,
    valid_images: Sequence[str] | None = None,
    test_images: Sequence[str] | None = None,
    valid_truth: Sequence[str] | None = None,
) -> dict:
    """Write the prediction files and ``scores.json`` of a head (or a blend); returns the
    scores.

    ``valid`` and ``test`` are (label lists, scores (n, 5)) for ``valid_images`` and
    ``test_images`` (default: the split's row order); ``settings`` (the head's chosen values)
    are stored beside the scores, with the split's fold (``split``) and, for a model trained
    on pseudo-labelled test photos, ``pseudo_labels`` (``Split.describe_pseudo_labels``).
    ``valid_truth``: the labels the validation predictions are scored on, if not the split's
    (a blend's out-of-fold images span every fold).
    """
    out_dir = Path(out_dir)
    images = {
        "valid": list(split.valid["image"] if valid_images is None else valid_images),
        "test": list(split.test["image"] if test_images is None else test_images),
    }
    for name, part, (lists, label_scores) in (
        ("oof_predictions.csv", "valid", valid),
        ("test_predictions.csv", "test", test),
    ):
        submission.write_predictions(
            out_dir / name, images[part], lists, label_scores, overwrite=True
        )
    submission.write_submission(out_dir / "submission.csv", images["test"], test[0], overwrite=True)
    scores = {
        "valid": (
            split_scores(split, "valid", images["valid"], valid[0])
            if valid_truth is None
            else score(valid_truth, valid[0])
        ),
        "test": split_scores(split, "test", images["test"], test[0]),
        "split": split.describe_fold(),
        **settings,
    }
    if split.pseudo_labels is not None:  # transductive: trained on some of the test photos
        scores["pseudo_labels"] = split.describe_pseudo_labels()
    outputs.write_json(out_dir / outputs.SCORES, scores)
    return scores


# ---------------------------------------------------------------- the KNN head


def neighbours(
    split: Split,
    embeddings: dict[str, np.ndarray],
    part: str,
    k: int,
    queries: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    flipped: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` nearest gallery photos of ``part``'s queries (its embeddings, or ``queries``
    for the part's ``rows``, e.g. degraded copies), each query's own photo excluded (and its
    mirror image, in a ``flipped`` gallery: ``Split.gallery``).

    Returns similarities and gallery indices (n, k') with k' = k cut to the gallery, and the
    gallery's labels.
    """
    gallery = split.gallery(part, embeddings, flipped)
    labels = split.gallery_labels(part, flipped)
    own_rows = split.own_gallery_rows(part, flipped)
    if queries is None:
        queries = embeddings[part]
    if rows is not None:
        own_rows = own_rows[np.asarray(rows)]
    if len(queries) != len(own_rows):
        raise ValueError(f"{len(queries)} query embeddings for {len(own_rows)} {part} rows")
    own_per_query = (own_rows >= 0).reshape(len(own_rows), -1).sum(axis=1)
    k = min(k, len(gallery) - int(own_per_query.max(initial=0)))
    similarities, indices = knn.cosine_topk_excluding(gallery, queries, k, own_rows)
    return similarities, indices, labels


def knn_predictions(
    split: Split,
    embeddings: dict[str, np.ndarray],
    part: str,
    k: int,
    threshold: float,
    rule: str = "vote",
    queries: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    flipped: bool = False,
) -> tuple[list[list[str]], np.ndarray]:
    """Five labels and their scores per query of ``part`` (see :func:`neighbours`)."""
    similarities, indices, labels = neighbours(split, embeddings, part, k, queries, rows, flipped)
    return knn.predict_from_neighbours(
        similarities, indices, labels, threshold, rule, split.frequent_ids(part)
    )


def knn_search(
    split: Split,
    embeddings: dict[str, np.ndarray],
    rule: str = "vote",
    k_grid: Sequence[int] = knn.K_GRID,
    flipped: bool | str = False,
) -> dict:
    """k and the distance threshold that maximise validation MAP@5 (``knn.search_k_and_
    threshold``), with the validation queries' nearest neighbours under :func:`neighbours`;
    the result also holds those neighbours (``similarities``, ``indices``, ``labels``), the
    ``rule`` and ``flipped_gallery``. ``rule="best"`` searches every rule of ``knn.RULES``,
    ``flipped="best"`` the gallery without and with its mirror images (ties: the first, i.e.
    vote, unflipped); the curve has ``rule`` and ``flipped_gallery`` columns."""
    if rule not in (*knn.RULES, "best"):
        raise ValueError(f"rule must be one of {[*knn.RULES, 'best']}, got rule={rule!r}")
    if flipped not in (False, True, "best"):
        raise ValueError(f"flipped must be False, True or 'best', got flipped={flipped!r}")
    rules = knn.RULES if rule == "best" else (rule,)
    truth = split.valid["target_id"].to_numpy()
    searches = []
    for flip in (False, True) if flipped == "best" else (bool(flipped),):
        found = neighbours(split, embeddings, "valid", max(k_grid), flipped=flip)
        for candidate in rules:
            search = knn.search_k_and_threshold(*found, truth, candidate, k_grid)
            search["curve"].insert(0, "flipped_gallery", flip)
            search["curve"].insert(0, "rule", candidate)
            neighbours_found = dict(zip(("similarities", "indices", "labels"), found, strict=True))
            searches.append(
                {**search, **neighbours_found, "rule": candidate, "flipped_gallery": flip}
            )
    best = max(searches, key=lambda s: s["map5"])  # ties: the first
    return {**best, "curve": pd.concat([s["curve"] for s in searches], ignore_index=True)}


def knn_head(
    split: Split,
    embeddings: dict[str, np.ndarray],
    out_dir: str | os.PathLike,
    rule: str = "vote",
    k_grid: Sequence[int] = knn.K_GRID,
    member: str | None = None,
    new_share: float | None = None,
    flipped_gallery: bool | str = False,
) -> dict:
    """Choose k and the threshold on validation, write the head's files (module docstring)
    and ``knn_search.csv`` / ``.png``; returns the scores with ``search`` (the search's result).

    ``rule``: ``vote``, ``max`` or ``best`` (both searched, the better on validation kept).
    ``member``: the model's name in a blend, the same on every fold (``out_of_fold.find_members``).
    ``new_share``: put ``new_individual`` first for this share of each part's photos
    (``knn.share_threshold``, validation and test each by their own distances) instead of
    carrying the validated distance threshold over to test. ``flipped_gallery``: add every
    gallery photo's mirror image as a gallery row of the same individual (True), or choose on
    validation ("best"); the embeddings then need ``train_mirrored`` and ``valid_mirrored``.

    The scores also describe the embedding (``embedding``: participation ratio of the training
    embeddings, median cosine of each validation photo to its nearest and 10th neighbour).
    """
    out_dir = Path(out_dir)
    search = knn_search(split, embeddings, rule, k_grid, flipped_gallery)
    search["curve"].to_csv(out_dir / "knn_search.csv", index=False)
    plot_knn_search(search).savefig(out_dir / "knn_search.png", dpi=110)
    nearest = search["similarities"][:, : min(10, search["similarities"].shape[1])]
    k, rule, flipped = search["k"], search["rule"], search["flipped_gallery"]
    test_neighbours = neighbours(split, embeddings, "test", k, flipped=flipped)
    settings = {
        "k": k,
        "threshold": search["threshold"],
        "rule": rule,
        "flipped_gallery": flipped,
        **({"member": member} if member else {}),
        "embedding": {  # is the space used? (a barely trained model: a handful of dimensions)
            "participation_ratio": round(embed.participation_ratio(embeddings["train"]), 2),
            "dimensions": int(embeddings["train"].shape[1]),
            "valid_nearest_cosine_median": round(float(np.median(nearest[:, 0])), 4),
            "valid_10th_cosine_median": round(float(np.median(nearest[:, -1])), 4),
        },
    }
    thresholds = {"valid": search["threshold"], "test": search["threshold"]}
    if new_share is not None:
        thresholds = {
            "valid": knn.share_threshold(search["similarities"][:, 0], new_share),
            "test": knn.share_threshold(test_neighbours[0][:, 0], new_share),
        }
        settings.update(
            new_share=new_share,
            searched_threshold=search["threshold"],
            threshold=thresholds["test"],
            valid_threshold=thresholds["valid"],
        )
    # the search's neighbours, cut to k, are the validation predictions' own
    valid = knn.predict_from_neighbours(
        search["similarities"][:, :k],
        search["indices"][:, :k],
        search["labels"],
        thresholds["valid"],
        rule,
        split.frequent_ids("valid"),
    )
    test = knn.predict_from_neighbours(
        *test_neighbours, thresholds["test"], rule, split.frequent_ids("test")
    )
    scores = write_predictions(split, out_dir, valid, test, settings)
    return {**scores, "search": search}


def settings_predictions(
    split: Split, embeddings: dict[str, np.ndarray], part: str, settings: dict
) -> tuple[list[list[str]], np.ndarray]:
    """``part``'s predictions with a head's chosen settings (its ``scores.json``: k, rule, and
    the distance threshold, or the ``new_share`` of the part's photos put ``new_individual``
    first): what :func:`knn_head` chose, applied to other embeddings (e.g. a snapshot's)."""
    similarities, indices, labels = neighbours(
        split, embeddings, part, settings["k"], flipped=settings.get("flipped_gallery", False)
    )
    threshold = (
        settings["threshold"]
        if settings.get("new_share") is None
        else knn.share_threshold(similarities[:, 0], settings["new_share"])
    )
    return knn.predict_from_neighbours(
        similarities, indices, labels, threshold, settings["rule"], split.frequent_ids(part)
    )


def plot_knn_search(search: dict):
    """Validation MAP@5 against the distance threshold, one line per k, the choice marked (the
    chosen rule's curves, when several rules were searched)."""
    import matplotlib.pyplot as plt

    curve = search["curve"]
    curve = curve[
        (curve["rule"] == search["rule"]) & (curve["flipped_gallery"] == search["flipped_gallery"])
    ]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for k, rows in curve.groupby("k"):
        axes[0].plot(rows["threshold"], rows["map5"], label=f"k={k}")
    axes[0].axvline(search["threshold"], color="grey", linestyle="--")
    axes[0].set_xlabel("new_individual first when the nearest cosine distance exceeds")
    axes[0].set_ylabel("validation MAP@5")
    axes[0].legend(fontsize=7)
    chosen = curve[curve["k"] == search["k"]]
    for column in ("map5", "map5_known", "map5_new"):
        axes[1].plot(chosen["threshold"], chosen[column], label=column)
    axes[1].axvline(search["threshold"], color="grey", linestyle="--")
    axes[1].set_title(
        f"rule {search['rule']}{', flipped gallery' if search['flipped_gallery'] else ''}, "
        f"k={search['k']}: threshold {search['threshold']:.4g}, MAP@5 {search['map5']:.4f}"
    )
    axes[1].set_xlabel("distance threshold")
    axes[1].legend()
    figure.tight_layout()
    return figure


# ---------------------------------------------------------------- the classifier head


def classifier_predictions(
    probabilities: np.ndarray,
    individual_ids: Sequence[str],
    confidence_threshold: float,
    frequent_ids: Sequence[str] = (),
) -> tuple[list[list[str]], np.ndarray]:
    """Five labels per image from class probabilities (n, n_classes): the most probable
    individuals (class ``j`` is ``individual_ids[j]``; equal probabilities by class order),
    with ``new_individual`` first when the top probability is below ``confidence_threshold``,
    else second. Returns the lists and the scores (n, 5): each label's probability, and
    ``confidence_threshold`` for ``new_individual``.

    Examples
    --------
    >>> p = np.array([[0.5, 0.3, 0.2], [0.2, 0.1, 0.7]])
    >>> classifier_predictions(p, ["a", "b", "c"], 0.6)[0]
    [['new_individual', 'a', 'b', 'c'], ['c', 'new_individual', 'a', 'b']]
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != len(individual_ids):
        raise ValueError(
            f"probabilities must have shape (n, {len(individual_ids)}), got {probabilities.shape}"
        )
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, : metrics.N_PREDICTIONS]
    ids = np.asarray(individual_ids, dtype=object)[order]
    top = np.take_along_axis(probabilities, order, axis=1)
    lists = knn.insert_new_individual(ids, top[:, 0], 1.0 - confidence_threshold, frequent_ids)
    scores = np.zeros((len(lists), metrics.N_PREDICTIONS))
    for row, labels in enumerate(lists):
        lookup = dict(zip(ids[row], top[row], strict=True))
        scores[row, : len(labels)] = [
            confidence_threshold if label == metrics.NEW_INDIVIDUAL else lookup.get(label, 0.0)
            for label in labels
        ]
    return lists, scores


def confidence_search(
    probabilities: np.ndarray,
    individual_ids: Sequence[str],
    truth: Sequence[str],
    confidence_grid=CONFIDENCE_GRID,
) -> dict:
    """The confidence threshold of :func:`classifier_predictions` that maximises MAP@5 on
    ``truth`` (ties: the lowest threshold).

    Returns ``confidence_threshold``, ``map5`` and ``curve`` (one row per threshold: columns
    ``confidence, map5, map5_known, map5_new``)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, : metrics.N_PREDICTIONS - 1]
    ids = np.asarray(individual_ids, dtype=object)[order]
    top = np.take_along_axis(probabilities, order[:, :1], axis=1)[:, 0]
    confidence_grid = np.asarray(confidence_grid, dtype=np.float64)
    # new_individual goes first where the distance 1 - top exceeds 1 - confidence: top below it
    curve = knn.map5_by_threshold(ids, top, truth, 1.0 - confidence_grid)
    curve = curve.drop(columns="threshold")
    curve.insert(0, "confidence", confidence_grid)
    best = curve.sort_values(["map5", "confidence"], ascending=[False, True]).iloc[0]
    return {
        "confidence_threshold": float(best["confidence"]),
        "map5": float(best["map5"]),
        "curve": curve,
    }


def classifier_head(
    split: Split,
    valid_probabilities: np.ndarray,
    test_probabilities: np.ndarray,
    out_dir: str | os.PathLike,
    confidence_grid=CONFIDENCE_GRID,
) -> dict:
    """Choose the confidence threshold on validation and write the head's files (module
    docstring) and ``confidence_search.csv`` / ``.png``; returns the scores with ``search``.

    The probabilities' classes are ``split.encoding.individual_ids``."""
    out_dir = Path(out_dir)
    classes = split.encoding.individual_ids
    search = confidence_search(
        valid_probabilities, classes, split.valid["target_id"], confidence_grid
    )
    search["curve"].to_csv(out_dir / "confidence_search.csv", index=False)
    plot_confidence_search(search).savefig(out_dir / "confidence_search.png", dpi=110)
    threshold = search["confidence_threshold"]
    valid_padding, test_padding = split.frequent_ids("valid"), split.frequent_ids("test")
    scores = write_predictions(
        split,
        out_dir,
        classifier_predictions(valid_probabilities, classes, threshold, valid_padding),
        classifier_predictions(test_probabilities, classes, threshold, test_padding),
        {"confidence_threshold": threshold},
    )
    return {**scores, "search": search}


def plot_confidence_search(search: dict):
    """Validation MAP@5 (overall, known, new) against the confidence threshold."""
    import matplotlib.pyplot as plt

    curve = search["curve"]
    figure, axis = plt.subplots(figsize=(7, 4))
    for column in ("map5", "map5_known", "map5_new"):
        axis.plot(curve["confidence"], curve[column], label=column)
    axis.axvline(search["confidence_threshold"], color="grey", linestyle="--")
    axis.set_xlabel("new_individual first when the top probability is below")
    axis.set_ylabel("validation MAP@5")
    axis.set_title(
        f"confidence threshold {search['confidence_threshold']:.2f}: MAP@5 {search['map5']:.4f}"
    )
    axis.legend()
    figure.tight_layout()
    return figure


def answering_heads(knn_scores: dict, fused_scores: dict | None = None) -> pd.DataFrame:
    """A run's heads, the one ``identify`` answers with first (the fused head where the run has
    one, the KNN head beside it): head, valid and test MAP@5, test known and new MAP@5 (NaN
    where a part has no solution). ``*_scores``: their ``scores.json`` contents."""
    rows = []
    named = [("fused head (answers identify)", fused_scores)] if fused_scores else []
    named.append(("KNN head" + ("" if fused_scores else " (answers identify)"), knn_scores))
    for name, scores in named:
        test = scores.get("test") or {}
        rows.append(
            {
                "head": name,
                "valid_map5": scores["valid"]["map5"],
                "test_map5": test.get("map5", np.nan),
                "test_map5_known": test.get("map5_known", np.nan),
                "test_map5_new": test.get("map5_new", np.nan),
            }
        )
    return pd.DataFrame(rows)
