"""Where a notebook runs (Kaggle or not, on what hardware) and where its inputs are mounted.

On Kaggle a notebook's inputs are read-only folders under ``/kaggle/input`` and its outputs go
to ``/kaggle/working``. Kaggle has mounted inputs at ``/kaggle/input/<slug>`` and, in newer
images, under deeper folders (``/kaggle/input/competitions/<slug>``,
``.../datasets/<owner>/<slug>``, ``.../notebooks/<owner>/<slug>``); the helpers here search a
few levels so that the notebooks do not depend on one layout. Every helper takes the root as
an argument, so it is testable anywhere.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from pathlib import Path

# Kaggle's root, /kaggle; the variable moves it (tests run the staged kernels in a temporary
# tree of Kaggle's shape: tests/suite/test_kaggle_run.py). Read once, when this is imported.
KAGGLE_ROOT = Path(os.environ.get("WHALEUTILS_KAGGLE_ROOT") or "/kaggle")
KAGGLE_INPUT = KAGGLE_ROOT / "input"
KAGGLE_WORKING = KAGGLE_ROOT / "working"
# Levels below /kaggle/input searched for a mounted folder or file. Kaggle mounts
# competitions/<slug>/, datasets/<owner>/<slug>/ and notebooks/<owner>/<slug>/ (a kernel's
# output, whose notebook folder sits one level further down, its snapshots two more); older
# images mount <slug>/ directly. Six levels hold all of them with room to spare.
SEARCH_DEPTH = 6

# the versions a notebook records (outputs.json) and a staged kernel prints first (preflight)
VERSIONS = ("keras", "jax", "jaxlib", "libtpu", "tensorflow", "tensorflow-cpu", "numpy")
BACKENDS = ("auto", "tensorflow", "jax")  # the Keras backends a notebook can ask for

# What to do on a TPU machine where the chosen backend sees no TPU. Kaggle's TPU image ships
# tensorflow-cpu (no TensorFlow that sees the TPU), Keras 3 and jax[tpu]: Keras on JAX trains there.
TPU_UNUSED_HINT = (
    "A TPU is attached but Keras on {backend} sees no TPU, so this notebook would train on the "
    "TPU host's CPU for hours. On Kaggle's TPU image JAX is the backend that uses the TPU: set "
    'the notebook\'s backend parameter to "auto" or "jax" and restart the kernel (if JAX '
    "still sees no TPU, check `pip show jax libtpu` and that no TPU build of TensorFlow was "
    'installed beside it), or choose the GPU T4 x2 accelerator with backend "tensorflow".'
)


def choose_backend(
    requested: str = "auto", environ: dict | None = None, dev: str | os.PathLike = "/dev"
) -> str:
    """The Keras backend to run on: ``requested`` unless it is "auto", which means JAX on a TPU
    machine (the backend that uses Kaggle's TPUs) and TensorFlow everywhere else."""
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got backend={requested!r}")
    if requested != "auto":
        return requested
    return "jax" if tpu_host(environ, dev) else "tensorflow"


def use_backend(requested: str = "auto", environ: dict | None = None) -> str:
    """Make Keras run on the backend :func:`choose_backend` picks; returns its name.

    Keras reads ``KERAS_BACKEND`` once, when it is first imported, so this must run before
    anything imports keras (whaleutils' modules do; this one does not). If keras is already
    imported on another backend, it raises rather than leaving the notebook on the wrong one.
    """
    environ = os.environ if environ is None else environ
    backend = choose_backend(requested, environ)
    keras = sys.modules.get("keras")
    if keras is not None and keras.backend.backend() != backend:
        raise RuntimeError(
            f"Keras was already imported with the {keras.backend.backend()} backend, so it cannot "
            f"switch to {backend}: restart the kernel and run the notebook from the top (the "
            "backend is chosen before the first import of keras or whaleutils' model modules)"
        )
    environ["KERAS_BACKEND"] = backend
    return backend


def on_kaggle() -> bool:
    """True inside a Kaggle kernel (Kaggle sets ``KAGGLE_KERNEL_RUN_TYPE``)."""
    return "KAGGLE_KERNEL_RUN_TYPE" in os.environ or KAGGLE_WORKING.is_dir()


def tpu_host(environ: dict | None = None, dev: str | os.PathLike = "/dev") -> bool:
    """True on a TPU machine, whether or not TensorFlow can use the TPU.

    Kaggle's TPU image sets ``ISTPUVM=1`` and ``TPU_ACCELERATOR_TYPE``; TPU VMs expose their chips
    as ``/dev/accel*`` (or ``/dev/vfio`` on v5e).
    """
    environ = os.environ if environ is None else environ
    if environ.get("ISTPUVM") == "1" or environ.get("TPU_ACCELERATOR_TYPE"):
        return True
    return any(Path(dev).glob("accel[0-9]*"))


def _walk(root: Path, depth: int):
    """Directories below ``root`` (itself included) down to ``depth`` levels, breadth first."""
    level = [root]
    for _ in range(depth + 1):
        following = []
        for folder in level:
            yield folder
            try:  # scandir knows directories without a stat per file (51,033 photos in one)
                with os.scandir(folder) as entries:
                    following.extend(sorted(Path(e.path) for e in entries if e.is_dir()))
            except OSError:  # unreadable or vanished folder: skip it
                continue
        level = following


def process_seconds() -> float:
    """Seconds since this process started (a notebook's kernel: the session's time so far),
    from ``/proc`` on Linux; 0 where it cannot be read."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(0.0, uptime - started)


def find_folder(
    name: str, marker: str, root: str | os.PathLike | None = None, depth: int = SEARCH_DEPTH
) -> Path | None:
    """The first folder named ``name`` holding ``marker``, at most ``depth`` levels below
    ``root`` (default ``KAGGLE_INPUT``), or None."""
    root = Path(KAGGLE_INPUT if root is None else root)
    if not root.is_dir():
        return None
    for folder in _walk(root, depth):
        if folder.name == name and (folder / marker).exists():
            return folder
    return None


def find_file(
    file_name: str, root: str | os.PathLike | None = None, depth: int = SEARCH_DEPTH
) -> Path | None:
    """The first file called ``file_name`` at most ``depth`` levels below ``root`` (default
    ``KAGGLE_INPUT``), or None."""
    root = Path(KAGGLE_INPUT if root is None else root)
    if not root.is_dir():
        return None
    for folder in _walk(root, depth):
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def notebook_output(
    inputs_dir: str | os.PathLike, notebook: str, marker: str = "scores.json"
) -> Path:
    """The output folder of ``notebook`` (e.g. ``04_effnet_arcface``) under ``inputs_dir``.

    Locally that is ``inputs_dir/<notebook>``. On Kaggle, ``inputs_dir`` is ``/kaggle/input``
    and the folder sits inside the producing kernel's mounted output
    (``/kaggle/input/<kernel>/<notebook>`` or deeper); it is found by name and by its ``marker``
    file.

    Raises
    ------
    FileNotFoundError
        Naming the folder and marker looked for, and where.
    """
    runs = Path(inputs_dir)
    direct = runs / notebook
    if (direct / marker).exists():
        return direct
    found = find_folder(notebook, marker, runs)
    if found is not None:
        return found
    raise FileNotFoundError(
        f"no output of notebook {notebook} ({notebook}/{marker}) found in {runs} or up to "
        f"{SEARCH_DEPTH} levels below it; run that notebook first"
        + (" and attach its kernel as an input" if on_kaggle() else "")
    )


def notebook_outputs(
    inputs_dir: str | os.PathLike, notebook: str, marker: str = "scores.json"
) -> list[Path]:
    """Every output folder of ``notebook`` under ``inputs_dir`` (up to ``SEARCH_DEPTH`` levels
    below it): folders named ``notebook`` (one per Kaggle kernel running it, e.g. one per fold)
    or ``notebook-VARIANT`` (local runs with ``--variant``), holding ``marker``; sorted by path.

    Raises
    ------
    FileNotFoundError
        If there is none, naming what was looked for and where.
    """
    runs = Path(inputs_dir)
    found = (
        sorted(
            folder
            for folder in _walk(runs, SEARCH_DEPTH)
            if (folder.name == notebook or folder.name.startswith(f"{notebook}-"))
            and (folder / marker).exists()
        )
        if runs.is_dir()
        else []
    )
    if not found:
        raise FileNotFoundError(
            f"no output of notebook {notebook} ({notebook}/{marker} or {notebook}-*/{marker}) "
            f"found in {runs} or up to {SEARCH_DEPTH} levels below it; run that notebook first"
            + (" and attach its kernel as an input" if on_kaggle() else "")
        )
    return found


def versions() -> dict[str, str]:
    """Python's and the installed versions of ``VERSIONS`` (absent ones left out)."""
    found = {"python": sys.version.split()[0]}
    for name in VERSIONS:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found
