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


def test_run_names_a_missing_data_set_before_writing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()  # a folder, but no data set: no train.csv
    argv = ["run", "--profile", "smoke", "--out", "runs", "--only", "01_eda"]
    assert cli.main([*argv, "--data", "photos"]) == 2
    assert (
        f"error: data photos: no Happywhale data set (train.csv) found in {tmp_path / 'photos'}"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()


def test_run_checks_a_crop_cache_given_with_p_as_with_its_flag(tmp_path, capsys, monkeypatch):
    """``-p crop_cache DIR`` is a path like ``--crop-cache DIR``: checked, made absolute (the
    notebooks run in the repository's folder, not the caller's)."""
    monkeypatch.chdir(tmp_path)
    argv = ["run", "--profile", "smoke", "--data", ".", "--out", "runs", "--only", "01_eda"]
    assert cli.main([*argv, "-p", "crop_cache", "./no cache"]) == 2
    assert "--crop-cache no cache: no such file or folder" in capsys.readouterr().err
    # notebook 00's name is a cache of this run: the local profile does not run 00, refused
    # before anything is generated or run
    local = ["run", "--profile", "local", "--out", "runs", "--only", "02_basic_cnn"]
    assert cli.main([*local, "--crop-cache", "00_crop_cache"]) == 2
    assert (
        "02_basic_cnn reads the crop cache of notebook 00_crop_cache, which the local profile "
        "does not run" in capsys.readouterr().err
    )
    assert not (tmp_path / "runs").exists()


def hostile_inputs(tmp_path, small_synth):
    """(what, argv, expected message) for inputs a careful or hostile user gives."""
    import shutil

    boxes = tmp_path / "boxes"
    shutil.copytree(small_synth, boxes)
    train = pd.read_csv(boxes / "train.csv")
    train.loc[0, "box"] = "inf 0 10 10"
    train.loc[1, "box"] = "1e400 0 10 10"
    train.to_csv(boxes / "train.csv", index=False)
    twice = tmp_path / "twice.csv"
    solution = pd.read_csv(small_synth / "test_solution.csv")
    pd.concat([solution, solution.head(1)]).to_csv(twice, index=False)
    labels = tmp_path / "labels.csv"
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        shutil.copy(small_synth / "train_images" / train["image"][0], photos / name)
    pd.DataFrame(
        {"image": ["a.jpg", "b.jpg", "c.jpg"], "individual_id": ["new_individual", "w 1", "w2"]}
    ).to_csv(labels, index=False)
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text("image,individual_id\na.jpg,w2\n", encoding="utf-16")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    card_folder = tmp_path / "card"
    card_folder.mkdir()
    (card_folder / "synth.json").write_text('{"config": ')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    sample = str(small_synth / "sample_submission.csv")
    solution_file = str(small_synth / "test_solution.csv")
    prepare = ["prepare", "--images", str(photos), "--labels"]
    return [
        ("a box at infinity", ["validate", str(boxes)], "box 'inf 0 10 10' has a non-finite"),
        ("a box beyond any number", ["validate", str(boxes)], "box '1e400 0 10 10' has a non-fin"),
        ("a folder to score", ["score", str(tmp_path), solution_file], "a folder, not a CSV file"),
        ("a solution row twice", ["score", sample, str(twice)],
         f"twice.csv, line {len(solution) + 2}: image"),
        ("an empty submission", ["score", str(empty), solution_file], "empty.csv: empty file"),
        ("a reserved id", [*prepare, str(labels), "--out", str(tmp_path / "o1")],
         "individual_id 'new_individual' is reserved"),
        ("an id with a space", [*prepare, str(labels), "--out", str(tmp_path / "o2")],
         "individual_id 'w 1' is reserved or holds a space"),
        ("UTF-16 labels", [*prepare, str(utf16), "--out", str(tmp_path / "o3")],
         "utf16.csv: not UTF-8 text"),
        ("--out a file", [*prepare, str(labels), "--out", str(a_file)], "a_file is a file"),
        ("a -p value that is not YAML", ["run", "--profile", "smoke", "-p", "epochs", "{[", "--out",
                                         str(tmp_path / "r")], "-p epochs '{[': not a YAML value"),
        ("a COCO file nested too deeply", ["import", "--format", "coco", "--annotations",
                                           str(deep), "--images", str(photos), "--out",
                                           str(tmp_path / "o4")], "deep.json: not a readable JSON"),
        ("run --out where no folder can be", ["run", "--profile", "smoke", "--only", "01_eda",
                                              "--out", str(a_file / "runs")], "Not a directory"),
        ("synth with no worker", ["synth", str(tmp_path / "s"), "--workers", "0"],
         "workers must be a whole number >= 1, got workers=0"),
        ("a synthetic card that is not JSON", ["synth", str(card_folder)],
         "synth.json: not a readable JSON file"),
        ("an export named .inp", ["export", "--catalogue", str(small_synth), "--format",
                                  "capture-history", "--out", str(tmp_path / "h.inp")],
         "name the CSV"),
    ]  # fmt: skip


def test_hostile_inputs_get_one_line_and_no_traceback(tmp_path, small_synth, capsys):
    """The first case through ``python -m whaleutils`` (exit status, stderr, no traceback),
    the others through the same ``main`` in this process: an exception escaping it fails."""
    (what, argv, message), *others = hostile_inputs(tmp_path, small_synth)
    result = subprocess.run(
        [sys.executable, "-m", "whaleutils", *argv], capture_output=True, text=True
    )
    assert result.returncode in (1, 2), (what, result.stderr)
    assert message in result.stdout + result.stderr, (what, result.stderr[-500:])
    assert "Traceback" not in result.stderr, (what, result.stderr[-800:])
    for what, argv, message in others:
        try:
            status = cli.main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            status = exit_.code
        out, err = capsys.readouterr()
        assert status in (1, 2), (what, err)
        assert message in out + err, (what, err[-500:])


HOLD_RUN_FOLDER = """\
import sys, time
from whaleutils.suite import runner
with runner.RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_run_into_the_same_run_folder_is_refused_naming_the_first(
    small_synth, tmp_path, capsys
):
    """Two runs into one run folder would rewrite each other's summary.json and notebook
    folders: while one holds ``runs/<profile>/.run.lock`` (here another process), a second
    refuses at once, naming it, and writes nothing."""
    run_dir = tmp_path / "runs" / "smoke"
    run_dir.mkdir(parents=True)
    first = subprocess.Popen(
        [sys.executable, "-c", HOLD_RUN_FOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert first.stdout.readline().strip() == "held"
        argv = ["run", "--profile", "smoke", "--data", str(small_synth),
                "--out", str(tmp_path / "runs"), "--only", "01_eda"]  # fmt: skip
        assert cli.main(argv) == 1
        assert (
            f"{run_dir}: another run (process {first.pid}) is writing this run folder; wait for "
            "it to finish, or give another --out" in capsys.readouterr().err
        )
        assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock"]
    finally:
        first.kill()
        first.wait()
