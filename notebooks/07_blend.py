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
# # 7. Blend: many checkpoints, one submission
#
# **Purpose.** The paper's best result is a blend of many checkpoints. Every member (the models
# of notebooks 2-4 and the snapshot checkpoints saved while training the EfficientNet) ranks
# five ids per photo; the blend scores each id by the members' rank weights times member
# weights, minus a small penalty per gallery photo, and the member weights are searched by
# coordinate ascent on the out-of-fold (validation) predictions. The top solutions blended at
# the embedding level instead (concatenated embeddings, one KNN head): we report both.
#
# **Inputs.** The output folders of notebooks 2-4 (found under `inputs_dir`), and the data set.
# **Outputs** (in `out_dir`): `snapshots/epoch-NNN/` (each snapshot's embeddings and
# predictions), `alphas.csv`, `alpha_search.png`, `oof_predictions.csv`,
# `test_predictions.csv`, `submission.csv`, `comparison.csv`, `scores.json`.
# **Accelerator:** optional (embedding the snapshots). **Expected time:** a minute on CPU for
# the smoke profile; the search itself takes seconds.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
inputs_dir = "runs/local"  # holds the members' output folders; on Kaggle: /kaggle/input
out_dir = "runs/local/07_blend"
members = None  # notebooks whose outputs are blended; None: the suite's (runner.INPUTS)
fold = 0
n_folds = 5
seed = 0
batch_size = 16
step = 0.1
tol = 0.001
knn_rule = "vote"  # the embedding-level blend's KNN rule

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from whaleutils import blend, distribute, embed, environment, heads, outputs, runner, splits

print(distribute.describe_devices())

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
split = splits.load_split(
    data_dir,
    fold,
    n_folds,
    seed,
    crop_cache=crop_cache,
    boxes=boxes,
    box_margin=box_margin,
)
members = list(members or runner.INPUTS["07_blend"])
notebook_folders = [environment.notebook_output(inputs_dir, name) for name in members]

# %% [markdown]
# ## Members: the notebooks' models and the snapshot checkpoints
# Each snapshot embedding model is run through the KNN head with the k and threshold chosen in
# its notebook.

# %%
snapshot_folders = [
    folder
    for name, notebook_folder in zip(members, notebook_folders, strict=True)
    for folder in blend.snapshot_members(
        split, notebook_folder, out / "snapshots" / name, batch_size
    )
]
member_folders = notebook_folders + snapshot_folders
member_names = [folder.name for folder in member_folders]
oof_images, oof_members = blend.load_members([f / "oof_predictions.csv" for f in member_folders])
test_images, test_members = blend.load_members([f / "test_predictions.csv" for f in member_folders])
print(f"{len(member_folders)} members: {member_names}")

# %% [markdown]
# ## Member weights by coordinate ascent on the out-of-fold predictions
# The frequency penalty counts each individual's photos in the gallery its photos were matched
# against: the validation gallery for out-of-fold predictions, every labelled photo for test.

# %%
alphas, trace = blend.search_alphas(
    oof_members,
    split.truth("valid", oof_images),
    split.photo_counts("valid"),
    step=step,
    tol=tol,
    return_trace=True,
)
figure, axis = plt.subplots(figsize=(7, 3.5))
axis.plot(range(len(trace)), trace["score"], marker="o")
axis.set(
    xlabel="accepted change",
    ylabel="out-of-fold MAP@5",
    title="Coordinate ascent on the member weights",
)
figure.savefig(out / "alpha_search.png", dpi=110)
plt.show()
weights = pd.DataFrame({"member": member_names, "alpha": alphas})
weights.to_csv(out / "alphas.csv", index=False)
weights

# %% [markdown]
# ## The blend, its submission, and the comparison with its members
# The out-of-fold score of the searched weights is optimistic (they were chosen on it); the
# test score, where a solution exists, is not.

# %%
scores = heads.write_predictions(
    split,
    out,
    blend.rank_blend(oof_members, alphas, split.photo_counts("valid"), return_scores=True),
    blend.rank_blend(test_members, alphas, split.photo_counts("test"), return_scores=True),
    {"alphas": dict(zip(member_names, alphas, strict=True))},
    oof_images,
    test_images,
)

# %% [markdown]
# ## Embedding-level blend
# Concatenate each member's L2-normalised embeddings (equal weights) and run one KNN head,
# with its own k and threshold search on the validation fold.

# %%
embedding_folders = [folder for folder in member_folders if (folder / "train.npz").is_file()]
joined = {
    part: blend.concatenate_embeddings(
        blend.load_member_embeddings(embedding_folders, part, split.frame(part)["image"])
    )
    for part in embed.PARTS
}
(out / "embedding_blend").mkdir(exist_ok=True)
embedding_result = heads.knn_head(split, joined, out / "embedding_blend", knn_rule)
scores["embedding_blend"] = {
    key: embedding_result[key] for key in ("valid", "test", "k", "threshold")
}
outputs.write_json(out / outputs.SCORES, scores)

# %%
comparison = blend.member_scores(
    split, member_names, oof_images, oof_members, test_images, test_members
)
for name, result in (("rank blend", scores), ("embedding blend", embedding_result)):
    comparison.loc[len(comparison)] = [
        name,
        result["valid"]["map5"],
        (result["test"] or {}).get("map5"),
    ]
comparison.to_csv(out / "comparison.csv", index=False)
comparison

# %%
outputs.write_outputs(
    out, ["alphas.csv", "alpha_search.png", *heads.PREDICTION_FILES, "comparison.csv"]
)
