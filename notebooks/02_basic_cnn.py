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
# # 2. Basic CNN: the paper's first model
#
# **Purpose.** The baseline: four Conv2D/MaxPool blocks, Dense 512, Dropout 0.45 and a softmax
# over the training individuals. It answers its five most probable individuals, with
# `new_individual` first when its top probability is below a threshold chosen on validation.
# A classifier cannot know individuals it never saw, and has few photos per class: the paper
# finds it the weakest model, and so should we.
#
# **Inputs.** A Happywhale-format data set. **Outputs** (in `out_dir`): `log.csv`,
# `labels.json`, `confidence_search.csv`, `confidence_search.png`, `oof_predictions.csv`,
# `test_predictions.csv`, `submission.csv`, `scores.json`. **Accelerator:** optional (GPU on
# Kaggle). **Expected time:** minutes on CPU at 64-96 px.

# %% tags=["parameters"]
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
out_dir = "runs/local/02_basic_cnn"
fold = 0
n_folds = 5
fold_groups = "auto"  # photos kept in one fold: "auto" (encounter, if train.csv has it), None
seed = 0
image_size = 64
batch_size = 32
epochs = 5
learning_rate = 1e-3
max_valid_images = None

# %% [markdown]
# ## Data: one validation fold
# Validation images of individuals absent from the training part count as `new_individual`,
# as in the test set.

# %%

import matplotlib.pyplot as plt

from whaleutils.contracts import outputs
from whaleutils.retrieval import heads, splits
from whaleutils.training import distribute, models, train

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

# %%
training_model, embedding_model = models.build_basic_cnn(split.encoding.n_individuals, image_size)
train.compile_model(training_model, learning_rate, from_logits=False)
batches, steps = split.training_batches(image_size, batch_size, label_as_input=False, seed=seed)
log = train.fit(
    training_model, batches, epochs, out / "run", embedding_model, steps_per_epoch=steps, verbose=2
)
log.to_csv(out / "log.csv", index=False)
log

# %% [markdown]
# ## The classifier head
# The five most probable individuals; `new_individual` goes first when the top probability is
# below a confidence threshold, chosen on the validation fold like the KNN head's distance
# threshold.

# %%
result = heads.classifier_head(
    split,
    training_model.predict(split.batches("valid", image_size, batch_size), verbose=0),
    training_model.predict(split.batches("test", image_size, batch_size), verbose=0),
    out,
)
plt.show()
{key: value for key, value in result.items() if key != "search"}

# %% [markdown]
# ## What to look at
# `confidence_search.png` (is there a confidence below which calling a photo new pays?) and
# the scores: a softmax over individuals learns little identity from a few photos each, so its
# known MAP@5 sits far below notebook 04's.

# %%
outputs.write_outputs(out, ["log.csv", "labels.json", *heads.CLASSIFIER_OUTPUTS])
