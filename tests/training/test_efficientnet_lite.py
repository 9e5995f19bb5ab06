"""EfficientNet-Lite0 with the ImageNet weights from the package index: a mis-mapped layer
would not classify scikit-image's photos of a cat and of a cup of coffee."""

import keras
import numpy as np
import pytest
from skimage import data as photos

from whaleutils.training import efficientnet_lite, layers, models, torchfile

TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967


@pytest.fixture(scope="module")
def classifier():
    return efficientnet_lite.build(224, "imagenet", include_top=True)


def classify(model, image: np.ndarray) -> np.ndarray:
    resized = keras.ops.image.resize(image[None].astype("float32"), (224, 224))
    return model.predict(layers.ImageNormalization("lite")(resized), verbose=0)[0]


def test_imagenet_weights_recognise_a_cat_and_an_espresso(classifier):
    cat = classify(classifier, photos.chelsea())
    assert set(np.argsort(-cat)[:3]) == {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert cat[[TABBY, TIGER_CAT, EGYPTIAN_CAT]].sum() > 0.8
    coffee = classify(classifier, photos.coffee())
    assert np.argmax(coffee) == ESPRESSO and coffee[ESPRESSO] > 0.8


def test_architecture_is_lite0(classifier):
    # every float of the checkpoint, BatchNorm's running statistics included, and nothing else
    assert classifier.count_params() == 4_694_024
    assert not any("se" in layer.name.split("_") for layer in classifier.layers)
    backbone = efficientnet_lite.build(96)
    assert backbone.output.shape[1:] == (3, 3, 1280)


def test_a_checkpoint_that_does_not_fit_is_refused(tmp_path):
    state = torchfile.load_state_dict(efficientnet_lite.imagenet_weights_path())
    state["_blocks.3._depthwise_conv.weight"] = state["_blocks.3._depthwise_conv.weight"][:, :, :2]
    path = torchfile.save_state_dict(tmp_path / "wrong.pth", state)
    with pytest.raises(ValueError, match=r"_blocks.3._depthwise_conv has shapes .* block3_dw_conv"):
        efficientnet_lite.build(64, path)
    del state["_blocks.3._depthwise_conv.weight"]
    state["_extra.weight"] = np.ones(3, np.float32)
    path = torchfile.save_state_dict(tmp_path / "missing.pth", state)
    with pytest.raises(KeyError, match="_blocks.3._depthwise_conv.weight"):
        efficientnet_lite.build(64, path)


@pytest.mark.slow
def test_pretrained_arcface_model_saves_and_loads(tmp_path):
    training_model, embedding_model = models.build_model(
        "efficientnet-lite0", 5, 64, weights="imagenet", embedding_dim=16
    )
    images = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    before = embedding_model.predict(images, verbose=0)
    embedding_model.save(tmp_path / "model.keras")
    after = models.load_model(tmp_path / "model.keras").predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-5)
    assert models.input_image_size(embedding_model) == 64


@pytest.mark.parametrize("variant", [1, 2])
@pytest.mark.slow
def test_lite1_and_lite2_weights_recognise_the_cat_and_the_espresso(variant):
    """Each variant at its own resolution: every checkpoint tensor is used (a block too many or
    too few, or a wrong width, is refused by the loader) and it still classifies the photos."""
    lite = efficientnet_lite.VARIANTS[variant]
    model = efficientnet_lite.build(lite.resolution, "imagenet", include_top=True, variant=variant)
    state = torchfile.load_state_dict(efficientnet_lite.imagenet_weights_path(variant))
    floats = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert model.count_params() == floats
    size = lite.resolution

    def top(image):
        resized = keras.ops.image.resize(image[None].astype("float32"), (size, size))
        return model.predict(layers.ImageNormalization("lite")(resized), verbose=0)[0]

    assert set(np.argsort(-top(photos.chelsea()))[:3]) & {TABBY, TIGER_CAT, EGYPTIAN_CAT}
    assert np.argmax(top(photos.coffee())) == ESPRESSO
    with pytest.raises(ValueError, match="block"):  # Lite0's layers cannot take Lite1's weights
        efficientnet_lite.build(64, efficientnet_lite.imagenet_weights_path(variant))


@pytest.mark.slow
def test_a_backbone_of_any_size_gives_the_fixed_size_models_features():
    fixed = efficientnet_lite.build(64, "imagenet")
    free = efficientnet_lite.build(None, "imagenet")
    images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(
        free.predict(images, verbose=0), fixed.predict(images, verbose=0), atol=1e-5
    )
    assert free.predict(images[:, :32, :32], verbose=0).shape == (2, 1, 1, 1280)
