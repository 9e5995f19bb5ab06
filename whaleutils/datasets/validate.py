"""Check a Happywhale-format data set without modifying it.

Every problem becomes one line naming the file and, for CSV files, the line (the header is
line 1, as an editor shows it), e.g. ``train.csv line 7 ('a.jpg'): empty individual_id``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from whaleutils.contracts.submission import SUBMISSION_COLUMNS
from whaleutils.datasets import encounters
from whaleutils.datasets.data import (
    SOLUTION_COLUMNS,
    TRAIN_COLUMNS,
    Layout,
    check_photo_size,
    parse_box,
)


def _read_csv(path: Path, required: tuple[str, ...], problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"{path.name}: file missing")
        return None
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        problems.append(f"{path.name}: not a readable CSV ({error})")
        return None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        problems.append(f"{path.name}: missing column(s) {missing}; found {list(frame.columns)}")
        return None
    return frame


def _image_size(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """(width, height) of a fully decodable image, or an error message."""
    try:
        with Image.open(path) as image:
            check_photo_size(*image.size, path.name)
            image.load()  # decodes every byte: catches truncated files, not just bad headers
            return image.size, None
    except (
        UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError
    ) as error:  # fmt: skip
        return None, f"does not decode as an image ({error.__class__.__name__}: {error})"


def _check_rows(
    frame: pd.DataFrame, file_name: str, label_columns: tuple[str, ...], problems: list[str]
):
    """Duplicate rows, images listed twice and empty labels."""
    first_line: dict[str, int] = {}
    duplicated_row = frame.duplicated(keep="first")
    for row, record in enumerate(frame.to_dict("records")):
        line = row + 2
        image = record["image"]
        where = f"{file_name} line {line} ({image!r})"
        if image.strip() == "":
            problems.append(f"{file_name} line {line}: empty image name")
            continue
        if duplicated_row.iloc[row]:
            problems.append(f"{where}: duplicate row (same as line {first_line[image]})")
        elif image in first_line:
            problems.append(
                f"{where}: image listed twice (also at line {first_line[image]}) with other values"
            )
        first_line.setdefault(image, line)
        for column in label_columns:
            if str(record[column]).strip() == "":
                problems.append(f"{where}: empty {column}")


def validate_dataset(data_dir: str | os.PathLike, decode_images: bool = True) -> list[str]:
    """All problems of a data set directory; an empty list means it is sound.

    Checks ``train.csv`` and ``sample_submission.csv`` (and ``test_solution.csv`` if present):
    columns, duplicate rows, images listed twice (within a file or in both train and test),
    empty ids or species, listed images missing from ``train_images/`` or ``test_images/``,
    files that do not decode, boxes that are malformed or outside their image, and photos in
    ``train_images/`` or ``test_images/`` that no row lists.
    With ``decode_images=False`` only the headers of images are read (faster, misses truncation).
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        return [f"{data_dir}: not a directory"]
    problems: list[str] = []
    layout = Layout(data_dir)
    train = _read_csv(layout.train_csv, TRAIN_COLUMNS, problems)
    test = _read_csv(layout.sample_submission, SUBMISSION_COLUMNS, problems)
    if train is not None:
        _check_rows(train, Layout.TRAIN_CSV, ("species", "individual_id"), problems)
        problems += encounters.check_metadata(train, Layout.TRAIN_CSV)
    if layout.test_metadata.exists():
        metadata = _read_csv(layout.test_metadata, ("image",), problems)
        if metadata is not None:
            _check_rows(metadata, Layout.TEST_METADATA, (), problems)
            problems += encounters.check_metadata(metadata, Layout.TEST_METADATA)
            if test is not None:
                unknown = sorted(set(metadata["image"]) - set(test["image"]))
                if unknown:
                    problems.append(
                        f"{Layout.TEST_METADATA}: {len(unknown)} image(s) not in "
                        f"sample_submission.csv, e.g. {unknown[:3]}"
                    )
    if test is not None:
        _check_rows(test, Layout.SAMPLE_SUBMISSION, (), problems)
    if train is not None and test is not None:
        train_lines = {image: row + 2 for row, image in enumerate(train["image"])}
        for row, image in enumerate(test["image"]):
            if image in train_lines:
                problems.append(
                    f"sample_submission.csv line {row + 2} ({image!r}): image listed twice "
                    f"(also train.csv line {train_lines[image]})"
                )
    solution_path = layout.test_solution
    if solution_path.exists():
        solution = _read_csv(solution_path, SOLUTION_COLUMNS, problems)
        if solution is not None:
            _check_rows(solution, Layout.TEST_SOLUTION, ("individual_id",), problems)
            if test is not None:
                unlisted = sorted(set(test["image"]) ^ set(solution["image"]))
                if unlisted:
                    problems.append(
                        f"test_solution.csv: {len(unlisted)} image(s) not in both it and "
                        f"sample_submission.csv, e.g. {unlisted[:3]}"
                    )

    for frame, file_name, folder in (
        (train, Layout.TRAIN_CSV, Layout.TRAIN_IMAGES),
        (test, Layout.SAMPLE_SUBMISSION, Layout.TEST_IMAGES),
    ):
        if frame is None:
            continue
        has_box = "box" in frame.columns
        for row, record in enumerate(frame.to_dict("records")):
            image = record["image"]
            if image.strip() == "":
                continue
            where = f"{file_name} line {row + 2} ({image!r})"
            path = data_dir / folder / image
            if not path.is_file():
                problems.append(f"{where}: image missing: {folder}/{image}")
                continue
            if decode_images:
                size, error = _image_size(path)
            else:
                try:
                    with Image.open(path) as header:
                        size, error = header.size, None
                except (UnidentifiedImageError, OSError) as exc:
                    size, error = None, f"does not decode as an image ({exc})"
            if error:
                problems.append(f"{where}: {folder}/{image} {error}")
                continue
            if has_box:
                try:
                    box = parse_box(record["box"])
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                if box is not None:
                    left, top, right, bottom = box
                    width, height = size
                    if left < 0 or top < 0 or right > width or bottom > height:
                        problems.append(
                            f"{where}: box {record['box']!r} outside the {width}x{height} image"
                        )
        images = data_dir / folder
        if images.is_dir():  # the other way round: photos no row lists (e.g. a crashed copy)
            listed = set(frame["image"])
            for path in sorted(images.iterdir()):
                if path.is_file() and not path.name.startswith(".") and path.name not in listed:
                    problems.append(f"{folder}/{path.name}: photo without a row in {file_name}")
    return problems
