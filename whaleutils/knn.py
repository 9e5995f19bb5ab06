"""The k-nearest-neighbour head: exact cosine top-k, decision rules and their tuning.

``cosine_topk`` finds, for each query embedding, the ``k`` most cosine-similar gallery
(training) embeddings, exactly. ``rank_individuals`` turns neighbours into five distinct
individual ids per query by the paper's vote or by the public notebooks' maximum similarity;
``insert_new_individual`` places ``new_individual`` where its distance threshold puts it;
``search_k_and_threshold`` picks ``k`` and the threshold on a validation fold.

Prediction files (``oof`` for validation folds, ``test`` for the test set) are CSVs with columns
``image, predictions, scores``: five space-separated labels, best first, and their scores.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.embed import l2_normalize
from whaleutils.metrics import NEW_INDIVIDUAL

N_PREDICTIONS = 5
K_GRID = (1, 3, 5, 10, 20, 50, 75, 100)
BF16_UNIT_ROUNDOFF = 2.0**-8  # bfloat16 keeps 8 significant bits


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512_BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _validate(gallery: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    gallery = np.asarray(gallery, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if gallery.ndim != 2 or queries.ndim != 2:
        raise ValueError(
            "gallery and queries must be 2-D, "
            f"got gallery.shape={gallery.shape}, queries.shape={queries.shape}"
        )
    if gallery.shape[1] != queries.shape[1]:
        raise ValueError(
            f"dimensions differ: gallery.shape={gallery.shape}, queries.shape={queries.shape}"
        )
    if not 1 <= k <= len(gallery):
        raise ValueError(f"k must be in [1, {len(gallery)}] (the gallery size), got k={k}")
    for name, array in (("gallery", gallery), ("queries", queries)):
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values")
    return l2_normalize(gallery), l2_normalize(queries)


def _chunk_size(n_gallery: int, row_bytes_extra: int, memory_mb: float) -> int:
    per_query = n_gallery * 4 + row_bytes_extra
    return max(1, int(memory_mb * 2**20 // per_query))


def _sorted_topk(similarities: np.ndarray, candidates: np.ndarray, k: int):
    """Top ``k`` of each row of ``similarities`` (n, C) over gallery ids ``candidates`` (n, C):
    decreasing similarity, ties by increasing gallery index."""
    order = np.lexsort((candidates, -similarities), axis=-1)[:, :k]
    return np.take_along_axis(similarities, order, axis=1), np.take_along_axis(
        candidates, order, axis=1
    )


def _exact_rows(tf, gallery_f32, queries: np.ndarray, k: int):
    similarities = tf.matmul(queries, gallery_f32, transpose_b=True)
    values, indices = tf.math.top_k(similarities, k)  # equal values: lower index first
    return values.numpy(), indices.numpy().astype(np.int64)


def cosine_topk(
    gallery: np.ndarray,
    queries: np.ndarray,
    k: int,
    method: str = "auto",
    memory_mb: float = 512.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` cosine similarities of each query against a gallery.

    Parameters
    ----------
    gallery : array-like of shape (n_gallery, d)
    queries : array-like of shape (n_queries, d)
        Rows need not be normalised; all-zero rows have similarity 0 to everything.
    k : int, 1 <= k <= n_gallery
    method : {"auto", "bf16", "float32"}
        ``float32``: one float32 matrix product and ``top_k`` per chunk of queries.
        ``bf16``: a bfloat16 product proposes ``C = min(n, max(2k, k + 64))`` candidates per
        query, which are re-scored exactly in float32; a query whose candidates might miss a
        true neighbour (see Notes) is recomputed in float32, so the result is exact either way.
        ``auto``: ``bf16`` where the CPU multiplies bfloat16 natively, else ``float32``.
    memory_mb : float, default=512
        Bound on the working memory beyond the inputs: queries are processed in chunks of
        ``floor(memory_mb * 2**20 / (4 * n_gallery + 4 * C * d))`` rows (a float32 similarity
        row plus the gathered candidates per query); the normalised copies of the inputs
        (and a bfloat16 copy of the gallery) come on top.

    Returns
    -------
    similarities : ndarray of shape (n_queries, k), float32
        Decreasing along each row.
    indices : ndarray of shape (n_queries, k), int64
        Gallery rows; equal similarities are ordered by increasing gallery index.

    Notes
    -----
    Exactness of the bf16 pass. With ``q' = bf16(q)``, ``g' = bf16(g)`` and the product
    rounded to bf16, ``|a - q.g| <= |dq| + max|dg| + |dq| max|dg| + u |a| (1 + u)
    + 1e-5`` where ``dq = q - q'`` (per query), ``dg`` likewise (per gallery row),
    ``u = 2**-8`` and 1e-5 covers float32 accumulation over d <= 4096. A gallery row outside
    the C candidates has ``a <= a_C``; every true top-k similarity is at least
    ``a_k - err(a_k)``. If ``a_C + err(a_C) < a_k - err(a_k)`` no true neighbour was missed;
    otherwise the query is recomputed exactly.
    """
    import tensorflow as tf

    gallery, queries = _validate(gallery, queries, k)
    if method == "auto":
        method = "bf16" if cpu_has_bf16() else "float32"
    if method not in ("bf16", "float32"):
        raise ValueError(f"method must be 'auto', 'bf16' or 'float32', got method={method!r}")
    n_gallery, dim = gallery.shape
    gallery_f32 = tf.constant(gallery)
    out_similarities = np.empty((len(queries), k), dtype=np.float32)
    out_indices = np.empty((len(queries), k), dtype=np.int64)
    if method == "float32":
        chunk = _chunk_size(n_gallery, 0, memory_mb)
        for start in range(0, len(queries), chunk):
            rows = slice(start, start + chunk)
            out_similarities[rows], out_indices[rows] = _exact_rows(
                tf, gallery_f32, queries[rows], k
            )
        return out_similarities, out_indices

    n_candidates = min(n_gallery, max(2 * k, k + 64))
    gallery_bf16 = tf.cast(gallery_f32, tf.bfloat16)
    gallery_rounding = float(
        np.linalg.norm(gallery - tf.cast(gallery_bf16, tf.float32).numpy(), axis=1).max()
    )
    chunk = _chunk_size(n_gallery, 4 * n_candidates * dim, memory_mb)
    unit = BF16_UNIT_ROUNDOFF
    for start in range(0, len(queries), chunk):
        rows = slice(start, start + chunk)
        query_block = queries[rows]
        query_bf16 = tf.cast(query_block, tf.bfloat16)
        approx = tf.matmul(query_bf16, gallery_bf16, transpose_b=True)
        approx_values, candidates = tf.math.top_k(approx, n_candidates)
        approx_values = tf.cast(approx_values, tf.float32).numpy()
        candidates = candidates.numpy().astype(np.int64)
        gathered = tf.gather(gallery_f32, candidates)  # (b, C, d)
        exact = tf.einsum("bcd,bd->bc", gathered, query_block).numpy()
        similarities, indices = _sorted_topk(exact, candidates, k)

        query_rounding = np.linalg.norm(
            query_block - tf.cast(query_bf16, tf.float32).numpy(), axis=1
        )
        input_error = query_rounding + gallery_rounding + query_rounding * gallery_rounding + 1e-5
        kth, last = approx_values[:, k - 1], approx_values[:, -1]
        safe = last + input_error + unit * (1 + unit) * np.abs(last) < kth - input_error - unit * (
            1 + unit
        ) * np.abs(kth)
        if n_candidates == n_gallery:
            safe[:] = True  # every gallery row is a candidate
        unsafe = np.flatnonzero(~safe)
        if len(unsafe):
            similarities[unsafe], indices[unsafe] = _exact_rows(
                tf, gallery_f32, query_block[unsafe], k
            )
        out_similarities[rows], out_indices[rows] = similarities, indices
    return out_similarities, out_indices


# ---------------------------------------------------------------- decision rules


def rank_individuals(
    similarities: np.ndarray,
    indices: np.ndarray,
    gallery_labels: Sequence[str],
    rule: str = "vote",
    n_ids: int = N_PREDICTIONS,
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_ids`` distinct individual ids per query, best first, from its neighbours.

    Parameters
    ----------
    similarities, indices : arrays of shape (n_queries, k), as from :func:`cosine_topk`
        (neighbours sorted by decreasing similarity)
    gallery_labels : the individual id of each gallery row
    rule : {"vote", "max"}
        ``vote`` (the paper): ids ordered by how many of the k neighbours carry them; equal
        counts by the summed inverse distance ``1 / (1 - similarity + 1e-6)``; still equal, by
        the rank of their nearest neighbour. ``max`` (public notebooks): ids ordered by their
        best similarity, i.e. the order in which they first appear among the neighbours.

    Returns
    -------
    ids : object array (n_queries, n_ids)
        ``None`` where a query's neighbours hold fewer than ``n_ids`` individuals.
    scores : float32 array (n_queries, n_ids)
        ``max``: the id's best similarity; ``vote``: its vote share (count / k). NaN where
        ``ids`` is None.
    """
    similarities = np.asarray(similarities, dtype=np.float32)
    indices = np.asarray(indices)
    if similarities.shape != indices.shape or similarities.ndim != 2:
        raise ValueError(
            f"similarities {similarities.shape} and indices {indices.shape} "
            "must be equal 2-D shapes"
        )
    labels = np.asarray(gallery_labels, dtype=object)
    codes_of, label_codes = np.unique(labels, return_inverse=True)
    neighbour_codes = label_codes[indices]  # (n, k)
    n, k = neighbour_codes.shape
    position = np.broadcast_to(np.arange(k), (n, k))
    if rule == "max":
        order = position
        score_per_neighbour = similarities
    elif rule == "vote":
        same = neighbour_codes[:, :, None] == neighbour_codes[:, None, :]  # (n, k, k)
        counts = same.sum(axis=2)
        inverse_distance = 1.0 / (np.clip(1.0 - similarities, 0.0, 2.0) + 1e-6)
        summed = (same * inverse_distance[:, None, :]).sum(axis=2)
        order = np.lexsort((position, -summed, -counts), axis=-1)
        score_per_neighbour = counts / k
    else:
        raise ValueError(f"rule must be 'vote' or 'max', got rule={rule!r}")
    sorted_codes = np.take_along_axis(neighbour_codes, order, axis=1)
    sorted_scores = np.take_along_axis(score_per_neighbour, order, axis=1)

    ids = np.full((n, n_ids), None, dtype=object)
    scores = np.full((n, n_ids), np.nan, dtype=np.float32)
    chosen = np.full((n, n_ids), -1, dtype=np.int64)
    filled = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    for column in range(k):
        code = sorted_codes[:, column]
        new = (filled < n_ids) & ~(chosen == code[:, None]).any(axis=1)
        target = rows[new]
        chosen[target, filled[new]] = code[new]
        scores[target, filled[new]] = sorted_scores[new, column]
        filled[new] += 1
        if (filled >= n_ids).all():
            break
    has = chosen >= 0
    ids[has] = codes_of[chosen[has]]
    return ids, scores


def insert_new_individual(
    ids: np.ndarray,
    nearest_similarity: np.ndarray,
    distance_threshold: float,
    frequent_ids: Sequence[str] = (),
    n_predictions: int = N_PREDICTIONS,
) -> list[list[str]]:
    """Five-label lists: ``new_individual`` at the rank its threshold earns, padded.

    ``new_individual`` comes first when the nearest neighbour's cosine distance
    ``1 - nearest_similarity`` exceeds ``distance_threshold`` (the paper: 0.62), else second.
    Lists short of five labels are padded with ``frequent_ids`` (most photographed first) not
    already present.
    """
    ids = np.asarray(ids, dtype=object)
    nearest_distance = 1.0 - np.asarray(nearest_similarity, dtype=np.float64)
    if len(nearest_distance) != len(ids):
        raise ValueError(
            f"ids has {len(ids)} rows but nearest_similarity has {len(nearest_distance)}"
        )
    lists = []
    for row, distance in zip(ids, nearest_distance, strict=True):
        known = [label for label in row if label is not None]
        position = 0 if distance > distance_threshold else 1
        labels = known[:position] + [NEW_INDIVIDUAL] + known[position:]
        for filler in frequent_ids:
            if len(labels) >= n_predictions:
                break
            if filler not in labels:
                labels.append(filler)
        lists.append(labels[:n_predictions])
    return lists


def _first_hit_rank(ids: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of the truth among ``ids`` (n, m), 0 if absent."""
    hits = ids == truth[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def map5_by_threshold(
    ids: np.ndarray,
    nearest_similarity: np.ndarray,
    truth: Sequence[str],
    distance_thresholds: Sequence[float],
) -> pd.DataFrame:
    """MAP@5 (overall, known, new) for each threshold, without building the lists.

    ``ids`` (n, >=4) are the ranked known ids; ``new_individual`` goes first if the nearest
    distance exceeds the threshold, else second. A known truth at id rank ``r`` then scores
    ``1 / (r + 1)`` when new comes first; when it comes second, 1 for r = 1 and
    ``1 / (r + 1)`` after; within five labels. A new truth scores 1 or 1/2. Equals
    ``metrics.map_at_k`` of :func:`insert_new_individual`'s lists whenever no padding is
    needed (each query has at least four distinct individuals among its neighbours); padded
    ids count as misses here.
    """
    truth = np.asarray(truth, dtype=object)
    is_new = truth == NEW_INDIVIDUAL
    rank = _first_hit_rank(np.asarray(ids, dtype=object)[:, : N_PREDICTIONS - 1], truth)
    distance = 1.0 - np.asarray(nearest_similarity, dtype=np.float64)
    rows = []
    for threshold in distance_thresholds:
        new_first = distance > threshold
        known_score = np.where(
            rank == 0,
            0.0,
            np.where(new_first, 1.0 / (rank + 1), np.where(rank == 1, 1.0, 1.0 / (rank + 1))),
        )
        score = np.where(is_new, np.where(new_first, 1.0, 0.5), known_score)
        rows.append(
            {
                "threshold": float(threshold),
                "map5": float(score.mean()),
                "map5_known": float(score[~is_new].mean()) if (~is_new).any() else float("nan"),
                "map5_new": float(score[is_new].mean()) if is_new.any() else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def search_k_and_threshold(
    similarities: np.ndarray,
    indices: np.ndarray,
    gallery_labels: Sequence[str],
    truth: Sequence[str],
    rule: str = "vote",
    k_grid: Sequence[int] = K_GRID,
    distance_thresholds: Sequence[float] | None = None,
) -> dict:
    """Choose ``k`` and the distance threshold that maximise MAP@5 on a validation fold.

    ``similarities`` and ``indices`` (n, k_max) hold at least ``max(k_grid)`` neighbours, or
    the grid is cut to what they hold. Validation images of individuals absent from the
    gallery must have truth ``new_individual``, so known and new images are scored together,
    the way the test set mixes them. Ties between settings go to the smaller k, then the
    smaller threshold.

    Returns
    -------
    dict
        ``k``, ``threshold``, ``map5`` (best), and ``curve``: a DataFrame with one row per
        (k, threshold) and columns ``k, threshold, map5, map5_known, map5_new``.
    """
    k_available = similarities.shape[1]
    k_values = sorted({min(k, k_available) for k in k_grid})
    if distance_thresholds is None:
        distance_thresholds = np.round(np.arange(0.0, 1.0001, 0.02), 2)
    curves = []
    for k in k_values:
        ids, _ = rank_individuals(similarities[:, :k], indices[:, :k], gallery_labels, rule)
        curve = map5_by_threshold(ids, similarities[:, 0], truth, distance_thresholds)
        curve.insert(0, "k", k)
        curves.append(curve)
    curve = pd.concat(curves, ignore_index=True)
    best = curve.sort_values(["map5", "k", "threshold"], ascending=[False, True, True]).iloc[0]
    return {
        "k": int(best["k"]),
        "threshold": float(best["threshold"]),
        "map5": float(best["map5"]),
        "curve": curve,
    }


def predict(
    gallery_embeddings: np.ndarray,
    gallery_labels: Sequence[str],
    query_embeddings: np.ndarray,
    k: int = 50,
    distance_threshold: float = 0.62,
    rule: str = "vote",
    frequent_ids: Sequence[str] = (),
) -> tuple[list[list[str]], np.ndarray]:
    """The whole head: neighbours, ranking, ``new_individual``; returns lists and scores.

    Returns
    -------
    predictions : list of five-label lists, one per query
    scores : float32 (n_queries, 5): for each label, its score (``new_individual``:
        ``1 - distance_threshold``; padding: 0)
    """
    k = min(k, len(gallery_embeddings))
    similarities, indices = cosine_topk(gallery_embeddings, query_embeddings, k)
    ids, id_scores = rank_individuals(similarities, indices, gallery_labels, rule)
    predictions = insert_new_individual(ids, similarities[:, 0], distance_threshold, frequent_ids)
    scores = np.zeros((len(predictions), N_PREDICTIONS), dtype=np.float32)
    for row, labels in enumerate(predictions):
        lookup = {
            label: score
            for label, score in zip(ids[row], id_scores[row], strict=True)
            if label is not None
        }
        for column, label in enumerate(labels):
            scores[row, column] = (
                1.0 - distance_threshold if label == NEW_INDIVIDUAL else lookup.get(label, 0.0)
            )
    return predictions, scores


def write_predictions(
    path: str | os.PathLike,
    image_names: Sequence[str],
    predictions: Sequence[Sequence[str]],
    scores: np.ndarray,
) -> Path:
    """Write a predictions file (``image, predictions, scores``); never overwrites."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; predictions are written once per run")
    if not len(image_names) == len(predictions) == len(scores):
        raise ValueError(
            f"lengths differ: {len(image_names)} images, {len(predictions)} lists, "
            f"{len(scores)} scores"
        )
    frame = pd.DataFrame(
        {
            "image": list(image_names),
            "predictions": [" ".join(labels) for labels in predictions],
            "scores": [" ".join(f"{value:.5f}" for value in row) for row in np.asarray(scores)],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """Read a predictions file; adds ``labels`` (lists) and ``score_values`` (float lists)."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("image", "predictions", "scores") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    frame["labels"] = [field.split() for field in frame["predictions"]]
    frame["score_values"] = [[float(v) for v in field.split()] for field in frame["scores"]]
    return frame
