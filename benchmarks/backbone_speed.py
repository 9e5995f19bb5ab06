"""Training images per second of each backbone and image size, side by side, in one run.

What the catalogue profile's hour buys: EfficientNet-Lite0/1/2 + ArcFace (the catalogue recipe:
backbone BatchNorm statistics kept, the backbone at a fifth of the head's rate) fitted on
in-memory images (the input pipeline is not the bottleneck: ``train_speed.py``), batch 32, each
combination timed ``--repeats`` times after a warm-up, the best kept (the machine's speed varies).
Prints images/s, seconds per epoch of ``--photos`` photos and the epochs that fit in
``--minutes`` of training, with each combination's ratio to Lite0 at 224 px.

Usage: python benchmarks/backbone_speed.py [--sizes 160 192 224] [--backbones efficientnet-lite0
efficientnet-lite1 efficientnet-lite2] [--steps 8] [--repeats 3] [--photos 3352] [--minutes 24]
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from whaleutils.training import models, train


def images_per_second(backbone: str, size: int, steps: int, repeats: int, batch: int) -> float:
    training_model, _ = models.build_model(
        backbone, 447, size, weights="imagenet", m=0.3, freeze_backbone_batchnorm=True
    )
    train.compile_model(training_model, 1e-3, backbone_lr_scale=0.2)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch * steps, size, size, 3)).astype("float32")
    labels = rng.integers(0, 447, batch * steps).astype("int32")
    inputs = {"image": images, "label": labels}
    training_model.fit(inputs, labels, batch_size=batch, epochs=1, verbose=0)  # warm-up, trace
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        training_model.fit(inputs, labels, batch_size=batch, epochs=1, verbose=0)
        best = max(best, len(images) / (time.perf_counter() - started))
    keras.backend.clear_session()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 192, 224])
    parser.add_argument(
        "--backbones",
        nargs="+",
        default=["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"],
    )
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--photos", type=int, default=3352)
    parser.add_argument("--minutes", type=float, default=24.0)
    args = parser.parse_args()
    rates = {
        (backbone, size): images_per_second(
            backbone, size, args.steps, args.repeats, args.batch_size
        )
        for backbone in args.backbones
        for size in args.sizes
    }
    reference = rates.get(("efficientnet-lite0", 224))
    print(f"| backbone | px | images/s (best of {args.repeats}) | s per epoch of {args.photos} "
          f"| epochs in {args.minutes:g} min | vs Lite0 224 px |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    for (backbone, size), rate in rates.items():
        epoch = args.photos / rate
        ratio = f"{rate / reference:.2f}" if reference else "-"
        print(
            f"| {backbone} | {size} | {rate:.1f} | {epoch:.0f} | "
            f"{args.minutes * 60 / epoch:.1f} | {ratio} |"
        )


if __name__ == "__main__":
    main()
