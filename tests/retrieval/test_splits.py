"""The split of a data set into train / valid / test and its galleries, on hand-checkable cases."""

import json

import numpy as np
import pandas as pd
import pytest

from whaleutils.datasets import data
from whaleutils.retrieval import embed, splits


def tiny_split(solution=True) -> splits.Split:
    """Train: a a b c. Valid: a (known), d (validation-only, two photos), b (known).
    Test: q1 q2 (solution: a, d)."""
    train = pd.DataFrame(
        {"image": ["t_a1", "t_a2", "t_b1", "t_c1"], "individual_id": ["a", "a", "b", "c"]}
    )
    valid = pd.DataFrame(
        {
            "image": ["v_a3", "v_d1", "v_d2", "v_b2"],
            "individual_id": ["a", "d", "d", "b"],
            "target_id": ["a", "new_individual", "new_individual", "b"],
        }
    )
    test = pd.DataFrame({"image": ["q1", "q2"]})
    truth = pd.DataFrame({"image": ["q2", "q1"], "individual_id": ["d", "a"]})
    return splits.Split(
        data_dir=None,
        train=train,
        valid=valid,
        test=test,
        encoding=data.LabelEncoding.fit(train),
        solution=truth if solution else None,
    )


def test_galleries_mirror_the_test_gallery():
    split = tiny_split()
    # valid queries: the train photos, then the known validation photos (v_a3, v_b2), not d's
    assert split.gallery_labels("valid").tolist() == ["a", "a", "b", "c", "a", "b"]
    # test queries: every labelled photo
    assert split.gallery_labels("test").tolist() == ["a", "a", "b", "c", "a", "d", "d", "b"]
    # each known validation photo sits in its gallery at rows 4 and 5; d's photos nowhere
    assert split.own_gallery_rows("valid").tolist() == [4, -1, -1, 5]
    assert split.own_gallery_rows("test").tolist() == [-1, -1]
    embeddings = {"train": np.arange(4.0)[:, None], "valid": 10 + np.arange(4.0)[:, None]}
    assert split.gallery("valid", embeddings)[:, 0].tolist() == [0, 1, 2, 3, 10, 13]
    assert split.gallery("test", embeddings)[:, 0].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]


def test_counts_padding_and_truth():
    split = tiny_split()
    assert split.photo_counts("valid") == {"a": 3, "b": 2, "c": 1}
    assert split.photo_counts("test") == {"a": 3, "b": 2, "d": 2, "c": 1}
    assert split.frequent_ids("test", 3) == ["a", "b", "d"]  # b and d tie at 2: by id
    assert split.truth("valid", ["v_b2", "v_d1"]) == ["b", "new_individual"]
    assert split.truth("test", ["q1", "q2"]) == ["a", "d"]
    assert tiny_split(solution=False).truth("test", ["q1"]) is None
    with pytest.raises(KeyError, match=r"1 image\(s\) not in the valid part, e.g. \['q1'\]"):
        split.truth("valid", ["q1"])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.frame("fit"), "part must be one of"),
        (lambda s: s.gallery_labels("train"), "galleries exist for 'valid' and 'test'"),
        (lambda s: s.own_gallery_rows("train"), "queries are 'valid' or 'test'"),
        (
            lambda s: s.gallery("valid", {"train": np.zeros((3, 1)), "valid": np.zeros((4, 1))}),
            r"embeddings\['train'\] has 3 rows, the split's train part 4",
        ),
    ],
)
def test_bad_parts_are_named(call, message):
    with pytest.raises((ValueError, KeyError), match=message):
        call(tiny_split())


def test_load_split_on_a_synthetic_set(small_synth):
    split = splits.load_split(small_synth, fold=1, n_folds=3, seed=0, max_valid_images=10)
    # the synthetic set has encounters: "auto" keeps each one's photos in one fold
    assert split.fold_groups == "encounter" and split.describe_fold()["fold_groups"] == "encounter"
    folds = data.make_folds(data.read_train(small_synth), n_folds=3, seed=0, groups="encounter")
    assert len(split.train) == int((folds["fold"] != 1).sum())
    assert not set(split.train["encounter"]) & set(split.valid["encounter"])
    photo_by_photo = splits.load_split(small_synth, fold=1, n_folds=3, fold_groups=None)
    assert photo_by_photo.fold_groups is None
    assert set(photo_by_photo.train["encounter"]) & set(photo_by_photo.valid["encounter"])
    assert len(split.valid) == 10
    assert split.crop_to_box == (small_synth / "test_boxes.csv").is_file()
    assert set(split.valid["image"]) <= set(folds.loc[folds["fold"] == 1, "image"])
    known = split.valid["individual_id"].isin(split.train["individual_id"])
    assert (
        split.valid["target_id"] == split.valid["individual_id"].where(known, "new_individual")
    ).all()
    assert split.encoding.individual_ids == sorted(set(split.train["individual_id"]))
    batches = split.batches("valid", 24, 4, rows=[2, 0])
    images = np.concatenate([batch.numpy() for batch in batches])
    assert images.shape == (2, 24, 24, 3)
    first = next(iter(split.batches("valid", 24, 4))).numpy()
    np.testing.assert_array_equal(images[1], first[0])  # rows picked in the order given
    dataset, steps = split.training_batches(24, 8)
    assert steps == int(np.ceil(len(split.train) / 8))
    inputs, targets = next(iter(dataset))
    assert inputs["image"].shape == (8, 24, 24, 3) and targets.shape == (8,)
    counts = split.class_counts()
    assert counts.sum() == len(split.train) and len(counts) == split.encoding.n_individuals
    np.testing.assert_array_equal(split.class_counts(mirror_identities=True), [*counts, *counts])
    batches_at = split.batches_by_stage(8, seed=3)  # progressive resizing's stages
    dataset_small, steps_small = batches_at(16, 0)
    small, _ = next(iter(dataset_small))
    assert small["image"].shape[1:] == (16, 16, 3) and steps_small == steps
    assert next(iter(batches_at(24, 1)[0]))[0]["image"].shape[1:] == (24, 24, 3)


def test_boxes_and_margin_from_a_csv(small_synth, tmp_path):
    own = splits.load_split(small_synth, fold=0, n_folds=3)
    first_train, first_test = own.train["image"].iloc[0], own.test["image"].iloc[0]
    boxes_csv = tmp_path / "boxes.csv"
    pd.DataFrame(
        {"image": [first_train, f"elsewhere/{first_test}"], "box": ["1 2 30 40", "5 6 20 21"]}
    ).to_csv(boxes_csv, index=False)
    split = splits.load_split(small_synth, fold=0, n_folds=3, boxes=boxes_csv, box_margin=0.25)
    assert split.box_margin == 0.25 and split.crop_to_box
    assert split.train["box"].iloc[0] == "1 2 30 40"
    assert (split.train["box"].iloc[1:] == "").all()  # a photo the CSV does not list: whole
    assert split.test["box"].tolist() == ["5 6 20 21"] + [""] * (len(split.test) - 1)
    assert split.describe_fold() == {
        "fold": 0, "n_folds": 3, "seed": 0, "fold_groups": "encounter", "crop_to_box": True,
        "max_valid_images": None, "max_train_images": None,
    }  # fmt: skip
    assert own.box_margin == 0.1
    # boxes for training photos only: the test photos stay whole, so training photos do too
    pd.DataFrame({"image": [first_train], "box": ["1 2 30 40"]}).to_csv(boxes_csv, index=False)
    assert not splits.load_split(small_synth, n_folds=3, boxes=boxes_csv).crop_to_box
    with pytest.raises(ValueError, match="box_margin must be >= 0"):
        splits.load_split(small_synth, n_folds=3, box_margin=-0.1)


def test_a_flipped_gallery_adds_every_photos_mirror_image():
    split = tiny_split()
    assert (
        split.gallery_labels("valid", flipped=True).tolist() == ["a", "a", "b", "c", "a", "b"] * 2
    )
    # each known validation photo: its own row and its mirror image's row, 6 rows later
    assert split.own_gallery_rows("valid", flipped=True).tolist() == [
        [4, 10],
        [-1, -1],
        [-1, -1],
        [5, 11],
    ]
    assert split.own_gallery_rows("test", flipped=True).tolist() == [[-1, -1], [-1, -1]]
    embeddings = {
        "train": np.arange(4.0)[:, None],
        "valid": 10 + np.arange(4.0)[:, None],
        "train_mirrored": 100 + np.arange(4.0)[:, None],
        "valid_mirrored": 110 + np.arange(4.0)[:, None],
    }
    assert split.gallery("valid", embeddings, flipped=True)[:, 0].tolist() == [
        0,
        1,
        2,
        3,
        10,
        13,
        100,
        101,
        102,
        103,
        110,
        113,
    ]
    del embeddings["valid_mirrored"]
    with pytest.raises(ValueError, match=r"needs embeddings\['valid_mirrored'\]: embed with"):
        split.gallery("test", embeddings, flipped=True)


def test_a_recorded_split_is_the_split_the_run_was_validated_on(small_synth):
    """A run's recorded fold (describe_fold, as scores.json keeps it) loads the same rows, its
    subsets included; a record without the fold is refused naming its source."""
    run = splits.load_split(small_synth, fold=1, n_folds=3, seed=2, max_valid_images=10)
    record = json.loads(json.dumps(run.describe_fold()))  # as written to and read from JSON
    again = splits.load_recorded_split(record, small_synth)
    assert again.describe_fold() == run.describe_fold()
    for part in splits.PARTS:
        assert again.frame(part)["image"].tolist() == run.frame(part)["image"].tolist()
    other = splits.load_split(small_synth, fold=2, n_folds=3, seed=2, max_valid_images=10)
    assert other.valid["image"].tolist() != run.valid["image"].tolist()  # the fold matters
    with pytest.raises(
        ValueError, match=r"runs/x/scores.json: its recorded split has no \['seed'\]"
    ):
        splits.load_recorded_split(
            {"fold": 0, "n_folds": 3}, small_synth, source="runs/x/scores.json"
        )


def test_embeddings_whose_images_differ_from_the_split_are_refused_naming_both(tmp_path):
    payload = {"image_names": np.array(["a.jpg", "b.jpg", "c.jpg"])}
    embed.check_image_names(payload, tmp_path / "valid.npz", "valid", ["a.jpg", "b.jpg", "c.jpg"])
    with pytest.raises(
        ValueError,
        match=r"valid.npz: rows do not align with the split's valid "
        r"images: row 1 is 'b.jpg', expected 'x.jpg' \(3 rows, expected 3\)",
    ):
        embed.check_image_names(
            payload, tmp_path / "valid.npz", "valid", ["a.jpg", "x.jpg", "c.jpg"]
        )
    with pytest.raises(ValueError, match=r"row 2 is 'c.jpg', expected '\(no more images\)'"):
        embed.check_image_names(payload, tmp_path / "valid.npz", "valid", ["a.jpg", "b.jpg"])


def test_a_quick_split_keeps_whole_training_individuals(small_synth):
    """max_train_images keeps whole individuals while their photos fit; the validation photos
    of the others become new, as the test photos of unseen individuals are."""
    full = splits.load_split(small_synth, n_folds=3)
    quick = splits.load_split(small_synth, n_folds=3, max_train_images=40)
    assert 0 < len(quick.train) <= 40
    kept = set(quick.train["individual_id"])
    counts = full.train["individual_id"].value_counts()
    assert counts[list(kept)].sum() == len(quick.train)  # every photo of a kept individual
    assert quick.encoding.n_individuals == len(kept)
    expected = np.where(quick.valid["individual_id"].isin(kept), quick.valid["individual_id"],
                        "new_individual")  # fmt: skip
    assert (quick.valid["target_id"] == expected).all()
    assert splits.load_split(small_synth, n_folds=3, max_train_images=40).train.equals(quick.train)
    with pytest.raises(ValueError, match="max_train_images must be >= 1"):
        splits.load_split(small_synth, n_folds=3, max_train_images=0)


def test_a_validation_query_never_finds_its_own_encounter():
    """With encounter folds, a validation photo's burst-mates (its own encounter, in the same
    fold) are near copies: its gallery rows are excluded with its own, by hand and through the
    KNN head."""
    from whaleutils.retrieval import heads

    split = tiny_split()
    valid = split.valid.assign(image=["v_a3", "v_a4", "v_d1", "v_b2"])
    valid = valid.assign(
        individual_id=["a", "a", "d", "b"], target_id=["a", "a", "new_individual", "b"]
    )
    valid["encounter"] = ["e1", "e1", "e2", ""]
    grouped = splits.Split(
        None,
        split.train,
        valid,
        split.test,
        split.encoding,
        split.solution,
        fold_groups="encounter",
    )
    # gallery: t_a1 t_a2 t_b1 t_c1 (0-3), then v_a3 v_a4 v_b2 (4-6)
    assert grouped.own_gallery_rows("valid").tolist() == [[4, 5], [5, 4], [-1, -1], [6, -1]]
    assert grouped.own_gallery_rows("valid", flipped=True).tolist() == [
        [4, 5, 11, 12], [5, 4, 12, 11], [-1, -1, -1, -1], [6, -1, 13, -1]
    ]  # fmt: skip
    plain = splits.Split(None, split.train, valid, split.test, split.encoding, split.solution)
    assert plain.own_gallery_rows("valid").tolist() == [4, 5, -1, 6]
    # the burst-mate is the nearest photo by far, and is never found
    embeddings = {
        "train": np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]),
        "valid": np.array([[0.6, 0.8], [0.6, 0.8], [-0.6, 0.8], [0.1, 0.99]]),
    }
    _, indices, _ = heads.neighbours(grouped, embeddings, "valid", 2)
    assert indices[0].tolist() == [1, 6] and indices[1].tolist() == [1, 6]  # 0.96, 0.852
    _, indices, _ = heads.neighbours(plain, embeddings, "valid", 2)
    assert indices[0].tolist() == [5, 1]  # photo by photo: v_a3 finds v_a4 first


def test_pseudo_labelled_test_photos_join_training_once_per_pass(small_synth, tmp_path):
    split = splits.load_split(small_synth, fold=0, n_folds=3)
    chosen = split.test["image"].iloc[[4, 1, 7]].tolist()  # any order in the file
    whales = split.encoding.individual_ids[:2] + split.encoding.individual_ids[:1]
    path = tmp_path / "pseudo_labels.csv"
    pd.DataFrame({"image": chosen, "individual_id": whales, "inliers": 30}).to_csv(path)
    second = split.with_pseudo_labels(path)
    assert second.pseudo_labels["image"].tolist() == split.test["image"].iloc[[1, 4, 7]].tolist()
    assert second.describe_pseudo_labels() == {"file": str(path), "photos": 3}
    assert "+ 3 pseudo-labelled test images" in second.describe()
    assert split.pseudo_labels is None and len(second.train) == len(split.train)  # a new split
    counts = second.class_counts()
    np.testing.assert_array_equal(counts - split.class_counts(), [2, 1] + [0] * (len(counts) - 2))
    dataset, steps = second.training_batches(16, 4, seed=1)
    assert steps == int(np.ceil((len(split.train) + 3) / 4))
    targets = np.concatenate([t.numpy() for _, t in dataset.take(steps)])[: len(split.train) + 3]
    np.testing.assert_array_equal(np.bincount(targets, minlength=len(counts)), counts)


def test_interleaved_records_keep_each_datasets_order():
    import tensorflow as tf

    first = tf.data.Dataset.range(0, 6)
    second = tf.data.Dataset.range(100, 103)
    mixed = list(splits._interleaved(first, second, 6, 3, seed=0).as_numpy_iterator())
    assert sorted(mixed) == [0, 1, 2, 3, 4, 5, 100, 101, 102]
    assert [x for x in mixed if x < 100] == list(range(6))
    assert [x for x in mixed if x >= 100] == [100, 101, 102]
    assert mixed == list(splits._interleaved(first, second, 6, 3, seed=0).as_numpy_iterator())


@pytest.mark.parametrize(
    "rows, message",
    [
        ({"image": ["nope.jpg"], "individual_id": [0]}, r"row 2: 'nope.jpg' is not a test image"),
        ({"image": [1, 1], "individual_id": [0, 0]}, "row 3: .* is listed twice"),
        ({"image": [1], "individual_id": ["ghost"]}, "row 2: 'ghost' is not a training individual"),
        ({"image": [1]}, r"no column\(s\) \['individual_id'\]"),
    ],
)
def test_bad_pseudo_labels_are_refused_naming_the_row(small_synth, tmp_path, rows, message):
    split = splits.load_split(small_synth, fold=0, n_folds=3)
    rows = {  # 1 / 0: a real test image / training individual
        column: [
            split.test["image"].iloc[v] if column == "image" and v == 1
            else split.encoding.individual_ids[0] if column == "individual_id" and v == 0
            else v
            for v in values
        ]
        for column, values in rows.items()
    }  # fmt: skip
    path = tmp_path / "pseudo.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(ValueError, match=message):
        split.with_pseudo_labels(path)


def test_a_splits_encounters_are_train_csvs_and_test_metadatas(small_synth):
    split = splits.load_split(small_synth, 0, 3, 0)
    valid = split.encounters("valid")
    assert set(valid) == set(split.valid["image"]) and len(set(valid.values())) < len(valid)
    test = split.encounters("test")
    assert test == data.read_encounters(small_synth / "test_metadata.csv") and test
