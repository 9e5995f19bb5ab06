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
# # 3. ResNet50 + ArcMargin, embeddings and the KNN head
#
# **Purpose.** The paper's second model: a ResNet50 backbone (224 px) trained with the
# ArcMargin head, whose 512-d embeddings feed a k-nearest-neighbour head. Unlike a softmax, the
# embedding also places individuals never seen in training, and the distance to the nearest
# match says when a photo shows a `new_individual`.
#
# **Inputs.** A Happywhale-format data set. **Outputs** (in `out_dir`): `log.csv`,
# `labels.json`, `embedding_model.keras` (with `embedding_model.weights.h5` and
# `embedding_model.recipe.json`, from which an older Keras rebuilds it), `train.npz`, `valid.npz`, `test.npz`,
# `knn_search.csv`, `knn_search.png`, `oof_predictions.csv`, `test_predictions.csv`,
# `submission.csv`, `scores.json`.
# **Accelerator:** GPU for 224 px; CPU at small sizes. **Expected time:** minutes on CPU
# at 64 px; about an hour per fold on a Kaggle GPU at 224 px.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
out_dir = "runs/local/03_resnet_arcmargin"
fold = 0
n_folds = 5
fold_groups = "auto"  # photos kept in one fold: "auto" (encounter, if train.csv has it), None
seed = 0
backbone = "resnet50"
weights = None  # "imagenet" on Kaggle (downloaded, or an attached .h5 file)
image_size = 224
batch_size = 16
epochs = 10
learning_rate = 1e-4
arc_s = 30.0
arc_m = 0.5
margin_warmup_epochs = 0  # ramp the margin up from 0 over these first epochs (0: the paper)
knn_rule = "vote"  # "vote" (the paper), "max" (best similarity) or "best" (chosen on validation)
new_share = None  # put new_individual first for this share of photos (1st place: 0.165); None: the threshold
flipped_gallery = False  # also match each gallery photo's mirror image; "best": by validation
max_valid_images = None

# %% [markdown]
# ## Data

# %%

import matplotlib.pyplot as plt

from whaleutils.contracts import outputs
from whaleutils.retrieval import embed, heads, splits
from whaleutils.training import backbones, distribute, models, train

print(distribute.describe_devices())

out = outputs.notebook_folder(out_dir)
split = splits.load_split(
    data_dir,
    fold=fold,
    n_folds=n_folds,
    seed=seed,
    fold_groups=fold_groups,
    crop_cache=crop_cache,
    boxes=boxes,
    box_margin=box_margin,
    max_valid_images=max_valid_images,
)
split.encoding.save(out / "labels.json")
print(split.describe())

# %% [markdown]
# ## Model and training
# The head needs the label during training (it adds the margin to the true class only); the
# embedding model shares every weight and needs no label.

# %%
weights = backbones.attached_weights(backbone, weights)  # an attached .h5 file if mounted
print(f"backbone {backbone}, weights {weights}")
training_model, embedding_model = models.build_model(
    backbone, split.encoding.n_individuals, image_size, weights=weights, s=arc_s, m=arc_m
)
train.compile_model(training_model, learning_rate)
batches, steps = split.training_batches(image_size, batch_size, seed=seed)
log = train.fit(
    training_model,
    batches,
    epochs,
    out / "run",
    embedding_model,
    steps_per_epoch=steps,
    margin_warmup_epochs=margin_warmup_epochs,
    verbose=2,
)
log.to_csv(out / "log.csv", index=False)
models.save_model(embedding_model, out / outputs.EMBEDDING_MODEL)
log

# %% [markdown]
# ## Embeddings and the KNN head
# Every photo is embedded with its mirror image (flip TTA). k and the distance threshold are
# chosen on the validation fold, known and new images scored together as in the test set, each
# validation photo matched against a gallery composed like the test gallery.

# %%
embeddings = embed.embed_split(
    embedding_model, split, batch_size, out, "flip", f"{backbone} fold {fold}",
    mirrored_gallery=bool(flipped_gallery),
)  # fmt: skip
result = heads.knn_head(
    split, embeddings, out, knn_rule, new_share=new_share, flipped_gallery=flipped_gallery
)
plt.show()
{key: value for key, value in result.items() if key != "search"}

# %% [markdown]
# ## What to look at
# `knn_search.png` (a flat search means the embedding holds no identity) and `scores.json`'s
# embedding dimensions: from random weights on a CPU ResNet50 learns almost none; with
# ImageNet weights on Kaggle it should.

# %%
outputs.write_outputs(
    out, ["log.csv", "labels.json", *outputs.EMBEDDING_MODEL_FILES, *heads.KNN_OUTPUTS]
)
