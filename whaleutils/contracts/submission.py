"""Prediction files: submissions and the notebooks' predictions with their scores.

A *submission* is ``image,predictions`` with five space-separated labels per test image. A valid
submission lists exactly the test images, once each, and gives each five distinct labels, every
one a training individual id or ``new_individual``.

A *predictions file* (``oof_predictions.csv`` for the validation fold, ``test_predictions.csv``
for the test images; what the blend reads) adds ``scores``: the five labels' scores, space
separated, best first. :func:`read_predictions` reads both kinds.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import N_PREDICTIONS, NEW_INDIVIDUAL
from whaleutils.contracts.tables import read_csv

SUBMISSION_COLUMNS = ("image", "predictions")
PREDICTION_COLUMNS = (*SUBMISSION_COLUMNS, "scores")


class SubmissionError(ValueError):
    """A submission file that breaks the format; ``problems`` lists one message per bad row."""

    def __init__(self, path, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = "\n".join(problems[:10])
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(f"{path}: {len(problems)} problem(s)\n{shown}{more}")


def read_predictions(path: str | os.PathLike, with_scores: bool = False) -> pd.DataFrame:
    """Read a submission or predictions file as strings, adding ``labels`` (a list per row)
    and, ``with_scores``, ``score_values`` (a float list per row).

    Raises
    ------
    SubmissionError
        Naming the file and the columns missing (``scores`` only ``with_scores``), or the line
        of a score that is not a number.
    """
    path = Path(path)
    frame = read_csv(path)
    required = PREDICTION_COLUMNS if with_scores else SUBMISSION_COLUMNS
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise SubmissionError(path, [f"missing column(s) {missing}; found {list(frame.columns)}"])
    frame["labels"] = [field.split() for field in frame["predictions"]]
    if with_scores:
        values = []
        for row, field in enumerate(frame["scores"]):
            try:
                values.append([float(value) for value in field.split()])
            except ValueError:
                raise SubmissionError(
                    path, [f"{path.name} line {row + 2}: scores {field!r} are not numbers"]
                ) from None
        frame["score_values"] = values
    return frame


def check_submission(
    frame: pd.DataFrame,
    test_images: Sequence[str] | None = None,
    known_ids: Iterable[str] | None = None,
    file_name: str = "submission.csv",
) -> list[str]:
    """Every problem of a submission, one message per bad row, naming the CSV line.

    Line numbers count the header as line 1, as an editor shows them.

    Parameters
    ----------
    frame : DataFrame with ``image`` and ``predictions`` (as from :func:`read_predictions`)
    test_images : the expected image names, or None to skip the coverage check
    known_ids : the training individual ids, or None to skip the label check
    """
    problems = []
    known = None if known_ids is None else set(known_ids) | {NEW_INDIVIDUAL}
    seen: dict[str, int] = {}
    for row, (image, field) in enumerate(zip(frame["image"], frame["predictions"], strict=True)):
        line = row + 2
        where = f"{file_name} line {line} ({image!r})"
        if image in seen:
            problems.append(f"{where}: image listed twice (first at line {seen[image]})")
        else:
            seen[image] = line
        labels = field.split()
        if len(labels) != N_PREDICTIONS:
            problems.append(f"{where}: {len(labels)} predictions, expected {N_PREDICTIONS}")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            problems.append(f"{where}: repeated prediction(s) {duplicates}")
        if known is not None:
            unknown = [label for label in labels if label not in known]
            if unknown:
                problems.append(f"{where}: unknown individual id(s) {unknown[:3]}")
    if test_images is not None:
        expected = set(test_images)
        missing = [image for image in test_images if image not in seen]
        if missing:
            problems.append(
                f"{file_name}: {len(missing)} test image(s) missing, e.g. {missing[:3]}"
            )
        extra = [image for image in seen if image not in expected]
        if extra:
            problems.append(
                f"{file_name}: {len(extra)} image(s) not in the test set, e.g. {extra[:3]}"
            )
    return problems


def write_submission(
    path: str | os.PathLike,
    images: Sequence[str],
    predictions: Sequence[Sequence[str]],
    overwrite: bool = False,
) -> Path:
    """Write a submission after checking its rows; refuses to replace an existing file
    unless ``overwrite``.

    Raises
    ------
    SubmissionError
        If any row breaks the format (nothing is written).
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if len(images) != len(predictions):
        raise ValueError(
            f"images and predictions differ in length: {len(images)} != {len(predictions)}"
        )
    frame = pd.DataFrame(
        {"image": list(images), "predictions": [" ".join(labels) for labels in predictions]}
    )
    problems = check_submission(frame, file_name=path.name)
    if problems:
        raise SubmissionError(path, problems)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


def write_predictions(
    path: str | os.PathLike,
    image_names: Sequence[str],
    predictions: Sequence[Sequence[str]],
    scores: np.ndarray,
    overwrite: bool = False,
) -> Path:
    """Write a predictions file (``image, predictions, scores``); an existing file is
    replaced only with ``overwrite`` (a notebook rewriting its own outputs).

    ``scores`` is array-like (n, 5), one score per label."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    scores = np.asarray(scores, dtype=np.float64)
    if not len(image_names) == len(predictions) == len(scores):
        raise ValueError(
            f"lengths differ: {len(image_names)} images, {len(predictions)} lists, "
            f"{len(scores)} scores"
        )
    frame = pd.DataFrame(
        {
            "image": list(image_names),
            "predictions": [" ".join(labels) for labels in predictions],
            "scores": [" ".join(f"{value:.5f}" for value in row) for row in scores],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path
