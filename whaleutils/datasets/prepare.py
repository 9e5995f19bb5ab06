"""Turn a researcher's photo catalogue into a Happywhale-format data set with a solution.

Input: a folder of photos and a CSV with columns ``image`` (path relative to the folder) and
``individual_id`` (and optionally ``species``). Output: a data set directory as described in
:mod:`datasets.data`, plus ``test_solution.csv`` and ``prepare.json`` (parameters and counts).

The split rule, deterministic by seed:

1. ``round(new_share * n_individuals)`` individuals, drawn at random, go to test entirely:
   they are ``new_individual`` there.
2. Of every other individual with two or more photos, ``test_share`` of the photos go to test
   (stochastic rounding of ``test_share * n``, at most ``n - 1``, so one photo always stays in
   train). Single-photo individuals stay in train.

Photos are copied (or symbolically linked with ``link=True``), never modified; file names and
ids are kept. Photos in sub-folders are flattened to their base name, which must be unique.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import folders
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.contracts.tables import looks_like_formula
from whaleutils.datasets import data

UNKNOWN_SPECIES = "unknown"


class CatalogueError(ValueError):
    """A catalogue that cannot be prepared; the message lists every bad row."""


def read_catalogue(labels_csv: str | os.PathLike, images_dir: str | os.PathLike) -> pd.DataFrame:
    """Read and check a catalogue; returns columns ``source, image, individual_id, species``.

    Raises
    ------
    CatalogueError
        Naming the file and line of every problem: missing columns, empty fields, duplicate
        rows, photos that do not exist, base names that collide after flattening.
    """
    labels_csv, images_dir = Path(labels_csv), Path(images_dir)
    if not labels_csv.is_file():
        raise CatalogueError(f"{labels_csv}: labels file not found")
    if not images_dir.is_dir():
        raise CatalogueError(f"{images_dir}: images folder not found")
    try:
        frame = data.read_csv(labels_csv)
    except ValueError as error:
        raise CatalogueError(str(error)) from None
    missing = [c for c in ("image", "individual_id") if c not in frame.columns]
    if missing:
        raise CatalogueError(
            f"{labels_csv}: missing column(s) {missing}; found {list(frame.columns)}"
        )
    if "species" not in frame.columns:
        frame["species"] = UNKNOWN_SPECIES
    problems = []
    first_source: dict[str, int] = {}
    first_name: dict[str, int] = {}
    names = []
    for row, record in enumerate(frame.to_dict("records")):
        line = row + 2
        where = f"{labels_csv.name} line {line}"
        image, individual = record["image"].strip(), record["individual_id"].strip()
        if not image or not individual:
            problems.append(f"{where}: empty {'image' if not image else 'individual_id'}")
            names.append("")
            continue
        for column, value in (("individual_id", individual), ("species", record.get("species"))):
            if looks_like_formula(value):
                problems.append(
                    f"{where}: {column} {str(value)[:60]!r} would run as a spreadsheet formula "
                    "(it starts with =, +, -, @)"
                )
        if individual == NEW_INDIVIDUAL or any(c.isspace() or c == "," for c in individual):
            problems.append(
                f"{where}: individual_id {individual!r} is reserved or holds a space or comma "
                f"('{NEW_INDIVIDUAL}' is the label of unseen animals; predictions are "
                "space-separated ids)"
            )
        name = Path(image).name
        names.append(name)
        if image in first_source:
            problems.append(
                f"{where} ({image!r}): photo listed twice (also line {first_source[image]})"
            )
            continue
        first_source[image] = line
        if name in first_name:
            problems.append(
                f"{where} ({image!r}): base name {name!r} already used at line {first_name[name]}"
            )
        first_name.setdefault(name, line)
        source = images_dir / image
        if Path(image).is_absolute() or ".." in Path(image).parts:
            problems.append(
                f"{where} ({image!r}): not a path inside {images_dir} (no absolute path, no ..)"
            )
        elif not source.is_file():
            problems.append(f"{where} ({image!r}): photo not found at {source}")
        elif images_dir.resolve() not in source.resolve().parents:
            problems.append(f"{where} ({image!r}): a link leading out of {images_dir}")
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CatalogueError(f"{labels_csv}: {len(problems)} problem(s)\n{shown}{more}")
    return pd.DataFrame(
        {
            "source": frame["image"].str.strip(),
            "image": names,
            "individual_id": frame["individual_id"].str.strip(),
            "species": frame["species"].str.strip().replace("", UNKNOWN_SPECIES),
        }
    )


def split_catalogue(
    catalogue: pd.DataFrame, test_share: float, new_share: float, seed: int
) -> pd.DataFrame:
    """Add ``split`` ("train"/"test") and ``is_new`` columns by the rule in the module docstring."""
    if not 0 <= test_share < 1:
        raise ValueError(f"test_share must be in [0, 1), got test_share={test_share!r}")
    if not 0 <= new_share < 1:
        raise ValueError(f"new_share must be in [0, 1), got new_share={new_share!r}")
    rng = np.random.default_rng(seed)
    individuals = np.array(sorted(catalogue["individual_id"].unique()), dtype=object)
    shuffled = individuals[rng.permutation(len(individuals))]
    new_ids = set(shuffled[: round(new_share * len(individuals))])
    result = catalogue.copy()
    result["is_new"] = result["individual_id"].isin(new_ids)
    result["split"] = np.where(result["is_new"], "test", "train")
    for individual in individuals:
        if individual in new_ids:
            continue
        rows = np.flatnonzero((result["individual_id"] == individual).to_numpy())
        n_test = min(int(np.floor(test_share * len(rows) + rng.random())), len(rows) - 1)
        if n_test > 0:
            chosen = rng.choice(rows, size=n_test, replace=False)
            result.iloc[chosen, result.columns.get_loc("split")] = "test"
    return result


def prepare(
    labels_csv: str | os.PathLike,
    images_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    test_share: float = 0.2,
    new_share: float = 0.1,
    seed: int = 0,
    link: bool = False,
) -> dict:
    """Write a Happywhale-format data set from a catalogue; returns ``prepare.json``'s content.

    ``out_dir`` must not exist or be empty: nothing is ever overwritten.
    """
    out_dir, images_dir = Path(out_dir), Path(images_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file; prepare writes only to a new or empty folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(
            f"{out_dir} exists and is not empty; prepare writes only to a new or empty folder"
        )
    catalogue = split_catalogue(read_catalogue(labels_csv, images_dir), test_share, new_share, seed)
    with folders.new_folder(out_dir) as building:  # whole or not at all
        train, test = _write_data_set(building, catalogue, images_dir, link)
        card = {
            "labels": str(Path(labels_csv).resolve()),
            "images": str(images_dir.resolve()),
            "test_share": test_share,
            "new_share": new_share,
            "seed": seed,
            "link": link,
            "train_images": int(len(train)),
            "test_images": int(len(test)),
            "individuals": int(catalogue["individual_id"].nunique()),
            "individuals_new": int(test.loc[test["is_new"], "individual_id"].nunique()),
            "test_new_share": float(test["is_new"].mean()) if len(test) else 0.0,
        }
        (building / "prepare.json").write_text(json.dumps(card, indent=1) + "\n")
    return card


def _write_data_set(folder: Path, catalogue: pd.DataFrame, images_dir: Path, link: bool):
    """The photos (copied, or linked) and tables of a prepared set in the new ``folder``;
    returns its (train, test) rows."""
    layout = data.Layout(folder)
    for part in ("train", "test"):
        layout.images(part).mkdir(parents=True, exist_ok=True)
    for record in catalogue.to_dict("records"):
        source = (images_dir / record["source"]).resolve()
        target = layout.photo(record["split"], record["image"])
        if link:
            target.symlink_to(source)
        else:
            shutil.copy2(source, target)
    train = catalogue[catalogue["split"] == "train"]
    test = catalogue[catalogue["split"] == "test"]
    data.write_tables(layout, train, test)
    return train, test
