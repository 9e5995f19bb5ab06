"""Stage and push the notebook suite as Kaggle kernels, with whaleutils as a Kaggle dataset.

``kaggle kernels push -p DIR`` reads exactly ``DIR/kernel-metadata.json``, so the repository's
``kaggle-metadata.json`` is our own file listing every kernel, and staging writes one folder per
kernel::

    {"competition": "happy-whale-and-dolphin", "profile": "kaggle",
     "library": {"slug": "whaleutils-library", "title": "whaleutils library",
                 "wheels": ["efficientnet==1.1.1", "keras-applications==1.0.8"]},
     "kernels": [{"slug": "happywhale-01-eda", "title": "Happywhale 01 EDA",
                  "notebook": "01_eda", "accelerator": "none", "internet": false,
                  "private": true, "datasets": []}, ...]}

``accelerator`` is ``none``, ``gpu`` (GPU T4 x2) or ``tpu`` (TPU v5e-8); ``datasets`` are
``owner/slug`` or a bare ``slug`` of the same owner; ``parameters`` (optional) set notebook
parameters of this kernel over the profile's, e.g. ``{"fold": 1}``: one notebook may run in
several kernels (folds, backbones). The kernels whose outputs a kernel reads are not listed:
they follow from ``runner.INPUTS``: the first kernel running each notebook this one reads, or,
for a notebook that reads every output (``runner.READS_EVERY_OUTPUT``, the blend), every such
kernel; all must be listed earlier. Every kernel also gets the competition and the library
dataset as sources. The owner is filled in at staging.

``stage(out_dir)`` writes::

    out_dir/stage.json                       what was staged: owner, library, kernel order
    out_dir/<library slug>/                  dataset-metadata.json and the wheels: whaleutils,
                                             plus the packages Kaggle's image lacks
    out_dir/<kernel slug>/kernel-metadata.json
    out_dir/<kernel slug>/<kernel slug>.ipynb   the notebook with a bootstrap cell that installs
                                             the wheels (no internet needed) and the profile's
                                             parameters injected the way papermill does

``push(stage_dir)`` runs the real ``kaggle`` CLI for each staged kernel (and, with
``with_library``, versions the library dataset first), and reports each URL or error. The CLI
exits 0 even when the server refuses a kernel ("Kernel push error: ..."); ``push`` reads its
output and counts that as a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whaleutils.suite import environment, runner

REPO = runner.REPO
METADATA_FILE = REPO / "kaggle-metadata.json"
ACCELERATORS = {  # accelerator -> (enable_gpu, enable_tpu, machine_shape)
    "none": (False, False, None),
    "gpu": (True, False, "NvidiaTeslaT4"),
    "tpu": (False, True, "TpuV5E8"),
}
KERNEL_FIELDS = frozenset(
    ("slug", "title", "notebook", "accelerator", "internet", "private", "datasets", "parameters")
)
SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
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


class MetadataError(ValueError):
    """kaggle-metadata.json is malformed; the message lists every problem found."""


def slugify_title(title: str) -> str:
    """The slug Kaggle derives from a title (the CLI warns when ``id`` differs from it)."""
    from slugify import slugify  # python-slugify, what the kaggle CLI itself uses

    return slugify(title)


def _check_source(value, what: str, where: str, problems: list[str]) -> None:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: {what} entries must be non-empty strings, got {value!r}")
        return
    parts = value.split("/")
    bad_owner = len(parts) == 2 and not OWNER.match(parts[0])
    if len(parts) > 2 or not SLUG.match(parts[-1]) or bad_owner:
        problems.append(f"{where}: {what} entry {value!r} is not 'owner/slug' or 'slug'")


def load_metadata(path: str | os.PathLike = METADATA_FILE) -> dict:
    """Read and validate kaggle-metadata.json; returns it with defaults filled in.

    Raises
    ------
    MetadataError
        Listing every problem, each naming the file, the kernel (index and slug) and the field.
    """
    path = Path(path)
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise MetadataError(f"{path}: file not found") from None
    except json.JSONDecodeError as error:
        raise MetadataError(f"{path}: not valid JSON ({error})") from None
    problems: list[str] = []
    if not isinstance(metadata, dict):
        raise MetadataError(f"{path}: the top level must be an object")
    for key in ("competition", "library", "kernels"):
        if key not in metadata:
            problems.append(f"{path}: missing top-level key {key!r}")
    profile = metadata.setdefault("profile", "kaggle")
    if profile not in runner.PROFILES:
        problems.append(f"{path}: profile {profile!r} is not one of {list(runner.PROFILES)}")
    library = metadata.get("library", {})
    if not isinstance(library, dict) or not SLUG.match(str(library.get("slug", ""))):
        problems.append(f"{path}: library.slug must be a lower-case slug like 'whaleutils-library'")
    elif len(str(library.get("title", ""))) < 6:
        problems.append(f"{path}: library.title must have at least 6 characters")
    if isinstance(library, dict):
        library.setdefault("wheels", [])
        if not all(isinstance(w, str) and "==" in w for w in library["wheels"]):
            problems.append(f"{path}: library.wheels must be pinned requirements like 'name==1.0'")
    kernels = metadata.get("kernels", [])
    if not isinstance(kernels, list) or not kernels:
        problems.append(f"{path}: kernels must be a non-empty list")
        kernels = []
    seen: list[str] = []
    kernels_of: dict[str, list[str]] = {}  # notebook -> the kernels running it, in order
    for index, kernel in enumerate(kernels):
        where = f"{path}: kernels[{index}]"
        if not isinstance(kernel, dict):
            problems.append(f"{where}: must be an object")
            continue
        where += f" ({kernel.get('slug', '?')})"
        unknown = sorted(set(kernel) - KERNEL_FIELDS)
        if unknown:
            problems.append(f"{where}: unknown field(s) {unknown}; known: {sorted(KERNEL_FIELDS)}")
        slug, title = kernel.get("slug"), kernel.get("title")
        if not isinstance(slug, str) or not SLUG.match(slug):
            problems.append(f"{where}: slug must be lower-case letters, digits and dashes")
        elif slug in seen:
            problems.append(f"{where}: slug {slug!r} appears twice")
        if not isinstance(title, str) or len(title) < 5:
            problems.append(f"{where}: title must have at least 5 characters")
        elif isinstance(slug, str) and SLUG.match(slug) and slugify_title(title) != slug:
            problems.append(
                f"{where}: title {title!r} becomes the slug {slugify_title(title)!r} on Kaggle, "
                f"not {slug!r}; make them agree"
            )
        if kernel.get("notebook") not in runner.NOTEBOOKS:
            problems.append(
                f"{where}: notebook {kernel.get('notebook')!r} is not one of "
                f"{list(runner.NOTEBOOKS)}"
            )
        kernel.setdefault("accelerator", "none")
        if kernel["accelerator"] not in ACCELERATORS:
            problems.append(
                f"{where}: accelerator {kernel['accelerator']!r} is not one of {list(ACCELERATORS)}"
            )
        for flag, default in (("internet", False), ("private", True)):
            kernel.setdefault(flag, default)
            if not isinstance(kernel[flag], bool):
                problems.append(f"{where}: {flag} must be true or false, got {kernel[flag]!r}")
        kernel.setdefault("datasets", [])
        if not isinstance(kernel["datasets"], list):
            problems.append(f"{where}: datasets must be a list")
            kernel["datasets"] = []
        for dataset in kernel["datasets"]:
            _check_source(dataset, "datasets", where, problems)
        kernel.setdefault("parameters", {})
        if not isinstance(kernel["parameters"], dict):
            problems.append(f"{where}: parameters must be an object of notebook parameters")
            kernel["parameters"] = {}
        elif kernel.get("notebook") in runner.NOTEBOOKS:
            undeclared = sorted(
                set(kernel["parameters"]) - runner.declared_parameters(kernel["notebook"])
            )
            if undeclared:
                problems.append(
                    f"{where}: parameters {undeclared} are not parameters of notebook "
                    f"{kernel['notebook']}"
                )
        # The kernels whose outputs this one reads follow from the suite's graph.
        kernel["kernels"] = []
        every = kernel.get("notebook") in runner.READS_EVERY_OUTPUT
        for notebook in runner.INPUTS.get(kernel.get("notebook"), ()):
            if notebook not in kernels_of:
                problems.append(
                    f"{where}: reads the outputs of notebook {notebook}, so a kernel running "
                    f"{notebook} must be listed before this one"
                )
            else:
                kernel["kernels"] += kernels_of[notebook] if every else kernels_of[notebook][:1]
        if isinstance(slug, str):
            seen.append(slug)
            kernels_of.setdefault(kernel.get("notebook"), []).append(slug)
    for index, kernel in enumerate(kernels):  # a blend must come after every kernel it reads
        if not isinstance(kernel, dict) or kernel.get("notebook") not in runner.READS_EVERY_OUTPUT:
            continue
        later = [
            other.get("slug")
            for other in kernels[index + 1 :]
            if isinstance(other, dict)
            and other.get("notebook") in runner.INPUTS.get(kernel["notebook"], ())
        ]
        if later:
            problems.append(
                f"{path}: kernels[{index}] ({kernel.get('slug')}): blends every output of "
                f"{list(runner.INPUTS[kernel['notebook']])}, so {later} must be listed before it"
            )
    if problems:
        raise MetadataError("\n".join(problems))
    return metadata


def configured_owner(environ: dict | None = None) -> str | None:
    """The Kaggle user the CLI is configured for: KAGGLE_USERNAME, else kaggle.json, else None."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_USERNAME"):
        return environ["KAGGLE_USERNAME"]
    folders = [environ.get("KAGGLE_CONFIG_DIR")]
    home = Path(environ.get("HOME", Path.home()))
    folders += [home / ".kaggle", home / ".config" / "kaggle"]
    for folder in folders:
        if folder and (Path(folder) / "kaggle.json").is_file():
            try:
                username = json.loads((Path(folder) / "kaggle.json").read_text()).get("username")
            except (json.JSONDecodeError, AttributeError):
                continue
            if username:
                return username
    return None


def staged_notebook(
    notebook: str,
    parameters: dict,
    library_id: str,
    input_root: str | os.PathLike = environment.KAGGLE_INPUT,
):
    """The notebook with its bootstrap cell (looking for the wheels under ``input_root``) and
    the injected parameters, as an nbformat node."""
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
        BOOTSTRAP.format(library_id=library_id, input_root=Path(input_root).as_posix()),
        metadata={"tags": [BOOTSTRAP_TAG]},
    )
    first_code = next(i for i, cell in enumerate(staged.cells) if cell.cell_type == "code")
    staged.cells.insert(first_code, bootstrap)
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


def stage(
    out_dir: str | os.PathLike,
    owner: str | None = None,
    metadata_path: str | os.PathLike = METADATA_FILE,
    build_wheels: bool = True,
    wheelhouse: str | os.PathLike | None = None,
) -> dict:
    """Stage every kernel and the library dataset under ``out_dir``; returns ``stage.json``.

    ``out_dir`` must be new, empty, or an earlier stage (it has ``stage.json``), which is
    replaced; anything else is refused so that nothing of the user's is overwritten.
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
    out = Path(out_dir)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(f"{out} exists and is not a folder")
        if any(out.iterdir()):
            if not (out / "stage.json").is_file():
                raise FileExistsError(
                    f"{out} is not empty and not an earlier stage (no stage.json): "
                    "choose a new folder"
                )
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

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
    staged = []
    for kernel in metadata["kernels"]:
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
            staged_notebook(notebook, parameters, library_id), folder / f"{kernel['slug']}.ipynb"
        )
        (folder / "kernel-metadata.json").write_text(
            json.dumps(kernel_metadata(kernel, owner, competition, library_id), indent=2) + "\n"
        )
        staged.append(kernel["slug"])
    summary = {
        "owner": owner,
        "profile": metadata["profile"],
        "commit": commit,
        "library": {"id": library_id, "folder": library["slug"], "files": files},
        "kernels": staged,
    }
    (out / "stage.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


@dataclass
class PushResult:
    """One push: the kernel or dataset, whether it landed, its URL, and the CLI's words."""

    name: str
    ok: bool
    url: str | None
    message: str

    def line(self) -> str:
        if self.ok:
            return f"{self.name}: pushed {self.url or '(no URL reported)'}"
        return f"{self.name}: FAILED: {self.message}"


def kaggle_command() -> list[str]:
    """The kaggle CLI of this environment (beside this Python), else the one on PATH."""
    beside = Path(sys.executable).parent / "kaggle"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("kaggle")
    if found is None:
        raise FileNotFoundError("the kaggle CLI is not installed: pip install -r requirements.txt")
    return [found]


URL = re.compile(r"https?://\S+")
FAILURE_MARKERS = (
    "push error",
    "creation error",
    "not valid dataset sources",
    "not valid competition sources",
    "not valid kernel sources",
    "not valid tags",
)


def _run_cli(arguments: list[str], timeout: float) -> tuple[int, str]:
    try:
        result = subprocess.run(
            kaggle_command() + arguments, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return 124, f"the kaggle CLI did not answer within {timeout:.0f} s"
    return result.returncode, (result.stdout + "\n" + result.stderr).strip()


def _outcome(name: str, code: int, output: str, success: str) -> PushResult:
    """Success needs exit code 0, the CLI's success words, and none of its failure words."""
    lowered = output.lower()
    failed = code != 0 or success not in lowered or any(m in lowered for m in FAILURE_MARKERS)
    urls = URL.findall(output)
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    if len(lines) > 6:  # the CLI's first line says what went wrong, its last where to look
        lines = [*lines[:2], "...", *lines[-4:]]
    message = " | ".join(lines) if lines else f"exit code {code}, no output"
    if failed and code != 0:
        message = f"exit code {code}: {message}"
    return PushResult(name, not failed, urls[-1] if urls and not failed else None, message)


def push_library(stage_dir: Path, summary: dict, timeout: float) -> PushResult:
    """A new version of the library dataset, or the dataset itself if it does not exist yet."""
    folder = stage_dir / summary["library"]["folder"]
    if not list(folder.glob("whaleutils-*.whl")):
        return PushResult(summary["library"]["id"], False, None, f"no whaleutils wheel in {folder}")
    notes = f"whaleutils {summary.get('commit') or ''}".strip()
    code, output = _run_cli(["datasets", "version", "-p", str(folder), "-m", notes], timeout)
    if code != 0 and "not found" in output.lower():
        code, output = _run_cli(["datasets", "create", "-p", str(folder)], timeout)
        return _outcome(summary["library"]["id"], code, output, "dataset is being created")
    return _outcome(summary["library"]["id"], code, output, "dataset version is being created")


def push(
    stage_dir: str | os.PathLike,
    only: list[str] | None = None,
    with_library: bool = False,
    timeout: float = 600,
) -> list[PushResult]:
    """Push the staged kernels in order (all, or the ``only`` slugs); one result per push.

    Every kernel is attempted even after a failure, so one run reports them all.
    """
    stage_dir = Path(stage_dir)
    summary_path = stage_dir / "stage.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} not found: stage first with `python -m whaleutils kaggle stage`"
        )
    summary = json.loads(summary_path.read_text())
    unknown = sorted(set(only or []) - set(summary["kernels"]))
    if unknown:
        raise ValueError(f"not staged in {stage_dir}: {unknown}; staged: {summary['kernels']}")
    results = []
    if with_library:
        results.append(push_library(stage_dir, summary, timeout))
    for slug in summary["kernels"]:
        if only and slug not in only:
            continue
        code, output = _run_cli(["kernels", "push", "-p", str(stage_dir / slug)], timeout)
        results.append(_outcome(f"{summary['owner']}/{slug}", code, output, "successfully"))
    return results
