"""Train the ArcFace model with Keras on JAX, data-parallel over the host's CPU devices.

Run by ``test_jax_backend.py`` in a fresh process (the backend and the device count are fixed
when Keras and JAX start)::

    KERAS_BACKEND=jax XLA_FLAGS=--xla_force_host_platform_device_count=2 \\
        python tests/training/jax_data_parallel.py OUT_DIR

OUT_DIR holds ``init.weights.h5`` (the starting weights, written by the test) and ``data.npz``;
this writes ``run/`` (train.fit's folder), ``embedding.keras``, ``outputs.npz`` (embeddings of
the photos in batches of 4, the last one odd, and Grad-CAM heatmaps) and ``report.json``.
"""

import json
import sys
from pathlib import Path

import jax
import keras
import numpy as np

from whaleutils.analysis import gradcam
from whaleutils.retrieval import embed
from whaleutils.training import distribute, models, train

CLASSES, SIZE = 4, 32


def build(choice):
    """Lite0 with the ArcFace head, and nothing random in training: the head's dropout and the
    backbone's stochastic depth are off, so both backends compute the same thing. Plain SGD:
    Adam's first steps move every weight by about the learning rate whatever its gradient's
    size, so float noise in a near-zero gradient becomes a full step of either sign."""
    with choice.scope():
        training_model, embedding_model = models.build_model(
            "efficientnet-lite0",
            CLASSES,
            SIZE,
            "imagenet",
            embedding_dim=8,
            dropout=0.0,
            s=10.0,
            m=0.3,
            freeze_backbone_batchnorm=True,
        )
        training_model.compile(
            optimizer=keras.optimizers.SGD(0.001),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    backbone = [layer for layer in training_model.layers if isinstance(layer, keras.Model)]
    for layer in backbone[0].layers:
        if isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0
    return training_model, embedding_model


class ShardingProbe(keras.layers.Layer):
    """Identity that records how each traced batch is laid out over the devices."""

    seen = []

    def call(self, images):
        jax.debug.inspect_array_sharding(images, callback=self.seen.append)
        return images


def main(out: Path) -> None:
    import tensorflow as tf

    assert keras.backend.backend() == "jax", keras.backend.backend()
    choice = distribute.get_strategy(tpu_host=False)
    training_model, embedding_model = build(choice)
    training_model.load_weights(out / "init.weights.h5")

    image = keras.Input((SIZE, SIZE, 3), name="image")
    label = keras.Input((), dtype="int32", name="label")
    logits = training_model({"image": ShardingProbe()(image), "label": label})
    probed = keras.Model({"image": image, "label": label}, logits)
    probed.compile(optimizer=training_model.optimizer, loss=training_model.loss)

    data = np.load(out / "data.npz")
    batches = tf.data.Dataset.from_tensor_slices(
        ({"image": data["images"], "label": data["labels"]}, data["labels"])
    ).batch(8)
    log = train.fit(probed, batches, 2, out / "run", embedding_model, verbose=0)
    embedding_model.save(out / "embedding.keras")

    photos = tf.data.Dataset.from_tensor_slices(data["images"][:7]).batch(4)  # 4 + 3
    embeddings = embed.compute_embeddings(embedding_model, photos)
    keras.distribution.set_distribution(None)  # Grad-CAM runs eagerly, undistributed
    heatmaps = gradcam.heatmaps(embedding_model, data["images"][:3], embeddings[3:6])
    np.savez(out / "outputs.npz", embeddings=embeddings, heatmaps=heatmaps)
    layouts = [
        {
            "devices": len(sharding.device_set),
            "shard_shape": list(sharding.shard_shape((8, SIZE, SIZE, 3))),
        }
        for sharding in ShardingProbe.seen
    ]
    report = {
        "describe": choice.describe(),
        "replicas": choice.replicas,
        "losses": log["loss"].tolist(),
        "batch_layouts": layouts,
        "variable_devices": len(training_model.trainable_variables[0].value.sharding.device_set),
    }
    try:
        models.build_backbone("efficientnet-b0", SIZE)
    except ValueError as error:
        report["qubvel_error"] = str(error)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
