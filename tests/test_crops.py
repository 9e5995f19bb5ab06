"""The crop cache: written once, read by a Split instead of the photos."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from whaleutils import cli
from whaleutils.datasets import data
from whaleutils.images import crops, photos
from whaleutils.retrieval import splits


@pytest.fixture(scope="module")
def cache(small_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops") / "cache"
    crops.write_crop_cache(small_synth, out, size=40)
    return out


def decoded(cache_dir, part):
    index = crops.read_index(cache_dir)
    from whaleutils.images import pipeline

    shards = [cache_dir / name for name in index["parts"][part]["shards"]]
    records = pipeline.tfrecord_records(shards)
    return [
        (record["image_name"].decode(), tf.io.decode_jpeg(record["image_bytes"]).numpy())
        for record in records.as_numpy_iterator()
    ]


def test_the_cache_holds_every_photo_cropped_to_its_box_and_resized(small_synth, cache):
    index = json.loads((cache / crops.CACHE_INDEX).read_text())
    train = data.read_train(small_synth)
    assert index["size"] == 40 and index["crop_to_box"] is True
    assert index["parts"]["train"]["names"] == train["image"].tolist()
    assert index["parts"]["test"]["names"] == data.read_test_images(small_synth)
    assert all(
        name.endswith(f"-{len(index['parts'][part]['names'])}.tfrec")
        for part in ("train", "test")
        for name in index["parts"][part]["shards"]
    )
    cached = decoded(cache, "train")
    for (name, image), box in list(zip(cached, train["box"], strict=True))[:5]:
        # the one photo path's crop at 40 px (photos.resize is checked against TensorFlow's
        # antialiased resize in test_photos), JPEG-encoded at the cache's quality: exactly
        photo = photos.prepare(small_synth / "train_images" / name, data.parse_box(box), 40)
        encoded = io.BytesIO()
        Image.fromarray(photo).save(encoded, "JPEG", quality=95)
        assert image.shape == (40, 40, 3)
        np.testing.assert_array_equal(image, tf.io.decode_jpeg(encoded.getvalue()).numpy())


def test_boxes_from_a_csv_give_the_crops_of_the_sets_own_boxes(small_synth, cache, tmp_path):
    train = data.read_train(small_synth)
    test_boxes = data.read_test_boxes(small_synth)
    boxes_csv = tmp_path / "boxes.csv"
    pd.concat([train[["image", "box"]], test_boxes[["image", "box"]]]).to_csv(
        boxes_csv, index=False
    )
    out = tmp_path / "from_csv"
    argv = ["crops", "--data", str(small_synth), "--boxes", str(boxes_csv), "--size", "40"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    for part in ("train", "test"):
        for (name, image), (other, own) in zip(
            decoded(out, part), decoded(cache, part), strict=True
        ):
            assert name == other and np.array_equal(image, own)
    assert cli.main([*argv, "--out", str(out)]) == 2  # never into a folder that is not empty


def test_a_split_reads_the_cache_in_its_own_row_order(small_synth, cache):
    split = splits.load_split(small_synth, crop_cache=cache)
    files = splits.load_split(small_synth)
    assert split.valid["image"].tolist() == files.valid["image"].tolist()
    all_rows = np.concatenate(list(split.batches("valid", 40, 8).as_numpy_iterator()))
    assert all_rows.shape == (len(split.valid), 40, 40, 3)
    rows = np.array([5, 0, 3])  # asked out of order
    some = np.concatenate(list(split.batches("valid", 40, 2, rows=rows).as_numpy_iterator()))
    assert np.array_equal(some, all_rows[rows])
    test = np.concatenate(list(split.batches("test", 40, 8).as_numpy_iterator()))
    assert len(test) == len(split.test)
    # the training batches carry each photo's label, joined by name
    batches, steps = split.training_batches(40, 4, seed=0)
    inputs, targets = next(iter(batches))
    assert inputs["image"].shape == (4, 40, 40, 3)
    assert set(targets.numpy()) <= set(range(split.encoding.n_individuals))
    assert steps == int(np.ceil(len(split.train) / 4))


def test_cache_errors_name_what_is_wrong(small_synth, cache, tmp_path):
    with pytest.raises(KeyError, match=r"photo\(s\) not cached, e.g. \['nope.jpg'\]"):
        crops.cached_records(cache, "train", ["nope.jpg"])
    names = data.read_train(small_synth)["image"].tolist()
    with pytest.raises(ValueError, match="not in the cache's order"):
        crops.cached_records(cache, "train", [names[3], names[1]])
    with pytest.raises(FileNotFoundError, match="not a crop cache"):
        splits.load_split(small_synth, crop_cache=tmp_path)


def test_a_cache_brings_its_own_margin_and_refuses_boxes(small_synth, cache, tmp_path):
    assert splits.load_split(small_synth, crop_cache=cache).box_margin == 0.1
    assert splits.load_split(small_synth, crop_cache=cache, box_margin=0.1).box_margin == 0.1
    with pytest.raises(ValueError, match="box_margin=0.3 differs from the margin 0.1"):
        splits.load_split(small_synth, crop_cache=cache, box_margin=0.3)
    boxes_csv = tmp_path / "boxes.csv"
    boxes_csv.write_text("image,box\n")
    with pytest.raises(ValueError, match="both given: a cache's crops are cut when it is written"):
        splits.load_split(small_synth, crop_cache=cache, boxes=boxes_csv)
