import json

import keras
import numpy as np
import pytest

from whaleutils.training import layers, models, train


@pytest.fixture(scope="module")
def effnet_b0():
    return models.build_model(
        "efficientnet-b0", n_classes=7, image_size=64, embedding_dim=16, k_subcenters=2
    )


def _batch(n=3, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, size=(n, size, size, 3)).astype("float32"), np.arange(n) % 7


@pytest.mark.slow
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
    with pytest.raises(ValueError, match="pooling='sum'"):
        models.build_model("efficientnet-b0", 3, 64, pooling="sum")


def _qubvel_weights_file(path, variant=0, image_size=64, seed=0):
    """A qubvel EfficientNet with random (non-trivial) weights, saved in the legacy ``.h5``
    layout of its released noisy-student files (by Keras' own writer of that layout)."""
    import efficientnet.tfkeras as qubvel
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    model = getattr(qubvel, f"EfficientNetB{variant}")(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    rng = np.random.default_rng(seed)
    for weight in model.weights:  # BatchNorm statistics and scales away from their defaults
        if weight.path.endswith(("moving_variance", "gamma")):
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
        elif weight.path.endswith(("moving_mean", "beta", "bias")):
            weight.assign(rng.normal(0, 0.1, weight.shape).astype("float32"))
    with h5py.File(path, "w") as file:
        legacy_h5_format.save_weights_to_hdf5_group(file, model)
    return model


@pytest.mark.parametrize("image_size", [64, 33])  # even and odd: the two padding cases
@pytest.mark.slow
def test_qubvel_noisy_student_weights_load_into_keras_applications(tmp_path, image_size):
    """qubvel's B0 on its torch-normalised input and keras.applications' B0 given the same
    weights file and 0-255 input compute the same features."""
    path = tmp_path / "efficientnet-b0_noisy-student_notop.h5"
    qubvel_model = _qubvel_weights_file(path, image_size=image_size)
    keras_model, mode = models.build_backbone("keras-efficientnet-b0", image_size, path)
    assert mode == "none"
    images = np.random.default_rng(1).uniform(0, 255, (2, image_size, image_size, 3))
    images = images.astype("float32")
    expected = qubvel_model.predict(layers.ImageNormalization("torch")(images), verbose=0)
    features = keras_model.predict(images, verbose=0)
    assert features.shape == expected.shape
    assert np.abs(features - expected).max() < 1e-4
    assert np.abs(expected).max() > 0.1  # not a comparison of near-zero maps


def test_qubvel_weights_of_another_variant_are_refused_by_name(tmp_path):
    path = tmp_path / "b0.h5"
    _qubvel_weights_file(path, image_size=32)
    with pytest.raises(ValueError, match=r"b0.h5: not the weights of efficientnetb1"):
        models.build_backbone("keras-efficientnet-b1", 32, path)


@pytest.mark.slow
def test_mixed_bfloat16_keeps_head_and_embeddings_in_float32():
    """The TPU's policy: the backbone computes in bfloat16, the embedding and the ArcFace
    logits in float32; a training step runs (bfloat16 on this CPU, with or without its
    bfloat16 instructions)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        training_model, embedding_model = models.build_model(
            "efficientnet-lite0", n_classes=3, image_size=32, embedding_dim=8
        )
        train.compile_model(training_model, 1e-3)
        images, labels = _batch(n=4, size=32)
        labels = labels % 3
        history = training_model.fit(
            {"image": images, "label": labels}, labels, batch_size=4, epochs=1, verbose=0
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    convolutions = [
        layer
        for layer in embedding_model.layers[2].layers
        if isinstance(layer, keras.layers.Conv2D)
    ]
    assert convolutions[0].compute_dtype == "bfloat16"
    assert training_model.get_layer("embedding").compute_dtype == "float32"
    assert training_model.get_layer("arc_margin").compute_dtype == "float32"
    assert embedding_model.output.dtype == "float32" and training_model.output.dtype == "float32"
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.slow
def test_only_models_that_use_it_import_the_efficientnet_package(effnet_b0, tmp_path):
    """A Lite, keras.applications or ResNet model loads with qubvel's ``efficientnet`` and the
    scikit-image it imports both blocked (Kaggle's TPU image has no scikit-image); a model of
    the ``efficientnet`` package is recognised as needing them."""
    import subprocess
    import sys

    saved = {}
    for name, (_, embedding_model) in {
        "lite0": models.build_model("efficientnet-lite0", 3, 32, None, embedding_dim=8),
        "keras-b0": models.build_model("keras-efficientnet-b0", 3, 32, None, embedding_dim=8),
        "resnet50": models.build_model("resnet50", 3, 32, None, embedding_dim=8),
    }.items():
        saved[name] = tmp_path / f"{name}.keras"
        embedding_model.save(saved[name])
    effnet_b0[1].save(tmp_path / "qubvel-b0.keras")
    assert models._needs_efficientnet_package(tmp_path / "qubvel-b0.keras")
    assert not any(models._needs_efficientnet_package(path) for path in saved.values())
    script = (
        "import sys\n"
        "sys.modules['skimage'] = None; sys.modules['efficientnet'] = None\n"
        "from whaleutils.training import models\n"
        f"for path in {[str(p) for p in saved.values()]!r}:\n"
        "    models.load_model(path)\n"
        "print('loaded', 'efficientnet' in sys.modules and sys.modules['efficientnet'] is not None)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("loaded False")


@pytest.mark.parametrize(
    ("saved", "running", "outcome"),
    [
        ("3.15.1", "3.15.1", None),
        (None, "3.10.0", None),  # no metadata: nothing to check
        ("3.10.0", "3.15.1", None),  # older files load in newer Keras
        ("3.11.3", "3.10.0", "warning"),  # newer than this Keras, same format
        ("3.12.0", "3.11.9", "refused"),  # the format changed in 3.12
        ("3.15.1", "3.10.0", "refused"),  # Kaggle's GPU image reading a TPU kernel's model
    ],
)
def test_keras_versions_a_model_cannot_cross_are_refused_by_name(saved, running, outcome):
    if outcome == "refused":
        with pytest.raises(
            ValueError, match=rf"m.keras: saved by Keras {saved}, which this Keras {running} cannot"
        ):
            models.check_keras_version(saved, running, "m.keras")
    elif outcome == "warning":
        with pytest.warns(UserWarning, match=f"loaded by the older Keras {running}"):
            models.check_keras_version(saved, running, "m.keras")
    else:
        models.check_keras_version(saved, running, "m.keras")


def test_load_model_reads_the_saving_keras_version_and_checks_it(tmp_path, monkeypatch):
    _, embedding_model = models.build_basic_cnn(3, 16, filters=(4,), dense_units=4)
    path = tmp_path / "embedding_model.keras"
    embedding_model.save(path)
    assert models.saved_keras_version(path) == keras.__version__
    models.load_model(path)
    monkeypatch.setattr(keras, "__version__", "3.10.0")  # as on an image with an older Keras
    if models._version(models.saved_keras_version(path)) >= models.FORMAT_BREAK:
        with pytest.raises(ValueError, match="embedding_model.keras: saved by Keras"):
            models.load_model(path)


def _small_model(**overrides):
    return models.build_model(
        "efficientnet-lite0", n_classes=5, image_size=48, embedding_dim=8, **overrides
    )


@pytest.mark.slow
def test_a_saved_model_carries_its_portable_pair_and_loads_back_from_it(tmp_path):
    """save_model writes the .keras file, the weights and the recipe; load_model rebuilds the
    embedding model from the recipe with the same embeddings, in float32 even when it was
    trained under mixed_bfloat16 (a bfloat16 layer would be slow or absent on a T4)."""
    images, _ = _batch(n=2, size=48)
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        _, embedding_model = _small_model()
        bfloat16 = embedding_model.predict(images, verbose=0)
        written = models.save_model(embedding_model, tmp_path / "embedding_model.keras")
    finally:
        keras.config.set_dtype_policy("float32")
    assert [p.name for p in written] == [
        "embedding_model.keras", "embedding_model.weights.h5", "embedding_model.recipe.json"
    ]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)
    recipe = models.read_recipe(tmp_path / "embedding_model.keras")
    assert recipe["builder"] == "build_model" and recipe["dtype_policy"] == "mixed_bfloat16"
    assert recipe["arguments"]["backbone"] == "efficientnet-lite0"
    assert recipe["arguments"]["image_size"] == 48 and recipe["keras_version"] == keras.__version__

    loaded = models.load_model(tmp_path / "embedding_model.keras")
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {"float32"}
    # the same weights computed in float32: equal to the bfloat16 outputs to bfloat16's precision
    float32 = loaded.predict(images, verbose=0)
    assert float32.dtype == np.float32
    np.testing.assert_allclose(float32, bfloat16, atol=0.05 * np.abs(bfloat16).max())
    # and exactly the model as saved, loaded from its .keras file, computing in float32
    reference = models.rebuild_model(recipe, tmp_path / "embedding_model.weights.h5")
    reference.set_weights(keras.models.load_model(tmp_path / "embedding_model.keras").get_weights())
    np.testing.assert_allclose(float32, reference.predict(images, verbose=0), atol=1e-6)


@pytest.mark.slow
def test_a_gem_model_keeps_its_learned_exponent_through_the_portable_pair(tmp_path):
    _, embedding_model = _small_model(pooling="gem")
    embedding_model.get_layer("pooling").p.assign(4.25)  # as if learned
    images, _ = _batch(n=2, size=48)
    models.save_model(embedding_model, tmp_path / "embedding_model.keras")
    recipe = models.read_recipe(tmp_path / "embedding_model.keras")
    assert recipe["arguments"]["pooling"] == "gem"
    rebuilt = models.rebuild_model(recipe, tmp_path / "embedding_model.weights.h5")
    assert float(keras.ops.convert_to_numpy(rebuilt.get_layer("pooling").p)) == 4.25
    np.testing.assert_allclose(
        rebuilt.predict(images, verbose=0), embedding_model.predict(images, verbose=0), atol=1e-5
    )


def test_a_basic_cnn_reloads_from_its_recipe(tmp_path):
    _, embedding_model = models.build_basic_cnn(3, 32, filters=(4, 8), dense_units=6)
    images, _ = _batch(n=2, size=32)
    models.save_model(embedding_model, tmp_path / "cnn.keras")
    loaded = models.load_model(tmp_path / "cnn.keras")
    assert models.read_recipe(tmp_path / "cnn.keras")["arguments"]["filters"] == [4, 8]
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), embedding_model.predict(images, verbose=0), atol=1e-5
    )


def test_a_portable_pair_that_lies_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "embedding_model.keras"
    _, first = _small_model()
    models.save_model(first, path)
    recipe, weights = models.portable_files(path)
    _, other = _small_model(dropout=0.1)
    other.save_weights(tmp_path / "other.weights.h5")
    (tmp_path / "other.weights.h5").replace(weights)  # another model's weights, same shapes
    with pytest.raises(ValueError, match=r"embedding_model\.weights\.h5: not the weights"):
        models.load_model(path)
    weights.unlink()
    with pytest.raises(ValueError, match=r"its weights file .*embedding_model\.weights\.h5"):
        models.load_model(path)
    recipe.write_text('{"builder": "build_everything", "arguments": {}}')
    with pytest.raises(ValueError, match=r"recipe\.json: unknown builder 'build_everything'"):
        models.load_model(path)
    recipe.write_text("{not json")
    with pytest.raises(ValueError, match=r"embedding_model\.recipe\.json: not a model recipe"):
        models.load_model(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"extra": 1}, r"unknown argument\(s\) \['extra'\] for build_model"),
        ({"image_size": "48"}, "image_size must be int, got '48'"),
        ({"image_size": True}, "image_size must be int, got 'True'"),
        ({"embedding_dim": 10**12}, "embedding_dim 1000000000000 is outside 1..16384"),
        ({"dropout": "x"}, "dropout must be float"),
        ({"pooling": "sum"}, r"pooling must be one of \['avg', 'max', 'gem'\]"),
        ({"backbone": "efficientnet-b99"}, "unknown backbone 'efficientnet-b99'"),
        ({"weights": "imagenet"}, "weights must be NoneType"),
    ],
)
def test_a_recipe_that_is_not_ours_is_refused_before_anything_is_built(tmp_path, change, message):
    path = tmp_path / "embedding_model.keras"
    _, model = _small_model()
    models.save_model(model, path)
    recipe_path, _ = models.portable_files(path)
    recipe = json.loads(recipe_path.read_text())
    recipe["arguments"].update(change)
    recipe_path.write_text(json.dumps(recipe))
    with pytest.raises(ValueError, match=message) as error:
        models.load_model(path)
    assert "recipe.json: " in str(error.value) and "\n" not in str(error.value)


def test_saving_a_model_without_a_recipe_over_one_with_removes_the_stale_recipe(tmp_path):
    """A model not built here (no recipe) saved over a portable one: the old recipe and weights
    must not be taken for it; it loads from its .keras file."""
    path = tmp_path / "embedding_model.keras"
    _, first = _small_model()
    models.save_model(first, path)
    images, _ = _batch(n=2, size=48)
    plain = keras.Sequential(
        [keras.Input((48, 48, 3)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    assert models.save_model(plain, path) == [path]
    assert models.read_recipe(path) is None
    np.testing.assert_allclose(
        models.load_model(path).predict(images, verbose=0), plain.predict(images, verbose=0)
    )


def _second_venv(folder, keras_wheel):
    """A venv whose own site-packages holds ``keras_wheel`` (extracted, as pip installs a pure
    wheel) ahead of this environment's packages (TensorFlow, NumPy, ..., whaleutils)."""
    import site
    import subprocess
    import sys
    import zipfile

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    packages = folder / "lib" / version / "site-packages"
    zipfile.ZipFile(keras_wheel).extractall(packages)
    ours = [p for p in site.getsitepackages() if "site-packages" in p]
    (packages / "this_environment.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in ours)
    )
    return folder / "bin" / "python"


@pytest.mark.slow
def test_a_model_trained_on_jax_in_bfloat16_loads_in_keras_3_10_with_the_same_embeddings(tmp_path):
    """Kaggle's TPU kernel (Keras on JAX, mixed_bfloat16, Keras >= 3.12) saves; a second venv
    with Keras 3.10 on TensorFlow (the GPU image's) loads it through load_model and gets the
    embeddings the saving process got from the same weights in float32. The .keras file alone
    is refused there with both versions named."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from whaleutils.suite import preflight

    wheelhouse = os.environ.get("WHALEUTILS_WHEELHOUSE")
    if wheelhouse is None:
        pytest.skip("needs the wheelhouse (`python -m whaleutils kaggle wheelhouse DIR`)")
    version = preflight.GPU_IMAGE_KERAS.split("==")[1]
    wheels = sorted((Path(wheelhouse) / preflight.COMPAT_FOLDER).glob(f"keras-{version}-*.whl"))
    assert wheels, f"{wheelhouse}/{preflight.COMPAT_FOLDER}: no keras {version} wheel"
    script = str(Path(__file__).parent / "keras_compat.py")
    model_folder = tmp_path / "model"
    model_folder.mkdir()

    def run(python, mode, backend):
        result = subprocess.run(
            [str(python), script, mode, str(model_folder)],
            env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True,
            timeout=900,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]

    run(sys.executable, "save", "jax")
    run(_second_venv(tmp_path / "venv", wheels[0]), "load", "tensorflow")
    report = json.loads((model_folder / "report.json").read_text())
    assert report["keras_version"] == version and str(tmp_path / "venv") in report["keras_file"]
    assert report["backend"] == "tensorflow" and report["policies"] == ["float32"]
    assert f"which this Keras {version} cannot load" in report["keras_file_alone"]
    loaded, float32, bfloat16 = (
        np.load(model_folder / f"{name}.npy") for name in ("loaded", "float32", "bfloat16")
    )
    scale = np.abs(float32).max()
    np.testing.assert_allclose(loaded, float32, atol=1e-4 * scale)
    np.testing.assert_allclose(loaded, bfloat16, atol=0.05 * scale)
