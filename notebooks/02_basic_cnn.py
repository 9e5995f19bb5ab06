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
# `oof_predictions.csv`, `test_predictions.csv`, `submission.csv`, `scores.json`,
# `threshold.png`. **Accelerator:** optional. **Expected time:** minutes on CPU at 64 px.

# %% tags=["parameters"]
data_dir = None
out_dir = "runs/local/02_basic_cnn"
fold = 0
n_folds = 5
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
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from whaleutils import distribute, experiment, knn, models, submission, train

print(distribute.describe_devices())

out = Path(out_dir)
out.mkdir(parents=True, exist_ok=True)
split = experiment.load_fold(data_dir, fold, n_folds, seed, max_valid_images)
split.encoding.save(out / "labels.json")
print(split.describe())

# %% [markdown]
# ## Model and training

# %%
training_model, embedding_model = models.build_basic_cnn(split.encoding.n_individuals, image_size)
train.compile_model(training_model, learning_rate, from_logits=False)
batches, steps = experiment.training_batches(
    split, image_size, batch_size, label_as_input=False, seed=seed
)
log = train.fit(
    training_model, batches, epochs, out / "run", embedding_model, steps_per_epoch=steps, verbose=2
)
log.to_csv(out / "log.csv", index=False)
log

# %% [markdown]
# ## Threshold for `new_individual`, chosen on validation

# %%
probabilities = training_model.predict(
    experiment.image_batches(
        split.valid, split.train_images, image_size, batch_size, split.crop_to_box
    ),
    verbose=0,
)
valid_lists, valid_top = experiment.classifier_predictions(probabilities, split, 0.0)
ids = np.array(
    [[label for label in row if label != "new_individual"][:4] for row in valid_lists], dtype=object
)
confidence_grid = np.round(np.arange(0.0, 1.0001, 0.02), 2)
curve = knn.map5_by_threshold(ids, valid_top[:, 0], split.valid["target_id"], 1.0 - confidence_grid)
curve["confidence"] = 1.0 - curve["threshold"]
best = curve.sort_values(["map5", "confidence"], ascending=[False, True]).iloc[0]
confidence_threshold = float(best["confidence"])
figure, axis = plt.subplots(figsize=(7, 4))
for column in ("map5", "map5_known", "map5_new"):
    axis.plot(curve["confidence"], curve[column], label=column)
axis.axvline(confidence_threshold, color="grey", linestyle="--")
axis.set_xlabel("new_individual first when the top probability is below")
axis.set_ylabel("validation MAP@5")
axis.legend()
figure.savefig(out / "threshold.png", dpi=110)
plt.show()
print(f"confidence threshold {confidence_threshold:.2f}: validation MAP@5 {best['map5']:.4f}")

# %% [markdown]
# ## Predictions and scores

# %%
valid_lists, valid_top = experiment.classifier_predictions(
    probabilities, split, confidence_threshold
)
knn.write_predictions(
    out / "oof_predictions.csv", split.valid["image"], valid_lists, valid_top, overwrite=True
)
test_probabilities = training_model.predict(
    experiment.image_batches(
        split.test, split.test_images, image_size, batch_size, split.crop_to_box
    ),
    verbose=0,
)
test_lists, test_top = experiment.classifier_predictions(
    test_probabilities, split, confidence_threshold
)
knn.write_predictions(
    out / "test_predictions.csv", split.test["image"], test_lists, test_top, overwrite=True
)
submission.write_submission(out / "submission.csv", split.test["image"], test_lists, overwrite=True)
scores = {
    "valid": experiment.score(split.valid["target_id"], valid_lists),
    "test": experiment.test_scores(split, split.test["image"], test_lists),
    "confidence_threshold": confidence_threshold,
}
experiment.write_json(out / "scores.json", scores)
scores

# %%
experiment.write_outputs(
    out,
    [
        "log.csv",
        "labels.json",
        "oof_predictions.csv",
        "test_predictions.csv",
        "submission.csv",
        "scores.json",
        "threshold.png",
    ],
)
