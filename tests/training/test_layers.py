import math

import keras
import numpy as np
import pytest

from whaleutils.training import layers


def arcface_reference(
    embeddings, weights, labels, s, m, easy_margin=False, ls_eps=0.0, k=1, margins=None
):
    """A line-by-line NumPy transcription of the formula, one sample and one class at a time."""
    n_classes = weights.shape[1] // k
    out = np.zeros((len(embeddings), n_classes))
    for i, (x, y) in enumerate(zip(embeddings, labels, strict=True)):
        x = x / np.linalg.norm(x)
        margin = m if margins is None else margins[y]
        for j in range(n_classes):
            cos = max(float(x @ (w / np.linalg.norm(w))) for w in weights[:, j * k : (j + 1) * k].T)
            target = (1 - ls_eps) * (j == y) + ls_eps / n_classes
            sin = math.sqrt(max(0.0, 1 - cos * cos))
            phi = cos * math.cos(margin) - sin * math.sin(margin)
            if easy_margin:
                phi = phi if cos > 0 else cos
            else:
                phi = (
                    phi
                    if cos > math.cos(math.pi - margin)
                    else cos - math.sin(math.pi - margin) * margin
                )
            out[i, j] = s * (target * phi + (1 - target) * cos)
    return out


def _run(layer, embeddings, labels):
    layer.build([embeddings.shape, labels.shape])
    return layer, keras.ops.convert_to_numpy(layer([embeddings, labels]))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"easy_margin": True},
        {"ls_eps": 0.1},
        {"s": 10.0, "m": 0.3, "k_subcenters": 3},
        {"m": 1.2},  # large margin: many cosines fall past cos(pi - m), exercising the fallback
    ],
)
def test_arc_margin_matches_numpy_reference(kwargs):
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(6, 8)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 0])
    layer, logits = _run(layers.ArcMarginProduct(5, **kwargs), embeddings, labels)
    weights = keras.ops.convert_to_numpy(layer.W)
    expected = arcface_reference(
        embeddings,
        weights,
        labels,
        kwargs.get("s", 30.0),
        kwargs.get("m", 0.5),
        kwargs.get("easy_margin", False),
        kwargs.get("ls_eps", 0.0),
        kwargs.get("k_subcenters", 1),
    )
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_adaptive_margins_per_class_match_reference():
    rng = np.random.default_rng(1)
    counts = np.array([1, 2, 5, 40])
    margins = layers.adaptive_margins(counts)
    # The 1st-place formula at n=1: 0.27126 * 1 + 0.05
    assert margins[0] == pytest.approx(0.32126)
    assert np.all(np.diff(margins) < 0)  # rarer classes get larger margins
    embeddings = rng.normal(size=(4, 6)).astype("float32")
    labels = np.array([3, 2, 1, 0])
    layer, logits = _run(layers.ArcMarginProduct(4, class_margins=margins), embeddings, labels)
    weights = keras.ops.convert_to_numpy(layer.W)
    expected = arcface_reference(embeddings, weights, labels, 30.0, 0.5, margins=margins)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_arc_margin_hand_checked_case():
    # Embedding along the class-0 weight: cos = 1 for class 0, 0 for class 1.
    layer = layers.ArcMarginProduct(2, s=2.0, m=0.5)
    layer.build([(1, 2), (1,)])
    layer.W.assign(np.eye(2, dtype="float32"))
    logits = keras.ops.convert_to_numpy(layer([np.array([[3.0, 0.0]], "float32"), np.array([0])]))
    # Target: s * cos(0 + 0.5) = 2 * 0.87758; other class: s * 0 = 0.
    np.testing.assert_allclose(logits, [[2 * math.cos(0.5), 0.0]], atol=1e-6)


def test_arc_margin_is_finite_at_cos_one_and_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = layers.ArcMarginProduct(3)
        layer.build([(2, 3), (2,)])
        layer.W.assign(np.eye(3, dtype="float32"))
        embeddings = keras.ops.cast(np.array([[1, 0, 0], [0, 5, 0]], "float32"), "float16")
        logits = layer([embeddings, np.array([0, 1])])
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_classes": 0}, "n_classes=0"),
        ({"n_classes": 3, "k_subcenters": 0}, "k_subcenters=0"),
        ({"n_classes": 3, "ls_eps": 1.0}, "ls_eps=1.0"),
        ({"n_classes": 3, "class_margins": [0.1, 0.2]}, r"shape \(3,\)"),
    ],
)
def test_arc_margin_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.ArcMarginProduct(**kwargs)


def test_adaptive_margins_reject_zero_counts():
    with pytest.raises(ValueError, match="counts >= 1"):
        layers.adaptive_margins([0, 3])


def test_layers_save_and_load_with_the_same_outputs(tmp_path):
    rng = np.random.default_rng(2)
    embedding_in = keras.Input(shape=(4,), name="embedding")
    label_in = keras.Input(shape=(), dtype="int32", name="label")
    head = layers.ArcMarginProduct(
        3, s=12.0, m=0.4, ls_eps=0.05, k_subcenters=2, class_margins=[0.2, 0.3, 0.4]
    )
    model = keras.Model(
        {"embedding": embedding_in, "label": label_in}, head([embedding_in, label_in])
    )
    inputs = {
        "embedding": rng.normal(size=(5, 4)).astype("float32"),
        "label": np.array([0, 1, 2, 1, 0]),
    }
    before = model.predict(inputs, verbose=0)
    model.save(tmp_path / "head.keras")
    loaded = keras.models.load_model(tmp_path / "head.keras")
    np.testing.assert_allclose(loaded.predict(inputs, verbose=0), before, rtol=1e-6)
    restored = loaded.get_layer(head.name)
    assert restored.get_config()["adaptive_margin"] is True
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored.class_margins), [0.2, 0.3, 0.4])


@pytest.mark.parametrize(
    ("mode", "pixel", "expected"),
    [
        ("unit", [255.0, 0.0, 51.0], [1.0, 0.0, 0.2]),
        ("torch", [123.675, 116.28, 103.53], [0.0, 0.0, 0.0]),
        ("caffe", [123.68, 116.779, 103.939], [0.0, 0.0, 0.0]),  # RGB in, BGR mean out
        ("caffe", [0.0, 0.0, 10.0], [10.0 - 103.939, -116.779, -123.68]),  # blue first
        ("none", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
    ],
)
def test_image_normalization(mode, pixel, expected):
    out = layers.ImageNormalization(mode)(np.array([[[pixel]]], dtype="float32"))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out)[0, 0, 0], expected, atol=1e-4)


def test_image_normalization_round_trip_and_bad_mode():
    layer = layers.ImageNormalization("torch", name="norm")
    assert layers.ImageNormalization.from_config(layer.get_config()).mode == "torch"
    with pytest.raises(ValueError, match="mode='tf'"):
        layers.ImageNormalization("tf")


@pytest.mark.parametrize("scale", [0.0, 0.5, 1.0])
def test_margin_scale_multiplies_the_margin(scale):
    rng = np.random.default_rng(4)
    embeddings = rng.normal(size=(6, 8)).astype("float32")
    labels = np.array([0, 1, 2, 3, 4, 0])
    layer = layers.ArcMarginProduct(5, s=10.0, m=0.6)
    layer.build([embeddings.shape, labels.shape])
    assert keras.ops.convert_to_numpy(layer.margin_scale) == 1.0  # no warm-up by default
    layer.margin_scale.assign(scale)
    logits = keras.ops.convert_to_numpy(layer([embeddings, labels]))
    weights = keras.ops.convert_to_numpy(layer.W)
    expected = arcface_reference(embeddings, weights, labels, 10.0, 0.6 * scale)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_subcenter_arcface_reduces_to_arcface_at_one_subcentre():
    """k sub-centres whose centres are all the same vector give exactly ArcFace's logits, and
    k_subcenters=1 is ArcFace itself (the same weights, the same output)."""
    rng = np.random.default_rng(5)
    embeddings = rng.normal(size=(6, 4)).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2])
    plain = layers.ArcMarginProduct(3, s=10.0, m=0.3)
    expected = keras.ops.convert_to_numpy(plain([embeddings, labels]))
    centres = keras.ops.convert_to_numpy(plain.W)  # (4, 3)
    tripled = layers.ArcMarginProduct(3, s=10.0, m=0.3, k_subcenters=3)
    tripled.build([(None, 4), (None,)])
    tripled.W.assign(np.repeat(centres, 3, axis=1))  # class c's three sub-centres: W[:, c]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(tripled([embeddings, labels])), expected, rtol=1e-5, atol=1e-5
    )
    other = rng.normal(size=(4, 9)).astype("float32")  # distinct sub-centres: the best counts
    tripled.W.assign(other)
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    w = other / np.linalg.norm(other, axis=0, keepdims=True)
    best = (x @ w).reshape(6, 3, 3).max(axis=2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(tripled.cosine(embeddings)), best, rtol=1e-5, atol=1e-6
    )


def _gem_reference(features, p, eps=1e-6):
    return np.mean(np.maximum(features, eps) ** p, axis=(1, 2)) ** (1 / p)


@pytest.mark.parametrize("p", [1.0, 3.0, 7.5])
def test_gem_pooling_matches_numpy_and_spans_mean_to_max(p):
    features = np.random.default_rng(3).uniform(0, 4, size=(2, 3, 5, 4)).astype("float32")
    pooled = keras.ops.convert_to_numpy(layers.GeMPooling(p=p)(features))
    np.testing.assert_allclose(pooled, _gem_reference(features, p), rtol=1e-5)
    mean, peak = features.mean(axis=(1, 2)), features.max(axis=(1, 2))
    assert np.all(pooled >= mean - 1e-5) and np.all(pooled <= peak + 1e-5)


def test_gem_exponent_is_learned_and_saved(tmp_path):
    """A regression whose target is the max of each map pulls p up from 3 by gradient steps;
    the learned p is saved and loaded with the model."""
    rng = np.random.default_rng(0)
    features = rng.uniform(0, 1, size=(64, 4, 4, 2)).astype("float32")
    target = features.max(axis=(1, 2))
    inputs = keras.Input(shape=(4, 4, 2))
    model = keras.Model(inputs, layers.GeMPooling(p=3.0, name="gem")(inputs))
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mse")
    model.fit(features, target, epochs=20, batch_size=16, verbose=0)
    learned = float(keras.ops.convert_to_numpy(model.get_layer("gem").p))
    assert learned > 4.0
    model.save(tmp_path / "gem.keras")
    loaded = keras.models.load_model(tmp_path / "gem.keras")
    assert float(keras.ops.convert_to_numpy(loaded.get_layer("gem").p)) == pytest.approx(learned)
    np.testing.assert_allclose(
        loaded.predict(features, verbose=0), model.predict(features, verbose=0)
    )


@pytest.mark.parametrize("kwargs", [{"p": 0.5}, {"p": float("nan")}, {"eps": 0.0}])
def test_gem_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="GeM needs"):
        layers.GeMPooling(**kwargs)
