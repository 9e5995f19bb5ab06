import subprocess
import sys

import pandas as pd
import pytest

from whaleutils import cli


@pytest.mark.parametrize("command", ["synth", "validate", "prepare", "score", "folds", "baselines"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m whaleutils " + command in capsys.readouterr().out


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "whaleutils", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "synth" in result.stdout


def test_score_the_sample_submission(small_synth, capsys):
    assert (
        cli.main(
            [
                "score",
                str(small_synth / "sample_submission.csv"),
                str(small_synth / "test_solution.csv"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        out.startswith("sample_submission.csv")
        and "MAP@5" in out
        and "known" in out
        and "new" in out
    )


def test_score_perfect_submission_is_one(small_synth, tmp_path, capsys):
    solution = pd.read_csv(small_synth / "test_solution.csv")
    train = pd.read_csv(small_synth / "train.csv")
    fillers = [i for i in train["individual_id"].unique()][:5]
    rows = []
    for image, truth in zip(solution["image"], solution["individual_id"], strict=True):
        rows.append((image, " ".join([truth, *[f for f in fillers if f != truth][:4]])))
    pd.DataFrame(rows, columns=["image", "predictions"]).to_csv(
        tmp_path / "perfect.csv", index=False
    )
    assert (
        cli.main(["score", str(tmp_path / "perfect.csv"), str(small_synth / "test_solution.csv")])
        == 0
    )
    assert "MAP@5 1.0000" in capsys.readouterr().out


def test_score_rejects_a_malformed_submission(small_synth, tmp_path, capsys):
    frame = pd.read_csv(small_synth / "sample_submission.csv")
    frame.loc[1, "predictions"] = "only three ids"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    assert (
        cli.main(["score", str(tmp_path / "bad.csv"), str(small_synth / "test_solution.csv")]) == 1
    )
    err = capsys.readouterr().err
    assert "bad.csv line 3" in err and "3 predictions, expected 5" in err


def test_validate_exit_codes(small_synth, tmp_path, capsys):
    assert cli.main(["validate", str(small_synth)]) == 0
    assert cli.main(["validate", str(tmp_path)]) == 1
    assert "train.csv: file missing" in capsys.readouterr().out


def test_folds_writes_once(small_synth, tmp_path, capsys):
    out = tmp_path / "folds.csv"
    assert cli.main(["folds", str(small_synth), "--out", str(out)]) == 0
    assert "new_share" in capsys.readouterr().out
    written = out.read_bytes()
    assert cli.main(["folds", str(small_synth), "--out", str(out)]) == 1
    assert out.read_bytes() == written


def test_errors_are_one_line_not_tracebacks(tmp_path, capsys):
    assert (
        cli.main(
            [
                "prepare",
                "--labels",
                str(tmp_path / "none.csv"),
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert capsys.readouterr().err.startswith("error: ")


def test_run_sets_parameters_and_names_one_no_notebook_has(tmp_path, capsys):
    argv = ["run", "--profile", "smoke", "--data", str(tmp_path), "--out", str(tmp_path)]
    argv += ["--only", "01_eda", "-p", "backend", "jax", "-p", "epochs", "1"]
    assert cli.main(argv) == 2
    assert "no notebook of this run has the parameter(s) ['backend', 'epochs']" in (
        capsys.readouterr().err
    )


def test_run_boxes_must_exist_and_reach_only_notebooks_that_read_photos(tmp_path, capsys):
    argv = ["run", "--profile", "smoke", "--data", str(tmp_path), "--out", str(tmp_path)]
    assert cli.main([*argv, "--boxes", str(tmp_path / "none.csv")]) == 2
    assert f"--boxes {tmp_path / 'none.csv'}: no such file or folder" in capsys.readouterr().err
    (tmp_path / "boxes.csv").write_text("image,box\n")
    assert cli.main([*argv, "--only", "01_eda", "--boxes", str(tmp_path / "boxes.csv")]) == 2
    assert "no notebook of this run has the parameter(s) ['boxes']" in capsys.readouterr().err


def test_run_checks_a_crop_cache_given_with_p_as_with_its_flag(tmp_path, capsys, monkeypatch):
    """``-p crop_cache DIR`` is a path like ``--crop-cache DIR``: checked, made absolute (the
    notebooks run in the repository's folder, not the caller's)."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--profile", "smoke", "--data", ".", "--out", "runs", "--only", "01_eda"]
    assert cli.main([*argv, "-p", "crop_cache", "./no cache"]) == 2
    assert "--crop-cache no cache: no such file or folder" in capsys.readouterr().err
