"""Where notebooks find their inputs on Kaggle (and locally), weights and the TPU warning."""

from __future__ import annotations

from pathlib import Path

import pytest

from whaleutils.contracts import environment
from whaleutils.datasets import data


def make(path, files=()):
    path.mkdir(parents=True, exist_ok=True)
    for name in files:
        (path / name).write_text("x")
    return path


def test_find_folder_and_file_search_a_few_levels_by_name(tmp_path):
    root = make(tmp_path / "input")
    make(root / "a" / "04_effnet_arcface")  # right name, no marker: not it
    wanted = make(root / "notebooks" / "me" / "kernel" / "04_effnet_arcface", ["scores.json"])
    make(root / "1" / "2" / "3" / "4" / "5" / "6" / "7", ["deep.h5"])  # beyond the search
    assert environment.find_folder("04_effnet_arcface", "scores.json", root) == wanted
    assert environment.find_folder("04_effnet_arcface", "scores.json", root, depth=3) is None
    assert environment.find_folder("absent", "scores.json", root) is None
    assert environment.find_folder("x", "y", tmp_path / "no-such-root") is None
    make(root / "weights" / "b5", ["efficientnet-b5_noisy-student_notop.h5"])
    found = environment.find_file("efficientnet-b5_noisy-student_notop.h5", root)
    assert found == root / "weights" / "b5" / "efficientnet-b5_noisy-student_notop.h5"
    assert environment.find_file("deep.h5", root) is None
    assert (
        environment.find_file("deep.h5", root, depth=7)
        == root / "1" / "2" / "3" / "4" / "5" / "6" / "7" / "deep.h5"
    )


def test_kaggles_current_mounts_are_found(tmp_path):
    """/kaggle/input/competitions/<slug>, datasets/<owner>/<slug> and notebooks/<owner>/<slug>
    (Kaggle's layout since 2025), with a kernel's notebook folder inside its output and a
    snapshot two levels further: the data set, the boxes, the weights, 04's output (depth 4)
    and a deeper copy of it (depth 6) are all found."""
    root = make(tmp_path / "input")
    competition = make(root / "competitions" / "happy-whale-and-dolphin", ["train.csv"])
    boxes = make(root / "datasets" / "me" / "happywhale-detic-boxes", ["train.csv", "test.csv"])
    make(root / "datasets" / "me" / "happywhale-backbone-weights", ["b5_notop.h5"])
    kernel = root / "notebooks" / "me" / "happywhale-04-effnet-arcface"
    output = make(kernel / "04_effnet_arcface", ["scores.json"])
    make(output / "snapshots" / "epoch-005", ["oof_predictions.csv"])
    fold = make(
        root / "notebooks" / "me" / "happywhale-04-fold-1" / "runs" / "x" / "04_effnet_arcface",
        ["scores.json"],
    )
    assert environment.find_folder("happy-whale-and-dolphin", "train.csv", root) == competition
    assert environment.find_folder("happywhale-detic-boxes", "train.csv", root) == boxes
    assert environment.find_file("b5_notop.h5", root).parent.name == "happywhale-backbone-weights"
    assert environment.notebook_output(root, "04_effnet_arcface") == output
    assert environment.notebook_outputs(root, "04_effnet_arcface") == sorted([output, fold])


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


def test_tpu_host_detection(tmp_path):
    dev = make(tmp_path / "dev")
    assert not environment.tpu_host({}, dev)
    assert environment.tpu_host({"ISTPUVM": "1"}, dev)
    assert environment.tpu_host({"TPU_ACCELERATOR_TYPE": "v5litepod-8"}, dev)
    (dev / "accel0").write_text("")
    assert environment.tpu_host({}, dev)


def test_strategy_on_a_tpu_host_the_backend_cannot_use_stops_with_what_to_do():
    from whaleutils.training import distribute

    with pytest.raises(RuntimeError, match="Keras on tensorflow sees no TPU") as raised:
        distribute.get_strategy(allow_tpu=False, tpu_host=True)
    assert str(raised.value) == environment.TPU_UNUSED_HINT.format(backend="tensorflow")
    assert '"jax"' in str(raised.value) and "GPU T4 x2" in str(raised.value)
    plain = distribute.get_strategy(allow_tpu=False, tpu_host=False)
    assert plain.describe() == "Keras on tensorflow: 1 cpu device(s) (CPU), one device"
    assert plain.precision() == "float32" and plain.precision("mixed_bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        plain.precision("bfloat16")


def test_auto_precision_is_bfloat16_on_tpus_float16_on_gpus():
    from whaleutils.training import distribute

    tpu = distribute.StrategyChoice("jax", "tpu", 8, "TPU v5 lite", distribution=object())
    assert tpu.precision() == "mixed_bfloat16" and tpu.global_batch_size(16) == 128
    assert tpu.describe() == "Keras on jax: 8 tpu device(s) (TPU v5 lite), data-parallel (object)"
    gpus = distribute.StrategyChoice("tensorflow", "gpu", 2, "GPU")
    assert gpus.precision() == "mixed_float16"  # with Keras' loss scaling
    assert distribute.StrategyChoice("tensorflow", "cpu", 1, "CPU").precision() == "float32"


def test_describe_devices_says_plainly_what_runs():
    from whaleutils.training import distribute

    assert distribute.describe_devices(tpu_host=False) == (
        "Keras on tensorflow runs this notebook on the CPU (no GPU visible)"
    )
    warned = distribute.describe_devices(tpu_host=True)
    assert warned.startswith(
        "Keras on tensorflow runs this notebook on the CPU (no GPU visible). WARNING:"
    )
    assert environment.TPU_UNUSED_HINT.format(backend="tensorflow") in warned


def test_auto_backend_is_jax_on_a_tpu_machine_and_tensorflow_elsewhere(tmp_path):
    dev = make(tmp_path / "dev")
    assert environment.choose_backend("auto", {}, dev) == "tensorflow"
    assert environment.choose_backend("auto", {"ISTPUVM": "1"}, dev) == "jax"
    assert environment.choose_backend("tensorflow", {"ISTPUVM": "1"}, dev) == "tensorflow"
    assert environment.choose_backend("jax", {}, dev) == "jax"
    with pytest.raises(ValueError, match="backend='torch'"):
        environment.choose_backend("torch", {}, dev)


def test_use_backend_sets_keras_backend_and_refuses_a_late_switch():
    import keras  # imported by the test session on TensorFlow

    assert keras.backend.backend() == "tensorflow"
    environ = {}
    assert environment.use_backend("tensorflow", environ) == "tensorflow"
    assert environ == {"KERAS_BACKEND": "tensorflow"}
    untouched = {"KERAS_BACKEND": "tensorflow"}
    with pytest.raises(RuntimeError, match="already imported with the tensorflow backend"):
        environment.use_backend("jax", untouched)
    assert untouched == {"KERAS_BACKEND": "tensorflow"}


def test_process_seconds_counts_from_the_process_start():
    import subprocess
    import sys

    code = "import time; time.sleep(1.0); from whaleutils.contracts import environment; "
    code += "print(environment.process_seconds())"
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, check=True).stdout)  # fmt: skip
    assert 1.0 <= seconds < 30.0


def test_the_kaggle_root_moves_with_its_variable(tmp_path):
    """WHALEUTILS_KAGGLE_ROOT (read when the module is imported) moves /kaggle: the inputs,
    the working folder and the competition's mount follow it; unset or empty, it is /kaggle."""
    import json
    import os
    import subprocess
    import sys

    show = (
        "import json\n"
        "from whaleutils.contracts import environment\n"
        "from whaleutils.datasets import data\n"
        "print(json.dumps([str(environment.KAGGLE_INPUT), str(environment.KAGGLE_WORKING),\n"
        "                  str(data.KAGGLE_DATA_DIR)]))\n"
    )
    for value, root in ((str(tmp_path / "k"), tmp_path / "k"), ("", Path("/kaggle"))):
        environ = {**os.environ, "WHALEUTILS_KAGGLE_ROOT": value}
        printed = subprocess.run(
            [sys.executable, "-c", show], env=environ, capture_output=True, text=True, check=True
        ).stdout
        assert json.loads(printed) == [
            str(root / "input"), str(root / "working"),
            str(root / "input" / "happy-whale-and-dolphin"),
        ]  # fmt: skip
