"""A crop cache: every photo cropped to its box and resized once, stored as TFRecord shards.

Decoding a full-size photo is what limits the input pipeline (Happywhale photos are 3039 px
wide at the median; ``benchmarks/crop_cache_speed.py`` reads 3000 x 2000 JPEGs at about 28 a
second per core, the cache at over 600). The cache prepares each photo once
(``photos.prepare_cache_entry``, the path of ``photos.prepare``: upright, decoded with Pillow,
antialiased): rescaled so that its box grown by the margin, the model's crop, is ``size`` x
``size``, with room around it for a training box jitter of up to ``box_jitter``
(``photos.headroom_margin``), and stores it as a JPEG in TFRecord shards of the public
Happywhale TPU notebooks' format (``image_name``, ``image``, ``box``: the photo's box in the
cached image's pixels, -1s for a photo used whole; ``target`` -1: labels are joined by name
when the cache is read, so one cache serves every fold)::

    OUT/crops.json                      size, margin, box_jitter, the boxes' digest, counts
    OUT/crops-train-00-2048.tfrec ...   the training photos, in train.csv's order
    OUT/crops-test-00-2048.tfrec ...    the test photos, in the test list's order

The pipeline reads a cached image as it reads a photo: cropped to its box grown by the margin
(after a jitter of the box, while training), so a cache changes where pixels are decoded from,
not which crops a model sees. ``Split`` reads it when given one
(``splits.load_split(..., crop_cache=OUT)``). The folder is written under a temporary name and
renamed when complete, so a killed writer leaves no cache that looks whole. A cache written
before boxes were stored (no ``format`` in ``crops.json``) holds the crops themselves; its
records have no box, and are read whole, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.contracts import environment
from whaleutils.datasets import data
from whaleutils.images import photos

CACHE_INDEX = "crops.json"
PREFIX = "crops"
FORMAT = 2  # 2: records carry each photo's box in the cached image's pixels
NOTEBOOK_FOLDER = "crops"  # the cache inside the output folder of notebook 00_crop_cache
PARTIAL = ".partial"  # a cache folder being written is OUT.partial-PID, its writer's id


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


def boxes_digest(frames: dict[str, pd.DataFrame]) -> str:
    """SHA-256 of the photos and boxes of :func:`part_frames` (part, image, box per line): two
    framings of a data set are the same exactly when their digests are."""
    digest = hashlib.sha256()
    for part in sorted(frames):
        for image, box in zip(frames[part]["image"], frames[part]["box"], strict=True):
            digest.update(f"{part}\t{image}\t{box}\n".encode())
    return digest.hexdigest()


def write_crop_cache(
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    size: int,
    boxes: dict | None = None,
    margin: float = photos.BOX_MARGIN,
    box_jitter: float = 0.0,
    images_per_shard: int = 2048,
    quality: int = 95,
) -> dict:
    """Write the crop cache of ``data_dir`` into ``out_dir`` (new or empty); returns its index.

    Photos are cropped to their boxes only if the test photos have boxes (from ``boxes`` or the
    set's ``test_boxes.csv``), the rule of ``Split.crop_to_box``: gallery and queries framed
    alike. ``size``: the side of the model's crop in the cache (a model reading it at another
    size resizes; a training crop that should never be enlarged needs
    ``pipeline.training_min_side``). ``box_jitter``: the largest training box jitter the cache
    has room for (``pipeline.Augmentation.box_jitter``).
    The cache is written into ``out_dir`` + ``.partial-PID`` (this process's id; left-overs of
    writers no longer running are removed) and renamed to ``out_dir`` when complete; if another
    writer completed ``out_dir`` first, its cache stays and this raises FileExistsError.
    """
    import tensorflow as tf

    from whaleutils.images import pipeline

    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got size={size}")
    if not 0.0 <= box_jitter < 0.5:
        raise ValueError(f"box_jitter must be in [0, 0.5), got box_jitter={box_jitter}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got margin={margin}")
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if out_dir.resolve() == data_dir.resolve() or data_dir.resolve() in out_dir.resolve().parents:
        raise ValueError(
            f"--out {out_dir} is inside the data set {data_dir}: write the cache elsewhere"
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} is not empty; write the crop cache to a new folder")
    frames = part_frames(data_dir, boxes)
    crop_to_box = bool((frames["test"]["box"] != "").any())
    index = {
        "format": FORMAT,
        "size": size,
        "margin": margin,
        "box_jitter": box_jitter,
        "crop_to_box": crop_to_box,
        "boxes": "given" if boxes is not None else "the data set's",
        "boxes_sha256": boxes_digest(frames),
        "parts": {},
    }
    for part, frame in frames.items():
        folder = data.Layout(data_dir).images(part)
        missing = [name for name in frame["image"].astype(str) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} listed image(s) missing, e.g. {folder / missing[0]}"
            )
    _remove_stale_partials(out_dir)
    partial = out_dir.with_name(f"{out_dir.name}{PARTIAL}-{os.getpid()}")  # this writer's own
    partial.mkdir(parents=True)

    def crop(job: tuple[Path, str]) -> tuple[bytes, tuple | None]:
        path, box = job
        try:
            image, cache_box = photos.prepare_cache_entry(
                path, data.parse_box(box) if crop_to_box else None, size, margin, box_jitter
            )
        except (photos.UnreadablePhoto, data.PhotoSizeError):  # these name the photo
            raise
        except ValueError as error:  # e.g. a box outside the photo: name both
            raise ValueError(f"{path} (box {box!r}): {error}") from error
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, "JPEG", quality=quality)
        return encoded.getvalue(), cache_box

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # Pillow frees the GIL
        for part, frame in frames.items():
            folder = data.Layout(data_dir).images(part)
            names = frame["image"].astype(str).tolist()
            shards = []
            for shard, start in enumerate(range(0, len(names), images_per_shard)):
                chunk = names[start : start + images_per_shard]
                jobs = [(folder / name, box) for name, box in zip(
                    chunk, frame["box"].iloc[start : start + images_per_shard], strict=True
                )]  # fmt: skip
                path = partial / f"{PREFIX}-{part}-{shard:02d}-{len(chunk)}.tfrec"
                with tf.io.TFRecordWriter(str(path)) as writer:
                    for name, (image, cache_box) in zip(chunk, pool.map(crop, jobs), strict=True):
                        writer.write(
                            pipeline.serialize_example(name.encode(), image, box=cache_box)
                        )
                shards.append(path.name)
            index["parts"][part] = {"images": len(names), "shards": shards, "names": names}
    (partial / CACHE_INDEX).write_text(json.dumps(index, indent=1) + "\n")
    try:
        if out_dir.exists():
            out_dir.rmdir()  # empty, unless another writer has finished meanwhile
        partial.rename(out_dir)
    except OSError as error:  # another writer's cache is there now: it stays, this one goes
        shutil.rmtree(partial)
        raise FileExistsError(
            f"{out_dir} was written by another process while this one wrote; kept that one"
        ) from error
    return index


def _remove_stale_partials(out_dir: Path) -> None:
    """Remove the half-written copies of ``out_dir`` (``OUT.partial-PID``, exactly: a name
    this function's writer makes, never a pattern) that no running writer owns: of a process
    that has ended (killed), or of this one (an earlier attempt). A copy being written by
    another running process is left to it, and so is anything else of a similar name
    (``OUT.partial-notes``), or a copy holding files a writer does not make."""
    if not out_dir.parent.is_dir():
        return
    ours = re.compile(re.escape(out_dir.name + PARTIAL) + r"-([0-9]+)")
    for partial in out_dir.parent.iterdir():
        match = ours.fullmatch(partial.name)
        if match is None or partial.is_symlink() or not partial.is_dir():
            continue
        if any(not _written_by_a_cache(entry) for entry in partial.iterdir()):
            continue
        owner = match.group(1)
        if int(owner) != os.getpid():
            try:
                os.kill(int(owner), 0)
                continue  # still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue  # running, as another user
        shutil.rmtree(partial, ignore_errors=True)


def _written_by_a_cache(entry: Path) -> bool:
    """Whether ``entry`` is a file a crop cache writer makes (a shard or the index)."""
    return (
        entry.is_file()
        and not entry.is_symlink()
        and (
            entry.name == CACHE_INDEX
            or (entry.name.startswith(f"{PREFIX}-") and entry.suffix == ".tfrec")
        )
    )


def find_crop_cache(crop_cache: str | os.PathLike) -> Path:
    """The crop cache ``crop_cache`` names: a cache folder; the output folder of notebook
    ``00_crop_cache`` (its ``crops`` subfolder); or a bare folder name found under Kaggle's
    input mounts holding either (``environment.find_folder``), e.g. ``00_crop_cache`` inside
    the attached output of the kernel that ran it.

    Raises
    ------
    FileNotFoundError
        Naming the value and where it was looked for.
    """

    path = Path(crop_cache)
    for candidate in (path, path / NOTEBOOK_FOLDER):
        if (candidate / CACHE_INDEX).is_file():
            return candidate
    if len(path.parts) == 1:
        for inside in (".", NOTEBOOK_FOLDER):
            found = environment.find_folder(path.name, f"{inside}/{CACHE_INDEX}")
            if found is not None:
                return found / inside
    raise FileNotFoundError(
        f"crop_cache {str(crop_cache)!r}: no {CACHE_INDEX} in it or in its "
        f"{NOTEBOOK_FOLDER}/ folder"
        + (
            f", and no folder of that name holding one under {environment.KAGGLE_INPUT}"
            if len(path.parts) == 1
            else ""
        )
        + " (python -m whaleutils crops, or notebook 00_crop_cache, writes one)"
    )


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


def sample_entries(cache_dir: str | os.PathLike, count: int, seed: int = 0) -> list[dict]:
    """Up to ``count`` training photos of the cache, drawn at random (by ``seed``) from one of
    its training shards, so that only that shard is read: each ``{"image_name", "image": uint8
    (h, w, 3), "box": (4,) in its pixels or None}``, in the shard's order."""
    import tensorflow as tf

    from whaleutils.images import pipeline

    cache_dir = Path(cache_dir)
    shards = read_index(cache_dir)["parts"]["train"]["shards"]
    rng = np.random.default_rng(seed)
    shard = cache_dir / shards[int(rng.integers(len(shards)))]
    records = list(pipeline.tfrecord_records([shard]).as_numpy_iterator())
    chosen = np.sort(rng.permutation(len(records))[:count])
    return [
        {
            "image_name": records[i]["image_name"].decode(),
            "image": tf.io.decode_jpeg(records[i]["image_bytes"], channels=3).numpy(),
            "box": (
                tuple(float(v) for v in records[i]["box"])
                if photos.has_box(records[i]["box"])
                else None
            ),
        }
        for i in chosen
    ]


def compare_with_photos(
    cache_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    entries: list[dict],
    boxes: dict | None = None,
) -> pd.DataFrame:
    """How far the cache's model crops are from the photos' (``photos.prepare`` at the
    cache's size, margin and boxes), for the cached training photos ``entries``
    (:func:`sample_entries`): ``image``, ``mean_abs_difference`` (0-255 levels; JPEG and a
    sub-pixel shift, a few levels) and ``cached_size`` (the cached image's w x h, room
    included)."""
    index = read_index(cache_dir)
    size, margin = int(index["size"]), float(index["margin"])
    frame = part_frames(Path(data_dir), boxes)["train"].set_index("image")["box"]
    folder = data.Layout(Path(data_dir)).images("train")
    rows = []
    for entry in entries:
        image = entry["image"]
        if entry["box"] is not None:
            top, left, bottom, right = photos.crop_window(entry["box"], *image.shape[:2], margin)
            image = image[top:bottom, left:right]
        cached = photos.resize(np.ascontiguousarray(image), size).astype(int)
        box = data.parse_box(frame[entry["image_name"]]) if index["crop_to_box"] else None
        photo = photos.prepare(folder / entry["image_name"], box, size, margin).astype(int)
        rows.append({
            "image": entry["image_name"],
            "mean_abs_difference": float(np.abs(cached - photo).mean()),
            "cached_size": f"{entry['image'].shape[1]} x {entry['image'].shape[0]}",
        })  # fmt: skip
    return pd.DataFrame(rows)


def plot_examples(cache_dir: str | os.PathLike, entries: list[dict]):
    """A row of the cached images ``entries`` (:func:`sample_entries`), each with its box
    (dotted), the model's crop (the box grown by the margin, solid) and the widest crop a box
    jitter can reach (dashed): a figure."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    index = read_index(cache_dir)
    margin = float(index["margin"])
    jitter = float(index.get("box_jitter", 0.0))
    reach = photos.headroom_margin(margin, jitter)
    figure, axes = plt.subplots(1, max(1, len(entries)), figsize=(2.6 * max(1, len(entries)), 2.9))
    for axis, entry in zip(np.atleast_1d(axes), entries, strict=False):
        image = entry["image"]
        axis.imshow(image)
        axis.set_title(
            f"{entry['image_name'][:10]}\n{image.shape[1]} x {image.shape[0]}", fontsize=8
        )
        axis.axis("off")
        if entry["box"] is None:
            continue
        for grow, style, width in ((0.0, ":", 1.0), (margin, "-", 1.5), (reach, "--", 1.0)):
            top, left, bottom, right = photos.crop_window(entry["box"], *image.shape[:2], grow)
            outline = Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False)
            outline.set(linestyle=style, linewidth=width, color="yellow")
            axis.add_patch(outline)
    figure.suptitle(
        f"crop cache: box (dotted), model's crop at margin {margin} (solid), reach of a box "
        f"jitter of {jitter} (dashed)", fontsize=9,
    )  # fmt: skip
    figure.tight_layout()
    return figure
