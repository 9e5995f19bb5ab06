"""Staging and pushing the suite to Kaggle, checked against the real kaggle CLI (kaggle 2.2.5)
talking to a local stand-in server: nothing leaves the machine."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from kaggle_server import FakeKaggle

from whaleutils import cli
from whaleutils.suite import kaggle_metadata, kaggle_push, kaggle_stage, runner

OWNER = "whale-tester"
KERNELS = [  # (slug, notebook, fold): notebook 04 runs in one kernel per fold
    ("happywhale-00-crop-cache", "00_crop_cache", None),
    ("happywhale-01-eda", "01_eda", None),
    ("happywhale-02-basic-cnn", "02_basic_cnn", 0),
    ("happywhale-03-resnet-arcmargin", "03_resnet_arcmargin", 0),
    ("happywhale-04-effnet-arcface", "04_effnet_arcface", 0),
    *[(f"happywhale-04-effnet-arcface-fold-{f}", "04_effnet_arcface", f) for f in range(1, 5)],
    ("happywhale-05-gradcam", "05_gradcam", 0),
    ("happywhale-06-robustness", "06_robustness", 0),
    ("happywhale-07-blend", "07_blend", 0),
]
SLUGS = [slug for slug, _, _ in KERNELS]
EFFNET = "happywhale-04-effnet-arcface"
TRAINING = [slug for slug, notebook, _ in KERNELS if notebook in runner.INPUTS["07_blend"]]


# The pinned wheels for offline staging: `.ci/run` fills this folder with
# `python -m whaleutils kaggle wheelhouse`. Without it the staging tests build our own wheel only.
WHEELHOUSE = os.environ.get("WHALEUTILS_WHEELHOUSE")


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> Path:
    """The repository's suite staged once, offline: the whaleutils wheel built for real, the
    pinned wheels taken from the wheelhouse (or, without one, left out of the metadata)."""
    folder = tmp_path_factory.mktemp("kaggle")
    metadata_path = kaggle_metadata.METADATA_FILE
    if WHEELHOUSE is None:
        library = json.loads(metadata_path.read_text())["library"]
        metadata_path = write_metadata(
            folder / "kaggle-metadata.json", library={**library, "wheels": []}
        )
    kaggle_stage.stage(
        folder / "stage", owner=OWNER, metadata_path=metadata_path, wheelhouse=WHEELHOUSE
    )
    return folder / "stage"


@pytest.fixture
def kaggle_env(tmp_path, monkeypatch):
    """Point the real CLI at a FakeKaggle; yields a function that starts one with responses."""
    started = []

    def start(responses: dict) -> FakeKaggle:
        fake = FakeKaggle(responses).__enter__()
        started.append(fake)
        config = tmp_path / "kaggle-config"
        config.mkdir(exist_ok=True)
        for name, value in fake.environment(config).items():
            monkeypatch.setenv(name, value)
        # the CLI keeps resumable-upload state under the temp folder: keep it per test
        monkeypatch.setenv("TMPDIR", str(tmp_path))
        return fake

    yield start
    for fake in started:
        fake.__exit__(None, None, None)


def saved(request) -> tuple[int, dict]:
    slug = request.json()["slug"]
    return 200, {"ref": f"/code/{slug}", "url": f"http://localhost/code/{slug}", "versionNumber": 2}


def injected_parameters(notebook_path) -> dict:
    """The values of a staged notebook's injected-parameters cell."""
    staged_nb = nbformat.read(notebook_path, as_version=4)
    cell = next(c for c in staged_nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.parse(cell.source).body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def write_metadata(path: Path, **changes) -> Path:
    metadata = json.loads(kaggle_metadata.METADATA_FILE.read_text())
    metadata.update(changes)
    path.write_text(json.dumps(metadata))
    return path


# --- kaggle-metadata.json ---------------------------------------------------------------------


def test_repository_metadata_lists_every_notebook_once_in_order():
    metadata = kaggle_metadata.load_metadata()
    assert [k["notebook"] for k in metadata["kernels"]] == [n for _, n, _ in KERNELS]
    assert list(dict.fromkeys(k["notebook"] for k in metadata["kernels"])) == list(runner.NOTEBOOKS)
    assert [k["slug"] for k in metadata["kernels"]] == SLUGS
    assert metadata["competition"] == "happy-whale-and-dolphin"
    for kernel in metadata["kernels"]:
        assert kaggle_metadata.slugify_title(kernel["title"]) == kernel["slug"]
        assert kernel["internet"] is False  # runs offline: wheels and weights are attached
    # the kernels each one reads follow from the suite's graph, stated once in the runner
    sources = {k["notebook"]: k["kernels"] for k in metadata["kernels"]}
    # the blend reads every training kernel (all five folds of 04), the others the first; every
    # notebook that reads photos reads them from the crop cache kernel (crop_cache names it)
    cache = SLUGS[0]
    assert sources["07_blend"] == [cache, *TRAINING] and len(TRAINING) == 7
    assert sources["05_gradcam"] == sources["06_robustness"] == [cache, EFFNET]
    assert sources["04_effnet_arcface"] == sources["02_basic_cnn"] == [cache]
    assert sources["01_eda"] == sources["00_crop_cache"] == []


def test_metadata_errors_name_file_kernel_and_field(tmp_path):
    kernels = [
        {"slug": "whale-one", "title": "Whale One", "notebook": "01_eda"},
        {"slug": "Bad_Slug", "title": "Bad Slug", "notebook": "01_eda"},
        {"slug": "whale-three", "title": "Something Else", "notebook": "99_missing"},
        {"slug": "whale-four", "title": "Whale Four", "notebook": "02_basic_cnn",
         "accelerator": "quantum", "kernels": ["whale-five"], "colour": "blue"},
        {"slug": "whale-five", "title": "Whale Five", "notebook": "05_gradcam",
         "datasets": ["a/b/c"], "internet": "yes"},
        {"slug": "whale-one", "title": "Whale One", "notebook": "04_effnet_arcface"},
        {"slug": "whale-seven", "title": "Whale Seven", "notebook": "07_blend"},
    ]  # fmt: skip
    # the smoke profile: its notebooks read photos, no crop cache kernel to list first
    path = write_metadata(tmp_path / "kaggle-metadata.json", kernels=kernels, profile="smoke")
    with pytest.raises(kaggle_metadata.MetadataError) as caught:
        kaggle_metadata.load_metadata(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(str(path)) for line in lines)
    expected = [
        "kernels[1] (Bad_Slug): slug must be lower-case",
        "kernels[2] (whale-three): title 'Something Else' becomes the slug 'something-else'",
        "kernels[2] (whale-three): notebook '99_missing' is not one of",
        "kernels[3] (whale-four): unknown field(s) ['colour', 'kernels']",
        "kernels[3] (whale-four): accelerator 'quantum' is not one of",
        "kernels[4] (whale-five): datasets entry 'a/b/c' is not 'owner/slug' or 'slug'",
        "kernels[4] (whale-five): internet must be true or false, got 'yes'",
        "kernels[5] (whale-one): slug 'whale-one' appears twice",
        "kernels[4] (whale-five): reads the outputs of notebook 04_effnet_arcface, so a kernel running 04_effnet_arcface must be listed before",
        "kernels[6] (whale-seven): reads the outputs of notebook 03_resnet_arcmargin, so a kernel running 03_resnet_arcmargin must be listed before",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    assert len(lines) == len(expected)


def test_a_kernel_reading_the_crop_cache_needs_the_cache_kernel_listed_first(tmp_path):
    """The kaggle profile's crop_cache names notebook 00: its kernel is a source of every kernel
    that reads photos, and must come first; a kernel setting crop_cache None reads photos."""
    cache = {"slug": "whale-zero", "title": "Whale Zero", "notebook": "00_crop_cache"}
    cnn = {"slug": "whale-two", "title": "Whale Two", "notebook": "02_basic_cnn"}
    path = write_metadata(tmp_path / "kaggle-metadata.json", kernels=[cnn, cache])
    with pytest.raises(kaggle_metadata.MetadataError, match=r"kernels\[0\] \(whale-two\): "
                       r"reads the outputs of notebook 00_crop_cache, so a kernel running "
                       r"00_crop_cache must be listed before"):  # fmt: skip
        kaggle_metadata.load_metadata(path)
    metadata = kaggle_metadata.load_metadata(write_metadata(path, kernels=[cache, cnn]))
    assert metadata["kernels"][1]["kernels"] == ["whale-zero"]
    photos = {**cnn, "parameters": {"crop_cache": None}}
    metadata = kaggle_metadata.load_metadata(write_metadata(path, kernels=[photos]))
    assert metadata["kernels"][0]["kernels"] == []


def test_kernel_parameters_and_the_blend_after_every_training_kernel(tmp_path):
    kernels = [
        {"slug": "whale-two", "title": "Whale Two", "notebook": "02_basic_cnn",
         "parameters": {"fold": 1, "epochz": 3}},
        {"slug": "whale-four", "title": "Whale Four", "notebook": "04_effnet_arcface"},
        {"slug": "whale-three", "title": "Whale Three", "notebook": "03_resnet_arcmargin",
         "parameters": [1]},
        {"slug": "whale-seven", "title": "Whale Seven", "notebook": "07_blend"},
        {"slug": "whale-four-b", "title": "Whale Four B", "notebook": "04_effnet_arcface",
         "parameters": {"fold": 1}},
    ]  # fmt: skip
    path = write_metadata(tmp_path / "kaggle-metadata.json", kernels=kernels, profile="smoke")
    with pytest.raises(kaggle_metadata.MetadataError) as caught:
        kaggle_metadata.load_metadata(path)
    lines = str(caught.value).splitlines()
    expected = [
        "kernels[0] (whale-two): parameters ['epochz'] are not parameters of notebook 02_basic_cnn",
        "kernels[2] (whale-three): parameters must be an object of notebook parameters",
        "kernels[3] (whale-seven): blends every output of ['02_basic_cnn', "
        "'03_resnet_arcmargin', '04_effnet_arcface'], so ['whale-four-b'] must be listed before it",
    ]
    for fragment in expected:
        assert any(fragment in line for line in lines), (fragment, lines)
    assert len(lines) == len(expected)
    del kernels[0]["parameters"]["epochz"], kernels[2]["parameters"]
    kernels[3], kernels[4] = kernels[4], kernels[3]
    metadata = kaggle_metadata.load_metadata(write_metadata(path, kernels=kernels, profile="smoke"))
    blend = metadata["kernels"][4]
    assert blend["kernels"] == ["whale-two", "whale-three", "whale-four", "whale-four-b"]
    assert metadata["kernels"][3]["parameters"] == {"fold": 1}


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "not valid JSON"),
        ("[]", "the top level must be an object"),
        ('{"kernels": []}', "missing top-level key 'competition'"),
    ],
)
def test_metadata_file_level_errors(tmp_path, text, message):
    path = tmp_path / "kaggle-metadata.json"
    path.write_text(text)
    with pytest.raises(kaggle_metadata.MetadataError, match=message):
        kaggle_metadata.load_metadata(path)
    with pytest.raises(kaggle_metadata.MetadataError, match="file not found"):
        kaggle_metadata.load_metadata(tmp_path / "absent.json")


@pytest.mark.parametrize(
    "accelerator, gpu, tpu, shape",
    [
        ("none", False, False, None),
        ("gpu", True, False, "NvidiaTeslaT4"),
        ("tpu", False, True, "TpuV5E8"),
    ],
)
def test_kernel_metadata_sets_every_field(accelerator, gpu, tpu, shape):
    kernel = {
        "slug": "whale-two", "title": "Whale Two", "notebook": "02_basic_cnn",
        "accelerator": accelerator, "internet": False, "private": True,
        "datasets": ["weights", "someone/else"], "kernels": ["whale-one"],
    }  # fmt: skip
    metadata = kaggle_stage.kernel_metadata(kernel, "me", "happy-whale-and-dolphin", "me/lib")
    assert metadata["id"] == "me/whale-two"
    assert metadata["code_file"] == "whale-two.ipynb"
    assert (metadata["language"], metadata["kernel_type"]) == ("python", "notebook")
    assert (metadata["enable_gpu"], metadata["enable_tpu"]) == (gpu, tpu)
    assert metadata["enable_internet"] is False and metadata["is_private"] is True
    assert metadata["dataset_sources"] == ["me/lib", "me/weights", "someone/else"]
    assert metadata["kernel_sources"] == ["me/whale-one"]
    assert metadata["competition_sources"] == ["happy-whale-and-dolphin"]
    assert metadata.get("machine_shape") == shape
    assert "docker_image" not in metadata  # a pinned image with a TPU shape runs on CPU


def test_configured_owner_order(tmp_path):
    assert (
        kaggle_metadata.configured_owner({"KAGGLE_USERNAME": "alice", "HOME": str(tmp_path)})
        == "alice"
    )
    config = tmp_path / "config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "bob", "key": "k"}))
    environ = {"KAGGLE_CONFIG_DIR": str(config), "HOME": str(tmp_path)}
    assert kaggle_metadata.configured_owner(environ) == "bob"
    assert kaggle_metadata.configured_owner({"HOME": str(tmp_path)}) is None


# --- staging ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_writes_kernels_library_and_summary(staged):
    summary = json.loads((staged / "stage.json").read_text())
    assert summary["owner"] == OWNER and summary["kernels"] == SLUGS
    library = staged / "whaleutils-library"
    wheels = sorted(p.name for p in library.glob("*.whl"))
    assert wheels == summary["library"]["files"]
    (own,) = [w for w in wheels if w.startswith("whaleutils-")]
    with zipfile.ZipFile(library / own) as wheel:  # every resource, e.g. review.html, packaged
        packaged = {Path(name).name for name in wheel.namelist() if "/resources/" in name}
    resources = Path(kaggle_stage.__file__).parents[1] / "resources"  # whaleutils/resources
    assert {p.name for p in resources.iterdir() if p.is_file()} <= packaged
    if WHEELHOUSE is not None:
        assert any(w.startswith("efficientnet-1.1.1") for w in wheels)
        assert any(w.lower().startswith("keras_applications-1.0.8") for w in wheels)
    else:
        assert len(wheels) == 1
    dataset = json.loads((library / "dataset-metadata.json").read_text())
    assert dataset["id"] == f"{OWNER}/whaleutils-library"
    for slug in SLUGS:
        metadata = json.loads((staged / slug / "kernel-metadata.json").read_text())
        assert metadata["id"] == f"{OWNER}/{slug}"
        assert (staged / slug / metadata["code_file"]).is_file()
        assert metadata["dataset_sources"][0] == f"{OWNER}/whaleutils-library"
    training = json.loads(
        (staged / "happywhale-04-effnet-arcface" / "kernel-metadata.json").read_text()
    )
    assert (training["enable_tpu"], training["machine_shape"]) == (True, "TpuV5E8")


@pytest.mark.parametrize("slug, notebook, fold", KERNELS)
@pytest.mark.slow
def test_staged_notebook_has_bootstrap_and_kaggle_parameters(staged, slug, notebook, fold):
    path = staged / slug / f"{slug}.ipynb"
    staged_nb = nbformat.read(path, as_version=4)
    nbformat.validate(staged_nb)
    code = [c for c in staged_nb.cells if c.cell_type == "code"]
    assert "kaggle-bootstrap" in code[0].metadata["tags"]
    assert f"{OWNER}/whaleutils-library" in code[0].source
    tags = [c.metadata.get("tags", []) for c in code]
    assert sum("parameters" in t for t in tags) == 1
    assert sum("injected-parameters" in t for t in tags) == 1
    assert all(not c.outputs and c.execution_count is None for c in code)
    injected = injected_parameters(path)
    assert injected["out_dir"] == f"/kaggle/working/{notebook}"
    profile = runner.load_profile("kaggle")
    assert {k: injected[k] for k in profile[notebook]} == profile[notebook]
    if notebook == "00_crop_cache":  # no fold; the boxes every other kernel is given
        assert injected["boxes"] == profile["_common"]["boxes"] and "crop_cache" not in injected
    elif notebook != "01_eda":  # 01 has no fold; every other notebook gets the profile's,
        common = {**profile["_common"], "fold": fold}  # the fold kernels their own fold
        declared = runner.declared_parameters(notebook)  # 05, 06: the split their model records
        assert {k: injected[k] for k in common if k in declared} == {
            k: v for k, v in common.items() if k in declared
        }
    if notebook in runner.INPUTS:
        assert injected["inputs_dir"] == "/kaggle/input"
    if notebook == "04_effnet_arcface":  # the paper's settings: the notebook's defaults
        runs_with = {**runner.notebook_defaults(notebook), **injected}
        assert (runs_with["backbone"], runs_with["image_size"], runs_with["epochs"]) == (
            "keras-efficientnet-b5",
            380,
            30,
        )
        assert runs_with["weights"] == "noisy-student"
        assert runs_with["backend"] == runs_with["mixed_precision"] == "auto"  # JAX on the TPU


@pytest.mark.slow
def test_bootstrap_installs_the_wheels_offline_and_whaleutils_imports(staged, tmp_path):
    """The bootstrap cell, run against a mounted copy of the library dataset, installs the
    wheels with pip (no index) and the installed whaleutils works, resources included."""
    mounted = tmp_path / "input" / "datasets" / OWNER / "whaleutils-library"
    shutil.copytree(staged / "whaleutils-library", mounted)
    staged_nb = kaggle_stage.staged_notebook(
        "01_eda", {}, f"{OWNER}/whaleutils-library", tmp_path / "input"
    )
    bootstrap = next(
        c.source for c in staged_nb.cells if "kaggle-bootstrap" in c.metadata.get("tags", [])
    )
    site = tmp_path / "site"
    environ = {
        **os.environ,
        "PIP_TARGET": str(site),
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    subprocess.run([sys.executable, "-c", bootstrap], env=environ, check=True, timeout=300)
    pinned = "import efficientnet, keras_applications\n" if WHEELHOUSE else ""
    check = pinned + (
        "import whaleutils\n"
        "from whaleutils.datasets import synth\n"
        "print(whaleutils.__file__)\n"
        "print(len(synth.load_profile()['species']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True, text=True, timeout=120, check=True, cwd=tmp_path,
    )  # fmt: skip
    installed_at, species = result.stdout.split()
    assert Path(installed_at).is_relative_to(site)
    assert int(species) > 0


def test_pinned_wheels_come_only_from_the_wheelhouse(tmp_path):
    """With a wheelhouse, pip looks nowhere else: a wheel missing there is an error naming it
    (and no download is tried)."""
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    with pytest.raises(RuntimeError, match=r"efficientnet==1\.1\.1"):
        kaggle_stage.download_wheels(tmp_path / "out", ["efficientnet==1.1.1"], wheelhouse=empty)
    if WHEELHOUSE is not None:
        files = kaggle_stage.download_wheels(tmp_path / "out", ["efficientnet==1.1.1"], WHEELHOUSE)
        assert files == ["efficientnet-1.1.1-py3-none-any.whl"]


def test_bootstrap_without_the_dataset_says_what_to_attach(tmp_path):
    staged_nb = kaggle_stage.staged_notebook(
        "01_eda", {}, "me/whaleutils-library", tmp_path / "empty"
    )
    bootstrap = next(
        c.source for c in staged_nb.cells if "kaggle-bootstrap" in c.metadata.get("tags", [])
    )
    result = subprocess.run(
        [sys.executable, "-c", bootstrap], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "add the dataset me/whaleutils-library as an input" in result.stderr


@pytest.mark.slow
def test_stage_never_overwrites_a_foreign_folder_but_replaces_its_own(tmp_path, monkeypatch):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier stage"):
        kaggle_stage.stage(foreign, owner=OWNER, build_wheels=False)
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "stage"
    kaggle_stage.stage(out, owner=OWNER, build_wheels=False)
    (out / "happywhale-01-eda" / "stale.txt").write_text("from an earlier stage")
    kaggle_stage.stage(out, owner="someone-else", build_wheels=False)
    assert not (out / "happywhale-01-eda" / "stale.txt").exists()
    assert json.loads((out / "stage.json").read_text())["owner"] == "someone-else"
    # a folder holding a stage.json and the user's files: nothing removed, one line
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="holds notes.txt, which no stage wrote"):
        kaggle_stage.stage(out, owner=OWNER, build_wheels=False)
    assert (out / "notes.txt").read_text() == "keep me"
    (out / "notes.txt").unlink()
    mine = tmp_path / "mine2"
    mine.mkdir()
    (mine / "stage.json").write_text("[1, 2]")  # any stage.json
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an earlier stage"):
        kaggle_stage.stage(mine, owner=OWNER, build_wheels=False)
    assert (mine / "thesis.tex").read_text() == "keep me"
    # a stage that fails midway leaves the earlier stage as it was, and nothing beside it
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    def cut(kernels):  # called once every kernel is staged: a failure at the very end
        raise RuntimeError("cut short")

    monkeypatch.setattr(kaggle_stage, "canary_kernel", cut)
    with pytest.raises(RuntimeError, match="cut short"):
        kaggle_stage.stage(out, owner="a-third-owner", build_wheels=False)
    assert json.loads((out / "stage.json").read_text())["owner"] == "someone-else"
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stage_without_owner_explains(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ValueError, match="pass --owner USER"):
        kaggle_stage.stage(tmp_path / "stage", build_wheels=False)


def test_stage_rejects_a_profile_parameter_the_notebook_lacks(tmp_path, monkeypatch):
    real = runner.load_profile

    def with_typo(profile):
        parameters = real(profile)
        parameters["02_basic_cnn"] = {**parameters["02_basic_cnn"], "epochz": 3}
        return parameters

    monkeypatch.setattr(runner, "load_profile", with_typo)
    with pytest.raises(kaggle_metadata.MetadataError, match=r"02_basic_cnn.yaml sets \['epochz'\]"):
        kaggle_stage.stage(tmp_path / "stage", owner=OWNER, build_wheels=False)


# --- pushing through the real kaggle CLI -------------------------------------------------------


@pytest.mark.slow
def test_push_sends_every_kernel_in_order(staged, kaggle_env, capsys):
    fake = kaggle_env({"SaveKernel": saved})
    assert cli.main(["kaggle", "push", "--stage", str(staged)]) == 0
    bodies = [r.json() for r in fake.named("SaveKernel")]
    assert [b["slug"] for b in bodies] == [f"{OWNER}/{s}" for s in SLUGS]
    out = capsys.readouterr().out
    for slug in SLUGS:
        assert f"{OWNER}/{slug}: pushed http://localhost/code/{OWNER}/{slug}" in out
    blend = bodies[-1]
    assert (blend["language"], blend["kernelType"], blend["newTitle"]) == (
        "python",
        "notebook",
        "Happywhale 07 Blend",
    )
    assert blend["datasetDataSources"] == [
        f"{OWNER}/whaleutils-library",
        f"{OWNER}/happywhale-detic-boxes",
    ]
    assert blend["competitionDataSources"] == ["happy-whale-and-dolphin"]
    assert blend["kernelDataSources"] == [f"{OWNER}/{s}" for s in [SLUGS[0], *TRAINING]]
    assert blend["enableGpu"] is False and not blend.get("machineShape")
    assert not blend.get("enableInternet", False)
    effnet = bodies[SLUGS.index(EFFNET)]
    assert effnet["datasetDataSources"] == [
        f"{OWNER}/whaleutils-library",
        f"{OWNER}/happywhale-backbone-weights",
        f"{OWNER}/happywhale-detic-boxes",
    ]
    notebook = nbformat.reads(effnet["text"], as_version=4)
    tags = [c.metadata.get("tags", []) for c in notebook.cells]
    assert sum("parameters" in t for t in tags) == 1
    injected = next(
        c.source for c, t in zip(notebook.cells, tags, strict=True) if "injected-parameters" in t
    )
    assert 'out_dir = "/kaggle/working/04_effnet_arcface"' in injected
    assert 'knn_rule = "best"' in injected  # the profile's own value
    defaults = next(
        c.source for c, t in zip(notebook.cells, tags, strict=True) if "parameters" in t
    )  # the paper's backbone is the notebook's default, which the profile does not restate
    assert 'backbone = "keras-efficientnet-b5"' in defaults and "backbone" not in injected
    assert effnet["enableTpu"] is True and effnet["machineShape"] == "TpuV5E8"


@pytest.mark.slow
def test_push_detects_a_server_side_error_the_cli_exits_0_on(staged, kaggle_env, capsys):
    def refuse_gradcam(request):
        if request.json()["slug"].endswith("05-gradcam"):
            return 200, {"error": "Notebook quota exceeded"}
        return saved(request)

    fake = kaggle_env({"SaveKernel": refuse_gradcam})
    gradcam, robustness = "happywhale-05-gradcam", "happywhale-06-robustness"
    code = cli.main(["kaggle", "push", "--stage", str(staged), "--only", gradcam, robustness])
    assert code == 1
    assert len(fake.named("SaveKernel")) == 2  # the failure does not stop the others
    captured = capsys.readouterr()
    assert f"{OWNER}/{gradcam}: FAILED: Kernel push error: Notebook quota exceeded" in captured.err
    assert f"{OWNER}/{robustness}: pushed" in captured.out
    assert "1 of 2 pushes failed" in captured.err


@pytest.mark.slow
def test_push_fails_on_http_errors_and_invalid_sources(staged, kaggle_env):
    kaggle_env({"SaveKernel": lambda request: (403, {"code": 403, "message": "Permission denied"})})
    [denied] = kaggle_push.push(staged, only=[SLUGS[0]], timeout=120)
    assert (
        not denied.ok and "exit code 1" in denied.message and "Permission denied" in denied.message
    )

    def missing_weights(request):
        status, payload = saved(request)
        return status, {
            **payload,
            "invalidDatasetSources": [f"{OWNER}/happywhale-backbone-weights"],
        }

    kaggle_env({"SaveKernel": missing_weights})
    [pushed] = kaggle_push.push(staged, only=[EFFNET], timeout=120)
    assert not pushed.ok and "happywhale-backbone-weights" in pushed.message


@pytest.mark.slow
def test_push_with_library_creates_the_dataset_when_it_is_new(staged, kaggle_env):
    tokens = {}

    def start_upload(request):
        token = f"token-{len(tokens)}"
        tokens[token] = request.json()["name"]
        return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}

    def created(request):
        return 200, {
            "status": "ok",
            "url": f"http://localhost/datasets/{OWNER}/whaleutils-library",
            "ref": "x",
        }

    responses = {"StartBlobUpload": start_upload, "CreateDataset": created, "SaveKernel": saved}
    responses |= {f"token-{i}": (lambda request: (200, {})) for i in range(10)}
    fake = kaggle_env(responses)  # no CreateDatasetVersion: answers 404, the dataset is new
    results = kaggle_push.push(staged, only=[SLUGS[0]], with_library=True, timeout=120)
    assert [r.ok for r in results] == [True, True], [r.line() for r in results]
    assert results[0].url == f"http://localhost/datasets/{OWNER}/whaleutils-library"
    names = [r.name for r in fake.requests]
    assert "CreateDatasetVersion" in names and names.index("CreateDataset") > names.index(
        "CreateDatasetVersion"
    )
    assert names[-1] == "SaveKernel"  # the library lands before the kernels
    library = staged / "whaleutils-library"
    # The CLI uploads each file for the version attempt, then for the creation resumes them
    # (an empty PUT asks how much arrived): the bytes arrive once, intact.
    uploads = {tokens[r.name]: r.body for r in fake.requests if r.method == "PUT" and r.body}
    wheels = {p.name: p.read_bytes() for p in library.glob("*.whl")}
    assert {name: uploads[name] for name in wheels} == wheels  # every wheel uploaded intact
    create = fake.named("CreateDataset")[0].json()
    assert create["ownerSlug"] == OWNER and create["slug"] == "whaleutils-library"


def test_push_requires_a_stage(tmp_path):
    with pytest.raises(FileNotFoundError, match="stage first"):
        kaggle_push.push(tmp_path)


@pytest.mark.slow
def test_a_crafted_stage_sends_no_other_folder_to_kaggle(tmp_path):
    """stage.json names the folders pushed: a name that is a path, or a link, is refused
    before the kaggle CLI is called (a fresh hostile pass: push is not in issue 32's list)."""
    stage = tmp_path / "stage"
    kaggle_stage.stage(stage, owner=OWNER, build_wheels=False)
    summary = json.loads((stage / "stage.json").read_text())
    (tmp_path / "private").mkdir()
    (stage / "link").symlink_to(tmp_path / "private")
    for kernels, message in [
        (["../private"], "'../private' is not a staged folder's name"),
        ([str(tmp_path / "private")], "is not a staged folder's name"),
        (["link"], "link is not a folder of the stage"),
        (["not-there"], "not-there is not a folder of the stage"),
        ("abc", "kernels must be a list of staged folders"),
    ]:
        (stage / "stage.json").write_text(json.dumps({**summary, "kernels": kernels}))
        with pytest.raises(ValueError, match=message):
            kaggle_push.push(stage)
    (stage / "stage.json").write_text("[]")
    with pytest.raises(ValueError, match="stage.json: must hold an object"):
        kaggle_push.push(stage)


CANARY = "happywhale-04-effnet-arcface-canary"


@pytest.mark.slow
def test_staging_adds_the_canary_kernel_04_in_minutes(tmp_path):
    """Kernel 04's canary: the same notebook, accelerator, data and weights, one epoch on about
    2,000 training photos; no other kernel reads it (not in the blend's sources)."""
    summary = kaggle_stage.stage(tmp_path / "stage", owner=OWNER, build_wheels=False)
    assert summary["canary"] == CANARY and CANARY not in summary["kernels"]
    folder = tmp_path / "stage" / CANARY
    metadata = json.loads((folder / "kernel-metadata.json").read_text())
    main = json.loads((tmp_path / "stage" / EFFNET / "kernel-metadata.json").read_text())
    assert metadata["enable_tpu"] and metadata["machine_shape"] == main["machine_shape"]
    assert metadata["dataset_sources"] == main["dataset_sources"]
    injected = {
        **runner.notebook_defaults("04_effnet_arcface"),
        **injected_parameters(folder / f"{CANARY}.ipynb"),
    }
    assert injected["epochs"] == 1 and injected["max_train_images"] == 2000
    assert injected["image_size"] == 380 and injected["backbone"] == "keras-efficientnet-b5"
    # it reads the crop cache kernel's output, by name, as the long runs do
    assert (
        injected["crop_cache"] == "00_crop_cache" and injected["boxes"] == "happywhale-detic-boxes"
    )
    assert metadata["kernel_sources"] == main["kernel_sources"] == [f"{OWNER}/{SLUGS[0]}"]
    cache = {
        **runner.notebook_defaults("00_crop_cache"),
        **injected_parameters(tmp_path / "stage" / SLUGS[0] / f"{SLUGS[0]}.ipynb"),
    }
    assert (
        cache["image_size"] == 380 and cache["box_jitter"] == injected["augmentation"]["box_jitter"]
    )
    blend = json.loads((tmp_path / "stage" / SLUGS[-1] / "kernel-metadata.json").read_text())
    assert not any(CANARY in source for source in blend["kernel_sources"])


@pytest.mark.slow
def test_push_can_skip_the_finished_cache_kernel(staged, kaggle_env, capsys):
    fake = kaggle_env({"SaveKernel": saved})
    assert cli.main(["kaggle", "push", "--stage", str(staged), "--skip", SLUGS[0]]) == 0
    assert [r.json()["slug"] for r in fake.named("SaveKernel")] == [
        f"{OWNER}/{s}" for s in SLUGS[1:]
    ]
    with pytest.raises(ValueError, match=r"not staged in .*\['happywhale-99-nothing'\]"):
        kaggle_push.push(staged, skip=["happywhale-99-nothing"])


@pytest.mark.slow
def test_the_canary_is_pushed_only_when_named(staged, kaggle_env):
    fake = kaggle_env({"SaveKernel": saved})
    [pushed] = kaggle_push.push(staged, only=[CANARY], timeout=120)
    assert pushed.ok and pushed.name == f"{OWNER}/{CANARY}"
    assert [r.json()["slug"] for r in fake.named("SaveKernel")] == [f"{OWNER}/{CANARY}"]
    with pytest.raises(ValueError, match="not staged"):
        kaggle_push.push(staged, only=["happywhale-99-nothing"])


@pytest.mark.slow
def test_the_canarys_settings_run_notebook_04_to_its_end(small_synth, tmp_path):
    """The canary's own parameters (one epoch, no warm-up, no periodic snapshots, a training
    subset, a one-hour session) over the smoke profile: every cell of notebook 04 runs and
    writes its outputs, as the canary must on the TPU."""
    summary = runner.run(
        "smoke", str(small_synth), str(tmp_path / "runs"), only=["04_effnet_arcface"],
        overrides={**kaggle_stage.CANARY_PARAMETERS, "max_train_images": 60}, variant="canary",
    )  # fmt: skip
    assert [(n["name"], n["status"]) for n in summary["notebooks"]] == [
        ("04_effnet_arcface-canary", "ok")
    ]
    folder = tmp_path / "runs" / "smoke" / "04_effnet_arcface-canary"
    log = pd.read_csv(folder / "log.csv")
    assert log["epoch"].tolist() == [0] and (log["images_per_second"] > 0).all()
    assert runner.outputs.outputs_complete(folder)
