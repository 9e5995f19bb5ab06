"""The notebook suite: pairs in sync, one parameters cell each, and a full smoke run."""

import json
import re
import shutil
from pathlib import Path

import jupytext
import pandas as pd
import pytest
from jupytext.compare import compare_notebooks

from whaleutils import cli
from whaleutils.analysis import robustness
from whaleutils.contracts import metrics, outputs, submission
from whaleutils.retrieval import fusion, splits, trained_run
from whaleutils.suite import runner

NOTEBOOKS = sorted(runner.NOTEBOOK_DIR.glob("*.py"))
REPO = runner.NOTEBOOK_DIR.parent


def test_every_notebook_of_the_runner_exists_as_a_pair():
    names = {path.stem for path in NOTEBOOKS}
    assert set(runner.NOTEBOOKS) <= names
    for name in names:
        assert (runner.NOTEBOOK_DIR / f"{name}.ipynb").is_file(), f"{name}.py has no paired .ipynb"


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_is_in_sync_and_has_one_parameters_cell(script):
    paired = runner.NOTEBOOK_DIR / f"{script.stem}.ipynb"
    from_script = jupytext.read(script)
    from_ipynb = jupytext.read(paired)
    compare_notebooks(from_ipynb, from_script, fmt="py:percent")  # raises on any difference
    tagged = [cell for cell in from_ipynb.cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{paired.name}: {len(tagged)} cells tagged 'parameters'"
    assert from_ipynb.metadata["kernelspec"]["name"] == "python3"
    assert all(not cell.get("outputs") for cell in json.loads(paired.read_text())["cells"])


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_only_call_the_library(script):
    """Logic lives in whaleutils: no function or class in a notebook, short code cells. The
    parameters cell may be longer, but holds one plain assignment per line and nothing else."""
    cells = [c for c in jupytext.read(script).cells if c.cell_type == "code"]
    for cell in cells:
        lines = cell.source.splitlines()
        if "parameters" in cell.metadata.get("tags", []):
            other = [line for line in lines if not re.fullmatch(r"[a-z_0-9]+ = \S.*", line)]
            assert not other, f"{script.name}: not a one-line assignment in parameters: {other}"
            continue
        assert len(lines) <= 32, f"{script.name}: a {len(lines)}-line cell: {lines[0]!r}"
        assert not [line for line in lines if line.startswith(("def ", "class "))], script.name


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_profiles_name_only_parameters_the_notebooks_have(profile):
    settings = runner.load_profile(profile)
    for name in runner.profile_notebooks(settings):
        notebook = jupytext.read(runner.NOTEBOOK_DIR / f"{name}.py")
        source = next(
            cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])
        )
        declared = {
            line.split("=")[0].strip()
            for line in source.splitlines()
            if "=" in line and not line.startswith("#")
        }
        assert declared == runner.declared_parameters(name)
        unknown = set(settings[name]) - declared
        assert not unknown, (
            f"params/{profile}/{name}.yaml sets {unknown}, which {name} does not declare"
        )
        parameters = runner.notebook_parameters(name, settings, "DATA", "OUT", "INPUTS")
        assert set(parameters) <= declared
        assert {k: parameters[k] for k in settings["_common"] if k in declared} == {
            k: v for k, v in settings["_common"].items() if k in declared
        }
        assert ("inputs_dir" in parameters) == (name in runner.INPUTS)


def test_overrides_reach_only_the_notebooks_that_declare_them(tmp_path):
    settings = runner.load_profile("smoke")
    overrides = {"backend": "jax", "epochs": 1}
    trained = runner.notebook_parameters("04_effnet_arcface", settings, "D", "O", "I", overrides)
    assert trained["backend"] == "jax" and trained["epochs"] == 1  # over the profile's 2
    assert trained["image_size"] == settings["04_effnet_arcface"]["image_size"]
    eda = runner.notebook_parameters("01_eda", settings, "D", "O", "I", overrides)
    assert "backend" not in eda and "epochs" not in eda
    with pytest.raises(
        ValueError, match=r"no notebook of this run has the parameter\(s\) \['backend'\]"
    ):
        runner.run("smoke", str(tmp_path), str(tmp_path), ["01_eda"], overrides={"backend": "jax"})


def test_fold_settings_are_stated_once_per_profile():
    for profile in runner.PROFILES:
        settings = runner.load_profile(profile)
        folds = {"fold", "n_folds", "seed"}  # and, on Kaggle, the attached boxes and the cache
        assert folds <= set(settings["_common"]) <= folds | {"boxes", "crop_cache"}
        for name in runner.profile_notebooks(settings):
            assert not set(settings[name]) & set(settings["_common"]), (profile, name)


def test_a_profile_runs_the_notebooks_its_run_settings_list(tmp_path, monkeypatch):
    catalogue = runner.load_profile("catalogue")
    assert runner.profile_notebooks(catalogue) == ("01_eda", "04_effnet_arcface", "05_gradcam")
    assert runner.profile_notebooks(runner.load_profile("smoke")) == runner.NOTEBOOKS  # default
    assert runner.profile_notebooks(runner.load_profile("local")) == runner.NOTEBOOKS[1:]  # no 00
    with pytest.raises(ValueError, match=r"the catalogue profile does not run \['07_blend'\]"):
        runner.run("catalogue", str(tmp_path), str(tmp_path), ["07_blend"])
    assert not (tmp_path / "catalogue").exists()  # refused before anything ran
    folder = tmp_path / "params" / "smoke"
    shutil.copytree(runner.PARAMS_DIR / "smoke", folder)
    monkeypatch.setattr(runner, "PARAMS_DIR", tmp_path / "params")
    for listed, message in [
        (["04_effnet_arcface", "08_nope"], r"lists unknown notebook\(s\) \['08_nope'\]"),
        (["05_gradcam"], r"lists 05_gradcam without \['04_effnet_arcface'\], whose outputs"),
    ]:
        (folder / "_run.yaml").write_text(json.dumps({"notebooks": listed}))
        with pytest.raises(ValueError, match=message):
            runner.load_profile("smoke")


@pytest.mark.slow
def test_relative_folders_mean_the_callers_folder(small_synth, tmp_path, monkeypatch):
    """``run`` from outside the repository with relative ``--data`` and ``--out`` (papermill
    runs the notebooks in the repository's folder): the outputs land where the caller meant."""
    caller = tmp_path / "a folder"
    caller.mkdir()
    monkeypatch.chdir(caller)
    data = Path("..") / "data set"
    shutil.copytree(small_synth, tmp_path / "data set")
    summary = runner.run("smoke", str(data), "../runs here", ["01_eda"])
    run_dir = tmp_path / "runs here" / "smoke"
    assert outputs.outputs_complete(run_dir / "01_eda")
    assert summary["data_dir"] == str(tmp_path / "data set")
    assert not (runner.REPO / "runs here").exists()
    # the same inputs again: skipped; the runs folder moved: still the same run
    again = runner.run("smoke", str(data), "../runs here", ["01_eda"])
    assert [n.get("reused") for n in again["notebooks"]] == [True]
    shutil.move(tmp_path / "runs here", tmp_path / "moved")
    assert runner.run("smoke", str(data), "../moved", ["01_eda"])["notebooks"][0]["reused"]
    # other data, or another parameter: refused up front, naming what differs and --force
    train = tmp_path / "data set" / "train.csv"
    train.write_text(train.read_text() + train.read_text().splitlines()[1] + "\n")
    with pytest.raises(ValueError, match=r"01_eda's results for other inputs \(the data set's"):
        runner.run("smoke", str(data), "../moved", ["01_eda"])
    with pytest.raises(ValueError, match=r"other inputs \(.*: --force to replace them"):
        runner.run("smoke", str(data), "../moved", ["01_eda"], overrides={"photos_per_species": 3})


@pytest.mark.slow
def test_a_failing_notebook_is_named_with_its_cell(small_synth, tmp_path):
    with pytest.raises(runner.NotebookFailed) as error:
        runner.run("smoke", str(small_synth), str(tmp_path), only=["05_gradcam"])
    assert error.value.notebook == "05_gradcam" and error.value.cell is not None
    assert "no output of notebook 04_effnet_arcface" in str(error.value)
    assert error.value.executed.is_file()  # kept for inspection
    summary = json.loads((tmp_path / "smoke" / "summary.json").read_text())
    assert summary["notebooks"] == [
        {
            "name": "05_gradcam",
            "status": "failed",
            "seconds": summary["notebooks"][0]["seconds"],
            "error": str(error.value),
        }
    ]


@pytest.fixture(scope="module")
def smoke_run(readme_main_run):
    """The whole suite, once, with the smoke profile on its small synthetic set: README's main
    command from a clean copy (``--out runs``, relative), as it left its ``runs/`` folder."""
    root, summary = readme_main_run
    return root.parent / "runs_snapshot", summary


def smoke_split(summary):
    common = runner.load_profile("smoke")["_common"]
    return splits.load_split(summary["data_dir"], common["fold"], common["n_folds"], common["seed"])


@pytest.mark.slow
def test_smoke_suite_end_to_end(smoke_run):
    runs, summary = smoke_run
    run_dir = runs / "smoke"
    assert [n["name"] for n in summary["notebooks"]] == list(runner.NOTEBOOKS)
    assert all(n["status"] == "ok" for n in summary["notebooks"])
    # notebook 04's fused head (the smoke profile's local_matching) first, its KNN head beside
    assert list(summary["scores"]) == [
        "basic_cnn", "resnet_arcmargin", "effnet_arcface fused", "effnet_arcface", "blend"
    ]  # fmt: skip
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    table = (run_dir / "summary.md").read_text()
    assert table.index("| **effnet_arcface, fused head** (answers `identify`) |") < table.index(
        "| effnet_arcface, KNN head |"
    )
    for name in runner.NOTEBOOKS:
        files = json.loads((run_dir / name / "outputs.json").read_text())["files"]
        assert all((run_dir / name / f).exists() for f in files)
        assert (run_dir / name / f"{name}.ipynb").is_file()
    # Resuming: everything is complete, so nothing runs again.
    again = runner.run("smoke", None, str(runs))
    assert [n["status"] for n in again["notebooks"]] == ["ok"] * len(runner.NOTEBOOKS)
    assert all(n["reused"] for n in again["notebooks"])
    assert [n["seconds"] for n in again["notebooks"]] == [
        n["seconds"] for n in summary["notebooks"]
    ]
    assert again["scores"] == summary["scores"]


def header_outputs(script: Path) -> list[str]:
    """The files a notebook's header says it writes: the backticked names between
    ``**Outputs**`` and ``**Accelerator``, those with a dot or ending in ``/`` (a folder), not
    a library constant (``fusion.LOCAL_OUTPUTS``); ``NNN`` stands for any epoch number."""
    text = script.read_text()
    sentence = text[text.index("**Outputs**") : text.index("**Accelerator")]
    names = re.findall(r"`([^`]+)`", sentence)
    constant = re.compile(r"[a-z_]+\.[A-Z_]+")
    return [n for n in names if ("." in n or n.endswith("/")) and not constant.fullmatch(n)]


def _named_by(file: str, name: str) -> bool:
    pattern = re.escape(name).replace("NNN", r"\d{3}")
    return re.fullmatch(pattern + (".*" if name.endswith("/") else ""), file) is not None


def test_header_outputs_are_read_from_the_header():
    names = header_outputs(REPO / "notebooks" / "04_effnet_arcface.py")
    assert names[:3] == ["log.csv", "labels.json", "embedding_model.keras"]
    assert "run/snapshots/epoch-NNN.keras" in names
    assert "local/" in names and "out_dir" not in names and "local_matching" not in names
    assert "fusion.LOCAL_OUTPUTS" not in names  # named in the header, a constant, not a file
    assert _named_by("snapshots/epoch-002/train.npz", "snapshots/epoch-NNN/")
    assert not _named_by("snapshots/last/train.npz", "snapshots/epoch-NNN/")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(runner.NOTEBOOKS))
def test_each_header_names_what_the_notebook_wrote(smoke_run, name):
    """The "Outputs" of a notebook's header are the files its ``write_outputs`` listed in the
    smoke run (which turns every optional output on): none missing, none extra."""
    runs, _ = smoke_run
    written = json.loads((runs / "smoke" / name / "outputs.json").read_text())["files"]
    named = header_outputs(REPO / "notebooks" / f"{name}.py")
    assert [f for f in written if not any(_named_by(f, n) for n in named)] == []
    assert [n for n in named if not any(_named_by(f, n) for f in written)] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(runner.SCORED))
def test_reported_scores_are_those_of_the_written_predictions(smoke_run, name):
    """scores.json and the summary say what the prediction files score against the truth."""
    runs, summary = smoke_run
    folder = runs / "smoke" / name
    split = smoke_split(summary)
    written = json.loads((folder / "scores.json").read_text())
    for part, file_name in (("valid", "oof_predictions.csv"), ("test", "test_predictions.csv")):
        frame = submission.read_predictions(folder / file_name)
        truth = split.truth(part, frame["image"])
        recomputed = metrics.map_at_k_split(truth, frame["labels"].tolist())
        assert written[part] == pytest.approx(recomputed, abs=1e-6, nan_ok=True)
    test = submission.read_predictions(folder / "submission.csv")
    assert (
        test["labels"].tolist()
        == submission.read_predictions(folder / "test_predictions.csv")["labels"].tolist()
    )
    assert submission.check_submission(test, split.test["image"].tolist()) == []
    reported = summary["scores"][runner.SCORED[name]]
    assert reported["split"] == "test"
    assert reported["map5"] == written["test"]["map5"]
    assert reported["valid_map5"] == written["valid"]["map5"]


@pytest.mark.slow
def test_robustness_on_clean_photos_is_the_model_notebooks_validation_score(smoke_run):
    """Same gallery, k, threshold and flip TTA as the KNN head: the 'original' condition on
    every validation photo reproduces notebook 04's validation MAP@5."""
    runs, summary = smoke_run
    split = smoke_split(summary)
    trained = trained_run.load_trained(runs / "smoke", "04_effnet_arcface")
    table = robustness.robustness_table(trained, split, batch_size=16, max_images=None)
    original = table.set_index("condition").loc["original"]
    assert original["map5"] == pytest.approx(
        outputs.read_scores(trained.folder)["valid"]["map5"], abs=1e-6
    )
    assert list(table["condition"]) == [name for name, _, _ in robustness.CONDITIONS]


@pytest.mark.slow
def test_gradcam_explains_known_validation_photos(smoke_run):
    runs, summary = smoke_run
    split = smoke_split(summary)
    explained = pd.read_csv(
        runs / "smoke" / "05_gradcam" / "gradcam.csv", dtype={"individual_id": str}
    )
    known = split.valid[split.valid["target_id"] != "new_individual"]
    assert set(explained["image"]) <= set(known["image"])
    assert (explained["correct"] == (explained["top_match"] == explained["target_id"])).all()


@pytest.mark.slow
def test_a_local_run_reads_a_crop_cache_cut_from_a_boxes_csv(tmp_path):
    """The local runner's crop cache: notebook 00 cuts it from a boxes CSV (the data set the
    notebooks get has its CSVs only, without boxes or photos), and ``-p crop_cache
    00_crop_cache`` has notebook 02 train on that output, so a photo read from disk would fail
    the run. The rest of the suite from a crop cache, its folds and their blend: the Kaggle
    suite's run (tests/suite/test_kaggle_run.py) and README's commands."""
    import shutil

    from whaleutils.datasets import data
    from whaleutils.images import crops

    photos = runner.default_data(tmp_path, runner.load_profile("smoke")[runner.RUN_SETTINGS])
    train = data.read_train(photos)
    boxes_csv = tmp_path / "boxes.csv"
    pd.concat([train[["image", "box"]], data.read_test_boxes(photos)]).to_csv(
        boxes_csv, index=False
    )
    runs = tmp_path / "runs"
    runner.run(
        "smoke", str(photos), str(runs), ["00_crop_cache"], overrides={"boxes": str(boxes_csv)}
    )
    index = crops.read_index(runs / "smoke" / "00_crop_cache" / crops.NOTEBOOK_FOLDER)
    assert index["boxes_sha256"] == crops.boxes_digest(
        crops.part_frames(photos, data.find_boxes(boxes_csv))
    )
    csv_only = tmp_path / "csv_only"
    csv_only.mkdir()
    for path in photos.glob("*.csv"):
        if path.name != "test_boxes.csv":
            shutil.copy(path, csv_only / path.name)
    pd.read_csv(photos / "train.csv").drop(columns="box").to_csv(
        csv_only / "train.csv", index=False
    )
    summary = runner.run(
        "smoke", str(csv_only), str(runs), ["02_basic_cnn"],
        overrides={"crop_cache": "00_crop_cache"},
    )  # fmt: skip
    ran = [(n["name"], n["status"]) for n in summary["notebooks"] if not n.get("reused")]
    assert ran == [("02_basic_cnn", "ok")]
    assert set(summary["scores"]) == {"basic_cnn"}


def test_profiles_state_only_what_differs():
    """A profile states a value only where it changes what the notebook (or, for a profile
    that extends another, the parent profile) would otherwise run with."""
    for profile in runner.PROFILES:
        assert runner.restated_values(profile) == [], profile
    assert runner.parent_profile("catalogue") == "local"
    catalogue, local = runner.load_profile("catalogue"), runner.load_profile("local")
    assert catalogue["_common"] == local["_common"] and catalogue["_run"]["synth"] == {}
    model, inherited = catalogue["04_effnet_arcface"], local["04_effnet_arcface"]
    assert (model["image_size"], model["epochs"], model["local_matching"]) == (224, 18, True)
    assert {k: model[k] for k in inherited if k not in runner.profile_files("catalogue")[
        "04_effnet_arcface"]} == {k: v for k, v in inherited.items() if k not in (
        "image_size", "epochs", "sustain_epochs", "snapshot_every", "snapshot_last")}  # fmt: skip


def test_a_restated_value_and_a_circle_of_profiles_are_named(tmp_path, monkeypatch):
    for name in ("local", "catalogue"):
        shutil.copytree(runner.PARAMS_DIR / name, tmp_path / "params" / name)
    monkeypatch.setattr(runner, "PARAMS_DIR", tmp_path / "params")
    model = tmp_path / "params" / "catalogue" / "04_effnet_arcface.yaml"
    model.write_text(model.read_text() + "arc_m: 0.3\nk_subcenters: 1\n")
    problems = runner.restated_values("catalogue")
    assert len(problems) == 2
    assert (
        "04_effnet_arcface.yaml: arc_m: 0.3 is what the local profile already sets" in problems[0]
    )
    assert "k_subcenters: 1 is what notebook 04_effnet_arcface already sets" in problems[1]
    run = tmp_path / "params" / "local" / "_run.yaml"
    run.write_text(run.read_text() + "extends: catalogue\n")
    with pytest.raises(
        ValueError, match="profiles extend each other in a circle: catalogue -> local"
    ):
        runner.load_profile("catalogue")
    run.write_text("extends: tiny\n")
    with pytest.raises(ValueError, match=r"_run.yaml extends 'tiny', not a profile"):
        runner.load_profile("local")


@pytest.mark.slow
def test_a_second_round_trains_on_the_test_photos_it_is_given(smoke_run, tmp_path):
    """Notebook 04's fused head lists its verified test photos (pseudo_labels.csv: the tier
    chosen on validation); a second run given such a file trains on them, and its scores and
    the run's summary say that its test score is transductive."""
    runs, summary = smoke_run
    model = runs / "smoke" / "04_effnet_arcface"
    local = model / fusion.LOCAL_FOLDER
    pairs = pd.read_csv(local / "pairs_test.csv", dtype={"query": str, "individual": str})
    verified = json.loads((local / "scores.json").read_text())["verified_inliers"]
    classes = json.loads((model / "labels.json").read_text())["individual_ids"]
    written = pd.read_csv(local / fusion.PSEUDO_LABELS_FILE, dtype=str, keep_default_na=False)
    expected = fusion.pseudo_labels(pairs, verified, classes).astype(str)
    pd.testing.assert_frame_equal(written, expected, check_index_type=False)
    assert json.loads((local / "scores.json").read_text())["test_verified_photos"] == len(written)
    # a file of six test photos and their true whales (known in training), as a round gives it
    split = smoke_split(summary)
    solution = split.solution[split.solution["individual_id"].isin(split.encoding.individual_ids)]
    given = tmp_path / "pseudo_labels.csv"
    solution.head(6)[["image", "individual_id"]].to_csv(given, index=False)
    overrides = {"pseudo_labels": str(given), "local_matching": False}
    second = runner.run("smoke", summary["data_dir"], str(tmp_path / "runs"),
                        ["04_effnet_arcface"], overrides=overrides)  # fmt: skip
    assert second["scores"]["effnet_arcface"]["split"] == "test (transductive)"
    scores = json.loads(
        (tmp_path / "runs" / "smoke" / "04_effnet_arcface" / "scores.json").read_text()
    )
    assert scores["pseudo_labels"] == {"file": str(given), "photos": 6}
    assert "(transductive)" in (tmp_path / "runs" / "smoke" / "summary.md").read_text()


@pytest.mark.slow
def test_identify_gives_notebook_04s_fused_answers_on_its_own_gallery(smoke_run, tmp_path):
    """identify, with the smoke run's model against the data set it was trained on (its
    catalogue holds exactly notebook 04's test gallery: train and validation photos), finds
    for each test photo the whale notebook 04's fused head put first, and the same verdict
    (new or known): the two paths share one fusion, one index and one framing."""
    runs, summary = smoke_run
    model = runs / "smoke" / "04_effnet_arcface"
    data_dir = Path(summary["data_dir"])
    out = tmp_path / "identified"
    argv = [
        "identify", "--model", str(model), "--catalogue", str(data_dir),
        "--photos", str(data_dir / "test_images"), "--out", str(out),
        "--boxes", str(data_dir / "test_boxes.csv"), "--cache", str(tmp_path / "cache"),
    ]  # fmt: skip
    assert cli.main(argv) == 0
    matches = pd.read_csv(out / "matches.csv", keep_default_na=False)
    first = matches[matches["rank"] == 1].assign(
        image=lambda f: f["photo"].map(lambda p: Path(p).name)
    )
    notebook = pd.read_csv(model / "local" / "test_predictions.csv", keep_default_na=False)
    by_image = dict(zip(notebook["image"], notebook["predictions"].str.split(), strict=True))
    assert len(first) == len(by_image) > 20
    same_whale = same_verdict = 0
    for image, individual, new in zip(
        first["image"], first["individual_id"], first["new_individual"], strict=True
    ):
        labels = by_image[image]
        same_whale += individual == next(
            label for label in labels if label != metrics.NEW_INDIVIDUAL
        )
        same_verdict += (str(new) == "True") == (labels[0] == metrics.NEW_INDIVIDUAL)
    assert same_whale / len(first) >= 0.98, (same_whale, len(first))
    assert same_verdict / len(first) >= 0.98, (same_verdict, len(first))
