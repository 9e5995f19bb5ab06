"""The preflight cell of a staged kernel: every module it will need, checked in minute one."""

from __future__ import annotations

import sys

import pytest

from whaleutils.contracts import outputs
from whaleutils.suite import kaggle_stage, preflight, runner

NOTEBOOKS = [runner.NOTEBOOK_DIR / f"{name}.ipynb" for name in outputs.NOTEBOOKS]


def test_imports_are_read_from_code_and_function_bodies():
    source = (
        "%matplotlib inline\n"
        "import numpy as np, os\n"
        "from whaleutils.retrieval import knn, heads\n"
        "def later():\n"
        "    import cv2\n"
        "    from sklearn.linear_model import LogisticRegression\n"
    )
    assert preflight.imported_modules(source) == {
        "numpy", "os", "whaleutils.retrieval", "whaleutils.retrieval.knn",
        "whaleutils.retrieval.heads", "cv2", "sklearn.linear_model",
    }  # fmt: skip


def test_requirements_follow_the_library_into_its_functions():
    """Notebook 04 imports ``fusion``; OpenCV is imported only inside ``local_features``'
    functions, which only its late fused-head cell reaches: the requirements hold it, named by
    the module that needs it."""
    needed = preflight.notebook_requirements(runner.NOTEBOOK_DIR / "04_effnet_arcface.ipynb")
    assert needed["cv2"] == ["retrieval.local_features"]
    assert "retrieval.fusion" in needed["sklearn"] and "keras" in needed
    assert not {"os", "json", "whaleutils", "__future__"} & set(needed)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_module_a_notebook_needs_is_on_kaggles_images_or_in_our_wheels(notebook):
    needed = set(preflight.notebook_requirements(notebook))
    assert needed <= preflight.KAGGLE_PROVIDES | preflight.OUR_WHEELS, needed - (
        preflight.KAGGLE_PROVIDES | preflight.OUR_WHEELS
    )


def test_a_blocked_module_only_a_late_cell_uses_fails_the_preflight(monkeypatch, capsys):
    needed = preflight.notebook_requirements(runner.NOTEBOOK_DIR / "04_effnet_arcface.ipynb")
    assert preflight.run(needed)["versions"]["python"] == sys.version.split()[0]
    monkeypatch.setitem(sys.modules, "cv2", None)  # as if OpenCV were not installed
    monkeypatch.setitem(sys.modules, "efficientnet", None)  # optional: reported, not fatal
    with pytest.raises(RuntimeError) as failed:
        preflight.run(needed)
    message = str(failed.value)
    assert "cv2 is not installed; needed by retrieval.local_features" in message
    assert "efficientnet" not in message
    assert "efficientnet is not installed (only for the backbones efficientnet-b0, " in (
        capsys.readouterr().out
    )


def test_an_accelerator_the_machine_lacks_fails_the_preflight(monkeypatch):
    monkeypatch.delenv("ISTPUVM", raising=False)
    monkeypatch.delenv("TPU_ACCELERATOR_TYPE", raising=False)
    if preflight.accelerator_problem("tpu") is None:
        pytest.skip("this machine has a TPU")
    with pytest.raises(RuntimeError, match="staged for a TPU and this machine has none"):
        preflight.run({"numpy": ["notebook"]}, accelerator="tpu")
    assert preflight.run({"numpy": ["notebook"]}, accelerator="none")["optional_missing"] == {}


def test_the_staged_kernels_first_cells_are_bootstrap_then_preflight():
    staged = kaggle_stage.staged_notebook("04_effnet_arcface", {}, "me/lib", accelerator="tpu")
    code = [cell for cell in staged.cells if cell.cell_type == "code"]
    assert code[0].metadata["tags"] == [kaggle_stage.BOOTSTRAP_TAG]
    assert code[1].metadata["tags"] == [kaggle_stage.PREFLIGHT_TAG]
    assert "preflight.run(" in code[1].source and "accelerator='tpu'" in code[1].source
    assert '"retrieval.local_features"' in code[1].source
    assert "parameters" in code[2].metadata.get("tags", [])  # the notebook's own cells follow
