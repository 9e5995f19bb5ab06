"""The code base stays `ruff check` and `ruff format` clean (settings in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("arguments", [["check", "."], ["format", "--check", "."]])
def test_ruff(arguments):
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: pip install -r requirements.txt")
    result = subprocess.run(
        [ruff, *arguments], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


# The import order: the shared contracts, then the stages in the order data flows through them.
STAGES = (
    "contracts", "datasets", "images", "training", "retrieval", "analysis", "catalogue", "suite"
)  # fmt: skip


def stage_imports(source: str) -> set[str]:
    """The ``stage.module`` names a module's code imports from whaleutils (``from
    whaleutils.stage import a, b``, ``from whaleutils.stage.module import ...``, also inside
    functions; read with ``ast``, so text in docstrings does not count)."""
    from whaleutils.suite.preflight import imported_modules

    return {
        ".".join(name.split(".")[1:3])
        for name in imported_modules(source)
        if name.startswith("whaleutils.") and name.count(".") >= 2
    }


def test_stage_imports_are_read_from_the_code():
    text = (
        '"""A docstring that mentions ``from whaleutils.stage import m``."""\n'
        "from whaleutils.suite import outputs, runner  # a comment\n"
        "from whaleutils.images.photos import x\n"
        "def later():\n"
        "    from whaleutils.training import (\n        layers,\n        models as m,\n    )\n"
    )
    assert stage_imports(text) == {
        "suite.outputs", "suite.runner", "images.photos", "training.layers", "training.models"
    }  # fmt: skip


def test_a_stage_imports_only_itself_and_earlier_stages():
    """The package map of docs/architecture.md: each stage imports only the stages before it in
    ``STAGES`` (``contracts`` first, which imports none), with no exemption."""
    root = Path(__file__).resolve().parents[1] / "whaleutils"
    assert sorted(p.name for p in root.iterdir() if (p / "__init__.py").is_file()) == sorted(STAGES)
    later = []
    for path in sorted(root.glob("*/*.py")):
        stage = path.parent.name
        for imported in stage_imports(path.read_text()):
            if STAGES.index(imported.split(".")[0]) > STAGES.index(stage):
                later.append(f"{path.relative_to(root)} imports {imported}")
    assert not later, later
