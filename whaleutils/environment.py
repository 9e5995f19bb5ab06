"""Where a notebook runs (Kaggle or not, on what hardware) and where its inputs are mounted.

On Kaggle a notebook's inputs are read-only folders under ``/kaggle/input`` and its outputs go
to ``/kaggle/working``. Kaggle has mounted inputs at ``/kaggle/input/<slug>`` and, in newer
images, under deeper folders (``/kaggle/input/competitions/<slug>``,
``.../datasets/<owner>/<slug>``, ``.../notebooks/<owner>/<slug>``); the helpers here search a
few levels so that the notebooks do not depend on one layout. Every helper takes the root as
an argument, so it is testable anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

KAGGLE_INPUT = Path("/kaggle/input")
KAGGLE_WORKING = Path("/kaggle/working")
SEARCH_DEPTH = 4  # levels below the root searched for a mounted folder or file

# How to get TensorFlow onto a Kaggle TPU, whose image ships tensorflow-cpu (Kaggle disabled
# tensorflow-tpu for want of a matching libtpu; see the README). Needs the internet switched on.
TPU_INSTALL_HINT = (
    "Kaggle's TPU image ships tensorflow-cpu, so TensorFlow cannot see the TPU and this notebook "
    "would train on the TPU host's CPU. To train on the TPU, switch the notebook's internet on, "
    "run `pip install tensorflow-tpu==2.20.0 -f "
    "https://storage.googleapis.com/libtpu-tf-releases/index.html` in a cell and restart the "
    "kernel (it may fail if no libtpu matches the image), or choose "
    "the GPU T4 x2 accelerator instead."
)


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


def weights_file_name(backbone: str, weights: str) -> str | None:
    """The file a backbone's named weights are saved as (what Keras would download), or None.

    ``efficientnet-bN`` with ``noisy-student`` or ``imagenet``: the ``efficientnet`` package's
    names; ``resnet50`` with ``imagenet``: keras.applications' name.
    """
    if backbone.startswith("efficientnet-b"):
        if weights == "noisy-student":
            return f"{backbone}_noisy-student_notop.h5"
        if weights == "imagenet":
            return f"{backbone}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5"
    if backbone == "resnet50" and weights == "imagenet":
        return "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    return None


def attached_weights(backbone: str, weights, root: str | os.PathLike | None = None):
    """``weights`` resolved to an attached file when one is mounted under ``root``.

    A named set of weights ("noisy-student", "imagenet") is replaced by the path of its
    ``.h5`` file if an attached dataset under ``root`` (default ``KAGGLE_INPUT``) holds it, so
    a kernel without internet can load it; otherwise the name is returned unchanged (Keras
    then downloads it, which needs internet).
    None and explicit paths are returned unchanged.
    """
    if not isinstance(weights, str) or Path(weights).suffix == ".h5":
        return weights
    file_name = weights_file_name(backbone, weights)
    if file_name is None:
        return weights
    found = find_file(file_name, root)
    return str(found) if found is not None else weights
