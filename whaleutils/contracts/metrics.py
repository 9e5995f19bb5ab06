"""The competition metric: mean average precision at k (MAP@5 on Happywhale).

Each test image has exactly one true label (an individual id, or ``new_individual``). A
prediction list scores ``1 / rank`` of the first correct label within its first ``k`` entries
and 0 otherwise; the metric is the mean over images. Repeated labels in a list do not earn a
second hit: only the first occurrence of the true label counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NEW_INDIVIDUAL = "new_individual"  # the label of an individual absent from the training photos

N_PREDICTIONS = 5  # labels per image in a submission: MAP@5


def _as_prediction_matrix(predictions, k: int) -> np.ndarray:
    """Turn a list of per-image label lists (or a 2-D array) into an object array (n, k)."""
    if isinstance(predictions, np.ndarray) and predictions.ndim == 2:
        matrix = predictions[:, :k].astype(object)
        if matrix.shape[1] < k:
            padding = np.full((matrix.shape[0], k - matrix.shape[1]), None, dtype=object)
            matrix = np.concatenate([matrix, padding], axis=1)
        return matrix
    matrix = np.full((len(predictions), k), None, dtype=object)
    for row, labels in enumerate(predictions):
        if isinstance(labels, str):
            raise ValueError(
                f"predictions[{row}] is the string {labels!r}; expected a list of labels "
                "(split a submission's space-separated field first)"
            )
        labels = list(labels)[:k]
        matrix[row, : len(labels)] = labels
    return matrix


def average_precision_at_k(truth: Sequence[str], predictions, k: int = 5) -> np.ndarray:
    """Per-image precision at the first hit: ``1 / rank`` of the true label, or 0.

    Parameters
    ----------
    truth : array-like of str, shape (n_images,)
        The one true label of each image.
    predictions : list of label lists, or array of shape (n_images, >=1)
        Ranked predictions per image; only the first ``k`` of each count. Shorter lists are
        allowed and simply cannot score beyond their length.
    k : int, default=5
        Cut-off rank.

    Returns
    -------
    scores : ndarray of shape (n_images,), float64
        ``1 / r`` where ``r`` is the first 1-based rank holding the true label, else 0.

    Examples
    --------
    >>> average_precision_at_k(["a", "b", "c"], [["a", "x"], ["x", "b"], ["x", "y"]]).tolist()
    [1.0, 0.5, 0.0]
    """
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got k={k!r}")
    truth_array = np.asarray(truth, dtype=object)
    if truth_array.ndim != 1:
        raise ValueError(f"truth must be 1-D, got truth.shape={truth_array.shape}")
    if len(truth_array) != len(predictions):
        raise ValueError(
            f"truth and predictions differ in length: len(truth)={len(truth_array)}, "
            f"len(predictions)={len(predictions)}"
        )
    if len(truth_array) == 0:
        raise ValueError("truth and predictions are empty: MAP@k of no images is undefined")
    matrix = _as_prediction_matrix(predictions, k)
    hits = matrix == truth_array[:, None]  # (n, k) bool
    has_hit = hits.any(axis=1)
    first_rank = hits.argmax(axis=1) + 1  # 1-based rank of the first hit
    return np.where(has_hit, 1.0 / first_rank, 0.0)


def map_at_k(truth: Sequence[str], predictions, k: int = 5) -> float:
    """Mean average precision at ``k``: the Happywhale competition metric (k=5).

    Parameters
    ----------
    truth : array-like of str, shape (n_images,)
    predictions : list of label lists, or array of shape (n_images, >=1)
    k : int, default=5

    Returns
    -------
    float
        Mean over images of :func:`average_precision_at_k`.

    Examples
    --------
    >>> map_at_k(["a", "b"], [["a", "b", "c", "d", "e"], ["a", "c", "d", "e", "b"]])
    0.6
    """
    return float(average_precision_at_k(truth, predictions, k).mean())


def map_at_k_split(truth: Sequence[str], predictions, k: int = 5) -> dict[str, float | int]:
    """MAP@k overall, on images of known individuals and on ``new_individual`` images.

    Returns
    -------
    dict
        ``{"map5": ..., "map5_known": ..., "map5_new": ..., "n_images": ..., "n_known": ...,
        "n_new": ...}`` (the keys say ``map5`` whatever ``k`` is, to match the run summaries).
        A group with no images gets ``nan``.
    """
    scores = average_precision_at_k(truth, predictions, k)
    is_new = np.asarray(truth, dtype=object) == NEW_INDIVIDUAL
    n_new = int(is_new.sum())
    n_known = int((~is_new).sum())
    return {
        "map5": float(scores.mean()),
        "map5_known": float(scores[~is_new].mean()) if n_known else float("nan"),
        "map5_new": float(scores[is_new].mean()) if n_new else float("nan"),
        "n_images": int(len(scores)),
        "n_known": n_known,
        "n_new": n_new,
    }
