# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 0. The crop cache: every photo decoded once
#
# **Purpose.** Decoding full-size photos is what limits training and embedding: a 3000 x 2000
# JPEG takes a CPU core about 1/28 s, a cached crop about 1/600 s
# (`benchmarks/crop_cache_speed.py`). This notebook prepares every training and test photo once,
# the way the pipeline prepares a photo (`photos.prepare`: upright, cut to its box grown by the
# margin, antialiased), and keeps room around each crop so that training can still move the
# box (the box jitter of the top Happywhale solutions): the notebooks that read the cache see
# the crops they would have cut from the photos.
#
# **Inputs.** A Happywhale-format data set and its boxes (on Kaggle the competition input and
# the Detic boxes dataset). **Outputs** (in `out_dir`): `crops/` (the cache: its index and
# TFRecord shards), `cache.json` (what was written, how fast), `comparison.csv`,
# `examples.png`. Notebooks 02-07 read it with `crop_cache = "00_crop_cache"` (the Kaggle
# profile does). **Accelerator:** none (CPU cores decode). **Expected time:** about 13 minutes
# on Kaggle's 4-core CPU kernel for the 79,000 competition photos; seconds on the smoke set.

# %% tags=["parameters"]
data_dir = None  # None: Kaggle's /kaggle/input/happy-whale-and-dolphin
out_dir = "runs/local/00_crop_cache"
boxes = None  # CSV (or folder of CSVs, or an attached dataset's name) of image,box; None: own
box_margin = None  # share of a box added on each side before cropping; None: 0.1
image_size = 160  # the largest size a notebook reads the cache at
box_jitter = 0.05  # the largest training box jitter the cache leaves room for
examples = 6
seed = 0

# %% [markdown]
# ## Setup
# The cached crop is larger than `image_size`: training's random crop keeps down to 70% of a
# crop's area before resizing, so a crop of `training_min_side` pixels is never enlarged.

# %%
import json
import os
import time

import matplotlib.pyplot as plt

from whaleutils.contracts import outputs
from whaleutils.datasets import data
from whaleutils.images import crops, photos, pipeline

out = outputs.notebook_folder(out_dir)
cache_dir = out / crops.NOTEBOOK_FOLDER
data_path = data.find_data_dir(data_dir)
boxes_by_name = data.find_boxes(boxes)
margin = photos.BOX_MARGIN if box_margin is None else float(box_margin)
crop_side = pipeline.training_min_side(image_size, pipeline.Augmentation())
print(
    f"{data_path}: crops of {crop_side} px for models at {image_size} px, margin {margin}, "
    f"room for a box jitter of {box_jitter} (the box grown by "
    f"{photos.headroom_margin(margin, box_jitter):.3f} a side)"
)

# %% [markdown]
# ## Write the cache
# Into `crops.partial-PID` first (this process's own), renamed to `crops` when complete: a killed
# kernel leaves no cache that looks whole, a rerun starts over, and of two writers at once the
# first to finish wins. A complete cache is kept.

# %%
started = time.perf_counter()
if (cache_dir / crops.CACHE_INDEX).is_file():
    index = crops.read_index(cache_dir)
    print(f"{cache_dir} is complete: kept")
else:
    index = crops.write_crop_cache(
        data_path, cache_dir, crop_side, boxes_by_name, margin, box_jitter
    )
seconds = time.perf_counter() - started
photos_written = sum(part["images"] for part in index["parts"].values())
cache_bytes = sum(path.stat().st_size for path in cache_dir.iterdir())
summary = {
    "photos": photos_written,
    "seconds": round(seconds, 1),
    "photos_per_second": round(photos_written / max(seconds, 1e-9), 1),
    "cpu_cores": os.cpu_count(),
    "gigabytes": round(cache_bytes / 1e9, 3),
    **{key: index[key] for key in ("size", "margin", "box_jitter", "crop_to_box", "boxes")},
}
outputs.write_json(out / "cache.json", summary)
print(json.dumps(summary, indent=1))

# %% [markdown]
# ## What the cache holds
# Each cached image is the photo around its box: the model's crop (solid) fills `size` pixels,
# and the dashed frame is as far as a jittered box can reach. A photo without a box is cached
# whole, at `size` x `size`.

# %%
entries = crops.sample_entries(cache_dir, max(examples, 20), seed)  # from one shard
figure = crops.plot_examples(cache_dir, entries[:examples])
figure.savefig(out / "examples.png", dpi=110)
plt.show()

# %% [markdown]
# ## The cache against the photos
# The model's crop cut from the cache against the crop `photos.prepare` cuts from the photo:
# a few levels of 255 apart (JPEG at quality 95, and the photo path's window rounded out to
# whole photo pixels), far less than a one-pixel shift of the crop.

# %%
comparison = crops.compare_with_photos(cache_dir, data_path, entries, boxes_by_name)
comparison.to_csv(out / "comparison.csv", index=False)
print(comparison["mean_abs_difference"].describe().round(2).to_string())

# %%
cache_files = [cache_dir / name for name in sorted(os.listdir(cache_dir))]
files = [*cache_files, out / "cache.json", out / "examples.png", out / "comparison.csv"]
outputs.write_outputs(out, files)
