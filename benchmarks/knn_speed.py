"""Exact cosine top-k: whaleutils.retrieval.knn.cosine_topk against scikit-learn, side by side.

A Happywhale-sized problem: a gallery of 51,033 x 512 embeddings clustered by individual (the
real train.csv's photos-per-individual counts when ../shared is present, else a long-tailed
draw) and queries of which 85% are new photos of gallery individuals and 15% of new ones.

Usage: python benchmarks/knn_speed.py [--queries 3000] [--k 50] [--repeats 3]
Prints each method's best time over the repeats and its speed-up over scikit-learn's
``NearestNeighbors(metric="cosine")``, and checks that the neighbours agree.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from whaleutils.retrieval import knn

REAL_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "happywhale" / "train.csv"


def make_problem(n_queries: int, dim: int = 512, noise: float = 0.8, seed: int = 0):
    rng = np.random.default_rng(seed)
    if REAL_TRAIN.is_file():
        counts = pd.read_csv(REAL_TRAIN)["individual_id"].value_counts().to_numpy()
    else:
        counts = np.minimum(rng.zipf(2.0, size=15_587), 400)
    centres = rng.normal(size=(len(counts) + n_queries, dim)).astype(np.float32)
    owner = np.repeat(np.arange(len(counts)), counts)
    gallery = centres[owner] + noise * rng.normal(size=(len(owner), dim)).astype(np.float32)
    known = rng.random(n_queries) < 0.85
    query_owner = np.where(
        known, rng.choice(owner, size=n_queries), len(counts) + np.arange(n_queries)
    )
    queries = centres[query_owner] + noise * rng.normal(size=(n_queries, dim)).astype(np.float32)
    return gallery, queries


def best_time(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--k", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gallery, queries = make_problem(args.queries)
    print(f"gallery {gallery.shape}, queries {queries.shape}, k={args.k}")
    print(f"this CPU multiplies bfloat16 natively: {knn.cpu_has_bf16()}")

    def sklearn_search():
        model = NearestNeighbors(n_neighbors=args.k, metric="cosine").fit(gallery)
        distances, indices = model.kneighbors(queries)
        return 1 - distances, indices

    knn.cosine_topk(gallery[:1000], queries[:10], args.k)  # warm TensorFlow up
    results = {"scikit-learn": best_time(sklearn_search, args.repeats)}
    methods = ["float32", "bf16"] if knn.cpu_has_bf16() else ["float32"]
    for method in methods:
        results[f"cosine_topk {method}"] = best_time(
            lambda method=method: knn.cosine_topk(gallery, queries, args.k, method=method),
            args.repeats,
        )
    reference_seconds, (reference_similarities, reference_indices) = results["scikit-learn"]
    for name, (seconds, (similarities, indices)) in results.items():
        same = (indices == reference_indices).mean()
        gap = np.abs(similarities - reference_similarities).max()
        print(
            f"{name:<22} {seconds:7.2f} s   speed-up {reference_seconds / seconds:5.2f}x   "
            f"same neighbours {same:.5f}   max |similarity difference| {gap:.2e}"
        )


if __name__ == "__main__":
    main()
