"""Grad-CAM and the degradations of the robustness study, against what they must do."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import ndimage

from whaleutils.analysis import gradcam, robustness


def region_model() -> keras.Model:
    """16 x 16 RGB -> two feature channels (red, green) by a fixed 1x1 convolution -> the
    top-left 8 x 8 quarter only -> mean -> (mean red, 1). Its output depends on the red in the
    top-left quarter and on nothing else."""
    image = keras.Input((16, 16, 3))
    features = keras.layers.Conv2D(2, 1, use_bias=False, name="features")(image)
    x = keras.layers.Cropping2D(((0, 8), (0, 8)))(features)
    x = keras.layers.GlobalAveragePooling2D()(x)
    output = keras.layers.Dense(2, name="out")(x)
    model = keras.Model(image, output)
    model.get_layer("features").set_weights([np.eye(3, 2).reshape(1, 1, 3, 2)])
    model.get_layer("out").set_weights([np.array([[1.0, 0.0], [0.0, 0.0]]), np.array([0.0, 1.0])])
    return model


def test_heatmap_peaks_where_the_explained_similarity_comes_from():
    images = np.zeros((1, 16, 16, 3), np.float32)
    images[0, 2:5, 2:5, 0] = 200.0  # a red patch inside the quarter the output reads
    images[0, 11:14, 11:14, 1] = 250.0  # a brighter green patch outside it
    # the target (1, 0): raising the red mean raises the cosine of (red, 1) to it
    heatmap = gradcam.heatmaps(region_model(), images, np.array([[1.0, 0.0]]))[0]
    assert heatmap.shape == (16, 16) and heatmap.max() == pytest.approx(1.0)
    peak = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert 2 <= peak[0] < 5 and 2 <= peak[1] < 5
    assert heatmap[11:14, 11:14].max() == 0.0  # the green patch does not count


def test_heatmap_is_zero_where_nothing_raises_the_similarity():
    images = np.zeros((1, 16, 16, 3), np.float32)
    images[0, 2:5, 2:5, 0] = 200.0
    # target (0, 1): the output is (red, 1), and more red only moves it away from the target
    heatmap = gradcam.heatmaps(region_model(), images, np.array([[0.0, 1.0]]))[0]
    assert np.all(heatmap == 0.0)


def test_overlay_keeps_size_and_range():
    image = np.full((20, 20, 3), 100.0, np.float32)
    blended = gradcam.overlay(image, np.eye(5, dtype=np.float32))
    assert blended.shape == (20, 20, 3) and blended.dtype == np.uint8


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_blur_matches_scipy(sigma):
    """scipy's 'mirror' mode is TensorFlow's REFLECT padding; both cut the kernel at radius
    ceil(3 sigma) for these sigmas (scipy: int(3 sigma + 0.5))."""
    images = np.random.default_rng(0).uniform(0, 255, (2, 17, 13, 3)).astype(np.float32)
    blurred = robustness.gaussian_blur(images, sigma).numpy()
    expected = ndimage.gaussian_filter(
        images.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="mirror", truncate=3.0
    )
    np.testing.assert_allclose(blurred, expected, atol=1e-3)


def test_degrade_darkens_then_clips_and_checks_brightness():
    images = np.full((1, 4, 4, 3), 200.0, np.float32)
    np.testing.assert_allclose(robustness.degrade(images, 0.0, 0.6).numpy(), 120.0)
    np.testing.assert_array_equal(robustness.degrade(images).numpy(), images)
    with pytest.raises(ValueError, match="brightness=1.5"):
        robustness.degrade(images, 0.0, 1.5)
    # the pipeline's uint8 batches: degraded in float32 as the same pixels in float would be
    photos = np.random.default_rng(1).integers(0, 256, (2, 9, 9, 3)).astype(np.uint8)
    photos = tf.convert_to_tensor(photos)  # as tf.data hands them over
    np.testing.assert_allclose(
        robustness.degrade(photos, 1.0, 0.6).numpy(),
        robustness.degrade(tf.cast(photos, tf.float32), 1.0, 0.6).numpy(),
    )
