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
    with pytest.raises(ValueError, match="foreign.json: not a COCO file"):
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
