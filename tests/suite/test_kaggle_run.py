"""The staged kernels run as Kaggle runs them: offline, one after another, each in a tree of
Kaggle's shape that holds only the inputs its ``kernel-metadata.json`` names.

``kaggle stage`` (the ``kaggle-smoke`` profile: the Kaggle suite at the smoke profile's sizes;
every kernel on the CPU) writes the kernels with ``WHALEUTILS_KAGGLE_ROOT`` pointing at a
temporary ``kaggle/`` folder. Then, for each kernel in the stage's order, that folder is made
afresh::

    kaggle/input/competitions/happy-whale-and-dolphin/   the competition's files (synthetic)
    kaggle/input/datasets/<owner>/<slug>/                each dataset the kernel names
    kaggle/input/notebooks/<owner>/<slug>/               each kernel it names: that kernel's
                                                         /kaggle/working, as it left it
    kaggle/working/                                      empty: the kernel's outputs

and papermill runs the staged notebook there (its working folder as the current one, a home
and temporary folder of its own, no package index), its bootstrap cell installing whaleutils
and the pinned wheels from the attached library dataset. Every file the kernel's processes
open, and every folder they list, is recorded (an audit hook, ``sys.addaudithook``); one
outside the tree and the Python installation, in the repository or ``../shared``, or a
package of the library dataset read from this machine's environment instead of the dataset's
wheels, fails the test, naming the kernel and the path.

The same record shows that the kernels after the crop cache read its crops, never the
competition's photos (``crop_cache: 00_crop_cache``, the kaggle profile's), and the run's
outputs are checked: notebook 00's cache cut from the boxes dataset with room for notebook 04's
box jitter, and the blend of every fold's notebook 04 out of fold, each photo predicted by the
model that did not train on it and scored on its own fold's truth.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata as distributions
from pathlib import Path

import pandas as pd
import pytest

from whaleutils.contracts import metrics, submission
from whaleutils.datasets import data, synth
from whaleutils.images import crops
from whaleutils.retrieval import splits
from whaleutils.suite import kaggle_metadata, runner

OWNER = "whale-tester"
PROFILE = "kaggle-smoke"
WHEELHOUSE = os.environ.get("WHALEUTILS_WHEELHOUSE")  # `.ci/run` fills it (kaggle wheelhouse)
KERNEL_TIMEOUT = 900  # seconds, each kernel

# Installed by the kernels' PYTHONPATH: records what every process but papermill's own opens.
AUDIT_HOOK = """\
import os
import sys

_log = os.environ.get("WHALEUTILS_READ_LOG")
if _log and not any("papermill" in part for part in sys.orig_argv[:3]):
    _fd = os.open(_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _seen = set()
    _events = {"open": 0, "os.listdir": 0, "os.scandir": 0}

    def _record(event, arguments):
        if event not in _events or not arguments:
            return
        path = arguments[0]
        if isinstance(path, int) or path is None:
            return
        try:
            path = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if path not in _seen:
            _seen.add(path)
            os.write(_fd, f"{os.getpid()}\\t{event}\\t{path}\\n".encode("utf-8", "replace"))

    sys.addaudithook(_record)
"""

SYSTEM_ROOTS = ("/usr", "/lib", "/lib64", "/etc", "/proc", "/sys", "/dev", "/run", "/bin")


def competition_folder(folder: Path, data_dir: Path) -> None:
    """The competition's files as Kaggle mounts them, from a synthetic set: train.csv (image,
    species, individual_id), the two photo folders, sample_submission.csv; no solution."""
    folder.mkdir(parents=True)
    train = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
    train[["image", "species", "individual_id"]].to_csv(folder / "train.csv", index=False)
    shutil.copy2(data_dir / "sample_submission.csv", folder / "sample_submission.csv")
    for part in ("train_images", "test_images"):
        shutil.copytree(data_dir / part, folder / part)


def boxes_dataset(folder: Path, data_dir: Path) -> None:
    """happywhale-detic-boxes as the 1st-place repository has it: train.csv and test.csv,
    each with image and box columns (the synthetic set's boxes)."""
    folder.mkdir(parents=True)
    train = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
    train[["image", "box"]].to_csv(folder / "train.csv", index=False)
    shutil.copy2(data_dir / "test_boxes.csv", folder / "test.csv")


def library_packages() -> dict[str, list[Path]]:
    """The folders in this environment of each package the library dataset ships (whaleutils
    and the pinned wheels): a kernel must import them from the dataset's wheels."""
    library = json.loads(kaggle_metadata.METADATA_FILE.read_text())["library"]
    found = {"whaleutils": [runner.REPO / "whaleutils"]}
    for requirement in library["wheels"] if WHEELHOUSE else []:
        name = requirement.split("==")[0]
        files = distributions.distribution(name).files or []
        tops = {Path(str(f)).parts[0] for f in files if not str(f).startswith("..")}
        base = Path(distributions.distribution(name).locate_file(""))
        found[name] = [
            base / top for top in tops if (base / top).is_dir() and not top.endswith(".dist-info")
        ]
    return found


def undeclared_reads(log: Path, tree: Path) -> list[str]:
    """The paths in ``log`` a kernel had no business with, each with the event."""
    venv = Path(sys.prefix)
    allowed = [
        tree / "kaggle", tree / "home", tree / "tmp", tree / "site", tree / "audit", venv,
        Path(sys.base_prefix), *map(Path, SYSTEM_ROOTS),
    ]  # fmt: skip
    forbidden = {
        f"{name} from this machine's environment": folders
        for name, folders in library_packages().items()
    }
    found = []
    for line in log.read_text().splitlines() if log.exists() else []:
        _, event, text = line.split("\t", 2)
        path = Path(text)
        reason = next(
            (why for why, dirs in forbidden.items() if any(path.is_relative_to(d) for d in dirs)),
            None,
        )
        if reason is None and not any(path.is_relative_to(root) for root in allowed):
            reason = "outside Kaggle's tree"
        if reason:
            found.append(f"{event} {path} ({reason})")
    return found


def photos_opened(log: Path, competition: Path) -> list[str]:
    """The competition's photos (train_images/, test_images/) a kernel's processes opened."""
    parts = [competition / "train_images", competition / "test_images"]
    opened = []
    for line in log.read_text().splitlines() if log.exists() else []:
        _, event, text = line.split("\t", 2)
        if event == "open" and any(Path(text).is_relative_to(part) for part in parts):
            opened.append(text)
    return opened


def mount_inputs(
    tree: Path, kernel: dict, stage: Path, summary: dict, data_dir: Path, outputs: Path
) -> None:
    """``tree`` for one kernel, made afresh: ``kaggle/`` with only the inputs its metadata
    names and an empty working folder; an empty home, temporary and site-packages folder (a
    kernel starts from Kaggle's image, not from what the one before it installed)."""
    for name in ("kaggle", "home", "tmp", "site"):
        if (tree / name).exists():
            shutil.rmtree(tree / name)
        (tree / name).mkdir()
    kaggle = tree / "kaggle"
    (kaggle / "working").mkdir()
    inputs = kaggle / "input"
    for competition in kernel["competition_sources"]:
        competition_folder(inputs / "competitions" / competition, data_dir)
    for source in kernel["dataset_sources"]:
        owner, slug = source.split("/")
        folder = inputs / "datasets" / owner / slug
        if source == summary["library"]["id"]:
            shutil.copytree(stage / summary["library"]["folder"], folder)
        elif slug == "happywhale-detic-boxes":
            boxes_dataset(folder, data_dir)
        else:  # e.g. the backbone weights: this profile's random weights read nothing of it
            folder.mkdir(parents=True)
            (folder / "README.md").write_text(f"{source}: attached, not read at this profile\n")
    for source in kernel["kernel_sources"]:
        owner, slug = source.split("/")
        shutil.copytree(outputs / slug, inputs / "notebooks" / owner / slug)


def kernel_environment(tree: Path, log: Path) -> dict:
    audit = tree / "audit"
    audit.mkdir(exist_ok=True)
    (audit / "sitecustomize.py").write_text(AUDIT_HOOK)
    return {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "HOME": str(tree / "home"),
        "TMPDIR": str(tree / "tmp"),
        "WHALEUTILS_KAGGLE_ROOT": str(tree / "kaggle"),
        "KAGGLE_KERNEL_RUN_TYPE": "Batch",
        # the bootstrap's `pip install` goes to a folder of the kernel's own, from the wheels
        "PYTHONPATH": os.pathsep.join([str(audit), str(tree / "site")]),
        "PIP_TARGET": str(tree / "site"),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "WHALEUTILS_READ_LOG": str(log),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "CUDA_VISIBLE_DEVICES": "",
    }


def cpu_metadata(path: Path) -> Path:
    """kaggle-metadata.json with the kaggle-smoke profile and every kernel on the CPU (this
    machine has no accelerator for the preflight to find); the library's wheels only with a
    wheelhouse."""
    written = json.loads(kaggle_metadata.METADATA_FILE.read_text())
    written["profile"] = PROFILE
    for kernel in written["kernels"]:
        kernel["accelerator"] = "none"
    if not WHEELHOUSE:
        written["library"]["wheels"] = []
    path.write_text(json.dumps(written, indent=2))
    return path


@pytest.mark.slow
def test_the_staged_kernels_run_offline_in_kaggles_tree_reading_only_their_inputs(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    settings = runner.load_profile(PROFILE)
    data_dir = tmp_path / "synthetic"
    synth.generate(data_dir, synth.SynthConfig(**settings["_run"]["synth"]))
    stage = tmp_path / "stage"
    staging = (
        "import sys\n"
        "from whaleutils.suite import kaggle_stage\n"
        "kaggle_stage.stage(sys.argv[1], owner=sys.argv[2], metadata_path=sys.argv[3],\n"
        "                   wheelhouse=sys.argv[4] or None)\n"
    )
    subprocess.run(
        [sys.executable, "-c", staging, str(stage), OWNER,
         str(cpu_metadata(tmp_path / "kaggle-metadata.json")), WHEELHOUSE or ""],
        env={**os.environ, "WHALEUTILS_KAGGLE_ROOT": str(tree / "kaggle")},
        check=True, timeout=600,
    )  # fmt: skip
    summary = json.loads((stage / "stage.json").read_text())
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    ran, read_photos = [], {}
    for slug in summary["kernels"]:
        kernel = json.loads((stage / slug / "kernel-metadata.json").read_text())
        mount_inputs(tree, kernel, stage, summary, data_dir, outputs)
        log = tmp_path / "reads" / f"{slug}.log"
        log.parent.mkdir(exist_ok=True)
        executed = tmp_path / "executed" / f"{slug}.ipynb"
        executed.parent.mkdir(exist_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "papermill", str(stage / slug / kernel["code_file"]),
             str(executed), "--cwd", str(tree / "kaggle" / "working"), "--kernel", "python3",
             "--no-progress-bar"],
            env=kernel_environment(tree, log), capture_output=True, text=True,
            timeout=KERNEL_TIMEOUT,
        )  # fmt: skip
        assert result.returncode == 0, (
            f"kernel {slug} failed after {ran}:\n{result.stderr[-4000:]}\n"
            f"executed notebook: {executed}"
        )
        undeclared = undeclared_reads(log, tree)
        assert not undeclared, (
            f"kernel {slug} read what its kernel-metadata.json does not attach "
            f"({len(undeclared)}):\n  " + "\n  ".join(undeclared[:20])
        )
        read_photos[slug] = sum(
            len(photos_opened(log, tree / "kaggle" / "input" / "competitions" / competition))
            for competition in kernel["competition_sources"]
        )
        shutil.move(tree / "kaggle" / "working", outputs / slug)
        ran.append(slug)
    assert ran == summary["kernels"]
    # only the crop cache kernel and the EDA (its photo grid) open the competition's photos
    readers = {slug for slug, count in read_photos.items() if count}
    assert readers == {"happywhale-00-crop-cache", "happywhale-01-eda"}, read_photos
    check_crop_cache(outputs / "happywhale-00-crop-cache" / "00_crop_cache", tmp_path, data_dir)
    blend = outputs / summary["kernels"][-1]
    assert list(blend.rglob("submission.csv")), sorted(p.name for p in blend.rglob("*"))
    check_blend_out_of_fold(blend / "07_blend", tmp_path, data_dir, kernels=summary["kernels"])


def check_crop_cache(notebook_00: Path, tmp_path: Path, data_dir: Path) -> None:
    """Notebook 00 cut its cache from the boxes dataset (the 1st-place repository's train.csv
    and test.csv), with room for the box jitter notebook 04 trains with."""
    index = crops.read_index(notebook_00 / crops.NOTEBOOK_FOLDER)
    assert index["box_jitter"] == 0.05 and index["size"] == 77  # 64 / sqrt(0.7), rounded up
    boxes = tmp_path / "boxes-dataset"
    boxes_dataset(boxes, data_dir)
    assert index["boxes_sha256"] == crops.boxes_digest(
        crops.part_frames(data_dir, data.find_boxes(boxes))
    )


def check_blend_out_of_fold(blended: Path, tmp_path: Path, data_dir: Path, kernels) -> None:
    """The blend joined every fold's notebook 04 out of fold: each photo predicted on the fold
    that left it out, its score that of those predictions against each fold's own truth."""
    common = runner.load_profile(PROFILE)["_common"]
    staged_folds = sorted({0} | {int(k.rsplit("-", 1)[1]) for k in kernels if "-fold-" in k})
    members = pd.read_csv(blended / "members.csv")
    effnet = members[members["folder"].str.contains("04_effnet_arcface")]
    assert sorted(set(effnet["fold"])) == staged_folds
    assert all(folds == staged_folds for folds in effnet.groupby("member")["fold"].apply(sorted))
    competition = tmp_path / "competition-as-mounted"  # train.csv as the kernels read it
    competition.mkdir()
    pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)[
        ["image", "species", "individual_id"]
    ].to_csv(competition / "train.csv", index=False)
    shutil.copy2(data_dir / "sample_submission.csv", competition / "sample_submission.csv")
    table = data.read_train(competition)
    groups = data.resolve_fold_groups(table, "auto")
    folds = data.make_folds(table, common["n_folds"], common["seed"], groups=groups)
    fold_of = dict(zip(folds["image"], folds["fold"], strict=True))
    oof = submission.read_predictions(blended / "oof_predictions.csv")
    assert sorted({fold_of[image] for image in oof["image"]}) == staged_folds
    split_of = {
        fold: splits.load_split(competition, fold, common["n_folds"], common["seed"])
        for fold in staged_folds
    }
    truth = [split_of[fold_of[image]].truth("valid", [image])[0] for image in oof["image"]]
    written = json.loads((blended / "scores.json").read_text())
    assert written["oof_folds"] == staged_folds
    assert written["valid"]["map5"] == pytest.approx(
        metrics.map_at_k(truth, oof["labels"].tolist()), abs=1e-6
    )
    comparison = pd.read_csv(blended / "comparison.csv").set_index("model")
    assert comparison.loc[effnet["member"].iloc[0], "folds"] == len(staged_folds)
    assert comparison.loc["rank blend", "oof_images"] == len(oof)
