"""Submission files: ``image,predictions`` with five space-separated labels per test image.

A valid submission lists exactly the test images, once each, and gives each five distinct
labels, every one a training individual id or ``new_individual``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from whaleutils.data import SUBMISSION_COLUMNS
from whaleutils.metrics import NEW_INDIVIDUAL

N_PREDICTIONS = 5


class SubmissionError(ValueError):
    """A submission file that breaks the format; ``problems`` lists one message per bad row."""

    def __init__(self, path, problems: list[str]):
        self.path = path
        self.problems = problems
        shown = "\n".join(problems[:10])
        more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
        super().__init__(f"{path}: {len(problems)} problem(s)\n{shown}{more}")


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read a submission as strings (column ``predictions`` unsplit); checks the columns only."""
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        raise SubmissionError(path, [f"missing column(s) {missing}; found {list(frame.columns)}"])
    return frame


def split_predictions(frame: pd.DataFrame) -> list[list[str]]:
    """The ``predictions`` column as one label list per row."""
    return [field.split() for field in frame["predictions"]]


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
    frame : DataFrame with ``image`` and ``predictions`` (as from :func:`read_submission`)
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
