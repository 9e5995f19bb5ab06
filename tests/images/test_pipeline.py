import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from PIL import Image

from whaleutils.datasets import data
from whaleutils.images import pipeline


@pytest.fixture(scope="module")
def tiny_images(tmp_path_factory):
    """Three JPEGs and one PNG with known content: left half red, right half blue."""
    folder = tmp_path_factory.mktemp("images")
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(pixels).save(folder / name, quality=100)
    Image.fromarray(pixels).save(folder / "d.png")
    frame = pd.DataFrame(
        {
            "image": ["a.jpg", "b.jpg", "c.jpg", "d.png"],
            "box": ["0 0 30 40", "", "30 0 60 40", "30 0 60 40"],
        }
    )
    return folder, frame


def _images(dataset):
    return np.concatenate([batch.numpy() for batch in dataset])


def test_crop_to_box_decodes_only_the_box(tiny_images):
    folder, frame = tiny_images
    records = pipeline.file_records(frame, folder, targets=[0, 1, 2, 3])
    images = _images(pipeline.make_dataset(records, 16, batch_size=2, box_margin=0.0))
    assert (
        images.shape == (4, 16, 16, 3) and images.dtype == np.uint8
    )  # a quarter of float32 to the device
    assert images[0, ..., 0].mean() > 240 and images[0, ..., 2].mean() < 15  # red half
    assert images[2, ..., 2].mean() > 240 and images[2, ..., 0].mean() < 15  # blue half
    assert images[3, ..., 2].mean() > 240  # PNG cropped after decoding
    left, right = images[1, :, :8].mean(axis=(0, 1)), images[1, :, 8:].mean(axis=(0, 1))
    assert left[0] > 200 and right[2] > 200  # no box: the whole photo


def test_full_image_mode_ignores_boxes(tiny_images):
    folder, frame = tiny_images
    records = pipeline.file_records(frame, folder)
    images = _images(pipeline.make_dataset(records, 16, batch_size=4, crop_to_box=False))
    assert images[0, :, :8, 0].mean() > 200 and images[0, :, 8:, 2].mean() > 200


def test_tfrecords_round_trip_and_counts(tiny_images, tmp_path):
    folder, frame = tiny_images
    paths = pipeline.write_tfrecords(
        frame, folder, tmp_path, "train", targets=[5, 6, 7, 8], n_shards=2
    )
    assert [p.name for p in paths] == ["happywhale-train-00-2.tfrec", "happywhale-train-01-2.tfrec"]
    assert pipeline.count_records(paths) == 4
    records = list(pipeline.tfrecord_records(paths).as_numpy_iterator())
    by_name = {r["image_name"].decode(): r for r in records}
    assert by_name["a.jpg"]["target"] == 5 and by_name["a.jpg"]["box"].tolist() == [0, 0, 30, 40]
    assert by_name["b.jpg"]["box"].tolist() == [-1, -1, -1, -1]
    assert by_name["c.jpg"]["image_bytes"] == (folder / "c.jpg").read_bytes()  # stored unchanged
    from_files = _images(pipeline.make_dataset(pipeline.file_records(frame, folder), 16, 4))
    from_records = pipeline.make_dataset(pipeline.tfrecord_records([paths[0], paths[1]]), 16, 4)
    names = [r["image_name"].decode() for r in records]
    order = [frame["image"].tolist().index(n) for n in names]
    np.testing.assert_allclose(_images(from_records), from_files[order], atol=1e-4)
    with pytest.raises(FileExistsError):
        pipeline.write_tfrecords(frame, folder, tmp_path, "train", n_shards=2)
    with pytest.raises(ValueError, match="does not end in -COUNT.tfrec"):
        pipeline.count_records(["shard.tfrec"])


def test_training_batches_are_deterministic_and_augmented(small_synth):
    train = data.read_train(small_synth)
    encoding = data.LabelEncoding.fit(train)
    targets = encoding.encode_individuals(train["individual_id"])

    def batches():
        records = pipeline.file_records(train.head(12), small_synth / "train_images", targets[:12])
        dataset = pipeline.make_dataset(records, 32, 4, training=True, deterministic=True, seed=7)
        return [
            (inputs["image"].numpy(), inputs["label"].numpy(), y.numpy()) for inputs, y in dataset
        ]

    first, second = batches(), batches()
    assert len(first) == 3
    for (image_a, label_a, y_a), (image_b, label_b, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(label_a, y_a)
        np.testing.assert_array_equal(label_a, label_b)
    images = np.concatenate([b[0] for b in first])
    assert images.min() >= 0 and images.max() <= 255
    assert sorted(np.concatenate([b[1] for b in first]).tolist()) == sorted(targets[:12].tolist())
    plain = pipeline.make_dataset(
        pipeline.file_records(train.head(12), small_synth / "train_images", targets[:12]),
        32,
        4,
        training=True,
        deterministic=True,
        seed=7,
        augmentation=pipeline.Augmentation.none(),
    )
    plain_images = np.concatenate([inputs["image"].numpy() for inputs, _ in plain])
    assert not np.allclose(
        np.sort(images.ravel()), np.sort(plain_images.ravel())
    )  # augmentation acts


def test_augment_each_operation():
    rng = np.random.default_rng(0)
    image = tf.constant(rng.integers(0, 256, size=(20, 30, 3)).astype(np.uint8))
    seed = tf.constant([1, 2], tf.int64)
    off = pipeline.Augmentation.none()
    unchanged = pipeline.augment(image, seed, off, 20).numpy()
    np.testing.assert_allclose(
        unchanged, tf.image.resize(image, [20, 20], antialias=True).numpy(), atol=1e-3
    )
    flipped = pipeline.augment(
        image, seed, pipeline.Augmentation(**{**off.__dict__, "flip_probability": 1.0}), 20
    )
    np.testing.assert_allclose(flipped.numpy(), unchanged[:, ::-1], atol=1e-3)
    grey = pipeline.augment(
        image, seed, pipeline.Augmentation(**{**off.__dict__, "grayscale_probability": 1.0}), 20
    )
    grey = grey.numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-3)
    cropped = pipeline.augment(
        image,
        seed,
        pipeline.Augmentation(**{**off.__dict__, "crop_probability": 1.0, "crop_min_area": 0.3}),
        20,
    )
    assert cropped.shape == (20, 20, 3) and not np.allclose(cropped.numpy(), unchanged)


def test_rotate_quarter_turns_match_numpy_and_augment_rotates():
    image = np.random.default_rng(0).random((6, 6, 3)).astype(np.float32)
    for degrees, quarter_turns in [(0, 0), (90, 1), (180, 2), (-90, 3), (270, 3)]:
        turned = pipeline.rotate(tf.constant(image), degrees).numpy()
        np.testing.assert_allclose(turned, np.rot90(image, quarter_turns), atol=1e-5)
    wide = image[:4]
    np.testing.assert_allclose(  # a half turn of a non-square photo keeps its shape
        pipeline.rotate(tf.constant(wide), 180).numpy(), wide[::-1, ::-1], atol=1e-5
    )
    small_turn = pipeline.rotate(tf.constant(image), 10).numpy()
    assert small_turn.shape == image.shape and small_turn.min() > 0  # corners reflected, not black
    off = pipeline.Augmentation.none()
    photo = tf.constant((image * 255).astype(np.uint8))
    seed = tf.constant([1, 2], tf.int64)
    rotating = pipeline.Augmentation(**{**off.__dict__, "rotation_degrees": 180.0})
    turned = [pipeline.augment(photo, tf.constant([s, 2], tf.int64), rotating, 6) for s in range(5)]
    plain = pipeline.augment(photo, seed, off, 6).numpy()
    assert all(t.shape == (6, 6, 3) and not np.allclose(t.numpy(), plain) for t in turned)
    np.testing.assert_array_equal(  # stateless
        pipeline.augment(photo, seed, rotating, 6).numpy(),
        pipeline.augment(photo, seed, rotating, 6).numpy(),
    )
    with pytest.raises(ValueError, match=r"rotation_degrees must be in \[0, 180\], got .*=200"):
        pipeline.Augmentation(rotation_degrees=200)


def test_bad_arguments(tiny_images):
    folder, frame = tiny_images
    with pytest.raises(FileNotFoundError, match="missing"):
        pipeline.file_records(frame.assign(image="nope.jpg"), folder)
    with pytest.raises(ValueError, match="targets has 1 entries for 4 images"):
        pipeline.file_records(frame, folder, targets=[1])
    with pytest.raises(ValueError, match="image_size=4"):
        pipeline.make_dataset(pipeline.file_records(frame, folder), 4, 2)


def test_box_jitter_moves_each_side_within_its_share():
    box = tf.constant([100.0, 50.0, 300.0, 150.0])  # 200 wide, 100 high
    moved = np.array(
        [pipeline.jitter_box(box, tf.constant([s, 7], tf.int64), 0.1).numpy() for s in range(200)]
    )
    shift = moved - box.numpy()
    limits = np.array([20.0, 10.0, 20.0, 10.0])  # 0.1 of the width (left, right), height
    assert np.all(np.abs(shift) <= limits + 1e-4)
    assert np.all(np.abs(shift).max(axis=0) > 0.8 * limits)  # the whole range is used
    assert np.all(shift.mean(axis=0) < 0.2 * limits)  # centred
    seed = tf.constant([3, 4], tf.int64)
    assert np.array_equal(  # stateless: the same seed moves it alike
        pipeline.jitter_box(box, seed, 0.1).numpy(), pipeline.jitter_box(box, seed, 0.1).numpy()
    )
    assert pipeline.jitter_box(box, seed, 0.0).numpy().tolist() == box.numpy().tolist()
    absent = tf.constant([-1.0, -1.0, -1.0, -1.0])
    assert pipeline.jitter_box(absent, seed, 0.3).numpy().tolist() == [-1, -1, -1, -1]
    with pytest.raises(ValueError, match=r"box_jitter must be in \[0, 0.5\), got box_jitter=0.5"):
        pipeline.Augmentation(box_jitter=0.5)


def test_box_jitter_changes_training_crops_only(tiny_images):
    folder, frame = tiny_images
    frame = frame.assign(box=["10 5 50 35"] * 4)  # straddles the red / blue border at x=30

    def first_images(augmentation, training=True):
        records = pipeline.file_records(frame, folder, targets=[0, 1, 2, 3])
        dataset = pipeline.make_dataset(
            records, 16, 4, training=training, augmentation=augmentation, box_margin=0.0,
            label_as_input=False, deterministic=True, shuffle_buffer=1,
        )  # fmt: skip
        batch = next(iter(dataset))
        return (batch[0] if training else batch).numpy().astype(float)  # uint8 would wrap

    still = pipeline.Augmentation.none()
    jittered = pipeline.Augmentation(**{**still.__dict__, "box_jitter": 0.3})
    plain = first_images(still)
    moved = first_images(jittered)
    assert np.array_equal(plain, first_images(still))
    assert np.array_equal(moved, first_images(jittered))  # reproducible
    # the jittered crops shift the red / blue border; without jitter all four are the same crop
    assert np.abs(plain - plain[0]).mean(axis=(1, 2, 3)).max() < 3  # JPEG, PNG of one picture
    assert np.abs(moved - plain).mean() > 5
    # inference never jitters
    assert np.array_equal(first_images(jittered, False), first_images(still, False))


@pytest.mark.parametrize("training", [False, True])
def test_a_photo_that_is_not_an_image_stops_the_pipeline_naming_it(tmp_path, training):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "fine.png")
    (tmp_path / "liar.jpg").write_text("a text file named like a photo")
    frame = pd.DataFrame({"image": ["fine.png", "liar.jpg"]})
    records = pipeline.file_records(frame, tmp_path, targets=[0, 1])
    batches = pipeline.make_dataset(records, 8, 2, training=training, crop_to_box=False)
    with pytest.raises(tf.errors.OpError, match=r"liar.jpg: not a readable image"):
        list(batches)


def test_photos_are_turned_upright_by_their_exif_orientation_in_training_too(tmp_path):
    """A photo stored turned a quarter, with EXIF orientation 6, is read upright (the
    detector's boxes are in the upright photo's pixels): its box crops the red part."""
    upright = np.zeros((20, 40, 3), np.uint8)
    upright[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.rot90(upright, k=1).copy()).save(tmp_path / "turned.png", exif=exif)
    frame = pd.DataFrame({"image": ["turned.png"], "box": ["0 0 20 20"]})
    records = pipeline.file_records(frame, tmp_path, targets=[0])
    off = pipeline.Augmentation.none()
    for training in (False, True):
        batch = pipeline.make_dataset(
            records, 8, 1, training=training, augmentation=off, box_margin=0.0,
            label_as_input=False,
        )  # fmt: skip
        image = next(iter(batch))[0] if training else next(iter(batch))
        image = np.asarray(image)[0]
        assert image[..., 0].min() > 250 and image[..., 2].max() < 5


def test_training_decodes_large_photos_only_as_far_down_as_its_random_crop_allows():
    assert pipeline.training_min_side(380, pipeline.Augmentation()) == 455  # 380 / sqrt(0.7)
    assert pipeline.training_min_side(380, pipeline.Augmentation.none()) == 380


def test_mirrored_photos_as_new_identities_get_their_own_targets(small_synth):
    """With mirror_classes = n, exactly the photos the augmentation flipped carry target + n;
    the others keep theirs, and the image is the unflipped one mirrored."""
    train = data.read_train(small_synth).head(16)
    targets = np.arange(16) % 5

    def batches(augmentation):
        records = pipeline.file_records(train, small_synth / "train_images", targets)
        dataset = pipeline.make_dataset(
            records, 32, 16, training=True, deterministic=True, seed=3, augmentation=augmentation
        )
        inputs, y = next(iter(dataset))
        return inputs["image"].numpy(), inputs["label"].numpy(), y.numpy()

    off = pipeline.Augmentation.none().__dict__
    plain_images, plain_labels, _ = batches(pipeline.Augmentation(**off))
    images, labels, y = batches(
        pipeline.Augmentation(**{**off, "flip_probability": 0.5, "mirror_classes": 100})
    )
    np.testing.assert_array_equal(labels, y)
    mirrored = labels >= 100
    assert 0 < mirrored.sum() < 16
    np.testing.assert_array_equal(np.where(mirrored, labels - 100, labels), plain_labels)
    for image, plain, flip in zip(images, plain_images, mirrored, strict=True):
        np.testing.assert_array_equal(image, plain[:, ::-1] if flip else plain)
    with pytest.raises(ValueError, match="mirror_classes=5 needs flips"):
        pipeline.Augmentation(**{**off, "mirror_classes": 5})
    with pytest.raises(ValueError, match="mirror_classes must be a whole number"):
        pipeline.Augmentation(mirror_classes=True)
