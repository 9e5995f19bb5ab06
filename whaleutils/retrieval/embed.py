"""Embeddings of a split, L2-normalised, saved as one ``.npz`` per split.

Schema of an embeddings file (``np.savez``; every stage after training reads only these)::

    image_names   str   (n,)      the image file names, in dataset order
    embeddings    float32 (n, d)  L2-normalised rows
    labels        str   (n,)      individual ids, "" where unknown (test images)
    model         str   ()        what produced them (free text, e.g. a checkpoint path)
    tta           str   ()        one of TTA_MODES: "none", "flip", "rot4", "rot4flip"
    mirrored      float32 (n, d)  optional: the mirror images' own L2-normalised embeddings
                                  (a flipped gallery adds them as gallery rows)
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from whaleutils.retrieval.splits import PARTS  # each part of a split is saved as <part>.npz

SCHEMA = {"image_names": "U", "embeddings": "f", "labels": "U", "model": "U", "tta": "U"}
PART_FILES = tuple(f"{part}.npz" for part in PARTS)

# Test-time augmentation: mode -> (quarter turns averaged, mirror image averaged in). "rot4"
# averages a photo's four quarter turns, so a photo turned by a multiple of 90 degrees has the
# upright photo's embedding (for heads photographed from above, pointing any way).
TTA_MODES = {"none": (1, False), "flip": (1, True), "rot4": (4, False), "rot4flip": (4, True)}


def tta_views(tta: str) -> tuple[int, bool]:
    """``(turns, flip)`` of a TTA mode; raises ValueError naming the modes for another."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {list(TTA_MODES)}, got tta={tta!r}")
    return TTA_MODES[tta]


def l2_normalize(vectors: np.ndarray, epsilon: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero.

    Examples
    --------
    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-D array (n, d), got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, epsilon)


def participation_ratio(embeddings: np.ndarray) -> float:
    """How many dimensions the L2-normalised ``embeddings`` (n, d) really use.

    ``(sum of eigenvalues)**2 / sum of squared eigenvalues`` of their covariance: 1 when all
    vary along one line, d when spread evenly over d dimensions. A model that has learned only
    global appearance (colour, brightness) scores a handful even with d = 512.
    """
    vectors = l2_normalize(np.asarray(embeddings, dtype=np.float64))
    if len(vectors) < 2:
        raise ValueError(f"need at least 2 embeddings, got {len(vectors)}")
    variances = np.linalg.svd(vectors - vectors.mean(axis=0), compute_uv=False) ** 2
    total = variances.sum()
    return float(total**2 / np.square(variances).sum()) if total > 0 else 0.0


def refuse_mirror_views(tta: str, flipped_gallery) -> None:
    """For a model that learned mirrored photos as other animals (notebook 04's
    ``mirror_identities``): raises ValueError if the TTA or the gallery would take a photo's
    mirror image for the same animal."""
    if tta_views(tta)[1] or flipped_gallery:
        raise ValueError(
            f"mirror_identities: a mirrored photo is another animal, so neither the TTA (tta="
            f"{tta!r}) nor the gallery (flipped_gallery={flipped_gallery!r}) may use mirror "
            "images; use tta 'none' or 'rot4' and flipped_gallery false"
        )


def compute_embeddings(
    embedding_model, image_batches, tta: str = "none", mirrored: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Embed a ``tf.data`` dataset of image batches (b, S, S, 3) with a Keras model.

    Returns L2-normalised float32 (n, d), in dataset order; with ``mirrored``, also the mirror
    images' own normalised embeddings (n, d), for a flipped gallery.

    The TTA (:data:`TTA_MODES`) averages normalised embeddings of views of each image, then
    normalises again: ``flip`` the image and its mirror image, ``rot4`` its four quarter
    turns, ``rot4flip`` both. The views are made on the device, inside the model
    (:func:`with_views`): each batch goes through the backbone once, with its views beside it,
    so every photo is read, decoded and sent to the device once.
    """
    return _embed_views(
        lambda model: predict_batches(model, image_batches), embedding_model, tta, mirrored
    )


EAGER_IMAGES = 8  # at most this many images go through the model eagerly (no graph traced)


def embed_images(
    embedding_model,
    images: np.ndarray,
    tta: str = "none",
    mirrored: bool = False,
    pad_to: int | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """:func:`compute_embeddings` of one array of images (b, S, S, 3), 0-255 float.

    Up to :data:`EAGER_IMAGES` images are called through the model eagerly: ``predict`` traces
    a graph the first time it sees a model or a batch size (seconds for an EfficientNet), which
    a handful of query photos would pay in full. More go by ``predict``, padded with zero
    images to ``pad_to`` rows when given and ``pad_to`` at a time (32 without), so that
    batches of one size (a catalogue's last, short batch too) share one traced graph.
    """

    def predict(model):
        if len(images) <= EAGER_IMAGES:
            import keras

            return keras.ops.convert_to_numpy(model(images, training=False))
        missing = max(0, (pad_to or 0) - len(images))
        padding = np.zeros((missing, *images.shape[1:]), images.dtype)
        batch = np.concatenate([images, padding]) if missing else images
        return model.predict(batch, batch_size=pad_to or 32, verbose=0)[: len(images)]

    return _embed_views(predict, embedding_model, tta, mirrored)


def _embed_views(predict, embedding_model, tta: str, mirrored: bool):
    """``predict(model) -> outputs`` with the embedding model alone (no TTA, no mirror) or
    with its :func:`with_views` model, then :func:`combine_views`."""
    turns, flip = tta_views(tta)
    if turns == 1 and not flip and not mirrored:
        return l2_normalize(predict(embedding_model))
    views = predict(with_views(embedding_model, turns, flip or mirrored))
    return combine_views(views, tta, mirrored)


def combine_views(
    views: np.ndarray, tta: str, mirrored: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """(n, V, d) raw embeddings of :func:`with_views` -> the TTA's (n, d) (and with
    ``mirrored`` the mirror images' own (n, d)), each an L2-normalised mean of normalised
    views."""
    turns, flip = tta_views(tta)
    views = np.asarray(views, np.float32)
    n, count, d = views.shape
    unit = l2_normalize(views.reshape(n * count, d)).reshape(n, count, d)
    upright = l2_normalize(unit[:, :turns].mean(axis=1))
    mirror = l2_normalize(unit[:, turns:].mean(axis=1)) if count > turns else None
    embeddings = l2_normalize(upright + mirror) if flip else upright
    return (embeddings, mirror) if mirrored else embeddings


def quarter_turn(images):
    """(b, S, S, c) images turned a quarter (counter-clockwise, as ``np.rot90``), in
    ``keras.ops``."""
    import keras

    return keras.ops.flip(keras.ops.transpose(images, (0, 2, 1, 3)), axis=1)


_WITH_VIEWS = weakref.WeakKeyDictionary()  # embedding model -> {(turns, mirrors): views model}


def with_views(embedding_model, turns: int = 1, mirrors: bool = True):
    """``images (b, S, S, 3) -> (b, V, d)``: the embeddings of each image's ``turns`` quarter
    turns (0, 90, ... degrees), then, with ``mirrors``, of its mirror image's (flipped left to
    right) turns: V = turns * (2 if mirrors else 1), from one pass of the model over the V * b
    images. One per model and views (kept while the model lives), so its predict function is
    traced and compiled once."""
    import keras

    cache = _WITH_VIEWS.setdefault(embedding_model, {})
    if (turns, mirrors) in cache:
        return cache[(turns, mirrors)]
    images = keras.Input(shape=embedding_model.input_shape[1:], name="images")
    sources = [images, keras.ops.flip(images, axis=2)] if mirrors else [images]
    views = []
    for source in sources:
        for _ in range(turns):
            views.append(source)
            source = quarter_turn(source)
    outputs = embedding_model(keras.ops.concatenate(views, axis=0))  # (V b, d), view by view
    shaped = keras.ops.reshape(outputs, (len(views), -1, outputs.shape[-1]))
    model = keras.Model(
        images, keras.ops.transpose(shaped, (1, 0, 2)), name=f"{embedding_model.name}_views"
    )
    cache[(turns, mirrors)] = model
    return model


def data_parallel_devices() -> int:
    """How many devices Keras' global distribution (JAX's ``DataParallel``) splits each batch
    over; 1 without one."""
    import keras

    distribution = keras.distribution.distribution()
    return 1 if distribution is None else int(distribution.device_mesh.devices.size)


def predict_batches(model, image_batches) -> np.ndarray:
    """``model.predict`` over a dataset of batches, row for row, whatever the batch sizes.

    Keras on JAX splits every batch evenly over the devices of a ``DataParallel`` distribution
    and refuses a batch it cannot split (the last one, usually); such batches are padded with
    zero images to a multiple of the devices, and the padding rows are dropped from the result.
    """
    devices = data_parallel_devices()
    if devices == 1:
        return model.predict(image_batches, verbose=0)
    sizes = []  # real rows of each batch, recorded as predict draws the batches

    def padded():
        for images in image_batches.as_numpy_iterator():
            sizes.append(len(images))
            missing = -len(images) % devices
            if missing:  # usually only the last batch: the others go as they are
                images = np.concatenate(
                    [images, np.zeros((missing, *images.shape[1:]), images.dtype)]
                )
            yield (images,)

    batches = int(image_batches.cardinality())  # negative when unknown
    outputs = model.predict(padded(), steps=batches if batches >= 0 else None, verbose=0)
    keep = np.concatenate([np.arange(n + (-n % devices)) < n for n in sizes])
    return outputs[keep]


def embed_split(
    embedding_model,
    split,
    batch_size: int,
    out_dir: str | os.PathLike,
    tta: str = "flip",
    model_name: str = "",
    mirrored_gallery: bool = False,
) -> dict[str, np.ndarray]:
    """Embed every part of a ``splits.Split`` at the model's own image size and save
    ``train.npz``, ``valid.npz`` and ``test.npz`` in ``out_dir``; returns the embeddings by part
    (validation labels are ``target_id``: ``new_individual`` for validation-only
    individuals). ``mirrored_gallery``: the gallery parts (train, valid) also get their mirror
    images' embeddings (``mirrored`` in the file; ``<part>_mirrored`` in the result), for a
    flipped gallery (``splits.Split.gallery``)."""
    from whaleutils.training import models

    image_size = models.input_image_size(embedding_model)
    out_dir = Path(out_dir)
    labels = {
        "train": split.train["individual_id"],
        "valid": split.valid["target_id"],
        "test": None,
    }
    result = {}
    for part in PARTS:
        mirrored = mirrored_gallery and part != "test"
        vectors = compute_embeddings(
            embedding_model, split.batches(part, image_size, batch_size), tta, mirrored
        )
        vectors, mirror = vectors if mirrored else (vectors, None)
        save_embeddings(
            out_dir / f"{part}.npz",
            split.frame(part)["image"],
            vectors,
            labels[part],
            model=model_name,
            tta=tta,
            overwrite=True,
            mirrored=mirror,
        )
        result[part] = vectors
        if mirrored:
            result[f"{part}_mirrored"] = mirror
    return result


def save_embeddings(
    path: str | os.PathLike,
    image_names,
    embeddings: np.ndarray,
    labels=None,
    model: str = "",
    tta: str = "none",
    overwrite: bool = False,
    mirrored: np.ndarray | None = None,
) -> Path:
    """Write an embeddings file (schema in the module docstring) after checking it."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    image_names = np.asarray(image_names, dtype=str)
    labels = (
        np.full(len(image_names), "", dtype=str)
        if labels is None
        else np.asarray(labels, dtype=str)
    )
    payload = {
        "image_names": image_names,
        "embeddings": np.asarray(embeddings, dtype=np.float32),
        "labels": labels,
        "model": np.asarray(model, dtype=str),
        "tta": np.asarray(tta, dtype=str),
    }
    if mirrored is not None:
        payload["mirrored"] = np.asarray(mirrored, dtype=np.float32)
    _check(payload, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:  # np.savez would append .npz to other suffixes
        np.savez(handle, **payload)
    return path


def load_embeddings(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read an embeddings file and check its schema; returns its arrays by name."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as archive:
        payload = {key: archive[key] for key in archive.files}
    _check(payload, path)
    return payload


def check_image_names(
    payload: dict[str, np.ndarray], path: str | os.PathLike, part: str, image_names
) -> None:
    """Raise unless an embeddings file's ``image_names`` are exactly ``image_names`` (a split's
    ``part`` images) in that order, so that its rows join the split's.

    Raises
    ------
    ValueError
        Naming the file, the first row whose image differs, both images and both counts.
    """
    names = payload["image_names"]
    expected = np.asarray(image_names, dtype=str)
    if len(names) == len(expected) and np.array_equal(names, expected):
        return
    differ = np.flatnonzero(names[: len(expected)] != expected[: len(names)])
    row = int(differ[0]) if len(differ) else min(len(names), len(expected))
    found = str(names[row]) if row < len(names) else "(end of file)"
    wanted = str(expected[row]) if row < len(expected) else "(no more images)"
    raise ValueError(
        f"{path}: rows do not align with the split's {part} images: row {row} is "
        f"{found!r}, expected {wanted!r} ({len(names)} rows, expected {len(expected)})"
    )


def _check(payload: dict, path: Path) -> None:
    missing = [key for key in SCHEMA if key not in payload]
    if missing:
        raise ValueError(f"{path}: not an embeddings file, missing array(s) {missing}")
    for key, kind in SCHEMA.items():
        if payload[key].dtype.kind != kind:
            raise ValueError(
                f"{path}: {key} has dtype {payload[key].dtype}, expected kind {kind!r}"
            )
    n = len(payload["image_names"])
    embeddings = payload["embeddings"]
    if embeddings.ndim != 2 or embeddings.shape[0] != n or payload["labels"].shape != (n,):
        raise ValueError(
            f"{path}: shapes disagree: image_names ({n},), embeddings {embeddings.shape}, "
            f"labels {payload['labels'].shape}"
        )
    if embeddings.dtype != np.float32:
        raise ValueError(f"{path}: embeddings must be float32, got {embeddings.dtype}")
    for key in ("embeddings", "mirrored"):
        if key not in payload:
            continue
        vectors = payload[key]
        if vectors.dtype != np.float32 or vectors.shape != embeddings.shape:
            raise ValueError(
                f"{path}: {key} must be float32 {embeddings.shape}, got {vectors.dtype} "
                f"{vectors.shape}"
            )
        norms = np.linalg.norm(vectors, axis=1)
        if n and not np.allclose(norms[norms > 0], 1.0, atol=1e-3):
            raise ValueError(
                f"{path}: {key} are not L2-normalised "
                f"(row norms {norms.min():.3f}-{norms.max():.3f})"
            )
