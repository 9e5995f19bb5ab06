"""Training step time of Keras on TensorFlow against Keras on JAX, same model, same batch.

The local profile's model (EfficientNet-Lite0 from ImageNet weights, ArcFace head, the
fine-tuning optimizer) is trained on one fixed in-memory batch under each backend, each in its
own process (a process has one Keras backend), alternating, best of ``--repeats``:

- ``tensorflow``: one device (what the GPU / CPU path runs);
- ``jax``: one device;
- ``jax x2``: ``DataParallel`` over two host devices made with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (the TPU path's code; on a 2-core CPU
  the two "devices" share the same cores, so this measures the sharding's overhead, not a gain).

Usage: python benchmarks/backend_step_time.py [--image-size 160] [--batch-size 32] [--steps 8]
                                              [--repeats 2] [--layers]
Prints ms per step of each and, last, the ratio jax / tensorflow. ``--layers`` instead trains
single convolution layers (depthwise 3x3, 1x1, 3x3 on 32 x 80 x 80 x 96) on each backend, to
show where the difference comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def worker(image_size: int, batch_size: int, steps: int) -> dict:
    """In a process whose backend is set: build, warm up, then time ``steps`` training steps."""
    import keras
    import numpy as np
    import tensorflow as tf

    from whaleutils.training import distribute, models, train

    choice = distribute.get_strategy(allow_tpu=False, tpu_host=False)
    keras.utils.set_random_seed(0)
    with choice.scope():
        training_model, _ = models.build_model(
            "efficientnet-lite0", 100, image_size, "imagenet", s=30.0, m=0.3,
            freeze_backbone_batchnorm=True,
        )  # fmt: skip
        train.compile_model(training_model, 1e-4, backbone_lr_scale=0.2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 100, batch_size).astype("int32")
    batch = tf.data.Dataset.from_tensors(({"image": images, "label": labels}, labels)).repeat()
    started = time.perf_counter()
    training_model.fit(batch, epochs=1, steps_per_epoch=2, verbose=0)  # graph building
    warm_up = time.perf_counter() - started
    started = time.perf_counter()
    training_model.fit(batch, epochs=1, steps_per_epoch=steps, verbose=0)
    return {
        "describe": choice.describe(),
        "ms_per_step": 1000 * (time.perf_counter() - started) / steps,
        "warm_up_s": warm_up,
    }


LAYERS = {  # name -> layer, trained alone on one 32 x 80 x 80 x 96 batch
    "depthwise 3x3": lambda keras: keras.layers.DepthwiseConv2D(3, padding="same"),
    "conv 1x1": lambda keras: keras.layers.Conv2D(96, 1),
    "conv 3x3": lambda keras: keras.layers.Conv2D(96, 3, padding="same"),
}


def layer_worker(repeats: int = 3) -> dict:
    """ms per training step of each layer of ``LAYERS`` alone, after one warm-up step."""
    import keras
    import numpy as np

    images = np.random.default_rng(0).normal(size=(32, 80, 80, 96)).astype("float32")
    result = {}
    for name, make in LAYERS.items():
        inputs = keras.Input((80, 80, 96))
        model = keras.Model(inputs, make(keras)(inputs))
        model.compile(optimizer="sgd", loss="mse")
        targets = np.zeros((32, *model.output.shape[1:]), "float32")
        model.fit(images, targets, batch_size=32, epochs=1, verbose=0)
        started = time.perf_counter()
        model.fit(images, targets, batch_size=32, epochs=repeats, verbose=0)
        result[name] = 1000 * (time.perf_counter() - started) / repeats
    return result


RUNS = {  # label -> environment
    "tensorflow": {"KERAS_BACKEND": "tensorflow"},
    "jax": {"KERAS_BACKEND": "jax"},
    "jax x2": {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--layers", action="store_true", help="time single layers instead")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.layers:
            print(json.dumps(layer_worker()))
        else:
            print(json.dumps(worker(args.image_size, args.batch_size, args.steps)))
        return
    if args.layers:
        for backend in ("tensorflow", "jax"):
            result = subprocess.run(
                [sys.executable, __file__, "--worker", "--layers"],
                env={**os.environ, "KERAS_BACKEND": backend},
                capture_output=True,
                text=True,
                check=True,
            )
            for name, ms in json.loads(result.stdout.strip().splitlines()[-1]).items():
                print(f"{backend:<11} {name:<14} {ms:6.0f} ms/step")
        return
    command = [sys.executable, __file__, "--worker"]
    command += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    command += ["--steps", str(args.steps)]
    best: dict[str, dict] = {}
    for _ in range(args.repeats):
        for label, environment in RUNS.items():
            result = subprocess.run(
                command,
                env={**os.environ, **environment},
                capture_output=True,
                text=True,
                check=True,
            )
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{label}: {measured['ms_per_step']:.0f} ms/step", file=sys.stderr, flush=True)
            if label not in best or measured["ms_per_step"] < best[label]["ms_per_step"]:
                best[label] = measured
    print(
        f"EfficientNet-Lite0 + ArcFace at {args.image_size} px, batch {args.batch_size}, "
        f"{args.steps} steps, best of {args.repeats}, {os.cpu_count()} CPU cores"
    )
    for label, measured in best.items():
        print(
            f"{label:<11} {measured['ms_per_step']:8.0f} ms/step  (graph building and first "
            f"steps {measured['warm_up_s']:.0f} s)  {measured['describe']}"
        )
    ratio = best["jax"]["ms_per_step"] / best["tensorflow"]["ms_per_step"]
    print(f"step time ratio jax / tensorflow: {ratio:.2f}")


if __name__ == "__main__":
    main()
