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
than the run's distance threshold. The catalogue's embeddings are cached in a file and only
photos that are new or changed (size or modification time) are embedded again.

Photos are read by ``photos.prepare``, the function the training pipeline and the crop cache
use: JPEG, PNG, TIFF, WebP up to ``data.MAX_PHOTO_PIXELS``, grayscale (16-bit scaled to 8),
CMYK or with alpha, turned upright by their EXIF orientation, cropped to a box and resized.
Catalogue and query photos are framed alike: both cropped to their boxes with
``crop_to_box=True`` (``identify --boxes``), both whole without (``splits.Split.crop_to_box``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.contracts import outputs
from whaleutils.datasets import data
from whaleutils.datasets.encounters import ENCOUNTER_COLUMNS
from whaleutils.images import photos
from whaleutils.retrieval import embed, knn, local_features, matching

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp")
MATCH_COLUMNS = [
    "photo", "rank", "individual_id", "species", "similarity", "new_individual",
    "probability", "inliers", "verified", "catalogue_photo",
]  # fmt: skip
CACHE_FILE = "catalogue_embeddings.npz"
READ_CHUNK = 128  # photos embedded at a time (each is held at the model's size only)


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


class Identifier:
    """Match photos against a catalogue with a trained model.

    Parameters
    ----------
    run_dir : a trained notebook's output folder (``embedding_model.keras`` and ``scores.json``
        with ``k``, ``threshold`` and ``rule``; e.g. ``runs/local/04_effnet_arcface``)
    catalogue : a Happywhale-format folder: ``train.csv`` (image, species, individual_id[, box])
        and ``train_images/``
    cache_dir : the folder of the catalogue's embeddings cache (``catalogue_embeddings.npz``,
        e.g. :func:`default_cache_dir`; with local matching also ``catalogue_features.npz``);
        None embeds the catalogue without a cache
    batch_size : photos embedded at once
    local : use the run's fused head (``RUN_DIR/local/``, notebook 04's ``local_matching``):
        None (default) where the run has one, True (it must), False (the KNN head alone)
    known_precision : with the fused head, call a photo known only where, on the run's
        validation photos, that verdict was right at least this share of the time (the lowest
        such threshold on the best candidate's probability); None: the run's threshold, chosen
        for MAP@5. :attr:`fused_threshold` is the threshold in force.
    crop_to_box : crop catalogue photos to their ``train.csv`` boxes and query photos to the
        boxes given to :meth:`match` (a query without one stays whole); False (default): every
        photo whole. Gallery and queries are framed alike, as the training notebooks frame them.
    candidates : an ``encounters.CandidateFilter``: only the catalogue photos it keeps (species,
        viewpoint, dates, distance) can be matched; the whole catalogue is still embedded and
        cached, so another filter costs nothing. :attr:`candidates_note` says what it kept.
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
    ):
        from whaleutils.training import models

        self.run_dir = Path(run_dir)
        self.run = outputs.read_run_settings(self.run_dir)
        model_path = self.run.model_path
        self.k, self.threshold, self.rule = (
            self.run.knn.k,
            self.run.knn.threshold,
            self.run.knn.rule,
        )
        self.flipped_gallery = self.run.knn.flipped_gallery
        self.model = models.load_model(model_path)
        self.image_size = models.input_image_size(self.model)
        self.tta = self.run.tta
        self.model_fingerprint = _fingerprint(model_path)
        self.batch_size = int(batch_size)
        self.crop_to_box = bool(crop_to_box)
        self.catalogue_dir = Path(catalogue)
        self.layout = data.Layout(self.catalogue_dir)
        self.catalogue = data.read_train(self.catalogue_dir)
        if self.catalogue.empty:
            raise ValueError(f"{self.layout.train_csv}: the catalogue has no photos")
        self.cache_path = None if cache_dir is None else Path(cache_dir) / CACHE_FILE
        self.fused = _fused_head(self.run_dir, local)  # (fusion, settings, scores) or None
        self.fused_threshold = None
        if self.fused is not None:
            scores_path = self.run_dir / matching.LOCAL_FOLDER / outputs.SCORES
            self.fused_threshold = float(self.fused[2]["threshold"])
            if known_precision is not None:
                curve = self.fused[2].get("known_precision_curve")
                if not curve:
                    raise ValueError(
                        f"{scores_path}: no known_precision_curve (notebook 04 of this "
                        "version writes it: run it again)"
                    )
                try:
                    self.fused_threshold = matching.threshold_for_precision(curve, known_precision)
                except ValueError as error:
                    raise ValueError(f"{scores_path}: {error}") from None
        elif known_precision is not None:
            raise ValueError(
                "a known-verdict precision needs the run's fused head (notebook 04 with "
                f"local_matching); {self.run_dir} is matched by its KNN head"
            )
        self.catalogue_skipped: list[str] = []  # unreadable catalogue photos, each with why
        vectors, self.catalogue_embedded = self._embed_catalogue()
        # (n, d); with a flipped gallery (n, 2, d): each photo and its mirror image
        self.catalogue_embeddings = vectors[:, 0] if self.flipped_gallery else vectors
        self.catalogue_mirrored = vectors[:, 1] if self.flipped_gallery else None
        self.catalogue_features = self.feature_index = None
        if self.fused is not None:
            self.catalogue_features, self.feature_index = self._catalogue_features(cache_dir)
        self.candidates_note = None
        if candidates is not None and candidates.active:
            self.candidates_note = candidates.describe(self.catalogue)
            self._keep_catalogue_rows(candidates.keep(self.catalogue))
        self.skipped = pd.DataFrame(columns=["photo", "reason"])
        self.query_embeddings: dict[str, np.ndarray] = {}  # of the last match, by photo
        self.query_thumbnails: dict[str, np.ndarray] = {}  # small copies, for the review page
        self._last_query = (None, None, None)  # matched_keypoints' (photo, box), image, features

    # ------------------------------------------------------------------ embedding
    def embed(self, images: Sequence[np.ndarray], mirrored: bool = False) -> np.ndarray:
        """L2-normalised embeddings (n, d) of uint8 RGB images (resized to the model's size by
        ``photos.resize`` where they are not), with the run's TTA; with ``mirrored``
        (n, 2, d): also each mirror image's own embedding (a flipped gallery)."""

        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack(
                [photos.resize(np.asarray(image, np.uint8), self.image_size) for image in chunk]
            ).astype(np.float32)
            vectors = embed.l2_normalize(self.model.predict(batch, verbose=0))
            if self.tta == "flip" or mirrored:
                mirror = embed.l2_normalize(self.model.predict(batch[:, :, ::-1], verbose=0))
            if self.tta == "flip":
                vectors = embed.l2_normalize(vectors + mirror)
            out.append(np.stack([vectors, mirror], axis=1) if mirrored else vectors)
        if not out:
            dimensions = self.model.output.shape[-1]
            return np.zeros((0, 2, dimensions) if mirrored else (0, dimensions), np.float32)
        return np.concatenate(out).astype(np.float32)

    def _embed_photos(
        self,
        items: list,
        boxes: list,
        thumbnails: bool = False,
        mirrored: bool = False,
        local: bool = False,
    ):
        """Read and embed ``items`` (paths or arrays) with ``photos.prepare``, two at a time
        in threads; each full-size photo is held only while it is reduced to the model's input
        (and, with ``thumbnails``, a small copy; with ``local``, its local features, in
        :attr:`query_features`, in order), so memory does not grow with the photos' sizes.

        Returns (embeddings (n_readable, d), or (n_readable, 2, d) with ``mirrored``: see
        :meth:`embed`; positions of the readable photos, {position: why unreadable},
        {position: small copy} if ``thumbnails``).
        """
        vectors, readable, errors, small = [], [], {}, {}
        self.query_features = []

        def read(pair):
            try:
                if thumbnails or local:
                    model_input, image = photos.prepare_with_crop(*pair, self.image_size)
                else:
                    model_input, image = photos.prepare(*pair, self.image_size), None
            except ValueError as error:  # UnreadablePhoto, data.PhotoSizeError
                return error
            return (
                model_input,
                shrink(image) if thumbnails else None,
                self._local_features(image) if local else None,
            )

        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(items), READ_CHUNK):
                chunk = zip(
                    items[start : start + READ_CHUNK], boxes[start : start + READ_CHUNK],
                    strict=True,
                )  # fmt: skip
                good = []
                for position, result in enumerate(pool.map(read, chunk), start=start):
                    if isinstance(result, Exception):
                        errors[position] = str(result)
                        continue
                    image, thumbnail, features = result
                    good.append(image)
                    readable.append(position)
                    if thumbnails:
                        small[position] = thumbnail
                    if local:
                        self.query_features.append(features)
                vectors.append(self.embed(good, mirrored))
        embeddings = np.concatenate(vectors) if vectors else self.embed([], mirrored)
        return embeddings, readable, errors, small

    def catalogue_box(self, row: int) -> tuple | None:
        """The box a catalogue photo (by row of :attr:`catalogue`) is cropped to: its
        ``train.csv`` box with ``crop_to_box``, else None (whole)."""
        return data.parse_box(self.catalogue["box"].iloc[row]) if self.crop_to_box else None

    def _embed_catalogue(self) -> tuple[np.ndarray, int]:
        """Embeddings of every catalogue photo, in ``train.csv`` order, and how many were
        embedded now (the rest came from the cache)."""
        paths = [self.layout.photo("train", name) for name in self.catalogue["image"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} catalogue photo(s) listed in train.csv missing, e.g. {missing[0]}"
            )
        stats = [p.stat() for p in paths]
        keys = np.array(
            [
                f"{name}|{s.st_size}|{s.st_mtime_ns}|{self.catalogue_box(row)}"
                for row, (name, s) in enumerate(zip(self.catalogue["image"], stats, strict=True))
            ]
        )
        settings = json.dumps(
            {
                "model": self.model_fingerprint,
                "image_size": self.image_size,
                "tta": self.tta,
                "mirrored": self.flipped_gallery,
            }
        )
        cached = _read_cache(self.cache_path, settings)
        todo = [row for row, key in enumerate(keys) if key not in cached]
        boxes = [self.catalogue_box(row) for row in todo]
        fresh, readable, errors, _ = self._embed_photos(
            [paths[row] for row in todo], boxes, mirrored=self.flipped_gallery
        )
        for position, vector in zip(readable, fresh, strict=True):
            cached[keys[todo[position]]] = vector
        if errors:  # named and left out of this run's catalogue; validate lists them too
            bad_rows = sorted(todo[position] for position in errors)
            for reason in errors.values():
                warnings.warn(f"catalogue photo skipped: {reason}", stacklevel=3)
            self.catalogue = self.catalogue.drop(index=bad_rows).reset_index(drop=True)
            keys = np.delete(keys, bad_rows)
            self.catalogue_skipped = list(errors.values())
            if self.catalogue.empty:
                raise ValueError(f"{self.catalogue_dir}: no catalogue photo is readable")
        embeddings = np.stack([cached[key] for key in keys]).astype(np.float32)
        if self.cache_path is not None and (todo or len(cached) != len(keys)):
            _write_cache(self.cache_path, keys, embeddings, settings)
        return embeddings, len(todo)

    def _keep_catalogue_rows(self, keep: np.ndarray) -> None:
        """Match against the catalogue rows ``keep`` (bool per row) only."""

        if not keep.any():
            raise ValueError(f"no catalogue photo is left to match: {self.candidates_note}")
        rows = np.flatnonzero(keep)
        self.catalogue = self.catalogue.iloc[rows].reset_index(drop=True)
        self.catalogue_embeddings = self.catalogue_embeddings[rows]
        if self.catalogue_mirrored is not None:
            self.catalogue_mirrored = self.catalogue_mirrored[rows]
        if self.catalogue_features is not None:
            self.catalogue_features = [self.catalogue_features[row] for row in rows]
            labels = self.catalogue["individual_id"].astype(str).to_numpy()
            self.feature_index = local_features.DescriptorIndex(self.catalogue_features, labels)

    def _local_features(self, image: np.ndarray):

        return local_features.extract(image, self.fused[1].features)

    def _catalogue_features(self, cache_dir):
        """Local features of every catalogue photo (cached in ``catalogue_features.npz``,
        only new or changed photos computed) and the LNBNN index over them."""

        paths = [self.layout.photo("train", name) for name in self.catalogue["image"]]
        boxes = [self.catalogue_box(row) for row in range(len(self.catalogue))]
        cache_path = None if cache_dir is None else Path(cache_dir) / local_features.CACHE_FILE
        cache = local_features.FeatureCache(cache_path, self.fused[1].features)
        keys = [local_features.photo_key(p, b) for p, b in zip(paths, boxes, strict=True)]
        features = cache.features(keys, lambda i: photos.prepare(paths[i], boxes[i]))
        cache.save(keep=keys)
        self.catalogue_features_computed = cache.computed
        labels = self.catalogue["individual_id"].astype(str).to_numpy()
        return features, local_features.DescriptorIndex(features, labels)

    # ------------------------------------------------------------------ matching
    def match(
        self,
        photos: Iterable,
        top: int = 5,
        boxes: dict[str, tuple] | None = None,
    ) -> pd.DataFrame:
        """The ``top`` candidate individuals of each photo (paths or uint8 arrays), best first.

        Returns one row per photo and candidate: ``photo`` (its path, or ``array-N``),
        ``rank`` (1 = best), ``individual_id``, ``species``, ``similarity`` and
        ``new_individual`` (the run's verdict for the photo, the same on each of its rows).
        Unreadable photos are left out and listed in :attr:`skipped` (photo, reason).
        ``boxes`` (file name -> box) crops the photos named, with ``crop_to_box``.
        """

        if top < 1:
            raise ValueError(f"top must be >= 1, got top={top}")
        photos = list(photos)
        names = [
            f"array-{i}" if isinstance(p, np.ndarray) else str(p) for i, p in enumerate(photos)
        ]
        if boxes and not self.crop_to_box:
            raise ValueError(
                "boxes for the query photos need an Identifier made with crop_to_box=True, so "
                "that the catalogue photos are cropped to their boxes too"
            )
        boxes = boxes or {}
        photo_boxes = [
            None if isinstance(p, np.ndarray) else boxes.get(Path(p).name) for p in photos
        ]
        queries, readable, errors, small = self._embed_photos(
            photos, photo_boxes, thumbnails=True, local=self.fused is not None
        )
        self.skipped = pd.DataFrame(
            [(names[i], reason) for i, reason in errors.items()], columns=["photo", "reason"]
        )
        self.query_embeddings = {names[i]: q for i, q in zip(readable, queries, strict=True)}
        self.query_thumbnails = {names[i]: small[i] for i in readable}
        if len(queries) == 0:
            return self._with_catalogue_metadata(pd.DataFrame(columns=MATCH_COLUMNS))
        if self.fused is not None:
            return self._fused_matches([names[i] for i in readable], queries, top)
        # The run's rule over its k neighbours orders the first candidates; a wider search
        # fills the rest of the ``top`` by best similarity (with a small k, say 3, the k
        # neighbours often hold one or two individuals only).
        gallery = self.catalogue_embeddings
        labels = self.catalogue["individual_id"].to_numpy(dtype=object)
        if self.flipped_gallery:  # the run matched against each photo and its mirror image
            gallery = np.concatenate([gallery, self.catalogue_mirrored])
            labels = np.concatenate([labels, labels])
        k = min(self.k, len(gallery))
        wider = min(max(k, 10 * top), len(gallery))
        similarities, indices = knn.cosine_topk(gallery, queries, wider)
        by_rule, _ = knn.rank_individuals(
            similarities[:, :k], indices[:, :k], labels, self.rule, n_ids=top
        )
        by_similarity, _ = knn.rank_individuals(similarities, indices, labels, "max", n_ids=top)
        ids = [
            list(dict.fromkeys(i for i in (*first, *second) if i is not None))[:top]
            for first, second in zip(by_rule, by_similarity, strict=True)
        ]
        species = dict(zip(self.catalogue["individual_id"], self.catalogue["species"], strict=True))
        images = self.catalogue["image"].to_numpy()
        rows = []
        for query, i in enumerate(readable):
            best = {}  # individual -> (its best similarity among the neighbours, that photo)
            for similarity, index in zip(similarities[query], indices[query], strict=True):
                best.setdefault(labels[index], (float(similarity), images[index % len(images)]))
            new = bool(1.0 - similarities[query, 0] > self.threshold)
            for rank, individual in enumerate(ids[query], start=1):
                similarity, photo = best[individual]
                rows.append(
                    (names[i], rank, individual, species[individual], similarity, new)
                    + (np.nan, np.nan, False, photo)
                )
        return self._with_catalogue_metadata(pd.DataFrame(rows, columns=MATCH_COLUMNS))

    def _with_catalogue_metadata(self, matches: pd.DataFrame) -> pd.DataFrame:
        """``matches`` with the encounter columns the catalogue has, of each candidate's
        ``catalogue_photo`` (its best-matching photo), as ``catalogue_<column>``."""

        columns = [c for c in ENCOUNTER_COLUMNS if c in self.catalogue.columns]
        by_image = self.catalogue.drop_duplicates("image").set_index("image")
        for column in columns:
            values = by_image[column].reindex(matches["catalogue_photo"]).fillna("")
            matches[f"catalogue_{column}"] = values.to_numpy()
        return matches

    def _fused_matches(self, names: list[str], queries: np.ndarray, top: int) -> pd.DataFrame:
        """The fused head's candidates: ranked by the probability that they show the query's
        animal; ``new_individual`` when the best is below the run's threshold; ``verified``
        where the inliers reach the run's verified tier."""

        fusion, settings, scores = self.fused
        index = self.feature_index
        labels = self.catalogue["individual_id"].astype(str).to_numpy()
        photo_scores = matching.photo_similarities(queries, self.catalogue_embeddings)
        similarities = matching.individual_maxima(photo_scores, labels, index.individuals)
        pairs = matching.candidate_pairs(
            names, self.query_features, self.catalogue_features, labels, similarities, None,
            max(settings.shortlist, top), index, verify_photos=settings.verify_photos,
            photo_scores=photo_scores, **settings.verify_options(),
        )  # fmt: skip
        ordered = pairs.assign(probability=fusion.probability(pairs)).sort_values(
            ["probability", "individual"], ascending=[False, True]
        )
        by_query = dict(tuple(ordered.groupby("query", sort=False)))
        verified_at = scores.get("verified_inliers")
        species = dict(zip(self.catalogue["individual_id"], self.catalogue["species"], strict=True))
        images = self.catalogue["image"].to_numpy()
        rows = []
        for name in names:
            candidates = by_query[name]
            new = bool(candidates["probability"].iloc[0] < self.fused_threshold)
            for rank, row in enumerate(candidates.head(top).itertuples(index=False), start=1):
                verified = verified_at is not None and row.inliers >= verified_at
                rows.append((
                    name, rank, row.individual, species[row.individual], float(row.similarity),
                    new, float(row.probability), int(row.inliers), bool(verified),
                    images[row.photo] if row.photo >= 0 else "",
                ))  # fmt: skip
        return self._with_catalogue_metadata(pd.DataFrame(rows, columns=MATCH_COLUMNS))

    def matched_keypoints(
        self, photo, catalogue_photo: str, box: tuple | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The geometric check behind a candidate, at the photos' own resolution: the query
        ``photo`` (path or array, cropped to ``box`` as in :meth:`match`) against the
        catalogue photo named ``catalogue_photo`` (a ``catalogue_photo`` of the matches).

        Returns (query image, catalogue image, pairs (inliers, 2, 2): each inlier's x, y in
        the query image and in the catalogue image, in those images' pixels). The check is
        the one :meth:`match` ran (deterministic), so it finds the same inliers."""

        if self.fused is None:
            raise ValueError("matched keypoints need the run's fused head (local features)")
        rows = np.flatnonzero(self.catalogue["image"].to_numpy() == catalogue_photo)
        if len(rows) == 0:
            raise ValueError(
                f"{catalogue_photo} is not a photo of the catalogue {self.catalogue_dir}"
            )
        row = int(rows[0])
        key = None if isinstance(photo, np.ndarray) else (str(photo), box)
        if key is None or self._last_query[0] != key:  # one photo's candidates read it once
            query_image = photos.prepare(photo, box)
            query = local_features.extract(query_image, self.fused[1].features)
            self._last_query = (key, query_image, query)
        _, query_image, query = self._last_query
        catalogue_image = photos.prepare(
            self.layout.photo("train", catalogue_photo), self.catalogue_box(row)
        )
        candidate = self.catalogue_features[row]
        check = local_features.verify(query, candidate, **self.fused[1].verify_options())
        scales = np.array([query.scale, candidate.scale], np.float32)[None, :, None]
        return query_image, catalogue_image, check.pairs / scales

    def catalogue_photos(
        self, individual_id: str, query: np.ndarray, n: int | None = 3
    ) -> list[tuple[Path, tuple | None]]:
        """Up to ``n`` (None: all) catalogue photos of ``individual_id`` as (path, box or None),
        the most similar to the query embedding ``query`` (d,) first."""
        rows = np.flatnonzero(self.catalogue["individual_id"].to_numpy() == individual_id)
        order = rows[np.argsort(-(self.catalogue_embeddings[rows] @ query), kind="stable")]
        return [
            (
                self.layout.photo("train", self.catalogue["image"].iloc[row]),
                self.catalogue_box(int(row)),
            )
            for row in order[:n]
        ]


OUT_FILES = ("matches.csv", "skipped.csv", "review.html", "evidence")  # what identify writes


def prepare_out(out: str | os.PathLike, catalogue: str | os.PathLike, force: bool = False) -> Path:
    """Make ``out`` ready for identify's files (``OUT_FILES``): a new or empty folder, or with
    ``force`` one whose earlier identify files are removed (nothing else in it is touched).

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
                f"results of an earlier identify there ({', '.join(OUT_FILES)})"
            )
        for name in OUT_FILES:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def default_cache_dir(catalogue: str | os.PathLike) -> Path:
    """The catalogue's cache folder when none is given: ``whaleutils/identify/<catalogue name>-
    <digest of its absolute path>`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    absolute = Path(catalogue).resolve()
    digest = hashlib.sha256(str(absolute).encode()).hexdigest()[:12]
    return root / "whaleutils" / "identify" / f"{absolute.name}-{digest}"


def shrink(image: np.ndarray, side: int = 512) -> np.ndarray:
    """A copy of a uint8 RGB image no larger than ``side`` on its long side."""

    picture = Image.fromarray(image)
    picture.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(picture)


def _read_cache(path: Path | None, settings: str) -> dict[str, np.ndarray]:
    """The cached embeddings by key, if ``path`` holds a cache made with ``settings``. A file
    that cannot be read is named in a warning, set aside as ``<name>.unreadable`` and
    rebuilt (never trusted, never fatal)."""

    if path is None or not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as file:
            if str(file["settings"]) != settings:
                return {}
            return dict(zip(file["keys"].tolist(), file["embeddings"], strict=True))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as error:
        aside = path.with_name(path.name + ".unreadable")
        os.replace(path, aside)
        warnings.warn(
            f"{path}: unreadable embedding cache ({error}); moved to {aside.name}, rebuilding",
            stacklevel=3,
        )
        return {}


def _write_cache(path: Path, keys: np.ndarray, embeddings: np.ndarray, settings: str) -> None:
    """Write the cache under a name of this process's own, then rename it into place: two
    runs sharing a folder never read or leave a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(partial, "wb") as handle:
            np.savez(handle, keys=keys, embeddings=embeddings, settings=np.array(settings))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _fused_head(run_dir: Path, local: bool | None):
    """The run's fused head (``local/``: its fusion, settings and scores), or None."""

    folder = run_dir / matching.LOCAL_FOLDER
    if local is False:
        return None
    if not (folder / matching.FUSION_FILE).is_file():
        if local:
            raise FileNotFoundError(
                f"{folder / matching.FUSION_FILE} not found: the run has no fused head "
                "(notebook 04 with local_matching)"
            )
        return None
    scores = outputs.read_scores(folder)
    fusion = matching.Fusion.from_json(
        json.loads((folder / matching.FUSION_FILE).read_text()), str(folder / matching.FUSION_FILE)
    )
    return fusion, matching.LocalSettings.from_parameter(scores["local_matching"]), scores


def _fingerprint(path: Path) -> str:
    """A digest of the model file: the cache is valid for this model only."""
    return data.file_sha256(path)
