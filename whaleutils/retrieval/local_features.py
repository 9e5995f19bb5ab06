"""Local-feature matching: keypoints, a descriptor index over a catalogue, geometric checks.

The classic photo-ID matcher (HotSpotter in Wild Me's Wildbook; WildFusion in wildlife-tools),
as a second opinion beside the embedding:

- :func:`extract` finds SIFT keypoints in a photo (OpenCV) and describes them as RootSIFT
  (L1-normalised, square-rooted SIFT, so that Euclidean distance compares them as the
  Hellinger kernel does), optionally after CLAHE contrast normalisation; or, with
  ``detector="xfeat"``, XFeat's learned keypoints and 64-d unit descriptors
  (``training.xfeat``, on the grey photo), compared the same way.
- :class:`DescriptorIndex` holds every descriptor of a catalogue in one FLANN kd-tree
  (OpenCV) and scores each individual for a query photo by LNBNN (local naive-Bayes nearest
  neighbour, HotSpotter's score): each query descriptor's nearest catalogue descriptor earns
  its individual the margin by which it beats the next, ``d_(K+1) - d_j``.
- :func:`verify` checks a query against one catalogue photo geometrically: Lowe's ratio test,
  then RANSAC (``cv2.estimateAffine2D`` by default); the inlier count and the matched keypoint
  pairs are the evidence a reviewer can look at.
- :class:`FeatureCache` keeps a catalogue's features in one file, keyed by photo (name, size,
  modification time, box) and tied to the settings; only new or changed photos are
  recomputed.

Keypoints are in the pixels of the photo as matched: the photo (cropped to its box, if it has
one) resized so that its longer side is ``settings.max_side``; ``PhotoFeatures.scale`` maps them
back to the photo's own pixels.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whaleutils.contracts import caches

CACHE_FILE = "catalogue_features.npz"
TRANSFORMS = ("affine", "similarity", "homography")
# keypoint detectors and their descriptors: (length, stored dtype)
DETECTORS = {"sift": (128, np.uint8), "xfeat": (64, np.float32)}


@dataclass(frozen=True)
class FeatureSettings:
    """How keypoints are found and described (part of the cache's key)."""

    max_side: int | None = 224  # the photo is resized so its longer side is this; None: as is
    max_keypoints: int = 0  # the strongest this many (SIFT's nfeatures, XFeat's top_k), 0: all
    root_sift: bool = True
    clahe: bool = False  # contrast-limited histogram equalisation (clip 2, 8 x 8 tiles) first
    detector: str = "sift"  # or "xfeat" (``training.xfeat``: learned, 64-d descriptors)

    def __post_init__(self):
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {sorted(DETECTORS)}, got {self.detector!r}")

    def fingerprint(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def name(self) -> str:
        """What a reader is told matched the keypoints: "RootSIFT", "SIFT" or "XFeat"."""
        if self.detector == "xfeat":
            return "XFeat"
        return "RootSIFT" if self.root_sift else "SIFT"


@dataclass
class PhotoFeatures:
    """One photo's keypoints and descriptors.

    ``points`` (n, 2) float32: x, y in the matched frame's pixels; ``raw``: the descriptors as
    the detector gives them, SIFT's (n, 128) uint8 (OpenCV's are whole numbers 0-255, so
    nothing is lost) or XFeat's (n, 64) float32 of unit length; ``scale``: matched-frame pixels
    per photo pixel; ``root_sift``: whether SIFT's :attr:`descriptors` are RootSIFT.
    """

    points: np.ndarray
    raw: np.ndarray
    scale: float
    root_sift: bool = True

    def __len__(self) -> int:
        return len(self.points)

    @property
    def descriptors(self) -> np.ndarray:
        """(n, d) float32 descriptors to compare by Euclidean distance."""
        values = self.raw.astype(np.float32)
        if self.raw.dtype != np.uint8 or not self.root_sift:  # XFeat's are compared as given
            return values
        return np.sqrt(values / np.maximum(values.sum(axis=1, keepdims=True), 1e-7))


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    if image.ndim == 2:
        return np.ascontiguousarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image must be (h, w[, 1|3|4]) uint8, got shape {image.shape}")
    image = np.ascontiguousarray(image[..., :3] if image.shape[2] != 1 else image[..., 0])
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


@functools.cache
def _xfeat_model():
    from whaleutils.training import xfeat

    return xfeat.build()


def extract(image: np.ndarray, settings: FeatureSettings = FeatureSettings()) -> PhotoFeatures:
    """The keypoints and descriptors of a uint8 photo (h, w[, 3]), RGB as
    ``photos.prepare`` returns it, by ``settings.detector``."""
    import cv2

    gray = _gray(np.asarray(image))
    scale = 1.0
    if settings.max_side:
        scale = settings.max_side / max(gray.shape)
        size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        gray = cv2.resize(gray, size, interpolation=interpolation)
    if settings.clahe:
        gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray)
    if settings.detector == "xfeat":
        from whaleutils.training import xfeat

        if min(gray.shape) < xfeat.MULTIPLE:  # too thin a photo for XFeat: no keypoints
            return PhotoFeatures(np.zeros((0, 2), np.float32), _empty(settings), scale)
        found = xfeat.detect_and_compute(
            _xfeat_model(), gray, top_k=settings.max_keypoints or xfeat.TOP_K
        )
        return PhotoFeatures(found.xy, found.descriptors, scale, settings.root_sift)
    sift = cv2.SIFT_create(nfeatures=settings.max_keypoints)
    keypoints, descriptors = sift.detectAndCompute(gray, None)
    if descriptors is None:
        descriptors = np.zeros((0, 128), np.float32)
    points = np.array([kp.pt for kp in keypoints], np.float32).reshape(-1, 2)
    return PhotoFeatures(points, _as_uint8(descriptors), scale, settings.root_sift)


def _empty(settings: FeatureSettings) -> np.ndarray:
    length, dtype = DETECTORS[settings.detector]
    return np.zeros((0, length), dtype)


def _as_uint8(descriptors: np.ndarray) -> np.ndarray:
    rounded = np.rint(descriptors)
    if (
        not np.array_equal(rounded, descriptors)
        or rounded.min(initial=0) < 0
        or (rounded.max(initial=0) > 255)
    ):
        raise ValueError("SIFT descriptors are expected as whole numbers 0-255 (OpenCV's)")
    return rounded.astype(np.uint8)


# ---------------------------------------------------------------------------- verification


@dataclass
class Verification:
    """The geometric check of a query photo against one catalogue photo.

    ``inliers``: matches consistent with one transform; ``pairs`` (inliers, 2, 2) float32: for
    each, the query's and the catalogue photo's x, y (matched-frame pixels); ``matches``: the
    matches that passed the ratio test; ``transform`` (2, 3) or (3, 3), or None."""

    inliers: int
    pairs: np.ndarray
    matches: int
    transform: np.ndarray | None = None


def ratio_matches(query: PhotoFeatures, candidate: PhotoFeatures, ratio: float = 0.8) -> np.ndarray:
    """(m, 2) int: query and candidate keypoint indices whose nearest candidate descriptor is
    closer than ``ratio`` times the second nearest (Lowe's test), by Euclidean distance."""
    import cv2

    if len(query) == 0 or len(candidate) < 2:
        return np.zeros((0, 2), np.int64)
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    pairs = matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
    kept = [
        (first.queryIdx, first.trainIdx)
        for first, second in (p for p in pairs if len(p) == 2)
        if first.distance < ratio * second.distance
    ]
    return np.array(kept, np.int64).reshape(-1, 2)


def verify(
    query: PhotoFeatures,
    candidate: PhotoFeatures,
    ratio: float = 0.8,
    reprojection: float = 5.6,
    transform: str = "affine",
    seed: int = 0,
) -> Verification:
    """Ratio-test matches, then RANSAC for one ``transform`` ("affine": 6 degrees of freedom,
    "similarity": rotation, scale and shift, "homography"); ``reprojection`` is RANSAC's
    inlier distance in matched-frame pixels. Deterministic for a ``seed``."""
    import cv2

    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {TRANSFORMS}, got transform={transform!r}")
    matched = ratio_matches(query, candidate, ratio)
    needed = 4 if transform == "homography" else 3
    empty = np.zeros((0, 2, 2), np.float32)
    if len(matched) < needed:
        return Verification(0, empty, len(matched))
    source = query.points[matched[:, 0]]
    target = candidate.points[matched[:, 1]]
    cv2.setRNGSeed(seed)
    if transform == "homography":
        model, mask = cv2.findHomography(source, target, cv2.RANSAC, reprojection)
    else:
        estimate = cv2.estimateAffine2D if transform == "affine" else cv2.estimateAffinePartial2D
        model, mask = estimate(
            source, target, method=cv2.RANSAC, ransacReprojThreshold=reprojection,
            maxIters=2000, confidence=0.99,
        )  # fmt: skip
    if model is None or mask is None:
        return Verification(0, empty, len(matched))
    keep = mask.ravel().astype(bool)
    pairs = np.stack([source[keep], target[keep]], axis=1).astype(np.float32)
    return Verification(int(keep.sum()), pairs, len(matched), model)


def draw_matches(query: np.ndarray, candidate: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The query and the candidate photo (uint8 RGB) side by side, at their own resolution
    (top-aligned, the gap white), each matched keypoint pair (``pairs`` (m, 2, 2): x, y in the
    query and in the candidate photo's pixels) dotted, circled and joined by a line, one
    colour each.
    Returns uint8 RGB (max height, query width + candidate width, 3)."""
    import cv2

    query, candidate = (np.ascontiguousarray(_rgb(image)) for image in (query, candidate))
    height = max(query.shape[0], candidate.shape[0])
    canvas = np.full((height, query.shape[1] + candidate.shape[1], 3), 255, np.uint8)
    canvas[: query.shape[0], : query.shape[1]] = query
    canvas[: candidate.shape[0], query.shape[1] :] = candidate
    thickness = max(1, round(height / 400))
    radius = 3 * thickness
    colours = _colours(len(pairs))
    for (start, end), colour in zip(np.asarray(pairs, np.float64), colours, strict=True):
        a = (round(start[0]), round(start[1]))
        b = (round(end[0]) + query.shape[1], round(end[1]))
        cv2.line(canvas, a, b, colour, thickness, cv2.LINE_AA)
        for point in (a, b):
            cv2.circle(canvas, point, radius, colour, thickness, cv2.LINE_AA)
            cv2.circle(canvas, point, thickness, colour, -1)  # filled: the keypoint itself
    return canvas


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.uint8)
    if image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image[..., :3] if image.shape[2] >= 3 else np.repeat(image[..., :1], 3, axis=2)


def _colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` bright, distinct RGB colours (hues spread evenly)."""

    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 1.0))
        for i in range(n)
    ]


# ---------------------------------------------------------------------------- LNBNN index


FLANN_SEED = 0  # OpenCV's random state when an index's kd-trees are grown (and faiss')
DESCRIPTOR_ENGINES = ("flann", "exact", "faiss", "faiss-flat")
FAISS_ABOVE = 4_000_000  # descriptors ("auto"): FLANN's float32 copy would pass 2 GB
FAISS_PROBES = 16  # inverted lists searched per descriptor (chosen on synthetic catalogues)
FAISS_TRAINING_PER_LIST = 40  # fewest descriptors per list (faiss' k-means wants 39)
FAISS_TRAINING_SAMPLE = 64  # descriptors per list its k-means is trained on, at most
ADD_CHUNK = 2048  # photos whose float32 descriptors are made and added at a time
LNBNN_NORMALISERS = ("next", "name")
NAME_RULE_DEPTH = 10  # neighbours beyond the k searched for another individual's ("name")


class DescriptorIndex:
    """Every descriptor of a gallery of photos in one nearest-neighbour index, for LNBNN.

    ``photos``: each gallery photo's features; ``labels``: each photo's individual.
    ``engine`` (:data:`DESCRIPTOR_ENGINES`): ``"flann"``, FLANN kd-trees (OpenCV; ``trees``
    and ``checks``, the leaves searched per query: more is closer to exact and slower);
    ``"exact"``, brute force (the reference); ``"faiss"``, an inverted file of 8-bit scalar-
    quantised descriptors (faiss ``IndexIVFScalarQuantizer``: a quarter of FLANN's float32
    copy, for catalogues of millions of descriptors; ``probes`` of its ``lists`` searched);
    ``"faiss-flat"``, exact search by faiss (``IndexFlatL2``, BLAS: a million descriptors'
    reference in seconds a query, where ``"exact"`` would hold gigabytes);
    ``"auto"``: ``"faiss"`` above :data:`FAISS_ABOVE` descriptors, else ``"flann"``.
    ``exact=True`` is ``engine="exact"``.
    """

    def __init__(
        self,
        photos: Sequence[PhotoFeatures],
        labels: Sequence[str],
        trees: int = 4,
        checks: int = 64,
        exact: bool = False,
        engine: str = "flann",
        probes: int = FAISS_PROBES,
    ):
        if len(photos) != len(labels):
            raise ValueError(f"{len(photos)} photos but {len(labels)} labels")
        engine = "exact" if exact else engine
        if engine not in (*DESCRIPTOR_ENGINES, "auto"):
            raise ValueError(
                f"engine must be one of {(*DESCRIPTOR_ENGINES, 'auto')}, got engine={engine!r}"
            )
        self.individuals, label_codes = np.unique(
            np.asarray(labels, dtype=str), return_inverse=True
        )
        # FLANN's trees (and faiss' lists) depend on the order of the rows and on a random
        # state: the rows go in an order of the photos' own (individual, then descriptors'
        # digest) and the index is grown from a fixed seed, so one set of photos gives one
        # index however it is listed (notebook 04's gallery and identify's catalogue of the
        # same photos agree).
        order = sorted(
            range(len(photos)),
            key=lambda i: (
                int(label_codes[i]),
                hashlib.sha1(np.ascontiguousarray(photos[i].descriptors).tobytes()).hexdigest(),
            ),
        )
        counts = np.array([len(photos[i]) for i in order], np.int64)
        self.photo_of_row = np.repeat(np.asarray(order, np.int64), counts)  # (rows,) photo
        self.individual_of_row = label_codes[self.photo_of_row]
        self.rows = int(counts.sum())
        self.dimensions = photos[0].raw.shape[1] if photos else 128
        if engine == "auto":
            engine = "faiss" if self.rows > FAISS_ABOVE else "flann"
        self.engine, self.checks, self.probes = engine, int(checks), int(probes)
        self.descriptors = None  # (rows, d) float32, held by "flann" and "exact" only
        self._index = None
        if engine.startswith("faiss"):
            self._index = _faiss_index(
                photos, order, self.rows, self.dimensions, self.probes, flat=engine == "faiss-flat"
            )
            return
        self.descriptors = (
            np.concatenate([photos[i].descriptors for i in order]).astype(np.float32)
            if self.rows
            else np.zeros((0, self.dimensions), np.float32)
        )
        if engine == "flann" and self.rows:
            import cv2

            cv2.setRNGSeed(FLANN_SEED)
            self._index = cv2.flann_Index(self.descriptors, {"algorithm": 1, "trees": int(trees)})

    @property
    def exact(self) -> bool:
        return self.engine == "exact"

    def __len__(self) -> int:
        return self.rows

    def neighbours(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, k) gallery rows and (n, k) Euclidean distances of each descriptor's ``k``
        nearest gallery descriptors, nearest first (faiss: a row of -1 at distance inf where
        its probed lists held fewer than ``k``)."""
        k = min(k, self.rows)
        if len(descriptors) == 0 or k == 0:
            return np.zeros((len(descriptors), 0), np.int64), np.zeros((len(descriptors), 0))
        if self.engine == "exact":
            query, gallery = descriptors.astype(np.float64), self.descriptors.astype(np.float64)
            squared = (query**2).sum(1)[:, None] - 2 * query @ gallery.T + (gallery**2).sum(1)[None]
            rows = np.argsort(squared, axis=1, kind="stable")[:, :k]
            distances = np.take_along_axis(squared, rows, axis=1)
        elif self.engine.startswith("faiss"):
            distances, rows = self._index.search(np.ascontiguousarray(descriptors, np.float32), k)
            distances = np.where(rows < 0, np.inf, distances)
        else:
            rows, distances = self._index.knnSearch(
                np.ascontiguousarray(descriptors, np.float32), k, params={"checks": self.checks}
            )
        return rows.astype(np.int64), np.sqrt(np.maximum(distances, 0.0))  # squared L2

    def lnbnn(
        self,
        query: PhotoFeatures,
        k: int = 1,
        exclude_photos: Sequence[int] = (),
        normaliser: str = "next",
        exclusion_depth: int | None = None,
    ) -> np.ndarray:
        """LNBNN score (n_individuals,) of each gallery individual for ``query``: for each query
        descriptor, its ``k`` nearest gallery descriptors each earn their individual (once per
        individual) ``d_norm - d``, the margin by which they beat the normalising neighbour.

        ``normaliser``: ``"next"``, the (k+1)-th neighbour (often the same whale's other photo,
        which punishes whales with many photos); ``"name"``, HotSpotter's rule: the nearest
        neighbour beyond the k whose individual is none of theirs (searched among the next
        :data:`NAME_RULE_DEPTH`; the last of them if all share the k's individuals).
        ``exclude_photos``: gallery photos to leave out (the query's own, in validation);
        ``exclusion_depth``: how many neighbours more are searched for them to be dropped from
        (None: ``4 (k + 1)``, room for a query's own photo; a whole individual left out, as
        ``curate duplicates`` does, needs more)."""
        if normaliser not in LNBNN_NORMALISERS:
            raise ValueError(
                f"normaliser must be one of {LNBNN_NORMALISERS}, got normaliser={normaliser!r}"
            )
        scores = np.zeros(len(self.individuals))
        excluded = np.asarray(list(exclude_photos), np.int64)
        depth = k + 1 if normaliser == "next" else k + NAME_RULE_DEPTH
        extra = 0
        if len(excluded):  # room for the excluded photos' neighbours
            extra = int(np.isin(self.photo_of_row, excluded).sum())
            extra = min(extra, 4 * (k + 1) if exclusion_depth is None else exclusion_depth)
        rows, distances = self.neighbours(query.descriptors, depth + extra)
        for row_ids, row_distances in zip(rows, distances, strict=True):
            found = row_ids >= 0  # faiss: fewer than asked in the probed lists
            row_ids, row_distances = row_ids[found], row_distances[found]
            if len(excluded):
                keep = ~np.isin(self.photo_of_row[row_ids], excluded)
                row_ids, row_distances = row_ids[keep], row_distances[keep]
            if len(row_ids) < k + 1:
                continue
            individuals = self.individual_of_row[row_ids[:depth]]
            if normaliser == "next":
                normalising = k
            else:
                others = np.flatnonzero(~np.isin(individuals[k:], individuals[:k]))
                normalising = k + int(others[0]) if len(others) else len(individuals) - 1
            normalising_distance = row_distances[normalising]
            seen = set()
            for individual, distance in zip(individuals[:k], row_distances[:k], strict=True):
                if int(individual) not in seen:
                    seen.add(int(individual))
                    scores[individual] += normalising_distance - distance
        return scores


def faiss_lists(rows: int) -> int:
    """The inverted lists of a faiss index over ``rows`` descriptors: about sqrt(rows), a
    power of two, 1 to 65,536, at least :data:`FAISS_TRAINING_PER_LIST` rows each."""
    lists = 2 ** int(np.round(np.log2(max(np.sqrt(max(rows, 1)), 1))))
    return int(max(1, min(lists, 65536, rows // FAISS_TRAINING_PER_LIST)))


def _faiss_index(photos: Sequence[PhotoFeatures], order: list[int], rows: int, dimensions: int,
                 probes: int, flat: bool = False):  # fmt: skip
    """An ``IndexIVFScalarQuantizer`` (8 bits per value, squared L2) over the photos'
    descriptors in ``order``, its row ids the rows of that order; trained on an evenly spaced
    sample of rows, the descriptors made and added :data:`ADD_CHUNK` photos at a time (never
    all in float32 at once). ``flat``: an exact ``IndexFlatL2`` instead."""
    import faiss

    if flat:
        exact = faiss.IndexFlatL2(dimensions)
        for chunk in range(0, len(order), ADD_CHUNK):
            block = [photos[i].descriptors for i in order[chunk : chunk + ADD_CHUNK]]
            exact.add(np.concatenate(block).astype(np.float32))
        return exact

    lists = faiss_lists(rows)
    quantizer = faiss.IndexFlatL2(dimensions)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, dimensions, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_L2
    )
    index.cp.seed = FLANN_SEED
    if rows == 0:
        index.train(np.zeros((1, dimensions), np.float32))
        return index
    wanted = np.unique(
        np.linspace(0, rows - 1, min(rows, lists * FAISS_TRAINING_SAMPLE)).astype(np.int64)
    )
    sample, start = [], 0
    for chunk in range(0, len(order), ADD_CHUNK):
        block = np.concatenate([photos[i].descriptors for i in order[chunk : chunk + ADD_CHUNK]])
        inside = wanted[(wanted >= start) & (wanted < start + len(block))] - start
        sample.append(block[inside])
        start += len(block)
    index.train(np.concatenate(sample).astype(np.float32))
    for chunk in range(0, len(order), ADD_CHUNK):
        block = [photos[i].descriptors for i in order[chunk : chunk + ADD_CHUNK]]
        index.add(np.concatenate(block).astype(np.float32))
    index.nprobe = int(min(probes, lists))
    return index


# ---------------------------------------------------------------------------- cache


def photo_key(path: str | os.PathLike, box=None) -> str:
    """A photo's cache key: name, size and modification time (a changed photo is a new key),
    and its box."""
    stat = Path(path).stat()
    box_text = "" if box is None else " ".join(f"{float(v):g}" for v in box)
    return f"{Path(path).name}|{stat.st_size}|{stat.st_mtime_ns}|{box_text}"


class FeatureCache(caches.PartedCache):
    """A catalogue's :class:`PhotoFeatures` in one ``.npz`` file and its parts
    (``caches.PartedCache``: saved a chunk at a time, every write atomic), tied to the settings.

    :meth:`features` returns each photo's features, computing only those whose key no file
    holds; :meth:`save` writes what was computed (a part, or the parts folded into the one
    file). A file written with other settings, or unreadable, is ignored (never trusted)."""

    kind = "feature cache"

    def __init__(self, path: str | os.PathLike | None, settings: FeatureSettings):
        self.feature_settings = settings
        super().__init__(path, settings.fingerprint())

    def decode(self, stored) -> dict[str, PhotoFeatures]:
        keys, counts = stored["keys"], stored["counts"]
        points, raw, scales = stored["points"], stored["raw"], stored["scales"]
        length, dtype = DETECTORS[self.feature_settings.detector]
        if (
            raw.shape[1:] != (length,)
            or raw.dtype != dtype
            or len(points) != len(raw)
            or counts.sum() != len(raw)
            or len(keys) != len(counts)
            or len(scales) != len(counts)
        ):
            raise ValueError("inconsistent feature cache: its arrays disagree in length")
        offsets = np.concatenate([[0], np.cumsum(counts)])
        return {
            str(key): PhotoFeatures(
                points[offsets[i] : offsets[i + 1]],
                raw[offsets[i] : offsets[i + 1]],
                float(scales[i]),
                self.feature_settings.root_sift,
            )
            for i, key in enumerate(keys)
        }

    def encode(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        chosen = [self.entries[k] for k in keys]
        return {
            "keys": np.array(keys, dtype=str),
            "counts": np.array([len(f) for f in chosen], np.int64),
            "points": np.concatenate([f.points for f in chosen]) if chosen else np.zeros((0, 2)),
            "raw": np.concatenate([f.raw for f in chosen])
            if chosen
            else _empty(self.feature_settings),
            "scales": np.array([f.scale for f in chosen], np.float64),
        }

    def features(self, keys: Sequence[str], read_image) -> list[PhotoFeatures]:
        """Each key's features; ``read_image(i)`` gives the i-th photo (uint8) where they must
        be computed."""
        for i, key in enumerate(keys):
            if key not in self.entries:
                self.add(key, extract(read_image(i), self.feature_settings))
        return [self.entries[key] for key in keys]
