"""A trained embedding notebook's outputs loaded for use: its model, image size, KNN head and
embeddings (what notebooks 05-07 read; the files are ``contracts.outputs``' and ``embed``'s)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whaleutils.contracts import environment, outputs
from whaleutils.retrieval import embed, splits
from whaleutils.training import models


@dataclass
class TrainedModel:
    """A trained embedding notebook's outputs: its folder, the embedding model, the image size
    it was trained at (read from the model), its KNN settings and its embeddings by part."""

    folder: Path
    embedding_model: object  # keras.Model
    image_size: int
    knn: outputs.KnnSettings
    embedding_files: dict[str, dict[str, np.ndarray]]  # part -> the .npz file's arrays
    split_record: dict  # the fold it was validated on (scores.json's ``split``)

    @property
    def tta(self) -> str:
        """The test-time augmentation the embeddings were made with ("flip" or "none")."""
        return str(self.embedding_files["valid"]["tta"])

    @property
    def embeddings(self) -> dict[str, np.ndarray]:
        """The saved embeddings (n, d) by part ("train", "valid", "test"), and the mirror
        images' (``<part>_mirrored``) where they were saved (a flipped gallery)."""
        result = {part: payload["embeddings"] for part, payload in self.embedding_files.items()}
        for part, payload in self.embedding_files.items():
            if "mirrored" in payload:
                result[f"{part}_mirrored"] = payload["mirrored"]
        return result


def load_trained(inputs_dir: str | os.PathLike, notebook: str) -> TrainedModel:
    """Load the outputs of ``notebook`` (e.g. ``04_effnet_arcface``) found under ``inputs_dir``
    (see ``environment.notebook_output``; on Kaggle ``/kaggle/input``)."""
    folder = environment.notebook_output(inputs_dir, notebook)
    run = outputs.read_run_settings(folder)
    embedding_model = models.load_model(run.model_path)
    return TrainedModel(
        folder=folder,
        embedding_model=embedding_model,
        image_size=models.input_image_size(embedding_model),
        # its users (05, 06) query validation photos: the validation threshold
        knn=outputs.KnnSettings(
            run.knn.k, run.valid_threshold, run.knn.rule, run.knn.flipped_gallery
        ),
        embedding_files={
            part: embed.load_embeddings(folder / f"{part}.npz")
            for part in ("train", "valid", "test")
        },
        split_record=dict(run.scores.get("split") or {}),
    )


def load_split(
    trained: TrainedModel,
    data_dir: str | os.PathLike | None,
    crop_cache: str | os.PathLike | None = None,
    boxes: str | os.PathLike | dict | None = None,
    box_margin: float | None = None,
) -> splits.Split:
    """The split ``trained`` was validated on (its recorded fold, folds, seed, fold groups and
    subsets; ``splits.load_recorded_split``), on the photos of ``data_dir``, checked to hold
    exactly the images of its embedding files, part by part.

    Raises
    ------
    ValueError
        Naming the run's ``scores.json`` if it records no fold, or an embeddings file and the
        first image where it and the split differ.
    """
    split = splits.load_recorded_split(
        trained.split_record,
        data_dir,
        crop_cache=crop_cache,
        boxes=boxes,
        box_margin=box_margin,
        source=str(trained.folder / outputs.SCORES),
    )
    for part, payload in trained.embedding_files.items():
        names = split.frame(part)["image"]
        embed.check_image_names(payload, trained.folder / f"{part}.npz", part, names)
    return split
