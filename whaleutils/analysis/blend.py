"""Blending many models' predictions: rank-weighted voting with weights searched on OOF data.

Each *member* (a notebook's model, a fold, a snapshot checkpoint) gives, for every image, five
ranked labels. The blend scores every label an image's members propose::

    score(id) = sum_j alpha_j * w(rank_j(id)) / p_j(id)  -  frequency_penalty * n_photos(id)

where ``w = rank_weights`` (rank 1 to 5; 0 when member j does not propose the id),
``p_j(id) = new_individual_penalty`` if the id is ``new_individual`` and member j ranks it third
or lower (1 otherwise), and ``n_photos`` is the id's number of photos in the gallery the images
were matched against (``splits.Split.photo_counts``; ``new_individual`` has none). The five
best ids win; equal scores are ordered by id (string order), which makes the blend
deterministic.

``search_alphas`` finds the member weights by greedy coordinate ascent on out-of-fold MAP@5, as
the paper describes (its repository shows only hard-coded weights).

Internally every image's candidate ids are encoded once as integers, and each member's
contribution is a sparse (image, candidate) update, so one change of one weight costs
O(n_images), not a full re-blend. Which members there are and how folds join out of fold:
``analysis.out_of_fold``; the snapshots a training notebook adds as members:
``retrieval.snapshots``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import N_PREDICTIONS, NEW_INDIVIDUAL
from whaleutils.retrieval.embed import l2_normalize

RANK_WEIGHTS = (10.0, 6.5, 3.3, 2.9, 2.7)


@dataclass
class _Encoded:
    """Member predictions over per-image candidate columns.

    ``candidates`` (n, U) vocabulary codes (-1 padding); ``columns`` (M, n, 5) the column of
    each member's ranked id; ``weights`` (M, n, 5) the member's un-scaled contribution;
    ``penalty`` (n, U) the frequency penalty (+inf on padding); ``vocabulary`` sorted ids.
    """

    vocabulary: np.ndarray
    candidates: np.ndarray
    columns: np.ndarray
    weights: np.ndarray
    penalty: np.ndarray


def _encode(
    member_predictions: Sequence[Sequence[Sequence[str] | None]],
    individual_counts: Mapping[str, int] | Sequence[Mapping[str, int]],
    rank_weights: Sequence[float],
    frequency_penalty: float,
    new_individual_penalty: float,
) -> _Encoded:
    n_members = len(member_predictions)
    if n_members == 0:
        raise ValueError("no members to blend")
    n_images = len(member_predictions[0])
    for j, member in enumerate(member_predictions):
        if len(member) != n_images:
            raise ValueError(f"member {j} has {len(member)} images, member 0 has {n_images}")
    if len(rank_weights) != N_PREDICTIONS:
        raise ValueError(f"rank_weights must have {N_PREDICTIONS} values, got {list(rank_weights)}")
    if new_individual_penalty <= 0:
        raise ValueError(f"new_individual_penalty must be > 0, got {new_individual_penalty}")
    per_image = not isinstance(individual_counts, Mapping)
    if per_image and len(individual_counts) != n_images:
        raise ValueError(
            f"individual_counts has {len(individual_counts)} galleries for {n_images} images"
        )

    # A member without a prediction for an image (None) votes there with weight 0, over the
    # labels of the first member that has one, so it adds no candidate.
    present = np.array([[row is not None for row in member] for member in member_predictions])
    uncovered = np.flatnonzero(~present.any(axis=0))
    if len(uncovered):
        raise ValueError(f"image {int(uncovered[0])}: no member has a prediction for it")
    stand_in = present.argmax(axis=0)  # (n,) the first member with a prediction
    labels = np.empty((n_members, n_images, N_PREDICTIONS), dtype=object)
    for j, member in enumerate(member_predictions):
        rows = [row if row is not None else member_predictions[stand_in[i]][i]
                for i, row in enumerate(member)]  # fmt: skip
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=n_images)
        if np.any(lengths != N_PREDICTIONS):
            bad = int(np.flatnonzero(lengths != N_PREDICTIONS)[0])
            raise ValueError(
                f"member {j}, image {bad}: expected {N_PREDICTIONS} distinct labels, "
                f"got {list(rows[bad])}"
            )
        labels[j] = np.array([list(row) for row in rows], dtype=object)
    vocabulary, codes = np.unique(labels.ravel().astype(str), return_inverse=True)
    codes = codes.reshape(labels.shape).astype(np.int64)  # (M, n, 5)
    ordered = np.sort(codes, axis=2)
    repeated = np.argwhere((ordered[:, :, 1:] == ordered[:, :, :-1]).any(axis=2))
    if len(repeated):
        j, i = repeated[0]
        raise ValueError(
            f"member {j}, image {i}: expected {N_PREDICTIONS} distinct labels, "
            f"got {list(labels[j, i])}"
        )

    # Unique (image, id) pairs: their position within the image's row is the candidate column.
    keys = np.arange(n_images, dtype=np.int64)[None, :, None] * len(vocabulary) + codes
    unique_keys, inverse = np.unique(keys.ravel(), return_inverse=True)
    rows = unique_keys // len(vocabulary)
    row_start = np.searchsorted(rows, np.arange(n_images))
    column_of_unique = np.arange(len(unique_keys)) - row_start[rows]
    width = int(column_of_unique.max()) + 1
    candidates = np.full((n_images, width), -1, dtype=np.int64)
    candidates[rows, column_of_unique] = unique_keys % len(vocabulary)
    columns = column_of_unique[inverse].reshape(codes.shape)

    weights = np.broadcast_to(np.asarray(rank_weights, dtype=np.float64), codes.shape).copy()
    new_code = np.searchsorted(vocabulary, NEW_INDIVIDUAL)
    if new_code < len(vocabulary) and vocabulary[new_code] == NEW_INDIVIDUAL:
        low_rank_new = (codes == new_code) & (np.arange(N_PREDICTIONS) >= 2)  # ranks 3, 4, 5
        weights[low_rank_new] /= new_individual_penalty
    weights[~present] = 0.0

    def count_vector(counts: Mapping[str, int]) -> np.ndarray:
        return np.array(
            [0 if v == NEW_INDIVIDUAL else counts.get(v, 0) for v in vocabulary], dtype=np.float64
        )

    safe = np.maximum(candidates, 0)
    if per_image:  # one gallery per image; images sharing a gallery object share the work
        counted = np.zeros(candidates.shape)
        groups: dict[int, list[int]] = {}
        for i, counts in enumerate(individual_counts):
            groups.setdefault(id(counts), []).append(i)
        for image_rows in groups.values():
            vector = count_vector(individual_counts[image_rows[0]])
            counted[image_rows] = vector[safe[image_rows]]
    else:
        counted = count_vector(individual_counts)[safe]
    penalty = np.where(candidates >= 0, frequency_penalty * counted, np.inf)
    return _Encoded(vocabulary, candidates, columns, weights, penalty)


def _scores(encoded: _Encoded, alphas: np.ndarray) -> np.ndarray:
    """Blend scores (n, U) for member weights ``alphas`` (M,)."""
    score = -encoded.penalty.copy()
    rows = np.arange(encoded.candidates.shape[0])[:, None]
    for j, alpha in enumerate(alphas):
        if alpha != 0:
            score[rows, encoded.columns[j]] += alpha * encoded.weights[j]
    return score


TIE_DECIMALS = 9  # scores equal to 1e-9 are ties: sums in another order still tie


def _top5(encoded: _Encoded, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes and scores of the five best candidates per image: score descending, then id
    ascending."""
    score = np.round(score, TIE_DECIMALS)
    tie_break = np.where(encoded.candidates >= 0, encoded.candidates, np.iinfo(np.int64).max)
    order = np.lexsort((tie_break, -score), axis=-1)[:, :N_PREDICTIONS]
    return np.take_along_axis(encoded.candidates, order, axis=1), np.take_along_axis(
        score, order, axis=1
    )


def check_alphas(alphas, n_members: int) -> np.ndarray:
    """``alphas`` as float64 (n_members,), checked: one finite, non-negative weight per
    member."""
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.shape != (n_members,):
        raise ValueError(
            f"alphas must have one weight per member ({n_members}), got {alphas.tolist()}"
        )
    if np.any(alphas < 0) or not np.isfinite(alphas).all():
        raise ValueError(f"alphas must be finite and >= 0, got {alphas.tolist()}")
    return alphas


def rank_blend(
    member_predictions: Sequence[Sequence[Sequence[str]]],
    alphas: Sequence[float],
    individual_counts: Mapping[str, int] | Sequence[Mapping[str, int]],
    rank_weights: Sequence[float] = RANK_WEIGHTS,
    frequency_penalty: float = 0.033,
    new_individual_penalty: float = 4.0,
    return_scores: bool = False,
):
    """Blend members' ranked predictions into five distinct labels per image.

    Parameters
    ----------
    member_predictions : list over members of lists over images of five ranked labels
        (every member in the same image order); None where a member has no prediction for an
        image (e.g. the images of other folds): it does not vote there
    alphas : member weights, >= 0, shape (n_members,)
    individual_counts : gallery photos per individual id (ids absent count 0); or one such
        mapping per image, when images were matched against different galleries (folds)
    rank_weights : the weight of ranks 1-5
    frequency_penalty : subtracted per training photo of an id
    new_individual_penalty : divides a member's vote for ``new_individual`` at rank 3-5

    Returns
    -------
    list of five-label lists, one per image (with ``return_scores``, also their blend scores,
    float (n_images, 5)). Ties (scores equal to 9 decimals) go in id (string) order.

    Examples
    --------
    >>> a = [["x", "y", "z", "u", "v"]]
    >>> b = [["y", "x", "z", "u", "v"]]
    >>> rank_blend([a, b], [1.0, 2.0], {}, frequency_penalty=0.0)
    [['y', 'x', 'z', 'u', 'v']]
    """
    encoded = _encode(
        member_predictions,
        individual_counts,
        rank_weights,
        frequency_penalty,
        new_individual_penalty,
    )
    alphas = check_alphas(alphas, len(member_predictions))
    top, top_scores = _top5(encoded, _scores(encoded, alphas))
    lists = encoded.vocabulary[top].tolist()
    return (lists, top_scores) if return_scores else lists


def _map5_from_scores(score: np.ndarray, encoded: _Encoded, truth_columns: np.ndarray) -> float:
    """MAP@5 of the blend without sorting: the truth's rank is one plus the candidates that
    beat it (a higher score, or an equal one and a smaller id), with scores rounded to
    ``TIE_DECIMALS`` exactly as in :func:`_top5`."""
    rows = np.flatnonzero(truth_columns >= 0)
    every_row = len(rows) == len(score)
    block = np.round(score if every_row else score[rows], TIE_DECIMALS)
    candidates = encoded.candidates if every_row else encoded.candidates[rows]
    truth_score = block[np.arange(len(rows)), truth_columns[rows]][:, None]
    truth_code = candidates[np.arange(len(rows)), truth_columns[rows]][:, None]
    tied = (block == truth_score) & (candidates < truth_code) & (candidates >= 0)
    rank = ((block > truth_score) | tied).sum(axis=1) + 1
    precision = np.where(rank <= N_PREDICTIONS, 1.0 / rank, 0.0)
    return float(precision.sum() / len(truth_columns))


def _ascend(
    encoded: _Encoded,
    truth_columns: np.ndarray,
    alphas: np.ndarray,
    step: float,
    tol: float,
    max_sweeps: int,
) -> tuple[np.ndarray, list[tuple]]:
    """Greedy coordinate ascent from ``alphas``; returns them and the accepted changes as
    (sweep, member, alpha, score), starting with (0, -1, nan, starting score)."""
    alphas = alphas.astype(np.float64).copy()
    score = _scores(encoded, alphas)
    best = _map5_from_scores(score, encoded, truth_columns)
    trace = [(0, -1, float("nan"), best)]
    rows = np.arange(score.shape[0])[:, None]
    for sweep in range(1, max_sweeps + 1):
        improved = False
        for j in range(len(alphas)):
            contribution = encoded.weights[j]
            trials = []
            for delta in (step, -step):
                if alphas[j] + delta < -1e-12:
                    continue
                score[rows, encoded.columns[j]] += delta * contribution
                trials.append((_map5_from_scores(score, encoded, truth_columns), delta))
                score[rows, encoded.columns[j]] -= delta * contribution
            if not trials:
                continue
            value, delta = max(trials, key=lambda t: (t[0], t[1]))
            if value >= best + tol:
                alphas[j] = max(0.0, alphas[j] + delta)
                score[rows, encoded.columns[j]] += delta * contribution
                best = value
                improved = True
                trace.append((sweep, j, float(alphas[j]), best))
        if not improved:
            break
    return alphas, trace


def search_alphas(
    oof_member_predictions: Sequence[Sequence[Sequence[str]]],
    truth: Sequence[str],
    individual_counts: Mapping[str, int] | Sequence[Mapping[str, int]],
    step: float = 0.1,
    tol: float = 1e-3,
    max_sweeps: int = 20,
    return_trace: bool = False,
    rank_weights: Sequence[float] = RANK_WEIGHTS,
    frequency_penalty: float = 0.033,
    new_individual_penalty: float = 4.0,
):
    """Member weights by greedy coordinate ascent on out-of-fold MAP@5.

    Each sweep visits the members in order and tries ``alpha + step`` and ``alpha - step``
    (never below 0); the better of the two is kept if it raises MAP@5 by at least ``tol``.
    Sweeps repeat until one improves nothing (or ``max_sweeps``). The ascent runs from two
    starts, all ones and the best single member alone (weight 1, the others 0), and the better
    end wins (equal: all ones): from all ones, a few weak members can hold the blend below its
    best member, since no single step of one weight is large enough to help. The result never
    scores below either start on the out-of-fold data. Members may miss images (None) and
    ``individual_counts`` may be one gallery per image, as in :func:`rank_blend`.

    Returns
    -------
    alphas : list of float, or ``(alphas, trace)`` with ``return_trace``: the trace of the
        winning start is a DataFrame of (start, sweep, member, alpha, score) for every accepted
        change, starting with (start, 0, -1, nan, starting score).
    """
    if step <= 0 or tol < 0:
        raise ValueError(f"step must be > 0 and tol >= 0, got step={step}, tol={tol}")
    encoded = _encode(
        oof_member_predictions,
        individual_counts,
        rank_weights,
        frequency_penalty,
        new_individual_penalty,
    )
    truth = np.asarray(truth, dtype=str)
    if len(truth) != encoded.candidates.shape[0]:
        raise ValueError(
            f"truth has {len(truth)} images, the members have {encoded.candidates.shape[0]}"
        )
    truth_code = np.searchsorted(encoded.vocabulary, truth)
    truth_code = np.where(
        (truth_code < len(encoded.vocabulary))
        & (encoded.vocabulary[np.minimum(truth_code, len(encoded.vocabulary) - 1)] == truth),
        truth_code,
        -2,
    )
    match = encoded.candidates == truth_code[:, None]
    truth_columns = np.where(match.any(axis=1), match.argmax(axis=1), -1)

    n_members = len(oof_member_predictions)
    alone = np.eye(n_members)
    single_scores = [
        _map5_from_scores(_scores(encoded, alone[j]), encoded, truth_columns)
        for j in range(n_members)
    ]
    best_member = int(np.argmax(single_scores))  # ties: the first
    ends = [
        (name, *_ascend(encoded, truth_columns, start, step, tol, max_sweeps))
        for name, start in (
            ("all ones", np.ones(n_members)),
            (f"member {best_member} alone", alone[best_member]),
        )
    ]
    name, alphas, trace = max(ends, key=lambda end: end[2][-1][3])  # ties: the first
    result = [round(float(a), 10) for a in alphas]
    if return_trace:
        rows = [(name, *change) for change in trace]
        return result, pd.DataFrame(rows, columns=["start", "sweep", "member", "alpha", "score"])
    return result


def concatenate_embeddings(
    member_embeddings: Sequence[np.ndarray], weights: Sequence[float] | None = None
) -> np.ndarray:
    """Embedding-level blend: each member's rows L2-normalised, scaled by ``sqrt(weight)``,
    concatenated and normalised again, so cosine similarity of the result is the weighted mean
    of the members' cosine similarities (the top solutions' way to ensemble). float32 (n, sum d).
    """
    if not member_embeddings:
        raise ValueError("no embeddings to concatenate")
    weights = (
        np.ones(len(member_embeddings))
        if weights is None
        else np.asarray(weights, dtype=np.float64)
    )
    if len(weights) != len(member_embeddings) or np.any(weights < 0):
        raise ValueError(f"weights must be one non-negative value per member, got {list(weights)}")

    n = len(member_embeddings[0])
    parts = []
    for j, (vectors, weight) in enumerate(zip(member_embeddings, weights, strict=True)):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != n:
            raise ValueError(f"member {j} embeddings have shape {vectors.shape}; expected ({n}, d)")
        parts.append(l2_normalize(vectors) * np.float32(np.sqrt(weight / weights.sum())))
    return l2_normalize(np.concatenate(parts, axis=1))
