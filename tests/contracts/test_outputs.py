"""The output-file contract between notebooks, and the runner's reading of it."""

import json
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from whaleutils.contracts import outputs
from whaleutils.retrieval import embed, trained_run
from whaleutils.suite import runner
from whaleutils.training import models


def test_write_outputs_lists_only_what_exists(tmp_path):
    (tmp_path / "a.csv").write_text("x\n")
    with pytest.raises(FileNotFoundError, match=r"declared outputs missing: \['b.png'\]"):
        outputs.write_outputs(tmp_path, ["a.csv", "b.png"])
    assert not outputs.outputs_complete(tmp_path)  # nothing listed yet
    outputs.write_outputs(tmp_path, [tmp_path / "a.csv"])
    listing = json.loads((tmp_path / "outputs.json").read_text())
    assert listing["files"] == ["a.csv"]
    assert listing["environment"]["python"] == sys.version.split()[0]
    assert listing["environment"]["keras"] == keras.__version__  # what the notebook ran on
    assert outputs.outputs_complete(tmp_path)
    (tmp_path / "a.csv").unlink()
    assert not outputs.outputs_complete(tmp_path)  # a listed file went missing


@pytest.mark.parametrize(
    "out_dir", ["runs/local/04", "./runs/local/04", "../elsewhere/04", "runs with space/04", "."]
)
def test_outputs_may_be_named_or_built_from_a_relative_out_dir(tmp_path, monkeypatch, out_dir):
    """A notebook lists ``out / name`` whatever form ``out_dir`` took (issue 19: a relative
    ``--out`` had snapshot files joined to it twice)."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    out = Path(out_dir)
    (out / "snapshots" / "epoch-003").mkdir(parents=True)
    for name in ("log.csv", "snapshots/epoch-003/train.npz"):
        (out / name).write_text("x\n")
    files = ["log.csv", out / "snapshots" / "epoch-003" / "train.npz"]
    outputs.write_outputs(out, [*files, out.absolute() / "log.csv"])
    listed = json.loads((out / "outputs.json").read_text())["files"]
    assert listed == ["log.csv", "snapshots/epoch-003/train.npz", "log.csv"]
    assert outputs.outputs_complete(out)
    monkeypatch.chdir(tmp_path.parent)  # the listing holds names, not paths from the cwd
    assert outputs.outputs_complete(tmp_path / "cwd" / out)


def test_an_output_outside_the_folder_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "other.csv").write_text("x\n")
    for outside in (tmp_path / "other.csv", "../other.csv", tmp_path / "out"):
        with pytest.raises(ValueError, match="not a file inside the output folder"):
            outputs.write_outputs(tmp_path / "out", [outside])
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "out", target_is_directory=True)
    (tmp_path / "out" / "a.csv").write_text("x\n")  # the same folder reached through a link
    assert outputs.output_name(link, tmp_path / "out" / "a.csv") == "a.csv"


def test_read_scores_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="scores.json not found"):
        outputs.read_scores(tmp_path)
    outputs.write_json(tmp_path / "scores.json", {"test": None})
    with pytest.raises(ValueError, match="no 'valid' entry"):
        outputs.read_scores(tmp_path)


def test_load_trained_reads_model_settings_and_embeddings(tmp_path):
    folder = tmp_path / "04_effnet_arcface"
    _, embedding_model = models.build_basic_cnn(3, 24, filters=(4,), dense_units=8)
    folder.mkdir()
    embedding_model.save(folder / outputs.EMBEDDING_MODEL)
    outputs.write_json(
        folder / "scores.json", {"valid": {"map5": 0.5}, "k": 3, "threshold": 0.4, "rule": "max"}
    )
    vectors = embed.l2_normalize(np.eye(3, 8))
    for part in embed.PARTS:
        embed.save_embeddings(folder / f"{part}.npz", ["x", "y", "z"], vectors)
    trained = trained_run.load_trained(tmp_path, "04_effnet_arcface")
    assert trained.image_size == 24  # read from the model, not restated
    assert trained.knn == outputs.KnnSettings(3, 0.4, "max")
    np.testing.assert_array_equal(trained.embeddings["valid"], vectors)
    assert trained.embedding_files["test"]["image_names"].tolist() == ["x", "y", "z"]
    outputs.write_json(folder / "scores.json", {"valid": {"map5": 0.5}})
    with pytest.raises(ValueError, match=r"no KNN settings \['k', 'threshold', 'rule'\]"):
        trained_run.load_trained(tmp_path, "04_effnet_arcface")


def test_run_settings_are_read_in_one_place_without_the_model(tmp_path):
    """k, rule, both thresholds, the flipped gallery, the TTA (from train.npz) and the framing
    (``split.crop_to_box``; None for a run that predates it), each from its one source."""
    folder = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="embedding_model.keras not found"):
        outputs.read_run_settings(folder)
    folder.mkdir()
    (folder / outputs.EMBEDDING_MODEL).write_bytes(b"not read here")
    scores = {"valid": {"map5": 0.5}, "k": 5, "threshold": 0.3, "rule": "vote"}
    outputs.write_json(folder / "scores.json", scores)
    run = outputs.read_run_settings(folder)
    assert run.knn == outputs.KnnSettings(5, 0.3, "vote", False)
    assert (run.valid_threshold, run.tta, run.crop_to_box) == (0.3, "none", None)
    assert run.model_path == folder / outputs.EMBEDDING_MODEL
    embed.save_embeddings(folder / "train.npz", ["x"], np.eye(1, 4), tta="flip")
    split = {"fold": 0, "n_folds": 5, "seed": 0, "crop_to_box": True}
    outputs.write_json(
        folder / "scores.json",
        {**scores, "valid_threshold": 0.2, "flipped_gallery": True, "split": split},
    )
    run = outputs.read_run_settings(folder)
    assert run.knn == outputs.KnnSettings(5, 0.3, "vote", True) and run.valid_threshold == 0.2
    assert (run.tta, run.crop_to_box, run.scores["split"]) == ("flip", True, split)
    outputs.write_json(folder / "scores.json", {"valid": {}, "k": 5})
    with pytest.raises(
        ValueError, match=r"run/scores.json: no KNN settings \['threshold', 'rule'\]"
    ):
        outputs.read_run_settings(folder)
    for change, message in [
        ({"k": None}, "k must be a whole number >= 1, got None"),
        ({"k": 0}, "k must be a whole number >= 1, got 0"),
        ({"k": -5}, "got -5"),
        ({"k": 2.5}, "got 2.5"),
        ({"k": True}, "got True"),
        ({"threshold": float("nan")}, "threshold must be a cosine distance in [0, 2], got nan"),
        ({"threshold": None}, "got None"),
        ({"threshold": 3}, "got 3"),
        ({"valid_threshold": -1}, "valid_threshold must be a cosine distance"),
        ({"rule": "mean"}, "rule must be one of ('vote', 'max'), got 'mean'"),
        ({"split": [1]}, "split must be an object"),
    ]:
        outputs.write_json(folder / "scores.json", {**scores, **change})
        with pytest.raises(ValueError) as error:
            outputs.read_run_settings(folder)
        assert "run/scores.json: " in str(error.value) and message in str(error.value), change
    (folder / "scores.json").write_text(
        '{"valid": {}, "k": 1e400, "threshold": 0.3, "rule": "max"}'
    )
    with pytest.raises(ValueError, match="k must be a whole number >= 1, got inf"):
        outputs.read_run_settings(folder)
    (folder / "scores.json").write_text("[1]")
    with pytest.raises(ValueError, match="scores.json: must hold an object, not list"):
        outputs.read_run_settings(folder)


def test_collect_scores_prefers_test_and_keeps_the_embedding_diagnostic(tmp_path):
    score = {"map5": 0.5, "map5_known": 0.4, "map5_new": 0.9, "n_images": 10}
    outputs.write_json(tmp_path / "02_basic_cnn" / "scores.json", {"valid": score, "test": None})
    outputs.write_json(
        tmp_path / "04_effnet_arcface" / "scores.json",
        {
            "valid": {**score, "map5": 0.6},
            "test": {**score, "map5": 0.7},
            "embedding": {"participation_ratio": 12.5},
        },
    )
    assert runner.collect_scores(tmp_path) == {
        "basic_cnn": {
            "map5": 0.5, "map5_known": 0.4, "map5_new": 0.9, "split": "valid", "valid_map5": 0.5,
        },
        "effnet_arcface": {
            "map5": 0.7, "map5_known": 0.4, "map5_new": 0.9, "split": "test", "valid_map5": 0.6,
            "embedding_participation_ratio": 12.5,
        },
    }  # fmt: skip
    # a fused head (04's local/) is listed first, as the head identify answers with
    outputs.write_json(
        tmp_path / "04_effnet_arcface" / "local" / "scores.json",
        {"valid": {**score, "map5": 0.65}, "test": {**score, "map5": 0.75}},
    )
    scores = runner.collect_scores(tmp_path)
    assert list(scores) == ["basic_cnn", "effnet_arcface fused", "effnet_arcface"]
    assert scores["effnet_arcface fused"]["map5"] == 0.75
    assert scores["effnet_arcface fused"]["valid_map5"] == 0.65
    summary = {"profile": "p", "data_dir": "d", "scores": scores, "notebooks": []}
    runner.write_summary(tmp_path, summary)
    table = (tmp_path / "summary.md").read_text()
    assert "| **effnet_arcface, fused head** (answers `identify`) | 0.750 |" in table
    assert "| effnet_arcface, KNN head | 0.700 |" in table


def test_importing_the_runner_loads_no_tensorflow():
    import subprocess
    import sys

    code = "import sys, whaleutils.suite.runner, whaleutils.cli; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
