"""Stage the notebook suite as Kaggle kernels, with whaleutils as a Kaggle dataset.

``stage(out_dir)`` reads ``kaggle-metadata.json`` (``kaggle_metadata``) and writes (with the
canary, :func:`canary_kernel`: kernel 04 in minutes, to push first)::

    out_dir/stage.json                       what was staged: owner, library, kernel order
    out_dir/<library slug>/                  dataset-metadata.json and the wheels: whaleutils,
                                             plus the packages Kaggle's image lacks
    out_dir/<kernel slug>/kernel-metadata.json
    out_dir/<kernel slug>/<kernel slug>.ipynb   the notebook with a bootstrap cell that installs
                                             the wheels (no internet needed) and the profile's
                                             parameters injected the way papermill does

``kaggle_push`` pushes what it staged.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from whaleutils.contracts import environment, folders
from whaleutils.suite import preflight, runner
from whaleutils.suite.kaggle_metadata import (
    ACCELERATORS,
    METADATA_FILE,
    OWNER,
    REPO,
    MetadataError,
    configured_owner,
    load_metadata,
)

PREFLIGHT_TAG = "kaggle-preflight"
PREFLIGHT = """\
# Added by `python -m whaleutils kaggle stage`: before any work, check that every module this
# notebook will import (late cells included) is installed and that the accelerator is there.
from whaleutils.suite import preflight

preflight.run({needed}, accelerator={accelerator!r})"""
BOOTSTRAP_TAG = "kaggle-bootstrap"
BOOTSTRAP = """\
# Added by `python -m whaleutils kaggle stage`: install whaleutils and the packages Kaggle's image
# lacks from the attached dataset {library_id} (wheels; no internet needed).
import glob
import importlib
import os
import subprocess
import sys

_found = sorted(
    path
    for pattern in ("{input_root}/*/", "{input_root}/*/*/", "{input_root}/*/*/*/")
    for path in glob.glob(pattern + "whaleutils-*.whl")
)
if not _found:
    raise FileNotFoundError(
        "whaleutils is not attached: add the dataset {library_id} as an input "
        "(`python -m whaleutils kaggle push --with-library` creates it)"
    )
_wheels = sorted(glob.glob(os.path.join(os.path.dirname(_found[-1]), "*.whl")))
subprocess.run(
    [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", *_wheels],
    check=True,
)
importlib.invalidate_caches()  # let this kernel import what was just installed"""


def staged_notebook(
    notebook: str,
    parameters: dict,
    library_id: str,
    input_root: str | os.PathLike | None = None,
    accelerator: str | None = None,
):
    """The notebook with its bootstrap cell (looking for the wheels under ``input_root``), its
    preflight cell (every module the notebook will need and the ``accelerator``:
    ``preflight.run``) and the injected parameters, as an nbformat node. ``input_root``:
    default ``environment.KAGGLE_INPUT``."""
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    staged = parameterize_notebook(
        load_notebook_node(str(runner.NOTEBOOK_DIR / f"{notebook}.ipynb")),
        parameters,
        kernel_name="python3",
        language="python",
    )
    bootstrap = nbformat.v4.new_code_cell(
        BOOTSTRAP.format(
            library_id=library_id,
            input_root=Path(input_root or environment.KAGGLE_INPUT).as_posix(),
        ),
        metadata={"tags": [BOOTSTRAP_TAG]},
    )
    needed = preflight.notebook_requirements(runner.NOTEBOOK_DIR / f"{notebook}.ipynb")
    check = nbformat.v4.new_code_cell(
        PREFLIGHT.format(needed=json.dumps(needed, indent=1), accelerator=accelerator),
        metadata={"tags": [PREFLIGHT_TAG]},
    )
    first_code = next(i for i, cell in enumerate(staged.cells) if cell.cell_type == "code")
    staged.cells[first_code:first_code] = [bootstrap, check]
    for cell in staged.cells:  # papermill adds execution bookkeeping Kaggle does not need
        cell.metadata.pop("papermill", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    staged.metadata.pop("papermill", None)
    nbformat.validate(staged)
    return staged


def _qualify(source: str, owner: str) -> str:
    return source if "/" in source else f"{owner}/{source}"


def kernel_metadata(kernel: dict, owner: str, competition: str, library_id: str) -> dict:
    """``kernel-metadata.json`` for one kernel, every field set explicitly."""
    enable_gpu, enable_tpu, machine_shape = ACCELERATORS[kernel["accelerator"]]
    metadata = {
        "id": f"{owner}/{kernel['slug']}",
        "title": kernel["title"],
        "code_file": f"{kernel['slug']}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": kernel["private"],
        "enable_gpu": enable_gpu,
        "enable_tpu": enable_tpu,
        "enable_internet": kernel["internet"],  # the CLI's default (true) differs from its docs
        "dataset_sources": [library_id] + [_qualify(d, owner) for d in kernel["datasets"]],
        "competition_sources": [competition],
        "kernel_sources": [_qualify(k, owner) for k in kernel["kernels"]],
        "model_sources": [],
    }
    if machine_shape:  # no docker_image: a pinned image with a TPU shape silently runs on CPU
        metadata["machine_shape"] = machine_shape
    return metadata


def _pip(*arguments: str) -> None:
    command = [sys.executable, "-m", "pip", *arguments]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(command)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip()[-2000:]}"
        )


def download_wheels(
    folder: str | os.PathLike, wheels: list[str], wheelhouse: str | os.PathLike | None = None
) -> list[str]:
    """Put the pinned ``wheels`` (``name==version``) into ``folder`` as binary wheels: from the
    package index, or with ``wheelhouse`` from that local folder only (no network). Returns
    the file names in ``folder``.

    Raises
    ------
    RuntimeError
        With pip's message (naming the requirement it could not find) if one is missing.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if wheels:
        source = [] if wheelhouse is None else ["--no-index", "--find-links", str(wheelhouse)]
        _pip(
            "download", "--quiet", "--no-deps", "--only-binary=:all:", *source,
            "--dest", str(folder), *wheels,
        )  # fmt: skip
    return sorted(p.name for p in folder.glob("*.whl"))


def build_library(
    folder: Path, wheels: list[str], wheelhouse: str | os.PathLike | None = None
) -> list[str]:
    """Write the whaleutils wheel and the pinned ``wheels`` into ``folder``; returns file names.

    The wheel is built from a clean copy of the package (no caches, nothing written into the
    repository, no network); the others come from :func:`download_wheels` (the package index,
    or a local ``wheelhouse``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="whaleutils-wheel-") as scratch:
        source = Path(scratch) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, source / name)
        shutil.copytree(
            REPO / "whaleutils",
            source / "whaleutils",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        _pip(
            "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
            "--wheel-dir", str(folder), str(source),
        )  # fmt: skip
    return download_wheels(folder, wheels, wheelhouse)


def _git_commit() -> str | None:
    """The commit, ``-dirty`` if the working tree has changes; None outside a git checkout."""
    try:
        head, status = (
            subprocess.run(
                ["git", "-C", str(REPO), *arguments], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            for arguments in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain"])
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (head + ("-dirty" if status else "")) if head else None


CANARY_NOTEBOOK = "04_effnet_arcface"
# The canary's settings over its kernel's: the whole notebook, every cell, in minutes.
CANARY_PARAMETERS = {
    "epochs": 1,
    "warmup_epochs": 0,
    "sustain_epochs": 0,
    "snapshot_every": None,
    "snapshot_last": 1,
    "max_train_images": 2000,
    "max_valid_images": 500,
    "session_hours": 1,
}


def canary_kernel(kernels: list[dict]) -> dict | None:
    """A short copy of the first kernel running notebook 04 (``<slug>-canary``): one epoch on
    about 2,000 training photos, the whole notebook on the same accelerator, data and weights,
    so a first push shows in minutes whether the TPU path works before the long runs. No
    kernel reads its outputs. None without such a kernel."""
    first = next((k for k in kernels if k["notebook"] == CANARY_NOTEBOOK), None)
    if first is None:
        return None
    return {
        **first,
        "slug": f"{first['slug']}-canary",
        "title": f"{first['title']} canary",
        "parameters": {**first["parameters"], **CANARY_PARAMETERS},
    }


def stage(
    out_dir: str | os.PathLike,
    owner: str | None = None,
    metadata_path: str | os.PathLike = METADATA_FILE,
    build_wheels: bool = True,
    wheelhouse: str | os.PathLike | None = None,
) -> dict:
    """Stage every kernel and the library dataset under ``out_dir``; returns ``stage.json``.

    ``out_dir`` must be new, empty, or an earlier stage (its ``stage.json`` names every entry
    in it), which is replaced; anything else is refused so that nothing of the user's is
    overwritten. The stage is written into a hidden folder beside ``out_dir`` and swapped in
    when complete: a failure or a kill leaves the earlier stage as it was.
    ``build_wheels=False`` writes the library's metadata without building or downloading wheels;
    ``wheelhouse`` takes the pinned wheels from that local folder instead of the package index
    (``python -m whaleutils kaggle wheelhouse`` fills one).
    """
    import nbformat

    metadata = load_metadata(metadata_path)
    owner = owner or configured_owner()
    if not owner:
        raise ValueError(
            "no Kaggle owner: pass --owner USER (needed with an API token such as "
            "KAGGLE_API_TOKEN, which does not name the user), or configure the kaggle CLI "
            "with KAGGLE_USERNAME or kaggle.json in ~/.kaggle or $KAGGLE_CONFIG_DIR"
        )
    if not OWNER.match(owner):
        raise ValueError(f"owner {owner!r} is not a Kaggle user name")
    final = Path(out_dir)
    earlier = _earlier_stage(final)  # checked before anything is written
    with folders.new_folder(final, replace=earlier) as out:  # swapped in when complete
        return _stage_into(out, metadata, owner, wheelhouse, build_wheels, nbformat)


def _earlier_stage(out: Path) -> bool:
    """Whether ``out`` holds an earlier stage (to be replaced); False when it is new or empty.

    Raises
    ------
    FileExistsError
        When ``out`` is a file, or holds anything an earlier stage's ``stage.json`` does not
        name (nothing of the user's is ever removed).
    """
    if not out.exists():
        return False
    if not out.is_dir() or out.is_symlink():
        raise FileExistsError(f"{out} exists and is not a folder")
    entries = {entry.name for entry in out.iterdir()}
    if not entries:
        return False
    try:
        summary = json.loads((out / "stage.json").read_text())
        ours = {"stage.json", summary["library"]["folder"], *summary["kernels"]}
        if summary.get("canary"):
            ours.add(summary["canary"])
        ours = {str(name) for name in ours}
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise FileExistsError(
            f"{out} is not empty and not an earlier stage (no readable stage.json): "
            "choose a new folder"
        ) from None
    foreign = sorted(entries - ours)
    if foreign:
        raise FileExistsError(
            f"{out} holds {', '.join(foreign[:5])}, which no stage wrote: not replaced; "
            "choose a new folder"
        )
    return True


def _stage_into(out: Path, metadata: dict, owner: str, wheelhouse, build_wheels, nbformat) -> dict:
    """Every kernel and the library dataset written into the new folder ``out``."""
    library = metadata["library"]
    library_id = f"{owner}/{library['slug']}"
    commit = _git_commit()
    library_dir = out / library["slug"]
    library_dir.mkdir()
    files = build_library(library_dir, library["wheels"], wheelhouse) if build_wheels else []
    (library_dir / "dataset-metadata.json").write_text(
        json.dumps(
            {
                "title": library["title"],
                "id": library_id,
                "licenses": [{"name": "other"}],
                "description": (
                    "whaleutils (MIT licence) and the pure-Python packages the Happywhale "
                    "notebook suite needs beyond Kaggle's image, as wheels: "
                    + ", ".join(library["wheels"] or ["none"])
                    + f". Built from commit {commit or 'unknown'}."
                ),
            },
            indent=2,
        )
        + "\n"
    )

    competition = metadata["competition"]
    profile = runner.load_profile(metadata["profile"])

    def stage_kernel(kernel: dict) -> str:
        folder = out / kernel["slug"]
        folder.mkdir()
        notebook = kernel["notebook"]
        declared = runner.declared_parameters(notebook)
        # Kaggle: the competition input found where it is mounted (data_dir None), outputs in
        # /kaggle/working, other kernels' outputs attached under /kaggle/input
        parameters = runner.notebook_parameters(
            notebook,
            profile,
            None,
            environment.KAGGLE_WORKING / notebook,
            environment.KAGGLE_INPUT,
            kernel["parameters"],
        )
        unknown = sorted(set(parameters) - declared)
        if unknown:
            raise MetadataError(
                f"params/{metadata['profile']}/{notebook}.yaml sets {unknown}, which notebook "
                f"{notebook} does not declare in its parameters cell"
            )
        nbformat.write(
            staged_notebook(notebook, parameters, library_id, accelerator=kernel["accelerator"]),
            folder / f"{kernel['slug']}.ipynb",
        )
        (folder / "kernel-metadata.json").write_text(
            json.dumps(kernel_metadata(kernel, owner, competition, library_id), indent=2) + "\n"
        )
        return kernel["slug"]

    staged = [stage_kernel(kernel) for kernel in metadata["kernels"]]
    canary = canary_kernel(metadata["kernels"])
    if canary is not None:
        stage_kernel(canary)
    summary = {
        "owner": owner,
        "profile": metadata["profile"],
        "commit": commit,
        "library": {"id": library_id, "folder": library["slug"], "files": files},
        "kernels": staged,
        "canary": None if canary is None else canary["slug"],
    }
    (out / "stage.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
