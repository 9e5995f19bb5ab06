"""Identify new photos against a catalogue of known individuals (the paper's section 5.8).

A researcher has a trained model (a notebook's output folder: its embedding model, KNN ``k``,
rule and new-individual threshold), a catalogue in the Happywhale format (``train.csv`` and
``train_images/``; ``python -m whaleutils prepare`` makes one) and a folder of new photos::

    identifier = Identifier("runs/local/04_effnet_arcface", "my_catalogue")
    matches = identifier.match(["new/IMG_001.jpg", "new/IMG_002.jpg"])   # a DataFrame
    identifier.skipped                                                   # unreadable photos

Each photo gets its ``top`` candidate individuals, best first, each with its ``similarity``
(the cosine similarity of its most similar catalogue photo among the query's ``k`` nearest) and
the run's verdict: ``new_individual`` is True when even the nearest catalogue photo is farther
than the run's distance threshold (:class:`KnnMatcher`), or, for a run with a fused head, when
the best candidate's probability is below its threshold (:class:`FusedMatcher`). The catalogue
(``catalogue_index.CatalogueIndex``: embeddings, local features, their caches, filters) is
embedded once and cached; only photos that are new or changed are embedded again.

Photos are read by ``photos.prepare``, the function the training pipeline and the crop cache
use: JPEG, PNG, TIFF, WebP up to ``data.MAX_PHOTO_PIXELS``, grayscale (16-bit scaled to 8),
CMYK or with alpha, turned upright by their EXIF orientation, cropped to a box and resized.
Catalogue and query photos are framed alike: both cropped to their boxes with
``crop_to_box=True`` (``identify --boxes``), both whole without (``splits.Split.crop_to_box``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.catalogue.catalogue_index import (
    CACHE_FILE,
    CatalogueIndex,
    PhotoEmbedder,
    default_cache_dir,
)
from whaleutils.catalogue.review import EVIDENCE_FILE, EVIDENCE_FOLDER
from whaleutils.contracts import outputs
from whaleutils.datasets import data
from whaleutils.datasets.encounters import ENCOUNTER_COLUMNS
from whaleutils.images import photos
from whaleutils.retrieval import fusion, knn, local_features, matching

__all__ = [
    "CACHE_FILE", "MATCH_COLUMNS", "FusedMatcher", "Identifier", "KnnMatcher",
    "default_cache_dir", "photo_files", "prepare_out",
]  # fmt: skip
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
MATCH_COLUMNS = [
    "photo", "rank", "individual_id", "species", "similarity", "new_individual",
    "probability", "inliers", "verified", "catalogue_photo",
    "photo_probability", "new_probability", "other_probability",
]  # fmt: skip
ENCOUNTER_MATCH_COLUMNS = [  # with encounters: each photo's encounter and the encounter's answer
    "encounter", "encounter_answer", "encounter_probability", "encounter_new_probability",
]  # fmt: skip


def photo_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The photos named by ``paths``: files as given, folders searched (recursively) for files
    with a photo suffix, in name order.

    Raises
    ------
    FileNotFoundError
        Naming a path that does not exist.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such photo or folder: {path}")
    return found


class KnnMatcher:
    """The run's KNN head: its ``rule`` over the ``k`` nearest catalogue photos orders the
    first candidates, a wider search fills the rest of the ``top`` by best similarity (with a
    small k, say 3, the k neighbours often hold one or two individuals only); a photo is new
    when even its nearest catalogue photo is farther than ``threshold`` (cosine distance)."""

    features = None  # it needs no local features

    def __init__(self, settings: outputs.KnnSettings):
        self.k, self.threshold, self.rule = settings.k, settings.threshold, settings.rule
        self.flipped_gallery = settings.flipped_gallery

    def match(
        self, index: CatalogueIndex, names: list[str], queries: np.ndarray, query_features, top: int
    ) -> pd.DataFrame:
        gallery = index.embeddings
        labels = index.table["individual_id"].to_numpy(dtype=object)
        if self.flipped_gallery:  # the run matched against each photo and its mirror image
            gallery = np.concatenate([gallery, index.mirrored])
            labels = np.concatenate([labels, labels])
        k = min(self.k, len(gallery))
        wider = min(max(k, 10 * top), len(gallery))
        similarities, indices = knn.cosine_topk(gallery, queries, wider)
        by_rule, _ = knn.rank_individuals(
            similarities[:, :k], indices[:, :k], labels, self.rule, n_ids=top
        )
        by_similarity, _ = knn.rank_individuals(similarities, indices, labels, "max", n_ids=top)
        species = index.species_of()
        images = index.table["image"].to_numpy()
        rows = []
        for query, name in enumerate(names):
            ids = list(dict.fromkeys(
                i for i in (*by_rule[query], *by_similarity[query]) if i is not None
            ))[:top]  # fmt: skip
            best = {}  # individual -> (its best similarity among the neighbours, that photo)
            for similarity, row in zip(similarities[query], indices[query], strict=True):
                best.setdefault(labels[row], (float(similarity), images[row % len(images)]))
            new = bool(1.0 - similarities[query, 0] > self.threshold)
            for rank, individual in enumerate(ids, start=1):
                similarity, photo = best[individual]
                rows.append(
                    (name, rank, individual, species[individual], similarity, new)
                    + (np.nan, np.nan, False, photo, np.nan, np.nan, np.nan)
                )
        return pd.DataFrame(rows, columns=MATCH_COLUMNS)


class FusedMatcher:
    """The run's fused head (``fusion.FusedHead``): candidates ranked by the probability that
    they show the query's animal; ``new_individual`` when the best is below ``threshold``
    (the head's, or one chosen for a known-verdict precision); ``verified`` on a photo's
    candidate with the most inliers where they reach the head's verified tier. The answer is
    the head's over its shortlist whatever ``top`` is: more candidates than it shortlists
    follow, by their own probability. The per-photo answer (``head.answer``, or it moved to
    ``new_share``: the share of new animals expected among the photos) gives each shortlisted
    candidate's ``photo_probability`` and the photo's ``new_probability`` and
    ``other_probability`` (a catalogued whale the shortlist missed), which sum to 1."""

    def __init__(
        self,
        head: fusion.FusedHead,
        threshold: float | None = None,
        precision: dict | None = None,
        new_share: float | None = None,
    ):
        if new_share is not None:
            head = dataclasses.replace(head, answer=head.answer.with_new_share(new_share))
        self.head = head
        self.threshold = head.threshold if threshold is None else float(threshold)
        self.features = head.settings.features
        self.precision = precision  # fusion.named_precision's, where it chose the threshold

    def match(
        self,
        index: CatalogueIndex,
        names: list[str],
        queries: np.ndarray,
        query_features,
        top: int,
        encounters: dict[str, str] | None = None,
    ) -> pd.DataFrame:
        settings = self.head.settings
        labels = index.labels
        photo_scores = matching.photo_similarities(queries, index.embeddings)
        similarities = matching.individual_maxima(
            photo_scores, labels, index.descriptors.individuals
        )
        pairs = matching.candidate_pairs(
            names, query_features, index.features, labels, similarities, None,
            max(settings.shortlist, top), index.descriptors, verify_photos=settings.verify_photos,
            photo_scores=photo_scores, **settings.lnbnn_options(), **settings.verify_options(),
        )  # fmt: skip
        ranked = self.head.rank(pairs)
        shares, answers = self.head.answer_photos(pairs, names)
        keys = zip(shares["query"], shares["individual"], strict=True)
        photo_probability = dict(zip(keys, shares["p"], strict=True))
        answers = answers.set_index("query")
        evidence = {
            (row.query, row.individual): (float(row.similarity), int(row.inliers), int(row.photo))
            for row in pairs.itertuples(index=False)
        }
        verified_at = self.head.verified_inliers
        # the tier was measured on each photo's best candidate by inliers: only it is flagged
        best = fusion.best_by_inliers(pairs)
        most_inliers = dict(zip(best["query"], best["individual"], strict=True))
        species = index.species_of()
        images = index.table["image"].to_numpy()
        rows = []
        for name in names:
            candidates = ranked[name]
            new = bool(candidates[0][1] < self.threshold)
            p_new, p_other = answers.at[name, "p_new"], answers.at[name, "p_other"]
            for rank, (individual, probability) in enumerate(candidates[:top], start=1):
                similarity, inliers, photo = evidence[(name, individual)]
                rows.append((
                    name, rank, individual, species[individual], similarity, new,
                    float(probability), inliers,
                    verified_at is not None and inliers >= verified_at
                    and most_inliers.get(name) == individual,
                    images[photo] if photo >= 0 else "",
                    photo_probability.get((name, individual), np.nan), p_new, p_other,
                ))  # fmt: skip
        matches = pd.DataFrame(rows, columns=MATCH_COLUMNS)
        if encounters is not None:
            matches = self._with_encounter_answers(matches, pairs, names, encounters)
        return matches

    def _with_encounter_answers(
        self, matches: pd.DataFrame, pairs: pd.DataFrame, names: list[str], encounters: dict
    ) -> pd.DataFrame:
        """``matches`` with :data:`ENCOUNTER_MATCH_COLUMNS`: the encounter of each photo (in
        ``encounters``; none: the photo alone) and the encounter's answer."""
        of_photo = {name: encounters[name] for name in names if name in encounters}
        answered = self.head.answer_encounters(pairs, names, of_photo).set_index("query")
        photo = matches["photo"]
        return matches.assign(
            encounter=photo.map(lambda name: of_photo.get(name, "")),
            encounter_answer=photo.map(answered["answer"]),
            encounter_probability=photo.map(answered["p_answer"]),
            encounter_new_probability=photo.map(answered["p_new"]),
        )


_LOADED_MODELS: dict[str, object] = {}  # file digest -> loaded embedding model, newest last
LOADED_MODELS_KEPT = 2


def _loaded_model(path: Path, digest: str):
    """The embedding model in ``path`` (whose SHA-256 is ``digest``), loaded once per process
    for the last :data:`LOADED_MODELS_KEPT` files: loading an EfficientNet and tracing its
    ``predict`` take seconds, which a second Identifier of the same run (another catalogue,
    another filter, a notebook's loop) need not pay again. Models are only read from."""
    from whaleutils.training import models

    model = _LOADED_MODELS.pop(digest, None)
    if model is None:
        model = models.load_model(path)
    _LOADED_MODELS[digest] = model
    while len(_LOADED_MODELS) > LOADED_MODELS_KEPT:
        del _LOADED_MODELS[next(iter(_LOADED_MODELS))]
    return model


class Identifier:
    """Match photos against a catalogue with a trained model: the run's model
    (:attr:`embedder`), the catalogue (:attr:`index`) and the run's head (:attr:`matcher`).

    Parameters
    ----------
    run_dir : a trained notebook's output folder (``embedding_model.keras`` and ``scores.json``
        with ``k``, ``threshold`` and ``rule``; e.g. ``runs/local/04_effnet_arcface``)
    catalogue : a Happywhale-format folder: ``train.csv`` (image, species, individual_id[, box])
        and ``train_images/``
    cache_dir : the folder of the catalogue's caches (``catalogue_embeddings.npz``, with local
        matching also ``catalogue_features.npz``; e.g. ``catalogue_index.default_cache_dir``),
        outside the catalogue; None embeds the catalogue without a cache
    batch_size : photos embedded at once (>= 1)
    local : use the run's fused head (``RUN_DIR/local/``, notebook 04's ``local_matching``):
        None (default) where the run has one, True (it must), False (the KNN head alone)
    known_precision : with the fused head, call a photo known only where, on the run's
        validation photos, that verdict was right at least this share of the time (the lowest
        such threshold on the best candidate's probability); None: the run's threshold, chosen
        for MAP@5. ``matcher.threshold`` is the threshold in force.
    precision : with the fused head, call a photo known (and name its best candidate) only
        where, on the run's validation photos, the named whale was right at least this share of
        the time; ``matcher.precision`` says what that rests on (the share, its 95% Wilson lower
        bound, the photos it was measured on). Not with ``known_precision``.
    new_share : with the fused head, the share of the photos expected to be of new animals
        (in (0, 1)); the per-photo answer moves from validation's share to it. None:
        validation's (``fused_head.answer.new_share``).
    crop_to_box : crop catalogue photos to their ``train.csv`` boxes and query photos to the
        boxes given to :meth:`match` (a query without one stays whole); False (default): every
        photo whole. Gallery and queries are framed alike, as the training notebooks frame them.
    candidates : an ``encounters.CandidateFilter``: only the catalogue photos it keeps (species,
        viewpoint, dates, distance) can be matched; the whole catalogue is still embedded and
        cached, so another filter costs nothing. ``index.note`` says what it kept.
    engine : the index of the catalogue's local descriptors (``local_features.DescriptorIndex``:
        "auto", "flann", "faiss" or "exact")
    progress : a progress line on stderr while more than one chunk of catalogue photos is
        described (``catalogue_index.Meter``)
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        catalogue: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        local: bool | None = None,
        known_precision: float | None = None,
        crop_to_box: bool = False,
        candidates=None,
        precision: float | None = None,
        new_share: float | None = None,
        engine: str = "auto",
        progress: bool = False,
    ):
        from whaleutils.training import models

        self.run_dir = Path(run_dir)
        self.run = outputs.read_run_settings(self.run_dir)
        self.matcher = _matcher(
            self.run_dir, self.run.knn, local, known_precision, precision, new_share
        )
        digest = data.file_sha256(self.run.model_path)
        model = _loaded_model(self.run.model_path, digest)
        self.embedder = PhotoEmbedder(
            model, models.input_image_size(model), self.run.tta, batch_size, digest
        )
        self.index = CatalogueIndex.build(
            catalogue, self.embedder, cache_dir, crop_to_box,
            mirrored=self.run.knn.flipped_gallery, features=self.matcher.features, engine=engine,
            progress=progress,
        )  # fmt: skip
        self.index.keep(candidates)
        self.skipped = pd.DataFrame(columns=["photo", "reason"])
        self.query_embeddings: dict[str, np.ndarray] = {}  # of the last match, by photo
        self.query_thumbnails: dict[str, np.ndarray] = {}  # small copies, for the review page
        self._last_query = (None, None, None)  # matched_keypoints' (photo, box), image, features

    @property
    def fused_head(self) -> fusion.FusedHead | None:
        """The run's fused head, where it matches with one."""
        return self.matcher.head if isinstance(self.matcher, FusedMatcher) else None

    def match(
        self,
        photos: Iterable,
        top: int = 5,
        boxes: dict[str, tuple] | None = None,
        encounters: dict[str, str] | None = None,
    ) -> pd.DataFrame:
        """The ``top`` candidate individuals of each photo (paths or uint8 arrays), best first.

        Returns one row per photo and candidate (``MATCH_COLUMNS``): ``photo`` (its path, or
        ``array-N``), ``rank`` (1 = best), ``individual_id``, ``species``, ``similarity``,
        ``new_individual`` (the run's verdict for the photo, the same on each of its rows),
        the fused head's ``probability``, ``inliers`` and ``verified`` (NaN, NaN, False for
        the KNN head), the best-matching ``catalogue_photo``, the fused head's per-photo answer
        (``photo_probability``: P(the photo shows this candidate), NaN beyond the head's
        shortlist; ``new_probability`` and ``other_probability`` (a catalogued whale not
        shortlisted), the same on each of the photo's rows; all NaN for the KNN head) and
        the catalogue photo's encounter columns as ``catalogue_<column>``. ``top`` only says
        how many candidates are shown: the first ones and the verdict are the same for any
        ``top``. Unreadable photos are left out and
        listed in :attr:`skipped` (photo, reason). ``boxes`` (file name -> box) crops the
        photos named, with ``crop_to_box``. ``encounters`` (photo, as named in ``photo``, ->
        encounter; fused head only) answers each encounter's photos as one
        query: their evidence added per candidate whale by the head's rule, chosen on the
        run's validation encounters; ``ENCOUNTER_MATCH_COLUMNS`` follow ``MATCH_COLUMNS``.
        """

        if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
            raise ValueError(f"top must be a whole number >= 1, got top={top!r}")
        photos = list(photos)
        names = [
            f"array-{i}" if isinstance(p, np.ndarray) else str(p) for i, p in enumerate(photos)
        ]
        if boxes and not self.index.crop_to_box:
            raise ValueError(
                "boxes for the query photos need an Identifier made with crop_to_box=True, so "
                "that the catalogue photos are cropped to their boxes too"
            )
        if encounters is not None and self.fused_head is None:
            raise ValueError(
                "answering by encounter needs the run's fused head (notebook 04 with "
                f"local_matching); {self.run_dir} is matched by its KNN head"
            )
        if encounters is not None and self.fused_head.encounter_answer is None:
            raise ValueError(
                f"{self.run_dir}: its fused head cannot answer by encounter: its validation "
                "photos had no encounters (train.csv's encounter column)"
            )
        boxes = boxes or {}
        photo_boxes = [
            None if isinstance(p, np.ndarray) else boxes.get(Path(p).name) for p in photos
        ]
        read = self.embedder.read(
            photos, photo_boxes, thumbnails=True, features=self.matcher.features
        )
        self.skipped = pd.DataFrame(
            [(names[i], reason) for i, reason in read.errors.items()], columns=["photo", "reason"]
        )
        readable = [names[i] for i in read.positions]
        self.query_embeddings = dict(zip(readable, read.embeddings, strict=True))
        self.query_thumbnails = {names[i]: read.thumbnails[i] for i in read.positions}
        columns = MATCH_COLUMNS + (ENCOUNTER_MATCH_COLUMNS if encounters is not None else [])
        if not readable:
            return self._with_catalogue_metadata(pd.DataFrame(columns=columns))
        extra = {} if encounters is None else {"encounters": encounters}
        matches = self.matcher.match(
            self.index, readable, read.embeddings, read.features, top, **extra
        )
        return self._with_catalogue_metadata(matches)

    def _with_catalogue_metadata(self, matches: pd.DataFrame) -> pd.DataFrame:
        """``matches`` with the encounter columns the catalogue has, of each candidate's
        ``catalogue_photo`` (its best-matching photo), as ``catalogue_<column>``."""

        table = self.index.table
        columns = [c for c in ENCOUNTER_COLUMNS if c in table.columns]
        by_image = table.drop_duplicates("image").set_index("image")
        for column in columns:
            values = by_image[column].reindex(matches["catalogue_photo"]).fillna("")
            matches[f"catalogue_{column}"] = values.to_numpy()
        return matches

    def matched_keypoints(
        self, photo, catalogue_photo: str, box: tuple | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The geometric check behind a candidate, at the photos' own resolution: the query
        ``photo`` (path or array, cropped to ``box`` as in :meth:`match`) against the
        catalogue photo named ``catalogue_photo`` (a ``catalogue_photo`` of the matches).

        Returns (query image, catalogue image, pairs (inliers, 2, 2): each inlier's x, y in
        the query image and in the catalogue image, in those images' pixels). The check is
        the one :meth:`match` ran (deterministic), so it finds the same inliers."""

        head = self.fused_head
        if head is None:
            raise ValueError("matched keypoints need the run's fused head (local features)")
        row = self.index.row_of(catalogue_photo)
        key = None if isinstance(photo, np.ndarray) else (str(photo), box)
        if key is None or self._last_query[0] != key:  # one photo's candidates read it once
            query_image = photos.prepare(photo, box)
            query = local_features.extract(query_image, head.settings.features)
            self._last_query = (key, query_image, query)
        _, query_image, query = self._last_query
        catalogue_image = photos.prepare(self.index.path(row), self.index.box(row))
        candidate = self.index.features[row]
        check = local_features.verify(query, candidate, **head.settings.verify_options())
        scales = np.array([query.scale, candidate.scale], np.float32)[None, :, None]
        return query_image, catalogue_image, check.pairs / scales

    def catalogue_photos(
        self, individual_id: str, query: np.ndarray, n: int | None = 3
    ) -> list[tuple[Path, tuple | None]]:
        """Up to ``n`` (None: all) catalogue photos of ``individual_id`` as (path, box or None),
        the most similar to the query embedding ``query`` (d,) first."""
        return self.index.photos_of(individual_id, query, n)


def _matcher(
    run_dir: Path,
    knn_settings,
    local: bool | None,
    known_precision: float | None,
    precision: float | None = None,
    new_share: float | None = None,
):
    """The run's fused head's matcher where it has one (and ``local`` is not False), else its
    KNN head's; ``known_precision`` or ``precision`` (fused heads only) sets the threshold,
    ``new_share`` (fused heads only) the per-photo answer's share of new photos."""
    if known_precision is not None and precision is not None:
        raise ValueError("give a known-verdict precision or a named-whale precision, not both")
    folder = run_dir / fusion.LOCAL_FOLDER
    if local is not False and (local or (folder / fusion.FUSION_FILE).is_file()):
        head = fusion.FusedHead.load(folder)
        threshold = named = None
        try:
            if known_precision is not None:
                threshold = head.threshold_for_precision(known_precision)
            if precision is not None:
                named = head.named_precision(precision)
                threshold = named["threshold"]
            return FusedMatcher(head, threshold, named, new_share)
        except ValueError as error:
            raise ValueError(f"{folder / outputs.SCORES}: {error}") from None
    if known_precision is not None or precision is not None or new_share is not None:
        raise ValueError(
            "a precision or a new share needs the run's fused head (notebook 04 with "
            f"local_matching); {run_dir} is matched by its KNN head"
        )
    return KnnMatcher(knn_settings)


OUT_FILES = ("matches.csv", "skipped.csv", "review.html", EVIDENCE_FOLDER)  # what identify writes


def _remove_evidence(folder: Path) -> None:
    """The drawings an earlier identify made in ``folder`` (``NNNN-R.jpg``); anything else
    there is the user's and stays (and so does the folder, then)."""
    for entry in folder.iterdir():
        if EVIDENCE_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
            entry.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def prepare_out(
    out: str | os.PathLike,
    catalogue: str | os.PathLike,
    force: bool = False,
    files: tuple[str, ...] = OUT_FILES,
) -> Path:
    """Make ``out`` ready for identify's files (``files``, by default ``OUT_FILES``): a new or
    empty folder, or with ``force`` one whose earlier such files are removed (nothing else in
    it is touched).

    Raises
    ------
    ValueError
        When ``out`` is the catalogue or inside it, is a file, or holds files without ``force``.
    """

    out, catalogue = Path(out), Path(catalogue)
    inside = out.resolve() == catalogue.resolve() or catalogue.resolve() in out.resolve().parents
    if inside:
        raise ValueError(f"--out {out} is inside the catalogue {catalogue}: choose another folder")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ValueError(
                f"--out {out} is not empty: choose a new folder, or --force to replace the "
                f"results of an earlier run there ({', '.join(files)})"
            )
        for name in files:
            path = out / name
            if name == EVIDENCE_FOLDER and path.is_dir() and not path.is_symlink():
                _remove_evidence(path)
            elif path.is_file() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out
