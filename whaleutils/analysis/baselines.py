"""Baselines that need no learning: they say how hard a data set is.

- ``species_oracle``: knows each test image's true species (which no model does) and answers
  that species' five most photographed training individuals.
- ``raw_pixel_nn``: nearest training photos by cosine similarity of downsampled grey pixels.

A data set where these score well can be solved without identity features; the synthetic set
is tuned once so that they do not (see ``tests/datasets/test_synth.py`` and the README).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
from PIL import Image

from whaleutils.contracts import metrics
from whaleutils.datasets.data import (
    Layout,
    check_photo_size,
    most_photographed,
    read_solution,
    read_train,
)


def species_oracle_predictions(train: pd.DataFrame, test_species, k: int = 5) -> list[list[str]]:
    """For each test species, the ``k`` training individuals with most photos of that species.

    Ties in photo count are broken by individual id (ascending). A species absent from train
    gets the ``k`` most photographed individuals overall.
    """
    counts = train.groupby(["species", "individual_id"]).size().reset_index(name="photos")
    counts = counts.sort_values(
        ["species", "photos", "individual_id"], ascending=[True, False, True]
    )
    top_by_species = counts.groupby("species")["individual_id"].apply(lambda s: s.head(k).tolist())
    overall_top = most_photographed(train["individual_id"], k)
    return [list(top_by_species.get(species, overall_top)) for species in test_species]


def load_gray_thumbnails(paths, side: int = 16) -> np.ndarray:
    """Grey thumbnails, float32 of shape (n, side * side), each row centred (zero mean)."""
    thumbnails = np.empty((len(paths), side * side), dtype=np.float32)
    for row, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                check_photo_size(*image.size, path)
                image.draft("L", (side * 4, side * 4))  # JPEG decoders shrink while decoding
                small = image.convert("L").resize((side, side), Image.Resampling.BILINEAR)
        except (OSError, SyntaxError, Image.DecompressionBombError) as error:
            raise ValueError(f"{path}: not a readable image ({error}); see validate") from None
        thumbnails[row] = np.asarray(small, dtype=np.float32).ravel()
    return thumbnails - thumbnails.mean(axis=1, keepdims=True)


def raw_pixel_nn_predictions(
    train_pixels: np.ndarray, train_ids, test_pixels: np.ndarray, k: int = 5
) -> list[list[str]]:
    """Top ``k`` distinct individual ids of the most cosine-similar training thumbnails."""

    def unit(x):
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    similarity = unit(test_pixels) @ unit(train_pixels).T  # (n_test, n_train)
    order = np.argsort(-similarity, axis=1, kind="stable")
    train_ids = np.asarray(train_ids, dtype=object)
    predictions = []
    for ranked in order:
        ids = list(dict.fromkeys(train_ids[ranked[: 20 * k]]))
        predictions.append(ids[:k])
    return predictions


def difficulty_report(data_dir: str | os.PathLike, side: int = 16) -> dict[str, dict]:
    """MAP@5 (overall, known, new) of both baselines on a data set with ``test_solution.csv``."""
    layout = Layout(data_dir)
    train = read_train(data_dir)
    solution = read_solution(layout.test_solution)
    if "species" not in solution.columns:
        raise ValueError(f"{layout.test_solution}: the species oracle needs a species column")
    truth = solution["individual_id"].tolist()
    oracle = species_oracle_predictions(train, solution["species"])
    train_pixels = load_gray_thumbnails([layout.photo("train", i) for i in train["image"]], side)
    test_pixels = load_gray_thumbnails([layout.photo("test", i) for i in solution["image"]], side)
    nearest = raw_pixel_nn_predictions(train_pixels, train["individual_id"], test_pixels)
    return {
        "species_oracle": metrics.map_at_k_split(truth, oracle),
        "raw_pixel_nn": metrics.map_at_k_split(truth, nearest),
    }
