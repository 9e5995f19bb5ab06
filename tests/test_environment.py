"""Where notebooks find their inputs on Kaggle (and locally), weights and the TPU warning."""

from __future__ import annotations

import pytest

from whaleutils import data, environment


def make(path, files=()):
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("x")
    return path


def test_find_folder_and_file_search_a_few_levels_by_name(tmp_path):
    root = make(tmp_path / "input")
    make(root / "a" / "04_effnet_arcface")  # right name, no marker: not it
    wanted = make(root / "notebooks" / "me" / "kernel" / "04_effnet_arcface", ["scores.json"])
    make(root / "1" / "2" / "3" / "4" / "5", ["deep.h5"])  # five levels down: beyond the search
    assert environment.find_folder("04_effnet_arcface", "scores.json", root) == wanted
    assert environment.find_folder("04_effnet_arcface", "scores.json", root, depth=3) is None
    assert environment.find_folder("absent", "scores.json", root) is None
    assert environment.find_folder("x", "y", tmp_path / "no-such-root") is None
    make(root / "weights" / "b5", ["efficientnet-b5_noisy-student_notop.h5"])
    found = environment.find_file("efficientnet-b5_noisy-student_notop.h5", root)
    assert found == root / "weights" / "b5" / "efficientnet-b5_noisy-student_notop.h5"
    assert environment.find_file("deep.h5", root) is None
    assert (
        environment.find_file("deep.h5", root, depth=5)
        == root / "1" / "2" / "3" / "4" / "5" / "deep.h5"
    )


def test_notebook_output_local_then_mounted_then_clear_error(tmp_path):
    local = make(tmp_path / "runs" / "04_effnet_arcface", ["scores.json"])
    assert environment.notebook_output(tmp_path / "runs", "04_effnet_arcface") == local
    kaggle_input = make(tmp_path / "input")
    mounted = make(
        kaggle_input / "happywhale-04-effnet-arcface" / "04_effnet_arcface", ["scores.json"]
    )
    assert environment.notebook_output(kaggle_input, "04_effnet_arcface") == mounted
    with pytest.raises(
        FileNotFoundError,
        match=r"no output of notebook 03_resnet_arcmargin \(03_resnet_arcmargin/scores.json\)",
    ):
        environment.notebook_output(kaggle_input, "03_resnet_arcmargin")


def test_find_data_dir_finds_the_competition_wherever_kaggle_mounts_it(tmp_path, monkeypatch):
    kaggle_input = make(tmp_path / "input")
    monkeypatch.setattr(environment, "KAGGLE_INPUT", kaggle_input)
    with pytest.raises(FileNotFoundError, match="no Happywhale data set"):
        data.find_data_dir()
    competition = make(kaggle_input / "competitions" / "happy-whale-and-dolphin", ["train.csv"])
    assert data.find_data_dir() == competition


def test_weights_file_names_are_the_ones_keras_would_download(monkeypatch):
    """Checked against the libraries: intercept their download and read the file name."""
    import efficientnet.model
    import keras

    from whaleutils import models  # noqa: F401 - imports efficientnet.tfkeras the supported way

    requested = []

    def refuse(file_name, *args, **kwargs):
        requested.append(file_name)
        raise RuntimeError("no download in tests")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    from efficientnet import tfkeras

    for weights in ("noisy-student", "imagenet"):
        with pytest.raises(RuntimeError, match="no download"):
            tfkeras.EfficientNetB0(include_top=False, weights=weights, input_shape=(32, 32, 3))
        assert requested[-1] == environment.weights_file_name("efficientnet-b0", weights)
    monkeypatch.setattr("keras.src.applications.resnet.file_utils.get_file", refuse)
    with pytest.raises(RuntimeError, match="no download"):
        keras.applications.ResNet50(include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    assert requested[-1] == environment.weights_file_name("resnet50", "imagenet")
    assert efficientnet.model.NS_WEIGHTS_PATH  # the package still names its release URL


def test_attached_weights_prefers_a_mounted_file(tmp_path):
    root = make(tmp_path / "input")
    assert environment.attached_weights("efficientnet-b5", "noisy-student", root) == "noisy-student"
    make(root / "happywhale-backbone-weights", ["efficientnet-b5_noisy-student_notop.h5"])
    path = environment.attached_weights("efficientnet-b5", "noisy-student", root)
    assert path == str(
        root / "happywhale-backbone-weights" / "efficientnet-b5_noisy-student_notop.h5"
    )
    assert environment.attached_weights("efficientnet-b5", None, root) is None
    assert environment.attached_weights("efficientnet-b5", "/my/own.h5", root) == "/my/own.h5"
    assert environment.attached_weights("efficientnet-b0", "noisy-student", root) == "noisy-student"
    assert environment.attached_weights("basic", "imagenet", root) == "imagenet"


def test_tpu_host_detection(tmp_path):
    dev = make(tmp_path / "dev")
    assert not environment.tpu_host({}, dev)
    assert environment.tpu_host({"ISTPUVM": "1"}, dev)
    assert environment.tpu_host({"TPU_ACCELERATOR_TYPE": "v5litepod-8"}, dev)
    (dev / "accel0").write_text("")
    assert environment.tpu_host({}, dev)


def test_strategy_on_a_tpu_host_without_tpu_says_so():
    from whaleutils import distribute

    unused = distribute.get_strategy(allow_tpu=False, tpu_host=True)
    assert unused.kind == "cpu" and unused.note == environment.TPU_INSTALL_HINT
    assert unused.describe().startswith("running on cpu with 1 replica(s). WARNING:")
    assert "tensorflow-tpu" in unused.describe()
    plain = distribute.get_strategy(allow_tpu=False, tpu_host=False)
    assert plain.note == "" and plain.describe() == "running on cpu with 1 replica(s)"


def test_describe_devices_says_plainly_what_runs():
    from whaleutils import distribute

    assert distribute.describe_devices(tpu_host=False) == (
        "TensorFlow runs this notebook on the CPU (no GPU visible)"
    )
    warned = distribute.describe_devices(tpu_host=True)
    assert warned.startswith("TensorFlow runs this notebook on the CPU (no GPU visible). WARNING:")
    assert environment.TPU_INSTALL_HINT in warned
