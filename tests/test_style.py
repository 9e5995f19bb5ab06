"""The code base stays `ruff check` and `ruff format` clean (settings in pyproject.toml)."""

import ast
import functools
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


# The only modules imported inside functions: optional or heavy dependencies, deferred so that
# the light modules (the CLI's help, the runner, preflight before a backend is chosen) load
# without them. A whaleutils module that imports one of them at its top is heavy too.
OPTIONAL_HEAVY = frozenset((
    "tensorflow", "keras", "jax", "cv2", "matplotlib", "sklearn", "papermill", "nbformat",
    "efficientnet", "h5py", "jupytext", "slugify", "selenium", "kaggle", "scipy", "faiss",
))  # fmt: skip
PACKAGE = Path(__file__).resolve().parents[1] / "whaleutils"


def _module_files() -> dict[str, Path]:
    return {
        ".".join(("whaleutils", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): path
        for path in PACKAGE.rglob("*.py")
    }


def _targets(node, files) -> list[str]:
    """The modules an import statement loads (``from whaleutils.stage import m``: the module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        named = [f"{node.module}.{alias.name}" for alias in node.names]
        return named if all(name in files for name in named) else [node.module]
    return []


def test_imports_inside_functions_are_only_of_optional_heavy_modules():
    """No import inside a function, except of ``OPTIONAL_HEAVY`` modules (or whaleutils modules
    that import one at their top) from a module that does not load them itself."""
    files = _module_files()
    tops = {
        name: {t for node in ast.parse(path.read_text()).body for t in _targets(node, files)}
        for name, path in files.items()
    }

    @functools.cache
    def heavy(module: str, seen: frozenset = frozenset()) -> bool:
        return any(
            t.split(".")[0] in OPTIONAL_HEAVY or (t in files and t not in seen and heavy(t, seen | {module}))
            for t in tops.get(module, ())
        )  # fmt: skip

    wrong = []
    for name, path in sorted(files.items()):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for statement in ast.walk(node):
                for target in _targets(statement, files):
                    optional = target.split(".")[0] in OPTIONAL_HEAVY
                    if not (optional or (heavy(target) and not heavy(name))):
                        wrong.append(f"{path.relative_to(PACKAGE)}:{statement.lineno} {target}")
    assert not wrong, "import these at the top of the module: " + ", ".join(wrong)


def test_the_light_modules_load_no_tensorflow():
    code = (
        "import sys\nfrom whaleutils import cli\nfrom whaleutils.suite import runner, preflight\n"
        "from whaleutils.catalogue import enrolment, identify\nfrom whaleutils.training import "
        "backbones\nprint(sorted({'tensorflow', 'keras', 'jax', 'cv2'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
