"""The k-nearest-neighbour head: exact cosine top-k, decision rules and their tuning.

``cosine_topk`` finds, for each query embedding, the ``k`` most cosine-similar gallery
(training) embeddings, exactly. ``rank_individuals`` turns neighbours into five distinct
individual ids per query by the paper's vote or by the public notebooks' maximum similarity;
``insert_new_individual`` places ``new_individual`` where its distance threshold puts it;
``search_k_and_threshold`` picks ``k`` and the threshold on a validation fold.

"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import outputs
from whaleutils.contracts.metrics import N_PREDICTIONS, NEW_INDIVIDUAL

K_GRID = (1, 3, 5, 10, 20, 50, 75, 100)
RULES = outputs.KNN_RULES  # rank_individuals' rules ("vote", "max"); "best" searches both
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
    normalized = []
    for name, array in (("gallery", gallery), ("queries", queries)):
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        bad = np.flatnonzero(~np.isfinite(norms[:, 0]))
        if len(bad):
            raise ValueError(f"{name} row {bad[0]} contains NaN or infinite values")
        normalized.append(array / np.maximum(norms, 1e-12))
    return normalized[0], normalized[1]


BLOCK = 64  # gallery columns per block in the two-level selection


def _sorted_topk(similarities: np.ndarray, candidates: np.ndarray, k: int):
    """Top ``k`` of each row of ``similarities`` (n, C) over gallery ids ``candidates`` (n, C):
    decreasing similarity, ties by increasing gallery index."""
    order = np.lexsort((candidates, -similarities), axis=-1)[:, :k]
    return np.take_along_axis(similarities, order, axis=1), np.take_along_axis(
        candidates, order, axis=1
    )


def _rescore(gallery: np.ndarray, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Float32 similarities (b, C) of each query (b, d) to its gallery rows ``ids`` (b, C).

    Each value is the same float32 sum whatever the batch around it: a matrix product may
    block its sums differently for another number of rows (another chunk size) and round
    differently in the last bits, which would make results depend on ``memory_mb``.
    """
    return (gallery[ids] * queries[:, None, :]).sum(axis=2, dtype=np.float32)


TIE_SLACK = 8  # extra neighbours fetched beyond k, so that re-scoring decides the k-th place


@functools.lru_cache(maxsize=1)
def _searcher():
    """The TensorFlow part of the search, built once (importing TensorFlow only when used)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def candidates(query_block, gallery, n_candidates, n_blocks):
        """Two-level top-C of ``query_block @ gallery.T`` without sorting whole rows.

        Block maxima over ``BLOCK`` consecutive gallery rows pick the ``n_blocks`` best blocks;
        top-C runs on their values only. Returns the C values, their gallery ids, and the
        largest block maximum left out (an upper bound on every value not gathered).
        """
        approx = tf.cast(tf.matmul(query_block, gallery, transpose_b=True), tf.float32)
        blocks = tf.reshape(approx, (tf.shape(approx)[0], -1, BLOCK))  # gallery padded to blocks
        rows = tf.shape(approx)[0]
        block_values, block_ids = tf.math.top_k(tf.reduce_max(blocks, axis=2), n_blocks + 1)
        kept = block_ids[:, :n_blocks]
        gathered = tf.reshape(tf.gather(blocks, kept, batch_dims=1), (rows, -1))
        values, positions = tf.math.top_k(gathered, n_candidates)
        ids = tf.gather(kept, positions // BLOCK, batch_dims=1) * BLOCK + positions % BLOCK
        return values, ids, block_values[:, n_blocks]

    @tf.function(reduce_retracing=True)
    def exact_topk(query_block, gallery, k):
        return tf.math.top_k(tf.matmul(query_block, gallery, transpose_b=True), k)

    return tf, candidates, exact_topk


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
        ``float32``: float32 products. ``bf16``: bfloat16 products propose
        ``C = min(n, max(2k, k + 64))`` candidates per query, re-scored exactly in float32.
        ``auto``: ``bf16`` where the CPU multiplies bfloat16 natively, else ``float32``.
        Either way the candidates are chosen in two levels (the best ``C`` blocks of 64
        gallery rows by their maximum, then the best ``C`` values inside them), which avoids
        sorting whole rows, and any query whose candidates might miss a true neighbour (see
        Notes) is recomputed with a full float32 ``top_k``: the result is exact.
    memory_mb : float, default=512
        Bound on the working memory beyond the inputs: queries go in chunks of
        ``floor(memory_mb * 2**20 / (10 * n_gallery + 4 * C * (d + 2)))`` rows (a similarity row
        in bfloat16, float32 and padded float32, plus the gathered candidates); the normalised
        copies of the inputs (and a bfloat16 copy of the gallery) come on top.

    Returns
    -------
    similarities : ndarray of shape (n_queries, k), float32
        Decreasing along each row.
    indices : ndarray of shape (n_queries, k), int64
        Gallery rows; equal similarities are ordered by increasing gallery index.

    Notes
    -----
    Exactness of the candidates. With ``q' = bf16(q)``, ``g' = bf16(g)`` and the product
    rounded to bf16, a similarity ``s`` is approximated by ``a`` with ``|a - s| <= err(a) =
    |dq| + max|dg| + |dq| max|dg| + u |a| (1 + u) + 1e-5`` where ``dq = q - q'`` (per
    query), ``dg`` likewise (per gallery row), ``u = 2**-8``, and 1e-5 covers float32
    accumulation (for ``float32``, ``err = 1e-5``). Every gallery row that is not a candidate
    has ``a <= b``, the larger of the C-th candidate value and the best block left out; every
    true top-k similarity is at least ``a_k - err(a_k)``. If ``b + err(b) < a_k - err(a_k)``,
    no true neighbour was missed; otherwise the query is recomputed exactly.
    """
    gallery, queries = _validate(gallery, queries, k)
    if method == "auto":
        method = "bf16" if cpu_has_bf16() else "float32"
    if method not in ("bf16", "float32"):
        raise ValueError(f"method must be 'auto', 'bf16' or 'float32', got method={method!r}")
    tf, candidates, exact_topk = _searcher()
    n_gallery, dim = gallery.shape
    gallery_f32 = tf.constant(gallery)
    out_similarities = np.empty((len(queries), k), dtype=np.float32)
    out_indices = np.empty((len(queries), k), dtype=np.int64)
    n_candidates = min(n_gallery, max(2 * k, k + 64))
    n_blocks = n_candidates
    chunk = max(1, int(memory_mb * 2**20 // (10 * n_gallery + 4 * n_candidates * (dim + 2))))
    two_level = -(-n_gallery // BLOCK) > n_blocks + 1
    k_fetch = tf.constant(min(n_gallery, k + TIE_SLACK))

    def full_topk(query_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by a full product, re-scored so that the result is the same in any chunk."""
        _, ids = exact_topk(query_rows, gallery_f32, k_fetch)
        ids = ids.numpy().astype(np.int64)
        return _sorted_topk(_rescore(gallery, query_rows, ids), ids, k)

    if not two_level:  # a small gallery: one full top_k per chunk is cheap
        for start in range(0, len(queries), chunk):
            rows = slice(start, start + chunk)
            out_similarities[rows], out_indices[rows] = full_topk(queries[rows])
        return out_similarities, out_indices

    unit = BF16_UNIT_ROUNDOFF if method == "bf16" else 0.0
    # Zero rows pad the gallery to whole blocks; they are dropped from the candidates below.
    padding = tf.zeros(((-n_gallery) % BLOCK, dim), tf.float32)
    gallery_search = tf.concat([gallery_f32, padding], axis=0)
    gallery_rounding = 0.0
    if method == "bf16":
        rounded = tf.cast(gallery_search, tf.bfloat16)
        gallery_rounding = float(
            tf.reduce_max(tf.norm(gallery_search - tf.cast(rounded, tf.float32), axis=1))
        )
        gallery_search = rounded
    margin = unit * (1 + unit)
    for start in range(0, len(queries), chunk):
        rows = slice(start, start + chunk)
        query_block = tf.constant(queries[rows])
        query_search = tf.cast(query_block, gallery_search.dtype)
        values, ids, left_out = candidates(
            query_search, gallery_search, tf.constant(n_candidates), tf.constant(n_blocks)
        )
        values, left_out, ids = values.numpy(), left_out.numpy(), ids.numpy().astype(np.int64)
        real = ids < n_gallery
        ids = np.where(real, ids, 0)
        exact = _rescore(gallery, queries[rows], ids)
        similarities, indices = _sorted_topk(np.where(real, exact, -np.inf), ids, k)

        query_rounding = tf.norm(query_block - tf.cast(query_search, tf.float32), axis=1).numpy()
        input_error = query_rounding + gallery_rounding + query_rounding * gallery_rounding + 1e-5
        kth, bound = values[:, k - 1], np.maximum(values[:, -1], left_out)
        safe = bound + input_error + margin * np.abs(bound) < kth - input_error - margin * np.abs(
            kth
        )
        safe &= real.sum(axis=1) >= k  # padding rows took no place of a neighbour
        unsafe = np.flatnonzero(~safe)
        if len(unsafe):
            similarities[unsafe], indices[unsafe] = full_topk(queries[rows][unsafe])
        out_similarities[rows], out_indices[rows] = similarities, indices
    return out_similarities, out_indices


def cosine_topk_excluding(
    gallery: np.ndarray, queries: np.ndarray, k: int, own_rows: np.ndarray, **options
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`cosine_topk` where query ``i`` never finds gallery row ``own_rows[i]`` (its own
    photo; -1: none), or any of the rows ``own_rows[i, :]`` when ``own_rows`` is (n, r) (its
    photo and its mirror image in a flipped gallery). Same shapes and order as
    :func:`cosine_topk`, with ``k <= n_gallery - r`` where any row is excluded.

    Examples
    --------
    >>> gallery = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> cosine_topk_excluding(gallery, gallery[:2], 2, np.array([0, -1]))[1].tolist()
    [[1, 2], [1, 0]]
    >>> cosine_topk_excluding(gallery, gallery[:1], 1, np.array([[0, 1]]))[1].tolist()
    [[2]]
    """
    given = np.asarray(own_rows, dtype=np.int64)
    own_rows = given[:, None] if given.ndim == 1 else given
    if own_rows.ndim != 2 or len(own_rows) != len(queries):
        raise ValueError(
            f"own_rows must have one entry per query ({len(queries)}), or one row of entries, "
            f"got shape {given.shape}"
        )
    if not (own_rows >= 0).any():
        return cosine_topk(gallery, queries, k, **options)
    excluded = int((own_rows >= 0).sum(axis=1).max())
    if k > len(gallery) - excluded:
        raise ValueError(
            f"k must be at most {len(gallery) - excluded} (the gallery less a query's own "
            f"rows), got k={k}"
        )
    similarities, indices = cosine_topk(gallery, queries, k + excluded, **options)
    own = ((indices[:, :, None] == own_rows[:, None, :]) & (own_rows[:, None, :] >= 0)).any(axis=2)
    keep = ~own & (np.cumsum(~own, axis=1) <= k)  # the first k rows that are not its own
    return (
        similarities[keep].reshape(len(queries), k),
        indices[keep].reshape(len(queries), k),
    )


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


THRESHOLD_GRID = np.round(np.arange(0.0, 1.0001, 0.02), 2)  # the paper's 0.62 lies on it


def share_threshold(nearest_similarity: np.ndarray, share: float) -> float:
    """The distance threshold that puts ``new_individual`` first for a ``share`` of the queries:
    the ``1 - share`` quantile of their nearest cosine distances (the 1st-place Happywhale
    solution set new_individual for about 16.5% of the test photos this way, instead of
    carrying a validated distance over).

    >>> share_threshold(1.0 - np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]), 0.3)
    0.73
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got share={share}")
    distance = 1.0 - np.asarray(nearest_similarity, dtype=np.float64)
    if distance.size == 0:
        raise ValueError("no queries to take a share of")
    return round(float(np.quantile(distance, 1.0 - share)), 6)


def candidate_thresholds(nearest_similarity: np.ndarray, n_quantiles: int = 101) -> np.ndarray:
    """Distance thresholds worth trying: the fixed grid 0, 0.02, ..., 1 plus ``n_quantiles``
    quantiles of the observed nearest distances, sorted and unique.

    MAP@5 only changes where the threshold crosses an observed nearest distance, so the
    quantiles resolve the search at whatever scale the embedding has: an embedding whose
    nearest distances all lie below 0.02 (a barely trained model) would otherwise be searched
    with two useful values, 0 and 0.02.
    """
    distance = 1.0 - np.asarray(nearest_similarity, dtype=np.float64)
    observed = np.quantile(distance, np.linspace(0.0, 1.0, n_quantiles)) if distance.size else []
    return np.unique(np.concatenate([THRESHOLD_GRID, np.round(observed, 6)]))


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
    smaller threshold. ``distance_thresholds`` defaults to :func:`candidate_thresholds`.

    Returns
    -------
    dict
        ``k``, ``threshold``, ``map5`` (best), and ``curve``: a DataFrame with one row per
        (k, threshold) and columns ``k, threshold, map5, map5_known, map5_new``.
    """
    k_available = similarities.shape[1]
    k_values = sorted({min(k, k_available) for k in k_grid})
    if distance_thresholds is None:
        distance_thresholds = candidate_thresholds(similarities[:, 0])
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


def predict_from_neighbours(
    similarities: np.ndarray,
    indices: np.ndarray,
    gallery_labels: Sequence[str],
    distance_threshold: float = 0.62,
    rule: str = "vote",
    frequent_ids: Sequence[str] = (),
) -> tuple[list[list[str]], np.ndarray]:
    """Five labels per query from its neighbours (n, k) (as from :func:`cosine_topk`):
    :func:`rank_individuals`, then :func:`insert_new_individual`.

    Returns
    -------
    predictions : list of five-label lists, one per query
    scores : float32 (n_queries, 5): for each label, its score (``new_individual``:
        ``1 - distance_threshold``; padding: 0)
    """
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


def predict(
    gallery_embeddings: np.ndarray,
    gallery_labels: Sequence[str],
    query_embeddings: np.ndarray,
    k: int = 50,
    distance_threshold: float = 0.62,
    rule: str = "vote",
    frequent_ids: Sequence[str] = (),
) -> tuple[list[list[str]], np.ndarray]:
    """The whole head: the ``k`` nearest gallery rows (``k`` cut to the gallery), then
    :func:`predict_from_neighbours`; returns five-label lists and their scores (n, 5)."""
    k = min(k, len(gallery_embeddings))
    similarities, indices = cosine_topk(gallery_embeddings, query_embeddings, k)
    return predict_from_neighbours(
        similarities, indices, gallery_labels, distance_threshold, rule, frequent_ids
    )
