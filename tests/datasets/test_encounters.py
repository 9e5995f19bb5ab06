"""Encounter metadata: checked by row, written by the synthetic set, kept by the folds and the
filters of identify, taken from EXIF by enroll."""

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import photo_with_exif
from PIL import Image
from sklearn.metrics.pairwise import haversine_distances

from whaleutils.datasets import data, encounters, synth, validate


def _frame(**columns):
    n = len(next(iter(columns.values())))
    base = {"image": [f"p{i}.jpg" for i in range(n)], "individual_id": ["a"] * n}
    return pd.DataFrame({**base, **columns}, dtype=str)


def test_bad_cells_are_named_by_line_image_and_value():
    frame = _frame(
        date=["2024-06-01", "2024-13-01", "01/06/2024", "2024-06-01T14:05", ""],
        latitude=["42.1", "91", "", "x", ""],
        longitude=["-70.2", "-70", "-70", "-70", ""],
        viewpoint=["left", "Left", "fluke", "", "sideways"],
    )
    problems = encounters.check_metadata(frame, "train.csv")
    assert problems == [
        "train.csv line 3 ('p1.jpg'): date '2024-13-01': month must be in 1..12",
        "train.csv line 3 ('p1.jpg'): latitude '91' is outside -90..90",
        "train.csv line 3 ('p1.jpg'): unknown viewpoint 'Left'; known: "
        + ", ".join(encounters.VIEWPOINTS),
        "train.csv line 4 ('p2.jpg'): date '01/06/2024' is not YYYY-MM-DD",
        "train.csv line 4 ('p2.jpg'): longitude given without the other coordinate",
        "train.csv line 5 ('p3.jpg'): latitude 'x' is not a number",
        "train.csv line 6 ('p4.jpg'): unknown viewpoint 'sideways'; known: "
        + ", ".join(encounters.VIEWPOINTS),
    ]
    assert encounters.check_metadata(_frame(species=["x"]), "train.csv") == []  # no columns


def test_an_encounter_is_one_animal_on_one_day_at_one_place():
    frame = _frame(
        encounter=["e1", "e1", "e2", "e2", ""],
        date=["2024-06-01T10:00", "2024-06-01T10:02", "2024-06-01", "2024-06-02", "2024-01-01"],
    )
    frame.loc[4, "individual_id"] = "b"
    assert encounters.check_metadata(frame, "t.csv") == [
        "t.csv: encounter 'e2' (lines 4, 5) has 2 values of date: ['2024-06-01', '2024-06-02']"
    ]
    frame.loc[1, "individual_id"] = "b"
    assert "encounter 'e1' (lines 2, 3) has 2 values of individual_id" in "\n".join(
        encounters.check_metadata(frame, "t.csv")
    )


def test_validate_names_bad_metadata_in_train_and_test_files(small_synth, tmp_path):
    copy = tmp_path / "set"
    shutil.copytree(small_synth, copy)
    assert validate.validate_dataset(copy, decode_images=False) == []  # the set's own is sound
    train = pd.read_csv(copy / "train.csv", dtype=str, keep_default_na=False)
    original = (copy / "train.csv").read_bytes()
    train.loc[3, "viewpoint"] = "upside"
    train.to_csv(copy / "train.csv", index=False)
    test = pd.read_csv(copy / "test_metadata.csv", dtype=str, keep_default_na=False)
    test.loc[0, "latitude"] = "123"
    test.to_csv(copy / "test_metadata.csv", index=False)
    problems = validate.validate_dataset(copy, decode_images=False)
    assert f"train.csv line 5 ({train.loc[3, 'image']!r}): unknown viewpoint 'upside'" in (
        "\n".join(problems)
    )
    assert f"test_metadata.csv line 2 ({test.loc[0, 'image']!r}): latitude '123' is outside" in (
        "\n".join(problems)
    )
    # read and written back untouched, cell for cell: strings as they are
    assert (
        data.read_train(small_synth)["latitude"].tolist()
        == pd.read_csv(small_synth / "train.csv", dtype=str)["latitude"].tolist()
    )
    assert original == (small_synth / "train.csv").read_bytes()


def test_the_synthetic_set_has_encounters_of_several_photos_in_two_seasons(small_synth):
    train = data.read_train(small_synth)
    test = pd.read_csv(small_synth / "test_metadata.csv", dtype=str)
    for frame in (train, test):
        assert set(encounters.ENCOUNTER_COLUMNS) <= set(frame.columns)
    sizes = train.groupby("encounter").size()
    assert sizes.max() > 1 and sizes.min() == 1  # bursts and single photos
    assert (train.groupby("encounter")["individual_id"].nunique() == 1).all()
    assert train["date"].str[:4].unique().tolist() == ["2024"]
    assert test["date"].str[:4].unique().tolist() == ["2025"]  # the test photos: a later season
    assert not set(train["encounter"]) & set(test["encounter"])
    assert set(train["location"]) <= {site for site, _, _ in synth.SITES}
    # a burst shares its scene: its photos are closer to each other than to the animal's others
    with_bursts = train[train["encounter"].map(sizes) > 1]
    pairs = []
    for _, rows in train.groupby("individual_id"):
        if (
            rows["encounter"].nunique() < 2
            or not rows["encounter"].isin(with_bursts["encounter"]).any()
        ):
            continue
        pixels = {
            name: np.asarray(
                Image.open(small_synth / "train_images" / name).convert("RGB").resize((32, 32)),
                float,
            )
            for name in rows["image"]
        }
        for a in rows.itertuples():
            for b in rows.itertuples():
                if a.image < b.image:
                    distance = np.abs(pixels[a.image] - pixels[b.image]).mean()
                    pairs.append((a.encounter == b.encounter, distance))
    same = [d for same_encounter, d in pairs if same_encounter]
    other = [d for same_encounter, d in pairs if not same_encounter]
    assert same and other and np.mean(same) < 0.8 * np.mean(other)


def test_folds_keep_each_encounter_whole_and_match_photo_folds_without_groups():
    rng = np.random.default_rng(0)
    rows = []
    for individual in range(60):
        for encounter in range(int(rng.integers(1, 4))):
            for photo in range(int(rng.integers(1, 4))):
                rows.append((f"i{individual}-{encounter}-{photo}.jpg", f"id{individual}",
                             "sp", f"e{individual}-{encounter}"))  # fmt: skip
    train = pd.DataFrame(rows, columns=["image", "individual_id", "species", "encounter"])
    grouped = data.make_folds(train, n_folds=4, seed=1, groups="encounter")
    assert (grouped.groupby("encounter")["fold"].nunique() == 1).all()
    photo_folds = data.make_folds(train, n_folds=4, seed=1)
    assert (photo_folds.groupby("encounter")["fold"].nunique() > 1).any()
    # every photo its own group: exactly the photo-by-photo folds
    alone = train.assign(encounter=train["image"])
    np.testing.assert_array_equal(
        data.make_folds(alone, n_folds=4, seed=1, groups="encounter")["fold"], photo_folds["fold"]
    )
    # an empty cell is a group of its own
    blank = train.assign(encounter="")
    np.testing.assert_array_equal(
        data.make_folds(blank, n_folds=4, seed=1, groups="encounter")["fold"], photo_folds["fold"]
    )
    mixed = train.copy()
    mixed.loc[0, "encounter"] = mixed.loc[len(mixed) - 1, "encounter"]
    with pytest.raises(ValueError, match=r"encounter 'e59-\d' holds photos of several"):
        data.make_folds(mixed, groups="encounter")
    assert data.resolve_fold_groups(train, "auto") == "encounter"
    assert data.resolve_fold_groups(train.drop(columns="encounter"), "auto") is None
    assert data.resolve_fold_groups(blank, "auto") is None
    with pytest.raises(ValueError, match="fold_groups='site': train.csv has no such column"):
        data.resolve_fold_groups(train, "site")


def test_haversine_matches_scikit_learn():
    rng = np.random.default_rng(2)
    points = np.column_stack([rng.uniform(-89, 89, 20), rng.uniform(-179, 179, 20)])
    ours = encounters.haversine_km(points[:, 0], points[:, 1], *points[0])
    reference = haversine_distances(np.radians(points), np.radians(points[:1]))[:, 0]
    np.testing.assert_allclose(ours, reference * encounters.EARTH_RADIUS_KM, rtol=1e-9, atol=1e-6)


def test_candidate_filter_keeps_what_each_filter_asks_for():
    catalogue = pd.DataFrame(
        {
            "image": ["a", "b", "c", "d", "e"],
            "individual_id": ["1", "1", "2", "3", "3"],
            "species": ["humpback_whale", "humpback_whale", "beluga", "beluga", "beluga"],
            "date": ["2024-06-01", "2024-07-01T08:00", "", "2024-06-15", "2023-01-01"],
            "latitude": ["42.0", "42.0", "42.5", "", "43.0"],
            "longitude": ["-70.0", "-70.5", "-70.0", "", "-70.0"],
            "viewpoint": ["left", "right", "left", "", "top"],
        }
    )
    keep = lambda **k: catalogue["image"][encounters.CandidateFilter(**k).keep(catalogue)].tolist()  # noqa: E731
    assert keep() == ["a", "b", "c", "d", "e"]
    assert keep(species=("beluga",)) == ["c", "d", "e"]
    assert keep(viewpoints=("left", "top")) == ["a", "c", "e"]
    assert keep(between=(date(2024, 6, 1), date(2024, 6, 30))) == ["a", "d"]  # c: no date
    # 0.5 degrees of longitude at 42 N is 41.3 km; 0.5 of latitude 55.6 km
    assert keep(near=(42.0, -70.0), within_km=45) == ["a", "b"]
    assert keep(near=(42.0, -70.0), within_km=56) == ["a", "b", "c"]
    both = encounters.CandidateFilter(species=("beluga",), near=(42.0, -70.0), within_km=120)
    assert both.describe(catalogue) == (
        "candidates restricted to species beluga; within 120 km of 42, -70: 2 of 5 catalogue "
        "photos, 2 individuals"
    )
    for bad, message in [
        ({"near": (42.0, -70.0)}, "needs both a place"),
        ({"near": (95.0, 0.0), "within_km": 5}, "latitude '95.0' is outside"),
        ({"near": (0.0, 0.0), "within_km": 0}, "within must be a distance"),
        ({"between": (date(2024, 2, 1), date(2024, 1, 1))}, "2024-02-01 is after 2024-01-01"),
        ({"viewpoints": ("sideways",)}, "unknown viewpoint"),
    ]:
        with pytest.raises(ValueError, match=message):
            encounters.CandidateFilter(**bad)
    with pytest.raises(ValueError, match="the catalogue has no viewpoint column"):
        encounters.CandidateFilter(viewpoints=("left",)).keep(catalogue.drop(columns="viewpoint"))


def test_exif_date_and_gps_are_read_as_iso_and_decimal_degrees(tmp_path):
    gps = {1: "N", 2: (42.0, 21.0, 36.0), 3: "W", 4: (70.0, 30.0, 0.0)}
    photo = photo_with_exif(tmp_path / "a.jpg", "2024:06:30 14:05:09", gps)
    assert encounters.exif_metadata(photo) == {
        "date": "2024-06-30T14:05:09", "latitude": "42.360000", "longitude": "-70.500000"
    }  # fmt: skip
    assert encounters.exif_metadata(photo_with_exif(tmp_path / "b.jpg")) == {}
    garbled = photo_with_exif(tmp_path / "c.jpg", "not a date", {1: "N", 2: (1.0, 0.0)})
    assert encounters.exif_metadata(garbled) == {}
    (tmp_path / "d.jpg").write_bytes(b"not a photo")
    assert encounters.exif_metadata(tmp_path / "d.jpg") == {}


def test_photos_encounters_are_read_and_a_photo_listed_twice_is_named(tmp_path):
    path = tmp_path / "test_metadata.csv"
    path.write_text("image,encounter,date\na.jpg,e1,2020-01-01\nb.jpg, e1 ,\nc.jpg,,\n")
    assert data.read_encounters(path) == {"a.jpg": "e1", "b.jpg": "e1"}
    path.write_text("image,encounter\na.jpg,e1\nb.jpg,e2\na.jpg,e3\n")
    with pytest.raises(ValueError, match=r"lines \[2, 4\]: image 'a.jpg' is listed more"):
        data.read_encounters(path)
    path.write_text("image,date\na.jpg,2020-01-01\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['encounter'\]"):
        data.read_encounters(path)


def test_encounters_from_exif_are_one_cameras_photos_close_in_time_and_place(tmp_path):
    """a, b, c: one camera, 0, 4 and 20 minutes past 14:00; d: another camera at 14:01; e:
    no time of day. Within 5 minutes a and b are one encounter, c and d their own; within
    100 metres as well, b (1.85 km away) leaves a."""
    near = {1: "N", 2: (42.0, 0.0, 0.0), 3: "W", 4: (70.0, 0.0, 0.0)}
    far = {1: "N", 2: (42.0, 1.0, 0.0), 3: "W", 4: (70.0, 0.0, 0.0)}  # 1' north: 1.85 km

    def photo(name, stamp, gps, camera=("Canon", "EOS R5")):
        path = photo_with_exif(tmp_path / name, stamp, gps)
        with Image.open(path) as image:
            exif = image.getexif()
            exif[encounters.MAKE], exif[encounters.MODEL] = camera
            pixels = image.copy()
        pixels.save(path, exif=exif)
        return path

    paths = [
        photo("a.jpg", "2024:06:30 14:00:00", near), photo("b.jpg", "2024:06:30 14:04:00", far),
        photo("c.jpg", "2024:06:30 14:20:00", far),
        photo("d.jpg", "2024:06:30 14:01:00", near, ("Nikon", "D850")),
        photo_with_exif(tmp_path / "e.jpg"),
    ]  # fmt: skip
    assert encounters.exif_camera(paths[0]) == "Canon EOS R5"
    assert encounters.exif_camera(paths[4]) is None
    names = {Path(k).name: v for k, v in encounters.exif_encounters(paths, 5).items()}
    assert set(names) == {"a.jpg", "b.jpg", "c.jpg", "d.jpg"}  # e: no camera, no time
    assert names["a.jpg"] == names["b.jpg"]
    assert len({names["a.jpg"], names["c.jpg"], names["d.jpg"]}) == 3
    by_place = {Path(k).name: v for k, v in encounters.exif_encounters(paths, 5, 100).items()}
    assert by_place["a.jpg"] != by_place["b.jpg"]
    for bad in (0, -1, True, "5"):
        with pytest.raises(ValueError, match="encounter minutes must be a positive number"):
            encounters.exif_encounters(paths, bad)
