"""Synthetic data set generation speed: images per second on one core, and with all cores.

Usage: python benchmarks/synth_speed.py [--individuals N]
Target (issue 2): at least 50 images/s on one core at the default size (max side 512).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from whaleutils.datasets import synth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--individuals", type=int, default=synth.SynthConfig().individuals)
    args = parser.parse_args()
    config = synth.SynthConfig(individuals=args.individuals)
    rows = []
    for workers in sorted({1, os.cpu_count() or 1}):
        with tempfile.TemporaryDirectory() as folder:
            card = synth.generate(Path(folder) / "set", config, workers=workers)
        rows.append((workers, card["train_images"] + card["test_images"], card["seconds"]))
    for workers, images, seconds in rows:
        rate = images / seconds
        print(f"workers={workers}: {images} images in {seconds:.1f} s = {rate:.1f} images/s")
    if len(rows) == 2:
        print(f"speed-up with {rows[1][0]} workers: {rows[0][2] / rows[1][2]:.2f}x")


if __name__ == "__main__":
    main()
