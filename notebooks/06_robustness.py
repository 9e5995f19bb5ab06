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
# # 6. Robustness to blur and low light
#
# **Purpose.** Field photos are often out of focus or under-exposed. We degrade the validation
# photos (Gaussian blur sigma 0.5, 1 and 2 pixels; brightness 70%, 60% and 50%; blur 1 with 60%
# brightness), keep the clean gallery, and measure MAP@5 with the EfficientNet model and the
# KNN head chosen in its notebook: the same gallery, k, threshold and flip TTA, so that with all
# validation photos the `original` row is that notebook's validation score.
#
# **Inputs.** The EfficientNet notebook's output folder (found under `inputs_dir`:
# `embedding_model.keras`, `scores.json`, the embeddings) and the data set. **Outputs** (in
# `out_dir`): `robustness.csv`, `robustness.png`. **Accelerator:** optional. **Expected time:** a
# minute on CPU for 100 photos at 64 px; minutes for 500 at 380 px on a GPU.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
inputs_dir = "runs/local"  # holds the model notebook's output folder; on Kaggle: /kaggle/input
out_dir = "runs/local/06_robustness"
seed = 0
batch_size = 16
max_images = 500  # None: every validation photo

# %%

import matplotlib.pyplot as plt

from whaleutils.analysis import robustness
from whaleutils.contracts import outputs
from whaleutils.retrieval import trained_run
from whaleutils.training import distribute

print(distribute.describe_devices())

out = outputs.notebook_folder(out_dir)
trained = trained_run.load_trained(inputs_dir, *outputs.INPUTS["06_robustness"])
# the fold the model was validated on, as its run recorded it, checked against its embeddings
split = trained_run.load_split(
    trained, data_dir, crop_cache=crop_cache, boxes=boxes, box_margin=box_margin
)
print(f"{trained.folder}: {trained.image_size} px, KNN head {trained.knn}")

# %%
table = robustness.robustness_table(trained, split, batch_size, max_images, seed)
table.to_csv(out / "robustness.csv", index=False)
table

# %% [markdown]
# The paper reports MAP@5 falling from 0.86 on clean photos to 0.76, 0.69, 0.80 and 0.70 under
# its blur and low-light conditions: blur hurts more than darkness. Compare the shape, not the
# level: our model and data are far smaller.

# %%
figure = robustness.plot_table(table)
figure.savefig(out / "robustness.png", dpi=110)
plt.show()

# %% [markdown]
# ## What to look at
# `robustness.png`: how fast MAP@5 falls with blur against darkness (the paper found blur
# hurts more); the clean row is notebook 04's validation score.

# %%
outputs.write_outputs(out, ["robustness.csv", "robustness.png"])
