"""The review page of an ``identify`` run, and enrolment of the confirmed photos.

``write_review`` makes one self-contained HTML file (thumbnails embedded as JPEG data, plain
JavaScript, no framework, works offline): a row per query photo with the model's candidates,
each with up to three catalogue photos of that individual, its similarity, the best-matching
photo's file name, date and place, and the new-individual verdict. "Compare" opens the query
and the candidate's photos side by side at full resolution (linked by relative paths, loaded
on demand), with zoom and pan on both. The researcher picks a candidate or "new individual"
for each photo, mouse or keyboard, gives a name and exports the decisions as a CSV
(``photo,individual_id,reviewer,reviewed_at``: each decision's time, UTC).

``catalogue.enroll`` adds the confirmed photos to the catalogue (a transaction: see there).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import urllib.parse
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.catalogue.catalogue_index import shrink
from whaleutils.images.photos import prepare as prepare_photo
from whaleutils.retrieval import local_features

THUMBNAIL_SIDE = 256
EVIDENCE_FOLDER = "evidence"  # identify's drawings of matched keypoints, beside review.html
EVIDENCE_FILE = re.compile(r"[0-9]{4,}-[0-9]+\.jpg")  # each drawing's name: photo-rank
MIN_EVIDENCE_INLIERS = 3  # fewer matched keypoints than an affine transform needs: not drawn


def thumbnail(image: np.ndarray, side: int = THUMBNAIL_SIDE) -> str:
    """A ``data:image/jpeg;base64,...`` URI of a uint8 RGB image shrunk to fit ``side``."""

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

    drawn = pd.Series("", index=matches.index, dtype=object)
    if identifier.fused_head is None or per_photo <= 0 or matches.empty:
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


def review_data(
    matches: pd.DataFrame, identifier, photos_per_candidate: int = 3, page_dir=None
) -> dict:
    """What the page shows, as JSON-ready data: one entry per query photo in ``matches``
    (:meth:`identify.Identifier.match`'s result, from the same ``identifier``).

    With ``page_dir`` (the page's folder) each query photo and every catalogue photo of each
    candidate (most similar first) is also linked by its path relative to the page, so the
    page opens them at full resolution on demand, offline, without embedding them."""

    thumbnails: dict[Path, str] = {}

    def link(path) -> str:  # a relative URL from the page to the photo, "" where none
        if page_dir is None or not Path(path).is_file():
            return ""
        relative = os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())
        return urllib.parse.quote(Path(relative).as_posix())

    metadata_columns = [
        c for c in matches.columns if c.startswith("catalogue_") and c != "catalogue_photo"
    ]

    def catalogue_thumbnail(path: Path, box) -> str:  # cropped as the model saw it
        if path not in thumbnails:
            thumbnails[path] = thumbnail(prepare_photo(path, box))
        return thumbnails[path]

    head = identifier.fused_head
    matcher = None if head is None else head.settings.features.name  # whose keypoints are drawn
    photos = []
    if "encounter" in matches:  # an encounter's photos together, in the order of its first
        group = matches["encounter"].where(matches["encounter"] != "", matches["photo"])
        first = group.map({g: i for i, g in enumerate(dict.fromkeys(group))})
        matches = matches.iloc[np.argsort(first.to_numpy(), kind="stable")]
    for name, rows in matches.groupby("photo", sort=False):
        query = identifier.query_embeddings[name]
        candidates = [
            {
                "individual_id": row.individual_id,
                "species": row.species,
                "similarity": float(row.similarity),
                # the fused head's evidence (None for a KNN-only run)
                "probability": None if pd.isna(row.probability) else float(row.probability),
                # the per-photo answer's: P(the photo shows this whale), None beyond it
                "photo_probability": number_or_none(getattr(row, "photo_probability", None)),
                "inliers": None if pd.isna(row.inliers) else int(row.inliers),
                "matcher": matcher,
                "verified": bool(row.verified),
                "catalogue_photo": getattr(row, "catalogue_photo", "") or "",
                # the best-matching photo's encounter columns (date, location, ...) present
                "metadata": {
                    column.removeprefix("catalogue_"): str(getattr(row, column))
                    for column in metadata_columns
                    if str(getattr(row, column)).strip()
                },
                "links": [
                    link(path)
                    for path, _ in identifier.catalogue_photos(row.individual_id, query, None)
                ]
                if page_dir is not None
                else [],
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
                "link": link(name) if not name.startswith("array-") else "",
                "thumbnail": thumbnail(identifier.query_thumbnails[name]),
                "new_individual": bool(rows["new_individual"].iloc[0]),
                "nearest": float(rows["similarity"].max()),
                "best_probability": (
                    None if rows["probability"].isna().all() else float(rows["probability"].max())
                ),
                "new_probability": number_or_none(rows.get("new_probability", pd.Series()).max()),
                # answered by encounter: the encounter and its one answer
                "encounter": str(rows["encounter"].iloc[0]) if "encounter" in rows else "",
                "encounter_answer": (
                    str(rows["encounter_answer"].iloc[0]) if "encounter_answer" in rows else ""
                ),
                "encounter_probability": number_or_none(
                    rows["encounter_probability"].iloc[0]
                    if "encounter_probability" in rows
                    else None
                ),
                "candidates": candidates,
            }
        )
    return {"photos": photos}


def number_or_none(value) -> float | None:
    """A float for the page's JSON; None for a missing value."""
    return None if value is None or pd.isna(value) else float(value)


def fill_template(name: str, title: str, data: dict) -> str:
    """The page ``resources/<name>`` with its ``__TITLE__`` (escaped), ``__DATA__`` (``data``
    as JSON) and ``__COMPARE__`` (the shared compare viewer, ``resources/compare.html``)."""
    files = resources.files("whaleutils")
    template = files.joinpath(f"resources/{name}").read_text()
    # The data block is JSON that the page parses: "<", ">" and "&" written as JSON escapes, so
    # no name or id can end the block ("</script>") or open a comment in it ("<!--"). The
    # placeholders are filled in one pass, so a title holding "__DATA__" stays text.
    payload = json.dumps(data)
    for character in "<>&":
        payload = payload.replace(character, f"\\u{ord(character):04x}")
    values = {
        "TITLE": html.escape(title),
        "DATA": payload,
        "COMPARE": files.joinpath("resources/compare.html").read_text(),
    }
    return re.sub(r"__(TITLE|DATA|COMPARE)__", lambda found: values[found.group(1)], template)


def write_review(
    path: str | os.PathLike, matches: pd.DataFrame, identifier, title: str = ""
) -> Path:
    """Write the review page for ``matches`` to ``path``; returns the path."""
    path = Path(path)
    data = review_data(matches, identifier, page_dir=path.parent)
    title = title or f"{len(matches['photo'].unique())} photos"
    page = fill_template("review.html", title, data)
    path.write_text(page, encoding="utf-8")
    return path
