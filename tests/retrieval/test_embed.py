import keras
import numpy as np
import pytest
import tensorflow as tf

from whaleutils.retrieval import embed
from whaleutils.training import models


def test_l2_normalize():
    out = embed.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    with pytest.raises(ValueError, match=r"got shape \(3,\)"):
        embed.l2_normalize(np.ones(3))


def test_embeddings_file_round_trip_and_schema_checks(tmp_path):
    vectors = embed.l2_normalize(np.random.default_rng(0).normal(size=(3, 4)))
    path = embed.save_embeddings(
        tmp_path / "train.npz",
        ["a.jpg", "b.jpg", "c.jpg"],
        vectors,
        ["x", "y", "x"],
        model="m",
        tta="flip",
    )
    loaded = embed.load_embeddings(path)
    assert loaded["image_names"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert loaded["labels"].tolist() == ["x", "y", "x"]
    assert str(loaded["tta"]) == "flip" and loaded["embeddings"].dtype == np.float32
    np.testing.assert_array_equal(loaded["embeddings"], vectors)
    with pytest.raises(FileExistsError):
        embed.save_embeddings(path, ["a.jpg"], vectors[:1])
    with pytest.raises(ValueError, match="not L2-normalised"):
        embed.save_embeddings(tmp_path / "raw.npz", ["a.jpg"], np.array([[3.0, 4.0]]))
    with pytest.raises(
        ValueError, match=r"shapes disagree: image_names \(2,\), embeddings \(3, 4\)"
    ):
        embed.save_embeddings(tmp_path / "bad.npz", ["a.jpg", "b.jpg"], vectors)
    np.savez(tmp_path / "other.npz", embeddings=vectors)
    with pytest.raises(
        ValueError, match=r"missing array\(s\) \['image_names', 'labels', 'model', 'tta'\]"
    ):
        embed.load_embeddings(tmp_path / "other.npz")


def test_compute_embeddings_with_flip_tta():
    keras.utils.set_random_seed(0)  # untrained ReLU features: some seeds give a photo all zeros
    _, embedding_model = models.build_basic_cnn(3, 32, filters=(4, 4, 4, 4), dense_units=6)
    images = np.random.default_rng(1).uniform(0, 255, (5, 32, 32, 3)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices(images).batch(2)
    plain = embed.compute_embeddings(embedding_model, batches)
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, rtol=1e-5)
    flipped = embed.compute_embeddings(embedding_model, batches, tta="flip")
    mirror = embed.l2_normalize(embedding_model.predict(images[:, :, ::-1], verbose=0))
    np.testing.assert_allclose(flipped, embed.l2_normalize(plain + mirror), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="tta='rotate'"):
        embed.compute_embeddings(embedding_model, batches, tta="rotate")
    # the mirror images' own embeddings, for a flipped gallery, with either TTA
    for tta in ("none", "flip"):
        vectors, mirrored = embed.compute_embeddings(embedding_model, batches, tta, mirrored=True)
        np.testing.assert_allclose(mirrored, mirror, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(vectors, plain if tta == "none" else flipped, atol=1e-6)


def test_few_images_go_eagerly_more_by_a_padded_predict_with_one_result():
    """Up to EAGER_IMAGES images are called through the model, more go by predict padded to
    pad_to rows (the padding dropped): both give compute_embeddings' embeddings, with TTA and
    mirror images too."""
    keras.utils.set_random_seed(0)
    _, embedding_model = models.build_basic_cnn(3, 32, filters=(4, 4, 4, 4), dense_units=6)
    images = np.random.default_rng(2).uniform(0, 255, (11, 32, 32, 3)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices(images).batch(4)
    assert embed.EAGER_IMAGES < len(images)
    for tta, mirrored in (("none", False), ("flip", False), ("flip", True)):
        reference = embed.compute_embeddings(embedding_model, batches, tta, mirrored)
        eager = embed.embed_images(embedding_model, images[:3], tta, mirrored)
        padded = embed.embed_images(embedding_model, images, tta, mirrored, pad_to=16)
        for got, want in ((eager, reference), (padded, reference)):
            got, want = (got, want) if mirrored else ((got,), (want,))
            for got_part, want_part in zip(got, want, strict=True):
                np.testing.assert_allclose(got_part, want_part[: len(got_part)], atol=1e-5)
        assert len(padded[0] if mirrored else padded) == len(images)  # the padding dropped


def test_mirrored_embeddings_are_saved_and_checked(tmp_path):
    rng = np.random.default_rng(2)
    vectors, mirrored = (embed.l2_normalize(rng.normal(size=(2, 4))) for _ in range(2))
    path = embed.save_embeddings(tmp_path / "train.npz", ["a", "b"], vectors, mirrored=mirrored)
    np.testing.assert_array_equal(embed.load_embeddings(path)["mirrored"], mirrored)
    assert "mirrored" not in embed.load_embeddings(
        embed.save_embeddings(tmp_path / "plain.npz", ["a", "b"], vectors)
    )
    with pytest.raises(
        ValueError, match=r"mirrored must be float32 \(2, 4\), got float32 \(1, 4\)"
    ):
        embed.save_embeddings(tmp_path / "bad.npz", ["a", "b"], vectors, mirrored=mirrored[:1])
    with pytest.raises(ValueError, match="mirrored are not L2-normalised"):
        embed.save_embeddings(tmp_path / "raw.npz", ["a", "b"], vectors, mirrored=2 * mirrored)


def test_participation_ratio_counts_used_dimensions():
    # four unit vectors along +-x and +-y: the variance is split evenly over two axes
    two_axes = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype="float32")
    assert embed.participation_ratio(two_axes) == pytest.approx(2.0)
    one_line = np.array([[1, 0], [-1, 0], [2, 0], [-3, 0]], dtype="float32")  # normalised: +-x
    assert embed.participation_ratio(one_line) == pytest.approx(1.0)
    isotropic = np.random.default_rng(0).normal(size=(20000, 8))
    assert 7.5 < embed.participation_ratio(isotropic) <= 8.0
    assert embed.participation_ratio(np.ones((3, 4))) == 0.0  # all identical
    with pytest.raises(ValueError, match="at least 2"):
        embed.participation_ratio(np.ones((1, 4)))


def test_flip_tta_reads_each_photo_once():
    """The mirror images ride in the same forward pass: the batches are drawn once."""
    _, embedding_model = models.build_basic_cnn(3, 16, filters=(4,), dense_units=6)
    images = np.random.default_rng(3).uniform(0, 255, (7, 16, 16, 3)).astype("float32")
    drawn = []

    def source():
        for start in range(0, 7, 3):  # batches of 3, 3, 1
            drawn.append(start)
            yield images[start : start + 3]

    spec = tf.TensorSpec((None, 16, 16, 3), tf.float32)
    batches = tf.data.Dataset.from_generator(source, output_signature=spec)
    vectors, mirrored = embed.compute_embeddings(embedding_model, batches, "flip", mirrored=True)
    assert drawn == [0, 3, 6] and vectors.shape == mirrored.shape == (7, 6)
    plain = embed.l2_normalize(embedding_model.predict(images, verbose=0))
    mirror = embed.l2_normalize(embedding_model.predict(images[:, :, ::-1], verbose=0))
    np.testing.assert_allclose(mirrored, mirror, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(vectors, embed.l2_normalize(plain + mirror), rtol=1e-4, atol=1e-5)


def test_rotation_tta_gives_a_turned_photo_the_upright_photos_embedding():
    """rot4 averages the four quarter turns: a photo turned by 90, 180 or 270 degrees has the
    same views, so the same embedding; rot4flip also a mirrored photo's. Each is the mean of
    the views' normalised embeddings, computed here with NumPy turns."""
    keras.utils.set_random_seed(0)
    _, embedding_model = models.build_basic_cnn(3, 24, filters=(4, 4, 4), dense_units=6)
    upright = np.random.default_rng(4).uniform(0, 255, (3, 24, 24, 3)).astype("float32")

    def unit(images):
        return embed.l2_normalize(embedding_model.predict(images, verbose=0))

    turned = [np.rot90(upright, k, axes=(1, 2)) for k in range(4)]
    expected = embed.l2_normalize(sum(unit(np.ascontiguousarray(view)) for view in turned))
    mirrored = upright[:, :, ::-1]
    batches = tf.data.Dataset.from_tensor_slices(upright).batch(2)
    rot4 = embed.compute_embeddings(embedding_model, batches, tta="rot4")
    np.testing.assert_allclose(rot4, expected, atol=1e-5)
    for k in (1, 2, 3):
        copy = np.ascontiguousarray(np.rot90(upright, k, axes=(1, 2)))
        np.testing.assert_allclose(
            embed.embed_images(embedding_model, copy, "rot4"), rot4, atol=1e-5
        )
    both = embed.embed_images(embedding_model, upright, "rot4flip")
    mirror_turned = np.ascontiguousarray(np.rot90(mirrored, 1, axes=(1, 2)))
    np.testing.assert_allclose(
        embed.embed_images(embedding_model, mirror_turned, "rot4flip"), both, atol=1e-5
    )
    assert not np.allclose(unit(upright), rot4, atol=1e-3)  # the TTA did change something
    # with a flipped gallery: the mirror images' own rot4 embeddings beside the photos'
    vectors, mirror = embed.compute_embeddings(embedding_model, batches, "rot4", mirrored=True)
    np.testing.assert_allclose(vectors, rot4, atol=1e-6)
    np.testing.assert_allclose(
        mirror,
        embed.embed_images(embedding_model, np.ascontiguousarray(mirrored), "rot4"),
        atol=1e-5,
    )


def test_an_unknown_tta_is_refused_naming_the_modes():
    _, embedding_model = models.build_basic_cnn(3, 16, filters=(4,), dense_units=6)
    with pytest.raises(ValueError, match=r"one of \['none', 'flip', 'rot4', 'rot4flip'\]"):
        embed.embed_images(embedding_model, np.zeros((1, 16, 16, 3), np.float32), "rot8")


def test_a_model_that_learned_mirrors_as_other_animals_refuses_mirror_views():
    embed.refuse_mirror_views("rot4", False)  # rotations are the same animal
    embed.refuse_mirror_views("none", False)
    for tta, flipped in [("flip", False), ("rot4flip", False), ("none", True)]:
        with pytest.raises(ValueError, match="mirror_identities: a mirrored photo is another"):
            embed.refuse_mirror_views(tta, flipped)
