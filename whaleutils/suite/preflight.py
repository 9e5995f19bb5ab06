"""Preflight: what a notebook will import and the device it needs, checked in its first minute.

A Kaggle kernel that lacks a module its last cell imports fails after hours of training. So
staging works out, from the notebook's own code and every whaleutils module it reaches
(imports inside functions included, since the library imports heavy modules where it uses
them), which third-party modules the kernel will need (:func:`requirements`), and puts a cell
after the bootstrap that checks each one is installed (``importlib.util.find_spec``: nothing is
imported, so notebook 04 can still choose its Keras backend before Keras is first imported) and
that the kernel has the accelerator it was staged for (:func:`run`). It prints the versions of
Python, Keras, JAX, jaxlib, libtpu and TensorFlow and fails at once naming what is missing and
which whaleutils module needs it.

``KAGGLE_PROVIDES`` states what Kaggle's images install (Kaggle/docker-python at 78aaa43,
``tpu/requirements.in`` and their dependencies; the GPU image follows Colab's, which holds them
too), ``OUR_WHEELS`` what the library dataset adds; a test checks every notebook's requirements
are among them.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from whaleutils.contracts import environment
from whaleutils.training import backbones

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # whaleutils/
# Top-level modules Kaggle's images provide (tpu/requirements.in: tensorflow-cpu, jax[tpu],
# keras, matplotlib, opencv-python, pandas, scikit-learn, papermill; with their dependencies
# numpy, pillow, h5py, pyyaml, nbformat).
KAGGLE_PROVIDES = frozenset(
    (
        "numpy",
        "pandas",
        "PIL",
        "matplotlib",
        "sklearn",
        "cv2",
        "tensorflow",
        "keras",
        "jax",
        "h5py",
        "yaml",
        "papermill",
        "nbformat",
        "scipy",
    )
)  # fmt: skip  (scipy: scikit-learn's own dependency)
OUR_WHEELS = frozenset(("whaleutils", "efficientnet", "keras_applications", "faiss"))  # the library
# Needed only on some paths, so their absence is reported but does not stop the kernel:
# qubvel's efficientnet (its tfkeras module imports scikit-image, absent on the TPU image) only
# for its own backbones and models saved with them; JAX only on the JAX backend.
OPTIONAL = {
    **{
        package: f"only for the backbones {', '.join(names)} and models saved with them"
        for package, names in backbones.packages().items()
    },
    "jax": "only on the JAX backend",
    "faiss": "only for a descriptor index past 4 million descriptors (identify's faiss engine)",
}
# Kaggle's GPU image follows Colab's TensorFlow and Keras (Keras 3.10 at the last
# announcement): the Keras a model trained on the TPU image must load in. `kaggle wheelhouse`
# fetches it (into DIR/compat/, not shipped to Kaggle) for the test that loads a model there.
GPU_IMAGE_KERAS = "keras==3.10.0"
COMPAT_FOLDER = "compat"


def imported_modules(source: str) -> set[str]:
    """Every absolute module name ``source`` imports (``import a.b``, ``from a.b import c``;
    also inside functions); for ``from whaleutils.stage import m`` also ``whaleutils.stage.m``
    (a module imported by name). Lines a notebook's cells start with ``%`` or ``!`` are
    skipped."""
    code = "\n".join(
        line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
    )
    found = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            if node.module.startswith("whaleutils"):
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _whaleutils_file(module: str) -> Path | None:
    parts = module.split(".")[1:]
    path = PACKAGE_ROOT.joinpath(*parts)
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def requirements(source: str) -> dict[str, list[str]]:
    """The third-party top-level modules code ``source`` (a notebook's) needs, each with the
    whaleutils modules (or ``notebook``) that import it, following every whaleutils module it
    reaches."""
    needed: dict[str, set[str]] = {}
    seen: set[str] = set()
    todo = [("notebook", imported_modules(source))]
    while todo:
        importer, modules = todo.pop()
        for module in modules:
            top = module.split(".")[0]
            if top == "whaleutils":
                path = _whaleutils_file(module)
                if path is not None and module not in seen:
                    seen.add(module)
                    todo.append(
                        (module.removeprefix("whaleutils."), imported_modules(path.read_text()))
                    )
            elif top not in sys.stdlib_module_names and top != "__future__":
                needed.setdefault(top, set()).add(importer)
    return {top: sorted(users) for top, users in sorted(needed.items())}


def notebook_requirements(notebook_path: str | Path) -> dict[str, list[str]]:
    """:func:`requirements` of a notebook file (``.ipynb``: its code cells; ``.py``: as it is)."""
    path = Path(notebook_path)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    else:
        source = path.read_text()
    return requirements(source)


def missing_modules(needed: Mapping[str, Iterable[str]]) -> dict[str, list[str]]:
    """The modules of ``needed`` that are not installed (``find_spec``, nothing imported)."""
    missing = {}
    for module, users in needed.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module blocked in sys.modules, a broken parent
            found = False
        if not found:
            missing[module] = list(users)
    return missing


def accelerator_problem(accelerator: str | None) -> str | None:
    """Why this machine lacks the ``accelerator`` ("tpu", "gpu", "none"/None) the kernel was
    staged for, or None."""
    if accelerator == "tpu" and not environment.tpu_host():
        return "the kernel was staged for a TPU and this machine has none (Settings: TPU v5e-8)"
    if accelerator == "gpu" and not any(Path("/dev").glob("nvidia[0-9]*")):
        return "the kernel was staged for a GPU and this machine has none (Settings: GPU T4 x2)"
    return None


def run(needed: Mapping[str, Iterable[str]], accelerator: str | None = None) -> dict:
    """The preflight cell: check ``needed`` (:func:`requirements` as staging computed it) and
    the ``accelerator``; print the versions; raise at once naming what is missing.

    Returns ``{"versions": ..., "optional_missing": {...}}``.

    Raises
    ------
    RuntimeError
        Naming each missing module and the whaleutils modules that need it, and a missing
        accelerator.
    """
    missing = missing_modules(needed)
    optional = {m: users for m, users in missing.items() if m in OPTIONAL}
    required = {m: users for m, users in missing.items() if m not in OPTIONAL}
    found = environment.versions()
    print("preflight: " + ", ".join(f"{name} {version}" for name, version in found.items()))
    for module, users in optional.items():
        print(
            f"preflight: {module} is not installed ({OPTIONAL[module]}; used by {', '.join(users)})"
        )
    problems = [
        f"{module} is not installed; needed by {', '.join(users)}"
        for module, users in required.items()
    ]
    device = accelerator_problem(accelerator)
    if device:
        problems.append(device)
    if problems:
        raise RuntimeError("preflight failed, before any work:\n  " + "\n  ".join(problems))
    print(f"preflight: {len(needed)} modules installed, accelerator {accelerator or 'none'}")
    return {"versions": found, "optional_missing": optional}
