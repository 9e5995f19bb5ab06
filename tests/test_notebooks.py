"""The notebook suite: pairs in sync, one parameters cell each, and a full smoke run."""

import json

import jupytext
import pytest
from jupytext.compare import compare_notebooks

from whaleutils import runner

NOTEBOOKS = sorted(runner.NOTEBOOK_DIR.glob("*.py"))


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


@pytest.mark.parametrize("profile", runner.PROFILES)
def test_profiles_name_only_parameters_the_notebooks_have(profile):
    settings = runner.load_profile(profile)
    for name in runner.NOTEBOOKS:
        notebook = jupytext.read(runner.NOTEBOOK_DIR / f"{name}.py")
        source = next(
            cell.source for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])
        )
        declared = {
            line.split("=")[0].strip()
            for line in source.splitlines()
            if "=" in line and not line.startswith("#")
        }
        unknown = set(settings[name]) - declared
        assert not unknown, (
            f"params/{profile}/{name}.yaml sets {unknown}, which {name} does not declare"
        )


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


def test_smoke_suite_end_to_end(tmp_path):
    summary = runner.run("smoke", None, str(tmp_path))
    run_dir = tmp_path / "smoke"
    assert [n["name"] for n in summary["notebooks"]] == list(runner.NOTEBOOKS)
    assert all(n["status"] == "ok" for n in summary["notebooks"])
    assert set(summary["scores"]) == {"basic_cnn", "resnet_arcmargin", "effnet_arcface", "blend"}
    for scores in summary["scores"].values():
        assert scores["split"] == "test" and 0 <= scores["map5"] <= 1
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert "| effnet_arcface |" in (run_dir / "summary.md").read_text()
    for name in runner.NOTEBOOKS:
        outputs = json.loads((run_dir / name / "outputs.json").read_text())["files"]
        assert all((run_dir / name / f).exists() for f in outputs)
        assert (run_dir / name / f"{name}.ipynb").is_file()
    # Resuming: everything is complete, so nothing runs again.
    again = runner.run("smoke", None, str(tmp_path))
    assert [n["status"] for n in again["notebooks"]] == ["ok"] * len(runner.NOTEBOOKS)
    assert all(n["reused"] for n in again["notebooks"])
    assert [n["seconds"] for n in again["notebooks"]] == [
        n["seconds"] for n in summary["notebooks"]
    ]
    assert again["scores"] == summary["scores"]
