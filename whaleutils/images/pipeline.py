"""``tf.data`` input pipelines from image files or TFRecords (TPUs read only the latter).

Both sources yield the same records, ``{"image_name": str, "image_bytes": encoded image,
"target": int64 (-1 if unlabelled), "box": float32 (4,) left, top, right, bottom, or -1s}``, and
one :func:`make_dataset` turns either into batches of uint8 RGB images of
``image_size`` x ``image_size``: a quarter of float32's bytes to the device (55 MB instead of
222 MB for a TPU's global batch of 128 at 380 px); models cast and normalise inside, on the
device (``layers.ImageNormalization``).
Every photo is decoded, turned upright, cropped and (for inference) resized by
``photos.prepare``, the path ``identify`` and the crop cache take too.

TFRecord format (that of the public Happywhale TPU notebooks): features ``image_name``
(bytes), ``image`` (the encoded JPEG bytes, unchanged from the file), ``target`` (int64) and an
optional ``box`` (4 floats). Shards are named ``{prefix}-{split}-{shard:02d}-{count}.tfrec``,
so the size of a split is known without reading it (:func:`count_records`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from whaleutils.datasets.data import parse_box
from whaleutils.images import photos

AUTOTUNE = tf.data.AUTOTUNE
SHARD_PATTERN = re.compile(r"-(\d+)\.tfrec$")


@dataclass(frozen=True)
class Augmentation:
    """Training augmentations of the paper, each with its probability or strength.

    ``crop_probability`` of a random crop keeping at least ``crop_min_area`` of the image;
    ``flip_probability`` of a horizontal flip; random hue (``hue_delta``), saturation and
    contrast (factor ranges), brightness (``brightness_delta`` on a 0-1 scale); and
    ``grayscale_probability`` of a grey photo; ``box_jitter``: each side of a photo's detector
    box moves by up to this share of the box's width or height before the crop (the top
    solutions' box augmentation; applies where photos are cropped to boxes while training, not
    to a crop cache, whose crops are cut once); ``rotation_degrees``: a rotation by a uniform
    random angle in ``[-rotation_degrees, rotation_degrees]`` about the centre, the corners
    filled by reflection (180: any direction, for photos such as aerial heads that point every
    way); ``mirror_classes``: when above 0, a flipped photo is another animal, not the same
    one seen mirrored (an aerial head's callosities, a left flank's marks): its target becomes
    ``target + mirror_classes`` (a head with twice the classes learns both; the 2019 humpback
    2nd place). ``Augmentation.none()`` turns all off.
    """

    crop_probability: float = 0.5
    crop_min_area: float = 0.7
    flip_probability: float = 0.5
    hue_delta: float = 0.05
    saturation_range: tuple[float, float] = (0.8, 1.2)
    contrast_range: tuple[float, float] = (0.8, 1.2)
    brightness_delta: float = 0.1
    grayscale_probability: float = 0.1
    box_jitter: float = 0.0
    rotation_degrees: float = 0.0
    mirror_classes: int = 0

    def __post_init__(self):
        if isinstance(self.mirror_classes, bool) or not isinstance(self.mirror_classes, int):
            raise ValueError(f"mirror_classes must be a whole number, got {self.mirror_classes!r}")
        if self.mirror_classes < 0 or (self.mirror_classes and not self.flip_probability > 0):
            raise ValueError(
                f"mirror_classes={self.mirror_classes} needs flips (flip_probability > 0, got "
                f"{self.flip_probability}) and must be >= 0"
            )
        if not 0.0 <= self.box_jitter < 0.5:  # below 0.5 a jittered box can never invert
            raise ValueError(f"box_jitter must be in [0, 0.5), got box_jitter={self.box_jitter}")
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ValueError(
                "rotation_degrees must be in [0, 180], "
                f"got rotation_degrees={self.rotation_degrees}"
            )

    @classmethod
    def none(cls) -> Augmentation:
        return cls(0.0, 1.0, 0.0, 0.0, (1.0, 1.0), (1.0, 1.0), 0.0, 0.0, 0.0, 0.0)


def rotate(image: tf.Tensor, degrees: tf.Tensor) -> tf.Tensor:
    """``image`` (h, w, c float) turned counter-clockwise by ``degrees`` about its centre,
    bilinear, the corners filled by reflection; the shape is kept."""
    angle = tf.cast(degrees, tf.float32) * (np.pi / 180.0)
    height = tf.cast(tf.shape(image)[0], tf.float32)
    width = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # the projective transform maps each output pixel (x, y) to the input pixel it reads
    x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
    y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
    transform = tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])[None]
    turned = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    return turned[0]


def jitter_box(box: tf.Tensor, seed: tf.Tensor, amount: float) -> tf.Tensor:
    """``box`` (left, top, right, bottom) with each side moved by a uniform random share in
    ``[-amount, amount]`` of the box's width (left, right) or height (top, bottom); an absent
    box (-1s) is returned as it is. Stateless: the same ``seed`` (int64 pair) moves it alike.
    ``photos.crop_window`` clips the result to the photo."""
    box = tf.cast(box, tf.float32)
    size = tf.stack([box[2] - box[0], box[3] - box[1]] * 2)
    shift = tf.random.stateless_uniform([4], seed, -amount, amount) * size
    return tf.where(box[0] < 0, box, box + shift)


def _boxes_array(frame: pd.DataFrame) -> np.ndarray:
    """(n, 4) float32 boxes from a ``box`` column, -1 where absent."""
    boxes = np.full((len(frame), 4), -1.0, dtype=np.float32)
    if "box" in frame.columns:
        for row, text in enumerate(frame["box"]):
            box = parse_box(text)
            if box is not None:
                boxes[row] = box
    return boxes


def file_records(
    frame: pd.DataFrame, image_dir: str | os.PathLike, targets: Sequence[int] | None = None
) -> tf.data.Dataset:
    """Records from image files listed in ``frame["image"]`` (with an optional ``box`` column).

    ``targets`` are integer labels aligned with the rows (see ``data.LabelEncoding``); None
    gives -1 (unlabelled, e.g. test images).
    """
    image_dir = Path(image_dir)
    names = frame["image"].astype(str).tolist()
    paths = [str(image_dir / name) for name in names]
    missing = [p for p in paths[:1000] if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} listed image(s) missing, e.g. {missing[0]}")
    labels = np.full(len(names), -1, np.int64) if targets is None else np.asarray(targets, np.int64)
    if len(labels) != len(names):
        raise ValueError(f"targets has {len(labels)} entries for {len(names)} images")
    table = tf.data.Dataset.from_tensor_slices(
        {"image_name": names, "path": paths, "target": labels, "box": _boxes_array(frame)}
    )

    def read(record):
        return {
            "image_name": record["image_name"],
            "image_bytes": tf.io.read_file(record["path"]),
            "target": record["target"],
            "box": record["box"],
        }

    return table.map(read, num_parallel_calls=AUTOTUNE, deterministic=True)


def _bytes_feature(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize_example(name: bytes, image: bytes, target: int = -1, box=None) -> bytes:
    """One record of the TFRecord format (module docstring), serialized; ``box`` (4 floats) is
    written only when given."""
    feature = {
        "image_name": _bytes_feature(name),
        "image": _bytes_feature(image),
        "target": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(target)])),
    }
    if box is not None:
        feature["box"] = tf.train.Feature(float_list=tf.train.FloatList(value=box))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_tfrecords(
    frame: pd.DataFrame,
    image_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str,
    targets: Sequence[int] | None = None,
    n_shards: int = 1,
    prefix: str = "happywhale",
) -> list[Path]:
    """Write ``frame``'s images into ``n_shards`` TFRecord files; returns their paths.

    Image bytes are stored as they are in the files (no re-encoding). Rows are dealt to shards
    in order (shard ``i`` gets rows ``i, i + n_shards, ...``). Existing shards are never
    overwritten.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if n_shards < 1 or n_shards > max(1, len(frame)):
        raise ValueError(f"n_shards must be in [1, {max(1, len(frame))}], got n_shards={n_shards}")
    labels = np.full(len(frame), -1, np.int64) if targets is None else np.asarray(targets, np.int64)
    boxes = _boxes_array(frame)
    has_box = "box" in frame.columns
    names = frame["image"].astype(str).tolist()
    paths = []
    for shard in range(n_shards):
        rows = range(shard, len(frame), n_shards)
        path = out_dir / f"{prefix}-{split}-{shard:02d}-{len(rows)}.tfrec"
        if path.exists():
            raise FileExistsError(f"{path} exists; write TFRecords to a new folder")
        with tf.io.TFRecordWriter(str(path)) as writer:
            for row in rows:
                writer.write(
                    serialize_example(
                        names[row].encode(),
                        (Path(image_dir) / names[row]).read_bytes(),
                        labels[row],
                        boxes[row] if has_box else None,
                    )
                )
        paths.append(path)
    return paths


def count_records(paths: Sequence[str | os.PathLike]) -> int:
    """Records in TFRecord shards, read from their names (``...-{count}.tfrec``)."""
    total = 0
    for path in paths:
        match = SHARD_PATTERN.search(str(path))
        if match is None:
            raise ValueError(f"{path}: shard name does not end in -COUNT.tfrec")
        total += int(match.group(1))
    return total


TFRECORD_FEATURES = {
    "image_name": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "target": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
    "box": tf.io.FixedLenFeature([4], tf.float32, default_value=[-1.0, -1.0, -1.0, -1.0]),
}


def parse_tfrecord(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized example -> a record (``image`` renamed ``image_bytes``)."""
    example = tf.io.parse_single_example(serialized, TFRECORD_FEATURES)
    return {
        "image_name": example["image_name"],
        "image_bytes": example["image"],
        "target": example["target"],
        "box": example["box"],
    }


def tfrecord_records(
    paths: Sequence[str | os.PathLike], deterministic: bool = True
) -> tf.data.Dataset:
    """Records from TFRecord shards, read in parallel (in file order when ``deterministic``)."""
    files = [str(p) for p in paths]
    if not files:
        raise ValueError("no TFRecord files given")
    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options).map(parse_tfrecord, num_parallel_calls=AUTOTUNE)


def prepare_image(
    image_bytes: tf.Tensor,
    box: tf.Tensor,
    image_name: tf.Tensor,
    crop_to_box: bool,
    box_margin: float,
    image_size: int | None,
    min_side: int | None = None,
) -> tf.Tensor:
    """``photos.prepare`` inside a ``tf.data`` graph: uint8 RGB (image_size, image_size, 3), or
    the upright crop (h, w, 3) when ``image_size`` is None (decoded at a reduced JPEG scale
    only where it keeps ``min_side`` pixels a side); cropped to ``box`` only if
    ``crop_to_box``. An unreadable photo stops the pipeline with an error naming it."""

    def prepare(encoded, box_values, name):
        return photos.prepare(
            bytes(encoded),
            box_values if crop_to_box else None,
            image_size,
            box_margin,
            name=name.decode(errors="replace"),
            min_side=min_side,
        )

    image = tf.numpy_function(prepare, [image_bytes, box, image_name], tf.uint8, stateful=False)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def training_min_side(image_size: int, augmentation: Augmentation) -> int:
    """The fewest pixels a side a training crop needs so that the random crop (down to
    ``crop_min_area`` of it) is never enlarged: ``image_size / sqrt(crop_min_area)``."""
    area = augmentation.crop_min_area if augmentation.crop_probability > 0 else 1.0
    return int(np.ceil(image_size / np.sqrt(area)))


def flipped(seed: tf.Tensor, config: Augmentation) -> tf.Tensor:
    """Whether :func:`augment` flips the photo of this ``seed`` (a bool scalar)."""
    flip_seed = tf.random.experimental.stateless_split(seed, num=9)[2]
    return tf.random.stateless_uniform([], flip_seed) < config.flip_probability


def augment(image: tf.Tensor, seed: tf.Tensor, config: Augmentation, image_size: int) -> tf.Tensor:
    """Random crop (then resize), flip, rotation, colour jitter and grayscale; uint8 in, float
    0-255 out.

    Stateless: the same ``seed`` (int64 pair) gives the same augmentation.
    """
    seeds = tf.random.experimental.stateless_split(seed, num=9)

    def chance(index, probability):
        return tf.random.stateless_uniform([], seeds[index]) < probability

    flip = flipped(seed, config)

    if config.crop_probability > 0:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image),
            bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
            seed=seeds[1],
            min_object_covered=config.crop_min_area,
            aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(config.crop_min_area, 1.0),
            use_image_if_no_bounding_boxes=True,
        )
        image = tf.cond(
            chance(0, config.crop_probability), lambda: tf.slice(image, begin, size), lambda: image
        )
    # antialiased like photos.resize, the resize of inference
    image = tf.image.resize(image, [image_size, image_size], antialias=True) / 255.0
    if config.flip_probability > 0:
        image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    if config.rotation_degrees > 0:
        degrees = tf.random.stateless_uniform(
            [], seeds[8], -config.rotation_degrees, config.rotation_degrees
        )
        image = rotate(image, degrees)
    if config.hue_delta > 0:
        image = tf.image.stateless_random_hue(image, config.hue_delta, seeds[3])
    if config.saturation_range != (1.0, 1.0):
        image = tf.image.stateless_random_saturation(image, *config.saturation_range, seed=seeds[4])
    if config.contrast_range != (1.0, 1.0):
        image = tf.image.stateless_random_contrast(image, *config.contrast_range, seed=seeds[5])
    if config.brightness_delta > 0:
        image = tf.image.stateless_random_brightness(image, config.brightness_delta, seeds[6])
    if config.grayscale_probability > 0:
        grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))
        image = tf.cond(chance(7, config.grayscale_probability), lambda: grey, lambda: image)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0


def make_dataset(
    records: tf.data.Dataset,
    image_size: int,
    batch_size: int,
    training: bool = False,
    augmentation: Augmentation | None = None,
    crop_to_box: bool = True,
    box_margin: float = photos.BOX_MARGIN,
    label_as_input: bool = True,
    shuffle_buffer: int = 2048,
    repeat: bool = False,
    seed: int = 0,
    deterministic: bool = False,
) -> tf.data.Dataset:
    """Batches for training or inference from :func:`file_records` or :func:`tfrecord_records`.

    Training (``training=True``): shuffled and augmented; yields ``(inputs, target)`` where
    ``inputs`` is ``{"image": (b, S, S, 3), "label": (b,)}`` when ``label_as_input`` (ArcFace
    heads need the label) else the image batch. Inference: in record order, no augmentation,
    yields image batches (b, S, S, 3) uint8 (augmented images rounded to whole levels).

    ``deterministic=True`` fixes the order of parallel work and the shuffle and augmentation
    seeds, so two passes give identical batches (for tests); otherwise tf.data may reorder
    for speed.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got image_size={image_size}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    records = records.with_options(options)
    augmentation = augmentation or Augmentation()

    jitter = training and crop_to_box and augmentation.box_jitter > 0
    training_side = training_min_side(image_size, augmentation)

    def load(record, element_seed):
        box = record["box"]
        if jitter:  # a seed of its own, so the other augmentations draw as without jitter
            box_seed = tf.random.experimental.stateless_fold_in(element_seed, 1)
            box = jitter_box(box, box_seed, augmentation.box_jitter)
        name = record["image_name"]
        if training:  # the whole crop: the random crop comes first, then the resize
            image = prepare_image(
                record["image_bytes"], box, name, crop_to_box, box_margin, None, training_side
            )
            image = augment(image, element_seed, augmentation, image_size)
        else:
            image = prepare_image(
                record["image_bytes"], box, name, crop_to_box, box_margin, image_size
            )
        if training:  # augmentation computes in float; rounded back, as the photos were
            image = tf.cast(tf.round(image), tf.uint8)
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        if not training:
            return image
        target = record["target"]
        if augmentation.mirror_classes:  # a mirrored photo is another identity
            mirrored = tf.cast(flipped(element_seed, augmentation), target.dtype)
            target = target + mirrored * augmentation.mirror_classes
        if label_as_input:
            return {"image": image, "label": target}, target
        return image, target

    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        seeds = tf.data.Dataset.random(seed=seed).batch(2)  # an int64 pair per element
        dataset = tf.data.Dataset.zip((records, seeds))
        dataset = dataset.map(load, num_parallel_calls=AUTOTUNE)
    else:
        dataset = records.map(
            lambda record: load(record, tf.zeros([2], tf.int64)), num_parallel_calls=AUTOTUNE
        )
    return dataset.batch(batch_size).prefetch(AUTOTUNE)
