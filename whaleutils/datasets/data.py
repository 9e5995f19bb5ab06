"""The Happywhale data set format: locating it, reading it, species names, labels and folds.

A data set directory holds::

    train.csv              image, species, individual_id[, box]   one row per training photo
    sample_submission.csv  image, predictions                     one row per test photo
    train_images/          the training photos, named as in train.csv
    test_images/           the test photos, named as in sample_submission.csv
    test_solution.csv      image, individual_id  (optional; synthetic and prepared sets only)
    test_boxes.csv         image, box            (optional: a detector's boxes for test photos)
    test_metadata.csv      image, encounter, date, ...  (optional: the test photos' encounters)

``box`` is ``"left top right bottom"`` in pixels of the original image, or empty. ``train.csv``
may also carry the encounter columns (``encounters.ENCOUNTER_COLUMNS``: encounter, date,
latitude, longitude, location, photographer, viewpoint), kept as written.
Data set directories are inputs: nothing here writes into them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import environment
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.contracts.tables import read_csv
from whaleutils.datasets.encounters import ENCOUNTER_COLUMNS

KAGGLE_DATA_DIR = environment.KAGGLE_INPUT / "happy-whale-and-dolphin"
TRAIN_COLUMNS = ("image", "species", "individual_id")
SOLUTION_COLUMNS = ("image", "individual_id")

# Typos and aliases in the competition's train.csv. The two pilot-whale names are the
# short-finned pilot whale (Globicephala macrorhynchus), as the organisers confirmed.
SPECIES_ALIASES = {
    "bottlenose_dolpin": "bottlenose_dolphin",
    "kiler_whale": "killer_whale",
    "globis": "short_finned_pilot_whale",
    "pilot_whale": "short_finned_pilot_whale",
}


@dataclass(frozen=True)
class Layout:
    """The files and folders of a data set directory ``root`` (the module docstring), named
    here once for every reader and writer::

        layout = Layout(data_dir)
        layout.train_csv, layout.photo("train", name), layout.images("test")
    """

    root: Path

    TRAIN_CSV = "train.csv"
    SAMPLE_SUBMISSION = "sample_submission.csv"
    TEST_SOLUTION = "test_solution.csv"
    TEST_BOXES = "test_boxes.csv"
    TEST_METADATA = "test_metadata.csv"
    TRAIN_IMAGES = "train_images"
    TEST_IMAGES = "test_images"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def train_csv(self) -> Path:
        return self.root / self.TRAIN_CSV

    @property
    def sample_submission(self) -> Path:
        return self.root / self.SAMPLE_SUBMISSION

    @property
    def test_solution(self) -> Path:
        return self.root / self.TEST_SOLUTION

    @property
    def test_boxes(self) -> Path:
        return self.root / self.TEST_BOXES

    @property
    def test_metadata(self) -> Path:
        return self.root / self.TEST_METADATA

    def images(self, part: str) -> Path:
        """The photo folder of ``part``: ``train_images`` for "train" and "valid" (validation
        photos are training photos), ``test_images`` for "test"."""
        if part not in ("train", "valid", "test"):
            raise ValueError(f"part must be 'train', 'valid' or 'test', got part={part!r}")
        return self.root / (self.TEST_IMAGES if part == "test" else self.TRAIN_IMAGES)

    def photo(self, part: str, name: str) -> Path:
        """The path of photo ``name`` of ``part``."""
        return self.images(part) / name


def write_tables(
    layout: Layout, train: pd.DataFrame, test: pd.DataFrame, test_boxes: bool = False
) -> None:
    """Write a new data set's tables (the one writer, for ``synth`` and ``prepare``):
    ``train.csv`` from ``train`` (image, species, individual_id[, box]), and from ``test``
    (image, individual_id, species, is_new[, box]) ``sample_submission.csv`` (the four most
    photographed training individuals and ``new_individual`` for every photo),
    ``test_solution.csv`` (``new_individual`` where ``is_new``) and, with ``test_boxes``,
    ``test_boxes.csv`` (image, box). The encounter columns ``train`` and ``test`` have go into
    ``train.csv`` and ``test_metadata.csv``."""

    columns = ["image", "species", "individual_id"] + (["box"] if "box" in train else [])
    encounter_columns = [c for c in ENCOUNTER_COLUMNS if c in train]
    train[columns + encounter_columns].to_csv(layout.train_csv, index=False)
    test_encounter_columns = [c for c in ENCOUNTER_COLUMNS if c in test]
    if test_encounter_columns:
        test[["image", *test_encounter_columns]].to_csv(layout.test_metadata, index=False)
    frequent = most_photographed(train["individual_id"], 4)
    pd.DataFrame(
        {"image": test["image"], "predictions": " ".join([*frequent, NEW_INDIVIDUAL])}
    ).to_csv(layout.sample_submission, index=False)
    if test_boxes:  # what a detector would give for the test photos
        test[["image", "box"]].to_csv(layout.test_boxes, index=False)
    pd.DataFrame(
        {
            "image": test["image"],
            "individual_id": np.where(test["is_new"], NEW_INDIVIDUAL, test["individual_id"]),
            "species": test["species"],
        }
    ).to_csv(layout.test_solution, index=False)


def find_data_dir(path: str | os.PathLike | None = None) -> Path:
    """Return the data set directory: ``path`` if given, else Kaggle's competition input.

    Raises
    ------
    FileNotFoundError
        If the directory (or ``train.csv`` inside it) does not exist, naming what was tried.
    """
    if path is not None:
        candidates = [Path(path)]
    else:  # Kaggle's competition input, wherever this image mounts it
        mounted = environment.find_folder(KAGGLE_DATA_DIR.name, Layout.TRAIN_CSV)
        candidates = [KAGGLE_DATA_DIR] if mounted is None else [mounted]
    for candidate in candidates:
        if Layout(candidate).train_csv.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    hint = (
        "" if path is not None else " (pass a data directory, or run `python -m whaleutils synth`)"
    )
    raise FileNotFoundError(f"no Happywhale data set (train.csv) found in {tried}{hint}")


def normalize_species(species):
    """Map the known typos and aliases of species names to the 26 canonical names.

    Parameters
    ----------
    species : str or pandas.Series of str

    Returns
    -------
    str or pandas.Series
        Same type as the input; names that are not aliases pass through unchanged.

    Examples
    --------
    >>> normalize_species("kiler_whale")
    'killer_whale'
    """
    if isinstance(species, pd.Series):
        return species.replace(SPECIES_ALIASES)
    if isinstance(species, str):
        return SPECIES_ALIASES.get(species, species)
    raise TypeError(f"species must be a str or a pandas Series, got {type(species).__name__}")


# Photos larger than this are refused before they are decoded (a decompression bomb: a small
# file declaring a huge image); far above any camera's photo.
MAX_PHOTO_PIXELS = 120_000_000


class PhotoSizeError(ValueError):
    """A photo declares no pixels or more than ``MAX_PHOTO_PIXELS``."""


def check_photo_size(width: int, height: int, path) -> None:
    """Raise :class:`PhotoSizeError` naming ``path`` if a photo's declared size is empty or
    above ``MAX_PHOTO_PIXELS``."""
    if width < 1 or height < 1 or width * height > MAX_PHOTO_PIXELS:
        raise PhotoSizeError(
            f"{path}: declares {width} x {height} px, outside 1 px to "
            f"{MAX_PHOTO_PIXELS / 1e6:g} megapixels (refused, not decoded)"
        )


def parse_box(text) -> tuple[int, int, int, int] | None:
    """Parse ``"left top right bottom"`` into four ints; empty or NaN gives ``None``.

    Raises
    ------
    ValueError
        If the text is not four integers with ``left < right`` and ``top < bottom``.
    """
    if text is None or (isinstance(text, float) and np.isnan(text)) or str(text).strip() == "":
        return None
    parts = str(text).split()
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"box {text!r} is not four numbers 'left top right bottom'") from None
    if not all(np.isfinite(numbers)) or any(abs(n) > 1e9 for n in numbers):
        raise ValueError(f"box {text!r} has a non-finite or absurdly large coordinate")
    values = tuple(int(n) for n in numbers)
    if len(values) != 4:
        raise ValueError(
            f"box {text!r} has {len(values)} numbers; expected 'left top right bottom'"
        )
    left, top, right, bottom = values
    if not (left < right and top < bottom):
        raise ValueError(f"box {text!r} is empty or inverted (needs left < right, top < bottom)")
    return values


def format_box(box: tuple[int, int, int, int] | None) -> str:
    """Inverse of :func:`parse_box` (``None`` gives an empty string)."""
    return "" if box is None else " ".join(str(int(v)) for v in box)


def _require_columns(frame: pd.DataFrame, columns, file: Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{file}: missing column(s) {missing}; found {list(frame.columns)}")


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of a file's bytes, read 1 MB at a time."""

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_train(data_dir: str | os.PathLike) -> pd.DataFrame:
    """Read ``train.csv`` with the species normalised.

    Returns
    -------
    DataFrame
        Columns ``image, species, species_raw, individual_id, box`` (``box`` empty strings where
        absent), in file order. ``species_raw`` keeps the file's spelling.
    """
    path = Layout(data_dir).train_csv
    frame = read_csv(path)
    _require_columns(frame, TRAIN_COLUMNS, path)
    frame = frame.rename(columns={"species": "species_raw"})
    frame["species"] = normalize_species(frame["species_raw"])
    if "box" not in frame.columns:
        frame["box"] = ""
    columns = ["image", "species", "species_raw", "individual_id", "box"]
    extra = [c for c in frame.columns if c not in columns]
    return frame[columns + extra]


def read_test_images(data_dir: str | os.PathLike) -> list[str]:
    """The test image names, in ``sample_submission.csv`` order."""
    path = Layout(data_dir).sample_submission
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require_columns(frame, ("image",), path)
    return frame["image"].tolist()


def read_test_boxes(data_dir: str | os.PathLike) -> pd.DataFrame | None:
    """The test photos' boxes from ``test_boxes.csv`` (image, box), or None without the file.

    The competition gives boxes for training photos only; the top solutions ran a detector on
    the test photos. Crop test photos only when such boxes exist, and otherwise use whole
    photos everywhere, so that gallery and query photos are framed alike.
    """
    path = Layout(data_dir).test_boxes
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require_columns(frame, ("image", "box"), path)
    return frame


def read_encounters(path: str | os.PathLike) -> dict[str, str]:
    """Photos' encounters from a CSV with columns ``image`` and ``encounter`` (as
    ``test_metadata.csv`` has them; other columns ignored): file name -> encounter, photos
    with an empty encounter left out.

    Raises
    ------
    ValueError
        Naming the file and line of an image listed twice, or the missing column.
    """
    path = Path(path)
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    _require_columns(frame, ("image", "encounter"), path)
    twice = frame["image"].duplicated(keep=False)
    if twice.any():
        lines = [int(i) + 2 for i in frame.index[twice][:5]]
        raise ValueError(
            f"{path}, lines {lines}: image {frame['image'][twice].iloc[0]!r} is listed more "
            "than once"
        )
    return encounter_map(frame)


def encounter_map(frame: pd.DataFrame) -> dict[str, str]:
    """image -> encounter of a table's rows with a non-empty ``encounter`` ({} without the
    column)."""
    if "encounter" not in frame:
        return {}
    encounter = frame["encounter"].astype(str).str.strip()
    named = encounter != ""
    return dict(zip(frame["image"][named], encounter[named], strict=True))


def read_boxes(path: str | os.PathLike) -> dict[str, tuple[int, int, int, int]]:
    """Boxes by photo file name, from a CSV with columns ``image`` and ``box`` ("left top right
    bottom" in the photo's pixels; empty: the whole photo; other columns ignored) or from every
    such CSV in a folder (e.g. the Happywhale 1st-place repository's ``train.csv`` and
    ``test.csv``, which carry Detic boxes).

    Raises
    ------
    ValueError
        Naming the file and row of a missing column or a malformed box, or a photo given two
        different boxes.
    """
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no CSV files with boxes")
    boxes: dict[str, tuple[int, int, int, int]] = {}
    for file in files:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
        _require_columns(frame, ("image", "box"), file)
        for row, (image, text) in enumerate(zip(frame["image"], frame["box"], strict=True)):
            try:
                box = parse_box(text)
            except ValueError as error:
                raise ValueError(f"{file}, row {row + 2} ({image}): {error}") from None
            name = Path(image).name
            if box is not None and boxes.setdefault(name, box) != box:
                raise ValueError(f"{file}, row {row + 2}: {name} has another box in {files}")
    return boxes


def find_boxes(boxes: str | os.PathLike | dict | None) -> dict | None:
    """Boxes by photo name (:func:`read_boxes`) from a CSV or folder path, or from the attached
    Kaggle dataset of that name (a bare name, e.g. ``happywhale-detic-boxes``, found under
    ``/kaggle/input`` holding ``train.csv`` or ``test.csv``); a dict is returned as it is,
    None gives None.

    Raises
    ------
    FileNotFoundError
        Naming the path, and for a bare name where it was looked for.
    """
    if boxes is None or isinstance(boxes, dict):
        return boxes
    path = Path(boxes)
    if path.exists():
        return read_boxes(path)
    bare = len(path.parts) == 1
    if bare:
        for marker in ("train.csv", "test.csv"):
            found = environment.find_folder(path.name, marker)
            if found is not None:
                return read_boxes(found)
    raise FileNotFoundError(
        f"boxes {str(boxes)!r}: no such file or folder"
        + (
            f", and no attached dataset of that name under {environment.KAGGLE_INPUT}"
            if bare
            else ""
        )
    )


def boxes_column(images, boxes: dict) -> list[str]:
    """The ``box`` column for photo names ``images`` from ``boxes`` (name -> box, as
    :func:`read_boxes` returns; matched by file name): empty where a photo has none.

    >>> boxes_column(["a.jpg", "sub/b.jpg"], {"b.jpg": (1, 2, 3, 4)})
    ['', '1 2 3 4']
    """
    return [format_box(boxes.get(Path(str(name)).name)) for name in images]


def read_solution(path: str | os.PathLike) -> pd.DataFrame:
    """Read a ``test_solution.csv`` (image, individual_id; ``new_individual`` for unseen)."""
    path = Path(path)
    frame = read_csv(path)
    _require_columns(frame, SOLUTION_COLUMNS, path)
    twice = frame["image"].duplicated(keep="first")
    if twice.any():
        row = int(np.flatnonzero(twice)[0])
        raise ValueError(
            f"{path}, line {row + 2}: image {frame['image'].iloc[row]!r} listed again "
            f"({int(twice.sum())} repeated row(s)); each image once"
        )
    return frame


def most_photographed(individual_ids, n: int) -> list[str]:
    """The ``n`` individuals with most photos among ``individual_ids`` (one entry per photo),
    ties by id: the default predictions of sample submissions and the padding of lists."""
    counts = pd.Series(individual_ids).value_counts()
    return sorted(counts.index, key=lambda i: (-counts[i], i))[:n]


@dataclass
class LabelEncoding:
    """Integer codes for individual ids, saved with a run (``labels.json``).

    Codes are positions in the sorted id list, so the encoding of a given set of ids does not
    depend on row order (the same rule as ``sklearn.preprocessing.LabelEncoder``).
    """

    individual_ids: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, train: pd.DataFrame) -> LabelEncoding:
        """Learn the classes from a frame with an ``individual_id`` column."""
        return cls(individual_ids=sorted(set(train["individual_id"])))

    @property
    def n_individuals(self) -> int:
        return len(self.individual_ids)

    def encode_individuals(self, ids) -> np.ndarray:
        """Individual ids -> int64 codes of shape (n,); an unknown id raises ``KeyError``."""
        return _encode(ids, self.individual_ids, "individual_id")

    def decode_individuals(self, codes) -> np.ndarray:
        """int codes of shape (n,) -> individual ids (object array)."""
        return np.asarray(self.individual_ids, dtype=object)[np.asarray(codes, dtype=np.int64)]

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"individual_ids": [...]}`` as JSON."""
        Path(path).write_text(json.dumps({"individual_ids": self.individual_ids}, indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> LabelEncoding:
        payload = json.loads(Path(path).read_text())
        if not isinstance(payload.get("individual_ids"), list):
            raise ValueError(f"{path}: not a label encoding (no list 'individual_ids')")
        return cls(individual_ids=payload["individual_ids"])


def _encode(values, classes: list[str], what: str) -> np.ndarray:
    values = np.asarray(values, dtype=object)
    sorted_classes = np.asarray(classes, dtype=object)
    codes = np.searchsorted(sorted_classes, values)
    codes = np.clip(codes, 0, max(len(classes) - 1, 0))
    found = len(classes) > 0 and (sorted_classes[codes] == values)
    if not np.all(found):
        unknown = values[~np.asarray(found, dtype=bool)] if len(classes) else values
        raise KeyError(f"unknown {what} {unknown[0]!r} (and {len(unknown) - 1} more)")
    return codes.astype(np.int64)


def make_folds(
    train: pd.DataFrame,
    n_folds: int = 5,
    seed: int = 0,
    min_new_share: float = 0.15,
    groups: str | None = None,
) -> pd.DataFrame:
    """Assign every training image to one of ``n_folds`` validation folds.

    The rule makes each validation fold look like the test set, where a share of images are of
    individuals never seen in training (``new_individual``):

    1. Single-photo individuals can only be unseen: they are dealt out over the folds, evenly
       within each species, so every fold gets its share of them.
    2. The photos of every other individual are dealt round-robin over distinct folds from a
       random starting fold, so no fold holds all of them and each is *known* in validation.
    3. If single-photo individuals make up less than ``min_new_share`` of the images (small or
       curated catalogues), randomly chosen multi-photo individuals are placed whole in one
       fold, filling the emptiest fold first, until every fold's new share reaches the target.
       On the real ``train.csv`` (18.1% single-photo images) step 3 adds nothing.

    With ``groups`` (a column, e.g. ``"encounter"``) the rule deals groups instead of photos:
    the photos sharing a non-empty value stay in one fold (a photo with an empty value is a
    group of its own), so a validation photo is never matched to its own encounter's
    near-identical photos in training; "photo" above then reads "group".

    Parameters
    ----------
    train : DataFrame with ``image``, ``individual_id`` and ``species`` columns, n rows
    n_folds : int, default=5
    seed : int, default=0
        Same seed and same input give the same folds.
    min_new_share : float in [0, 1), default=0.15
        Target share of ``new_individual`` images per validation fold.
    groups : str or None, default=None
        A column of ``train`` whose values bind photos together.

    Returns
    -------
    DataFrame
        A copy of ``train`` with ``fold`` (int, 0..n_folds-1) and ``is_new_in_fold`` (bool: no
        other photo of this individual lies outside this fold).
    """
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds must be an integer >= 2, got n_folds={n_folds!r}")
    if not 0.0 <= min_new_share < 1.0:
        raise ValueError(f"min_new_share must be in [0, 1), got min_new_share={min_new_share!r}")
    _require_columns(train, ("image", "individual_id", "species"), Path("train"))
    frame = train.reset_index(drop=True).copy()
    if groups is None:
        unit_of = np.arange(len(frame))
    else:
        _require_columns(frame, (groups,), Path("train"))
        values = frame[groups].astype(str).str.strip()
        keys = np.where(values != "", "g:" + values, "p:" + frame.index.astype(str))
        unit_of = pd.factorize(keys)[0]  # numbered in order of first appearance
        crossing = frame.groupby(unit_of)["individual_id"].nunique()
        if (crossing > 1).any():
            bad = values[unit_of == crossing.index[crossing > 1][0]].iloc[0]
            raise ValueError(f"train: {groups} {bad!r} holds photos of several individuals")
    first = pd.Series(np.arange(len(frame))).groupby(unit_of).first().to_numpy()
    units = frame.loc[first, ["individual_id", "species"]].reset_index(drop=True)
    units["photos"] = np.bincount(unit_of)
    unit_fold = _deal_folds(units, len(frame), n_folds, np.random.default_rng(seed), min_new_share)
    frame["fold"] = unit_fold[unit_of]
    folds_per_individual = frame.groupby("individual_id")["fold"].nunique()
    frame["is_new_in_fold"] = frame["individual_id"].map(folds_per_individual).eq(1).to_numpy()
    return frame


def resolve_fold_groups(train: pd.DataFrame, fold_groups: str | None) -> str | None:
    """The column :func:`make_folds` keeps together: ``"auto"`` is ``"encounter"`` where
    ``train`` has that column with a value in it, else None (photo by photo); None or
    ``"none"`` is None; any other value must be a column of ``train``."""
    if fold_groups in (None, "none"):
        return None
    if fold_groups == "auto":
        has = "encounter" in train and (train["encounter"].astype(str).str.strip() != "").any()
        return "encounter" if has else None
    if fold_groups not in train.columns:
        raise ValueError(
            f"fold_groups={fold_groups!r}: train.csv has no such column (it has "
            f"{', '.join(map(str, train.columns))})"
        )
    return str(fold_groups)


def _deal_folds(
    units: pd.DataFrame, n_photos: int, n_folds: int, rng, min_new_share: float
) -> np.ndarray:
    """:func:`make_folds`' rule over ``units`` (individual_id, species, photos: one row per
    photo or group); returns each unit's fold."""
    fold = np.full(len(units), -1, dtype=np.int64)
    units_per_individual = units["individual_id"].value_counts()
    photos_per_individual = units.groupby("individual_id")["photos"].sum()
    counts = units["individual_id"].map(units_per_individual)

    # Step 1: single-unit individuals, dealt evenly within each species.
    singles = units.index[counts == 1].to_numpy()
    singles = singles[rng.permutation(len(singles))]
    species_order = units.loc[singles, "species"].to_numpy()
    singles = singles[np.argsort(species_order, kind="stable")]
    fold[singles] = (np.arange(len(singles)) + rng.integers(n_folds)) % n_folds

    # Step 3 before step 2: choose whole individuals to hold out if singles are too few.
    fold_sizes = np.full(n_folds, n_photos / n_folds)
    new_images = np.bincount(
        fold[singles], weights=units.loc[singles, "photos"].to_numpy(float), minlength=n_folds
    )
    multi_ids = units.loc[counts > 1, "individual_id"].unique()
    multi_ids = multi_ids[rng.permutation(len(multi_ids))]
    held_out: dict[str, int] = {}
    for individual in multi_ids:
        if np.all(new_images >= min_new_share * fold_sizes):
            break
        target = int(np.argmin(new_images / fold_sizes))
        held_out[individual] = target
        new_images[target] += photos_per_individual[individual]

    # Step 2: round-robin for the remaining multi-unit individuals.
    groups = units.index[counts > 1].to_series().groupby(units.loc[counts > 1, "individual_id"])
    for individual in sorted(groups.groups):
        rows = groups.get_group(individual).to_numpy()
        if individual in held_out:
            fold[rows] = held_out[individual]
            continue
        rows = rows[rng.permutation(len(rows))]
        fold[rows] = (np.arange(len(rows)) + rng.integers(n_folds)) % n_folds
    return fold


def fold_report(folds: pd.DataFrame) -> pd.DataFrame:
    """Per fold: images, known and new images, and the new share (for the README and tests)."""
    grouped = folds.groupby("fold")
    report = pd.DataFrame(
        {
            "images": grouped.size(),
            "known": grouped["is_new_in_fold"].apply(lambda s: int((~s).sum())),
            "new": grouped["is_new_in_fold"].sum().astype(int),
        }
    )
    report["new_share"] = report["new"] / report["images"]
    return report


def split_fold(folds: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows and validation rows of one fold; validation labels of individuals absent
    from training become ``new_individual`` in ``target_id`` (the original id is kept)."""
    if fold not in set(folds["fold"]):
        raise ValueError(f"fold={fold!r} is not among the folds {sorted(set(folds['fold']))}")
    train = folds[folds["fold"] != fold].copy()
    valid = folds[folds["fold"] == fold].copy()
    known = set(train["individual_id"])
    valid["target_id"] = np.where(
        valid["individual_id"].isin(known), valid["individual_id"], NEW_INDIVIDUAL
    )
    return train, valid
