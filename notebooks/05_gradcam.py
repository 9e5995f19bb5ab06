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
# # 5. Grad-CAM: where the model looks when it identifies an animal
#
# **Purpose.** For validation photos, explain the cosine similarity between the photo's
# embedding and its top match in the training gallery: the gradient of that similarity with
# respect to the backbone's last feature map weights its channels (Grad-CAM). A model that
# identifies individuals should look at marks (notches, scars, pigment), not at the water.
#
# **Inputs.** The EfficientNet notebook's output folder (found under `inputs_dir`:
# `embedding_model.keras`, `scores.json`, the embeddings) and the data set. **Outputs** (in
# `out_dir`): `gradcam.png`, `gradcam.csv`. **Accelerator:** optional (a few photos through the
# model; on Kaggle it runs where the model kernel ran). **Expected time:** under a minute.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
inputs_dir = "runs/local"  # holds the model notebook's output folder; on Kaggle: /kaggle/input
out_dir = "runs/local/05_gradcam"
examples_per_kind = 4

# %%

import matplotlib.pyplot as plt

from whaleutils.analysis import gradcam
from whaleutils.contracts import outputs
from whaleutils.retrieval import trained_run
from whaleutils.training import distribute

print(distribute.describe_devices())

out = outputs.notebook_folder(out_dir)
trained = trained_run.load_trained(inputs_dir, *outputs.INPUTS["05_gradcam"])
# the fold the model was validated on, as its run recorded it, checked against its embeddings
split = trained_run.load_split(
    trained, data_dir, crop_cache=crop_cache, boxes=boxes, box_margin=box_margin
)
print(f"{trained.folder}: {trained.image_size} px, KNN head {trained.knn}")

# %% [markdown]
# ## Correct and wrong identifications
# The top match of each validation photo of a known individual, as the KNN head saw it; we
# explain some right and some wrong ones.

# %%
matches = gradcam.top_matches(split, trained)
chosen = gradcam.examples(matches, examples_per_kind)
print(f"top-1 correct on {matches['correct'].mean():.1%} of {len(matches)} known validation photos")

# %%
images = next(
    iter(split.batches("valid", trained.image_size, max(1, len(chosen)), rows=chosen["row"]))
).numpy()
gallery = split.gallery("valid", trained.embeddings)
maps = gradcam.heatmaps(trained.embedding_model, images, gallery[chosen["gallery_row"]])
figure = gradcam.plot_examples(images, maps, chosen)
figure.savefig(out / "gradcam.png", dpi=110)
plt.show()

# %% [markdown]
# ## What to look at
# `gradcam.png`: on right matches the heat should sit on the animal's marks (notches, scars,
# patches), not on water or the frame; on wrong ones, what misled the model.

# %%
chosen.to_csv(out / "gradcam.csv", index=False)
outputs.write_outputs(out, ["gradcam.png", "gradcam.csv"])
