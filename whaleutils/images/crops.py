"""A crop cache: every photo cropped to its box and resized once, stored as TFRecord shards.

Decoding a full-size photo is what limits the input pipeline (Happywhale photos are 3039 px
wide at the median; ``benchmarks/crop_cache_speed.py`` reads 3000 x 2000 JPEGs, cropped, at
about 75 per second on 2 cores). The cache prepares each photo once with ``photos.prepare``,
as the pipeline and ``identify`` do (upright, cropped to its box grown by a margin, resized
with antialiasing to ``size`` x ``size``), and stores it as a JPEG in TFRecord shards of the
public Happywhale TPU notebooks' format (``image_name``, ``image``; ``target`` -1: labels are
joined by name when the cache is read, so one cache serves every fold)::

    OUT/crops.json                      size, margin, where the boxes came from, counts
    OUT/crops-train-00-2048.tfrec ...   the training photos, in train.csv's order
    OUT/crops-test-00-2048.tfrec ...    the test photos, in the test list's order

``Split`` reads it when given one (``splits.load_split(..., crop_cache=OUT)``).
"""

from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.datasets import data
from whaleutils.images import photos

CACHE_INDEX = "crops.json"
PREFIX = "crops"


def part_frames(data_dir: Path, boxes: dict | None) -> dict[str, pd.DataFrame]:
    """The train and test photos (image, box) of a data set, with the ``boxes`` given (image ->
    box) in place of the set's own; a photo without a box is used whole."""
    train = data.read_train(data_dir)[["image", "box"]]
    test = pd.DataFrame({"image": data.read_test_images(data_dir)})
    own_test = data.read_test_boxes(data_dir)
    test["box"] = (
        test["image"].map(dict(zip(own_test["image"], own_test["box"], strict=True))).fillna("")
        if own_test is not None
        else ""
    )
    frames = {"train": train, "test": test}
    if boxes is not None:
        for frame in frames.values():
            frame["box"] = data.boxes_column(frame["image"], boxes)
    return frames


def write_crop_cache(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int,
    boxes: dict | None = None,
    margin: float = photos.BOX_MARGIN,
    images_per_shard: int = 2048,
    quality: int = 95,
) -> dict:
    """Write the crop cache of ``data_dir`` into ``out_dir`` (new or empty); returns its index.

    Photos are cropped to their boxes only if the test photos have boxes (from ``boxes`` or the
    set's ``test_boxes.csv``), the rule of ``Split.crop_to_box``: gallery and queries framed
    alike.
    """
    import tensorflow as tf
    from PIL import Image

    from whaleutils.images import pipeline

    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got size={size}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; write the crop cache to a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = part_frames(data_dir, boxes)
    crop_to_box = bool((frames["test"]["box"] != "").any())
    index = {
        "size": size,
        "margin": margin,
        "crop_to_box": crop_to_box,
        "boxes": "given" if boxes is not None else "the data set's",
        "parts": {},
    }

    def crop(job: tuple[Path, str]) -> bytes:
        path, box = job
        image = photos.prepare(path, data.parse_box(box) if crop_to_box else None, size, margin)
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, "JPEG", quality=quality)
        return encoded.getvalue()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow frees the GIL
        for part, frame in frames.items():
            folder = data.Layout(data_dir).images(part)
            names = frame["image"].astype(str).tolist()
            missing = [name for name in names if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} listed image(s) missing, e.g. {folder / missing[0]}"
                )
            shards = []
            for shard, start in enumerate(range(0, len(names), images_per_shard)):
                chunk = names[start : start + images_per_shard]
                jobs = [(folder / name, box) for name, box in zip(
                    chunk, frame["box"].iloc[start : start + images_per_shard], strict=True
                )]  # fmt: skip
                path = out_dir / f"{PREFIX}-{part}-{shard:02d}-{len(chunk)}.tfrec"
                with tf.io.TFRecordWriter(str(path)) as writer:
                    for name, image in zip(chunk, pool.map(crop, jobs), strict=True):
                        writer.write(pipeline.serialize_example(name.encode(), image))
                shards.append(path.name)
            index["parts"][part] = {"images": len(names), "shards": shards, "names": names}
    (out_dir / CACHE_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return index


def read_index(cache_dir: str | os.PathLike) -> dict:
    """The cache's ``crops.json``, its shards checked to exist."""
    cache_dir = Path(cache_dir)
    path = cache_dir / CACHE_INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a crop cache (python -m whaleutils crops)")
    index = json.loads(path.read_text())
    for part, entry in index["parts"].items():
        missing = [name for name in entry["shards"] if not (cache_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{cache_dir}: {part} shard(s) missing: {missing}")
    return index


def cached_records(cache_dir: str | os.PathLike, part: str, names, targets=None):
    """Records (``pipeline``'s format, no box) of the photos ``names`` from the cache's
    ``part`` ("train" or "test"), with ``targets`` (aligned with ``names``) joined by name; -1
    without. The records come in cache order, so ``names`` must be in it too (a subset of the
    data set's photos in file order, as ``Split``'s parts are).

    Raises
    ------
    KeyError
        Naming photos the cache does not hold.
    ValueError
        If ``names`` are not in the cache's order.
    """
    import tensorflow as tf

    from whaleutils.images import pipeline

    cache_dir = Path(cache_dir)
    index = read_index(cache_dir)
    if part not in index["parts"]:
        raise KeyError(f"{cache_dir} has no {part} part")
    names = [str(name) for name in names]
    position = {name: i for i, name in enumerate(index["parts"][part]["names"])}
    missing = [name for name in names if name not in position]
    if missing:
        raise KeyError(
            f"{cache_dir}: {len(missing)} {part} photo(s) not cached, e.g. {missing[:3]}"
        )
    if np.any(np.diff([position[name] for name in names]) <= 0):
        raise ValueError(f"the {part} photos asked of {cache_dir} are not in the cache's order")
    targets = np.full(len(names), -1, np.int64) if targets is None else np.asarray(targets)
    shards = [cache_dir / name for name in index["parts"][part]["shards"]]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(names, tf.string), tf.constant(targets, tf.int64)
        ),
        default_value=-2,  # not wanted
    )
    records = pipeline.tfrecord_records(shards).map(
        lambda record: {**record, "target": table.lookup(record["image_name"])}
    )
    return records.filter(lambda record: record["target"] > -2)
