"""README's commands, run as written from the root of a clean copy of the repository.

The main command of the quick start runs once per test session (``readme_main_run`` in
``conftest.py``, the smoke suite that ``test_notebooks.py`` checks too); the commands after it
run here, in README order. What changes between README and here is stated in ``readme_plan``
and nowhere else: the install step is not repeated (``.ci/run`` runs exactly README's, which a
test checks), the ``smoke`` profile stands in for ``local``, the ``catalogue`` profile runs on
the smoke run's synthetic set for one epoch at 64 px (on the real photos it takes 40 minutes),
and the placeholders a reader
supplies (``my_catalogue``, ``new_photos/``, ``~/Downloads/decisions.csv``) are made from the
synthetic set. A README command that needs the network says so in ``NOT_RUN``; any other new
command runs here, so a command that fails as written fails this test.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import README_INSTALL, REPO, readme_commands, run_readme_command

from whaleutils.catalogue import interop
from whaleutils.datasets import encounters
from whaleutils.suite import runner

# README commands that cannot run here, each with the reason (matched by prefix).
NOT_RUN = {
    ".venv/bin/python -m whaleutils kaggle wheelhouse": "the test command: this suite",
    ".venv/bin/python -m whaleutils kaggle stage": (
        "fetches two wheels from the package index (the staging tests stage with --wheelhouse)"
    ),
    ".venv/bin/python -m whaleutils kaggle push": "reaches Kaggle (tests/suite/kaggle_server.py)",
    "mkdir weights": "downloads the backbone weights",
    "curl ": "downloads",
    "kaggle datasets": "reaches Kaggle",
    "mkdir boxes": "needs the 1st-place repository's files",
}


SMOKE_DATA = "SMOKE_DATA"  # stands for the synthetic set the main command generated


def readme_plan(commands: list[str]) -> list[tuple[str, str | None]]:
    """Each README command with what runs here (None: not run, see ``NOT_RUN``)."""
    plan = []
    for command in commands:
        if command.startswith(README_INSTALL):
            command = command.removeprefix(README_INSTALL)
        if any(command.startswith(prefix) for prefix in NOT_RUN):
            plan.append((command, None))
            continue
        runs = command.replace("--profile local", "--profile smoke")
        if "--profile catalogue" in runs:  # 40 minutes on the real photos (README's figures):
            # here the same profile and notebooks on the smoke run's synthetic set, small
            runs = re.sub(r"--data \S+", f"--data {SMOKE_DATA}", runs)
            runs += " -p epochs 1 -p image_size 64"
        plan.append((command, runs.replace("runs/local/", "runs/smoke/")))
    return plan


def test_readme_commands_are_found():
    """The parser finds README's blocks, joins continued lines, drops comments."""
    commands = readme_commands((REPO / "README.md").read_text())
    main = [c for c in commands if c.endswith("-m whaleutils run --profile local")]
    assert main == [f"{README_INSTALL}.venv/bin/python -m whaleutils run --profile local"]
    identify = next(c for c in commands if "whaleutils identify" in c)
    assert "\\" not in identify and "--out review_2026_11" in identify
    assert not [c for c in commands if c.startswith("#")]
    text = "```bash\n# a comment\na \\\n    b  # trailing\nc\n```\n```python\nd\n```\n"
    assert readme_commands(text) == ["a b", "c"]


def test_ci_installs_and_tests_as_readme_says():
    """.ci/run is README's test command, line by line (so the install the README tests skip
    is the one CI runs)."""
    commands = readme_commands((REPO / "README.md").read_text())
    test_command = next(c for c in commands if "pytest" in c)
    ci = (REPO / ".ci" / "run").read_text()
    for step in test_command.split(" && "):
        assert step in ci, step


@pytest.mark.slow
def test_readme_commands_run_as_written_from_a_clean_copy(readme_main_run):
    """After the quick start's main command (the fixture), every other README command that
    runs offline, in order, from the copy's root: the second fold and the blend, identify and
    enroll on a catalogue, prepare on the real right-whale photos (``../shared``)."""
    root, main_summary = readme_main_run
    assert [n["status"] for n in main_summary["notebooks"]] == ["ok"] * len(runner.NOTEBOOKS)
    plan = readme_plan(readme_commands((root / "README.md").read_text()))
    ran = []
    for command, runs in plan:
        if runs is None or runs.endswith("-m whaleutils run --profile smoke"):
            continue  # not offline, or the main command (the fixture ran it)
        if "pytest" in runs:
            continue  # the test command: this suite
        if "../shared/" in runs and not (root.parent / "shared").is_dir():
            continue  # the real photos are not beside this checkout (CI has them)
        _supply_placeholders(root, runs)
        if SMOKE_DATA in runs:
            smoke = json.loads((root / "runs/smoke/summary.json").read_text())["data_dir"]
            runs = runs.replace(SMOKE_DATA, shlex.quote(smoke))
        result = run_readme_command(root, runs)
        assert result.returncode == 0, (
            f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        ran.append(runs)
    assert len(ran) >= 4, ran
    run_dir = root / "runs" / "smoke"
    assert (run_dir / "summary.md").is_file()
    # the fold-1 variant, then the blend of both folds, each notebook's outputs complete
    summary = json.loads((run_dir / "summary.json").read_text())
    statuses = {n["name"]: n["status"] for n in summary["notebooks"]}
    assert statuses["04_effnet_arcface-fold1"] == "ok" and statuses["07_blend"] == "ok"
    for name in [*runner.NOTEBOOKS, "04_effnet_arcface-fold1"]:
        assert runner.outputs.outputs_complete(run_dir / name), name
    # the catalogue profile: its three notebooks, the fused head written
    catalogue_run = json.loads((root / "runs" / "catalogue" / "summary.json").read_text())
    assert [(n["name"], n["status"]) for n in catalogue_run["notebooks"]] == [
        ("01_eda", "ok"), ("04_effnet_arcface", "ok"), ("05_gradcam", "ok")
    ]  # fmt: skip
    assert (root / "runs/catalogue/04_effnet_arcface/local/fusion.json").is_file()
    members = pd.read_csv(run_dir / "07_blend" / "members.csv")
    assert sorted(set(members["fold"])) == [0, 1]
    # identify wrote its files; enroll added the accepted photos
    review = root / "review_2026_11"
    matches = pd.read_csv(review / "matches.csv")
    assert matches["photo"].nunique() == len(list((root / "new_photos").iterdir()))
    assert (review / "review.html").stat().st_size > 0
    assert matches["probability"].notna().all()  # the smoke run's fused head ranked them
    distance = encounters.haversine_km(
        matches["catalogue_latitude"], matches["catalogue_longitude"], 42.35, -70.35
    )
    assert (distance <= 30).all()  # --near 42.35,-70.35 --within 30: one site's photos only
    catalogue = pd.read_csv(root / "my_catalogue" / "train.csv")
    assert set(matches["photo"].map(lambda p: Path(p).name)) <= set(catalogue["image"])
    # curate duplicates ranked the catalogue's pairs; the best one, decided the same, was merged
    ranked = pd.read_csv(root / "curation" / "duplicates.csv", dtype=str)
    assert (root / "curation" / "review.html").is_file() and len(ranked)
    assert ranked.at[0, "individual_b"] not in set(catalogue["individual_id"])
    assert (root / "my_catalogue" / "curation_log.csv").is_file()
    # the imported catalogue held the COCO file's photos; the capture history counts them all
    history = pd.read_csv(root / "my_history.csv", index_col=0)
    assert set(history.index) == set(catalogue["individual_id"])
    assert (root / "my_history.inp").read_text().count(" 1; ") == len(history)
    # prepare, on the real photos beside the copy (../shared, as in the repository)
    if (root.parent / "shared" / "data" / "real_photos").is_dir():
        prepared = pd.read_csv(root / "data" / "right_whales" / "train.csv")
        assert len(prepared) == 3352


def _supply_placeholders(root: Path, command: str) -> None:
    """What a reader brings before a command: a catalogue and a folder of new photos
    (``identify``), the review page's decisions (``enroll``)."""
    data_dir = Path(json.loads((root / "runs/smoke/summary.json").read_text())["data_dir"])
    if " import " in command and not (root / "wildbook.json").exists():
        # another tool's Wild Me COCO export of the smoke run's catalogue (no whaleutils cells)
        document = interop.coco_document(data_dir)
        for annotation in document["annotations"]:
            del annotation[interop.COCO_EXTRA]
        (root / "wildbook.json").write_text(json.dumps(document))
        shutil.copytree(data_dir / "train_images", root / "wildbook_images")
    if " identify " in command and not (root / "new_photos").exists():
        (root / "new_photos").mkdir()
        for name in sorted(pd.read_csv(data_dir / "test_solution.csv")["image"])[:6]:
            shutil.copy(data_dir / "test_images" / name, root / "new_photos" / name)
    if " curate apply " in command:  # the duplicates page's export: the best pair the same
        decisions = Path(command.split()[-1].replace("~", str(root.parent / "home"), 1))
        ranked = pd.read_csv(root / "curation" / "duplicates.csv", dtype=str)
        decided = ranked.head(2).assign(decision=["same", "different"][: min(2, len(ranked))])
        decisions.parent.mkdir(parents=True, exist_ok=True)
        decided[["individual_a", "individual_b", "decision"]].to_csv(decisions, index=False)
    match = re.search(r"--decisions (\S+)", command)
    if " enroll " in command and match:
        decisions = Path(match.group(1).replace("~", str(root.parent / "home"), 1))
        matches = pd.read_csv(root / "review_2026_11" / "matches.csv")
        accepted = matches[matches["rank"] == 1][["photo", "individual_id"]]  # the suggestions
        decisions.parent.mkdir(parents=True, exist_ok=True)
        accepted.to_csv(decisions, index=False)


def test_every_command_of_the_table_has_help(capsys):
    """Each command of README's command table answers ``--help`` (exit 0, its usage): the first
    through ``python -m whaleutils``, the others through the same parser in this process."""
    from whaleutils import cli

    text = (REPO / "README.md").read_text()
    table = text[text.index("| command | what it does |") :].split("\n\n")[0]
    names = re.findall(r"^\| `((?:kaggle )?[a-z]+)", table, flags=re.MULTILINE)
    assert {"run", "identify", "enroll", "crops", "kaggle stage"} <= set(names)
    result = subprocess.run(
        [sys.executable, "-m", "whaleutils", *names[0].split(), "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and "usage:" in result.stdout, (names[0], result.stderr)
    for name in names[1:]:
        with pytest.raises(SystemExit) as exit_:
            cli.main([*name.split(), "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.startswith("usage:"), (name, out)
