"""Input pipeline speed: full-size JPEGs cropped and resized on the fly, against the crop cache.

Four ways to the same batches, side by side in one run: the pipeline's inference path
(``photos.prepare``: Pillow, the JPEG decoded at the DCT scale its crop needs), its training
path (the crop decoded at the scale its random crop needs, ``pipeline.training_min_side``,
then resized in the graph; augmentation off),
TensorFlow's ``decode_and_crop_jpeg`` (the pipeline before the one photo path, as a
reference), and the crop cache; then flip TTA over the crop cache, embedded by a model that only
pools (so the input and the flip are what is timed): the mirror images made inside the model in
the same pass (``embed.compute_embeddings``, ``embed.with_views``) against the earlier
way, the cache read a second time for the mirror images; and training with a box jitter of
0.05 (the kaggle profile's) from the photos against Kaggle's cache (notebook 00: crops of
``training_min_side`` px with room for the jitter, read as photos are read).

Makes ``--photos`` test photos of 3000 x 2000 pixels (Happywhale's median width is 3039), each
with a box of the median Detic box's proportions on the real test set (78% of the width, 46% of
the height: ``../shared/data/happywhale`` test.csv against test_image_sizes.csv), writes their
crop cache at ``--size`` px once (``crops.write_crop_cache``, timed on its own), then reads both
ways with the training notebooks' pipeline (``pipeline.make_dataset``,
inference mode, batches of 16) and reports images/s of each, best of ``--repeats``, measured
side by side in one run (the cache read ten times over in each measurement: one pass is too
short to time).

Usage: python benchmarks/crop_cache_speed.py [--photos 48] [--size 380] [--repeats 3] [--cores N]
(``--cores 1``: the per-core rates a budget needs, measured on one core alone.)
Prints the ratios to the TensorFlow reference and the cache's speed-up last.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.datasets import data
from whaleutils.images import crops, pipeline


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    """A data set of ``n`` 3000 x 2000 JPEGs (smooth colour fields with noise, as photos
    compress) in train and test, each with a 2340 x 920 box at a random place."""
    rng = np.random.default_rng(seed)
    for part in ("train_images", "test_images"):
        (folder / part).mkdir(parents=True)
    rows, test_rows = [], []
    for i in range(n):
        small = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
        photo = Image.fromarray(small).resize((3000, 2000), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 12, (2000, 3000, 3))
        pixels = np.clip(np.asarray(photo, float) + noise, 0, 255).astype(np.uint8)
        name = f"photo{i:03d}.jpg"
        part = "test_images" if i % 4 == 3 else "train_images"
        Image.fromarray(pixels).save(folder / part / name, quality=90)
        left, top = int(rng.integers(0, 3000 - 2340)), int(rng.integers(0, 2000 - 920))
        box = data.format_box((left, top, left + 2340, top + 920))
        if part == "test_images":
            test_rows.append((name, box))
        else:
            rows.append((name, "species", f"id{i % 5}", box))
    pd.DataFrame(rows, columns=["image", "species", "individual_id", "box"]).to_csv(
        folder / "train.csv", index=False
    )
    pd.DataFrame(test_rows, columns=["image", "box"]).to_csv(folder / "test_boxes.csv", index=False)
    pd.DataFrame({"image": [name for name, _ in test_rows], "predictions": ""}).to_csv(
        folder / "sample_submission.csv", index=False
    )


def tensorflow_reference(frame: pd.DataFrame, folder: Path, size: int):
    """The earlier pipeline: ``tf.io.decode_and_crop_jpeg`` of the box grown by 10%, resized
    with antialiasing, batches of 16 (no EXIF orientation, no size cap)."""
    import tensorflow as tf

    boxes = np.array([data.parse_box(text) for text in frame["box"]], np.float32)
    paths = [str(folder / name) for name in frame["image"]]

    def load(path, box):
        encoded = tf.io.read_file(path)
        shape = tf.cast(tf.io.extract_jpeg_shape(encoded), tf.float32)
        grow = 0.1 * tf.stack([box[2] - box[0], box[3] - box[1]])
        left = tf.clip_by_value(tf.floor(box[0] - grow[0]), 0.0, shape[1] - 1)
        top = tf.clip_by_value(tf.floor(box[1] - grow[1]), 0.0, shape[0] - 1)
        right = tf.clip_by_value(tf.math.ceil(box[2] + grow[0]), left + 1, shape[1])
        bottom = tf.clip_by_value(tf.math.ceil(box[3] + grow[1]), top + 1, shape[0])
        window = tf.cast(tf.stack([top, left, bottom - top, right - left]), tf.int32)
        image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
        return tf.image.resize(image, [size, size], antialias=True)

    records = tf.data.Dataset.from_tensor_slices((paths, boxes))
    return records.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(16).prefetch(2)


def images_per_second(dataset) -> float:
    started = time.perf_counter()
    batches = dataset.as_numpy_iterator()  # training batches are (images, targets)
    count = sum(len(batch[0] if isinstance(batch, tuple) else batch) for batch in batches)
    return count / (time.perf_counter() - started)


def pooling_model(size: int):
    """An "embedding model" that only averages each image's pixels: flip TTA's input cost."""
    import keras

    image = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(keras.ops.cast(image, "float32"))
    return keras.Model(image, pooled)


def flip_tta_rate(model, dataset, in_model: bool) -> float:
    """Photos embedded with flip TTA per second: the mirror images made in the model, or (the
    earlier way) the batches read a second time and flipped on the host."""
    from whaleutils.retrieval import embed

    started = time.perf_counter()
    if in_model:
        count = len(embed.compute_embeddings(model, dataset, tta="flip"))
    else:
        plain = embed.compute_embeddings(model, dataset)
        embed.compute_embeddings(model, dataset.map(lambda images: images[:, :, ::-1]))
        count = len(plain)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--size", type=int, default=380)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cores", type=int, default=None, help="run on this many CPU cores only (per-core rates)"
    )
    args = parser.parse_args()
    if args.cores:  # before TensorFlow starts its thread pools
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        data_dir, cache_dir = Path(folder) / "photos", Path(folder) / "cache"
        make_photos(data_dir, args.photos)
        started = time.perf_counter()
        crops.write_crop_cache(data_dir, cache_dir, args.size)
        writing = time.perf_counter() - started
        # Kaggle's cache (notebook 00): crops of training_min_side px with room for a jitter
        kaggle_dir, jitter = Path(folder) / "kaggle_cache", 0.05
        crop_side = pipeline.training_min_side(args.size, pipeline.Augmentation())
        started = time.perf_counter()
        crops.write_crop_cache(data_dir, kaggle_dir, crop_side, box_jitter=jitter)
        kaggle_writing = time.perf_counter() - started
        only_jitter = pipeline.Augmentation(
            **{**vars(pipeline.Augmentation.none()), "box_jitter": jitter}
        )
        train = data.read_train(data_dir)
        folder = data_dir / "train_images"
        labels = [0] * len(train)

        def training(records, augmentation):  # one pass, augmentation as given
            return pipeline.make_dataset(
                records, args.size, 16, training=True, augmentation=augmentation, repeat=False,
                label_as_input=False,
            )  # fmt: skip

        ways = {
            "one photo path, inference (DCT-reduced decode)": pipeline.make_dataset(
                pipeline.file_records(train, folder), args.size, 16
            ),
            "one photo path, training (augmentation off)": training(
                pipeline.file_records(train, folder, labels), pipeline.Augmentation.none()
            ),
            "TensorFlow decode_and_crop_jpeg (the earlier pipeline)": tensorflow_reference(
                train, folder, args.size
            ),
            "the crop cache (read ten times)": pipeline.make_dataset(
                crops.cached_records(cache_dir, "train", train["image"]), args.size, 16
            ).repeat(10),  # ten passes: a single one lasts too little to time
            "one photo path, training with box jitter 0.05": training(
                pipeline.file_records(train, folder, labels), only_jitter
            ),
            f"Kaggle's cache ({crop_side} px + room), inference": pipeline.make_dataset(
                crops.cached_records(kaggle_dir, "train", train["image"]), args.size, 16
            ).repeat(10),  # ten passes
            f"Kaggle's cache ({crop_side} px + room), training with box jitter": training(
                crops.cached_records(kaggle_dir, "train", train["image"], labels), only_jitter
            ).repeat(10),  # ten passes
        }
        cache = ways["the crop cache (read ten times)"]
        model = pooling_model(args.size)
        flips = {
            "the crop cache + flip TTA in the model (one read)": True,
            "the crop cache + flip TTA by a second read (earlier)": False,
        }
        best = dict.fromkeys([*ways, *flips], 0.0)
        for _ in range(args.repeats):
            for way, dataset in ways.items():
                best[way] = max(best[way], images_per_second(dataset))
            for way, in_model in flips.items():
                best[way] = max(best[way], flip_tta_rate(model, cache, in_model))
    print(
        f"{len(train)} training photos of 3000 x 2000 px, crops of {args.size} px, batches of 16, "
        f"best of {args.repeats}"
    )
    print(f"on {cores} CPU core(s)")
    for way, rate in best.items():
        print(f"{way:58s} {rate:8.1f} images/s, {rate / cores:7.1f} per core")
    print(f"writing the cache (train and test, once): {writing:.1f} s")
    reference = best["TensorFlow decode_and_crop_jpeg (the earlier pipeline)"]
    inference, training = list(best.values())[:2]
    print(f"inference / TensorFlow reference {inference / reference:.2f}x")
    print(f"training / TensorFlow reference {training / reference:.2f}x")
    cache = best["the crop cache (read ten times)"]
    print(f"speed-up of the cache over inference {cache / inference:.1f}x")
    one_read, two_reads = (best[way] for way in flips)
    print(f"flip TTA in the model / by a second read {one_read / two_reads:.2f}x")
    photo_jitter, cache_jitter = list(best.values())[4], list(best.values())[6]  # box jitter
    print(f"writing Kaggle's cache ({crop_side} px, room for {jitter}): {kaggle_writing:.1f} s")
    print(f"training with box jitter, Kaggle's cache / photos {cache_jitter / photo_jitter:.1f}x")


if __name__ == "__main__":
    main()
