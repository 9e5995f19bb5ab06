"""Training: compile, fit with checkpoints, snapshots, a CSV log and resume after interruption.

A training run writes into its ``out_dir``::

    log.csv                   epoch, loss, accuracy, top5_accuracy, learning_rate,
                              images_per_second, epoch_seconds[, val_...]
    best.keras                the training model at its best monitored value
    snapshots/epoch-NNN.keras embedding models at the snapshot epochs (blended later)
    final.weights.h5          the training model's weights after the last epoch
    done.json                 {"epochs": N, "seconds": ...[, "stopped": why]} once the run
                              finished (or stopped early to stay inside its session)
    backup/                   the resumable state while the run is unfinished
                              (:class:`AtomicBackup`: the last two epochs' weights and
                              training_metadata.json naming them, each written atomically)

Calling :func:`fit` again on the same ``out_dir`` resumes an interrupted run from the epoch
after the last finished one (never repeating an epoch), or, if the run is done, loads the final
weights and returns at once.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import keras
import pandas as pd

from whaleutils.training import models
from whaleutils.training.layers import ArcMarginProduct

HEAD_LAYERS = ("embedding", "embedding_bn", "arc_margin")  # models.build_model's head


@keras.saving.register_keras_serializable(package="whaleutils")
class FineTuningAdamW(keras.optimizers.AdamW):
    """AdamW whose backbone learns at ``backbone_lr_scale`` times the head's learning rate.

    Fine-tuning a pretrained backbone under a new, randomly initialised head: a full learning
    rate on the backbone lets the head's first, large gradients wreck what it learned, so the
    backbone moves more slowly (a scale of 0 freezes it; :class:`BackboneWarmup` starts it at 0
    for the first epochs and then sets the configured scale). A variable belongs to the head if
    the first part of its path is one of ``head_layers``; every other variable is the backbone's.
    ``weight_decay=0`` makes this Adam.
    """

    def __init__(self, backbone_lr_scale=0.2, head_layers=HEAD_LAYERS, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= backbone_lr_scale:
            raise ValueError(f"backbone_lr_scale must be >= 0, got {backbone_lr_scale}")
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.head_layers = tuple(head_layers)

    def build(self, variables):
        super().build(variables)
        self.backbone_scale = self.add_variable(
            (), initializer=keras.initializers.Constant(self.backbone_lr_scale),
            name="backbone_lr_scale",
        )  # fmt: skip
        self._in_backbone = [v.path.split("/")[0] not in self.head_layers for v in variables]
        if not any(self._in_backbone) or all(self._in_backbone):
            raise ValueError(
                f"no split between backbone and head layers {self.head_layers} in this model"
            )

    def update_step(self, gradient, variable, learning_rate):
        if self._in_backbone[self._get_variable_index(variable)]:
            learning_rate = keras.ops.multiply(
                keras.ops.cast(learning_rate, variable.dtype),
                keras.ops.cast(self.backbone_scale, variable.dtype),
            )
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.update(backbone_lr_scale=self.backbone_lr_scale, head_layers=list(self.head_layers))
        return config


class BackboneWarmup(keras.callbacks.Callback):
    """Train the head alone (backbone learning rate 0) for the first ``frozen_epochs`` epochs,
    then let the backbone learn at the optimizer's ``backbone_lr_scale``. Needs
    :class:`FineTuningAdamW`; the scale in force is logged as ``backbone_lr_scale``."""

    def __init__(self, frozen_epochs: int):
        super().__init__()
        if frozen_epochs < 0:
            raise ValueError(f"frozen_epochs must be >= 0, got frozen_epochs={frozen_epochs}")
        self.frozen_epochs = int(frozen_epochs)

    def fine_tuning_optimizer(self) -> FineTuningAdamW:
        """The model's FineTuningAdamW, inside the LossScaleOptimizer that Keras wraps it in
        under mixed_float16."""
        outer = self.model.optimizer
        optimizer = getattr(outer, "inner_optimizer", outer)
        if not isinstance(optimizer, FineTuningAdamW):
            raise ValueError("BackboneWarmup needs a model compiled with FineTuningAdamW")
        return optimizer

    def scale_at(self, epoch: int) -> float:
        scale = self.fine_tuning_optimizer().backbone_lr_scale
        return 0.0 if epoch < self.frozen_epochs else scale

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.fine_tuning_optimizer()
        # build the outer optimizer: a LossScaleOptimizer's build (re)builds the inner one,
        # which would reset the scale set here
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        optimizer.backbone_scale.assign(self.scale_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["backbone_lr_scale"] = self.scale_at(epoch)


def compile_model(
    model: keras.Model,
    learning_rate: float = 1e-3,
    from_logits: bool = True,
    optimizer: str = "adam",
    weight_decay: float = 1e-4,
    backbone_lr_scale: float = 1.0,
    jit_compile: bool | str = "auto",
) -> keras.Model:
    """Compile with sparse cross-entropy and accuracy / top-5 accuracy metrics.

    ``from_logits`` is True for ArcFace heads (they output scaled logits) and False for the
    basic CNN's softmax. ``optimizer`` is "adam" or "adamw" (Keras 3's AdamW, with
    ``weight_decay``). ``backbone_lr_scale`` other than 1 (a model from
    ``models.build_model``) makes it :class:`FineTuningAdamW`, the backbone learning at that
    fraction of ``learning_rate``. ``jit_compile``: XLA for the training step; Keras' "auto"
    uses it on JAX and on a single GPU, not on a CPU-only machine nor under a tf.distribute
    strategy (MirroredStrategy). Under the ``mixed_float16`` policy Keras wraps the optimizer in
    a ``LossScaleOptimizer`` (dynamic loss scaling).
    """
    if optimizer not in ("adam", "adamw"):
        raise ValueError(f"optimizer must be 'adam' or 'adamw', got optimizer={optimizer!r}")
    decay = weight_decay if optimizer == "adamw" else 0.0
    if backbone_lr_scale != 1.0:
        opt = FineTuningAdamW(backbone_lr_scale, learning_rate=learning_rate, weight_decay=decay)
    elif optimizer == "adam":
        opt = keras.optimizers.Adam(learning_rate)
    else:
        opt = keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay)
    model.compile(
        optimizer=opt,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5_accuracy"),
        ],
        jit_compile=jit_compile,
    )
    return model


def extract_embedding_model(training_model: keras.Model) -> keras.Model:
    """The image -> embedding sub-model of a training model built by ``training.models``."""
    names = {layer.name for layer in training_model.layers}
    output_name = "embedding_bn" if "embedding_bn" in names else "embedding"
    if output_name not in names or "image" not in names:
        raise ValueError(f"{training_model.name} has no 'image' input and 'embedding' layer")
    image = training_model.get_layer("image").output
    return keras.Model(
        image, training_model.get_layer(output_name).output, name=f"{training_model.name}_embedding"
    )


class SnapshotCheckpoint(keras.callbacks.Callback):
    """Save the embedding model at chosen 1-based epochs (snapshot ensembling)."""

    def __init__(self, embedding_model: keras.Model, folder: Path, epochs: Iterable[int]):
        super().__init__()
        self.embedding_model = embedding_model
        self.folder = Path(folder)
        self.epochs = set(epochs)

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs:
            self.folder.mkdir(parents=True, exist_ok=True)
            models.save_model(self.embedding_model, self.folder / f"epoch-{epoch + 1:03d}.keras")


class LearningRateLogger(keras.callbacks.Callback):
    """Put the optimizer's learning rate into the epoch logs as ``learning_rate`` (the key
    Keras' LearningRateScheduler uses), so log.csv has it with or without a schedule."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )


class SessionBudget(keras.callbacks.Callback):
    """Measure throughput and keep a run inside its session.

    Each epoch logs ``images_per_second`` and ``epoch_seconds`` (``log.csv``) and prints the
    projected end of the run: the time already used (``elapsed_before`` seconds before
    training, plus training so far) and the epochs left at the mean epoch time. With
    ``session_seconds`` (Kaggle: 9 h on a TPU, 12 h on a GPU), an epoch after which the run
    could not end ``reserve_seconds`` before the limit (the time embedding, the heads and the
    files need) stops training with a message; ``fit`` then keeps what was trained
    (``stopped`` in ``done.json``) and the notebook goes on with it.
    """

    def __init__(
        self,
        images_per_epoch: int,
        epochs: int,
        session_seconds: float | None = None,
        elapsed_before: float = 0.0,
        reserve_seconds: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.images_per_epoch, self.epochs = int(images_per_epoch), int(epochs)
        self.session_seconds, self.elapsed_before = session_seconds, float(elapsed_before)
        self.reserve_seconds, self.clock = float(reserve_seconds), clock
        self.epoch_seconds: list[float] = []
        self.stopped: str | None = None

    def on_train_begin(self, logs=None):
        self.training_started = self.clock()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = self.clock()

    def on_epoch_end(self, epoch, logs=None):
        now = self.clock()
        seconds = max(now - self.epoch_started, 1e-9)
        self.epoch_seconds.append(seconds)
        rate = self.images_per_epoch / seconds
        if logs is not None:
            logs["images_per_second"], logs["epoch_seconds"] = rate, seconds
        left = self.epochs - (epoch + 1)
        used = self.elapsed_before + now - self.training_started
        end = used + left * sum(self.epoch_seconds) / len(self.epoch_seconds)
        limit = (
            ""
            if self.session_seconds is None
            else f" of a {self.session_seconds / 3600:.1f} h session"
        )
        print(
            f"epoch {epoch + 1}/{self.epochs}: {rate:.1f} images/s; training ends at "
            f"{end / 3600:.2f} h{limit}"
        )
        if (
            self.session_seconds is not None
            and left
            and end > self.session_seconds - self.reserve_seconds
        ):
            self.stopped = (
                f"stopped after epoch {epoch + 1} of {self.epochs}: at {rate:.1f} images/s the "
                f"{left} epochs left end at {end / 3600:.2f} h, past the session's "
                f"{self.session_seconds / 3600:.1f} h less {self.reserve_seconds / 3600:.1f} h "
                "for what follows training; the model trained so far is kept"
            )
            print(self.stopped)
            self.model.stop_training = True


def snapshot_epochs(epochs: int, every: int | None, last: int = 0) -> list[int]:
    """1-based epochs to snapshot: every ``every`` epochs, plus the ``last`` final epochs.

    Examples
    --------
    >>> snapshot_epochs(10, every=4, last=2)
    [4, 8, 9, 10]
    """
    chosen = set(range(every, epochs + 1, every)) if every else set()
    chosen |= set(range(max(1, epochs - last + 1), epochs + 1))
    return sorted(chosen)


class MarginWarmup(keras.callbacks.Callback):
    """Ramp the ArcFace margins from 0 to their value over the first ``warmup_epochs`` epochs.

    At the start of epoch ``e`` (0-based) every :class:`~training.layers.ArcMarginProduct`
    in the model gets ``margin_scale = min(1, e / warmup_epochs)``: epoch 0 trains the plain
    normalised softmax (``s * cos``), the margin reaches its value at epoch ``warmup_epochs``.
    Trained from random weights, a margin from the first step can stop the head from learning
    at all (the local profile's finding); from pretrained weights the paper uses no warm-up.
    The scale is a weight of the layer, so a resumed run restores it with the model.
    """

    def __init__(self, warmup_epochs: int):
        super().__init__()
        if warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got warmup_epochs={warmup_epochs}")
        self.warmup_epochs = int(warmup_epochs)

    def scale_at(self, epoch: int) -> float:
        return 1.0 if self.warmup_epochs == 0 else min(1.0, epoch / self.warmup_epochs)

    def on_epoch_begin(self, epoch, logs=None):

        heads = [layer for layer in self.model.layers if isinstance(layer, ArcMarginProduct)]
        if not heads:
            raise ValueError("MarginWarmup needs a model with an ArcMarginProduct layer")
        for head in heads:
            head.margin_scale.assign(self.scale_at(epoch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["margin_scale"] = self.scale_at(epoch)


def monitor_mode(monitor: str) -> str:
    """ "min" for losses, "max" for accuracies and scores (what Keras' "auto" guesses)."""
    return "min" if "loss" in monitor else "max"


def best_so_far(log_path: str | os.PathLike, monitor: str, mode: str) -> float | None:
    """The best ``monitor`` value among the epochs in ``log.csv``, or None (no log or column)."""
    log_path = Path(log_path)
    if not log_path.is_file() or log_path.stat().st_size == 0:
        return None
    log = pd.read_csv(log_path)
    if monitor not in log.columns:
        return None
    values = pd.to_numeric(log[monitor], errors="coerce")  # "NA" where it was not measured
    if values.isna().all():
        return None
    return float(values.min() if mode == "min" else values.max())


def _images_per_epoch(dataset, steps_per_epoch: int | None) -> int:
    """Images in one epoch of a batched dataset: steps x its batch size (the first element's),
    or 0 where neither is known (the throughput is then not logged as a rate of images)."""
    try:
        first = next(iter(dataset.take(1)))
    except (StopIteration, TypeError, AttributeError):
        return 0
    inputs = first[0] if isinstance(first, tuple) else first
    inputs = inputs["image"] if isinstance(inputs, dict) else inputs
    steps = steps_per_epoch or int(dataset.cardinality())
    return max(0, steps) * int(inputs.shape[0])


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore``, written so that a kill at any moment leaves a backup
    that loads. Keras writes ``latest.weights.h5`` in place: a kill while it writes leaves a
    truncated file, and every later run fails to load it. Here each epoch's weights go to a
    file of their own (``epoch-NNNN.weights.h5``, written under a temporary name and renamed),
    then ``training_metadata.json`` (likewise) names them and the previous epoch's, and only
    then are older weights removed.

    On resume the newest loadable epoch is restored; if it cannot be read (damaged outside
    this tool) the previous one is, with a warning, and ``log.csv`` (``log_path``) is cut
    back to the epochs before it so no epoch is logged twice. If nothing loads (a damaged
    backup of an older version), the folder is set aside as ``backup.damaged-N`` with a
    warning and training starts over.
    """

    WEIGHTS = re.compile(r"epoch-[0-9]{4,}\.weights\.h5")

    def __init__(self, backup_dir: str | os.PathLike, log_path: str | os.PathLike | None = None):
        super().__init__(str(backup_dir), delete_checkpoint=False)
        self.folder = Path(backup_dir)
        self.log_path = None if log_path is None else Path(log_path)
        self.metadata_path = self.folder / "training_metadata.json"

    def on_train_begin(self, logs=None):
        self._load_model()

    def _generations(self) -> list[dict]:
        """The epochs the metadata names, newest first; an unreadable file names none, and
        a backup of Keras' own layout (``latest.weights.h5``) is one generation."""
        try:
            metadata = json.loads(self.metadata_path.read_text())
        except (OSError, ValueError):
            return []
        if not isinstance(metadata, dict):
            return []
        if "weights" not in metadata and "epoch" in metadata:  # Keras' own callback's
            return [{"epoch": metadata["epoch"], "weights": "latest.weights.h5"}]
        return [g for g in (metadata, metadata.get("previous")) if isinstance(g, dict)]

    def _load_model(self):
        if not self.model.built:
            return super()._load_model()  # Keras' error: the model must be built
        if not self.folder.is_dir():
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        generations = self._generations()
        for position, generation in enumerate(generations):
            name, epoch = generation.get("weights"), generation.get("epoch")
            if not isinstance(name, str) or not isinstance(epoch, int) or epoch < 0:
                continue
            if name != "latest.weights.h5" and not self.WEIGHTS.fullmatch(name):
                continue
            try:
                self.model.load_weights(self.folder / name)
            except (OSError, ValueError) as error:
                warnings.warn(f"{self.folder / name}: not loadable ({error})", stacklevel=2)
                continue
            self.model._initial_epoch = epoch
            if position > 0:
                warnings.warn(
                    f"{self.folder}: the newest backup is damaged; resuming from epoch {epoch}",
                    stacklevel=2,
                )
                self._cut_log(epoch)
            return
        if not any(self.folder.iterdir()):
            return
        aside = self.folder.with_name(f"{self.folder.name}.damaged-1")
        number = 1
        while aside.exists():
            number += 1
            aside = self.folder.with_name(f"{self.folder.name}.damaged-{number}")
        os.replace(self.folder, aside)
        warnings.warn(
            f"{self.folder}: no loadable backup (damaged: a run killed while an older version "
            f"wrote it); set aside as {aside.name}, training starts over",
            stacklevel=2,
        )
        self._cut_log(0)

    def _cut_log(self, epoch: int) -> None:
        """``log.csv`` without the epochs from ``epoch`` on (they are trained again)."""
        if self.log_path is None or not self.log_path.is_file():
            return
        log = pd.read_csv(self.log_path)
        kept = log[log["epoch"] < epoch]
        if len(kept) < len(log):
            _write_atomic(self.log_path, kept.to_csv(index=False).encode())

    def _save_model(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"epoch-{self._current_epoch:04d}.weights.h5"
        partial = self.folder / f".partial-{os.getpid()}.weights.h5"
        self.model.save_weights(partial, overwrite=True)
        _fsync(partial)
        os.replace(partial, self.folder / name)
        newest = self._generations()[:1]
        previous = (
            {"epoch": newest[0]["epoch"], "weights": newest[0]["weights"]}
            if newest and newest[0].get("weights") != name
            else None
        )
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "weights": name,
            "previous": previous,
        }
        _write_atomic(self.metadata_path, json.dumps(metadata).encode())
        keep = {name, *(() if previous is None else (previous["weights"],))}
        for old in self.folder.iterdir():
            if (self.WEIGHTS.fullmatch(old.name) or old.name == "latest.weights.h5") and (
                old.name not in keep
            ):
                old.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_atomic(path: Path, payload: bytes) -> None:
    """``payload`` into ``path`` under a temporary name, synced, then renamed into place."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def fit(
    training_model: keras.Model,
    train_dataset,
    epochs: int,
    out_dir: str | os.PathLike,
    embedding_model: keras.Model | None = None,
    steps_per_epoch: int | None = None,
    learning_rate_schedule: Callable[[int], float] | None = None,
    snapshots: Iterable[int] = (),
    monitor: str = "loss",
    margin_warmup_epochs: int = 0,
    frozen_backbone_epochs: int = 0,
    extra_callbacks: Iterable[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    images_per_epoch: int | None = None,
    session_seconds: float | None = None,
    session_elapsed: float = 0.0,
    initial_epoch: int = 0,
    snapshot_folder: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Train a compiled model for ``epochs`` epochs with checkpoints; returns the epoch log.

    Parameters
    ----------
    training_model : a compiled model (see :func:`compile_model`)
    train_dataset : ``tf.data.Dataset`` of ``(inputs, targets)``
    epochs : total epochs of the run (a resumed run counts the finished ones)
    out_dir : the run's folder (layout in the module docstring)
    embedding_model : saved at the ``snapshots`` epochs (1-based); default: extracted
    steps_per_epoch : needed when ``train_dataset`` repeats
    learning_rate_schedule : ``epoch (0-based) -> learning rate``, e.g. ``schedules.lr_at_epoch``
    monitor : the logged metric choosing ``best.keras`` (``loss``, ``accuracy``, ...)
    margin_warmup_epochs : ramp the ArcFace margin up over these first epochs
        (:class:`MarginWarmup`; logged as ``margin_scale``); 0 (the paper) for none
    frozen_backbone_epochs : train only the head over these first epochs
        (:class:`BackboneWarmup`; needs ``compile_model(..., backbone_lr_scale=...)``)
    images_per_epoch : for the throughput logged each epoch (:class:`SessionBudget`);
        default ``steps_per_epoch`` batches of the dataset's batch size, where known
    session_seconds, session_elapsed : the session's limit and the seconds used before
        training; a run that cannot end an hour before the limit stops early
    initial_epoch : the epoch (0-based) this run starts at, the epochs before it trained
        elsewhere (an earlier stage of :func:`fit_progressive`): the schedule, snapshots and
        warm-ups count from the run's first epoch, and ``epochs`` is the last one
    snapshot_folder : where the snapshots go; default ``out_dir/snapshots``

    Returns
    -------
    DataFrame
        ``log.csv``: one row per finished epoch.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path, done_path = out_dir / "log.csv", out_dir / "done.json"
    final_weights = out_dir / "final.weights.h5"
    if done_path.is_file():
        done = json.loads(done_path.read_text())
        if done.get("epochs") == epochs and final_weights.is_file():
            if training_model.optimizer is not None and not training_model.optimizer.built:
                training_model.optimizer.build(training_model.trainable_variables)
            training_model.load_weights(final_weights)
            return pd.read_csv(log_path)
        raise FileExistsError(
            f"{out_dir} holds a finished run of {done.get('epochs')} epochs, not {epochs}; "
            "use a new folder"
        )
    if embedding_model is None:
        embedding_model = extract_embedding_model(training_model)
    mode = monitor_mode(monitor)
    if not 0 <= initial_epoch < epochs:
        raise ValueError(f"initial_epoch must be in 0..{epochs - 1}, got {initial_epoch}")
    budget = SessionBudget(
        images_per_epoch or _images_per_epoch(train_dataset, steps_per_epoch),
        epochs,
        session_seconds,
        session_elapsed,
    )
    callbacks = [
        AtomicBackup(out_dir / "backup", log_path),
        *(
            [keras.callbacks.LearningRateScheduler(learning_rate_schedule)]
            if learning_rate_schedule
            else []
        ),
        LearningRateLogger(),
        keras.callbacks.ModelCheckpoint(
            out_dir / "best.keras",
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            # a resumed run must beat the epochs already logged, not start comparing afresh
            initial_value_threshold=best_so_far(log_path, monitor, mode),
        ),
        SnapshotCheckpoint(
            embedding_model, Path(snapshot_folder or out_dir / "snapshots"), snapshots
        ),
        *([MarginWarmup(margin_warmup_epochs)] if margin_warmup_epochs else []),
        *([BackboneWarmup(frozen_backbone_epochs)] if frozen_backbone_epochs else []),
        budget,
        keras.callbacks.CSVLogger(log_path, append=True),
        *extra_callbacks,
    ]
    started = time.perf_counter()
    training_model.fit(
        train_dataset,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        callbacks=callbacks,
        shuffle=False,  # tf.data pipelines shuffle themselves
        verbose=verbose,
        initial_epoch=initial_epoch,  # a resumed run starts after its backup instead
    )
    training_model.save_weights(final_weights)
    seconds = round(time.perf_counter() - started, 1)
    done = {"epochs": epochs, "seconds": seconds}
    if budget.stopped:
        done["stopped"] = budget.stopped
    done_path.write_text(json.dumps(done) + "\n")
    shutil.rmtree(out_dir / "backup", ignore_errors=True)
    return pd.read_csv(log_path)


def progressive_stages(
    image_size: int, epochs: int, stages: Sequence | None = None
) -> list[tuple[int, int]]:
    """``(image size, epochs)`` of each stage of a progressively resized run: ``stages`` (e.g.
    ``[[128, 6], [176, 4]]``, smaller sizes first), then the epochs left at ``image_size``.
    None or empty: one stage, ``[(image_size, epochs)]``. Raises ValueError naming the stage
    that is not a whole size of at least 32 below ``image_size``, growing, with at least one
    epoch, or stages that leave no epoch at ``image_size``."""
    result = []
    for number, stage in enumerate(stages or [], start=1):
        whole = isinstance(stage, Sequence) and len(stage) == 2 and all(
            isinstance(value, int) and not isinstance(value, bool) for value in stage
        )  # fmt: skip
        if not whole:
            raise ValueError(
                f"progressive stage {number} must be [image size, epochs], got {stage!r}"
            )
        size, stage_epochs = stage
        smaller = result[-1][0] if result else 31
        if not smaller < size < image_size or stage_epochs < 1:
            raise ValueError(
                f"progressive stage {number} {list(stage)}: sizes must grow from at least 32 to "
                f"below image_size {image_size}, each stage with at least 1 epoch"
            )
        result.append((size, stage_epochs))
    left = epochs - sum(stage_epochs for _, stage_epochs in result)
    if left < 1:
        raise ValueError(
            f"progressive stages {[list(stage) for stage in result]} take {epochs - left} of "
            f"the {epochs} epochs: none is left at image_size {image_size}"
        )
    return [*result, (image_size, left)]


def fit_progressive(
    training_model: keras.Model,
    batches_at: Callable[[int, int], tuple],
    stages: Sequence[tuple[int, int]],
    out_dir: str | os.PathLike,
    session_elapsed: float = 0.0,
    **fit_arguments,
) -> pd.DataFrame:
    """:func:`fit` in stages of growing image size (progressive resizing: early epochs on
    small images are cheaper, the last at full size), one run per stage continuing the
    epochs of the one before: ``batches_at(image_size, stage) -> (dataset, steps_per_epoch)``
    gives each stage's batches (the model must take any size: ``models.build_model(...,
    any_input_size=True)``). The last stage trains in ``out_dir`` (one stage: exactly
    :func:`fit`), each earlier one in ``out_dir/stages/NN-SIZEpx``, each resuming on its own,
    every snapshot in ``out_dir/snapshots``; a stage stopped to stay inside the session ends
    the run. Returns the log of every epoch, with its ``image_size``."""
    out_dir = Path(out_dir)
    logs, first, started = [], 0, time.monotonic()
    for number, (size, stage_epochs) in enumerate(stages):
        last = number == len(stages) - 1
        folder = out_dir if last else out_dir / "stages" / f"{number:02d}-{size}px"
        dataset, steps = batches_at(size, number)
        log = fit(
            training_model,
            dataset,
            first + stage_epochs,
            folder,
            steps_per_epoch=steps,
            initial_epoch=first,
            session_elapsed=session_elapsed + time.monotonic() - started,
            snapshot_folder=out_dir / "snapshots",
            **fit_arguments,
        )
        logs.append(log.assign(image_size=size))
        first += stage_epochs
        done = json.loads((folder / "done.json").read_text())
        if done.get("stopped"):
            break
    return pd.concat(logs, ignore_index=True)
