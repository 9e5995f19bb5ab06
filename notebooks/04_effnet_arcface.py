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
# # 4. EfficientNet + ArcFace: the paper's main model
#
# **Purpose.** EfficientNet (B5 at 380 px on Kaggle, noisy-student weights; locally
# EfficientNet-Lite0 from ImageNet weights that install from the package index) with an ArcFace
# head and a 512-d embedding, fine-tuned with the paper's warm-up / exponential-decay schedule on
# a TPU (Keras on JAX), GPUs or the CPU. Snapshots of the embedding model are kept for the blend
# notebook; the KNN head's k and threshold are searched on validation; the submission is written.
#
# **Inputs.** A Happywhale-format data set; on Kaggle without internet, the noisy-student
# weights as an attached dataset (found by file name, e.g. `efficientnet-b5_noisy-student_notop.h5`).
# **Outputs** (in `out_dir`): `log.csv`, `labels.json`, `embedding_model.keras` with its
# portable pair `embedding_model.weights.h5` and `embedding_model.recipe.json` (it loads under
# an older Keras, in float32), `run/snapshots/epoch-NNN.keras` with
# `run/snapshots/epoch-NNN.weights.h5` and `run/snapshots/epoch-NNN.recipe.json`,
# `snapshots/epoch-NNN/` (each snapshot's embeddings and
# predictions), `train.npz`, `valid.npz`, `test.npz`, `lr_schedule.png`, `knn_search.csv`,
# `knn_search.png`, `oof_predictions.csv`, `test_predictions.csv`, `submission.csv`,
# `scores.json`; with
# `local_matching`, `local/` (the fused head: `fusion.LOCAL_OUTPUTS` and the feature cache).
# **Accelerator:** TPU v5e-8 on Kaggle (Keras on JAX, data-parallel over the 8 chips, bfloat16),
# or GPU T4 x2 (Keras on TensorFlow, mirrored over both); the CPU at small sizes.
# **Expected time:** minutes on CPU with Lite0 at 64-160 px; hours on Kaggle at B5 / 380 px.

# %% tags=["parameters"]
backend = "auto"  # Keras backend: "jax", "tensorflow", or "auto" (JAX on a TPU machine)
mixed_precision = "auto"  # dtype policy; "auto": bfloat16 on TPU, float16 on GPU, else float32
data_dir = None
crop_cache = None  # a crop cache (python -m whaleutils crops) read instead of the photos
boxes = None  # CSV (or folder of CSVs) of image,box for train and test; None: the set's own
box_margin = None  # share of a box added on each side before cropping; None: 0.1 (or the cache's)
out_dir = "runs/local/04_effnet_arcface"
fold = 0
n_folds = 5
fold_groups = "auto"  # photos kept in one fold: "auto" (encounter, if train.csv has it), None
seed = 0
backbone = "keras-efficientnet-b5"  # keras.applications: builds on JAX and TensorFlow
weights = "noisy-student"  # or the path of an attached .h5 file; None for random weights
image_size = 380
batch_size_per_replica = 16
epochs = 30
progressive_resizing = None  # e.g. [[128, 6], [176, 4]]: (size, epochs) stages before image_size
lr_per_sample = 5e-6  # the peak learning rate is this times the global batch
warmup_epochs = 5
sustain_epochs = 0
snapshot_every = 5
snapshot_last = 3
arc_s = 30.0
arc_m = 0.5
margin_warmup_epochs = 0  # ramp the margin up from 0 over these first epochs (0: the paper)
backbone_lr_scale = 1.0  # the backbone learns at this fraction of the head's learning rate
frozen_backbone_epochs = 0  # train the head alone over these first epochs
freeze_backbone_batchnorm = False  # keep the backbone's pretrained BatchNorm statistics
augmentation = {}  # pipeline.Augmentation settings, e.g. {"flip_probability": 0.0}
mirror_identities = False  # a flipped photo is another animal: twice the classes (see models.md)
tta = "flip"  # "flip": each photo and its mirror image; "none"; "rot4": 4 quarter turns; "rot4flip"
adaptive_margin = False  # margins by class size (Happywhale 1st place), not arc_m for all
k_subcenters = 1  # sub-centre ArcFace: k centres per class, the nearest counts (1: ArcFace)
pooling = "avg"  # the backbone's map to a vector: "avg", "max" or "gem" (learned exponent)
embedding_dim = 512
knn_rule = "vote"  # "vote" (the paper), "max" (best similarity) or "best" (chosen on validation)
new_share = None  # put new_individual first for this share of photos (1st place: 0.165); None: the threshold
flipped_gallery = False  # also match each gallery photo's mirror image; "best": by validation
max_valid_images = None
max_train_images = None  # keep whole training individuals up to this many photos (the canary)
member = None  # this model's name in the blend, the same on every fold; None: backbone and size
local_matching = False  # fuse local features (RootSIFT, XFeat): True, or a LocalSettings dict
pseudo_labels = None  # a local/pseudo_labels.csv of a run: a second round (transductive)
session_hours = None  # the session's limit (Kaggle: 9 on a TPU, 12 on a GPU): stop training in time

# %% [markdown]
# ## Backend and hardware
# Keras reads its backend once, when it is first imported, so it is chosen here, before any
# import of keras or of whaleutils' model modules (papermill's injected parameters come just
# before this cell). Kaggle's TPU image ships tensorflow-cpu and jax[tpu]: only Keras on JAX uses
# its TPU, so "auto" picks JAX on a TPU machine and TensorFlow elsewhere.

# %%
from whaleutils.contracts import environment

print(f"Keras backend: {environment.use_backend(backend)}")

# %% [markdown]
# `get_strategy` spreads training over every device the backend sees: DataParallel over the TPU's
# chips on JAX, a TPU or mirrored GPUs on TensorFlow, else one device. On a TPU machine where
# the backend sees no TPU it stops with what to do, rather than train for hours on the host CPU.

# %%

import keras
import matplotlib.pyplot as plt

from whaleutils.contracts import outputs
from whaleutils.images import pipeline
from whaleutils.retrieval import embed, fusion, heads, matching, snapshots, splits
from whaleutils.training import backbones, distribute, layers, models, schedules, train

choice = distribute.get_strategy()
keras.mixed_precision.set_global_policy(choice.precision(mixed_precision))
batch_size = choice.global_batch_size(batch_size_per_replica)
lr_max = schedules.scaled_lr_max(lr_per_sample, batch_size)
print(choice.describe())
print(f"dtype policy {keras.mixed_precision.global_policy().name}")
print(f"global batch {batch_size}, lr_max {lr_max:.2e}")

# %% [markdown]
# ## Data
# One validation fold, built as the test set is: individuals absent from the training part
# count as `new_individual`, so the threshold chosen on it carries over to test. With
# `pseudo_labels`, the test photos a first run's fused head verified (its verified tier, chosen
# on validation for 98% precision) are trained on as the whales it named: validation is
# untouched, but the test score is transductive (it learned from the photos it is scored on).

# %%
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
    max_train_images=max_train_images,
)
if pseudo_labels:  # a second round: the test photos the first one verified, as those whales
    split = split.with_pseudo_labels(pseudo_labels)
split.encoding.save(out / "labels.json")
print(split.describe())

# %% [markdown]
# ## The learning-rate schedule (the paper's figure 4)
# A warm-up protects the new head's random weights from large steps, the peak rate is held,
# then decays: plotted first, so a wrong setting shows before hours of training.

# %%
schedule = schedules.paper_schedule(epochs, lr_max, warmup_epochs, sustain_epochs)
figure, axis = plt.subplots(figsize=(7, 3.5))
axis.plot(range(1, epochs + 1), [schedule(e) for e in range(epochs)], marker="o")
axis.set_xlabel("epoch")
axis.set_ylabel("learning rate")
figure.savefig(out / "lr_schedule.png", dpi=110)
plt.show()

# %% [markdown]
# ## Model and training
# Built inside the strategy's scope so that its variables are laid out on every replica.

# %%
weights = backbones.attached_weights(backbone, weights)  # an attached .h5 file if mounted
print(f"backbone {backbone}, weights {weights}")
class_counts = split.class_counts(mirror_identities)  # the head's classes
class_margins = layers.adaptive_margins(class_counts) if adaptive_margin else None
if mirror_identities:  # each mirrored photo is class + n_individuals, learned beside it
    embed.refuse_mirror_views(tta, flipped_gallery)
    augmentation = {**augmentation, "mirror_classes": split.encoding.n_individuals}
stages = train.progressive_stages(image_size, epochs, progressive_resizing)
print("image size by stage:", ", ".join(f"{size} px x {n} epochs" for size, n in stages))
with choice.scope():
    training_model, embedding_model = models.build_model(
        backbone, len(class_counts), image_size, weights=weights, s=arc_s, m=arc_m,
        k_subcenters=k_subcenters, class_margins=class_margins, pooling=pooling,
        embedding_dim=embedding_dim, freeze_backbone_batchnorm=freeze_backbone_batchnorm,
        any_input_size=len(stages) > 1,
    )  # fmt: skip
    train.compile_model(training_model, lr_max, backbone_lr_scale=backbone_lr_scale)

# %% [markdown]
# Each stage of a progressively resized run trains on its own image size (one stage without
# `progressive_resizing`); a run interrupted anywhere resumes where it stopped.

# %%
training_augmentation = pipeline.Augmentation(**augmentation)
log = train.fit_progressive(
    training_model,
    split.batches_by_stage(batch_size, training_augmentation, seed),
    stages,
    out / "run",
    embedding_model=embedding_model,
    learning_rate_schedule=schedule,
    snapshots=train.snapshot_epochs(epochs, snapshot_every, snapshot_last),
    margin_warmup_epochs=margin_warmup_epochs,
    frozen_backbone_epochs=frozen_backbone_epochs,
    verbose=2,
    session_seconds=session_hours and session_hours * 3600,
    session_elapsed=environment.process_seconds(),  # the kernel's time before training
)
log.to_csv(out / "log.csv", index=False)
models.save_model(embedding_model, out / outputs.EMBEDDING_MODEL)
log

# %% [markdown]
# ## Embeddings, the k and threshold search, the submission
# Every photo is embedded with the run's TTA; k and the new-individual distance are chosen on
# the validation fold, each validation photo matched against a gallery composed like test's.

# %%
embeddings = embed.embed_split(
    embedding_model, split, batch_size, out, tta, f"{backbone} fold {fold}",
    mirrored_gallery=bool(flipped_gallery),
)  # fmt: skip
member = member or f"{backbone} {image_size}px"
result = heads.knn_head(
    split, embeddings, out, knn_rule, member=member, new_share=new_share,
    flipped_gallery=flipped_gallery,
)  # fmt: skip
plt.show()
{key: value for key, value in result.items() if key != "search"}

# %% [markdown]
# ## The snapshots as blend members
# Each snapshot but the last (the model above) is embedded here, under this notebook's strategy, and run through the KNN head
# with the k and threshold chosen above, so the blend notebook only reads files (one kernel per
# fold on Kaggle: no re-embedding of every fold's snapshots on one device later).

# %%
with choice.scope():  # loaded onto every replica, as the model was built
    snapshot_folders = snapshots.snapshot_members(split, out, out / "snapshots", batch_size, epochs)
[folder.name for folder in snapshot_folders]

# %% [markdown]
# ## Local features fused with the embedding (with `local_matching`)
# The embedding finds animals that look alike; local features find the same marks in the same
# arrangement. RootSIFT (or XFeat) keypoints of every photo, LNBNN over all gallery descriptors and the
# embedding's nearest individuals each shortlist candidates, RANSAC counts the matches one
# affine transform explains, and a logistic regression fitted on validation turns the evidence
# into a probability that ranks the candidates and decides `new_individual`. Written to
# `local/`, a blend member of its own; `calibration.png` shows whether its probabilities hold.
# A second stage answers per photo (`answers.PhotoAnswer`, fitted on validation): P(new) and
# P(whale X) for its candidates, summing to 1 (`answers_valid.csv` cross-fitted,
# `answers_test.csv`); `reliability.png` and `answer_calibration` measure them (ECE, Brier).

# %%
local_settings = matching.LocalSettings.from_parameter(local_matching)
local_scores = local_settings and fusion.write_fused_head(
    split, embeddings, out / fusion.LOCAL_FOLDER, local_settings, member
)
local_scores

# %% [markdown]
# ## What to look at
# `knn_search.png` (does the threshold search have an interior optimum?), `log.csv` (did the
# training accuracy rise, or did the model underfit?), and with local matching
# `local/calibration.png`, `local/reliability.png` and the `local` scores beside the KNN head's. The head `identify`
# answers with comes first: the fused head where this run has one.

# %%
heads.answering_heads(result, local_scores or None)

# %%
outputs.write_outputs(
    out,
    [
        "log.csv",
        "labels.json",
        *outputs.EMBEDDING_MODEL_FILES,
        "lr_schedule.png",
        *heads.KNN_OUTPUTS,
    ]
    + sorted((out / "run" / "snapshots").glob("epoch-*"))  # each with its portable pair
    + [folder / name for folder in snapshot_folders for name in snapshots.SNAPSHOT_FILES]
    + fusion.local_output_files(local_settings),
)
