import keras
import numpy as np
import pytest

from whaleutils import layers, models, train


@pytest.fixture(scope="module")
def effnet_b0():
    return models.build_model(
        "efficientnet-b0", n_classes=7, image_size=64, embedding_dim=16, k_subcenters=2
    )


def _batch(n=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32"), np.arange(n) % 7


def test_model_shapes_and_shared_weights(effnet_b0):
    training_model, embedding_model = effnet_b0
    images, labels = _batch()
    logits = training_model.predict({"image": images, "label": labels}, verbose=0)
    embeddings = embedding_model.predict(images, verbose=0)
    assert logits.shape == (3, 7) and embeddings.shape == (3, 16)
    shared = {id(w) for w in embedding_model.weights}
    assert shared <= {id(w) for w in training_model.weights}
    assert models.input_image_size(embedding_model) == 64
    assert isinstance(training_model.get_layer("arc_margin"), layers.ArcMarginProduct)


@pytest.mark.slow
def test_save_and_load_keep_outputs(effnet_b0, tmp_path):
    training_model, embedding_model = effnet_b0
    images, labels = _batch(seed=1)
    before_logits = training_model.predict({"image": images, "label": labels}, verbose=0)
    before_embeddings = embedding_model.predict(images, verbose=0)
    training_model.save(tmp_path / "model.keras")
    embedding_model.save(tmp_path / "embedding.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_allclose(
        loaded.predict({"image": images, "label": labels}, verbose=0),
        before_logits,
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        keras.models.load_model(tmp_path / "embedding.keras").predict(images, verbose=0),
        before_embeddings,
        rtol=1e-5,
        atol=1e-5,
    )
    np.testing.assert_allclose(
        train.extract_embedding_model(loaded).predict(images, verbose=0),
        before_embeddings,
        rtol=1e-5,
        atol=1e-5,
    )


def test_weights_from_a_file_as_kaggle_users_attach_them(tmp_path):
    """A legacy Keras .h5 weights file, the format of the noisy-student files on Kaggle."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    backbone, mode = models.build_backbone("efficientnet-b0", 64, weights=None)
    assert mode == "torch"
    path = tmp_path / "efficientnet-b0_noisy-student_notop.h5"
    with h5py.File(path, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, backbone)
    loaded, _ = models.build_backbone("efficientnet-b0", 64, weights=path)
    for expected, actual in zip(backbone.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(expected), keras.ops.convert_to_numpy(actual)
        )


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("efficientnet-b9", None, "unknown backbone 'efficientnet-b9'"),
        ("resnet50", "noisy-student", "weights must be one of \\[None, 'imagenet'\\]"),
        ("efficientnet-b0", "/no/such/file.h5", "existing weights file"),
    ],
)
def test_bad_backbone_arguments(name, weights, message):
    with pytest.raises(ValueError, match=message):
        models.build_backbone(name, 64, weights)


def test_other_backbones_build():
    resnet, mode = models.build_backbone("resnet50", 64)
    assert mode == "caffe" and resnet.output.shape[-1] == 2048
    keras_b0, mode = models.build_backbone("keras-efficientnet-b0", 64)
    assert mode == "none" and keras_b0.output.shape[-1] == 1280


def test_basic_cnn_is_the_papers_first_model():
    training_model, embedding_model = models.build_basic_cnn(n_classes=9, image_size=64)
    kinds = [type(layer).__name__ for layer in training_model.layers]
    assert kinds.count("Conv2D") == 4 and kinds.count("MaxPooling2D") == 4
    assert training_model.get_layer("dropout").rate == 0.45
    assert training_model.get_layer("embedding").units == 512
    images, _ = _batch()
    probabilities = training_model.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert embedding_model.predict(images, verbose=0).shape == (3, 512)
    assert models.input_image_size(training_model) == models.input_image_size(embedding_model)


def test_build_model_rejects_bad_pooling():
    with pytest.raises(ValueError, match="pooling='gem'"):
        models.build_model("efficientnet-b0", 3, 64, pooling="gem")
