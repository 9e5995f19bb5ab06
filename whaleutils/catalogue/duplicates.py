"""The same animal under two ids: the catalogue matched against itself.

Each catalogue photo is a query against every other individual's photos (its own
individual's are left out: of the embedding's similarities, of LNBNN's descriptors and of the
geometric check), with the run's head (``identify.Identifier``): the fused head's probability
that the photo shows the candidate (embedding + local features, calibrated on the run's
validation photos), or the KNN head's cosine similarity. A pair of individuals gets the
strongest evidence any photo of one gives for the other, either way round::

    identifier = identify.Identifier("runs/local/04_effnet_arcface", "my_catalogue", cache)
    ranked, pairs = find_duplicates(identifier, workers=2)   # pairs of ids, best first
    out = prepare_out("curation", "my_catalogue")
    write_duplicates(out, ranked, pairs, identifier)         # duplicates.csv, review.html

``ranked`` (``DUPLICATE_COLUMNS``): ``individual_a`` (the one with more photos, the id a merge
keeps) and ``individual_b``, the best ``probability`` (NaN for a KNN head), its ``inliers``
(``verified`` where they reach the fused head's verified tier),
the best ``similarity``, the photo pair behind it (``photo_a``, ``photo_b``), how many
``queries`` found the other id (with a fused head: at or above its threshold), each id's
photo count, and context that helps a reviewer and is not evidence: ``shared_dates`` (days
both were photographed: two animals of one group, or one animal seen from both sides),
``closest_km`` (their closest photos' distance). Pairs a reviewer judged "different" (a
standing judgement of ``curation_log.csv``) are left out; "unsure" ones are kept and marked.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.catalogue import curation, identify, review
from whaleutils.catalogue.review import EVIDENCE_FOLDER, MIN_EVIDENCE_INLIERS, thumbnail
from whaleutils.datasets import encounters
from whaleutils.images import photos
from whaleutils.retrieval import local_features, matching

DUPLICATE_COLUMNS = [
    "rank", "individual_a", "individual_b", "probability", "inliers", "verified", "similarity",
    "photo_a", "photo_b", "queries", "photos_a", "photos_b", "species", "shared_dates",
    "closest_km", "judged",
]  # fmt: skip
OUT_FILES = ("duplicates.csv", "photo_pairs.csv", "review.html", EVIDENCE_FOLDER)
QUERY_CHUNK = 64  # photos matched at a time between progress lines
EXCLUSION_DEPTH = 32  # LNBNN neighbours searched beyond a query's own individual's


def _own_rows(labels: np.ndarray) -> np.ndarray:
    """(n, r) the rows of each photo's own individual (r: the most photos of one), -1 padded."""
    rows_of = {name: np.flatnonzero(labels == name) for name in np.unique(labels)}
    width = max(len(rows) for rows in rows_of.values())
    own = np.full((len(labels), width), -1, np.int64)
    for rows in rows_of.values():
        own[rows, : len(rows)] = rows
    return own


def _chunk_similarities(
    index, own: np.ndarray, rows: slice, individuals: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The photos ``rows`` against the catalogue, their own individual's photos left out: the
    photo similarities (r, n) and each of ``individuals``' best (r, len(individuals)). A chunk
    at a time, so that memory grows with the catalogue, not with its square (51,000 photos:
    21 GB at once, 26 MB for 64 photos)."""
    scores = matching.photo_similarities(index.embeddings[rows], index.embeddings, own[rows])
    return scores, matching.individual_maxima(scores, index.labels, individuals)


def _match_chunk(shared: dict, start: int) -> pd.DataFrame:
    """One chunk of queries (photos ``start`` to ``start + QUERY_CHUNK``), as in
    :func:`photo_pairs`."""
    index, settings, rows = shared["index"], shared["settings"], slice(start, start + QUERY_CHUNK)
    scores, similarities = _chunk_similarities(
        index, shared["own"], rows, index.descriptors.individuals
    )
    return matching.candidate_pairs(
        shared["names"][rows], index.features[rows], index.features, shared["labels"],
        similarities, shared["own"][rows], shared["shortlist"], index.descriptors,
        verify_photos=shared["verify_photos"], photo_scores=scores,
        lnbnn_exclusion_depth=EXCLUSION_DEPTH, **settings.lnbnn_options(),
        **settings.verify_options(),
    )  # fmt: skip


def photo_pairs(
    identifier,
    shortlist: int | None = None,
    verify_photos: int | None = None,
    progress=None,
    workers: int = 1,
) -> pd.DataFrame:
    """Every catalogue photo against the other individuals: one row per (photo, candidate
    individual) of its shortlist (``matching.PAIR_COLUMNS`` with ``query`` the photo's row,
    ``individual_a`` its individual, ``probability`` the fused head's, NaN for a KNN head).

    ``shortlist`` and ``verify_photos``: the fused head's (None) or fewer, to trade evidence
    for time; ``progress``: a callable given (photos done, photos) after each chunk;
    ``workers``: threads matching chunks at once (the result is the same for any number)."""
    index = identifier.index
    labels = index.labels
    if len(np.unique(labels)) < 2:
        raise ValueError(f"{index.folder}: one individual only; no pair to compare")
    own = _own_rows(labels)
    head = identifier.fused_head
    if head is None:  # the KNN head: the embedding's similarity alone
        return _knn_pairs(index, own, shortlist or 10)
    settings = head.settings
    shared = dict(
        index=index, settings=settings, labels=labels, own=own,
        names=[str(row) for row in range(len(labels))],
        shortlist=settings.shortlist if shortlist is None else int(shortlist),
        verify_photos=settings.verify_photos if verify_photos is None else int(verify_photos),
    )  # fmt: skip
    starts = range(0, len(labels), QUERY_CHUNK)
    frames = {}
    # threads, not processes: OpenCV's matching and RANSAC release the GIL (a forked worker
    # can deadlock in OpenCV's thread pool), and they share the index without copying it
    with ThreadPoolExecutor(max(1, min(int(workers), len(starts)))) as pool:
        for start, frame in zip(
            starts, pool.map(lambda start: _match_chunk(shared, start), starts), strict=True
        ):
            frames[start] = frame
            if progress is not None:
                progress(min(start + QUERY_CHUNK, len(labels)), len(labels))
    pairs = pd.concat([frames[start] for start in starts], ignore_index=True)
    pairs = pairs[np.isfinite(pairs["similarity"])].reset_index(drop=True)
    pairs["probability"] = head.probability(pairs)
    pairs["query"] = pairs["query"].astype(int)
    pairs["individual_a"] = labels[pairs["query"].to_numpy()]
    return pairs


def _knn_pairs(index, own: np.ndarray, shortlist: int) -> pd.DataFrame:
    """Each photo's ``shortlist`` most similar other individuals (their best photo)."""
    labels = index.labels
    individuals = np.unique(labels)
    rows_of = matching.photos_by_individual(labels, individuals)
    records = []
    for start in range(0, len(labels), QUERY_CHUNK):
        rows = slice(start, start + QUERY_CHUNK)
        scores, similarities = _chunk_similarities(index, own, rows, individuals)
        for offset, query in enumerate(range(len(labels))[rows]):
            for code in np.argsort(-similarities[offset], kind="stable")[:shortlist]:
                if not np.isfinite(similarities[offset, code]):
                    continue
                columns = rows_of[individuals[code]]
                best = int(columns[np.argmax(scores[offset, columns])])
                records.append((query, individuals[code], float(similarities[offset, code]), best))
    pairs = pd.DataFrame(records, columns=["query", "individual", "similarity", "photo"])
    return pairs.assign(
        inliers=np.nan, probability=np.nan, individual_a=labels[pairs["query"].to_numpy()]
    )


def rank_pairs(
    pairs: pd.DataFrame,
    table: pd.DataFrame,
    threshold: float | None = None,
    judged: dict[frozenset, str] | None = None,
    any_species: bool = False,
    verified_inliers: int | None = None,
) -> pd.DataFrame:
    """The pairs of individuals (``DUPLICATE_COLUMNS``), best first: by probability (where
    there is one), then inliers, then similarity, then ids; the strongest photo pair of either
    direction stands for the pair. ``threshold``: a query counts in ``queries`` at or above it
    (None: every query that shortlisted the other id). ``judged``: standing judgements
    (``curation.judged_pairs``): "different" pairs are left out, "unsure" ones marked.
    Pairs of two species are left out unless ``any_species`` (a merge refuses them: a wrong
    species is corrected first). ``verified``: the pair's inliers reach ``verified_inliers``
    (the fused head's verified tier; False without one)."""
    judged = judged or {}
    context = _Context(table)
    images = table["image"].to_numpy()
    counts = table["individual_id"].value_counts()
    frame = pairs.assign(
        first=np.minimum(pairs["individual_a"], pairs["individual"]),
        second=np.maximum(pairs["individual_a"], pairs["individual"]),
        score=pairs["probability"].fillna(-1.0),
        evidence=pairs["inliers"].fillna(-1.0),
    )
    counted = frame if threshold is None else frame[frame["probability"] >= threshold]
    queries = counted.groupby(["first", "second"]).size()
    best = frame.sort_values(
        ["score", "evidence", "similarity"], ascending=False, kind="stable"
    ).drop_duplicates(["first", "second"])
    rows = []
    for record in best.itertuples(index=False):
        a, b = record.individual_a, record.individual
        photo_a, photo_b = images[record.query], images[record.photo]
        if (-counts[b], b) < (-counts[a], a):  # individual_a: the one with more photos
            a, b, photo_a, photo_b = b, a, photo_b, photo_a
        pair = frozenset((a, b))
        if judged.get(pair) == "different" or not (any_species or context.same_species(a, b)):
            continue
        rows.append(
            [0, a, b, record.probability, record.inliers,
             verified_inliers is not None and record.inliers >= verified_inliers,
             record.similarity, photo_a, photo_b,
             int(queries.get((record.first, record.second), 0)), int(counts[a]), int(counts[b]),
             *context.of(a, b), judged.get(pair, "")]
        )  # fmt: skip
    ranked = pd.DataFrame(rows, columns=DUPLICATE_COLUMNS)
    ranked = ranked.assign(
        _score=ranked["probability"].fillna(-1.0), _evidence=ranked["inliers"].fillna(-1.0)
    ).sort_values(
        ["_score", "_evidence", "similarity", "individual_a", "individual_b"],
        ascending=[False, False, False, True, True],
        kind="stable",
    )
    ranked = ranked.drop(columns=["_score", "_evidence"]).reset_index(drop=True)
    ranked["rank"] = np.arange(1, len(ranked) + 1)
    return ranked


class _Context:
    """Per individual, what the page says about a pair besides the evidence: species, the days
    it was photographed, its photos' positions."""

    def __init__(self, table: pd.DataFrame):
        groups = table.groupby("individual_id", sort=False)
        self.species = {name: list(dict.fromkeys(rows["species"])) for name, rows in groups}
        self.days = {
            name: set(rows["date"].str[:10]) - {""} if "date" in rows else set()
            for name, rows in groups
        }
        has_place = {"latitude", "longitude"} <= set(table.columns)
        self.positions = {
            name: _positions(rows) if has_place else np.zeros((0, 2)) for name, rows in groups
        }

    def same_species(self, a: str, b: str) -> bool:
        return bool(set(self.species[a]) & set(self.species[b]))

    def of(self, a: str, b: str) -> tuple[str, str, float]:
        """The pair's species (both, if they differ), the days both were photographed (up
        to 3), and the distance (km) of their closest photos (NaN without positions)."""
        species = " / ".join(dict.fromkeys([*self.species[a], *self.species[b]]))
        days = sorted(self.days[a] & self.days[b])
        shared = " ".join(days[:3]) + (f" (+{len(days) - 3})" if len(days) > 3 else "")
        where_a, where_b = self.positions[a], self.positions[b]
        closest = np.nan
        for latitude, longitude in where_b if len(where_a) else ():
            distance = encounters.haversine_km(where_a[:, 0], where_a[:, 1], latitude, longitude)
            closest = np.nanmin([closest, np.nanmin(distance)])
        return species, shared, float(closest)


def _positions(rows: pd.DataFrame) -> np.ndarray:
    values = rows[["latitude", "longitude"]].apply(pd.to_numeric, errors="coerce").dropna()
    return values.to_numpy(np.float64)


def find_duplicates(
    identifier,
    shortlist: int | None = None,
    verify_photos: int | None = None,
    progress=None,
    any_species: bool = False,
    workers: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The catalogue's pairs of individuals ranked by the evidence that they are one animal
    (:func:`rank_pairs`), and the photo pairs behind them (:func:`photo_pairs`)."""
    pairs = photo_pairs(identifier, shortlist, verify_photos, progress, workers)
    head = identifier.fused_head
    judged = curation.judged_pairs(curation.read_log(identifier.index.folder))
    ranked = rank_pairs(
        pairs,
        identifier.index.table,
        None if head is None else head.threshold,
        judged,
        any_species,
    )
    return ranked, pairs


def print_progress(done: int, total: int, started: list) -> None:
    """A progress line on stderr: photos matched, and the time left at the pace since
    ``started[0]`` (``time.monotonic()`` when matching began; set now if missing)."""
    if not started:
        started.append(time.monotonic())
    elapsed = time.monotonic() - started[0]
    left = elapsed / max(done, 1) * (total - done)
    print(
        f"\rmatched {done} of {total} catalogue photos, about {left / 60:.1f} min left",
        end="" if done < total else "\n",
        file=sys.stderr,
        flush=True,
    )


# ---------------------------------------------------------------------------- the page


def matched_keypoints(identifier, photo_a: str, photo_b: str):
    """The geometric check between two catalogue photos at their own resolution: (image a,
    image b, pairs (inliers, 2, 2) of x, y in each), as ``Identifier.matched_keypoints``."""
    head = identifier.fused_head
    index = identifier.index
    row_a, row_b = index.row_of(photo_a), index.row_of(photo_b)
    check = local_features.verify(
        index.features[row_a], index.features[row_b], **head.settings.verify_options()
    )
    scales = np.array(
        [index.features[row_a].scale, index.features[row_b].scale], np.float32
    )[None, :, None]  # fmt: skip
    image_a = photos.prepare(index.path(row_a), index.box(row_a))
    image_b = photos.prepare(index.path(row_b), index.box(row_b))
    return image_a, image_b, check.pairs / scales


def write_evidence(out_dir: Path, ranked: pd.DataFrame, identifier, pairs: int) -> pd.Series:
    """The matched keypoints of the best ``pairs`` pairs (with at least
    ``MIN_EVIDENCE_INLIERS`` inliers) drawn as ``out_dir/evidence/<rank>.jpg``; each row's
    drawing relative to ``out_dir`` ("" where none)."""
    drawn = pd.Series("", index=ranked.index, dtype=object)
    if identifier.fused_head is None:
        return drawn
    for position, row in ranked.head(pairs).iterrows():
        if not row["inliers"] >= MIN_EVIDENCE_INLIERS:
            continue
        image_a, image_b, matched = matched_keypoints(identifier, row["photo_a"], row["photo_b"])
        relative = f"{EVIDENCE_FOLDER}/{int(row['rank']):04d}-1.jpg"
        (out_dir / EVIDENCE_FOLDER).mkdir(exist_ok=True)
        Image.fromarray(local_features.draw_matches(image_a, image_b, matched)).save(
            out_dir / relative, quality=90
        )
        drawn[position] = relative
    return drawn


def duplicates_data(ranked: pd.DataFrame, identifier, page_dir: Path, per_id: int = 6) -> dict:
    """What the duplicates page shows: one entry per pair, each id's photos (the pair's best
    photo first, then by similarity to it; ``per_id`` as thumbnails, all linked for the
    compare viewer) and the evidence."""
    index = identifier.index
    thumbnails: dict[int, str] = {}

    def side(individual: str, best: str) -> dict:
        rows = np.flatnonzero(index.labels == individual)
        anchor = index.embeddings[index.row_of(best)]
        rows = rows[np.argsort(-(index.embeddings[rows] @ anchor), kind="stable")]
        for row in rows[:per_id]:
            if row not in thumbnails:
                thumbnails[row] = thumbnail(photos.prepare(index.path(row), index.box(row)))
        return {
            "individual_id": individual,
            "photos": [str(index.table["image"].iloc[row]) for row in rows],
            "thumbnails": [thumbnails[row] for row in rows[:per_id]],
            "links": [_link(index.path(row), page_dir) for row in rows],
        }

    entries = []
    for row in ranked.itertuples(index=False):
        entries.append(
            {
                "rank": int(row.rank),
                "a": side(row.individual_a, row.photo_a),
                "b": side(row.individual_b, row.photo_b),
                "probability": review.number_or_none(row.probability),
                "inliers": review.number_or_none(row.inliers),
                "verified": bool(row.verified),
                "similarity": float(row.similarity),
                "queries": int(row.queries),
                "species": row.species,
                "shared_dates": row.shared_dates,
                "closest_km": review.number_or_none(row.closest_km),
                "judged": row.judged,
                "evidence": getattr(row, "evidence", "") or "",
                "matcher": None
                if identifier.fused_head is None
                else identifier.fused_head.settings.features.name,
            }
        )
    return {"pairs": entries, "catalogue": str(index.folder)}


def _link(path: Path, page_dir: Path) -> str:
    """A relative URL from the page to the photo (opened by the compare viewer on demand)."""
    relative = os.path.relpath(Path(path).resolve(), Path(page_dir).resolve())
    return urllib.parse.quote(Path(relative).as_posix())


def write_duplicates(
    out_dir: str | os.PathLike,
    ranked: pd.DataFrame,
    pairs: pd.DataFrame,
    identifier,
    shown: int = 100,
    evidence: int = 40,
) -> dict[str, Path]:
    """``duplicates.csv`` (every ranked pair), ``photo_pairs.csv`` (the evidence of each
    photo and candidate), ``review.html`` (the best ``shown`` pairs) and the drawings of the
    best ``evidence`` pairs' matched keypoints in ``out_dir`` (made ready by
    ``identify.prepare_out`` with ``OUT_FILES``)."""
    out_dir = Path(out_dir)
    ranked = ranked.assign(evidence=write_evidence(out_dir, ranked, identifier, evidence))
    ranked.to_csv(out_dir / "duplicates.csv", index=False)
    images = identifier.index.table["image"].to_numpy()
    readable = pairs.assign(
        query=images[pairs["query"].to_numpy()], photo=images[pairs["photo"].to_numpy()]
    ).rename(columns={"query": "photo_a", "individual": "individual_b", "photo": "photo_b"})
    readable.to_csv(out_dir / "photo_pairs.csv", index=False)
    page = review.fill_template(
        "duplicates.html",
        f"{len(ranked)} pairs in {identifier.index.folder}",
        duplicates_data(ranked.head(shown), identifier, out_dir),
    )
    (out_dir / "review.html").write_text(page, encoding="utf-8")
    return {name: out_dir / name for name in ("duplicates.csv", "photo_pairs.csv", "review.html")}


def prepare_out(out, catalogue, force: bool = False) -> Path:
    """``identify.prepare_out`` for duplicates' files (``OUT_FILES``)."""
    return identify.prepare_out(out, catalogue, force, files=OUT_FILES)
