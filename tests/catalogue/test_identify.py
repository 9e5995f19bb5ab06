"""identify (match photos against a catalogue) and the review page's data."""

import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_catalogue
from PIL import Image

from whaleutils import cli
from whaleutils.catalogue import catalogue_index, identify, review
from whaleutils.contracts import caches, outputs
from whaleutils.datasets import data, encounters
from whaleutils.images.photos import prepare as prepare_photo
from whaleutils.retrieval import answers, fusion
from whaleutils.retrieval import local_features as lf
from whaleutils.training import models


def make_run_dir(folder):
    """A trained notebook's output folder as identify reads it: an embedding model (ImageNet
    features, a random projection), the KNN settings in scores.json and the TTA in
    train.npz."""
    from whaleutils.retrieval import embed

    folder.mkdir(parents=True)
    _, embedding_model = models.build_model(
        "efficientnet-lite0", 5, 64, "imagenet", embedding_dim=16, embedding_batchnorm=False
    )
    embedding_model.save(folder / outputs.EMBEDDING_MODEL)
    settings = {"k": 10, "threshold": 1e-4, "rule": "max", "valid": {"map5": 0.5}}
    (folder / outputs.SCORES).write_text(json.dumps(settings))
    unit = np.eye(1, 16, dtype=np.float32)
    embed.save_embeddings(folder / "train.npz", ["a.jpg"], unit, ["x"], tta="flip")
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("run") / "04_effnet_arcface")


@pytest.fixture
def catalogue(small_synth, tmp_path):
    """A copy of the small synthetic set's train part (enroll writes into it)."""
    return copy_catalogue(small_synth, tmp_path / "catalogue")


def test_a_catalogue_photo_is_found_as_its_own_individual(run_dir, catalogue, tmp_path):
    """Given the same box as in the catalogue, a catalogue photo is its own nearest match;
    without boxes, gallery and query photos are both whole (framed alike)."""
    identifier = identify.Identifier(run_dir, catalogue, tmp_path / "cache", crop_to_box=True)
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    assert frame["box"].str.len().gt(0).all()  # the synthetic set has boxes
    photos = [catalogue / "train_images" / name for name in frame["image"][:3]]
    boxes = dict(zip(frame["image"], frame["box"].map(data.parse_box), strict=True))
    matches = identifier.match(photos, top=5, boxes=boxes)
    # then the best-matching catalogue photo's encounter columns, as the catalogue has them
    assert list(matches.columns) == identify.MATCH_COLUMNS + [
        f"catalogue_{column}" for column in encounters.ENCOUNTER_COLUMNS
    ]
    by_image = frame.set_index("image")
    for row in matches.itertuples():
        assert row.catalogue_date == by_image.loc[row.catalogue_photo, "date"]
        assert row.catalogue_viewpoint == by_image.loc[row.catalogue_photo, "viewpoint"]
    for photo, individual in zip(photos, frame["individual_id"][:3], strict=True):
        rows = matches[matches["photo"] == str(photo)]
        assert rows["rank"].tolist() == list(range(1, len(rows) + 1)) and len(rows) <= 5
        assert rows["individual_id"].is_unique
        best = rows.iloc[0]
        assert best["individual_id"] == individual and best["catalogue_photo"] == photo.name
        assert best["similarity"] == pytest.approx(1.0, abs=1e-5)  # the same photo
        assert not best["new_individual"]  # distance 0 is within any threshold
        assert (np.diff(rows["similarity"]) <= 1e-6).all()  # max rule: best first
    assert identifier.skipped.empty
    whole = identifier.match(photos[:1])  # the whole photo, not the catalogue's crop
    assert whole["similarity"].iloc[0] < 0.999
    uncropped = identify.Identifier(run_dir, catalogue, tmp_path / "cache")
    assert uncropped.match(photos[:1])["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="need an Identifier made with crop_to_box=True"):
        uncropped.match(photos[:1], boxes=boxes)


@pytest.mark.slow
def test_a_runs_model_is_loaded_once_per_process_by_its_files_digest(
    run_dir, catalogue, tmp_path, monkeypatch
):
    """A second Identifier of the run, or of a copy of it, reuses the loaded model (and its
    traced predict); a run whose model file differs loads its own; only the newest
    LOADED_MODELS_KEPT are kept."""
    first = identify.Identifier(run_dir, catalogue, None)
    copy = tmp_path / "copy" / run_dir.name
    shutil.copytree(run_dir, copy)
    assert identify.Identifier(copy, catalogue, None).embedder.model is first.embedder.model
    other = tmp_path / "other" / run_dir.name
    shutil.copytree(run_dir, other)
    model = models.load_model(other / outputs.EMBEDDING_MODEL)
    model.layers[-1].set_weights([w * 2 for w in model.layers[-1].get_weights()])
    model.save(other / outputs.EMBEDDING_MODEL)
    changed = identify.Identifier(other, catalogue, None)
    assert changed.embedder.model is not first.embedder.model
    monkeypatch.setattr(identify, "LOADED_MODELS_KEPT", 1)
    identify.Identifier(run_dir, catalogue, None)
    assert list(identify._LOADED_MODELS) == [data.file_sha256(run_dir / outputs.EMBEDDING_MODEL)]


def test_a_photo_not_in_the_catalogue_is_new_by_the_runs_threshold(run_dir, catalogue, tmp_path):
    """The run's threshold is a cosine distance of 1e-4: a mirrored, darkened copy of a
    catalogue photo lies farther than that from everything."""
    identifier = identify.Identifier(run_dir, catalogue, None)
    name = pd.read_csv(catalogue / "train.csv")["image"][0]
    changed = np.asarray(Image.open(catalogue / "train_images" / name))[:, ::-1] * 0.5
    matches = identifier.match([changed])
    assert matches["photo"].unique().tolist() == ["array-0"]
    assert matches["new_individual"].all()
    assert 1 - matches["similarity"].iloc[0] > 1e-4


def test_a_decompression_bomb_is_refused_unread_and_the_other_photos_matched(
    run_dir, catalogue, tmp_path, capsys
):
    from conftest import bomb_png

    bomb_png(tmp_path / "bomb.png")  # beyond Pillow's own limit (test_photos: both refusals)
    photos = tmp_path / "new"
    photos.mkdir()
    good = pd.read_csv(catalogue / "train.csv")["image"][0]
    shutil.copy(catalogue / "train_images" / good, photos / good)
    shutil.copy(tmp_path / "bomb.png", photos / "bomb.png")
    argv = ["identify", "--model", str(run_dir), "--catalogue", str(catalogue),
            "--photos", str(photos), "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 0
    assert "bomb.png: refused as a decompression bomb" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "out" / "matches.csv")["photo"].unique().tolist() == [
        str(photos / good)
    ]
    # in the catalogue: named, left out, the others matched
    shutil.copy(tmp_path / "bomb.png", catalogue / "train_images" / good)
    argv[argv.index(str(photos))] = str(photos / good)
    assert cli.main([*argv[:-1], str(tmp_path / "again")]) == 0
    assert f"warning: catalogue photo skipped: {catalogue / 'train_images' / good}: refused" in (
        capsys.readouterr().err
    )
    matched = pd.read_csv(tmp_path / "again" / "matches.csv")
    assert len(matched) == 5 and matched["photo"].eq(str(photos / good)).all()


def test_photo_files_takes_files_and_folders_and_names_a_missing_one(tmp_path):
    (tmp_path / "in" / "deeper").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "deeper/c.jpeg", "notes.txt"):
        (tmp_path / "in" / name).write_bytes(b"x")
    found = identify.photo_files([tmp_path / "in", tmp_path / "in" / "notes.txt"])
    assert [p.name for p in found] == ["a.png", "b.JPG", "c.jpeg", "notes.txt"]
    with pytest.raises(FileNotFoundError, match="no such photo or folder: .*nowhere"):
        identify.photo_files([tmp_path / "nowhere"])


def test_boxes_csv_is_read_and_a_bad_row_named(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,box\na.jpg,1 2 30 40\nb.jpg,\n")
    assert data.read_boxes(path) == {"a.jpg": (1, 2, 30, 40)}
    path.write_text("image,box\na.jpg,1 2 30\n")
    with pytest.raises(ValueError, match=r"boxes.csv, row 2 \(a.jpg\)"):
        data.read_boxes(path)


def test_the_catalogue_cache_embeds_only_new_or_changed_photos(run_dir, catalogue, tmp_path):
    cache = tmp_path / "cache"
    first = identify.Identifier(run_dir, catalogue, cache)
    assert first.index.embedded == 60 and (cache / identify.CACHE_FILE).is_file()
    again = identify.Identifier(run_dir, catalogue, cache)
    assert again.index.embedded == 0
    assert np.array_equal(again.index.embeddings, first.index.embeddings)
    name = pd.read_csv(catalogue / "train.csv")["image"][5]
    photo = catalogue / "train_images" / name
    Image.open(photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo, format="JPEG")
    written = (cache / identify.CACHE_FILE).stat().st_mtime_ns
    changed = identify.Identifier(run_dir, catalogue, cache)
    assert changed.index.embedded == 1
    fresh = identify.Identifier(run_dir, catalogue, None)
    # the changed photo embedded alone (eagerly), the fresh ones by predict: rounding apart
    np.testing.assert_allclose(changed.index.embeddings, fresh.index.embeddings, atol=1e-5)
    # updated, not rebuilt: the one new embedding is a part beside the file, left as it was
    assert (cache / identify.CACHE_FILE).stat().st_mtime_ns == written
    assert len(caches.part_files(cache / identify.CACHE_FILE)) == 1
    table = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    table.drop(index=range(10, 20)).to_csv(catalogue / "train.csv", index=False)
    smaller = identify.Identifier(run_dir, catalogue, cache)  # 10 photos gone: over a tenth
    assert smaller.index.embedded == 0 and len(smaller.index.table) == 50
    stored = np.load(cache / identify.CACHE_FILE)["keys"]
    assert len(stored) == 50 and not caches.part_files(cache / identify.CACHE_FILE)


@pytest.mark.slow
def test_describing_killed_midway_resumes_losing_at_most_one_chunk(run_dir, catalogue, tmp_path):
    """A describe (embeddings and local features) killed with SIGKILL after some chunks were
    saved computes, rerun, only what those chunks do not hold, and gives what one uninterrupted
    describe gives; the parts are folded into the two cache files."""
    cache = tmp_path / "cache"
    # from the third chunk on each read waits 2 s: the kill lands after two chunks were saved
    # (maybe between a chunk's two part files), never after the last
    script = textwrap.dedent(f"""
        import time
        from whaleutils.catalogue import catalogue_index as ci
        from whaleutils.retrieval import local_features as lf
        from whaleutils.training import models
        ci.DESCRIBE_CHUNK = 8
        read, calls = ci.PhotoEmbedder.read, []
        def slow_read(self, *args, **kwargs):
            calls.append(1)
            if len(calls) >= 3:
                time.sleep(2)
            return read(self, *args, **kwargs)
        ci.PhotoEmbedder.read = slow_read
        model = models.load_model({str(run_dir / outputs.EMBEDDING_MODEL)!r})
        embedder = ci.PhotoEmbedder(model, models.input_image_size(model), fingerprint="m")
        ci.CatalogueIndex.build({str(catalogue)!r}, embedder, {str(cache)!r}, features=lf.FeatureSettings())
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    embedding_file, feature_file = cache / identify.CACHE_FILE, cache / lf.CACHE_FILE
    deadline = time.monotonic() + 300
    while len(caches.part_files(embedding_file)) < 2 and process.poll() is None:
        assert time.monotonic() < deadline, "no chunk was saved in 5 minutes"
        time.sleep(0.01)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "describe ended before it could be killed"
    assert not embedding_file.exists()  # only parts so far: 60 photos are 8 chunks
    saved = sum(len(np.load(part)["keys"]) for part in caches.part_files(embedding_file))
    saved_features = sum(len(np.load(part)["keys"]) for part in caches.part_files(feature_file))
    assert 16 <= saved < 60 and saved - 8 <= saved_features <= saved

    model = models.load_model(run_dir / outputs.EMBEDDING_MODEL)
    embedder = catalogue_index.PhotoEmbedder(model, models.input_image_size(model), fingerprint="m")
    settings = lf.FeatureSettings()
    resumed = catalogue_index.CatalogueIndex.build(catalogue, embedder, cache, features=settings)
    assert resumed.embedded == 60 - saved and resumed.features_computed == 60 - saved_features
    assert embedding_file.is_file() and feature_file.is_file()
    assert not caches.part_files(embedding_file) and not caches.part_files(feature_file)
    whole = catalogue_index.CatalogueIndex.build(catalogue, embedder, None, features=settings)
    # chunks of 8 go eagerly, whole ones by predict: float32 rounding apart
    np.testing.assert_allclose(resumed.embeddings, whole.embeddings, atol=1e-5)
    for got, want in zip(resumed.features, whole.features, strict=True):
        np.testing.assert_array_equal(got.raw, want.raw)
    again = catalogue_index.CatalogueIndex.build(catalogue, embedder, cache, features=settings)
    assert again.embedded == 0 and again.features_computed == 0


def test_the_progress_line_says_how_many_are_left_and_when(capsys):
    assert catalogue_index.duration(40) == "about 40 s"
    assert catalogue_index.duration(720) == "about 12 min"
    assert catalogue_index.duration(3900) == "about 1 h 5 min"
    meter = catalogue_index.Meter(1000, "photos described")
    meter.update(250)
    line = capsys.readouterr().err
    assert line.startswith("\r250 of 1,000 photos described (25%), ") and line.endswith(" left")
    meter.update(750)
    assert capsys.readouterr().err.startswith("\r1,000 of 1,000 photos described (100%)")


def test_an_unreadable_cache_is_set_aside_and_rebuilt(run_dir, catalogue, tmp_path):
    """A cache file that lies about its content (a zip header, then garbage) is named, moved
    aside and rebuilt; two writers never share a temporary file."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / identify.CACHE_FILE).write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    with pytest.warns(UserWarning, match="unreadable embedding cache"):
        rebuilt = identify.Identifier(run_dir, catalogue, cache)
    assert rebuilt.index.embedded == 60
    assert (cache / f"{identify.CACHE_FILE}.unreadable").is_file()
    assert identify.Identifier(run_dir, catalogue, cache).index.embedded == 0  # healed
    assert not list(cache.glob(".*.tmp"))


def test_identify_command_writes_matches_review_and_skipped(run_dir, catalogue, tmp_path, capsys):
    photos = tmp_path / "new"
    photos.mkdir()
    names = pd.read_csv(catalogue / "train.csv")["image"][:2]
    for name in names:
        shutil.copy(catalogue / "train_images" / name, photos / name)
    (photos / "broken.jpg").write_text("not a photo")
    out = tmp_path / "out"
    argv = ["identify", "--model", str(run_dir), "--catalogue", str(catalogue)]
    argv += ["--photos", str(photos), "--out", str(out), "--top", "3"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    cache = identify.default_cache_dir(catalogue)  # under the tests' own XDG_CACHE_HOME
    assert (cache / identify.CACHE_FILE).is_file() and not (out / identify.CACHE_FILE).exists()
    assert str(cache) in printed.out
    assert "broken.jpg: not a readable image" in printed.err
    matches = pd.read_csv(out / "matches.csv")
    assert set(matches["photo"]) == {str(photos / name) for name in names}
    assert matches.groupby("photo")["rank"].max().tolist() == [3, 3]
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["photo"].tolist() == [str(photos / "broken.jpg")]
    page = (out / "review.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 + 2 * 3  # queries and candidates
    assert "__DATA__" not in page and "__TITLE__" not in page
    # the same --out again: refused, unless --force, which replaces identify's files alone
    (out / "notes.txt").write_text("mine")
    (out / "evidence").mkdir()
    (out / "evidence" / "my-figure.png").write_text("mine")  # the user's, in a folder of ours
    (out / "evidence" / "0001-1.jpg").write_text("an earlier identify's drawing")
    assert cli.main(argv) == 2
    assert f"--out {out} is not empty" in capsys.readouterr().err
    only_broken = argv[:-4] + ["--photos", str(photos / "broken.jpg"), "--out", str(out)]
    assert cli.main([*only_broken, "--force"]) == 1  # nothing readable: exit 1
    assert pd.read_csv(out / "matches.csv").empty and not (out / "review.html").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "evidence" / "my-figure.png").read_text() == "mine"
    assert not (out / "evidence" / "0001-1.jpg").exists()
    # never into the catalogue
    inside = argv[:-4] + ["--out", str(catalogue / "results")]
    assert cli.main(inside) == 2
    assert "is inside the catalogue" in capsys.readouterr().err
    assert not (catalogue / "results").exists()


def test_a_small_k_still_gives_the_top_candidates(run_dir, catalogue):
    """The run's rule over its k neighbours orders the first candidates; further ones come from
    a wider search, by best similarity."""
    identifier = identify.Identifier(run_dir, catalogue, None)
    photo = catalogue / "train_images" / pd.read_csv(catalogue / "train.csv")["image"][0]
    wide = identifier.match([photo], top=4)
    identifier.matcher.k = 1
    narrow = identifier.match([photo], top=4)
    assert len(narrow) == 4 and narrow["individual_id"].is_unique
    assert narrow["individual_id"].iloc[0] == wide["individual_id"].iloc[0]  # the nearest
    assert (np.diff(narrow["similarity"]) <= 1e-6).all()


def test_photos_are_read_a_chunk_at_a_time_with_the_same_result(
    run_dir, catalogue, tmp_path, monkeypatch
):
    whole = identify.Identifier(run_dir, catalogue, None)
    (tmp_path / "broken.jpg").write_text("not a photo")
    names = pd.read_csv(catalogue / "train.csv")["image"][:9]
    photos = [catalogue / "train_images" / name for name in names]
    photos.insert(4, tmp_path / "broken.jpg")
    expected = whole.match(photos, top=2)
    monkeypatch.setattr(catalogue_index, "READ_CHUNK", 3)  # 10 photos in 4 chunks
    chunked = identify.Identifier(run_dir, catalogue, None)
    # a chunk of a few photos goes eagerly, a larger one by predict: float32 rounding apart
    np.testing.assert_allclose(chunked.index.embeddings, whole.index.embeddings, atol=1e-5)
    matches = chunked.match(photos, top=2)
    pd.testing.assert_frame_equal(matches, expected, atol=1e-5)
    assert chunked.skipped["photo"].tolist() == [str(tmp_path / "broken.jpg")]


def test_a_run_with_a_flipped_gallery_matches_mirror_images(run_dir, catalogue, tmp_path):
    """A run whose head added mirror images to its gallery: the catalogue's mirror images are
    embedded (and cached) too, so a mirrored catalogue photo is found at similarity 1."""
    flipped = tmp_path / "flipped_run"
    shutil.copytree(run_dir, flipped)
    settings = json.loads((flipped / outputs.SCORES).read_text())
    (flipped / outputs.SCORES).write_text(json.dumps({**settings, "flipped_gallery": True}))
    from whaleutils.retrieval import embed

    unit = np.eye(1, 16, dtype=np.float32)  # no TTA: a photo and its mirror embed differently
    embed.save_embeddings(flipped / "train.npz", ["a.jpg"], unit, ["x"], overwrite=True)
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    frame.assign(box="").to_csv(catalogue / "train.csv", index=False)  # whole photos
    photo = np.asarray(Image.open(catalogue / "train_images" / frame["image"][0]).convert("RGB"))
    mirrored = np.ascontiguousarray(photo[:, ::-1])
    identifier = identify.Identifier(flipped, catalogue, tmp_path / "cache")
    assert identifier.index.mirrored.shape == identifier.index.embeddings.shape
    best = identifier.match([mirrored]).iloc[0]
    assert best["individual_id"] == frame["individual_id"][0]
    assert best["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert best["catalogue_photo"] == frame["image"][0]  # found through its mirror image
    assert identifier.run.knn.flipped_gallery
    settings["flipped_gallery"] = False
    (flipped / outputs.SCORES).write_text(json.dumps(settings))
    unflipped = identify.Identifier(flipped, catalogue, tmp_path / "cache")
    assert unflipped.index.mirrored is None and unflipped.index.embedded == len(frame)
    assert unflipped.match([mirrored]).iloc[0]["similarity"] < 0.999
    again = identify.Identifier(flipped, catalogue, tmp_path / "cache")
    assert again.index.embedded == 0  # its own cache entry


def make_fused_run(
    run_dir: Path,
    folder: Path,
    lnbnn_weight: float = 0.0,
    local_matching: dict | None = None,
    verified_inliers: int = 5,
    encounter_rule: str | None = None,
) -> Path:
    """A copy of ``run_dir`` whose ``local/`` holds a fusion by hand (inliers count, and with
    ``lnbnn_weight`` the standardised LNBNN score: p = sigmoid(3 log(1 + inliers) + w z - 6)),
    threshold 0.5, verified from ``verified_inliers`` (5), a known-precision curve (precision
    0.9 from 0.3, 0.99 from 0.7) and a per-photo answer by hand (:func:`hand_answer`; with
    ``encounter_rule``, also the answer by encounter, by that rule); ``local_matching``: its
    settings (default max_side 160)."""
    fused_run = folder / "run"
    shutil.copytree(run_dir, fused_run)
    local = fused_run / fusion.LOCAL_FOLDER
    local.mkdir()
    n = len(fusion.FUSION_FEATURES)
    weights = [0.0] * n
    weights[fusion.FUSION_FEATURES.index("log_inliers")] = 3.0
    weights[fusion.FUSION_FEATURES.index("lnbnn_z")] = lnbnn_weight
    payload = {"features": list(fusion.FUSION_FEATURES), "mean": [0.0] * n,
               "scale": [1.0] * n, "coefficients": weights, "intercept": -6.0}  # fmt: skip
    (local / fusion.FUSION_FILE).write_text(json.dumps(payload))
    curve = [
        {"threshold": t, "precision": 0.99 if t >= 0.7 else 0.9 if t >= 0.3 else 0.6,
         "recall": 1.0 - t, "right": 0.5}
        for t in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    ]  # fmt: skip
    settings = {"local_matching": local_matching or {"max_side": 160}, "threshold": 0.5,
                "verified_inliers": verified_inliers, "known_precision_curve": curve,
                "photo_answer": hand_answer().to_json()}  # fmt: skip
    if encounter_rule:
        settings["encounter_answer"] = {"rule": encounter_rule, "answer": hand_answer().to_json()}
    (local / outputs.SCORES).write_text(json.dumps({"valid": {"map5": 0.5}, **settings}))
    return fused_run


def hand_answer() -> answers.PhotoAnswer:
    """A per-photo answer by hand: the photo is new with odds exp(2 - 2 log(1 + most
    inliers)) against its candidates, never another whale; validation's shares (0.7, 0, 0.3);
    candidates share by their pair logits (temperature 1)."""
    size = len(answers.PHOTO_FEATURES)
    coefficients = np.zeros((3, size))
    coefficients[2, answers.PHOTO_FEATURES.index("log_inliers_most")] = -2.0
    intercepts = np.array([0.0, -np.inf, 2.0])
    return answers.PhotoAnswer(
        np.zeros(size), np.ones(size), coefficients, intercepts, 1.0, (0.7, 0.0, 0.3)
    )


def turned_catalogue_photo(catalogue: Path, degrees: float = 12) -> np.ndarray:
    """The first catalogue photo, cropped to its box, turned by ``degrees``."""
    import cv2

    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    photo = prepare_photo(
        catalogue / "train_images" / frame["image"][0], data.parse_box(frame["box"][0])
    )
    h, w = photo.shape[:2]
    return cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0), (w, h))


def test_a_run_with_a_fused_head_ranks_by_its_probability(run_dir, catalogue, tmp_path):
    """A run with a fused head by hand (:func:`make_fused_run`): a rotated copy of a catalogue
    photo ranks that photo's individual first, with the most inliers, verified, naming that
    photo; ``local=False`` falls back to the KNN head; ``local=True`` without a fused head is
    refused."""
    fused_run = make_fused_run(run_dir, tmp_path)
    identifier = identify.Identifier(fused_run, catalogue, tmp_path / "cache")
    assert (
        identifier.fused_head is not None
        and (tmp_path / "cache" / "catalogue_features.npz").is_file()
    )
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    turned = turned_catalogue_photo(catalogue)
    matches = identifier.match([turned], top=3)
    assert list(matches.columns)[: len(identify.MATCH_COLUMNS)] == identify.MATCH_COLUMNS
    best = matches.iloc[0]
    assert best["catalogue_date"] == frame["date"][0]  # of the photo the inliers came from
    assert best["individual_id"] == frame["individual_id"][0]
    assert best["inliers"] >= 5 and (matches["inliers"].iloc[1:] < best["inliers"]).all()
    assert best["verified"] and not best["new_individual"]
    assert best["catalogue_photo"] == frame["image"][0]
    assert (np.diff(matches["probability"]) <= 0).all()
    again = identify.Identifier(fused_run, catalogue, tmp_path / "cache")
    assert again.index.features_computed == 0  # read back from the cache
    assert again.index.descriptors.engine == "flann"  # "auto", below faiss' 4 million
    # faiss' compressed index (large catalogues) answers as FLANN's does here
    compressed = identify.Identifier(fused_run, catalogue, tmp_path / "cache", engine="faiss")
    assert compressed.index.descriptors.engine == "faiss"
    faiss_best = compressed.match([turned], top=3).iloc[0]
    assert faiss_best["individual_id"] == best["individual_id"] and faiss_best["verified"]
    assert faiss_best["inliers"] == best["inliers"]  # the geometric check is the same
    plain = identify.Identifier(fused_run, catalogue, tmp_path / "cache", local=False)
    plain_matches = plain.match([turned])
    assert plain.fused_head is None and plain_matches["probability"].isna().all()
    individual_of = dict(zip(frame["image"], frame["individual_id"], strict=True))
    assert (
        plain_matches["catalogue_photo"].map(individual_of) == plain_matches["individual_id"]
    ).all()
    with pytest.raises(FileNotFoundError, match="the run has no fused head"):
        identify.Identifier(run_dir, catalogue, local=True)


def test_the_per_photo_answer_sums_to_one_and_moves_with_the_new_share(
    run_dir, catalogue, tmp_path
):
    """Each photo's shortlisted candidates' ``photo_probability`` and its ``new_probability``
    and ``other_probability`` sum to 1, by :func:`hand_answer` from the photo's most inliers;
    a stated new share moves them by Bayes' rule; the KNN head has none."""
    settings = {"max_side": 160, "shortlist": 3}
    fused_run = make_fused_run(run_dir, tmp_path, local_matching=settings)
    identifier = identify.Identifier(fused_run, catalogue, tmp_path / "cache")
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    photos = [turned_catalogue_photo(catalogue), catalogue / "train_images" / frame["image"][5]]
    matches = identifier.match(photos, top=8)
    for _, rows in matches.groupby("photo"):
        answered = rows["photo_probability"].notna().to_numpy()
        # the shortlist (3 by LNBNN or by similarity) first, NaN beyond it
        assert 3 <= answered.sum() < len(rows) and answered[: answered.sum()].all()
        shown = rows["photo_probability"][answered]
        p_new, p_other = rows["new_probability"].iloc[0], rows["other_probability"].iloc[0]
        assert shown.sum() + p_new + p_other == pytest.approx(1.0) and p_other == 0.0
        most = rows["inliers"][answered].max()
        odds = math.exp(2 - 2 * math.log1p(most))
        assert p_new == pytest.approx(odds / (1 + odds))
        assert (np.diff(shown) <= 1e-12).all()  # in the fused head's order
    moved = identify.Identifier(fused_run, catalogue, tmp_path / "cache", new_share=0.9)
    again = moved.match(photos, top=8)
    odds_ratio = (0.9 / 0.3) / (0.1 / 0.7)
    for (_, before), (_, after) in zip(
        matches.groupby("photo"), again.groupby("photo"), strict=True
    ):
        p, q = before["new_probability"].iloc[0], after["new_probability"].iloc[0]
        assert q / (1 - q) == pytest.approx(p / (1 - p) * odds_ratio)
    with pytest.raises(ValueError, match="new share must be in"):
        identify.Identifier(fused_run, catalogue, tmp_path / "cache", new_share=1.0)
    with pytest.raises(ValueError, match="a precision or a new share needs the run's fused head"):
        identify.Identifier(run_dir, catalogue, new_share=0.5)
    plain = identify.Identifier(fused_run, catalogue, tmp_path / "cache", local=False)
    columns = ["photo_probability", "new_probability", "other_probability"]
    assert plain.match(photos)[columns].isna().all().all()


def test_an_encounters_photos_are_answered_once(run_dir, catalogue, tmp_path, capsys):
    """Two photos of one encounter get one answer (the mean of their pair logits per whale,
    by :func:`hand_answer`), a photo alone its own; the command reads the encounters from
    --metadata and refuses what cannot be answered by encounter, naming why."""
    fused_run = make_fused_run(run_dir, tmp_path, encounter_rule="mean")
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(turned_catalogue_photo(catalogue)).save(folder / "a.png")
    Image.fromarray(turned_catalogue_photo(catalogue, -8)).save(folder / "b.png")
    shutil.copy(catalogue / "train_images" / frame["image"][5], folder / "c.jpg")
    photos = [folder / "a.png", folder / "b.png", folder / "c.jpg"]
    identifier = identify.Identifier(fused_run, catalogue, tmp_path / "cache")
    encounters_of = {str(photos[0]): "E", str(photos[1]): "E"}
    matches = identifier.match(photos, top=3, encounters=encounters_of)
    first = len(identify.MATCH_COLUMNS)
    assert list(matches.columns)[first : first + 4] == identify.ENCOUNTER_MATCH_COLUMNS
    once = matches.drop_duplicates("photo").set_index("photo")
    assert once["encounter"].tolist() == ["E", "E", ""]
    both = once.loc[[str(photos[0]), str(photos[1])]]
    assert both["encounter_answer"].nunique() == 1 and both["encounter_probability"].nunique() == 1
    assert both["encounter_answer"].iloc[0] == frame["individual_id"][0]  # its whale, turned
    alone = once.loc[str(photos[2])]  # its own answer: the photo's
    assert alone["encounter_new_probability"] == pytest.approx(alone["new_probability"])
    plain = identify.Identifier(make_fused_run(run_dir, tmp_path / "plain"), catalogue, None)
    with pytest.raises(ValueError, match="cannot answer by encounter: its validation photos"):
        plain.match(photos, encounters=encounters_of)
    knn = identify.Identifier(fused_run, catalogue, tmp_path / "cache", local=False)
    with pytest.raises(ValueError, match="answering by encounter needs the run's fused head"):
        knn.match(photos, encounters=encounters_of)
    metadata = tmp_path / "metadata.csv"
    metadata.write_text("image,encounter,date\na.png,E,2024-06-30\nb.png,E,2024-06-30\n")
    out = tmp_path / "out"
    argv = ["identify", "--model", str(fused_run), "--catalogue", str(catalogue), "--photos",
            str(folder), "--out", str(out), "--top", "3", "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main([*argv, "--by-encounter", "--metadata", str(metadata)]) == 0
    assert "answered by encounter (rule mean" in capsys.readouterr().out
    written = pd.read_csv(out / "matches.csv", keep_default_na=False)
    assert written["encounter"].tolist()[:6] == ["E"] * 6 and written["encounter"].iloc[-1] == ""
    for extra, message in (
        (["--metadata", str(metadata)], "need --by-encounter"),
        (["--by-encounter"], "needs --metadata or --encounter-minutes"),
        (["--by-encounter", "--metadata", str(metadata), "--encounter-minutes", "5"], "not both"),
        (["--by-encounter", "--encounter-minutes", "0"], "encounter minutes must be a positive"),
    ):
        assert cli.main([*argv, "--force", *extra]) == 2
        assert message in capsys.readouterr().err


def test_only_the_candidate_with_the_most_inliers_is_verified(run_dir, catalogue, tmp_path):
    """The verified tier is measured on each photo's best candidate by inliers, so with a tier
    of one inlier (every candidate with a match reaches it) only that candidate is flagged."""
    fused_run = make_fused_run(run_dir, tmp_path, verified_inliers=1)
    identifier = identify.Identifier(fused_run, catalogue, None)
    matches = identifier.match([turned_catalogue_photo(catalogue)], top=10)
    assert (matches["inliers"] >= 1).sum() >= 2  # more than one candidate reaches the tier
    assert matches["verified"].sum() == 1
    assert matches.loc[matches["verified"], "inliers"].item() == matches["inliers"].max()


def test_how_many_candidates_are_shown_never_changes_the_answer(run_dir, catalogue, tmp_path):
    """``top`` only says how many candidates are listed: with a shortlist of 2 and a fusion
    that weighs the LNBNN score standardised within each query, the first candidates, their
    probabilities and the verdict are the same for top 2 and top 7; more follow after them."""
    settings = {"max_side": 160, "shortlist": 2}
    fused_run = make_fused_run(run_dir, tmp_path, lnbnn_weight=2.0, local_matching=settings)
    identifier = identify.Identifier(fused_run, catalogue, tmp_path / "cache")
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    photos = [turned_catalogue_photo(catalogue), catalogue / "train_images" / frame["image"][5]]
    few, many = identifier.match(photos, top=2), identifier.match(photos, top=7)
    assert few["photo"].nunique() == 2
    for photo, shown in few.groupby("photo"):
        listed = many[many["photo"] == photo].reset_index(drop=True)
        assert len(listed) == 7 > len(shown)
        pd.testing.assert_frame_equal(listed.head(len(shown)), shown.reset_index(drop=True))
        assert listed["individual_id"].is_unique


def test_a_cache_folder_that_cannot_hold_the_cache_is_refused_before_embedding(
    run_dir, catalogue, tmp_path
):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(ValueError, match="a_file is a file, not a folder"):
        identify.Identifier(run_dir, catalogue, tmp_path / "a_file")
    with pytest.raises(ValueError, match="is inside the catalogue"):
        identify.Identifier(run_dir, catalogue, catalogue / "train_images" / "cache")
    assert not (catalogue / "train_images" / "cache").exists()
    for size in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"batch_size must be a whole number >= 1, got {size}"):
            identify.Identifier(run_dir, catalogue, batch_size=size)
    with pytest.raises(ValueError, match="top must be a whole number >= 1, got top=0"):
        identify.Identifier(run_dir, catalogue).match([], top=0)


def test_matched_keypoints_are_the_inliers_at_the_photos_resolution(run_dir, catalogue, tmp_path):
    """The drawing's check is the one ``match`` ran: as many pairs as its inliers, and each
    pair maps the turned copy's keypoint onto the catalogue photo's by the turn itself."""
    import cv2

    identifier = identify.Identifier(make_fused_run(run_dir, tmp_path), catalogue, crop_to_box=True)
    turned = turned_catalogue_photo(catalogue, 12)
    best = identifier.match([turned], top=1).iloc[0]
    query, photo, pairs = identifier.matched_keypoints(turned, best["catalogue_photo"])
    assert query.shape == turned.shape and len(pairs) == best["inliers"]
    h, w = photo.shape[:2]
    back = cv2.invertAffineTransform(cv2.getRotationMatrix2D((w / 2, h / 2), 12, 1.0))
    expected = pairs[:, 0] @ back[:, :2].T + back[:, 2]
    assert np.median(np.linalg.norm(expected - pairs[:, 1], axis=1)) < 2.0  # pixels
    with pytest.raises(ValueError, match="nope.jpg is not a photo of the catalogue"):
        identifier.matched_keypoints(turned, "nope.jpg")
    with pytest.raises(ValueError, match="need the run's fused head"):
        identify.Identifier(run_dir, catalogue).matched_keypoints(turned, best["catalogue_photo"])


def test_known_precision_sets_the_fused_threshold(run_dir, catalogue, tmp_path):
    fused_run = make_fused_run(run_dir, tmp_path)
    assert identify.Identifier(fused_run, catalogue).matcher.threshold == 0.5  # the run's
    assert identify.Identifier(fused_run, catalogue, known_precision=0.95).matcher.threshold == 0.7
    assert identify.Identifier(fused_run, catalogue, known_precision=0.9).matcher.threshold == 0.3
    with pytest.raises(
        ValueError, match=r"scores.json: no threshold .* precision of 0.999 .*0.990"
    ):
        identify.Identifier(fused_run, catalogue, known_precision=0.999)
    with pytest.raises(ValueError, match="needs the run's fused head"):
        identify.Identifier(run_dir, catalogue, known_precision=0.9)


def test_precision_of_the_named_whale_sets_the_threshold_with_its_bound(
    run_dir, catalogue, tmp_path, capsys
):
    """--precision P: the lowest threshold from which on the named whale was right for at least
    P of the validation photos called known, with the 95% Wilson lower bound of that share;
    refused naming the best reachable share, or for a curve without counts."""
    fused_run = make_fused_run(run_dir, tmp_path)
    scores_path = fused_run / fusion.LOCAL_FOLDER / outputs.SCORES
    scores = json.loads(scores_path.read_text())
    old_curve = scores["known_precision_curve"]
    scores["known_precision_curve"] = [
        {"threshold": t, "precision": 0.99, "recall": r, "right": k / n if n else None,
         "called": n, "named_right": k}
        for t, r, n, k in [(0.2, 0.9, 50, 40), (0.4, 0.7, 30, 28), (0.6, 0.5, 20, 19),
                           (0.8, 0.0, 0, 0)]
    ]  # fmt: skip
    scores_path.write_text(json.dumps(scores))
    matcher = identify.Identifier(fused_run, catalogue, precision=0.9).matcher
    assert matcher.threshold == 0.4
    assert matcher.precision["called"] == 30 and matcher.precision["right"] == 28 / 30
    assert (
        matcher.precision["lower_bound"] == pytest.approx(fusion.wilson_lower_bound(28, 30))
        and matcher.precision["lower_bound"] < 28 / 30
    )
    assert identify.Identifier(fused_run, catalogue, precision=0.95).matcher.threshold == 0.6
    with pytest.raises(ValueError, match=r"named whale a precision of 0.96 .*highest is 0.950"):
        identify.Identifier(fused_run, catalogue, precision=0.96)
    with pytest.raises(ValueError, match="not both"):
        identify.Identifier(fused_run, catalogue, known_precision=0.9, precision=0.9)
    with pytest.raises(ValueError, match="needs the run's fused head"):
        identify.Identifier(run_dir, catalogue, precision=0.9)
    argv = ["identify", "--model", str(fused_run), "--catalogue", str(catalogue),
            "--photos", str(catalogue / "train_images"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main([*argv, "--precision", "0.9"]) == 0
    assert "right for 0.933 of the 30 called known (95% Wilson lower bound 0." in (
        capsys.readouterr().out
    )
    scores["known_precision_curve"] = old_curve  # written before the counts were kept
    scores_path.write_text(json.dumps(scores))
    with pytest.raises(ValueError, match="no counts: fit the head again"):
        identify.Identifier(fused_run, catalogue, precision=0.4)


def test_identify_command_draws_the_evidence_of_a_fused_head(run_dir, catalogue, tmp_path, capsys):
    """With a fused head: the matched keypoints of the geometric matches drawn at the photos'
    resolution into OUT/evidence/, named in matches.csv and on the page; --known-precision
    sets the threshold; --evidence 0 draws none."""
    fused_run = make_fused_run(run_dir, tmp_path)
    photo = tmp_path / "turned.png"
    turned = turned_catalogue_photo(catalogue)
    Image.fromarray(turned).save(photo)
    out = tmp_path / "out"
    argv = ["identify", "--model", str(fused_run), "--catalogue", str(catalogue),
            "--photos", str(photo), "--out", str(out), "--top", "3"]  # fmt: skip
    assert cli.main([*argv, "--known-precision", "0.95", "--cache", str(tmp_path / "cache")]) == 0
    assert "known from a best probability of 0.70" in capsys.readouterr().out
    matches = pd.read_csv(out / "matches.csv", keep_default_na=False)
    best = matches.iloc[0]
    assert best["evidence"] == "evidence/0001-1.jpg"
    drawing = np.asarray(Image.open(out / best["evidence"]))
    shown = prepare_photo(catalogue / "train_images" / best["catalogue_photo"])  # whole:
    # without --boxes the catalogue photos are matched whole, as the queries are
    assert drawing.shape[1] == turned.shape[1] + shown.shape[1]  # both at their own size
    drawn = matches[matches["evidence"] != ""]
    assert (drawn["inliers"] >= review.MIN_EVIDENCE_INLIERS).all()
    assert sorted(p.name for p in (out / "evidence").iterdir()) == sorted(
        Path(e).name for e in drawn["evidence"]
    )
    assert '"evidence": "evidence/0001-1.jpg"' in (out / "review.html").read_text()
    again = tmp_path / "again"
    assert cli.main([*argv[:-4], "--out", str(again), "--evidence", "0"]) == 0
    assert not (again / "evidence").exists()
    assert (pd.read_csv(again / "matches.csv", keep_default_na=False)["evidence"] == "").all()
    assert cli.main([*argv, "--force", "--known-precision", "0.999"]) == 2
    assert "no threshold gives the known verdict a precision of 0.999" in capsys.readouterr().err
    assert cli.main([*argv, "--force", "--evidence", "-1"]) == 2


def test_a_damaged_model_file_is_named(run_dir, catalogue, tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / outputs.EMBEDDING_MODEL).write_bytes(b"not a zip")
    argv = ["identify", "--model", str(damaged), "--catalogue", str(catalogue),
            "--photos", str(catalogue / "train_images"), "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 2
    assert "embedding_model.keras: not a Keras model" in capsys.readouterr().err


def photo_set(small_synth: Path, folder: Path, with_test_boxes: bool) -> Path:
    """40 train and 12 test photos of the small synthetic set as a data set of their own, with
    the test photos' boxes (test_boxes.csv) or without."""
    copy_catalogue(small_synth, folder, 40)
    names = data.read_test_images(small_synth)[:12]
    for name in names:
        shutil.copy(small_synth / "test_images" / name, folder / "test_images" / name)
    pd.DataFrame({"image": names, "predictions": ""}).to_csv(
        folder / "sample_submission.csv", index=False
    )
    if with_test_boxes:
        test_boxes = data.read_test_boxes(small_synth)
        test_boxes[test_boxes["image"].isin(names)].to_csv(folder / "test_boxes.csv", index=False)
    return folder


@pytest.mark.parametrize("with_boxes", [True, False], ids=["boxes", "whole"])
@pytest.mark.slow
def test_identify_embeds_photos_as_the_training_notebooks_did(
    run_dir, small_synth, tmp_path, with_boxes
):
    """One photo path: identify's embeddings of a data set's photos are the ones
    ``embed.embed_split`` saved for the notebooks, catalogue (train and valid) and queries
    (test) alike, cropped to their boxes or whole by the split's own rule; and a query stored
    turned a quarter with an EXIF orientation is embedded as the upright photo."""
    from whaleutils.retrieval import embed, splits

    folder = photo_set(small_synth, tmp_path / "set", with_boxes)
    split = splits.load_split(folder, n_folds=3)
    assert split.crop_to_box == with_boxes
    model = models.load_model(run_dir / outputs.EMBEDDING_MODEL)
    saved = embed.embed_split(model, split, 7, tmp_path / "embeddings", tta="flip")
    by_name = {
        **dict(zip(split.train["image"], saved["train"], strict=True)),
        **dict(zip(split.valid["image"], saved["valid"], strict=True)),
    }
    identifier = identify.Identifier(run_dir, folder, None, batch_size=5, crop_to_box=with_boxes)
    expected = np.stack([by_name[name] for name in identifier.index.table["image"]])
    np.testing.assert_allclose(identifier.index.embeddings, expected, atol=2e-5)

    queries = [folder / "test_images" / name for name in split.test["image"]]
    turned = tmp_path / "turned.png"  # the first query's pixels, stored turned, EXIF 6
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(np.rot90(prepare_photo(queries[0]), k=1).copy()).save(turned, exif=exif)
    boxes = data.read_boxes(folder / "test_boxes.csv") if with_boxes else None
    if with_boxes:
        boxes[turned.name] = boxes[queries[0].name]  # its box, in the upright photo's pixels
    identifier.match([*queries, turned], boxes=boxes)
    found = np.stack([identifier.query_embeddings[str(path)] for path in queries])
    np.testing.assert_allclose(found, saved["test"], atol=2e-5)
    np.testing.assert_allclose(
        identifier.query_embeddings[str(turned)], saved["test"][0], atol=2e-5
    )


def test_identify_says_when_its_framing_differs_from_the_runs(run_dir, catalogue, tmp_path, capsys):
    """A run trained on photos cropped to boxes, matched without --boxes: identify says so
    (every photo whole, framed alike, but not as the model learned them); with --boxes not."""
    boxed_run = tmp_path / "boxed_run"
    shutil.copytree(run_dir, boxed_run)
    scores = json.loads((boxed_run / outputs.SCORES).read_text())
    scores["split"] = {"fold": 0, "n_folds": 5, "seed": 0, "crop_to_box": True}
    (boxed_run / outputs.SCORES).write_text(json.dumps(scores))
    name = pd.read_csv(catalogue / "train.csv")["image"][0]
    argv = ["identify", "--model", str(boxed_run), "--catalogue", str(catalogue),
            "--photos", str(catalogue / "train_images" / name)]  # fmt: skip
    assert cli.main([*argv, "--out", str(tmp_path / "whole")]) == 0
    assert (
        "note: the model was trained on photos cropped to boxes; these photos are matched whole"
        in capsys.readouterr().err
    )
    boxes = tmp_path / "boxes.csv"
    pd.read_csv(catalogue / "train.csv").head(1)[["image", "box"]].to_csv(boxes, index=False)
    assert cli.main([*argv, "--out", str(tmp_path / "cropped"), "--boxes", str(boxes)]) == 0
    assert "note:" not in capsys.readouterr().err
    matches = pd.read_csv(tmp_path / "cropped" / "matches.csv")
    assert matches["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)  # its own crop


def test_candidates_can_be_restricted_by_viewpoint_place_and_date(
    run_dir, catalogue, tmp_path, capsys
):
    """A filter leaves only comparable catalogue photos as candidates (the cache still holds
    all of them); with nothing left it says so; on the command line bad values are named."""
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False, dtype=str)
    photos = [catalogue / "train_images" / name for name in frame["image"][:4]]
    everything = identify.Identifier(run_dir, catalogue, tmp_path / "cache")
    assert everything.index.note is None
    left = encounters.CandidateFilter(viewpoints=("left",))
    identifier = identify.Identifier(run_dir, catalogue, tmp_path / "cache", candidates=left)
    assert identifier.index.embedded == 0  # the whole catalogue came from the cache
    assert (identifier.index.table["viewpoint"] == "left").all()
    assert len(identifier.index.table) == int((frame["viewpoint"] == "left").sum())
    assert identifier.index.note.startswith("candidates restricted to viewpoint left: ")
    matches = identifier.match(photos, top=3)
    assert set(matches["catalogue_photo"]) <= set(frame.loc[frame["viewpoint"] == "left", "image"])
    assert (matches["catalogue_viewpoint"] == "left").all()
    # the same photos against the filtered rows of the whole catalogue: the same similarities
    rows = np.flatnonzero(frame["viewpoint"] == "left")
    np.testing.assert_allclose(
        identifier.index.embeddings, everything.index.embeddings[rows], atol=1e-6
    )
    first = frame.iloc[0]
    near = encounters.CandidateFilter(
        near=(float(first["latitude"]), float(first["longitude"])), within_km=1.0
    )
    nearby = identify.Identifier(run_dir, catalogue, tmp_path / "cache", candidates=near)
    assert first["image"] in set(nearby.index.table["image"])
    assert len(nearby.index.table) < len(frame)
    never = encounters.CandidateFilter(between=(date(1990, 1, 1), date(1990, 12, 31)))
    with pytest.raises(ValueError, match="no catalogue photo is left to match: candidates"):
        identify.Identifier(run_dir, catalogue, tmp_path / "cache", candidates=never)

    argv = ["identify", "--model", str(run_dir), "--catalogue", str(catalogue)]
    argv += ["--photos", str(photos[0]), "--out", str(tmp_path / "out")]
    for extra, message in [
        (["--between", "2024-06-01", "June"], "--between: date 'June' is not YYYY-MM-DD"),
        (["--near", "42.3"], "--near '42.3': expected LAT,LON"),
        (["--near", "42.3,-70.1"], "needs both a place (near) and a distance (within)"),
        (["--viewpoint", "sideways"], "unknown viewpoint(s) ['sideways']"),
    ]:
        assert cli.main([*argv, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_fused_head_matches_only_the_photos_a_filter_keeps(run_dir, catalogue, tmp_path):
    fused_run = make_fused_run(run_dir, tmp_path)
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False, dtype=str)
    site = frame["location"][0]
    here = frame[frame["location"] == site]
    near = encounters.CandidateFilter(
        near=(float(here["latitude"].iloc[0]), float(here["longitude"].iloc[0])), within_km=20
    )
    identifier = identify.Identifier(fused_run, catalogue, tmp_path / "cache", candidates=near)
    assert identifier.fused_head is not None
    assert set(identifier.index.table["location"]) == {site} and len(identifier.index.table) < len(
        frame
    )
    assert len(identifier.index.features) == len(identifier.index.table)
    matches = identifier.match([turned_catalogue_photo(catalogue)], top=3)
    assert matches["individual_id"].iloc[0] == frame["individual_id"][0]  # its own site kept
    assert set(matches["individual_id"]) <= set(identifier.index.table["individual_id"])
    assert (matches["catalogue_location"].isin(["", site])).all()
