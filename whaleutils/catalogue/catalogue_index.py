"""A catalogue ready to be matched against: its photos embedded by a run's model, their local
features, both cached, and the filters that narrow which photos can be matched.

``identify.Identifier`` puts a :class:`PhotoEmbedder` (the run's model with its TTA), a
:class:`CatalogueIndex` and a matcher (``identify.KnnMatcher`` or ``identify.FusedMatcher``)
together::

    embedder = PhotoEmbedder(model, 224, tta="flip", fingerprint=digest_of_the_model_file)
    index = CatalogueIndex.build("my_catalogue", embedder, cache_dir, features=settings)
    index.keep(candidates)                  # an encounters.CandidateFilter, optional
    index.table, index.embeddings, index.features, index.descriptors

Photos are read by ``photos.prepare`` (the function training and the crop cache use), two at a
time in threads, each full-size photo held only while it is reduced. The embeddings cache
(``catalogue_embeddings.npz``) is keyed by each photo's name, size, modification time and box
and holds one model's embeddings (its file's digest, image size, TTA, mirroring); the local
features' cache is ``local_features.FeatureCache``'s. Both are written under a private name and
renamed into place, so two processes sharing a cache never read a half-written file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.contracts import caches
from whaleutils.datasets import data
from whaleutils.images import photos
from whaleutils.retrieval import embed, local_features

CACHE_FILE = "catalogue_embeddings.npz"
READ_CHUNK = 128  # photos embedded at a time (each is held at the model's size only)
DESCRIBE_CHUNK = 512  # photos described, then saved to the caches, at a time


@dataclass
class PhotosRead:
    """What :meth:`PhotoEmbedder.read` made of a list of photos: ``embeddings`` (n, d) of the
    readable ones (n, 2, d mirrored), their ``positions`` in the list, ``errors`` {position:
    why unreadable}, ``thumbnails`` {position: small copy} and ``features`` (local features of
    each readable photo, in order) where asked for."""

    embeddings: np.ndarray
    positions: list[int] = field(default_factory=list)
    errors: dict[int, str] = field(default_factory=dict)
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)
    features: list = field(default_factory=list)


class PhotoEmbedder:
    """A run's embedding model applied to photos: its input size, its TTA (``embed.TTA_MODES``;
    ``"flip"``: each photo's embedding averaged with its mirror image's), ``batch_size`` photos
    at a time.
    ``fingerprint`` names the model (its file's digest) in the caches it fills."""

    def __init__(
        self,
        model,
        image_size: int,
        tta: str | None = None,
        batch_size: int = 32,
        fingerprint: str = "",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.model = model
        self.image_size = int(image_size)
        self.tta = tta or "none"
        embed.tta_views(self.tta)  # a mode this version knows, or ValueError naming them
        self.batch_size = batch_size
        self.fingerprint = fingerprint
        self.dimensions = int(model.output.shape[-1])

    def embed(self, images: Sequence[np.ndarray], mirrored: bool = False) -> np.ndarray:
        """L2-normalised embeddings (n, d) of uint8 RGB images (resized to the model's size by
        ``photos.resize`` where they are not), with the TTA; with ``mirrored`` (n, 2, d): also
        each mirror image's own embedding (a flipped gallery)."""

        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack(
                [photos.resize(np.asarray(image, np.uint8), self.image_size) for image in chunk]
            ).astype(np.float32)
            vectors = embed.embed_images(
                self.model, batch, self.tta, mirrored, pad_to=self.batch_size
            )
            out.append(np.stack(vectors, axis=1) if mirrored else vectors)
        if not out:
            shape = (0, 2, self.dimensions) if mirrored else (0, self.dimensions)
            return np.zeros(shape, np.float32)
        return np.concatenate(out).astype(np.float32)

    def read(
        self,
        items: Sequence,
        boxes: Sequence,
        thumbnails: bool = False,
        mirrored: bool = False,
        features: local_features.FeatureSettings | None = None,
    ) -> PhotosRead:
        """Read and embed ``items`` (paths or arrays, each cropped to its box or None), with
        ``thumbnails`` a small copy of each, with ``features`` its local features; a photo
        that cannot be read is an entry of ``errors``, never an exception."""

        result = PhotosRead(self.embed([], mirrored))
        vectors = []

        def read_one(pair):
            try:
                if thumbnails or features is not None:
                    model_input, image = photos.prepare_with_crop(*pair, self.image_size)
                else:
                    model_input, image = photos.prepare(*pair, self.image_size), None
            except ValueError as error:  # UnreadablePhoto, data.PhotoSizeError
                return error
            return (
                model_input,
                shrink(image) if thumbnails else None,
                None if features is None else local_features.extract(image, features),
            )

        with ThreadPoolExecutor(max_workers=2) as pool:
            for start in range(0, len(items), READ_CHUNK):
                chunk = zip(
                    items[start : start + READ_CHUNK], boxes[start : start + READ_CHUNK],
                    strict=True,
                )  # fmt: skip
                good = []
                for position, outcome in enumerate(pool.map(read_one, chunk), start=start):
                    if isinstance(outcome, Exception):
                        result.errors[position] = str(outcome)
                        continue
                    image, thumbnail, photo_features = outcome
                    good.append(image)
                    result.positions.append(position)
                    if thumbnails:
                        result.thumbnails[position] = thumbnail
                    if features is not None:
                        result.features.append(photo_features)
                vectors.append(self.embed(good, mirrored))
        if vectors:
            result.embeddings = np.concatenate(vectors)
        return result


class CatalogueIndex:
    """A catalogue's photos, embedded (and with ``features``, their local features and the
    LNBNN index over them), in ``train.csv`` order; photos that cannot be read are left out
    and named in :attr:`skipped`. Made by :meth:`build`.

    Attributes: ``table`` (the rows matched against), ``embeddings`` (n, d), ``mirrored``
    (n, d, each photo's mirror image's, or None), ``features`` (list, or None),
    ``descriptors`` (``local_features.DescriptorIndex`` or None), ``embedded`` and
    ``features_computed`` (how many were computed now, not read from the caches), ``note``
    (what a filter kept, or None).
    """

    def __init__(self, folder: Path, table: pd.DataFrame, crop_to_box: bool):
        self.folder = Path(folder)
        self.layout = data.Layout(self.folder)
        self.table = table
        self.crop_to_box = crop_to_box
        self.embeddings = np.zeros((0, 0), np.float32)
        self.mirrored: np.ndarray | None = None
        self.features: list | None = None
        self.descriptors: local_features.DescriptorIndex | None = None
        self.skipped: list[str] = []
        self.embedded = self.features_computed = 0
        self.note: str | None = None
        self.engine = "auto"

    @classmethod
    def build(
        cls,
        catalogue: str | os.PathLike,
        embedder: PhotoEmbedder,
        cache_dir: str | os.PathLike | None = None,
        crop_to_box: bool = False,
        mirrored: bool = False,
        features: local_features.FeatureSettings | None = None,
        engine: str = "auto",
        progress: bool = False,
    ) -> CatalogueIndex:
        """Embed the catalogue (``mirrored``: each photo's mirror image too) and, with
        ``features``, extract its local features and index their descriptors (``engine``:
        ``local_features.DescriptorIndex``'s); only photos new or changed since the caches in
        ``cache_dir`` were written are computed (None: no cache), each chunk saved as it
        finishes (a run killed and rerun loses at most one); with ``progress``, a progress line
        on stderr with the time left when there is more than one chunk to do.

        Raises
        ------
        ValueError
            When the catalogue has no (readable) photo, or ``cache_dir`` is a file, not
            writable, or inside the catalogue.
        FileNotFoundError
            When a photo listed in ``train.csv`` is missing.
        """
        folder = Path(catalogue)
        table = data.read_train(folder)
        index = cls(folder, table, bool(crop_to_box))
        if table.empty:
            raise ValueError(f"{index.layout.train_csv}: the catalogue has no photos")
        cache_dir = None if cache_dir is None else check_cache_dir(cache_dir, folder)
        index.engine = engine
        index._describe(embedder, cache_dir, mirrored, features, progress)
        return index

    # ------------------------------------------------------------------ the photos
    def box(self, row: int) -> tuple | None:
        """The box a catalogue photo (by row of :attr:`table`) is cropped to: its
        ``train.csv`` box with ``crop_to_box``, else None (whole)."""
        return data.parse_box(self.table["box"].iloc[row]) if self.crop_to_box else None

    def path(self, row: int) -> Path:
        return self.layout.photo("train", self.table["image"].iloc[row])

    @property
    def labels(self) -> np.ndarray:
        """(n,) each photo's individual id, as text."""
        return self.table["individual_id"].astype(str).to_numpy()

    def species_of(self) -> dict[str, str]:
        return dict(zip(self.table["individual_id"], self.table["species"], strict=True))

    def row_of(self, image: str) -> int:
        """The row of the catalogue photo named ``image``; raises naming it if there is none."""
        rows = np.flatnonzero(self.table["image"].to_numpy() == image)
        if len(rows) == 0:
            raise ValueError(f"{image} is not a photo of the catalogue {self.folder}")
        return int(rows[0])

    def photos_of(
        self, individual_id: str, query: np.ndarray, n: int | None = 3
    ) -> list[tuple[Path, tuple | None]]:
        """Up to ``n`` (None: all) photos of ``individual_id`` as (path, box or None), the most
        similar to the query embedding ``query`` (d,) first."""
        rows = np.flatnonzero(self.table["individual_id"].to_numpy() == individual_id)
        order = rows[np.argsort(-(self.embeddings[rows] @ query), kind="stable")]
        return [(self.path(int(row)), self.box(int(row))) for row in order[:n]]

    def keep(self, candidates) -> None:
        """Match only the photos an ``encounters.CandidateFilter`` keeps (species, viewpoint,
        dates, distance); :attr:`note` says what it kept. An inactive filter keeps all."""
        if candidates is None or not candidates.active:
            return
        self.note = candidates.describe(self.table)
        keep = candidates.keep(self.table)
        if not keep.any():
            raise ValueError(f"no catalogue photo is left to match: {self.note}")
        rows = np.flatnonzero(keep)
        self.table = self.table.iloc[rows].reset_index(drop=True)
        self.embeddings = self.embeddings[rows]
        if self.mirrored is not None:
            self.mirrored = self.mirrored[rows]
        if self.features is not None:
            self.features = [self.features[row] for row in rows]
            self.descriptors = local_features.DescriptorIndex(
                self.features, self.labels, engine=self.engine
            )

    # ------------------------------------------------------------------ building
    def _describe(
        self,
        embedder: PhotoEmbedder,
        cache_dir: Path | None,
        mirrored: bool,
        settings: local_features.FeatureSettings | None,
        progress: bool,
    ) -> None:
        """Embeddings (and with ``settings`` local features and the LNBNN index) of every
        photo, in ``train.csv`` order; unreadable photos dropped. Photos the caches lack are
        read once each, :data:`DESCRIBE_CHUNK` at a time, each chunk saved as it finishes."""
        paths = [self.path(row) for row in range(len(self.table))]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} catalogue photo(s) listed in train.csv missing, e.g. {missing[0]}"
            )
        boxes = [self.box(row) for row in range(len(self.table))]
        stats = [p.stat() for p in paths]
        keys = [
            f"{name}|{s.st_size}|{s.st_mtime_ns}|{box}"
            for name, s, box in zip(self.table["image"], stats, boxes, strict=True)
        ]
        embedding_settings = json.dumps(
            {
                "model": embedder.fingerprint,
                "image_size": embedder.image_size,
                "tta": embedder.tta,
                "mirrored": mirrored,
            }
        )
        vectors = EmbeddingCache(
            None if cache_dir is None else cache_dir / CACHE_FILE, embedding_settings
        )
        features = feature_keys = None
        if settings is not None:
            features = local_features.FeatureCache(
                None if cache_dir is None else cache_dir / local_features.CACHE_FILE, settings
            )
            feature_keys = [
                local_features.photo_key(p, b) for p, b in zip(paths, boxes, strict=True)
            ]
        todo = [
            row
            for row, key in enumerate(keys)
            if key not in vectors.entries
            or (features is not None and feature_keys[row] not in features.entries)
        ]
        shown = progress and len(todo) > DESCRIBE_CHUNK
        meter = Meter(len(todo), "catalogue photos described") if shown else None
        errors: dict[int, str] = {}
        for start in range(0, len(todo), DESCRIBE_CHUNK):
            rows = todo[start : start + DESCRIBE_CHUNK]
            need_features = features is not None and any(
                feature_keys[row] not in features.entries for row in rows
            )
            fresh = embedder.read(
                [paths[row] for row in rows],
                [boxes[row] for row in rows],
                mirrored=mirrored,
                features=settings if need_features else None,
            )
            for at, position in enumerate(fresh.positions):
                row = rows[position]
                if keys[row] not in vectors.entries:
                    vectors.add(keys[row], fresh.embeddings[at])
                if need_features and feature_keys[row] not in features.entries:
                    features.add(feature_keys[row], fresh.features[at])
            errors.update({rows[position]: why for position, why in fresh.errors.items()})
            vectors.save_part([keys[row] for row in rows])
            if need_features:
                features.save_part([feature_keys[row] for row in rows])
            if meter is not None:
                meter.update(len(rows))
        if errors:  # named and left out of this run's catalogue; validate lists them too
            for reason in errors.values():
                warnings.warn(f"catalogue photo skipped: {reason}", stacklevel=4)
            bad_rows = sorted(errors)
            self.table = self.table.drop(index=bad_rows).reset_index(drop=True)
            keys = [key for row, key in enumerate(keys) if row not in errors]
            if feature_keys is not None:
                feature_keys = [key for row, key in enumerate(feature_keys) if row not in errors]
            self.skipped = list(errors.values())
            if self.table.empty:
                raise ValueError(f"{self.folder}: no catalogue photo is readable")
        vectors.save(keep=keys)  # folds the parts into the one file, when due
        stacked = np.stack([vectors.entries[key] for key in keys]).astype(np.float32)
        self.embedded = vectors.computed
        # a flipped gallery: (n, 2, d), each photo and its mirror image
        self.embeddings = stacked[:, 0] if mirrored else stacked
        self.mirrored = stacked[:, 1] if mirrored else None
        if features is not None:
            features.save(keep=feature_keys)
            self.features = [features.entries[key] for key in feature_keys]
            self.features_computed = features.computed
            self.descriptors = local_features.DescriptorIndex(
                self.features, self.labels, engine=self.engine
            )


def check_cache_dir(cache_dir: str | os.PathLike, catalogue: Path) -> Path:
    """``cache_dir``, made if needed, once it is known to be a writable folder outside the
    catalogue (so a cache never lands in the data set, nor fails after the embedding)."""
    cache_dir = Path(cache_dir)
    resolved, inside = cache_dir.resolve(), catalogue.resolve()
    if resolved == inside or inside in resolved.parents:
        raise ValueError(
            f"cache folder {cache_dir} is inside the catalogue {catalogue}: choose one outside it"
        )
    if cache_dir.exists() and not cache_dir.is_dir():
        raise ValueError(f"cache folder {cache_dir} is a file, not a folder")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cache folder {cache_dir} cannot be made: {error.strerror}") from None
    if not os.access(cache_dir, os.W_OK | os.X_OK):
        raise ValueError(f"cache folder {cache_dir} is not writable: choose another (--cache)")
    return cache_dir


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


class EmbeddingCache(caches.PartedCache):
    """A catalogue's embeddings by photo key, in one ``.npz`` file and its parts
    (``caches.PartedCache``), tied to one model's settings; an unreadable file is set aside as
    ``<name>.unreadable`` and rebuilt (never trusted, never fatal)."""

    kind = "embedding cache"
    set_aside = True

    def decode(self, stored) -> dict[str, np.ndarray]:
        keys, embeddings = stored["keys"], stored["embeddings"]
        if len(keys) != len(embeddings):
            raise ValueError(f"{len(keys)} keys but {len(embeddings)} embeddings")
        return dict(zip(keys.tolist(), embeddings, strict=True))

    def encode(self, keys) -> dict[str, np.ndarray]:
        return {
            "keys": np.array(list(keys), dtype=str),
            "embeddings": np.stack([self.entries[key] for key in keys]).astype(np.float32),
        }


class Meter:
    """A progress line on stderr: how many of ``total`` are done, the pace and the time left
    at the pace since it began (the line is rewritten in place, ended when all are done)."""

    def __init__(self, total: int, what: str):
        self.total, self.what, self.done = int(total), what, 0
        self.started = time.monotonic()

    def update(self, count: int) -> None:
        self.done += int(count)
        elapsed = time.monotonic() - self.started
        pace = elapsed / max(self.done, 1)
        print(
            f"\r{self.done:,} of {self.total:,} {self.what} ({100 * self.done / self.total:.0f}%), "
            f"{pace:.2f} s each, {duration(pace * (self.total - self.done))} left",
            end="" if self.done < self.total else "\n",
            file=sys.stderr,
            flush=True,
        )


def duration(seconds: float) -> str:
    """``seconds`` as a reader says them: "about 40 s", "about 12 min", "about 1 h 5 min"."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"about {seconds:.0f} s"
    minutes = int(round(seconds / 60))
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60} min"
