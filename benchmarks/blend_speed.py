"""Blend speed at Happywhale size: 30 members x 51,033 images (the paper: under three minutes).

Members are noisy copies of a truth drawn from the real individual counts (or a long-tailed
draw without ../shared): each member puts the true id at a random rank 1-5 with its own
accuracy (5-35%) and fills the rest with other ids.

Usage: python benchmarks/blend_speed.py [--members 30] [--images 51033]
Prints the time of one rank_blend and of the whole search_alphas, and the MAP@5 gained.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.analysis import blend
from whaleutils.contracts import metrics

REAL_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "happywhale" / "train.csv"


def make_members(n_members: int, n_images: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    if REAL_TRAIN.is_file():
        counts = pd.read_csv(REAL_TRAIN)["individual_id"].value_counts()
    else:
        counts = pd.Series(
            np.minimum(rng.zipf(2.0, 15_587), 400), index=[f"id{i}" for i in range(15_587)]
        )
    ids = np.array(list(counts.index) + ["new_individual"], dtype=object)
    p = np.append(counts.to_numpy(dtype=float), counts.sum() * 0.2)
    truth = ids[rng.choice(len(ids), size=n_images, p=p / p.sum())]
    accuracy = rng.uniform(0.05, 0.35, n_members)  # weak members: the blend has work to do
    members = []
    for j in range(n_members):
        fillers = ids[rng.integers(0, len(ids), size=(n_images, 8))]
        rows = []
        hit = rng.random(n_images) < accuracy[j]
        slot = rng.integers(0, 5, n_images)
        for i in range(n_images):
            row = [f for f in dict.fromkeys(fillers[i]) if f != truth[i]][:5]
            if hit[i]:
                row.insert(slot[i], truth[i])
            rows.append(row[:5])
        members.append(rows)
    return members, list(truth), counts.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--images", type=int, default=51_033)
    args = parser.parse_args()
    members, truth, counts = make_members(args.members, args.images)
    started = time.perf_counter()
    start_lists = blend.rank_blend(members, [1.0] * args.members, counts)
    blend_seconds = time.perf_counter() - started
    started = time.perf_counter()
    alphas, trace = blend.search_alphas(members, truth, counts, return_trace=True)
    search_seconds = time.perf_counter() - started
    searched = metrics.map_at_k(truth, blend.rank_blend(members, alphas, counts))
    print(f"{args.members} members x {args.images} images")
    print(f"rank_blend once: {blend_seconds:.1f} s")
    last_sweep, changes = trace["sweep"].max(), len(trace) - 1
    print(f"search_alphas: {search_seconds:.1f} s, {changes} accepted change(s)", end="")
    print(f", the last in sweep {last_sweep}")
    print(
        f"MAP@5 equal weights {metrics.map_at_k(truth, start_lists):.4f} -> searched {searched:.4f}"
    )


if __name__ == "__main__":
    main()
