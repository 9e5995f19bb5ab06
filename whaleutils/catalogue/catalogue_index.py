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
import warnings
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.datasets import data
from whaleutils.images import photos
from whaleutils.retrieval import embed, local_features

CACHE_FILE = "catalogue_embeddings.npz"
READ_CHUNK = 128  # photos embedded at a time (each is held at the model's size only)


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
            vectors = embed.embed_images(self.model, batch, self.tta, mirrored)
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

    @classmethod
    def build(
        cls,
        catalogue: str | os.PathLike,
        embedder: PhotoEmbedder,
        cache_dir: str | os.PathLike | None = None,
        crop_to_box: bool = False,
        mirrored: bool = False,
        features: local_features.FeatureSettings | None = None,
    ) -> CatalogueIndex:
        """Embed the catalogue (``mirrored``: each photo's mirror image too) and, with
        ``features``, extract its local features; only photos new or changed since the caches
        in ``cache_dir`` were written are computed (None: no cache).

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
        index._embed(embedder, cache_dir, mirrored)
        if features is not None:
            index._extract(features, cache_dir)
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
            self.descriptors = local_features.DescriptorIndex(self.features, self.labels)

    # ------------------------------------------------------------------ building
    def _embed(self, embedder: PhotoEmbedder, cache_dir: Path | None, mirrored: bool) -> None:
        """Embeddings of every photo, in ``train.csv`` order; unreadable photos dropped."""
        paths = [self.layout.photo("train", name) for name in self.table["image"]]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} catalogue photo(s) listed in train.csv missing, e.g. {missing[0]}"
            )
        stats = [p.stat() for p in paths]
        keys = np.array(
            [
                f"{name}|{s.st_size}|{s.st_mtime_ns}|{self.box(row)}"
                for row, (name, s) in enumerate(zip(self.table["image"], stats, strict=True))
            ]
        )
        settings = json.dumps(
            {
                "model": embedder.fingerprint,
                "image_size": embedder.image_size,
                "tta": embedder.tta,
                "mirrored": mirrored,
            }
        )
        cache_path = None if cache_dir is None else cache_dir / CACHE_FILE
        cached = read_cache(cache_path, settings)
        todo = [row for row, key in enumerate(keys) if key not in cached]
        fresh = embedder.read(
            [paths[row] for row in todo], [self.box(row) for row in todo], mirrored=mirrored
        )
        for position, vector in zip(fresh.positions, fresh.embeddings, strict=True):
            cached[keys[todo[position]]] = vector
        if fresh.errors:  # named and left out of this run's catalogue; validate lists them too
            bad_rows = sorted(todo[position] for position in fresh.errors)
            for reason in fresh.errors.values():
                warnings.warn(f"catalogue photo skipped: {reason}", stacklevel=4)
            self.table = self.table.drop(index=bad_rows).reset_index(drop=True)
            keys = np.delete(keys, bad_rows)
            self.skipped = list(fresh.errors.values())
            if self.table.empty:
                raise ValueError(f"{self.folder}: no catalogue photo is readable")
        vectors = np.stack([cached[key] for key in keys]).astype(np.float32)
        if cache_path is not None and (todo or len(cached) != len(keys)):
            write_cache(cache_path, keys, vectors, settings)
        self.embedded = len(todo)
        # a flipped gallery: (n, 2, d), each photo and its mirror image
        self.embeddings = vectors[:, 0] if mirrored else vectors
        self.mirrored = vectors[:, 1] if mirrored else None

    def _extract(self, settings: local_features.FeatureSettings, cache_dir: Path | None) -> None:
        """Local features of every photo (cached, only new or changed photos computed) and
        the LNBNN index over them."""
        paths = [self.path(row) for row in range(len(self.table))]
        boxes = [self.box(row) for row in range(len(self.table))]
        cache_path = None if cache_dir is None else cache_dir / local_features.CACHE_FILE
        cache = local_features.FeatureCache(cache_path, settings)
        keys = [local_features.photo_key(p, b) for p, b in zip(paths, boxes, strict=True)]
        self.features = cache.features(keys, lambda i: photos.prepare(paths[i], boxes[i]))
        cache.save(keep=keys)
        self.features_computed = cache.computed
        self.descriptors = local_features.DescriptorIndex(self.features, self.labels)


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


def read_cache(path: Path | None, settings: str) -> dict[str, np.ndarray]:
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


def write_cache(path: Path, keys: np.ndarray, embeddings: np.ndarray, settings: str) -> None:
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
