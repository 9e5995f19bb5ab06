"""Training throughput: our tf.data pipeline against model.fit on in-memory tensors.

EfficientNet-B0 + ArcFace at 128 px, batch 16, on a small synthetic set. The same model is
fitted twice for the same number of steps: once fed by ``images.pipeline`` (JPEG decoding,
box crop, augmentation, from files) and once from a NumPy array already in memory. If the
pipeline is not the bottleneck, the two rates are close (ratio near 1).

Usage: python benchmarks/train_speed.py [--backbone efficientnet-b0] [--image-size 128] [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from whaleutils.datasets import data, synth
from whaleutils.images import pipeline
from whaleutils.training import models, train


class StepTimer(keras.callbacks.Callback):
    """Wall time of the batches after the first ``skip`` (graph building and warm-up)."""

    def __init__(self, skip: int):
        super().__init__()
        self.skip, self.count, self.started = skip, 0, None

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count == self.skip:
            self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def images_per_second(model, dataset, steps: int, batch_size: int, skip: int = 5) -> float:
    timer = StepTimer(skip)
    model.fit(dataset, epochs=1, steps_per_epoch=steps + skip, callbacks=[timer], verbose=0)
    return steps * batch_size / timer.seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="efficientnet-b0")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder) / "synth"
        synth.generate(data_dir, synth.SynthConfig(individuals=60), workers=2)
        frame = data.read_train(data_dir)
        encoding = data.LabelEncoding.fit(frame)
        targets = encoding.encode_individuals(frame["individual_id"])
        records = pipeline.file_records(frame, data_dir / "train_images", targets)
        from_files = pipeline.make_dataset(
            records, args.image_size, args.batch_size, training=True, repeat=True
        )
        in_memory = np.concatenate(
            [b.numpy() for b in pipeline.make_dataset(records, args.image_size, 64)]
        )

        def fresh_model():
            model, _ = models.build_model(args.backbone, encoding.n_individuals, args.image_size)
            return train.compile_model(model, 1e-4)

        pipeline_rate = images_per_second(fresh_model(), from_files, args.steps, args.batch_size)
        model = fresh_model()
        started = time.perf_counter()
        model.fit(
            {"image": in_memory, "label": targets},
            targets,
            batch_size=args.batch_size,
            epochs=1,
            steps_per_epoch=5,
            verbose=0,
        )  # warm-up: graph building
        warm = time.perf_counter() - started
        n = args.steps * args.batch_size
        repeats = int(np.ceil(n / len(in_memory)))
        images = np.concatenate([in_memory] * repeats)[:n]
        labels = np.concatenate([targets] * repeats)[:n]
        started = time.perf_counter()
        model.fit({"image": images, "label": labels}, labels, batch_size=args.batch_size, verbose=0)
        memory_rate = n / (time.perf_counter() - started)
    print(f"{args.backbone} at {args.image_size} px, batch {args.batch_size}, {args.steps} steps")
    print(f"pipeline from JPEG files (crop, augment): {pipeline_rate:6.1f} images/s")
    print(f"model.fit on in-memory tensors:           {memory_rate:6.1f} images/s")
    print(f"ratio pipeline / in-memory: {pipeline_rate / memory_rate:.2f} (warm-up {warm:.0f} s)")


if __name__ == "__main__":
    main()
