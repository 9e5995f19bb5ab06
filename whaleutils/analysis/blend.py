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
O(n_images), not a full re-blend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.analysis import submission
from whaleutils.analysis.metrics import N_PREDICTIONS, NEW_INDIVIDUAL

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


def _check_alphas(alphas, n_members: int) -> np.ndarray:
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
    alphas = _check_alphas(alphas, len(member_predictions))
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


def load_members(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[list[list[str]]]]:
    """Read prediction files (``submission.read_predictions``) of several members, aligned
    to the first file's image order.

    Raises
    ------
    ValueError
        Naming the file whose images differ from the first file's (missing or extra, with
        examples) or that lists an image twice.
    """
    if not paths:
        raise ValueError("no prediction files given")
    images, members = None, []
    for path in paths:
        frame = submission.read_predictions(path)
        duplicated = frame["image"][frame["image"].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"{path}: image(s) listed twice, e.g. {duplicated[:3]}")
        lookup = dict(zip(frame["image"], frame["labels"], strict=True))
        if images is None:
            images = frame["image"].tolist()
        else:
            missing = [i for i in images if i not in lookup]
            extra = sorted(set(lookup) - set(images))
            if missing or extra:
                raise ValueError(
                    f"{path}: covers other images than {paths[0]}: {len(missing)} missing "
                    f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})"
                )
        members.append([lookup[i] for i in images])
    return images, members


# ------------------------------------------------------------------ members across folds


@dataclass(frozen=True)
class Member:
    """One blend member: a trained model's predictions in ``folder`` (``oof_predictions.csv``
    for its validation fold, ``test_predictions.csv``; ``{train,valid,test}.npz`` too for
    embedding models). ``name`` is the same on every fold (e.g. ``keras-efficientnet-b5 380px
    epoch-010``): members of one name are one model trained on different folds."""

    name: str
    fold: int
    n_folds: int
    seed: int
    folder: Path


def find_members(inputs_dir: str | os.PathLike, notebooks: Sequence[str]) -> list[Member]:
    """Every member the ``notebooks``' outputs under ``inputs_dir`` hold: each output folder
    (``environment.notebook_outputs``: one per fold or variant), the snapshots it embedded
    (``snapshots/epoch-NNN/``, see :func:`snapshot_members`) and its fused head (``local/``,
    ``matching.fused_head``).

    The name is ``scores.json``'s ``member`` (notebook 04 writes its backbone and image size),
    else the notebook's name; snapshots add their epoch. The fold comes from ``scores.json``'s
    ``split``.

    Raises
    ------
    ValueError
        If an output has no ``split`` (written before folds were recorded: run it again), if the
        outputs come from different fold assignments (n_folds, seed), or if two outputs give the
        same name on the same fold (set notebook 04's ``member`` parameter to tell them apart).
    """
    from whaleutils.suite import environment, outputs

    members: list[Member] = []
    for notebook in notebooks:
        for folder in environment.notebook_outputs(inputs_dir, notebook):
            scores = outputs.read_scores(folder)
            if "split" not in scores:
                raise ValueError(
                    f"{folder / outputs.SCORES}: no 'split' (fold, n_folds, seed); this output "
                    f"predates fold records: run notebook {notebook} again"
                )
            split = scores["split"]
            name = scores.get("member") or notebook
            common = (int(split["fold"]), int(split["n_folds"]), int(split["seed"]))
            members.append(Member(name, *common, folder))
            for snapshot in sorted((folder / "snapshots").glob("epoch-*")):
                if (snapshot / "oof_predictions.csv").is_file():
                    members.append(Member(f"{name} {snapshot.name}", *common, snapshot))
            if (folder / "local" / "oof_predictions.csv").is_file():  # matching.fused_head
                members.append(Member(f"{name} local", *common, folder / "local"))
    assignments = {(m.n_folds, m.seed) for m in members}
    if len(assignments) > 1:
        examples = {(m.n_folds, m.seed): m.folder for m in members}
        raise ValueError(
            "the members come from different fold assignments (n_folds, seed): "
            + "; ".join(f"{key} in {folder}" for key, folder in sorted(examples.items()))
        )
    seen: dict[tuple[str, int], Path] = {}
    for member in members:
        other = seen.setdefault((member.name, member.fold), member.folder)
        if other != member.folder:
            raise ValueError(
                f"two members named {member.name!r} on fold {member.fold}: {other} and "
                f"{member.folder}; give them different `member` names"
            )
    return members


@dataclass
class OutOfFold:
    """Out-of-fold predictions of every member name over the images some member of that name
    did not train on. ``images`` in the order of ``fold_of_image``; ``folds`` (n,) their folds;
    ``names`` the member names (first-seen order); ``predictions[j][i]`` name j's five labels for
    image i, from its member of that image's fold, or None if it has no member there."""

    images: list[str]
    folds: np.ndarray
    names: list[str]
    predictions: list[list[list[str] | None]]

    def coverage(self) -> dict[str, int]:
        """Images each member name predicted."""
        return {
            name: sum(row is not None for row in rows)
            for name, rows in zip(self.names, self.predictions, strict=True)
        }


def assemble_oof(members: Sequence[Member], fold_of_image: Mapping[str, int]) -> OutOfFold:
    """Join the members' ``oof_predictions.csv`` by name: each image's prediction comes from the
    member of that name whose validation fold holds the image, i.e. a model that did not train
    on it (``fold_of_image``: every training image's fold, ``data.make_folds``).

    Raises
    ------
    ValueError
        Naming the file and image if a member's out-of-fold file holds an image outside its own
        fold (its model trained on it), or an image not in ``fold_of_image``.
    """
    names = list(dict.fromkeys(member.name for member in members))
    by_image: dict[str, dict[str, list[str]]] = {}
    for member in members:
        path = member.folder / "oof_predictions.csv"
        frame = submission.read_predictions(path)
        for image, labels in zip(frame["image"], frame["labels"], strict=True):
            fold = fold_of_image.get(image)
            if fold is None:
                raise ValueError(f"{path}: image {image!r} is not a training image of these folds")
            if fold != member.fold:
                raise ValueError(
                    f"{path}: image {image!r} lies in fold {fold}, but this member was "
                    f"validated on fold {member.fold} and so trained on it"
                )
            by_image.setdefault(image, {})[member.name] = list(labels)
    images = [image for image in fold_of_image if image in by_image]
    return OutOfFold(
        images,
        np.array([fold_of_image[image] for image in images], dtype=np.int64),
        names,
        [[by_image[image].get(name) for image in images] for name in names],
    )


def fold_member_alphas(members: Sequence[Member], names: Sequence[str], alphas) -> list[float]:
    """Each member's weight on the test set: its name's weight shared among that name's
    members (one per fold), so a name weighs the same whatever its number of folds."""
    alpha_of = dict(zip(names, _check_alphas(alphas, len(names)), strict=True))
    folds_of = pd.Series([m.name for m in members]).value_counts().to_dict()
    return [float(alpha_of[m.name] / folds_of[m.name]) for m in members]


def load_member_embeddings(
    folders: Sequence[str | os.PathLike], part: str, image_names: Sequence[str]
) -> list[np.ndarray]:
    """Each member folder's ``<part>.npz`` embeddings (schema in ``retrieval.embed``), checked
    to hold exactly ``image_names`` in that order, so that rows can be joined.

    Raises
    ------
    ValueError
        Naming the file and the first row whose image differs.
    """
    from whaleutils.retrieval import embed

    expected = np.asarray(image_names, dtype=str)
    result = []
    for folder in folders:
        path = Path(folder) / f"{part}.npz"
        payload = embed.load_embeddings(path)
        names = payload["image_names"]
        if len(names) != len(expected) or not np.array_equal(names, expected):
            differ = np.flatnonzero(names[: len(expected)] != expected[: len(names)])
            row = int(differ[0]) if len(differ) else min(len(names), len(expected))
            found = str(names[row]) if row < len(names) else "(end of file)"
            wanted = str(expected[row]) if row < len(expected) else "(no more images)"
            raise ValueError(
                f"{path}: rows do not align with the split's {part} images: row {row} is "
                f"{found!r}, expected {wanted!r} ({len(names)} rows, expected {len(expected)})"
            )
        result.append(payload["embeddings"])
    return result


SNAPSHOT_FILES = (
    "train.npz",
    "valid.npz",
    "test.npz",
    "oof_predictions.csv",
    "test_predictions.csv",
)


def snapshot_members(
    split,
    member_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int,
    final_epoch: int | None = None,
) -> list[Path]:
    """Every snapshot embedding model a trained notebook saved (``member_folder/run/snapshots/
    epoch-NNN.keras``; none for most notebooks) as a blend member: embedded at its own image
    size with the notebook's TTA (``embed.embed_split``) and run through the KNN head with the
    notebook's settings (its ``scores.json``: ``heads.settings_predictions``). Writes
    ``out_dir/<snapshot>/`` with ``{train,valid,test}.npz`` and ``{oof,test}_predictions.csv``;
    returns those folders. The snapshot of ``final_epoch`` is skipped: it is the notebook's own
    model, already a member."""
    from whaleutils.retrieval import embed, heads
    from whaleutils.suite import outputs
    from whaleutils.training import models

    paths = [
        path
        for path in sorted((Path(member_folder) / "run" / "snapshots").glob("epoch-*.keras"))
        if final_epoch is None or path.stem != f"epoch-{final_epoch:03d}"
    ]
    if not paths:
        return []
    run = outputs.read_run_settings(member_folder)
    settings, tta = run.scores, run.tta
    folders = []
    for path in paths:
        folder = Path(out_dir) / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        embeddings = embed.embed_split(
            models.load_model(path), split, batch_size, folder, tta, str(path),
            mirrored_gallery=run.knn.flipped_gallery,
        )  # fmt: skip
        for name, part in (("oof_predictions.csv", "valid"), ("test_predictions.csv", "test")):
            lists, scores = heads.settings_predictions(split, embeddings, part, settings)
            submission.write_predictions(
                folder / name, split.frame(part)["image"], lists, scores, overwrite=True
            )
        folders.append(folder)
    return folders


def oof_truth_and_galleries(
    data_dir, oof: OutOfFold, n_folds: int, seed: int
) -> tuple[list[str], list[dict[str, int]]]:
    """Each out-of-fold image's true label on its own fold (``new_individual`` for individuals
    absent from that fold's training part) and the photo counts of the gallery it was matched
    against (its fold's validation gallery, ``splits.Split.photo_counts``): the blend's truth
    and frequency penalty. Images of one fold share one counts mapping."""
    from whaleutils.retrieval import splits

    truth: list = [None] * len(oof.images)
    galleries: list = [None] * len(oof.images)
    for fold in sorted(set(oof.folds.tolist())):
        split = splits.load_split(data_dir, fold, n_folds, seed)
        rows = np.flatnonzero(oof.folds == fold)
        counts = split.photo_counts("valid")
        for row, label in zip(
            rows, split.truth("valid", [oof.images[i] for i in rows]), strict=True
        ):
            truth[row], galleries[row] = label, counts
    return truth, galleries


def member_scores(split, oof: OutOfFold, truth, members, test_images, test_members):
    """One row per member name: its folds, the images it predicted out of fold and their
    MAP@5, and the test MAP@5 (None without a solution) of its fold models' predictions joined
    by plain rank voting (a single fold: its own predictions): the blend notebook's table."""
    from whaleutils.retrieval import heads

    rows = []
    for name, predictions in zip(oof.names, oof.predictions, strict=True):
        covered = [i for i, row in enumerate(predictions) if row is not None]
        own = [test_members[k] for k, member in enumerate(members) if member.name == name]
        test = (
            own[0]
            if len(own) == 1
            else rank_blend(own, [1.0] * len(own), {}, frequency_penalty=0.0)
        )
        test_scores = heads.split_scores(split, "test", test_images, test) or {}
        rows.append(
            {
                "model": name,
                "folds": len(own),
                "oof_images": len(covered),
                "oof_map5": heads.score(
                    [truth[i] for i in covered], [predictions[i] for i in covered]
                )["map5"],
                "test_map5": test_scores.get("map5"),
            }
        )
    return pd.DataFrame(rows)


def blend_rows(results: dict[str, tuple[dict, int]]) -> pd.DataFrame:
    """Rows of :func:`member_scores`' table for blends: name -> (its scores, as
    ``heads.write_predictions`` or ``heads.knn_head`` return them; the images it predicted out
    of fold)."""
    return pd.DataFrame(
        [
            {
                "model": name,
                "folds": None,
                "oof_images": covered,
                "oof_map5": result["valid"]["map5"],
                "test_map5": (result["test"] or {}).get("map5"),
            }
            for name, (result, covered) in results.items()
        ]
    )


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
    from whaleutils.retrieval.embed import l2_normalize

    n = len(member_embeddings[0])
    parts = []
    for j, (vectors, weight) in enumerate(zip(member_embeddings, weights, strict=True)):
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != n:
            raise ValueError(f"member {j} embeddings have shape {vectors.shape}; expected ({n}, d)")
        parts.append(l2_normalize(vectors) * np.float32(np.sqrt(weight / weights.sum())))
    return l2_normalize(np.concatenate(parts, axis=1))
