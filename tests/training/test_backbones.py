"""The backbone registry: one record per backbone, read by the builder, the weights lookup,
preflight and the docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from whaleutils.suite import preflight
from whaleutils.training import backbones, layers, models

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def make(path, files=()):
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("x")
    return path


def test_every_record_is_complete_and_consistent():
    assert list(backbones.BACKBONES)[:4] == [
        "resnet50", "efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"
    ]  # fmt: skip
    assert len(backbones.BACKBONES) == 4 + 8 + 8
    for name, record in backbones.BACKBONES.items():
        assert record.name == name
        assert record.normalization in layers.NORMALIZATION_MODES, name
        assert set(record.weight_files) <= set(record.weights), name
        assert set(record.backends) <= set(backbones.ALL_BACKENDS), name
        assert all(file.endswith(".h5") for file in record.weight_files.values()), name
    # the two EfficientNet families share qubvel's noisy-student file
    assert backbones.weights_file_name("keras-efficientnet-b5", "noisy-student") == (
        backbones.weights_file_name("efficientnet-b5", "noisy-student")
    )


def test_unknown_backbone_weights_and_backend_are_refused_by_name():
    with pytest.raises(
        ValueError, match=r"unknown backbone 'resnet18'; choose one of \['resnet50'"
    ):
        backbones.get("resnet18")
    with pytest.raises(ValueError, match=r"must be one of \[None, 'imagenet'\] .* for resnet50"):
        backbones.get("resnet50").check_weights("noisy-student")
    backbones.get("resnet50").check_weights(None)
    backbones.get("efficientnet-b3").check_backend("tensorflow")
    with pytest.raises(ValueError, match="runs on TensorFlow only.*use 'keras-efficientnet-b3'"):
        backbones.get("efficientnet-b3").check_backend("jax")


def test_preflight_names_the_package_a_backbone_needs():
    assert backbones.packages() == {"efficientnet": [f"efficientnet-b{i}" for i in range(8)]}
    assert "efficientnet-b0" in preflight.OPTIONAL["efficientnet"]


def test_the_registry_imports_no_keras():
    code = (
        "import sys; from whaleutils.training import backbones; "
        "print(backbones.attached_weights('resnet50', 'imagenet', '/nonexistent')); "
        "print('keras' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["imagenet", "False"]


def test_the_docs_table_is_the_registry():
    text = DOCS.read_text()
    table = backbones.markdown_table()
    assert table in text, (
        "docs/models.md: replace the backbone table with backbones.markdown_table()"
    )


@pytest.mark.slow
def test_each_record_builds_a_feature_map():
    for name in ("resnet50", "efficientnet-lite0", "keras-efficientnet-b0", "efficientnet-b0"):
        backbone, mode = models.build_backbone(name, 32)
        assert mode == backbones.get(name).normalization
        assert len(backbone.output.shape) == 4, name


@pytest.mark.slow
def test_weights_file_names_are_the_ones_keras_would_download(monkeypatch):
    """Checked against the libraries: intercept their download and read the file name."""
    import efficientnet.model
    import keras

    requested = []

    def refuse(file_name, *args, **kwargs):
        requested.append(file_name)
        raise RuntimeError("no download in tests")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    from efficientnet import tfkeras

    for weights in ("noisy-student", "imagenet"):
        with pytest.raises(RuntimeError, match="no download"):
            tfkeras.EfficientNetB0(include_top=False, weights=weights, input_shape=(32, 32, 3))
        assert requested[-1] == backbones.weights_file_name("efficientnet-b0", weights)
    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", refuse)
    with pytest.raises(RuntimeError, match="no download"):
        keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    assert requested[-1] == backbones.weights_file_name("resnet50", "imagenet")
    assert efficientnet.model.NS_WEIGHTS_PATH  # the package still names its release URL
    # keras.applications' EfficientNet: its own imagenet file, qubvel's noisy-student file
    monkeypatch.setattr("keras.src.applications.efficientnet.file_utils.get_file", refuse)
    for weights in ("noisy-student", "imagenet"):
        with pytest.raises(RuntimeError, match="no download"):
            models.build_backbone("keras-efficientnet-b0", 32, weights)
        assert requested[-1] == backbones.weights_file_name("keras-efficientnet-b0", weights)
    assert requested[-2] == backbones.weights_file_name("efficientnet-b0", "noisy-student")


def test_attached_weights_prefers_a_mounted_file(tmp_path):
    root = make(tmp_path / "input")
    assert backbones.attached_weights("efficientnet-b5", "noisy-student", root) == "noisy-student"
    make(root / "happywhale-backbone-weights", ["efficientnet-b5_noisy-student_notop.h5"])
    path = backbones.attached_weights("efficientnet-b5", "noisy-student", root)
    assert path == str(
        root / "happywhale-backbone-weights" / "efficientnet-b5_noisy-student_notop.h5"
    )
    assert backbones.attached_weights("efficientnet-b5", None, root) is None
    assert backbones.attached_weights("efficientnet-b5", "/my/own.h5", root) == "/my/own.h5"
    assert backbones.attached_weights("efficientnet-b0", "noisy-student", root) == "noisy-student"
    assert backbones.attached_weights("basic", "imagenet", root) == "imagenet"
