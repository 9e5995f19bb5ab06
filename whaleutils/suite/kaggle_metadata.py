"""The suite's Kaggle kernels as the repository lists them: ``kaggle-metadata.json``, read and
checked (:func:`load_metadata`, one line per problem naming the kernel and field).

``kaggle kernels push -p DIR`` reads exactly ``DIR/kernel-metadata.json``, so the repository's
``kaggle-metadata.json`` is our own file listing every kernel::

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
they follow from ``outputs.inputs_of`` (``INPUTS``, and the crop cache kernel for a notebook
whose ``crop_cache`` parameter names notebook 00): the first kernel running each notebook this
one reads, or, for a notebook that reads every output (``outputs.READS_EVERY_OUTPUT``, the
blend), every such kernel; all must be listed earlier. Every kernel also gets the competition
and the library dataset as sources. The owner is filled in at staging (``kaggle_stage``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from whaleutils.contracts import outputs
from whaleutils.suite import runner

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
    settings = None
    if profile not in runner.PROFILES:
        problems.append(f"{path}: profile {profile!r} is not one of {list(runner.PROFILES)}")
    else:
        settings = runner.load_profile(profile)
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
        # The kernels whose outputs this one reads follow from the suite's graph (and from
        # a crop_cache parameter naming the crop cache notebook).
        kernel["kernels"] = []
        every = kernel.get("notebook") in runner.READS_EVERY_OUTPUT
        notebook_of = kernel.get("notebook")
        chosen = (
            runner.chosen_parameters(notebook_of, settings, kernel["parameters"])
            if settings is not None and notebook_of in runner.NOTEBOOKS
            else {}
        )
        reads = outputs.inputs_of(notebook_of, chosen)
        for notebook in reads:
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
