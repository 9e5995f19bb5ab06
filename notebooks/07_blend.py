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
# weights, minus a small penalty per training photo, and the member weights are searched by
# coordinate ascent on the out-of-fold (validation) predictions. The top solutions blended at
# the embedding level instead (concatenated embeddings, one KNN head): we report both.
#
# **Inputs.** The run folder (`runs_dir`) with the outputs of notebooks 2-4, and the data set.
# **Outputs** (in `out_dir`): `snapshots/epoch-NNN/` (each snapshot's embeddings and
# predictions), `alphas.csv`, `alpha_search.png`, `oof_predictions.csv`,
# `test_predictions.csv`, `submission.csv`, `comparison.csv`, `scores.json`.
# **Accelerator:** optional (embedding the snapshots). **Expected time:** a minute on CPU for
# the smoke profile; the search itself takes seconds.

# %% tags=["parameters"]
data_dir = None
runs_dir = "runs/local"  # on Kaggle: /kaggle/input, where the member kernels are attached
out_dir = "runs/local/07_blend"
members = ["02_basic_cnn", "03_resnet_arcmargin", "04_effnet_arcface"]
snapshot_notebook = "04_effnet_arcface"
embedding_members = ["03_resnet_arcmargin", "04_effnet_arcface"]
fold = 0
n_folds = 5
seed = 0
image_size = 380
batch_size = 16
step = 0.1
tol = 0.001

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from whaleutils import blend, distribute, embed, environment, experiment, knn, submission

print(distribute.describe_devices())

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
runs = Path(runs_dir)
split = experiment.load_fold(data_dir, fold, n_folds, seed)
counts = split.fit["individual_id"].value_counts().to_dict()
folders = {
    name: environment.notebook_output(runs, name)
    for name in {*members, *embedding_members, snapshot_notebook}
}
head = json.loads((folders[snapshot_notebook] / "scores.json").read_text())

# %% [markdown]
# ## Members: the notebooks' models and the snapshot checkpoints
# Each snapshot embedding model is run through the KNN head with the k and threshold chosen in
# its notebook.

# %%
snapshot_folders = experiment.snapshot_members(
    split,
    folders[snapshot_notebook] / "run" / "snapshots",
    out / "snapshots",
    image_size,
    batch_size,
    head["k"],
    head["threshold"],
    head["rule"],
)
member_folders = [folders[name] for name in members] + snapshot_folders
member_names = [folder.name for folder in member_folders]
oof_images, oof_members = blend.load_members(
    [folder / "oof_predictions.csv" for folder in member_folders]
)
test_images, test_members = blend.load_members(
    [folder / "test_predictions.csv" for folder in member_folders]
)
truth = split.valid.set_index("image").loc[oof_images, "target_id"].tolist()
print(f"{len(member_folders)} members: {member_names}")

# %% [markdown]
# ## Member weights by coordinate ascent on the out-of-fold predictions

# %%
alphas, trace = blend.search_alphas(
    oof_members, truth, counts, step=step, tol=tol, return_trace=True
)
pd.DataFrame({"member": member_names, "alpha": alphas}).to_csv(out / "alphas.csv", index=False)
figure, axis = plt.subplots(figsize=(7, 3.5))
axis.plot(range(len(trace)), trace["score"], marker="o")
axis.set_xlabel("accepted change")
axis.set_ylabel("out-of-fold MAP@5")
axis.set_title("Coordinate ascent on the member weights")
figure.savefig(out / "alpha_search.png", dpi=110)
plt.show()
pd.DataFrame({"member": member_names, "alpha": alphas})

# %% [markdown]
# ## The blend, its submission, and the comparison with its members
# The out-of-fold score of the searched weights is optimistic (they were chosen on it); the
# test score, where a solution exists, is not.

# %%
oof_blend, oof_blend_scores = blend.rank_blend(oof_members, alphas, counts, return_scores=True)
test_blend, test_blend_scores = blend.rank_blend(test_members, alphas, counts, return_scores=True)
knn.write_predictions(
    out / "oof_predictions.csv", oof_images, oof_blend, oof_blend_scores, overwrite=True
)
knn.write_predictions(
    out / "test_predictions.csv", test_images, test_blend, test_blend_scores, overwrite=True
)
submission.write_submission(out / "submission.csv", test_images, test_blend, overwrite=True)
scores = {
    "valid": experiment.score(truth, oof_blend),
    "test": experiment.test_scores(split, test_images, test_blend),
    "alphas": dict(zip(member_names, alphas, strict=True)),
}

# %% [markdown]
# ## Embedding-level blend
# Concatenate each member's L2-normalised embeddings (equal weights) and run one KNN head,
# with its own k and threshold search on the validation fold.

# %%
embedding_folders = [folders[name] for name in embedding_members] + snapshot_folders
joined = {
    split_name: blend.concatenate_embeddings(
        [
            embed.load_embeddings(folder / f"{split_name}.npz")["embeddings"]
            for folder in embedding_folders
        ]
    )
    for split_name in ("train", "valid", "test")
}
(out / "embedding_blend").mkdir(exist_ok=True)
embedding_result = experiment.knn_head(split, joined, out / "embedding_blend", rule=head["rule"])
scores["embedding_blend"] = {
    key: embedding_result[key] for key in ("valid", "test", "k", "threshold")
}
experiment.write_json(out / "scores.json", scores)

rows = []
for name, folder in zip(member_names, member_folders, strict=True):
    member_oof = blend.load_members([folder / "oof_predictions.csv"])[1][0]
    member_test = blend.load_members([folder / "test_predictions.csv"])[1][0]
    rows.append(
        {
            "model": name,
            "valid_map5": experiment.score(truth, member_oof)["map5"],
            "test_map5": (experiment.test_scores(split, test_images, member_test) or {}).get(
                "map5"
            ),
        }
    )
rows.append(
    {
        "model": "rank blend",
        "valid_map5": scores["valid"]["map5"],
        "test_map5": (scores["test"] or {}).get("map5"),
    }
)
rows.append(
    {
        "model": "embedding blend",
        "valid_map5": embedding_result["valid"]["map5"],
        "test_map5": (embedding_result["test"] or {}).get("map5"),
    }
)
comparison = pd.DataFrame(rows)
comparison.to_csv(out / "comparison.csv", index=False)
comparison

# %%
experiment.write_outputs(
    out,
    [
        "alphas.csv",
        "alpha_search.png",
        "oof_predictions.csv",
        "test_predictions.csv",
        "submission.csv",
        "comparison.csv",
        "scores.json",
    ],
)
