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
# # 7. Blend: many checkpoints and folds, one submission
#
# **Purpose.** The paper's best result is a blend of many checkpoints. Every member (the models
# of notebooks 2-4 and the snapshot checkpoints the EfficientNet notebook embedded while it
# trained) ranks five ids per photo; the blend scores each id by the members' rank weights
# times member weights, minus a small penalty per gallery photo, and the member weights are
# searched by coordinate ascent on out-of-fold predictions. Notebook 4 may run once per fold
# (one Kaggle kernel each): a member *name* (e.g. `efficientnet-lite0 160px epoch-003`) then has
# one model per fold, and every training photo is predicted by the model of that name that did
# not train on it. The top solutions blended at the embedding level instead (concatenated
# embeddings, one KNN head): we report both.
#
# **Inputs.** The output folders of notebooks 2-4 (all of them: one per fold or variant, found
# under `inputs_dir`), and the data set.
# **Outputs** (in `out_dir`): `members.csv`, `alphas.csv`, `alpha_search.png`,
# `oof_predictions.csv`, `test_predictions.csv`, `submission.csv`, `comparison.csv`,
# `scores.json`, `embedding_blend/`.
# **Accelerator:** none (the members' embeddings and predictions are read, not computed).
# **Expected time:** seconds for the smoke profile; minutes at Kaggle scale.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
inputs_dir = "runs/local"  # holds the members' output folders; on Kaggle: /kaggle/input
out_dir = "runs/local/07_blend"
members = None  # notebooks whose outputs are blended; None: the suite's (outputs.INPUTS)
fold = 0  # the fold of the embedding-level blend (its members' embeddings must share rows)
step = 0.1
tol = 0.001
knn_rule = "vote"  # the embedding-level blend's KNN rule

# %%

import matplotlib.pyplot as plt
import pandas as pd

from whaleutils.analysis import blend, out_of_fold
from whaleutils.contracts import outputs
from whaleutils.datasets import data
from whaleutils.retrieval import embed, heads, splits

out = outputs.notebook_folder(out_dir)

# %% [markdown]
# ## Members: every output of the notebooks and the snapshots they embedded
# Each member folder holds the predictions its notebook made with its own k and threshold; the
# fold each was validated on is read from its `scores.json`, and the blend's folds are the ones
# its members recorded (their n_folds, seed and fold groups: one assignment for all of them).

# %%
found = out_of_fold.find_members(inputs_dir, list(members or outputs.INPUTS["07_blend"]))
assignment = out_of_fold.fold_assignment(found)
split = splits.load_split(
    data_dir, fold=fold, **assignment, crop_cache=crop_cache, boxes=boxes, box_margin=box_margin
)
listing = pd.DataFrame(
    [(m.name, m.fold, str(m.folder)) for m in found], columns=["member", "fold", "folder"]
)
listing.to_csv(out / "members.csv", index=False)
listing

# %% [markdown]
# ## Out-of-fold predictions
# Every training photo's prediction by each member name comes from the model of that name whose
# validation fold holds the photo. A name with fewer folds (notebooks 2 and 3 train one) does not
# vote on the other folds' photos. Each photo is scored against its own fold's truth, and the
# frequency penalty counts the photos of the gallery it was matched against.

# %%
folds = data.make_folds(
    data.read_train(split.data_dir),
    n_folds=assignment["n_folds"],
    seed=assignment["seed"],
    groups=split.fold_groups,
)
oof = out_of_fold.assemble_oof(found, dict(zip(folds["image"], folds["fold"], strict=True)))
oof_truth, oof_galleries = out_of_fold.oof_truth_and_galleries(
    split.data_dir, oof, assignment["n_folds"], assignment["seed"], split.fold_groups
)
print(f"{len(oof.images)} out-of-fold photos over folds {sorted(set(oof.folds.tolist()))}")
pd.Series(oof.coverage(), name="photos predicted out of fold")

# %% [markdown]
# ## Member weights by coordinate ascent on the out-of-fold predictions

# %%
alphas, trace = blend.search_alphas(
    oof.predictions, oof_truth, oof_galleries, step=step, tol=tol, return_trace=True
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
weights = pd.DataFrame({"member": oof.names, "alpha": alphas})
weights.to_csv(out / "alphas.csv", index=False)
weights

# %% [markdown]
# ## Embedding-level blend
# Concatenate the L2-normalised embeddings (equal weights) of the members validated on this
# notebook's fold and run one KNN head, with its own k and threshold search on that fold.

# %%
embedding_folders = [
    m.folder for m in found if m.fold == fold and (m.folder / "train.npz").is_file()
]
joined = {
    part: blend.concatenate_embeddings(
        out_of_fold.load_member_embeddings(embedding_folders, part, split.frame(part)["image"])
    )
    for part in embed.PARTS
}
embedding_result = heads.knn_head(
    split, joined, outputs.notebook_folder(out / "embedding_blend"), knn_rule
)

# %% [markdown]
# ## The blend, its submission, and the comparison with its members
# On test, every member votes: a name's weight is shared among its fold models. The out-of-fold
# score of the searched weights is optimistic (they were chosen on it); the test score, where a
# solution exists, is not.

# %%
test_images, test_members = out_of_fold.load_members(
    [m.folder / "test_predictions.csv" for m in found]
)
test_alphas = out_of_fold.fold_member_alphas(found, oof.names, alphas)
scores = heads.write_predictions(
    split,
    out,
    blend.rank_blend(oof.predictions, alphas, oof_galleries, return_scores=True),
    blend.rank_blend(test_members, test_alphas, split.photo_counts("test"), return_scores=True),
    {
        "alphas": dict(zip(oof.names, alphas, strict=True)),
        "oof_folds": sorted(set(oof.folds.tolist())),
        "embedding_blend": {
            key: embedding_result[key] for key in ("valid", "test", "k", "threshold")
        },
    },
    oof.images,
    test_images,
    valid_truth=oof_truth,
)

# %%
comparison = pd.concat(
    [
        out_of_fold.member_scores(split, oof, oof_truth, found, test_images, test_members),
        out_of_fold.blend_rows(
            {
                "rank blend": (scores, len(oof.images)),
                "embedding blend": (embedding_result, len(split.valid)),
            }
        ),
    ],
    ignore_index=True,
)
comparison.to_csv(out / "comparison.csv", index=False)
comparison

# %% [markdown]
# ## What to look at
# `comparison.csv`: the rank blend's test MAP@5 against its best member's (a blend that only
# matches its best member kept that member alone: see `alphas.csv`), and `alpha_search.png`:
# whether the weight search moved away from its start.

# %%
outputs.write_outputs(
    out,
    ["members.csv", "alphas.csv", "alpha_search.png", *heads.PREDICTION_FILES, "comparison.csv"]
    + [f"embedding_blend/{name}" for name in heads.KNN_HEAD_FILES],
)
