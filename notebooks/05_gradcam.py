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
# **Inputs.** The EfficientNet notebook's output folder (`runs_dir/model_notebook`: `embedding_model.keras`,
# `train.npz`) and the data set. **Outputs** (in `out_dir`): `gradcam.png`, `gradcam.csv`.
# **Accelerator:** none. **Expected time:** under a minute.

# %% tags=["parameters"]
data_dir = None
runs_dir = "runs/local"  # on Kaggle: /kaggle/input, where the model kernel is attached
model_notebook = "04_effnet_arcface"
out_dir = "runs/local/05_gradcam"
fold = 0
n_folds = 5
seed = 0
image_size = 380
examples_per_kind = 4

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from whaleutils import distribute, embed, environment, experiment, gradcam, knn, models

print(distribute.describe_devices())

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
split = experiment.load_fold(data_dir, fold, n_folds, seed)
model_dir = environment.notebook_output(runs_dir, model_notebook)
embedding_model = models.load_model(model_dir / "embedding_model.keras")
gallery = embed.load_embeddings(model_dir / "train.npz")

# %% [markdown]
# ## Correct and wrong identifications
# The top match of each validation photo of a known individual; we explain some right and
# some wrong ones.

# %%
known = split.valid[split.valid["target_id"] != "new_individual"].reset_index(drop=True)
images = np.concatenate(
    [
        b.numpy()
        for b in experiment.image_batches(
            known, split.train_images, image_size, 16, split.crop_to_box
        )
    ]
)
queries = embed.compute_embeddings(
    embedding_model,
    experiment.image_batches(known, split.train_images, image_size, 16, split.crop_to_box),
)
similarities, indices = knn.cosine_topk(gallery["embeddings"], queries, 1)
matched = gallery["labels"][indices[:, 0]]
correct = matched == known["target_id"].to_numpy()
chosen = np.concatenate(
    [np.flatnonzero(correct)[:examples_per_kind], np.flatnonzero(~correct)[:examples_per_kind]]
)
print(f"top-1 correct on {correct.mean():.1%} of {len(known)} known validation photos")

# %%
maps = gradcam.heatmaps(embedding_model, images[chosen], gallery["embeddings"][indices[chosen, 0]])
figure, axes = plt.subplots(
    2, max(1, len(chosen)), figsize=(2.6 * max(1, len(chosen)), 5.6), squeeze=False
)
for column, row in enumerate(chosen):
    axes[0, column].imshow(images[row].astype("uint8"))
    axes[1, column].imshow(gradcam.overlay(images[row], maps[column]))
    verdict = "right" if correct[row] else "wrong"
    axes[0, column].set_title(f"{verdict}: sim {similarities[row, 0]:.2f}", fontsize=8)
    for axis in axes[:, column]:
        axis.set_axis_off()
figure.suptitle(
    "Validation photos (top) and Grad-CAM of the similarity to their top match (bottom)"
)
figure.tight_layout()
figure.savefig(out / "gradcam.png", dpi=110)
plt.show()

# %%
known.assign(top_match=matched, similarity=similarities[:, 0], correct=correct).iloc[chosen].to_csv(
    out / "gradcam.csv", index=False
)
experiment.write_outputs(out, ["gradcam.png", "gradcam.csv"])
