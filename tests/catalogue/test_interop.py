"""The catalogue in other tools' formats: Wild Me COCO (read back by pycocotools and by our
import), Darwin Core occurrences, capture histories for Program MARK."""

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from conftest import copy_catalogue

from whaleutils import cli
from whaleutils.catalogue import interop
from whaleutils.datasets import data, validate


@pytest.fixture
def catalogue(small_synth, tmp_path):
    return copy_catalogue(small_synth, tmp_path / "catalogue", photos=30)


def test_coco_export_is_read_by_pycocotools_and_imports_back_to_the_same_catalogue(
    catalogue, tmp_path
):
    from pycocotools.coco import COCO

    out = tmp_path / "catalogue.json"
    assert cli.main(["export", "--catalogue", str(catalogue), "--format", "coco",
                     "--out", str(out)]) == 0  # fmt: skip
    coco = COCO(str(out))
    table = pd.read_csv(catalogue / "train.csv", dtype=str, keep_default_na=False)
    assert len(coco.getImgIds()) == len(coco.getAnnIds()) == len(table)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    image = coco.loadImgs([1])[0]
    assert image["file_name"] == table["image"][0] and image["date_captured"] == table["date"][0]
    assert first["name"] == table["individual_id"][0]
    assert first["viewpoint"] == table["viewpoint"][0]
    left, top, right, bottom = data.parse_box(table["box"][0])
    assert first["bbox"] == [left, top, right - left, bottom - top]
    mask = coco.annToMask(first)  # the segmentation is the box
    assert mask.shape == (image["height"], image["width"])
    assert mask.sum() == pytest.approx((right - left) * (bottom - top), rel=0.05)
    assert coco.loadCats([first["category_id"]])[0]["name"] == table["species"][0]
    # as wildlife-datasets reads a Wild Me export: name, one segmentation, viewpoint, date
    document = json.loads(out.read_text())
    assert all(len(a["segmentation"]) == 1 and a["name"] and a["viewpoint"]
               for a in document["annotations"])  # fmt: skip

    imported = tmp_path / "imported"
    argv = ["import", "--format", "coco", "--annotations", str(out)]
    argv += ["--images", str(catalogue / "train_images"), "--out", str(imported)]
    assert cli.main(argv) == 0
    assert (imported / "train.csv").read_bytes() == (catalogue / "train.csv").read_bytes()
    for name in table["image"]:
        assert (imported / "train_images" / name).read_bytes() == (
            catalogue / "train_images" / name
        ).read_bytes()
    assert validate.validate_dataset(imported) == []
    assert cli.main(argv) == 2  # the same --out again: refused, nothing overwritten
    inside = ["export", "--catalogue", str(catalogue), "--format", "dwc"]
    assert cli.main([*inside, "--out", str(catalogue / "occurrences.csv")]) == 2
    assert not (catalogue / "occurrences.csv").exists()  # never into the catalogue it reads
    assert cli.main(["export", "--catalogue", str(catalogue), "--format", "coco",
                     "--out", str(out)]) == 2  # fmt: skip


def test_a_foreign_coco_file_is_read_from_its_standard_fields(catalogue, tmp_path):
    """Without our own cells (another tool's export): species, individual, box, date, place
    and viewpoint come from COCO's fields; unnamed annotations are left out and counted."""
    document = interop.coco_document(catalogue)
    for annotation in document["annotations"]:
        del annotation[interop.COCO_EXTRA]
    document["annotations"][0]["viewpoint"] = "up"  # Wild Me's "up": our "top"
    document["images"][0]["date_captured"] = "2024-06-01 10:20:30"
    document["annotations"][1]["name"] = interop.UNNAMED
    path = tmp_path / "foreign.json"
    path.write_text(json.dumps(document))
    report = interop.read_coco(path, catalogue / "train_images", tmp_path / "new")
    assert report == {"photos": 29, "individuals": report["individuals"], "unnamed": 1}
    table = pd.read_csv(catalogue / "train.csv", dtype=str, keep_default_na=False)
    new = pd.read_csv(tmp_path / "new" / "train.csv", dtype=str, keep_default_na=False)
    assert new["image"].tolist() == table["image"].drop(index=1).tolist()
    kept = table.drop(index=1).reset_index(drop=True)
    assert new["individual_id"].tolist() == kept["individual_id"].tolist()
    assert new["box"].tolist() == kept["box"].tolist()
    assert new["species"].tolist() == kept["species"].tolist()
    assert (
        new["date"][0] == "2024-06-01T10:20:30"
        and new["date"][1:].tolist() == kept["date"][1:].tolist()
    )
    np.testing.assert_allclose(new["latitude"].astype(float), kept["latitude"].astype(float))
    assert new["viewpoint"][0] == "top"

    twice = json.loads(path.read_text())
    twice["annotations"].append({**twice["annotations"][2], "id": 999})
    path.write_text(json.dumps(twice))
    with pytest.raises(ValueError, match=r"annotation 999: photo .* has a second annotation"):
        interop.read_coco(path, catalogue / "train_images", tmp_path / "other")
    missing = json.loads(path.read_text())
    missing["annotations"].pop()
    missing["images"][3]["file_name"] = "nowhere.jpg"
    path.write_text(json.dumps(missing))
    with pytest.raises(ValueError, match="photo nowhere.jpg not found in"):
        interop.read_coco(path, catalogue / "train_images", tmp_path / "other")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="foreign.json: not a readable JSON file"):
        interop.read_coco(path, catalogue / "train_images", tmp_path / "other")
    assert not (tmp_path / "other" / "train.csv").exists()


def test_darwin_core_occurrences_name_organism_event_date_place_and_media(catalogue, tmp_path):
    out = tmp_path / "occurrences.csv"
    assert cli.main(["export", "--catalogue", str(catalogue), "--format", "dwc",
                     "--out", str(out)]) == 0  # fmt: skip
    occurrences = pd.read_csv(out, dtype=str, keep_default_na=False)
    table = pd.read_csv(catalogue / "train.csv", dtype=str, keep_default_na=False)
    assert occurrences.columns.tolist() == list(interop.DARWIN_CORE_COLUMNS)
    assert occurrences["organismID"].tolist() == table["individual_id"].tolist()
    assert occurrences["eventID"].tolist() == table["encounter"].tolist()
    assert occurrences["eventDate"].tolist() == table["date"].tolist()
    assert occurrences["decimalLatitude"].tolist() == table["latitude"].tolist()
    assert occurrences["locality"].tolist() == table["location"].tolist()
    assert (occurrences["geodeticDatum"] == "EPSG:4326").all()
    assert all((catalogue / media).is_file() for media in occurrences["associatedMedia"])
    humpbacks = occurrences[table["species"] == "humpback_whale"]
    assert (humpbacks["scientificName"] == "Megaptera novaeangliae").all()
    properties = json.loads(occurrences["dynamicProperties"][0])
    assert properties == {"viewpoint": table["viewpoint"][0], "box": table["box"][0]}


def test_capture_history_marks_each_individual_in_each_occasion(tmp_path):
    folder = tmp_path / "c"
    (folder / "train_images").mkdir(parents=True)
    pd.DataFrame(
        {
            "image": ["a1", "a2", "b1", "b2", "c1", "u1"],
            "species": "humpback_whale",
            "individual_id": ["A", "A", "B", "B", "C", "C"],
            "date": [
                "2024-01-03",
                "2024-03-30T10:00",
                "2024-01-31",
                "2024-02-01",
                "2024-03-01",
                "",
            ],
        }
    ).to_csv(folder / "train.csv", index=False)
    history, undated = interop.capture_history(folder, "month")
    assert undated == 1
    assert history.columns.tolist() == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert history.loc["A"].tolist() == [1, 0, 1]
    assert history.loc["B"].tolist() == [1, 1, 0]
    assert history.loc["C"].tolist() == [0, 0, 1]
    weekly, _ = interop.capture_history(folder, "28")  # 28-day occasions from Jan 3
    assert weekly.columns.tolist() == ["2024-01-03", "2024-01-31", "2024-02-28", "2024-03-27"]
    assert weekly.loc["B"].tolist() == [0, 1, 0, 0] and weekly.loc["A"].tolist() == [1, 0, 0, 1]
    assert interop.mark_input(history).splitlines() == [
        "/* occasions: 2024-01-01, 2024-02-01, 2024-03-01 */",
        "101 1; /* A */", "110 1; /* B */", "001 1; /* C */",
    ]  # fmt: skip
    assert interop.occasion_starts(date(2023, 12, 31), date(2024, 1, 1), "year") == [
        date(2023, 1, 1), date(2024, 1, 1)
    ]  # fmt: skip
    out = tmp_path / "history.csv"
    assert cli.main(["export", "--catalogue", str(folder), "--format", "capture-history",
                     "--out", str(out), "--occasion", "month"]) == 0  # fmt: skip
    assert pd.read_csv(out, index_col=0).loc["A"].tolist() == [1, 0, 1]
    assert out.with_suffix(".inp").read_text() == interop.mark_input(history)
    with pytest.raises(ValueError, match="occasion must be one of"):
        interop.capture_history(folder, "fortnight")
    pd.DataFrame({"image": ["x"], "species": ["s"], "individual_id": ["X"]}).to_csv(
        folder / "train.csv", index=False
    )
    with pytest.raises(ValueError, match="train.csv has no date column"):
        interop.capture_history(folder)


def hostile_coco_cases(document: dict, tmp_path) -> list[tuple[str, object, str]]:
    """(case, a document or raw text, expected message) for COCO files import must refuse."""
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")

    def changed(change):
        copy = json.loads(json.dumps(document))
        change(copy)
        return copy

    def image(field, value):
        return changed(lambda d: d["images"][0].__setitem__(field, value))

    def annotation(field, value):
        return changed(lambda d: d["annotations"][0].__setitem__(field, value))

    return [
        ("traversal", image("file_name", "../../secret.txt"), "must be a file name directly in"),
        ("absolute", image("file_name", str(secret)), "must be a file name directly in"),
        ("sub-folder", image("file_name", "a/b.jpg"), "must be a file name directly in"),
        ("not text", image("file_name", ["x"]), "must be a file name directly in"),
        ("two image ids", changed(lambda d: d["images"][1].__setitem__("id", 1)),
         "two images have the id 1"),
        ("two annotation ids", changed(lambda d: d["annotations"][1].__setitem__("id", 1)),
         "two annotations have the id 1"),
        ("string annotation", changed(lambda d: d["annotations"].__setitem__(0, "x")),
         "annotations[0] is a str, not an object"),
        ("image_id a list", annotation("image_id", [1]), "image_id '[1]' is not a whole number"),
        ("id a bool", annotation("id", True), "id 'True' is not a whole number"),
        ("bbox huge", "1e400", "bbox value 'inf' is not a finite number"),
        ("bbox short", annotation("bbox", [1, 2]), "is not [x, y, width, height]"),
        ("bbox empty", annotation("bbox", [1, 2, 0, 5]), "has no area"),
        ("gps a list", image("gps_lat_captured", [1]), "gps_lat_captured '[1]' is not a finite"),
        ("images not a list", changed(lambda d: d.__setitem__("images", {})),
         "'images' must be a list"),
        ("formula name", annotation("name", "=HYPERLINK(\"http://x\")"),
         "individual_id '=HYPERLINK"),
        ("deep", "[" * 200_000 + "]" * 200_000, "nested too deeply"),
        ("a list", "[1, 2]", "must hold an object, not list"),
        ("not UTF-8", b"\xff\xfe" + b"\x80" * 2_000_000, "not a readable JSON file"),
    ]  # fmt: skip


def test_a_hostile_coco_file_is_refused_in_one_line_and_nothing_is_written(catalogue, tmp_path):
    """Paths from the file are never trusted (nothing read from outside --images), ids are
    unique whole numbers, numbers finite; each refusal is one short line naming the file, and
    --out is never left half-written (the rerun is not refused as "not empty")."""
    document = interop.coco_document(catalogue)
    for annotation in document["annotations"]:
        del annotation[interop.COCO_EXTRA]
    path, out = tmp_path / "hostile.json", tmp_path / "out"
    for case, payload, message in hostile_coco_cases(document, tmp_path):
        if payload == "1e400":
            text = json.dumps(document).replace(
                json.dumps(document["annotations"][0]["bbox"]), "[1e400, 0, 5, 5]", 1
            )
        elif isinstance(payload, dict):
            text = json.dumps(payload)
        else:
            text = payload
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(ValueError, match="hostile.json") as error:
            interop.read_coco(path, catalogue / "train_images", out)
        assert message in str(error.value), case
        assert len(str(error.value)) < 400 and "\n" not in str(error.value), case
        assert not out.exists(), case
    # a link inside --images that leads out of it is not followed
    (catalogue / "train_images" / "link.jpg").symlink_to(tmp_path / "secret.txt")
    document["images"][0]["file_name"] = "link.jpg"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="link.jpg is a link leading out of"):
        interop.read_coco(path, catalogue / "train_images", out)
    assert not out.exists()
    # a file named as a photo that is not one: refused before anything is written
    (catalogue / "train_images" / "link.jpg").unlink()
    (catalogue / "train_images" / "text.jpg").write_text("not a photo")
    document["images"][0]["file_name"] = "text.jpg"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match="text.jpg: not a readable image"):
        interop.read_coco(path, catalogue / "train_images", out)
    assert not out.exists() and not list(tmp_path.glob(".out.*"))
    # the command: one line, exit 2
    argv = ["import", "--format", "coco", "--annotations", str(path)]
    assert cli.main([*argv, "--images", str(catalogue / "train_images"), "--out", str(out)]) == 2


def test_exports_for_spreadsheets_escape_formulas_and_capture_history_keeps_its_csv(
    catalogue, tmp_path
):
    table = catalogue / "train.csv"
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    frame.loc[0, "location"] = '=HYPERLINK("http://x","y")'
    frame.to_csv(table, index=False)
    out = tmp_path / "occurrences.csv"
    assert interop.write_export(catalogue, out, "dwc")["files"] == [out]
    occurrences = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert occurrences["locality"][0] == '\'=HYPERLINK("http://x","y")'
    assert occurrences["decimalLongitude"][0] == frame["longitude"][0]  # numbers as they are
    with pytest.raises(ValueError, match=r"name the CSV \(e.g. .*hist.csv\)"):
        interop.write_export(catalogue, tmp_path / "hist.inp", "capture-history")
    assert not (tmp_path / "hist.inp").exists()


def test_a_typo_year_is_named_and_a_huge_history_warned_of(tmp_path, capsys):
    folder = tmp_path / "c"
    (folder / "train_images").mkdir(parents=True)
    frame = pd.DataFrame(
        {"image": ["a", "b"], "species": "humpback_whale", "individual_id": ["A", "B"],
         "date": ["0024-06-01", "2024-06-01"]}
    )  # fmt: skip
    frame.to_csv(folder / "train.csv", index=False)
    with pytest.raises(ValueError, match=r"line 2: date '0024-06-01': the year 24 is outside"):
        interop.capture_history(folder, "day")
    problems = validate.validate_dataset(folder, decode_images=False)
    assert any("the year 24 is outside 1850-2100" in p for p in problems)
    frame["date"] = ["9999-12-31", "2024-06-01"]
    frame.to_csv(folder / "train.csv", index=False)
    with pytest.raises(ValueError, match="the year 9999 is outside"):
        interop.capture_history(folder, "month")
    frame["date"] = ["1990-01-01", "2024-06-01"]  # real, but 12,571 daily occasions
    frame.to_csv(folder / "train.csv", index=False)
    out = tmp_path / "daily.csv"
    argv = ["export", "--catalogue", str(folder), "--format", "capture-history", "--out"]
    assert cli.main([*argv, str(out), "--occasion", "day"]) == 0
    assert "warning: 12571 occasions from 1990-01-01 to 2024-06-01" in capsys.readouterr().err


def test_an_import_that_fails_while_copying_leaves_no_catalogue(catalogue, tmp_path, monkeypatch):
    """A failure (a full disk, a kill) in the middle of copying the photos: --out is not
    there, nothing half-written beside it, and the rerun imports."""
    path, out = tmp_path / "c.json", tmp_path / "out"
    path.write_text(json.dumps(interop.coco_document(catalogue)))
    real, calls = interop.shutil.copyfile, {"n": 0}

    def full_disk(source, target, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device", str(target))
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(interop.shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="No space left"):
        interop.read_coco(path, catalogue / "train_images", out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(interop.shutil, "copyfile", real)
    assert interop.read_coco(path, catalogue / "train_images", out)["photos"] == 30
    assert validate.validate_dataset(out) == []
