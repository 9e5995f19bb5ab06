"""The review page of an ``identify`` run, and enrolment of the confirmed photos.

``write_review`` makes one self-contained HTML file (thumbnails embedded as JPEG data, plain
JavaScript, no framework, works offline): a row per query photo with the model's candidates,
each with up to three catalogue photos of that individual, its similarity and the
new-individual verdict. The researcher picks a candidate or "new individual" for each photo,
mouse or keyboard, and exports the decisions as a CSV (``photo,individual_id``).

``enroll`` adds the confirmed photos to the catalogue: copies them into ``train_images/`` and
appends their rows to ``train.csv``; a new individual gets a fresh id. It never overwrites a
file or a row: a photo whose name is already in the catalogue is refused by name, and then
nothing is added.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils import data
from whaleutils.metrics import NEW_INDIVIDUAL

THUMBNAIL_SIDE = 256
DECISION_COLUMNS = ("photo", "individual_id")
EVIDENCE_FOLDER = "evidence"  # identify's drawings of matched keypoints, beside review.html
MIN_EVIDENCE_INLIERS = 3  # fewer matched keypoints than an affine transform needs: not drawn


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a uint8 RGB image shrunk to fit ``side``."""
    from PIL import Image

    from whaleutils.identify import shrink

    buffer = io.BytesIO()
    Image.fromarray(shrink(np.asarray(image, dtype=np.uint8), side)).save(
        buffer, format="JPEG", quality=85
    )
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_evidence(
    out_dir: str | os.PathLike,
    matches: pd.DataFrame,
    identifier,
    boxes: dict | None = None,
    per_photo: int = 3,
) -> pd.Series:
    """Draw the matched keypoints (:meth:`identify.Identifier.matched_keypoints`) of each
    photo's best ``per_photo`` candidates with at least ``MIN_EVIDENCE_INLIERS`` inliers, at
    the photos' own resolution, as ``out_dir/evidence/<photo number>-<rank>.jpg`` (numbered in
    the order of ``matches``). ``boxes``: the query boxes given to ``match``.

    Returns, aligned with ``matches``, each row's drawing relative to ``out_dir`` ("" where
    none: a KNN-only run, too few inliers, an array photo)."""
    from PIL import Image

    from whaleutils import local_features

    drawn = pd.Series("", index=matches.index, dtype=object)
    if identifier.fused is None or per_photo <= 0 or matches.empty:
        return drawn
    folder = Path(out_dir) / EVIDENCE_FOLDER
    boxes = boxes or {}
    for number, (name, rows) in enumerate(matches.groupby("photo", sort=False), start=1):
        if name not in identifier.query_embeddings or not Path(name).is_file():
            continue  # an array given to match: no photo to read again
        shown = rows[rows["inliers"] >= MIN_EVIDENCE_INLIERS].sort_values("rank").head(per_photo)
        for index, row in shown.iterrows():
            query, candidate, pairs = identifier.matched_keypoints(
                name, row["catalogue_photo"], boxes.get(Path(name).name)
            )
            relative = f"{EVIDENCE_FOLDER}/{number:04d}-{int(row['rank'])}.jpg"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(local_features.draw_matches(query, candidate, pairs)).save(
                Path(out_dir) / relative, quality=90
            )
            drawn[index] = relative
    return drawn


def review_data(matches: pd.DataFrame, identifier, photos_per_candidate: int = 3) -> dict:
    """What the page shows, as JSON-ready data: one entry per query photo in ``matches``
    (:meth:`identify.Identifier.match`'s result, from the same ``identifier``)."""
    from whaleutils.identify import read_photo

    thumbnails: dict[Path, str] = {}

    def catalogue_thumbnail(path: Path, box) -> str:  # cropped as the model saw it
        if path not in thumbnails:
            thumbnails[path] = thumbnail(read_photo(path, box))
        return thumbnails[path]

    photos = []
    for name, rows in matches.groupby("photo", sort=False):
        query = identifier.query_embeddings[name]
        candidates = [
            {
                "individual_id": row.individual_id,
                "species": row.species,
                "similarity": float(row.similarity),
                # the fused head's evidence (None for a KNN-only run)
                "probability": None if pd.isna(row.probability) else float(row.probability),
                "inliers": None if pd.isna(row.inliers) else int(row.inliers),
                "verified": bool(row.verified),
                "catalogue_photo": getattr(row, "catalogue_photo", "") or "",
                "evidence": getattr(row, "evidence", "") or "",  # a file beside the page
                "thumbnails": [
                    catalogue_thumbnail(path, box)
                    for path, box in identifier.catalogue_photos(
                        row.individual_id, query, photos_per_candidate
                    )
                ],
            }
            for row in rows.sort_values("rank").itertuples()
        ]
        photos.append(
            {
                "photo": name,
                "name": Path(name).name,
                "thumbnail": thumbnail(identifier.query_thumbnails[name]),
                "new_individual": bool(rows["new_individual"].iloc[0]),
                "nearest": float(rows["similarity"].max()),
                "best_probability": (
                    None if rows["probability"].isna().all() else float(rows["probability"].max())
                ),
                "candidates": candidates,
            }
        )
    return {"photos": photos}


def write_review(
    path: str | os.PathLike, matches: pd.DataFrame, identifier, title: str = ""
) -> Path:
    """Write the review page for ``matches`` to ``path``; returns the path."""
    template = resources.files("whaleutils").joinpath("resources/review.html").read_text()
    # The data block is JSON that the page parses: "<", ">" and "&" written as JSON escapes, so
    # no name or id can end the block ("</script>") or open a comment in it ("<!--"). Both
    # placeholders are filled in one pass, so a title holding "__DATA__" stays text.
    payload = json.dumps(review_data(matches, identifier))
    for character in "<>&":
        payload = payload.replace(character, f"\\u{ord(character):04x}")
    values = {
        "TITLE": html.escape(title or f"{len(matches['photo'].unique())} photos"),
        "DATA": payload,
    }
    page = re.sub(r"__(TITLE|DATA)__", lambda found: values[found.group(1)], template)
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def read_decisions(path: str | os.PathLike) -> pd.DataFrame:
    """The exported decisions (``photo,individual_id``), checked.

    Raises
    ------
    ValueError
        Naming the file and row of a missing column, an empty value, a photo listed twice or a
        photo file that does not exist.
    """
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(DECISION_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    for row, (photo, individual) in enumerate(
        zip(frame["photo"], frame["individual_id"], strict=True), start=2
    ):
        if not photo.strip() or not individual.strip():
            raise ValueError(f"{path}, row {row}: empty photo or individual_id")
        if not Path(photo).is_file():
            raise ValueError(f"{path}, row {row}: photo {photo} not found")
    names = frame["photo"].map(lambda p: Path(p).name)
    twice = sorted(names[names.duplicated()].unique())
    if twice:
        raise ValueError(f"{path}: photo name(s) listed twice: {twice}")
    return frame


def new_ids(prefix: str, count: int, taken) -> list[str]:
    """``count`` fresh ids ``prefix0001``, ``prefix0002``, ... after the highest taken one.

    >>> new_ids("nw-", 2, ["nw-0007", "a"])
    ['nw-0008', 'nw-0009']
    """
    numbers = [
        int(name[len(prefix) :])
        for name in taken
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    ]
    start = max(numbers, default=0) + 1
    return [f"{prefix}{n:04d}" for n in range(start, start + count)]


def enroll(
    catalogue: str | os.PathLike,
    decisions: str | os.PathLike,
    new_id_prefix: str = "new-",
    new_species: str = "unknown",
) -> pd.DataFrame:
    """Add the decided photos to the catalogue; returns the rows added to ``train.csv``.

    Known individuals keep the catalogue's species; each photo decided ``new_individual``
    becomes a new individual with a fresh id (:func:`new_ids`) and ``new_species``.

    Raises
    ------
    ValueError
        Naming the photos already in the catalogue (by file name, in ``train.csv`` or
        ``train_images/``) and the individuals the catalogue does not have; nothing is added.
    """
    catalogue = Path(catalogue)
    table_path, images_dir = catalogue / "train.csv", catalogue / "train_images"
    existing = data.read_train(catalogue)
    chosen = read_decisions(decisions)
    names = chosen["photo"].map(lambda p: Path(p).name)
    present = sorted(
        name for name in names if name in set(existing["image"]) or (images_dir / name).exists()
    )
    if present:
        raise ValueError(
            f"already in the catalogue {catalogue}, refused (nothing added): {present}"
        )
    species_of = dict(zip(existing["individual_id"], existing["species_raw"], strict=True))
    unknown = sorted(set(chosen["individual_id"]) - set(species_of) - {NEW_INDIVIDUAL})
    if unknown:
        raise ValueError(
            f"{decisions}: individual(s) not in the catalogue {catalogue}: {unknown} "
            f"(a new animal is '{NEW_INDIVIDUAL}')"
        )
    is_new = chosen["individual_id"] == NEW_INDIVIDUAL
    fresh = iter(new_ids(new_id_prefix, int(is_new.sum()), existing["individual_id"]))
    header = pd.read_csv(table_path, nrows=0).columns.tolist()
    added = []
    for photo, individual, name in zip(
        chosen["photo"], chosen["individual_id"], names, strict=True
    ):
        individual = next(fresh) if individual == NEW_INDIVIDUAL else individual
        row = {"image": name, "individual_id": individual}
        row["species"] = species_of.get(individual, new_species)
        added.append(row)
        with open(photo, "rb") as source, open(images_dir / name, "xb") as target:
            shutil.copyfileobj(source, target)  # "xb": never overwrites a file
    with open(table_path, "rb") as handle:  # appended below: the rows there stay as they are
        handle.seek(max(0, table_path.stat().st_size - 1))
        ends_a_line = handle.read(1) in (b"\n", b"")
    with open(table_path, "a", newline="", encoding="utf-8") as handle:
        if not ends_a_line:
            handle.write("\n")
        writer = csv.DictWriter(handle, fieldnames=header, restval="", extrasaction="ignore")
        writer.writerows(added)
    return pd.DataFrame(added, columns=["image", "species", "individual_id"])
