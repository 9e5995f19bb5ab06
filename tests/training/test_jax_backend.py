"""Keras on JAX, as on Kaggle's TPUs, with the host's CPU standing in for the TPU's chips.

Each JAX run is a fresh process: the backend and the number of devices are fixed when Keras and
JAX start (``XLA_FLAGS=--xla_force_host_platform_device_count=2`` makes two CPU devices).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from jax_data_parallel import CLASSES, SIZE, build

from whaleutils.analysis import gradcam
from whaleutils.contracts import outputs
from whaleutils.retrieval import trained_run
from whaleutils.suite import runner
from whaleutils.training import models, train

HERE = Path(__file__).parent


def jax_environment(devices: int = 2) -> dict:
    return {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
    }


def tinted_photos(n=32, seed=0):
    """Photos whose class shows in their colour, so two epochs of training can learn it."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    tints = np.array([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]], "float32")
    images = tints[labels][:, None, None, :] + rng.normal(0, 30, (n, SIZE, SIZE, 3))
    return np.clip(images, 0, 255).astype("float32"), labels.astype("int32")


@pytest.mark.slow
def test_data_parallel_training_on_jax_matches_tensorflow(tmp_path):
    """The same model from the same weights on the same batches: Keras on JAX over two devices
    and Keras on TensorFlow on one give the same losses, and the model JAX saved loads under
    TensorFlow with the same embeddings and Grad-CAM heatmaps."""
    images, labels = tinted_photos()
    np.savez(tmp_path / "data.npz", images=images, labels=labels)
    from whaleutils.training import distribute

    choice = distribute.get_strategy(allow_tpu=False, tpu_host=False)
    keras.utils.set_random_seed(0)
    training_model, embedding_model = build(choice)
    training_model.save_weights(tmp_path / "init.weights.h5")

    result = subprocess.run(
        [sys.executable, str(HERE / "jax_data_parallel.py"), str(tmp_path)],
        env=jax_environment(2),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["describe"] == "Keras on jax: 2 cpu device(s) (cpu), data-parallel (DataParallel)"
    # every traced training batch of 8 is split into two halves, one per device
    assert report["batch_layouts"] and all(
        layout == {"devices": 2, "shard_shape": [4, SIZE, SIZE, 3]}
        for layout in report["batch_layouts"]
    )
    assert report["variable_devices"] == 2  # the weights are replicated on both
    assert "runs on TensorFlow only" in report["qubvel_error"]
    jax_losses = report["losses"]
    assert jax_losses[1] < jax_losses[0]

    batches = tf.data.Dataset.from_tensor_slices(
        ({"image": images, "label": labels}, labels)
    ).batch(8)
    log = train.fit(training_model, batches, 2, tmp_path / "tensorflow", embedding_model, verbose=0)
    # The first epoch (four batches, three updates) agrees to float noise; ArcFace's margin
    # switches branch at cos(pi - m), so by the end of the second the two runs have drifted
    # apart by up to a few percent (seen: 0.1-2.5%): there both have only to learn.
    np.testing.assert_allclose(jax_losses[0], log["loss"][0], rtol=1e-3)
    assert log["loss"][1] < log["loss"][0]

    saved = np.load(tmp_path / "outputs.npz")
    reloaded = models.load_model(tmp_path / "embedding.keras")
    from whaleutils.retrieval import embed

    photos = tf.data.Dataset.from_tensor_slices(images[:7]).batch(4)
    assert saved["embeddings"].shape == (7, 8)
    assert np.abs(embed.compute_embeddings(reloaded, photos) - saved["embeddings"]).max() < 1e-3
    heatmaps = gradcam.heatmaps(reloaded, images[:3], saved["embeddings"][3:6])
    assert np.abs(heatmaps - saved["heatmaps"]).max() < 1e-3


@pytest.mark.slow
def test_smoke_notebook_04_trains_on_jax_over_two_devices(tmp_path, monkeypatch):
    """``run --profile smoke --only 04_effnet_arcface -p backend jax``: the notebook trains
    data-parallel on two CPU devices, and its saved model embeds the same under TensorFlow."""
    for key, value in jax_environment(2).items():
        monkeypatch.setenv(key, value)  # the notebook's kernel inherits them
    summary = runner.run(
        "smoke", None, str(tmp_path), ["04_effnet_arcface"], overrides={"backend": "jax"}
    )
    assert summary["notebooks"][-1]["status"] == "ok"
    folder = tmp_path / "smoke" / "04_effnet_arcface"
    executed = (folder / "04_effnet_arcface.ipynb").read_text()
    assert "Keras backend: jax" in executed
    assert "Keras on jax: 2 cpu device(s) (cpu), data-parallel (DataParallel)" in executed
    scores = outputs.read_scores(folder)
    assert 0 <= scores["valid"]["map5"] <= 1

    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    trained = trained_run.load_trained(tmp_path / "smoke", "04_effnet_arcface")
    from whaleutils.retrieval import embed, splits

    common = runner.load_profile("smoke")["_common"]
    split = splits.load_split(
        summary["data_dir"], common["fold"], common["n_folds"], common["seed"]
    )
    rows = np.arange(6)
    batches = split.batches("valid", trained.image_size, 4, rows=rows)
    again = embed.compute_embeddings(trained.embedding_model, batches, tta=trained.tta)
    assert np.abs(again - trained.embeddings["valid"][rows]).max() < 1e-3


@pytest.mark.slow
def test_a_tpu_machine_whose_backend_sees_no_tpu_stops_notebook_04(tmp_path, monkeypatch):
    """Kaggle's TPU image marks itself with ISTPUVM=1; here JAX sees only the CPU, so notebook
    04 stops at its hardware cell with what to do instead of training on the host CPU."""
    monkeypatch.setenv("ISTPUVM", "1")
    with pytest.raises(runner.NotebookFailed, match="Keras on jax sees no TPU") as failed:
        runner.run("smoke", None, str(tmp_path), ["04_effnet_arcface"])
    assert "RuntimeError" in str(failed.value)
    assert not (tmp_path / "smoke" / "04_effnet_arcface" / "run").exists()  # nothing trained
