"""The steps the notebooks share: a fold's data, batches, scoring and output files.

Each notebook writes into its own output folder and ends with :func:`write_outputs`, which
records the files it produced in ``outputs.json``; the runner treats a notebook whose listed
outputs all exist as done. Scores go to ``scores.json``::

    {"valid": {"map5": ..., "map5_known": ..., "map5_new": ..., "n_images": ...},
     "test": {...} or null}          # test only where a test_solution.csv exists
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils import data, knn, metrics, pipeline


@dataclass
class Fold:
    """One validation fold of a data set: what a training notebook works on.

    ``fit``: training rows (image, species, individual_id, box, ...); ``valid``: validation rows
    with ``target_id`` (``new_individual`` for individuals absent from ``fit``); ``test``: the
    test image names (a frame with ``image``); ``solution``: the test truth or None.
    """

    data_dir: Path
    fit: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    encoding: data.LabelEncoding
    solution: pd.DataFrame | None

    @property
    def train_images(self) -> Path:
        return self.data_dir / "train_images"

    @property
    def test_images(self) -> Path:
        return self.data_dir / "test_images"

    def frequent_ids(self, n: int = 5) -> list[str]:
        """The ``n`` most photographed training individuals (ties by id): padding ids."""
        counts = self.fit["individual_id"].value_counts()
        return sorted(counts.index, key=lambda i: (-counts[i], i))[:n]


def load_fold(
    data_dir: str | os.PathLike | None,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    max_valid_images: int | None = None,
) -> Fold:
    """Read a data set and split off validation fold ``fold`` (see ``data.make_folds``).

    ``max_valid_images`` keeps a deterministic random subset of the validation rows (for quick
    profiles); the training rows are all kept.
    """
    data_dir = data.find_data_dir(data_dir)
    folds = data.make_folds(data.read_train(data_dir), n_folds=n_folds, seed=seed)
    fit, valid = data.split_fold(folds, fold)
    if max_valid_images is not None and len(valid) > max_valid_images:
        valid = valid.sample(n=max_valid_images, random_state=seed).sort_index()
    test = pd.DataFrame({"image": data.read_test_images(data_dir)})
    solution_path = data_dir / "test_solution.csv"
    solution = data.read_solution(solution_path) if solution_path.is_file() else None
    return Fold(
        data_dir,
        fit.reset_index(drop=True),
        valid.reset_index(drop=True),
        test,
        data.LabelEncoding.fit(fit),
        solution,
    )


def image_batches(
    frame: pd.DataFrame,
    folder: Path,
    image_size: int,
    batch_size: int,
    crop_to_box: bool = True,
    box_margin: float = 0.1,
):
    """Inference batches (b, S, S, 3) of ``frame``'s images, in row order."""
    records = pipeline.file_records(frame, folder)
    return pipeline.make_dataset(
        records, image_size, batch_size, crop_to_box=crop_to_box, box_margin=box_margin
    )


def training_batches(
    fold: Fold,
    image_size: int,
    batch_size: int,
    augmentation: pipeline.Augmentation | None = None,
    label_as_input: bool = True,
    crop_to_box: bool = True,
    box_margin: float = 0.1,
    seed: int = 0,
):
    """Shuffled, augmented, repeating training batches of the fold's training rows, and the
    number of steps in one pass over them."""
    targets = fold.encoding.encode_individuals(fold.fit["individual_id"])
    records = pipeline.file_records(fold.fit, fold.train_images, targets)
    dataset = pipeline.make_dataset(
        records,
        image_size,
        batch_size,
        training=True,
        augmentation=augmentation,
        label_as_input=label_as_input,
        crop_to_box=crop_to_box,
        box_margin=box_margin,
        repeat=True,
        seed=seed,
    )
    return dataset, max(1, int(np.ceil(len(fold.fit) / batch_size)))


def score(truth, predictions) -> dict:
    """MAP@5 overall, known and new (``metrics.map_at_k_split``) with plain floats."""
    return {
        key: (round(value, 6) if isinstance(value, float) else value)
        for key, value in metrics.map_at_k_split(list(truth), predictions).items()
    }


def test_scores(fold: Fold, images, predictions) -> dict | None:
    """Scores of test predictions against the solution, or None without a solution."""
    if fold.solution is None:
        return None
    truth = dict(zip(fold.solution["image"], fold.solution["individual_id"], strict=True))
    return score([truth[image] for image in images], predictions)


def classifier_predictions(
    probabilities: np.ndarray, fold: Fold, confidence_threshold: float
) -> tuple[list[list[str]], np.ndarray]:
    """Five labels per image from class probabilities (the basic CNN): the five most probable
    individuals, with ``new_individual`` first when the top probability is below
    ``confidence_threshold``, else second. Returns the lists and the top-5 probabilities."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, : knn.N_PREDICTIONS]
    ids = fold.encoding.decode_individuals(order.ravel()).reshape(order.shape)
    top = np.take_along_axis(probabilities, order, axis=1)
    lists = knn.insert_new_individual(
        ids, top[:, 0], 1.0 - confidence_threshold, fold.frequent_ids()
    )
    return lists, top


def write_json(path: str | os.PathLike, payload) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return path


def write_outputs(out_dir: str | os.PathLike, files) -> Path:
    """Record a notebook's outputs (paths relative to ``out_dir``) in ``outputs.json``; raises
    if one is missing, so a notebook cannot claim what it did not write."""
    out_dir = Path(out_dir)
    names = [str(Path(f).relative_to(out_dir)) if Path(f).is_absolute() else str(f) for f in files]
    missing = [name for name in names if not (out_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{out_dir}: declared outputs missing: {missing}")
    return write_json(out_dir / "outputs.json", {"files": names})


def outputs_complete(out_dir: str | os.PathLike) -> bool:
    """Whether a notebook's folder holds ``outputs.json`` and every file it lists."""
    listing = Path(out_dir) / "outputs.json"
    if not listing.is_file():
        return False
    files = json.loads(listing.read_text()).get("files", [])
    return all((Path(out_dir) / name).exists() for name in files)
