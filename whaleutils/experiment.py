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
    test image names (a frame with ``image``, and ``box`` where ``test_boxes.csv`` exists);
    ``solution``: the test truth or None.
    """

    data_dir: Path
    fit: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    encoding: data.LabelEncoding
    solution: pd.DataFrame | None

    @property
    def crop_to_box(self) -> bool:
        """Crop photos to their boxes only if the test photos have boxes too (``test_boxes.csv``):
        gallery and query photos must be framed alike."""
        return "box" in self.test.columns

    @property
    def train_images(self) -> Path:
        return self.data_dir / "train_images"

    @property
    def test_images(self) -> Path:
        return self.data_dir / "test_images"

    def describe(self) -> str:
        """One line: images and individuals of each part."""
        new_share = self.valid["target_id"].eq("new_individual").mean()
        return (
            f"train {len(self.fit)} images of {self.encoding.n_individuals} individuals; "
            f"valid {len(self.valid)} ({new_share:.0%} new); test {len(self.test)}"
        )

    def frequent_ids(self, n: int = 5) -> list[str]:
        """The ``n`` most photographed training individuals (ties by id): padding ids."""
        return data.most_photographed(self.fit["individual_id"], n)

    def test_gallery(self, embeddings: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Gallery for test queries: every training photo, fit and validation rows (validation
        photos were held out only to choose k and the threshold; without them some test
        individuals would have no photo at all). Returns (embeddings, individual ids)."""
        vectors = np.concatenate([embeddings["train"], embeddings["valid"]])
        labels = np.concatenate([self.fit["individual_id"], self.valid["individual_id"]])
        return vectors, labels


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
    test_boxes = data.read_test_boxes(data_dir)
    if test_boxes is not None:
        test = test.merge(test_boxes, on="image", how="left", validate="one_to_one").fillna(
            {"box": ""}
        )
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
    crop_to_box: bool,
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
    crop_to_box: bool | None = None,
    box_margin: float = 0.1,
    seed: int = 0,
):
    """Shuffled, augmented, repeating training batches of the fold's training rows, and the
    number of steps in one pass over them."""
    crop_to_box = fold.crop_to_box if crop_to_box is None else crop_to_box
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


def embed_fold(
    embedding_model,
    fold: Fold,
    image_size: int,
    batch_size: int,
    out_dir: str | os.PathLike,
    tta: str = "flip",
    model_name: str = "",
) -> dict[str, np.ndarray]:
    """Embed the fold's training, validation and test images and save ``train.npz``,
    ``valid.npz`` and ``test.npz`` in ``out_dir`` (schema in ``whaleutils.embed``)."""
    from whaleutils import embed

    out_dir = Path(out_dir)
    splits = {
        "train": (fold.fit, fold.train_images, fold.fit["individual_id"]),
        "valid": (fold.valid, fold.train_images, fold.valid["target_id"]),
        "test": (fold.test, fold.test_images, None),
    }
    result = {}
    for name, (frame, folder, labels) in splits.items():
        vectors = embed.compute_embeddings(
            embedding_model,
            image_batches(frame, folder, image_size, batch_size, fold.crop_to_box),
            tta=tta,
        )
        embed.save_embeddings(
            out_dir / f"{name}.npz",
            frame["image"],
            vectors,
            labels,
            model=model_name,
            tta=tta,
            overwrite=True,
        )
        result[name] = vectors
    return result


def plot_knn_search(search: dict):
    """Validation MAP@5 against the distance threshold, one line per k, the choice marked."""
    import matplotlib.pyplot as plt

    curve = search["curve"]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for k, rows in curve.groupby("k"):
        axes[0].plot(rows["threshold"], rows["map5"], label=f"k={k}")
    axes[0].axvline(search["threshold"], color="grey", linestyle="--")
    axes[0].set_xlabel("new_individual first when the nearest cosine distance exceeds")
    axes[0].set_ylabel("validation MAP@5")
    axes[0].legend(fontsize=7)
    chosen = curve[curve["k"] == search["k"]]
    for column in ("map5", "map5_known", "map5_new"):
        axes[1].plot(chosen["threshold"], chosen[column], label=column)
    axes[1].axvline(search["threshold"], color="grey", linestyle="--")
    axes[1].set_title(
        f"k={search['k']}: threshold {search['threshold']:.4g}, MAP@5 {search['map5']:.4f}"
    )
    axes[1].set_xlabel("distance threshold")
    axes[1].legend()
    figure.tight_layout()
    return figure


def knn_head(
    fold: Fold,
    embeddings: dict[str, np.ndarray],
    out_dir: str | os.PathLike,
    rule: str = "vote",
    k_grid=knn.K_GRID,
) -> dict:
    """Choose k and the threshold on validation, then write ``oof_predictions.csv``,
    ``test_predictions.csv``, ``submission.csv`` and ``scores.json``; returns the scores
    (with the chosen ``k``, ``threshold`` and the search curve under ``search``). The scores
    also describe the embedding (``embedding``: participation ratio of the training
    embeddings, median cosine of each validation photo to its nearest and 10th neighbour)."""
    from whaleutils import embed, submission

    out_dir = Path(out_dir)
    gallery_labels = fold.fit["individual_id"].to_numpy()
    k_max = min(max(k_grid), len(gallery_labels))
    similarities, indices = knn.cosine_topk(embeddings["train"], embeddings["valid"], k_max)
    search = knn.search_k_and_threshold(
        similarities, indices, gallery_labels, fold.valid["target_id"].to_numpy(), rule, k_grid
    )
    search["curve"].to_csv(out_dir / "knn_search.csv", index=False)
    valid_lists, valid_scores = knn.predict(
        embeddings["train"],
        gallery_labels,
        embeddings["valid"],
        search["k"],
        search["threshold"],
        rule,
        fold.frequent_ids(),
    )
    knn.write_predictions(
        out_dir / "oof_predictions.csv",
        fold.valid["image"],
        valid_lists,
        valid_scores,
        overwrite=True,
    )
    full_gallery, full_labels = fold.test_gallery(embeddings)
    test_lists, test_label_scores = knn.predict(
        full_gallery,
        full_labels,
        embeddings["test"],
        search["k"],
        search["threshold"],
        rule,
        fold.frequent_ids(),
    )
    knn.write_predictions(
        out_dir / "test_predictions.csv",
        fold.test["image"],
        test_lists,
        test_label_scores,
        overwrite=True,
    )
    submission.write_submission(
        out_dir / "submission.csv", fold.test["image"], test_lists, overwrite=True
    )
    scores = {
        "valid": score(fold.valid["target_id"], valid_lists),
        "test": test_scores(fold, fold.test["image"], test_lists),
        "k": search["k"],
        "threshold": search["threshold"],
        "rule": rule,
        "embedding": {  # is the space used? (a barely trained model: a handful of dimensions)
            "participation_ratio": round(embed.participation_ratio(embeddings["train"]), 2),
            "dimensions": int(embeddings["train"].shape[1]),
            "valid_nearest_cosine_median": round(float(np.median(similarities[:, 0])), 4),
            "valid_10th_cosine_median": round(
                float(np.median(similarities[:, min(9, similarities.shape[1] - 1)])), 4
            ),
        },
    }
    write_json(out_dir / "scores.json", scores)
    return {**scores, "search": search}


def robustness_table(
    embedding_model,
    fold: Fold,
    gallery: np.ndarray,
    image_size: int,
    batch_size: int,
    k: int,
    threshold: float,
    rule: str = "vote",
    max_images: int | None = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """MAP@5 on (a subset of) the validation fold under each of ``robustness.CONDITIONS``.

    The gallery stays clean (training photos); only the query photos are degraded, as when
    new field photos are blurred or under-exposed.
    """
    from whaleutils import embed, robustness

    valid = fold.valid
    if max_images is not None and len(valid) > max_images:
        valid = valid.sample(n=max_images, random_state=seed).sort_index()
    rows = []
    for name, sigma, brightness in robustness.CONDITIONS:
        batches = image_batches(valid, fold.train_images, image_size, batch_size, fold.crop_to_box)
        degraded = batches.map(
            lambda images, s=sigma, b=brightness: robustness.degrade(images, s, b)
        )
        queries = embed.compute_embeddings(embedding_model, degraded)
        lists, _ = knn.predict(
            gallery, fold.fit["individual_id"], queries, k, threshold, rule, fold.frequent_ids()
        )
        rows.append(
            {
                "condition": name,
                "blur_sigma": sigma,
                "brightness": brightness,
                **score(valid["target_id"], lists),
            }
        )
    return pd.DataFrame(rows)


def snapshot_members(
    fold: Fold,
    snapshot_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    image_size: int,
    batch_size: int,
    k: int,
    threshold: float,
    rule: str = "vote",
) -> list[Path]:
    """Predictions of every snapshot embedding model in ``snapshot_dir`` (``epoch-NNN.keras``),
    each written as ``out_dir/<snapshot>/{oof,test}_predictions.csv`` and its embeddings as
    ``train/valid/test.npz``, with the KNN head's ``k`` and ``threshold``; returns the folders."""
    from whaleutils import models

    folders = []
    gallery_labels = fold.fit["individual_id"].to_numpy()
    for path in sorted(Path(snapshot_dir).glob("epoch-*.keras")):
        folder = Path(out_dir) / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        embeddings = embed_fold(
            models.load_model(path),
            fold,
            image_size,
            batch_size,
            folder,
            tta="flip",
            model_name=str(path),
        )
        full_gallery, full_labels = fold.test_gallery(embeddings)
        for split, frame in (("oof", fold.valid), ("test", fold.test)):
            queries = embeddings["valid" if split == "oof" else "test"]
            gallery, labels = (
                (embeddings["train"], gallery_labels)
                if split == "oof"
                else (full_gallery, full_labels)
            )
            lists, scores = knn.predict(
                gallery,
                labels,
                queries,
                min(k, len(gallery_labels)),
                threshold,
                rule,
                fold.frequent_ids(),
            )
            knn.write_predictions(
                folder / f"{split}_predictions.csv", frame["image"], lists, scores, overwrite=True
            )
        folders.append(folder)
    return folders


# What embed_and_search writes: each embedding notebook lists these among its outputs.
KNN_OUTPUTS = (
    "train.npz",
    "valid.npz",
    "test.npz",
    "knn_search.csv",
    "knn_search.png",
    "oof_predictions.csv",
    "test_predictions.csv",
    "submission.csv",
    "scores.json",
)


def embed_and_search(
    embedding_model,
    fold: Fold,
    image_size: int,
    batch_size: int,
    out_dir: str | os.PathLike,
    rule: str = "vote",
    model_name: str = "",
) -> dict:
    """Embed the fold (:func:`embed_fold`, flip TTA), run the KNN head (:func:`knn_head`) and
    save its search curves as ``knn_search.png``; returns the head's result."""
    embeddings = embed_fold(
        embedding_model, fold, image_size, batch_size, out_dir, tta="flip", model_name=model_name
    )
    result = knn_head(fold, embeddings, out_dir, rule=rule)
    plot_knn_search(result["search"]).savefig(Path(out_dir) / "knn_search.png", dpi=110)
    return result
