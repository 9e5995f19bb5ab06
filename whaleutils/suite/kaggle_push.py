"""Push a staged suite (``kaggle_stage``) with the real ``kaggle`` CLI.

``push(stage_dir)`` runs ``kaggle kernels push`` for each staged kernel (and, with
``with_library``, versions the library dataset first), and reports each URL or error. The CLI
exits 0 even when the server refuses a kernel ("Kernel push error: ..."); ``push`` reads its
output and counts that as a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from whaleutils.contracts import outputs


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


STAGED_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,49}")  # a Kaggle slug: a folder of the stage


def read_stage(stage_dir: Path) -> dict:
    """The stage's ``stage.json``, checked: every folder it names (kernels, the canary, the
    library) is a slug, a real folder directly in ``stage_dir`` (no path, no link), so a
    crafted file cannot send another folder of the machine to Kaggle.

    Raises
    ------
    ValueError
        Naming ``stage.json`` and what is wrong.
    """
    path = Path(stage_dir) / "stage.json"
    summary = outputs.read_json(path)
    if not isinstance(summary.get("kernels"), list):
        raise ValueError(f"{path}: kernels must be a list of staged folders")
    try:
        names = [*summary["kernels"], summary["library"]["folder"]]
        names += [summary["canary"]] if summary.get("canary") else []
        str(summary["owner"]), str(summary["library"]["id"])
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not a stage summary (kernels, library, owner)") from None
    for name in names:
        folder = Path(stage_dir) / str(name)
        if not isinstance(name, str) or not STAGED_NAME.fullmatch(name):
            raise ValueError(f"{path}: {str(name)[:60]!r} is not a staged folder's name")
        if folder.is_symlink() or not folder.is_dir():
            raise ValueError(f"{path}: {name} is not a folder of the stage {stage_dir}")
    return summary


def push(
    stage_dir: str | os.PathLike,
    only: list[str] | None = None,
    with_library: bool = False,
    timeout: float = 600,
    skip: list[str] | None = None,
) -> list[PushResult]:
    """Push the staged kernels in order (all but the canary, or the ``only`` slugs, the canary
    among them if named), none of the ``skip`` slugs (e.g. the crop cache kernel, pushed first
    and finished: pushing it again would run it again); one result per push.

    Every kernel is attempted even after a failure, so one run reports them all.
    """
    stage_dir = Path(stage_dir)
    summary_path = stage_dir / "stage.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} not found: stage first with `python -m whaleutils kaggle stage`"
        )
    summary = read_stage(stage_dir)
    canary = summary.get("canary")
    pushable = summary["kernels"] + ([canary] if canary else [])
    skip = skip or []
    unknown = sorted((set(only or []) | set(skip)) - set(pushable))
    if unknown:
        raise ValueError(f"not staged in {stage_dir}: {unknown}; staged: {pushable}")
    results = []
    if with_library:
        results.append(push_library(stage_dir, summary, timeout))
    for slug in pushable:
        if (only and slug not in only) or (not only and slug == canary) or slug in skip:
            continue  # the canary is pushed when asked for by name
        code, output = _run_cli(["kernels", "push", "-p", str(stage_dir / slug)], timeout)
        results.append(_outcome(f"{summary['owner']}/{slug}", code, output, "successfully"))
    return results
