import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from whaleutils.training import distribute, models, schedules, train


class Interrupt(Exception):
    pass


class InterruptAfter(keras.callbacks.Callback):
    """Stops a run as a lost connection or a time limit would, after a given epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupt(f"stopped after epoch {epoch}")


def tiny_data(n=16, size=32, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32")
    labels = np.arange(n) % classes
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def basic_model(classes=4, size=32):
    training_model, embedding_model = models.build_basic_cnn(
        classes, size, filters=(4, 4, 4, 4), dense_units=8
    )
    train.compile_model(training_model, learning_rate=1e-3, from_logits=False)
    return training_model, embedding_model


@pytest.mark.slow
def test_fit_writes_log_checkpoints_and_snapshots(tmp_path):
    training_model, embedding_model = basic_model()
    schedule = lambda epoch: schedules.lr_at_epoch(epoch, 3, 1e-3, warmup_epochs=1)  # noqa: E731
    log = train.fit(
        training_model,
        tiny_data(),
        3,
        tmp_path,
        embedding_model,
        learning_rate_schedule=schedule,
        snapshots=train.snapshot_epochs(3, every=2, last=1),
        verbose=0,
    )
    assert log["epoch"].tolist() == [0, 1, 2]
    assert {"loss", "accuracy", "top5_accuracy", "learning_rate"} <= set(log.columns)
    np.testing.assert_allclose(log["learning_rate"], [schedule(e) for e in range(3)], rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == [
        f"epoch-00{epoch}.{kind}"
        for epoch in (2, 3)
        for kind in ("keras", "recipe.json", "weights.h5")
    ]  # each snapshot with its portable pair (models.save_model)
    assert (tmp_path / "best.keras").is_file() and (tmp_path / "final.weights.h5").is_file()
    assert json.loads((tmp_path / "done.json").read_text())["epochs"] == 3
    assert not (tmp_path / "backup").exists()
    images = np.zeros((2, 32, 32, 3), "float32")
    for snapshot in (
        keras.models.load_model(tmp_path / "snapshots" / "epoch-003.keras"),
        models.load_model(tmp_path / "snapshots" / "epoch-003.keras"),  # rebuilt from its recipe
    ):
        np.testing.assert_allclose(
            snapshot.predict(images, verbose=0), embedding_model.predict(images, verbose=0),
            rtol=1e-5,
        )  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_run_resumes_without_repeating_epochs(tmp_path):
    training_model, embedding_model = basic_model()
    with pytest.raises(Interrupt):
        train.fit(
            training_model,
            tiny_data(),
            4,
            tmp_path,
            embedding_model,
            extra_callbacks=[InterruptAfter(1)],
            verbose=0,
        )
    assert pd.read_csv(tmp_path / "log.csv")["epoch"].tolist() == [0, 1]
    assert not (tmp_path / "done.json").exists()

    # A new process would rebuild the model from scratch: so do we.
    training_model, embedding_model = basic_model()
    epochs_run = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch)
    )
    log = train.fit(
        training_model,
        tiny_data(),
        4,
        tmp_path,
        embedding_model,
        extra_callbacks=[counter],
        verbose=0,
    )
    assert epochs_run == [2, 3]
    assert log["epoch"].tolist() == [0, 1, 2, 3]

    # Finished: a third call loads the final weights and trains nothing.
    training_model, embedding_model = basic_model()
    epochs_run.clear()
    train.fit(
        training_model,
        tiny_data(),
        4,
        tmp_path,
        embedding_model,
        extra_callbacks=[counter],
        verbose=0,
    )
    assert epochs_run == []
    with pytest.raises(FileExistsError, match="finished run of 4 epochs, not 6"):
        train.fit(training_model, tiny_data(), 6, tmp_path, embedding_model, verbose=0)


class StopWatch:
    """A clock that advances only when told."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_session_budget_logs_throughput_and_stops_a_run_that_would_overrun(capsys):
    """1,000 images an epoch, 100 s an epoch, 10 epochs, 600 s used before training, a
    1,800 s session with 300 s kept for what follows: after epoch 1 the run would end at
    600 + 100 + 9 x 100 = 1,600 s > 1,500 s, so it stops there; with a 3,600 s session it
    runs on."""
    clock = StopWatch()
    budget = train.SessionBudget(1000, 10, 1800, elapsed_before=600, reserve_seconds=300,
                                 clock=clock)  # fmt: skip
    budget.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    budget.model.stop_training = False  # as fit sets it
    budget.on_train_begin()
    budget.on_epoch_begin(0)
    clock.now += 100
    logs = {}
    budget.on_epoch_end(0, logs)
    assert logs == {"images_per_second": 10.0, "epoch_seconds": 100.0}
    assert budget.model.stop_training and "stopped after epoch 1 of 10" in budget.stopped
    assert "training ends at 0.44 h of a 0.5 h session" in capsys.readouterr().out
    roomy = train.SessionBudget(1000, 10, 3600, elapsed_before=600, reserve_seconds=300,
                                clock=clock)  # fmt: skip
    roomy.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    roomy.model.stop_training = False
    roomy.on_train_begin()
    for epoch in range(10):
        roomy.on_epoch_begin(epoch)
        clock.now += 100
        roomy.on_epoch_end(epoch, {})
    assert roomy.stopped is None and not roomy.model.stop_training


def test_a_run_stopped_by_its_session_keeps_what_it_trained(tmp_path):
    """A session already used up: the first epoch is the last, the model is saved, done.json
    says why, and a second call returns the same run."""
    training_model, embedding_model = basic_model()
    log = train.fit(
        training_model, tiny_data(), 5, tmp_path, embedding_model, verbose=0,
        session_seconds=3600.0, session_elapsed=3590.0,
    )  # fmt: skip
    assert log["epoch"].tolist() == [0]
    assert log["images_per_second"].iloc[0] > 0 and log["epoch_seconds"].iloc[0] > 0
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["epochs"] == 5 and "stopped after epoch 1 of 5" in done["stopped"]
    again = train.fit(training_model, tiny_data(), 5, tmp_path, embedding_model, verbose=0)
    assert again["epoch"].tolist() == [0]


def test_snapshot_epochs():
    assert train.snapshot_epochs(30, every=10, last=3) == [10, 20, 28, 29, 30]
    assert train.snapshot_epochs(3, every=None, last=0) == []


def test_compile_rejects_unknown_optimizer():
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        train.compile_model(basic_model()[0], optimizer="sgd")


def test_strategy_follows_the_devices_this_machine_has():
    """CPU alone: the default strategy, one replica; one GPU: the same on the GPU; several
    GPUs: mirrored over all of them (CI has no GPU, a developer's machine may)."""
    gpus = len(tf.config.list_logical_devices("GPU"))
    choice = distribute.get_strategy(allow_tpu=False, tpu_host=False)
    expected = ("gpu", gpus) if gpus > 1 else ("gpu" if gpus else "cpu", 1)
    assert (choice.kind, choice.replicas) == expected
    assert choice.global_batch_size(16) == 16 * expected[1]


@pytest.mark.slow
def test_two_replica_mirrored_fit_on_cpu(tmp_path):
    """The multi-replica path: the CPU split into two logical devices under MirroredStrategy.

    Run in a fresh process: logical devices must be configured before TensorFlow starts.
    """
    script = textwrap.dedent(
        f"""
        import numpy as np, tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from whaleutils.training import distribute, models, train
        from whaleutils.images import pipeline
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        choice = distribute.StrategyChoice("tensorflow", "cpu", strategy.num_replicas_in_sync, "CPU", strategy=strategy)
        assert choice.replicas == 2 and choice.global_batch_size(4) == 8
        with strategy.scope():
            training_model, embedding_model = models.build_model("efficientnet-b0", 5, 32, embedding_dim=8)
            train.compile_model(training_model, 1e-3)
        rng = np.random.default_rng(0)
        images = rng.uniform(0, 255, (16, 32, 32, 3)).astype("float32")
        labels = np.arange(16) % 5
        dataset = tf.data.Dataset.from_tensor_slices(({{"image": images, "label": labels}}, labels)).batch(8)
        log = train.fit(training_model, dataset, 2, r"{tmp_path}", embedding_model, verbose=0)
        assert log["epoch"].tolist() == [0, 1] and np.isfinite(log["loss"]).all()
        print("replicas", strategy.num_replicas_in_sync)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "replicas 2" in result.stdout


def test_best_so_far_reads_the_logged_epochs(tmp_path):
    log = tmp_path / "log.csv"
    assert train.best_so_far(log, "loss", "min") is None  # no log yet
    log.write_text("epoch,loss,accuracy,val_loss\n0,2.5,0.1,NA\n1,1.5,0.3,NA\n2,1.75,0.2,NA\n")
    assert train.best_so_far(log, "loss", "min") == 1.5
    assert train.best_so_far(log, "accuracy", "max") == 0.3
    assert train.best_so_far(log, "val_loss", "min") is None  # never measured
    assert train.best_so_far(log, "top5_accuracy", "max") is None  # not logged
    assert (train.monitor_mode("val_loss"), train.monitor_mode("val_top5_accuracy")) == (
        "min",
        "max",
    )


def test_margin_warmup_ramps_the_margin_and_logs_it(tmp_path):
    from whaleutils.training import layers

    image_in = keras.Input(shape=(8,), name="image")
    label_in = keras.Input(shape=(), dtype="int32", name="label")
    embedding = keras.layers.Dense(4)(image_in)
    head = layers.ArcMarginProduct(3, s=8.0, m=0.5)
    training_model = keras.Model(
        {"image": image_in, "label": label_in}, head([embedding, label_in])
    )
    train.compile_model(training_model, learning_rate=1e-2)
    rng = np.random.default_rng(0)
    images, labels = rng.normal(size=(12, 8)).astype("float32"), np.arange(12) % 3
    dataset = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "label": labels}, labels)
    ).batch(4)

    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(head.margin_scale)))

    log = train.fit(
        training_model, dataset, 4, tmp_path, keras.Model(image_in, embedding),
        margin_warmup_epochs=2, extra_callbacks=[Record()], verbose=0,
    )  # fmt: skip
    assert seen == [0.0, 0.5, 1.0, 1.0]  # what each epoch trained with
    assert log["margin_scale"].tolist() == [0.0, 0.5, 1.0, 1.0]
    assert [train.MarginWarmup(0).scale_at(e) for e in range(2)] == [1.0, 1.0]
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        train.MarginWarmup(-1)


def _lite_model(**kwargs):
    return models.build_model("efficientnet-lite0", 3, 32, embedding_dim=8, **kwargs)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (n, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 3, n).astype("int32")
    return {"image": images, "label": labels}, labels


def _snapshot(model):
    return {v.path: keras.ops.convert_to_numpy(v).copy() for v in model.trainable_variables}


@pytest.mark.slow
def test_fine_tuning_adamw_moves_the_backbone_at_its_fraction_of_the_learning_rate():
    """Adam's first step moves every weight by the learning rate times sign(gradient)
    (bias-corrected m / sqrt(v) = g / |g|): by 1e-3 in the head, 0.25e-3 in the backbone."""
    training_model, _ = _lite_model()
    train.compile_model(training_model, 1e-3, backbone_lr_scale=0.25)
    assert isinstance(training_model.optimizer, train.FineTuningAdamW)
    before = _snapshot(training_model)
    training_model.train_on_batch(*_batch())
    after = _snapshot(training_model)
    moved = {path: np.abs(after[path] - before[path]).max() for path in before}
    head = {p: m for p, m in moved.items() if p.split("/")[0] in train.HEAD_LAYERS}
    backbone = {p: m for p, m in moved.items() if p not in head}
    assert set(head) == {"embedding/kernel", "embedding/bias", "embedding_bn/gamma",
                         "embedding_bn/beta", "arc_margin/W"}  # fmt: skip
    assert max(head.values()) == pytest.approx(1e-3, rel=1e-3)
    assert max(backbone.values()) == pytest.approx(0.25e-3, rel=1e-3)


@pytest.mark.slow
def test_backbone_warmup_trains_the_head_alone_first(tmp_path):
    training_model, embedding_model = _lite_model(freeze_backbone_batchnorm=True)
    train.compile_model(training_model, 1e-3, backbone_lr_scale=0.5)
    dataset = tf.data.Dataset.from_tensors(_batch()).repeat()
    stem = training_model.get_layer("efficientnet_lite0").get_layer("stem_conv")
    stem_bn = training_model.get_layer("efficientnet_lite0").get_layer("stem_bn")
    kernel_start = stem.kernel.numpy().copy()
    statistics = stem_bn.moving_variance.numpy().copy()
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(np.abs(stem.kernel.numpy() - kernel_start).max())

    log = train.fit(
        training_model, dataset, 2, tmp_path / "run", embedding_model, steps_per_epoch=2,
        frozen_backbone_epochs=1, extra_callbacks=[Watch()], verbose=0,
    )  # fmt: skip
    assert seen[0] == 0.0 and seen[1] > 0.0  # frozen for one epoch, then learning
    assert log["backbone_lr_scale"].tolist() == [0.0, 0.5]
    np.testing.assert_array_equal(stem_bn.moving_variance.numpy(), statistics)
    assert not stem_bn.trainable
    reloaded = keras.models.load_model(tmp_path / "run" / "best.keras")
    assert isinstance(reloaded.optimizer, train.FineTuningAdamW)
    assert reloaded.optimizer.backbone_lr_scale == 0.5


@pytest.mark.slow
def test_float16_with_loss_scaling_and_xla_fine_tune_as_float32_does(tmp_path):
    """The GPU path: mixed_float16 (Keras wraps the optimizer in a LossScaleOptimizer), the
    backbone frozen for the first epoch through the wrapper, the step compiled with XLA. From
    ImageNet weights, as the profiles fine-tune: from random weights with frozen BatchNorm
    statistics the backbone's float16 gradients overflow at any loss scale."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        training_model, embedding_model = _lite_model(
            weights="imagenet", freeze_backbone_batchnorm=True
        )
        train.compile_model(training_model, 1e-3, backbone_lr_scale=0.5, jit_compile=True)
        stem = training_model.get_layer("efficientnet_lite0").get_layer("stem_conv")
        kernel_start = stem.kernel.numpy().copy()
        seen = []

        class Watch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                seen.append(np.abs(stem.kernel.numpy() - kernel_start).max())

        log = train.fit(
            training_model, tf.data.Dataset.from_tensors(_batch()).repeat(), 2, tmp_path / "run",
            embedding_model, steps_per_epoch=8, frozen_backbone_epochs=1,
            extra_callbacks=[Watch()], verbose=0,
        )  # fmt: skip
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(training_model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(training_model.optimizer.inner_optimizer, train.FineTuningAdamW)
    assert training_model.jit_compile is True
    assert stem.compute_dtype == "float16" and stem.kernel.dtype == "float32"
    # dynamic loss scaling skips the steps whose float16 gradients overflow while it lowers the
    # scale from 2**15; the rest move the backbone
    assert seen[0] == 0.0 and seen[1] > 0.0
    assert log["backbone_lr_scale"].tolist() == [0.0, 0.5]
    assert np.isfinite(log["loss"]).all()
    assert embedding_model.output.dtype == "float32"


def test_backbone_warmup_needs_the_fine_tuning_optimizer(tmp_path):
    training_model, embedding_model = _lite_model()
    train.compile_model(training_model, 1e-3)
    with pytest.raises(ValueError, match="needs a model compiled with FineTuningAdamW"):
        train.fit(
            training_model, tf.data.Dataset.from_tensors(_batch()).repeat(), 1, tmp_path / "r",
            embedding_model, steps_per_epoch=1, frozen_backbone_epochs=1, verbose=0,
        )  # fmt: skip


@pytest.mark.slow
def test_a_run_resumes_from_a_damaged_backup(tmp_path):
    """A kill while the backup is written cannot truncate it (each epoch's weights and the
    metadata naming them are written aside and renamed); a backup damaged anyway resumes from
    the previous epoch, with a warning and its log cut back; one that does not load at all (an
    older version's, truncated by a kill) is set aside and the run starts over."""
    training_model, embedding_model = basic_model()
    with pytest.raises(Interrupt):
        train.fit(training_model, tiny_data(), 4, tmp_path, embedding_model,
                  extra_callbacks=[InterruptAfter(1)], verbose=0)  # fmt: skip
    backup = tmp_path / "backup"
    assert sorted(p.name for p in backup.iterdir()) == [
        "epoch-0001.weights.h5", "epoch-0002.weights.h5", "training_metadata.json"
    ]  # fmt: skip
    newest = backup / "epoch-0002.weights.h5"
    newest.write_bytes(newest.read_bytes()[:96])  # damaged
    epochs_run = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epochs_run.append(epoch)
    )
    training_model, embedding_model = basic_model()
    with pytest.warns(UserWarning, match="resuming from epoch 1"):
        log = train.fit(training_model, tiny_data(), 4, tmp_path, embedding_model,
                        extra_callbacks=[counter], verbose=0)  # fmt: skip
    assert epochs_run == [1, 2, 3] and log["epoch"].tolist() == [0, 1, 2, 3]

    # Keras' own layout, truncated by a kill: set aside, started over
    other = tmp_path / "other"
    (other / "backup").mkdir(parents=True)
    (other / "backup" / "latest.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)
    (other / "backup" / "training_metadata.json").write_text('{"epoch": 2, "batch": 0}')
    epochs_run.clear()
    training_model, embedding_model = basic_model()
    with pytest.warns(UserWarning, match="set aside as backup.damaged-1, training starts over"):
        train.fit(training_model, tiny_data(), 2, other, embedding_model,
                  extra_callbacks=[counter], verbose=0)  # fmt: skip
    assert epochs_run == [0, 1]
    assert (other / "backup.damaged-1" / "latest.weights.h5").is_file()


@pytest.mark.slow
def test_a_run_killed_while_its_backup_is_written_resumes(tmp_path):
    """The reproduction: a kill while the second epoch's backup is being written (the file
    left truncated at 96 bytes) does not stop the rerun, which trains on from the first."""
    training_model, embedding_model = basic_model()
    real = training_model.save_weights
    calls = {"n": 0}

    def killed_midway(filepath, *args, **kwargs):
        real(filepath, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's backup
            Path(filepath).write_bytes(Path(filepath).read_bytes()[:96])
            raise Interrupt("killed while writing the backup")

    training_model.save_weights = killed_midway
    with pytest.raises(Interrupt):
        train.fit(training_model, tiny_data(), 3, tmp_path, embedding_model, verbose=0)
    training_model, embedding_model = basic_model()
    log = train.fit(training_model, tiny_data(), 3, tmp_path, embedding_model, verbose=0)
    assert log["epoch"].tolist() == [0, 1, 2]
    assert json.loads((tmp_path / "done.json").read_text())["epochs"] == 3


def test_progressive_stages_fill_the_run_and_refuse_what_does_not_grow():
    assert train.progressive_stages(224, 18) == [(224, 18)]
    assert train.progressive_stages(224, 18, [[128, 6], [176, 4]]) == [(128, 6), (176, 4), (224, 8)]
    for stages, message in [
        ([[176, 4], [128, 6]], r"stage 2 \[128, 6\]: sizes must grow"),
        ([[224, 4]], "below image_size 224"),
        ([[16, 4]], "from at least 32"),
        ([[128, 0]], "at least 1 epoch"),
        ([[128, 18]], r"take 18 of the 18 epochs: none is left at image_size 224"),
        ([[128.5, 3]], r"stage 1 must be \[image size, epochs\]"),
        ([128], r"stage 1 must be \[image size, epochs\], got 128"),
    ]:
        with pytest.raises(ValueError, match=message):
            train.progressive_stages(224, 18, stages)


def _arcface_batches(size, n=8, classes=3):
    rng = np.random.default_rng(size)
    images = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    labels = (np.arange(n) % classes).astype("int32")
    return tf.data.Dataset.from_tensor_slices(({"image": images, "label": labels}, labels)).batch(4)


@pytest.mark.slow
def test_a_progressive_run_trains_small_then_full_size_and_resumes_in_its_stage(tmp_path):
    """Stages continue one run: the epochs, the schedule and the snapshots count across them;
    a run killed in the last stage resumes there without training the first stage again."""

    def build():
        training_model, embedding_model = models.build_model(
            "efficientnet-lite0", 3, 64, embedding_dim=8, any_input_size=True
        )
        train.compile_model(training_model, 1e-3)
        return training_model, embedding_model

    asked = []

    def batches_at(size, stage):
        asked.append((size, stage))
        return _arcface_batches(size), 2

    stages = train.progressive_stages(64, 4, [[32, 2]])
    schedule = lambda epoch: 1e-3 / (epoch + 1)  # noqa: E731
    training_model, embedding_model = build()
    with pytest.raises(Interrupt):
        train.fit_progressive(
            training_model, batches_at, stages, tmp_path, embedding_model=embedding_model,
            learning_rate_schedule=schedule, snapshots=[2, 4], verbose=0,
            extra_callbacks=[InterruptAfter(2)],
        )  # fmt: skip
    assert asked == [(32, 0), (64, 1)]
    assert (tmp_path / "stages" / "00-32px" / "done.json").is_file()
    assert pd.read_csv(tmp_path / "log.csv")["epoch"].tolist() == [2]

    training_model, embedding_model = build()  # a new process
    epochs_run = []
    counter = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
    asked.clear()
    log = train.fit_progressive(
        training_model, batches_at, stages, tmp_path, embedding_model=embedding_model,
        learning_rate_schedule=schedule, snapshots=[2, 4], verbose=0, extra_callbacks=[counter],
    )  # fmt: skip
    assert epochs_run == [3]  # stage 1 loaded from its final weights, stage 2 from its backup
    assert log["epoch"].tolist() == [0, 1, 2, 3]
    assert log["image_size"].tolist() == [32, 32, 64, 64]
    np.testing.assert_allclose(log["learning_rate"], [1e-3 / (e + 1) for e in range(4)], rtol=1e-5)
    snapshots = sorted(path.name for path in (tmp_path / "snapshots").glob("*.keras"))
    assert snapshots == ["epoch-002.keras", "epoch-004.keras"]
    assert embedding_model.input_shape == (None, 64, 64, 3)
    # the training model takes either size; the embedding model shares its weights
    images = _arcface_batches(32).take(1).get_single_element()[0]
    assert training_model.predict(images, verbose=0).shape == (4, 3)
