"""The main job: execute the notebook suite in order with papermill, then summarise.

``python -m whaleutils run --profile PROFILE [--data DATA_DIR] [--out RUNS_DIR]`` (``PROFILES``)
runs each notebook of the profile (``NOTEBOOKS``, or those its ``_run.yaml`` lists) with its
parameters (:func:`notebook_parameters`: the
profile's ``_common.yaml`` and ``<notebook>.yaml``, plus ``data_dir``, ``out_dir`` and, for the
notebooks that read other notebooks' outputs (``INPUTS``), ``inputs_dir``), writing
``RUNS_DIR/<profile>/<notebook>/`` with the executed notebook inside.
A notebook whose declared outputs are complete is skipped unless ``force``, so an interrupted
run resumes (training itself resumes from its last finished epoch). The first failure stops
the run, naming the notebook and the failing cell.

``RUNS_DIR/<profile>/summary.json``::

    {"profile": "local", "data_dir": "...", "notebooks": [{"name", "status", "seconds"}, ...],
     "scores": {"basic_cnn": {"map5", "map5_known", "map5_new", "split"}, ...}}

``split`` says whether a score is on the test set (where a solution exists) or the
validation fold. Notebooks not run this time (complete, or left out by ``only``) keep their
entry from the previous summary, marked ``"reused": true``. ``summary.md`` lays the scores
out beside the paper's.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import yaml

from whaleutils.contracts import folders, outputs
from whaleutils.datasets import data, synth

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
PARAMS_DIR = REPO / "params"
PROFILES = ("smoke", "local", "catalogue", "kaggle", "kaggle-smoke")
# The notebooks and their graph are stated in ``outputs`` (the notebooks read them too).
NOTEBOOKS, INPUTS, READS_EVERY_OUTPUT = (
    outputs.NOTEBOOKS,
    outputs.INPUTS,
    outputs.READS_EVERY_OUTPUT,
)
# params/<profile>/_common.yaml: settings every notebook gets if its parameters cell declares
# them (the fold, the number of folds, the seed), so that they are stated once per profile.
COMMON = "_common"
RUN_SETTINGS = "_run"  # params/<profile>/_run.yaml: the runner's own settings
RUN_LOCK_FILE = ".run.lock"  # in runs/<profile>: held while a run writes there (RunLock)
# _run.yaml's name of the profile a profile extends: it states only what differs from it
EXTENDS = "extends"
SCORED = {
    "02_basic_cnn": "basic_cnn",
    "03_resnet_arcmargin": "resnet_arcmargin",
    "04_effnet_arcface": "effnet_arcface",
    "07_blend": "blend",
}
# MAP@5 the paper reports for its models (table 3); None where our sources do not give it.
PAPER_MAP5 = {"basic_cnn": None, "resnet_arcmargin": None, "effnet_arcface": 0.86, "blend": 0.88}


class NotebookFailed(RuntimeError):
    """A notebook raised; ``notebook`` and ``cell`` say where, the message says what."""

    def __init__(self, notebook: str, cell: int | None, message: str, executed: Path):
        self.notebook, self.cell, self.executed = notebook, cell, executed
        where = f"cell {cell}" if cell is not None else "before any cell ran"
        super().__init__(
            f"{notebook} failed in {where}: {message}\nexecuted notebook kept at {executed}"
        )


def profile_files(profile: str) -> dict[str, dict]:
    """The YAML files of ``params/<profile>/`` by name (``_run``, ``_common``, notebooks), as
    written: nothing inherited, nothing checked but the YAML itself."""
    folder = PARAMS_DIR / profile
    if not folder.is_dir():
        raise FileNotFoundError(f"missing parameter folder {folder}")
    files = {}
    for path in sorted(folder.glob("*.yaml")):
        payload = yaml.safe_load(path.read_text()) or {}
        if not isinstance(payload, dict):
            raise ValueError(f"{path}: expected a mapping of names to values")
        files[path.stem] = payload
    return files


def parent_profile(profile: str) -> str | None:
    """The profile ``profile`` extends (``_run.yaml``'s ``extends``), or None."""
    return _extends(profile_files(profile))


def _extends(files: dict[str, dict]) -> str | None:
    return files.get(RUN_SETTINGS, {}).get(EXTENDS)


def inherited_files(profile: str, _seen: tuple[str, ...] = ()) -> dict[str, dict]:
    """A profile's files merged over those of the profiles it extends: each file's values
    replace its parent's one name at a time (a mapping value, e.g. ``augmentation``, is
    replaced whole), a file the profile lacks is its parent's."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got profile={profile!r}")
    if profile in _seen:
        raise ValueError(f"profiles extend each other in a circle: {' -> '.join(_seen)}")
    own = profile_files(profile)
    parent = _extends(own)
    if parent is None:
        return own
    if parent not in PROFILES:
        raise ValueError(
            f"{PARAMS_DIR / profile / RUN_SETTINGS}.yaml extends {parent!r}, not a profile; "
            f"choose from {PROFILES}"
        )
    merged = inherited_files(parent, (*_seen, profile))
    for name, values in own.items():
        merged[name] = {**merged.get(name, {}), **values}
    merged[RUN_SETTINGS].pop(EXTENDS, None)
    return merged


def load_profile(profile: str) -> dict[str, dict]:
    """A profile's settings by file name: ``_run``, ``_common`` and the parameters of each
    notebook the profile runs (``_run.yaml``'s ``notebooks``, in the suite's order; default:
    all), each merged over the profile it extends (:func:`inherited_files`)."""
    folder = PARAMS_DIR / profile
    files = inherited_files(profile)
    for name in (RUN_SETTINGS, COMMON):
        if name not in files:
            raise FileNotFoundError(f"missing parameter file {folder / name}.yaml")
    parameters = {RUN_SETTINGS: files[RUN_SETTINGS], COMMON: files[COMMON]}
    listed = parameters[RUN_SETTINGS].get("notebooks", list(NOTEBOOKS))
    unknown = sorted(set(listed) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(
            f"{folder / RUN_SETTINGS}.yaml lists unknown notebook(s) {unknown}; "
            f"choose from {list(NOTEBOOKS)}"
        )
    for name in NOTEBOOKS:
        if name in listed:
            if name not in files:
                raise FileNotFoundError(f"missing parameter file {folder / name}.yaml")
            parameters[name] = files[name]
            own = chosen_parameters(name, parameters)
            missing = sorted(set(outputs.inputs_of(name, own)) - set(listed))
            if missing:
                raise ValueError(
                    f"{folder / RUN_SETTINGS}.yaml lists {name} without {missing}, "
                    "whose outputs it reads"
                )
    return parameters


def profile_notebooks(profile: dict[str, dict]) -> tuple[str, ...]:
    """The notebooks a loaded profile runs, in the suite's order."""
    return tuple(name for name in NOTEBOOKS if name in profile)


@functools.cache
def _parameters_cell(name: str) -> dict[str, dict]:
    """papermill's reading of a notebook's ``parameters`` cell: each name with its default."""
    import papermill

    return papermill.inspect_notebook(str(NOTEBOOK_DIR / f"{name}.ipynb"))


def declared_parameters(name: str) -> frozenset[str]:
    """The names set in a notebook's ``parameters`` cell."""
    return frozenset(_parameters_cell(name))


@functools.cache
def notebook_defaults(name: str) -> dict:
    """The values a notebook's ``parameters`` cell sets, where they are literals (an
    expression's value is left out)."""
    defaults = {}
    for key, entry in _parameters_cell(name).items():
        try:
            defaults[key] = ast.literal_eval(entry["default"])
        except (ValueError, SyntaxError):
            continue
    return defaults


def restated_values(profile: str) -> list[str]:
    """Every value a profile's files state that changes nothing: a value its parent profile
    already gives, or, in a notebook's file, the notebook's own default (where the parent
    gives none). One message per value, naming the file and the value."""
    own = profile_files(profile)
    parent = _extends(own)
    inherited = inherited_files(parent) if parent else {}
    problems = []
    for name, values in own.items():
        for key, value in values.items():
            if key == EXTENDS:
                continue
            if key in inherited.get(name, {}):
                same, source = inherited[name][key] == value, f"the {parent} profile"
            elif name in NOTEBOOKS and key in notebook_defaults(name):
                same, source = notebook_defaults(name)[key] == value, f"notebook {name}"
            else:
                continue
            if same:
                problems.append(
                    f"{PARAMS_DIR / profile / name}.yaml: {key}: {value!r} is what {source} "
                    "already sets; remove it"
                )
    return problems


def notebook_parameters(
    name: str,
    profile: dict[str, dict],
    data_dir: str | None,
    out_dir,
    inputs_dir,
    overrides: dict | None = None,
) -> dict:
    """A notebook's papermill parameters: the profile's common settings that the notebook
    declares, then its own file's, then the ``overrides`` it declares (e.g. ``{"backend":
    "jax"}`` from ``run -p backend jax``), plus where its data and outputs are and, for the
    notebooks in ``INPUTS``, the folder holding the output folders they read (``inputs_dir``).

    ``profile`` is :func:`load_profile`'s result."""
    parameters = {
        **chosen_parameters(name, profile, overrides),
        "data_dir": data_dir,
        "out_dir": str(out_dir),
    }
    if name in INPUTS:
        parameters["inputs_dir"] = str(inputs_dir)
    return parameters


def chosen_parameters(name: str, profile: dict[str, dict], overrides: dict | None = None) -> dict:
    """The settings notebook ``name`` runs with: the profile's common ones it declares, its own
    file's (all of them: staging names one the notebook lacks; none if the profile does not run
    it), then the ``overrides`` it declares."""
    declared = declared_parameters(name)
    common = {key: value for key, value in profile[COMMON].items() if key in declared}
    chosen = {key: value for key, value in (overrides or {}).items() if key in declared}
    return {**common, **profile.get(name, {}), **chosen}


def default_data(runs_dir: Path, profile_settings: dict) -> Path:
    """Generate (or reuse) the profile's synthetic data set under ``runs_dir/data``."""
    config = synth.SynthConfig(**profile_settings.get("synth", {}))
    folder = (
        runs_dir
        / "data"
        / f"synth-seed{config.seed}-{config.individuals}ind-{config.max_side}px-v{synth.FORMAT}"
    )
    synth.generate(folder, config, workers=2)
    return folder


def execute(name: str, parameters: dict, out_dir: Path) -> None:
    """Execute one notebook with papermill into ``out_dir/<name>.ipynb``."""
    import papermill

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / f"{name}.ipynb"
    try:
        papermill.execute_notebook(
            str(NOTEBOOK_DIR / f"{name}.ipynb"),
            str(executed),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=True,
            cwd=str(REPO),
        )
    except papermill.PapermillExecutionError as error:
        message = f"{error.ename}: {error.evalue}"
        raise NotebookFailed(name, error.cell_index, message, executed) from None


class RunBusy(folders.FolderBusy):
    """Another ``run`` is writing the same run folder."""


class RunLock(folders.FolderLock):
    """One ``run`` at a time in a run folder (``runs/<profile>``, its ``.run.lock``): two
    would rewrite each other's ``summary.json`` and notebook folders. Not waited for (a run
    lasts minutes to hours): the second refuses at once, naming the first's process."""

    busy_error = RunBusy

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(Path(run_dir) / RUN_LOCK_FILE, wait=0)

    def busy_message(self, holder: str) -> str:
        return (
            f"{self.path.parent}: another run (process {holder}) is writing this run folder; "
            f"wait for it to finish, or give another --out (its lock, {self.path.name}, is "
            f"released when that process ends)"
        )


def run(
    profile: str,
    data_dir: str | None = None,
    runs_dir: str = "runs",
    only: list[str] | None = None,
    force: bool = False,
    overrides: dict | None = None,
    variant: str | None = None,
) -> dict:
    """Run the suite (or the ``only`` notebooks) and write the summary; returns it.

    ``overrides`` set parameters of every notebook that declares them, over the profile's
    values (a notebook whose outputs are complete is still skipped: use ``force``).
    ``variant`` writes each notebook into ``<notebook>-<variant>`` beside the main folders, e.g.
    notebook 04 on another fold (``only=["04_effnet_arcface"], overrides={"fold": 1},
    variant="fold1"``): the blend reads every variant, the other notebooks the main folder."""
    if variant is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.]*", variant):
        raise ValueError(f"variant must be letters, digits, '_' or '.', got variant={variant!r}")
    settings = load_profile(profile)
    # Absolute from here on: papermill runs each notebook in the repository's folder, and a
    # notebook joins the paths it is given.
    runs = Path(os.path.abspath(runs_dir))
    run_dir = runs / profile
    unknown = sorted(set(only or []) - set(NOTEBOOKS))
    if unknown:
        raise ValueError(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOKS)}")
    included = profile_notebooks(settings)
    outside = sorted(set(only or []) - set(included))
    if outside:
        raise ValueError(f"the {profile} profile does not run {outside}; it runs {list(included)}")
    running = [name for name in included if not only or name in only]
    undeclared = sorted(
        set(overrides or {}) - set().union(*(declared_parameters(n) for n in running))
    )
    if undeclared:
        raise ValueError(f"no notebook of this run has the parameter(s) {undeclared}")
    for name in running:  # a crop cache named by its notebook must be one this profile runs
        chosen = chosen_parameters(name, settings, overrides)
        if (
            chosen.get("crop_cache") == outputs.CROP_CACHE_NOTEBOOK
            and outputs.CROP_CACHE_NOTEBOOK not in included
        ):
            raise ValueError(
                f"{name} reads the crop cache of notebook {outputs.CROP_CACHE_NOTEBOOK}, "
                f"which the {profile} profile does not run"
            )
    if data_dir:  # a data set that is not there is named before anything is written
        try:
            data.find_data_dir(os.path.abspath(data_dir))
        except FileNotFoundError as error:
            raise ValueError(f"data {data_dir}: {error}") from None
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # one run at a time in a run folder, from here to its summary
        data_path = Path(os.path.abspath(data_dir)) if data_dir else None
        data_path = data_path or default_data(runs, settings[RUN_SETTINGS])
        summary = {"profile": profile, "data_dir": str(data_path), "notebooks": [], "scores": {}}
        earlier = {}
        if (run_dir / "summary.json").is_file():
            earlier = {
                n["name"]: n
                for n in outputs.read_json(run_dir / "summary.json").get("notebooks", [])
            }
        inputs_of = {}  # what each notebook runs on: checked against a finished one's, up front
        for name in running:
            folder_name = name if variant is None else f"{name}-{variant}"
            out = run_dir / folder_name
            parameters = notebook_parameters(
                name, settings, str(data_path), out, run_dir, overrides
            )
            if parameters.get("crop_cache") == outputs.CROP_CACHE_NOTEBOOK:  # its output, here
                parameters["crop_cache"] = str(run_dir / outputs.CROP_CACHE_NOTEBOOK)
            inputs_of[name] = (parameters, run_inputs(parameters, data_path, runs))
            recorded = earlier.get(folder_name, {}).get("inputs")
            if (
                not force
                and outputs.outputs_complete(out)
                and recorded not in (None, inputs_of[name][1])
            ):
                raise ValueError(
                    f"{out} holds {name}'s results for other inputs ("
                    + ", ".join(differences(recorded, inputs_of[name][1]))
                    + "): --force to replace them, or another --runs folder to keep them"
                )
        started_all = time.perf_counter()
        failure = None
        for name in included:
            if only and name not in only:
                if name in earlier:
                    summary["notebooks"].append({**earlier[name], "reused": True})
                continue
            folder_name = name if variant is None else f"{name}-{variant}"
            out = run_dir / folder_name
            parameters, inputs = inputs_of[name]
            if outputs.outputs_complete(out) and not force:
                print(f"[{name}] complete, skipped (use --force to run again)", flush=True)
                previous = earlier.get(
                    folder_name, {"name": folder_name, "status": "ok", "seconds": None}
                )
                summary["notebooks"].append({**previous, "reused": True})
                continue
            if force and out.exists():
                shutil.rmtree(out)
            print(f"[{name}] running ...", flush=True)
            started = time.perf_counter()
            try:
                execute(name, parameters, out)
            except NotebookFailed as error:
                seconds = round(time.perf_counter() - started, 1)
                summary["notebooks"].append(
                    {
                        "name": folder_name,
                        "status": "failed",
                        "seconds": seconds,
                        "error": str(error),
                    }
                )
                failure = error
                print(
                    f"[{name}] FAILED after {seconds:.0f} s\n{error}", file=sys.stderr, flush=True
                )
                break
            seconds = round(time.perf_counter() - started, 1)
            summary["notebooks"].append(
                {"name": folder_name, "status": "ok", "seconds": seconds, "inputs": inputs}
            )
            print(
                f"[{name}] ok in {seconds:.0f} s (total {time.perf_counter() - started_all:.0f} s)",
                flush=True,
            )
        # Folders this run did not touch stay listed: other variants, and in a variant run the
        # main folders of the notebooks it ran.
        listed = {entry["name"] for entry in summary["notebooks"]}
        for folder_name, entry in earlier.items():
            if folder_name not in listed and (variant is not None or folder_name not in NOTEBOOKS):
                summary["notebooks"].append({**entry, "reused": True})
        summary["scores"] = collect_scores(run_dir)
        write_summary(run_dir, summary)
        if failure is not None:
            raise failure
        return summary


def run_inputs(parameters: dict, data_path: Path, runs: Path) -> dict:
    """What a notebook's results depend on, as recorded in ``summary.json``: its parameters
    (as JSON has them; paths inside the ``runs`` folder relative to it, so that a runs folder
    moved elsewhere is the same run) and the data set's ``train.csv`` digest."""
    train = Path(data_path) / "train.csv"
    prefix = str(runs) + os.sep

    def relative(value):
        return (
            "RUNS/" + value[len(prefix) :]
            if isinstance(value, str) and value.startswith(prefix)
            else value
        )

    return {
        "parameters": {
            k: relative(v) for k, v in json.loads(json.dumps(parameters, default=str)).items()
        },
        "train_csv_sha256": data.file_sha256(train) if train.is_file() else None,
    }


def differences(recorded: dict, current: dict) -> list[str]:
    """The names whose values differ between two :func:`run_inputs` (at most six)."""
    before, now = recorded.get("parameters", {}), current["parameters"]
    names = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    changed = [f"{k}: {str(before.get(k))[:40]} -> {str(now.get(k))[:40]}" for k in names[:6]]
    if recorded.get("train_csv_sha256") != current["train_csv_sha256"]:
        changed.append("the data set's train.csv")
    return changed or ["its recorded inputs"]


FUSED = {"04_effnet_arcface": "effnet_arcface fused"}  # notebooks whose fused head may answer


def collect_scores(run_dir: Path) -> dict:
    """MAP@5 of each scored notebook: on the test set where it has a solution, else validation.
    A notebook with a fused head (``local/``: the head ``identify`` answers with) has it listed
    first, under ``FUSED``'s name, its KNN head beside it."""
    scores = {}
    for name, key in SCORED.items():
        path = run_dir / name / outputs.SCORES
        if not path.is_file():
            continue
        fused = run_dir / name / outputs.LOCAL_FOLDER / outputs.SCORES
        if name in FUSED and fused.is_file():
            scores[FUSED[name]] = _scores(json.loads(fused.read_text()))
        payload = json.loads(path.read_text())
        scores[key] = _scores(payload)
        if "embedding" in payload:  # KNN models: how many dimensions the embedding uses
            scores[key]["embedding_participation_ratio"] = payload["embedding"][
                "participation_ratio"
            ]
    return scores


def _scores(payload: dict) -> dict:
    split = "test" if payload.get("test") else "valid"
    chosen = payload[split]
    return {
        "map5": chosen["map5"],
        "map5_known": chosen["map5_known"],
        "map5_new": chosen["map5_new"],
        # trained on pseudo-labelled test photos: its test score is transductive
        "split": f"{split} (transductive)" if payload.get("pseudo_labels") else split,
        "valid_map5": payload["valid"]["map5"],
    }


def _cell(value) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"  # NaN != NaN


def write_summary(run_dir: Path, summary: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [
        f"# Run `{summary['profile']}` on `{summary['data_dir']}`",
        "",
        "| model | MAP@5 | known | new | scored on | validation MAP@5 | paper MAP@5 "
        "| embedding dims used |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for name, key in SCORED.items():
        if FUSED.get(name) in summary["scores"]:
            rows.append((FUSED[name], f"**{key}, fused head** (answers `identify`)", None))
            rows.append((key, f"{key}, KNN head", PAPER_MAP5[key]))
        else:
            rows.append((key, key, PAPER_MAP5[key]))
    for key, label, paper in rows:
        score = summary["scores"].get(key)
        if score is None:
            lines.append(f"| {label} | not run | | | | | {_cell(paper)} | |")
            continue
        values = [score["map5"], score["map5_known"], score["map5_new"]]
        cells = " | ".join(_cell(v) for v in values)
        ratio = score.get("embedding_participation_ratio")
        lines.append(
            f"| {label} | {cells} | {score['split']} | {_cell(score['valid_map5'])} "
            f"| {_cell(paper)} | {'' if ratio is None else f'{ratio:.1f}'} |"
        )
    lines += [
        "",
        "The paper's figures are on the real competition test set (public leaderboard) with",
        "EfficientNet-B5 at 380 px; ours are on the data above, at this profile's sizes.",
        "*Embedding dims used* is the participation ratio of the training embeddings (1 if",
        "they vary along one line, 512 if spread evenly): a handful means the model has",
        "learned global appearance, not the marks that tell individuals apart.",
        "",
    ]
    lines += [
        "| notebook | status | seconds | executed notebook and figures |",
        "| --- | --- | --- | --- |",
    ]
    for entry in summary["notebooks"]:
        folder = run_dir / entry["name"]
        figures = sorted(p.name for p in folder.glob("*.png")) if folder.is_dir() else []
        links = [f"[{entry['name']}.ipynb]({entry['name']}/{entry['name']}.ipynb)"] + [
            f"[{f}]({entry['name']}/{f})" for f in figures
        ]
        lines.append(
            f"| {entry['name']} | {entry['status']} | {entry['seconds']} | {', '.join(links)} |"
        )
    (run_dir / "summary.md").write_text("\n".join(lines) + "\n")
