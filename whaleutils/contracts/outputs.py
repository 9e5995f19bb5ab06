"""The output-file contract between notebooks: what a notebook writes and how others read it.

Each notebook writes into its own output folder and ends with :func:`write_outputs`, which
records the files it produced in ``outputs.json``; the runner treats a notebook whose listed
outputs all exist as done. Scored notebooks write ``scores.json``::

    {"valid": {"map5": ..., "map5_known": ..., "map5_new": ..., "n_images": ...},
     "test": {...} or null,          # test only where a test_solution.csv exists
     ...}                            # the head's settings: k, threshold, rule (KNN heads)

A trained embedding notebook (03, 04) also writes ``embedding_model.keras`` and the embeddings
``train.npz``, ``valid.npz``, ``test.npz`` (schema in ``retrieval.embed``); notebooks 05-07
read them with ``retrieval.trained_run.load_trained``, and every user of a trained run reads its
settings with :func:`read_run_settings`.

Importing this module does not import TensorFlow (the runner uses it).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whaleutils.contracts import environment

NOTEBOOKS = (
    "00_crop_cache",
    "01_eda",
    "02_basic_cnn",
    "03_resnet_arcmargin",
    "04_effnet_arcface",
    "05_gradcam",
    "06_robustness",
    "07_blend",
)
# The suite's graph, stated here only (the runner, Kaggle staging and notebooks 05-07 read it):
# the notebooks whose output folders each notebook reads (found under its ``inputs_dir``).
# Kaggle staging attaches the same notebooks' kernels.
INPUTS = {
    "05_gradcam": ("04_effnet_arcface",),
    "06_robustness": ("04_effnet_arcface",),
    "07_blend": ("02_basic_cnn", "03_resnet_arcmargin", "04_effnet_arcface"),
}
# The notebook whose output is a crop cache: a notebook whose ``crop_cache`` parameter names it
# reads that output too (``inputs_of``), where profiles choose to (Kaggle's).
CROP_CACHE_NOTEBOOK = "00_crop_cache"
# Notebooks that read every output of their INPUTS notebooks (each fold or variant: one
# Kaggle kernel each), not only the first: the blend.
READS_EVERY_OUTPUT = frozenset({"07_blend"})


def inputs_of(notebook: str, parameters: dict | None = None) -> tuple[str, ...]:
    """The notebooks whose outputs ``notebook`` reads when run with ``parameters``: its
    ``INPUTS``, and the crop cache notebook if its ``crop_cache`` parameter names it.

    >>> inputs_of("05_gradcam", {"crop_cache": "00_crop_cache"})
    ('00_crop_cache', '04_effnet_arcface')
    >>> inputs_of("02_basic_cnn", {"crop_cache": "runs/cache"})
    ()
    """
    named = (parameters or {}).get("crop_cache") == CROP_CACHE_NOTEBOOK
    return ((CROP_CACHE_NOTEBOOK,) if named else ()) + tuple(INPUTS.get(notebook, ()))


LISTING = "outputs.json"
SCORES = "scores.json"
LOCAL_FOLDER = "local"  # a trained notebook's fused head (04_effnet_arcface/local/)
EMBEDDING_MODEL = "embedding_model.keras"
# the model and its portable pair (training.models.save_model), as a notebook lists them
EMBEDDING_MODEL_FILES = (
    EMBEDDING_MODEL, "embedding_model.weights.h5", "embedding_model.recipe.json"
)  # fmt: skip


def notebook_folder(out_dir: str | os.PathLike) -> Path:
    """A notebook's output folder ``out_dir``, made if it does not exist."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(path: str | os.PathLike, payload) -> Path:
    """Write ``payload`` as indented JSON (NumPy numbers as plain numbers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    return path


def read_json(path: str | os.PathLike, kind: type | None = dict):
    """The JSON document in ``path``; raises ValueError naming the file when it is not JSON
    (truncated, not UTF-8, nested too deeply) or, with ``kind``, not of that type (an object
    by default)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)[:120]
        raise ValueError(f"{path}: not a readable JSON file ({reason})") from None
    if kind is not None and not isinstance(payload, kind):
        wanted = {dict: "an object", list: "a list"}.get(kind, kind.__name__)
        raise ValueError(f"{path}: must hold {wanted}, not {type(payload).__name__}")
    return payload


def output_name(out_dir: str | os.PathLike, file: str | os.PathLike) -> str:
    """The name under which ``file`` is listed in ``out_dir``'s ``outputs.json``: its path
    relative to ``out_dir``. ``file`` is either that name already (``"log.csv"``,
    ``"snapshots/epoch-003/train.npz"``) or a path built from ``out_dir`` (``out_dir / name``,
    relative or absolute as ``out_dir`` was given), or any absolute path inside ``out_dir``.
    A path leading outside ``out_dir`` raises, naming both.

    >>> output_name("runs/local/04", "runs/local/04/snapshots/epoch-003/train.npz")
    'snapshots/epoch-003/train.npz'
    >>> output_name("./runs", "log.csv")
    'log.csv'
    """
    out_dir, path = Path(out_dir), Path(file)
    if path.is_absolute():
        name = Path(os.path.relpath(path, out_dir.absolute()))
        if ".." in name.parts:  # the same place reached through a symbolic link
            name = Path(os.path.relpath(path.resolve(), out_dir.resolve()))
    elif out_dir.parts and path.parts[: len(out_dir.parts)] == out_dir.parts:
        name = path.relative_to(out_dir)  # built as out_dir / name
    else:
        name = Path(os.path.normpath(path))
    if name.is_absolute() or ".." in name.parts or str(name) == ".":
        raise ValueError(f"{file}: not a file inside the output folder {out_dir}")
    return name.as_posix()


def write_outputs(out_dir: str | os.PathLike, files) -> Path:
    """Record a notebook's outputs in ``outputs.json``, each as its path relative to ``out_dir``
    (:func:`output_name`: a name, or a path built from ``out_dir``), with the versions it ran
    on (``environment``: Python, Keras, JAX, TensorFlow, ...); raises if one is missing, so a
    notebook cannot claim what it did not write."""
    out_dir = Path(out_dir)
    names = [output_name(out_dir, f) for f in files]
    missing = [name for name in names if not (out_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"{out_dir}: declared outputs missing: {missing}")
    return write_json(out_dir / LISTING, {"files": names, "environment": environment.versions()})


def outputs_complete(out_dir: str | os.PathLike) -> bool:
    """Whether a notebook's folder holds ``outputs.json`` and every file it lists."""
    listing = Path(out_dir) / LISTING
    if not listing.is_file():
        return False
    files = json.loads(listing.read_text()).get("files", [])
    return all((Path(out_dir) / name).exists() for name in files)


def read_scores(out_dir: str | os.PathLike) -> dict:
    """A notebook's ``scores.json``; raises naming the file if it is missing or lacks
    ``valid``."""
    path = Path(out_dir) / SCORES
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run that notebook first")
    payload = read_json(path)
    if "valid" not in payload:
        raise ValueError(f"{path}: not a scores file (no 'valid' entry)")
    return payload


@dataclass
class KnnSettings:
    """The KNN head chosen on validation by a trained notebook."""

    k: int
    threshold: float
    rule: str
    flipped_gallery: bool = False  # the gallery holds each photo's mirror image too


@dataclass(frozen=True)
class RunSettings:
    """What a trained embedding notebook's folder says about how to use its model, read in one
    place for every user (notebooks 05-07, the blend's snapshots, ``identify``): its KNN head
    (``knn``, with the threshold for test photos and ``valid_threshold`` for validation photos:
    the two differ where a ``new_share`` set them apart), the test-time augmentation its
    embeddings were made with (``tta``, one of ``embed.TTA_MODES``), whether it cropped photos
    to boxes (``crop_to_box``; None for a run that predates the record) and the full ``scores``
    (later heads add their own entries)."""

    folder: Path
    knn: KnnSettings
    valid_threshold: float
    tta: str
    crop_to_box: bool | None
    scores: dict

    @property
    def model_path(self) -> Path:
        return self.folder / EMBEDDING_MODEL


def read_run_settings(folder: str | os.PathLike) -> RunSettings:
    """The :class:`RunSettings` of a trained notebook's output ``folder``, without loading its
    model or embeddings.

    Raises
    ------
    FileNotFoundError
        If the folder has no ``scores.json`` or no embedding model.
    ValueError
        Naming ``scores.json`` if it lacks the KNN settings (k, threshold, rule).
    """
    folder = Path(folder)
    if not (folder / EMBEDDING_MODEL).is_file():
        raise FileNotFoundError(
            f"{folder / EMBEDDING_MODEL} not found: is {folder} a trained model's folder?"
        )
    scores = read_scores(folder)
    missing = [key for key in ("k", "threshold", "rule") if key not in scores]
    if missing:
        raise ValueError(f"{folder / SCORES}: no KNN settings {missing}")
    k, threshold, rule = scores["k"], scores["threshold"], scores["rule"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{folder / SCORES}: k must be a whole number >= 1, got {str(k)[:40]}")
    for name in ("threshold", "valid_threshold"):
        value = scores.get(name, threshold)
        if not _finite_number(value) or not 0.0 <= value <= 2.0:
            raise ValueError(
                f"{folder / SCORES}: {name} must be a cosine distance in [0, 2], "
                f"got {str(value)[:40]}"
            )
    if rule not in KNN_RULES:
        raise ValueError(
            f"{folder / SCORES}: rule must be one of {KNN_RULES}, got {str(rule)[:40]!r}"
        )
    split = scores.get("split") or {}
    if not isinstance(split, dict):
        raise ValueError(f"{folder / SCORES}: split must be an object, got {str(split)[:40]}")
    return RunSettings(
        folder=folder,
        knn=KnnSettings(k, float(threshold), rule, bool(scores.get("flipped_gallery", False))),
        valid_threshold=float(scores.get("valid_threshold", threshold)),
        tta=_embeddings_tta(folder),
        crop_to_box=bool(split["crop_to_box"]) if "crop_to_box" in split else None,
        scores=scores,
    )


KNN_RULES = ("vote", "max")  # the rules a KNN head may choose (retrieval.knn.RULES)


def _finite_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _embeddings_tta(folder: Path) -> str:
    """The TTA the run embedded with (the ``tta`` entry of its ``train.npz``, read alone: the
    file's embeddings can be large), "none" if it says nothing."""
    path = folder / "train.npz"
    if not path.is_file():
        return "none"
    with np.load(path, allow_pickle=False) as archive:
        return str(archive["tta"]) if "tta" in archive.files else "none"
