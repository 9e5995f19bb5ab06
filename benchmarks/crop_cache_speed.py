"""Input pipeline speed: full-size JPEGs cropped and resized on the fly, against the crop cache.

Makes ``--photos`` test photos of 3000 x 2000 pixels (Happywhale's median width is 3039), each
with a box of the median Detic box's proportions on the real test set (78% of the width, 46% of
the height: ``../shared/data/happywhale`` test.csv against test_image_sizes.csv), writes their
crop cache at ``--size`` px once (``crops.write_crop_cache``, timed on its own), then reads both
ways with the training notebooks' pipeline (``pipeline.make_dataset``,
inference mode, batches of 16) and reports images/s of each, best of ``--repeats``, measured
side by side in one run (the cache read ten times over in each measurement: one pass is too
short to time).

Usage: python benchmarks/crop_cache_speed.py [--photos 48] [--size 380] [--repeats 3]
Prints ``speed-up N.Nx`` last.
"""

from __future__ import annotations

import argparse
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


def images_per_second(dataset) -> float:
    started = time.perf_counter()
    count = sum(len(batch) for batch in dataset.as_numpy_iterator())
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48)
    parser.add_argument("--size", type=int, default=380)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir, cache_dir = Path(folder) / "photos", Path(folder) / "cache"
        make_photos(data_dir, args.photos)
        started = time.perf_counter()
        crops.write_crop_cache(data_dir, cache_dir, args.size)
        writing = time.perf_counter() - started
        train = data.read_train(data_dir)
        from_files = pipeline.make_dataset(
            pipeline.file_records(train, data_dir / "train_images"), args.size, 16
        )
        from_cache = pipeline.make_dataset(
            crops.cached_records(cache_dir, "train", train["image"]),
            args.size,
            16,
            crop_to_box=False,
        )
        from_cache = from_cache.repeat(10)  # ten passes: a single one lasts too little to time
        best = {"files": 0.0, "cache": 0.0}
        for _ in range(args.repeats):
            best["files"] = max(best["files"], images_per_second(from_files))
            best["cache"] = max(best["cache"], images_per_second(from_cache))
    print(
        f"{len(train)} training photos of 3000 x 2000 px, crops of {args.size} px, batches of 16, "
        f"best of {args.repeats}"
    )
    print(f"from full-size JPEGs (decode, crop, resize): {best['files']:7.1f} images/s")
    print(f"from the crop cache:                         {best['cache']:7.1f} images/s")
    print(f"writing the cache (train and test, once): {writing:.1f} s")
    print(f"speed-up {best['cache'] / best['files']:.1f}x")


if __name__ == "__main__":
    main()
