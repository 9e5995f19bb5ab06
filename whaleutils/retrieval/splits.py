"""One validation fold of a data set, as a training notebook sees it, and its image batches.

A :class:`Split` holds the training rows (``train``), the validation rows of one fold
(``valid``), the test images and, where one exists, the test solution. Its galleries say which
labelled photos a query is matched against:

- test queries: every labelled photo (``train`` and ``valid``), as a submission would;
- validation queries: the same, mirrored (see :meth:`Split.valid_gallery`): the ``train`` photos
  and the validation photos of individuals known in ``train``, each query's own photo left out.
  Photos of validation individuals absent from ``train`` are left out too, so that these stay
  ``new_individual``. The gallery then has the composition of the test gallery (trained-on
  photos plus held-out photos of the same individuals), and nearest distances on validation
  are distributed like those on test: k and the threshold chosen on validation carry over.

Importing this module does not import TensorFlow; the batch methods do.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.contracts.tables import read_csv
from whaleutils.datasets import data
from whaleutils.images import crops, photos

PARTS = ("train", "valid", "test")


@dataclass
class Split:
    """The parts of one fold.

    ``train``: training rows (image, species, individual_id, box, ...); ``valid``: validation rows
    with ``target_id`` (``new_individual`` for individuals absent from ``train``); ``test``: the
    test images (``image``, and ``box`` where ``test_boxes.csv`` exists); ``solution``: the test
    truth or None; ``encoding``: the training individuals' integer codes.
    """

    data_dir: Path
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    encoding: data.LabelEncoding
    solution: pd.DataFrame | None
    crop_cache: Path | None = None  # a crops.write_crop_cache folder, read instead of the photos
    box_margin: float = photos.BOX_MARGIN  # a box grows by this share of its size a side
    fold: int = 0  # which fold of data.make_folds(n_folds, seed) is ``valid``
    n_folds: int = 5
    seed: int = 0
    fold_groups: str | None = None  # the column whose photos the folds keep together
    # the crop cache's settings (crops.json): whether its photos are cut to boxes, the largest
    # box jitter it has room for, and whether these frames hold the boxes it was cut with
    cache_crop_to_box: bool = False
    cache_box_jitter: float = 0.0
    frames_match_cache: bool = False
    cache_size: int | None = None  # the model input size the cache's crops were cut for
    max_valid_images: int | None = None  # load_split's subsets, recorded with the fold
    max_train_images: int | None = None
    # test photos trained on as their predicted individual (with_pseudo_labels): image,
    # individual_id (and box), in test order; and the file they were read from
    pseudo_labels: pd.DataFrame | None = None
    pseudo_labels_source: str | None = None

    def describe_fold(self) -> dict:
        """The fold as stored in ``scores.json`` (the blend joins folds by it), and whether its
        photos were cropped to boxes (``identify`` frames its photos alike)."""
        return {
            "fold": self.fold,
            "n_folds": self.n_folds,
            "seed": self.seed,
            "fold_groups": self.fold_groups,
            "crop_to_box": self.crop_to_box,
            "max_valid_images": self.max_valid_images,
            "max_train_images": self.max_train_images,
        }

    @property
    def crop_to_box(self) -> bool:
        """Crop photos to their boxes only if the test photos have boxes too (``test_boxes.csv``):
        gallery and query photos must be framed alike. (A crop cache was cut by the same rule
        when it was written: its own answer.)"""
        if self.crop_cache is not None:
            return self.cache_crop_to_box
        return "box" in self.test.columns

    def encounters(self, part: str) -> dict[str, str]:
        """photo -> encounter of ``part``'s photos that have one: validation's from
        ``train.csv``'s ``encounter`` column, test's from ``test_metadata.csv`` ({} without)."""
        if part == "test":
            path = data.Layout(self.data_dir).test_metadata
            return data.read_encounters(path) if path.is_file() else {}
        return data.encounter_map(self.frame(part))

    def frame(self, part: str) -> pd.DataFrame:
        """The rows of ``part`` (one of ``PARTS``)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got part={part!r}")
        return getattr(self, part)

    def image_folder(self, part: str) -> Path:
        """Where the photos of ``part`` are: training photos for train and valid."""
        self.frame(part)
        return data.Layout(self.data_dir).images(part)

    def describe(self) -> str:
        """One line: images and individuals of each part."""
        new_share = self.valid["target_id"].eq(NEW_INDIVIDUAL).mean()
        pseudo = (
            ""
            if self.pseudo_labels is None
            else f" + {len(self.pseudo_labels)} pseudo-labelled test images"
        )
        return (
            f"train {len(self.train)} images of {self.encoding.n_individuals} individuals"
            f"{pseudo}; valid {len(self.valid)} ({new_share:.0%} new); test {len(self.test)}"
        )

    def describe_pseudo_labels(self) -> dict | None:
        """What ``scores.json`` records of a transductive run (None: no pseudo-labels): the
        file and how many test photos were trained on."""
        if self.pseudo_labels is None:
            return None
        return {"file": self.pseudo_labels_source, "photos": len(self.pseudo_labels)}

    def with_pseudo_labels(self, path: str | os.PathLike) -> Split:
        """This split with the test photos of ``path`` (a ``pseudo_labels.csv`` of notebook 04's
        fused head: ``image, individual_id``) added to training as those individuals: a second
        round that learns from the photos it is then asked about (transductive, as on Kaggle).
        Galleries, validation and the test queries stay as they are.

        Raises
        ------
        ValueError
            Naming the file and row of an image not among the test photos, listed twice, or an
            individual the split's training part does not hold (the file is of another fold
            or data set).
        """
        path = Path(path)
        table = read_csv(path)
        missing = [c for c in ("image", "individual_id") if c not in table.columns]
        if missing:
            raise ValueError(
                f"{path}: no column(s) {missing}; pseudo-labels are image,individual_id"
            )
        test_images = set(self.test["image"])
        known = set(self.encoding.individual_ids)
        seen: set[str] = set()
        for row, (image, individual) in enumerate(
            zip(table["image"], table["individual_id"], strict=True), start=2
        ):
            if image not in test_images:
                raise ValueError(
                    f"{path}, row {row}: {image!r} is not a test image of {self.data_dir}"
                )
            if image in seen:
                raise ValueError(f"{path}, row {row}: {image!r} is listed twice")
            if individual not in known:
                raise ValueError(
                    f"{path}, row {row}: {individual!r} is not a training individual of this "
                    f"split (fold {self.fold} of {self.data_dir}): pseudo-labels of another fold?"
                )
            seen.add(image)
        labels = dict(zip(table["image"], table["individual_id"], strict=True))
        chosen = self.test[self.test["image"].isin(labels)].copy()  # in test order
        chosen["individual_id"] = chosen["image"].map(labels)
        return dataclasses.replace(
            self, pseudo_labels=chosen.reset_index(drop=True), pseudo_labels_source=str(path)
        )

    # ------------------------------------------------------------------ galleries

    def _valid_in_gallery(self, part: str) -> np.ndarray:
        """Which validation rows the gallery of ``part``'s queries holds (bool (n_valid,)):
        the known ones for validation queries, all for test queries."""
        if part == "valid":
            return self.valid["target_id"].ne(NEW_INDIVIDUAL).to_numpy()
        if part == "test":
            return np.ones(len(self.valid), dtype=bool)
        raise ValueError(f"galleries exist for 'valid' and 'test' queries, got part={part!r}")

    def gallery_labels(self, part: str, flipped: bool = False) -> np.ndarray:
        """Individual ids of the gallery that ``part``'s queries ("valid" or "test") are matched
        against, in gallery row order: the training rows, then the validation rows it holds
        (see the module docstring); ``flipped``: then the same again, for their mirror
        images."""
        valid = self.valid["individual_id"].to_numpy()[self._valid_in_gallery(part)]
        labels = np.concatenate([self.train["individual_id"].to_numpy(), valid]).astype(object)
        return np.concatenate([labels, labels]) if flipped else labels

    def gallery(
        self, part: str, embeddings: dict[str, np.ndarray], flipped: bool = False
    ) -> np.ndarray:
        """Gallery embeddings (n_gallery, d) for ``part``'s queries, rows as in
        :meth:`gallery_labels`; ``embeddings`` holds the ``train`` and ``valid`` parts (and
        ``train_mirrored``, ``valid_mirrored`` if ``flipped``: ``embed.embed_split(...,
        mirrored_gallery=True)``)."""
        names = ("train", "valid") + (("train_mirrored", "valid_mirrored") if flipped else ())
        for name in names:
            if name.endswith("_mirrored") and name not in embeddings:
                raise ValueError(
                    f"a flipped gallery needs embeddings[{name!r}]: embed with "
                    "mirrored_gallery=True (the notebooks' flipped_gallery parameter)"
                )
            expected = len(self.frame(name.removesuffix("_mirrored")))
            if len(embeddings[name]) != expected:
                raise ValueError(
                    f"embeddings[{name!r}] has {len(embeddings[name])} rows, "
                    f"the split's {name.removesuffix('_mirrored')} part {expected}"
                )
        held = self._valid_in_gallery(part)
        rows = [embeddings["train"], embeddings["valid"][held]]
        if flipped:
            rows += [embeddings["train_mirrored"], embeddings["valid_mirrored"][held]]
        return np.concatenate(rows)

    def own_gallery_rows(self, part: str, flipped: bool = False) -> np.ndarray:
        """For each query of ``part``, the gallery rows it must not find, -1 for none: its own
        photo's row (int64 (n_queries,)). With ``fold_groups`` (encounters), also the rows of
        the other validation photos of its group, since those are its own encounter's near
        copies: int64 (n_queries, r), r the largest group, padded with -1. ``flipped``: each
        row and then its mirror image's row (twice the columns, (n_queries, 2) without
        groups)."""
        if part == "test":
            rows = np.full(len(self.test), -1, dtype=np.int64)
            return np.stack([rows, rows], axis=1) if flipped else rows
        if part != "valid":
            raise ValueError(f"queries are 'valid' or 'test', got part={part!r}")
        known = self._valid_in_gallery("valid")
        rows = np.full(len(self.valid), -1, dtype=np.int64)
        rows[known] = len(self.train) + np.arange(int(known.sum()))
        if self.fold_groups and self.fold_groups in self.valid:
            rows = self._group_rows(rows, known)
        if not flipped:
            return rows
        size = len(self.train) + int(known.sum())  # the mirror rows follow the photo rows
        mirrors = np.where(rows >= 0, rows + size, -1)
        if rows.ndim == 1:
            return np.stack([rows, mirrors], axis=1)
        return np.concatenate([rows, mirrors], axis=1)

    def _group_rows(self, rows: np.ndarray, known: np.ndarray) -> np.ndarray:
        """``rows`` (n_valid,) widened to every gallery row of each query's group, its own
        first: (n_valid, r), or ``rows`` as they are when no group has two gallery photos."""
        groups = self.valid[self.fold_groups].astype(str).str.strip().to_numpy()
        members: dict[str, list[int]] = {}
        for group, row in zip(groups[known], rows[known], strict=True):
            if group:
                members.setdefault(group, []).append(int(row))
        width = max((len(m) for m in members.values()), default=1)
        if width <= 1:
            return rows
        wide = np.full((len(rows), width), -1, dtype=np.int64)
        for i, (group, own) in enumerate(zip(groups, rows, strict=True)):
            others = [r for r in members.get(group, []) if r != own] if group else []
            listed = ([int(own)] if own >= 0 else []) + others
            wide[i, : len(listed)] = listed
        return wide

    def class_counts(self, mirror_identities: bool = False) -> np.ndarray:
        """Training photos per class, in the encoding's class order (int64 (n_individuals,));
        with ``mirror_identities`` (n_individuals * 2,): each individual's mirrored photos are a
        class of their own after the individuals (``pipeline.Augmentation.mirror_classes``),
        counted as the individual is."""
        ids = self.train["individual_id"]
        if self.pseudo_labels is not None:
            ids = pd.concat([ids, self.pseudo_labels["individual_id"]])
        counts = ids.value_counts()
        counts = counts.reindex(self.encoding.individual_ids).to_numpy(dtype=np.int64)
        return np.tile(counts, 2) if mirror_identities else counts

    def frequent_ids(self, part: str, n: int = 5) -> list[str]:
        """The ``n`` most photographed individuals of ``part``'s gallery (ties by id): what
        pads a prediction list short of five labels."""
        return data.most_photographed(self.gallery_labels(part), n)

    def photo_counts(self, part: str) -> dict[str, int]:
        """Photos per individual in ``part``'s gallery (the blend's frequency penalty)."""
        return pd.Series(self.gallery_labels(part)).value_counts().to_dict()

    def truth(self, part: str, images) -> list[str] | None:
        """The true labels of ``images`` of ``part``: validation ``target_id``; test labels
        from the solution, or None without one. Raises naming an image not in the part."""
        if part == "valid":
            lookup = dict(zip(self.valid["image"], self.valid["target_id"], strict=True))
        elif part == "test":
            if self.solution is None:
                return None
            lookup = dict(zip(self.solution["image"], self.solution["individual_id"], strict=True))
        else:
            raise ValueError(f"truth exists for 'valid' and 'test', got part={part!r}")
        missing = [image for image in images if image not in lookup]
        if missing:
            raise KeyError(f"{len(missing)} image(s) not in the {part} part, e.g. {missing[:3]}")
        return [lookup[image] for image in images]

    # ------------------------------------------------------------------ batches

    def batches(
        self,
        part: str,
        image_size: int,
        batch_size: int,
        rows: np.ndarray | None = None,
    ):
        """Inference batches (b, S, S, 3) uint8 RGB of ``part``'s photos (those at
        positions ``rows`` only, if given), in row order."""
        from whaleutils.images import pipeline

        frame = self.frame(part)
        self.check_cache_size(image_size)
        if rows is not None:
            rows = np.asarray(rows)
            if self.crop_cache is not None and np.any(np.diff(rows) <= 0):
                return self._reordered(part, rows, image_size, batch_size)
            frame = frame.iloc[rows]
        if self.crop_cache is not None:
            records = self._cached(part, frame["image"])  # each with its box in the crop
            return pipeline.make_dataset(
                records, image_size, batch_size, box_margin=self.box_margin
            )
        records = pipeline.file_records(frame, self.image_folder(part))
        return pipeline.make_dataset(
            records,
            image_size,
            batch_size,
            crop_to_box=self.crop_to_box,
            box_margin=self.box_margin,
        )

    def check_cache_size(self, image_size: int) -> None:
        """A crop cache serves models of the size it was cut for: a larger ``image_size`` would
        enlarge its crops (refused); a smaller one reads them resized down (a warning), both
        naming the two sizes. Without a cache (or a cache that predates the record), nothing."""
        if self.crop_cache is None or self.cache_size is None or image_size == self.cache_size:
            return
        if image_size > self.cache_size:
            raise ValueError(
                f"the crop cache {self.crop_cache} was cut for models of {self.cache_size} px and "
                f"this model reads {image_size} px: its crops would be enlarged; write a cache "
                f"with --size {image_size} (notebook 00: image_size), or train at {self.cache_size}"
            )
        warnings.warn(
            f"the crop cache {self.crop_cache} was cut for models of {self.cache_size} px; its "
            f"crops are resized down to this model's {image_size} px",
            stacklevel=3,
        )

    def _cached(self, part: str, names, targets=None):

        cache_part = "test" if part == "test" else "train"
        return crops.cached_records(self.crop_cache, cache_part, names, targets)

    def _reordered(self, part: str, rows: np.ndarray, image_size: int, batch_size: int):
        """Batches of ``rows`` in the order given, from the cache, which yields photos in its
        own order: the (few) photos are read sorted, then put in the order asked."""
        import tensorflow as tf

        order = np.argsort(rows, kind="stable")
        images = np.concatenate(
            list(self.batches(part, image_size, batch_size, rows[order]).as_numpy_iterator())
        )
        restored = np.empty_like(images)
        restored[order] = images
        return tf.data.Dataset.from_tensor_slices(restored).batch(batch_size)

    def training_batches(
        self,
        image_size: int,
        batch_size: int,
        augmentation=None,
        label_as_input: bool = True,
        seed: int = 0,
    ):
        """Shuffled, augmented, repeating batches of the ``train`` photos (and pseudo-labelled
        test photos, spread evenly among them) with their integer targets, and the number of
        steps in one pass over them."""
        from whaleutils.images import pipeline

        targets = self.encoding.encode_individuals(self.train["individual_id"])
        self.check_cache_size(image_size)
        jitter = 0.0 if augmentation is None else augmentation.box_jitter
        if self.crop_cache is not None and jitter > self.cache_box_jitter + 1e-9:
            raise ValueError(
                f"box_jitter={jitter} needs more room around each crop than the crop cache "
                f"{self.crop_cache} has (box_jitter={self.cache_box_jitter}); write a cache "
                f"with --box-jitter {jitter}, or train with box_jitter <= {self.cache_box_jitter}"
            )
        records = self._training_records("train", self.train, targets)
        count = len(self.train)
        if self.pseudo_labels is not None and len(self.pseudo_labels):
            pseudo = self.pseudo_labels
            pseudo_targets = self.encoding.encode_individuals(pseudo["individual_id"])
            records = _interleaved(
                records, self._training_records("test", pseudo, pseudo_targets),
                len(self.train), len(pseudo), seed,
            )  # fmt: skip
            count += len(pseudo)
        dataset = pipeline.make_dataset(
            records,
            image_size,
            batch_size,
            training=True,
            augmentation=augmentation,
            label_as_input=label_as_input,
            crop_to_box=self.crop_to_box or self.crop_cache is not None,
            box_margin=self.box_margin,
            repeat=True,
            seed=seed,
        )
        return dataset, max(1, int(np.ceil(count / batch_size)))

    def _training_records(self, part: str, frame: pd.DataFrame, targets: np.ndarray):
        """Records of ``frame``'s photos of ``part`` with ``targets``, from the cache if any."""
        from whaleutils.images import pipeline

        if self.crop_cache is not None:
            return self._cached(part, frame["image"], targets)
        return pipeline.file_records(frame, self.image_folder(part), targets)

    def batches_by_stage(self, batch_size: int, augmentation=None, seed: int = 0):
        """``(image_size, stage) -> (batches, steps)``: :meth:`training_batches` at each stage's
        image size, shuffled by ``seed + stage`` (``train.fit_progressive``'s ``batches_at``)."""

        def batches_at(image_size: int, stage: int):
            return self.training_batches(image_size, batch_size, augmentation, seed=seed + stage)

        return batches_at


def _interleaved(first, second, n_first: int, n_second: int, seed: int):
    """The records of two datasets in one, ``second``'s spread at random among ``first``'s
    (a fixed order by ``seed``), so a shuffle buffer smaller than both still mixes them."""
    import tensorflow as tf

    order = np.concatenate([np.zeros(n_first, np.int64), np.ones(n_second, np.int64)])
    order = np.random.default_rng(seed).permutation(order)
    return tf.data.Dataset.choose_from_datasets(
        [first, second], tf.data.Dataset.from_tensor_slices(order)
    )


def load_split(
    data_dir: str | os.PathLike | None,
    fold: int = 0,
    n_folds: int = 5,
    seed: int = 0,
    max_valid_images: int | None = None,
    crop_cache: str | os.PathLike | None = None,
    boxes: str | os.PathLike | dict | None = None,
    box_margin: float | None = None,
    max_train_images: int | None = None,
    fold_groups: str | None = "auto",
) -> Split:
    """Read a data set and split off validation fold ``fold`` (see ``data.make_folds``).

    ``fold_groups``: the column whose photos stay in one fold (``data.resolve_fold_groups``;
    "auto": ``encounter`` where train.csv has it, so an encounter's near-identical photos are
    never split between training and validation; None: photo by photo).

    ``max_valid_images`` keeps a deterministic random subset of the validation rows (for quick
    profiles). ``max_train_images`` keeps whole training individuals, drawn at random (by
    ``seed``), while their photos fit in it (a quick run of the whole pipeline, e.g. the Kaggle
    canary); validation photos of the individuals left out become ``new_individual``.
    ``crop_cache``: a crop cache of this data set (``crops.find_crop_cache``: a folder
    written by ``crops.write_crop_cache``, notebook 00's output, or its name among Kaggle's
    inputs), read instead of the photos; the split's frames keep the photos' boxes, so that
    what reads photos (local features) frames them as the cache did. ``boxes``: a CSV (or
    folder of CSVs, ``data.read_boxes``, or an attached dataset's name, ``data.find_boxes``)
    of image, box for training and test photos,
    used instead of the set's own (``train.csv``'s box column, ``test_boxes.csv``); a photo it
    does not list is used whole. ``box_margin``: share of a box's size added on each side
    before cropping (None: ``photos.BOX_MARGIN``, or the cache's own margin).

    Raises
    ------
    ValueError
        If ``boxes`` other than those a ``crop_cache`` was cut with, or a ``box_margin``
        other than its own, come with it (its crops were cut when it was written).
    """
    cache = None if crop_cache is None else crops.find_crop_cache(crop_cache)
    cache_index = None if cache is None else crops.read_index(cache)
    if cache_index is not None:
        cache_margin = float(cache_index["margin"])
        if box_margin is not None and float(box_margin) != cache_margin:
            raise ValueError(
                f"box_margin={box_margin} differs from the margin {cache_margin} that "
                f"{cache} was cut with; write a cache with --margin {box_margin}"
            )
        box_margin = cache_margin
    box_margin = photos.BOX_MARGIN if box_margin is None else float(box_margin)
    if box_margin < 0:
        raise ValueError(f"box_margin must be >= 0, got box_margin={box_margin}")
    data_dir = data.find_data_dir(data_dir)
    train_table = data.read_train(data_dir)
    fold_groups = data.resolve_fold_groups(train_table, fold_groups)
    folds = data.make_folds(train_table, n_folds=n_folds, seed=seed, groups=fold_groups)
    test = pd.DataFrame({"image": data.read_test_images(data_dir)})
    test_boxes = data.read_test_boxes(data_dir)
    if test_boxes is not None:
        test = test.merge(test_boxes, on="image", how="left", validate="one_to_one").fillna(
            {"box": ""}
        )
    by_name = data.find_boxes(boxes)  # read once: the split's boxes and the cache's check
    if boxes is not None:
        folds["box"] = data.boxes_column(folds["image"], by_name)
        test["box"] = data.boxes_column(test["image"], by_name)
        if not (test["box"] != "").any():  # no test boxes: photos stay whole (Split.crop_to_box)
            test = test.drop(columns="box")
    frames_match_cache = False
    if cache_index is not None:
        frames_match_cache = cache_index.get("boxes_sha256") == crops.boxes_digest(
            crops.part_frames(data_dir, by_name)
        )
        if boxes is not None and not frames_match_cache:
            raise ValueError(
                f"boxes={str(boxes)!r} are not the boxes crop_cache={str(cache)!r} was cut with "
                "(its crops.json boxes_sha256 differs): pass the boxes it was written with, or "
                "none (python -m whaleutils crops --boxes CSV writes a cache from others)"
            )
    train, valid = data.split_fold(folds, fold)
    if max_train_images is not None and len(train) > max_train_images:
        train, valid = _fewer_individuals(train, valid, int(max_train_images), seed)
    if max_valid_images is not None and len(valid) > max_valid_images:
        valid = valid.sample(n=max_valid_images, random_state=seed).sort_index()
    solution_path = data.Layout(data_dir).test_solution
    solution = data.read_solution(solution_path) if solution_path.is_file() else None
    return Split(
        data_dir,
        train.reset_index(drop=True),
        valid.reset_index(drop=True),
        test,
        data.LabelEncoding.fit(train),
        solution,
        cache,
        box_margin,
        fold,
        n_folds,
        seed,
        fold_groups,
        cache_crop_to_box=bool(cache_index and cache_index["crop_to_box"]),
        cache_box_jitter=float(cache_index.get("box_jitter", 0.0)) if cache_index else 0.0,
        frames_match_cache=frames_match_cache,
        cache_size=int(cache_index["size"]) if cache_index else None,
        max_valid_images=max_valid_images,
        max_train_images=max_train_images,
    )


def _fewer_individuals(
    train: pd.DataFrame, valid: pd.DataFrame, max_images: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Whole training individuals in a random order (by ``seed``), kept while their photos fit
    in ``max_images``; validation targets follow (the others' photos are new)."""
    if max_images < 1:
        raise ValueError(f"max_train_images must be >= 1, got max_train_images={max_images}")
    counts = train["individual_id"].value_counts().sort_index()
    order = np.random.default_rng(seed).permutation(len(counts))
    kept, total = [], 0
    for individual, photos_of in zip(counts.index[order], counts.to_numpy()[order], strict=True):
        if total + photos_of <= max_images:
            kept.append(individual)
            total += photos_of
    train = train[train["individual_id"].isin(kept)]
    valid = valid.assign(
        target_id=np.where(
            valid["individual_id"].isin(kept), valid["individual_id"], NEW_INDIVIDUAL
        )
    )
    return train, valid


# The entries of a run's recorded fold (``Split.describe_fold``, ``scores.json``'s ``split``)
# that choose its rows; where the photos are (data_dir, crop_cache, boxes) is the reader's.
RECORDED_SPLIT = ("fold", "n_folds", "seed", "fold_groups", "max_valid_images", "max_train_images")


def load_recorded_split(
    record: Mapping[str, object],
    data_dir: str | os.PathLike | None,
    crop_cache: str | os.PathLike | None = None,
    boxes: str | os.PathLike | dict | None = None,
    box_margin: float | None = None,
    source: str = "the run",
) -> Split:
    """The split a trained run was validated on: :func:`load_split` with the fold, folds, seed,
    fold groups and subsets of its ``record`` (``scores.json``'s ``split``), on the photos of
    ``data_dir`` (read from ``crop_cache`` / framed by ``boxes``, as the reader's are).

    Raises
    ------
    ValueError
        Naming ``source`` if the record lacks the fold, folds or seed.
    """
    missing = [name for name in ("fold", "n_folds", "seed") if name not in record]
    if missing:
        raise ValueError(
            f"{source}: its recorded split has no {missing}; this output predates fold records: "
            "run its notebook again"
        )
    chosen = {name: record[name] for name in RECORDED_SPLIT if name in record}
    chosen.setdefault("fold_groups", None)  # a record before encounters: photo by photo
    return load_split(data_dir, crop_cache=crop_cache, boxes=boxes, box_margin=box_margin, **chosen)
