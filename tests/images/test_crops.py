"""The crop cache: written once, read by a Split instead of the photos."""

import io
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from whaleutils import cli
from whaleutils.datasets import data
from whaleutils.images import crops, photos, pipeline
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


def test_a_model_of_another_size_than_the_cache_is_refused_or_warned(small_synth, cache):
    """The cache was cut for 40 px models: 48 px would enlarge its crops (refused, naming both
    sizes and the fix); 32 px reads them resized down, with a warning naming both."""
    split = splits.load_split(small_synth, crop_cache=cache)
    assert split.cache_size == 40
    with pytest.raises(ValueError, match=r"cut for models of 40 px and this model reads 48 px.*"
                       r"--size 48"):  # fmt: skip
        split.batches("valid", 48, 8)
    with pytest.raises(ValueError, match="this model reads 48 px"):
        split.training_batches(48, 4)
    with pytest.warns(UserWarning, match="cut for models of 40 px; its crops are resized down to "
                      "this model's 32 px"):  # fmt: skip
        smaller = np.concatenate(list(split.batches("valid", 32, 8).as_numpy_iterator()))
    assert smaller.shape == (len(split.valid), 32, 32, 3)


def test_cache_errors_name_what_is_wrong(small_synth, cache, tmp_path):
    with pytest.raises(KeyError, match=r"photo\(s\) not cached, e.g. \['nope.jpg'\]"):
        crops.cached_records(cache, "train", ["nope.jpg"])
    names = data.read_train(small_synth)["image"].tolist()
    with pytest.raises(ValueError, match="not in the cache's order"):
        crops.cached_records(cache, "train", [names[3], names[1]])
    with pytest.raises(FileNotFoundError, match=r"no crops.json in it or in its crops/ folder"):
        splits.load_split(small_synth, crop_cache=tmp_path)


def test_a_cache_brings_its_own_margin_and_refuses_other_boxes(small_synth, cache, tmp_path):
    assert splits.load_split(small_synth, crop_cache=cache).box_margin == 0.1
    assert splits.load_split(small_synth, crop_cache=cache, box_margin=0.1).box_margin == 0.1
    with pytest.raises(ValueError, match="box_margin=0.3 differs from the margin 0.1"):
        splits.load_split(small_synth, crop_cache=cache, box_margin=0.3)
    boxes_csv = tmp_path / "boxes.csv"
    boxes_csv.write_text("image,box\n")  # every photo whole: not what the cache was cut with
    with pytest.raises(ValueError, match="are not the boxes crop_cache=.* was cut with"):
        splits.load_split(small_synth, crop_cache=cache, boxes=boxes_csv)
    # the set's own boxes, given as a file, are the cache's: accepted, and the frames match it
    train, test_boxes = data.read_train(small_synth), data.read_test_boxes(small_synth)
    pd.concat([train[["image", "box"]], test_boxes]).to_csv(boxes_csv, index=False)
    same = splits.load_split(small_synth, crop_cache=cache, boxes=boxes_csv)
    assert same.frames_match_cache and same.crop_to_box
    assert splits.load_split(small_synth, crop_cache=cache).frames_match_cache


@pytest.fixture(scope="module")
def jitter_cache(small_synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("crops") / "jitter"
    crops.write_crop_cache(small_synth, out, size=40, box_jitter=0.1)
    return out


def test_a_cache_with_room_holds_each_crop_on_whole_pixels_with_its_box(small_synth, jitter_cache):
    index = crops.read_index(jitter_cache)
    assert index["format"] == crops.FORMAT and index["box_jitter"] == 0.1
    train = data.read_train(small_synth)
    shards = [jitter_cache / name for name in index["parts"]["train"]["shards"]]
    records = list(pipeline.tfrecord_records(shards).as_numpy_iterator())[:8]
    found, whole = [], []
    for record, box in zip(records, train["box"], strict=False):
        image = tf.io.decode_jpeg(record["image_bytes"]).numpy()
        top, left, bottom, right = photos.crop_window(record["box"], *image.shape[:2])
        assert (bottom - top, right - left) == (40, 40)  # the model's crop, unresized
        photo = photos.prepare(small_synth / "train_images" / record["image_name"].decode(),
                               data.parse_box(box), 40)  # fmt: skip
        # the same crop up to JPEG and a sub-pixel shift (the photo path rounds its window out
        # to whole photo pixels); the whole cached image, room and all, is far from it
        found.append(np.abs(image[top:bottom, left:right].astype(int) - photo).mean())
        whole.append(np.abs(photos.resize(image, 40).astype(int) - photo).mean())
        # room on a side unless the photo ends there
        assert image.shape[0] > 40 or image.shape[1] > 40 or top == left == 0
    assert np.mean(found) < 3.0 and np.mean(whole) > 2 * np.mean(found), (found, whole)


def test_a_cache_gives_the_crops_the_photos_give_for_inference_and_jittered_training(
    small_synth, cache, jitter_cache
):
    """The same split read from the photos and from the cache: the same inference batches and,
    with the same seeds, the same box-jittered training crops (up to JPEG and resampling)."""
    from_photos = splits.load_split(small_synth)
    from_cache = splits.load_split(small_synth, crop_cache=jitter_cache)
    assert from_cache.crop_to_box and from_cache.cache_box_jitter == 0.1

    def images(batches):
        return np.concatenate([np.asarray(b) for b in batches.as_numpy_iterator()]).astype(int)

    inferred = images(from_photos.batches("valid", 40, 8))
    assert np.abs(inferred - images(from_cache.batches("valid", 40, 8))).mean() < 2.0
    only_jitter = pipeline.Augmentation(**{
        **vars(pipeline.Augmentation.none()), "box_jitter": 0.1, "crop_min_area": 1.0
    })  # fmt: skip

    def training(split):
        records = (
            split._cached("train", split.train["image"])
            if split.crop_cache is not None
            else pipeline.file_records(split.train, split.image_folder("train"))
        )
        batches = pipeline.make_dataset(
            records, 40, 8, training=True, augmentation=only_jitter, label_as_input=False,
            shuffle_buffer=1, seed=3, deterministic=True, box_margin=split.box_margin,
        )  # fmt: skip
        return np.concatenate([b[0] for b in batches.take(3).as_numpy_iterator()]).astype(int)

    jittered, cached = training(from_photos), training(from_cache)
    unjittered = images(from_photos.batches("train", 40, 8).take(3))
    # the same windows (3.5 levels apart here: JPEG, a sub-pixel shift and a second resize of
    # a 40 px cache), where the jitter itself moves them by 8.9
    assert np.abs(jittered - cached).mean() < 0.5 * np.abs(jittered - unjittered).mean()
    with pytest.raises(ValueError, match=r"box_jitter=0.2 needs more room .* --box-jitter 0.2"):
        from_cache.training_batches(40, 8, pipeline.Augmentation(box_jitter=0.2))
    zero_room = splits.load_split(small_synth, crop_cache=cache)
    with pytest.raises(ValueError, match=r"has \(box_jitter=0.0\)"):
        zero_room.training_batches(40, 8, pipeline.Augmentation(box_jitter=0.05))


def test_a_cache_written_before_boxes_were_stored_is_read_whole_as_before(
    small_synth, cache, tmp_path
):
    """The first format: crops without boxes in the records, no format in crops.json."""
    index = json.loads((cache / crops.CACHE_INDEX).read_text())
    old = tmp_path / "old"
    old.mkdir()
    for entry in index["parts"].values():
        for shard in entry["shards"]:
            with tf.io.TFRecordWriter(str(old / shard)) as writer:
                for record in pipeline.tfrecord_records([cache / shard]).as_numpy_iterator():
                    name, image = record["image_name"], record["image_bytes"]
                    writer.write(pipeline.serialize_example(name, image))
    for key in ("format", "box_jitter", "boxes_sha256"):
        del index[key]
    (old / crops.CACHE_INDEX).write_text(json.dumps(index))
    now, before = (splits.load_split(small_synth, crop_cache=c) for c in (cache, old))
    assert before.cache_box_jitter == 0.0 and not before.frames_match_cache
    for part in ("valid", "test"):
        np.testing.assert_array_equal(
            *(
                np.concatenate(list(s.batches(part, 40, 8).as_numpy_iterator()))
                for s in (now, before)
            )
        )


def test_a_killed_writer_leaves_no_cache_and_the_next_one_replaces_its_remains(
    small_synth, tmp_path, monkeypatch
):
    out = tmp_path / "cache"
    calls = {"n": 0}
    real = photos.prepare_cache_entry

    def dies_on_the_fifth(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # as a kill mid-way
        return real(*args, **kwargs)

    def partials():
        return sorted(path.name for path in tmp_path.glob(f"cache{crops.PARTIAL}*"))

    monkeypatch.setattr(photos, "prepare_cache_entry", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        crops.write_crop_cache(small_synth, out, size=24)
    assert not out.exists() and partials() == [f"cache{crops.PARTIAL}-{os.getpid()}"]
    with pytest.raises(FileNotFoundError, match="no crops.json"):
        crops.find_crop_cache(out)
    # the remains of a writer that has ended are removed; those of a running one are its own
    ended = subprocess.Popen(["true"])
    ended.wait()
    running = subprocess.Popen(["sleep", "60"])
    try:
        for pid in (ended.pid, running.pid):
            (tmp_path / f"cache{crops.PARTIAL}-{pid}").mkdir()
        # the user's folders of similar names, and an ended writer's name holding their file
        users = [f"cache{crops.PARTIAL}-notes", f"cache{crops.PARTIAL}_backup_2025", "cachex"]
        for name in users:
            (tmp_path / name).mkdir()
            (tmp_path / name / "keep.txt").write_text("keep")
        ended_again = subprocess.Popen(["true"])
        ended_again.wait()
        theirs = tmp_path / f"cache{crops.PARTIAL}-{ended_again.pid}"
        theirs.mkdir()
        (theirs / "thesis.tex").write_text("keep")
        monkeypatch.setattr(photos, "prepare_cache_entry", real)
        index = crops.write_crop_cache(small_synth, out, size=24)
        assert crops.read_index(out) == index
        assert partials() == sorted(
            [f"cache{crops.PARTIAL}-{running.pid}", theirs.name, *users[:2]]
        )
        assert all((tmp_path / name / "keep.txt").is_file() for name in users)
        # glob characters in the name widen nothing
        odd = tmp_path / "c[ab]"
        (tmp_path / f"ca{crops.PARTIAL}-{ended.pid}").mkdir()
        crops.write_crop_cache(small_synth, odd, size=16)
        assert (tmp_path / f"ca{crops.PARTIAL}-{ended.pid}").is_dir()
        with pytest.raises(ValueError, match="is inside the data set"):
            crops.write_crop_cache(small_synth, small_synth / "train_images" / "x", size=16)
        assert not (small_synth / "train_images" / "x").exists()
    finally:
        running.kill()


def test_of_two_writers_at_once_the_first_to_finish_wins(small_synth, tmp_path, monkeypatch):
    """Another process completes the same cache while this one writes: its cache stays, this
    writer's copy is removed, and it says why."""
    out, other = tmp_path / "cache", tmp_path / "other"
    crops.write_crop_cache(small_synth, other, size=16)
    real, calls = photos.prepare_cache_entry, {"n": 0}

    def the_other_finishes_meanwhile(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            shutil.copytree(other, out)
        return real(*args, **kwargs)

    monkeypatch.setattr(photos, "prepare_cache_entry", the_other_finishes_meanwhile)
    with pytest.raises(FileExistsError, match="written by another process while this one wrote"):
        crops.write_crop_cache(small_synth, out, size=24)
    assert crops.read_index(out)["size"] == 16  # the other's, untouched
    assert not list(tmp_path.glob(f"cache{crops.PARTIAL}*"))


def test_a_cache_is_found_by_folder_notebook_output_or_attached_name(cache, tmp_path, monkeypatch):
    from whaleutils.contracts import environment

    notebook_out = tmp_path / "runs" / "00_crop_cache"
    shutil.copytree(cache, notebook_out / crops.NOTEBOOK_FOLDER)
    assert crops.find_crop_cache(cache) == cache
    assert crops.find_crop_cache(notebook_out) == notebook_out / crops.NOTEBOOK_FOLDER
    mounted = tmp_path / "input" / "notebooks" / "someone" / "happywhale-00-crop-cache"
    shutil.copytree(notebook_out, mounted / "00_crop_cache")
    monkeypatch.setattr(environment, "KAGGLE_INPUT", tmp_path / "input")
    assert crops.find_crop_cache("00_crop_cache") == mounted / "00_crop_cache" / "crops"
    with pytest.raises(FileNotFoundError, match=r"'elsewhere'.*no folder of that name"):
        crops.find_crop_cache("elsewhere")
