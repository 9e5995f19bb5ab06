import numpy as np
import pandas as pd
import pytest
from conftest import HAPPYWHALE_METADATA, require
from sklearn.preprocessing import LabelEncoder

from whaleutils.datasets import data


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("bottlenose_dolpin", "bottlenose_dolphin"),
        ("kiler_whale", "killer_whale"),
        ("globis", "short_finned_pilot_whale"),
        ("pilot_whale", "short_finned_pilot_whale"),
        ("beluga", "beluga"),
    ],
)
def test_normalize_species_str(raw, expected):
    assert data.normalize_species(raw) == expected


def test_normalize_species_series_keeps_type_and_index():
    series = pd.Series(["kiler_whale", "beluga"], index=[7, 9])
    result = data.normalize_species(series)
    assert isinstance(result, pd.Series)
    assert result.to_dict() == {7: "killer_whale", 9: "beluga"}


def test_normalize_species_rejects_other_types():
    with pytest.raises(TypeError, match="got list"):
        data.normalize_species(["beluga"])


def test_real_train_has_30_raw_and_26_normalised_species():
    train = data.read_train(require(HAPPYWHALE_METADATA))
    assert len(train) == 51_033
    assert train["species_raw"].nunique() == 30
    assert train["species"].nunique() == 26
    assert (train["species_raw"] == "kiler_whale").sum() == (
        train.loc[train["species"] == "killer_whale", "species_raw"] == "kiler_whale"
    ).sum()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2 116 802 665", (2, 116, 802, 665)),
        ("", None),
        (float("nan"), None),
        ("1.0 2 3 4", (1, 2, 3, 4)),
    ],
)
def test_parse_box(text, expected):
    assert data.parse_box(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [("1 2 3", "has 3 numbers"), ("a b c d", "not four numbers"), ("5 2 3 4", "inverted")],
)
def test_parse_box_rejects(text, message):
    with pytest.raises(ValueError, match=message):
        data.parse_box(text)


def test_format_box_round_trip():
    assert data.parse_box(data.format_box((1, 2, 30, 40))) == (1, 2, 30, 40)
    assert data.format_box(None) == ""


def test_read_train_keeps_raw_species_and_adds_box(tmp_path):
    pd.DataFrame({"image": ["a.jpg"], "species": ["globis"], "individual_id": ["x"]}).to_csv(
        tmp_path / "train.csv", index=False
    )
    train = data.read_train(tmp_path)
    assert train.loc[0, ["species", "species_raw", "box"]].tolist() == [
        "short_finned_pilot_whale",
        "globis",
        "",
    ]


def test_read_train_names_missing_columns(tmp_path):
    pd.DataFrame({"image": ["a.jpg"], "species": ["beluga"]}).to_csv(
        tmp_path / "train.csv", index=False
    )
    with pytest.raises(ValueError, match=r"train.csv: missing column\(s\) \['individual_id'\]"):
        data.read_train(tmp_path)


def test_find_data_dir(tmp_path):
    (tmp_path / "train.csv").write_text("image,species,individual_id\n")
    assert data.find_data_dir(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="no Happywhale data set"):
        data.find_data_dir(tmp_path / "elsewhere")


def test_label_encoding_matches_sklearn_and_round_trips(tmp_path):
    train = pd.DataFrame(
        {"individual_id": ["c", "a", "b", "a"], "species": ["s2", "s1", "s1", "s1"]}
    )
    encoding = data.LabelEncoding.fit(train)
    reference = LabelEncoder().fit(train["individual_id"])
    codes = encoding.encode_individuals(train["individual_id"])
    np.testing.assert_array_equal(codes, reference.transform(train["individual_id"]))
    assert encoding.decode_individuals(codes).tolist() == ["c", "a", "b", "a"]
    encoding.save(tmp_path / "labels.json")
    assert data.LabelEncoding.load(tmp_path / "labels.json") == encoding
    with pytest.raises(KeyError, match="unknown individual_id 'zz'"):
        encoding.encode_individuals(["a", "zz"])


def test_label_encoding_load_rejects_other_json(tmp_path):
    (tmp_path / "x.json").write_text('{"species": []}')
    with pytest.raises(ValueError, match="no list 'individual_ids'"):
        data.LabelEncoding.load(tmp_path / "x.json")


def _toy_train():
    # 4 single-photo individuals, one with 2 photos, one with 6.
    ids = ["s1", "s2", "s3", "s4", "p", "p"] + ["q"] * 6
    return pd.DataFrame(
        {
            "image": [f"{i}.jpg" for i in range(len(ids))],
            "individual_id": ids,
            "species": ["x"] * len(ids),
        }
    )


def _is_new_brute_force(folds):
    flags = []
    for _, row in folds.iterrows():
        others = folds[
            (folds["individual_id"] == row["individual_id"]) & (folds["fold"] != row["fold"])
        ]
        flags.append(len(others) == 0)
    return np.array(flags)


def test_folds_rule_on_a_toy_set():
    folds = data.make_folds(_toy_train(), n_folds=3, seed=1, min_new_share=0.0)
    assert set(folds["fold"]) <= {0, 1, 2}
    # Singletons are new wherever they are; p's two photos and q's six are spread out.
    assert folds.loc[folds["individual_id"].str.startswith("s"), "is_new_in_fold"].all()
    assert folds.loc[folds["individual_id"] == "p", "fold"].nunique() == 2
    assert folds.loc[folds["individual_id"] == "q", "fold"].value_counts().tolist() == [2, 2, 2]
    np.testing.assert_array_equal(folds["is_new_in_fold"].to_numpy(), _is_new_brute_force(folds))


def test_folds_are_deterministic_by_seed():
    train = _toy_train()
    a = data.make_folds(train, n_folds=3, seed=5)
    b = data.make_folds(train, n_folds=3, seed=5)
    pd.testing.assert_frame_equal(a, b)


def test_folds_hold_out_whole_individuals_when_singletons_are_few():
    ids = np.repeat([f"id{i}" for i in range(40)], 5)
    train = pd.DataFrame(
        {"image": [f"{i}.jpg" for i in range(len(ids))], "individual_id": ids, "species": "x"}
    )
    folds = data.make_folds(train, n_folds=5, seed=0, min_new_share=0.15)
    report = data.fold_report(folds)
    assert (report["new_share"] >= 0.15).all()
    np.testing.assert_array_equal(folds["is_new_in_fold"].to_numpy(), _is_new_brute_force(folds))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_folds": 1}, "n_folds=1"), ({"min_new_share": 1.0}, "min_new_share=1.0")],
)
def test_folds_reject_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.make_folds(_toy_train(), **kwargs)


def test_folds_on_the_real_train_csv():
    """The rule on the real metadata: every fold's new share lies in the test set's 10-20%."""
    train = data.read_train(require(HAPPYWHALE_METADATA))
    folds = data.make_folds(train, n_folds=5, seed=0)
    report = data.fold_report(folds)
    print("\n" + report.to_string())
    assert report["images"].sum() == 51_033
    assert report["images"].between(9_500, 10_900).all()
    assert report["new_share"].between(0.10, 0.20).all()
    # Exactly the 9,258 single-photo individuals are new: step 3 adds nothing here.
    assert report["new"].sum() == 9_258
    per_individual = folds.groupby("individual_id")["fold"].nunique()
    photos = folds["individual_id"].value_counts()
    assert (per_individual[photos.index[photos > 1]] > 1).all()


def test_split_fold_marks_unseen_as_new_individual():
    folds = data.make_folds(_toy_train(), n_folds=3, seed=1, min_new_share=0.0)
    train, valid = data.split_fold(folds, 0)
    assert set(train["image"]).isdisjoint(valid["image"])
    new = valid["target_id"] == "new_individual"
    assert (new == valid["is_new_in_fold"]).all()
    with pytest.raises(ValueError, match="fold=7"):
        data.split_fold(folds, 7)


def test_find_boxes_from_a_path_or_an_attached_dataset(tmp_path, monkeypatch):
    attached = tmp_path / "input" / "owner" / "happywhale-detic-boxes"
    attached.mkdir(parents=True)
    (attached / "test.csv").write_text("image,predictions,box\nq.jpg,x,1 2 3 4\n")
    monkeypatch.setattr(data.environment, "KAGGLE_INPUT", tmp_path / "input")
    assert data.find_boxes("happywhale-detic-boxes") == {"q.jpg": (1, 2, 3, 4)}
    assert data.find_boxes(attached / "test.csv") == {"q.jpg": (1, 2, 3, 4)}
    assert data.find_boxes({"a.jpg": (0, 0, 1, 1)}) == {"a.jpg": (0, 0, 1, 1)}
    assert data.find_boxes(None) is None
    with pytest.raises(FileNotFoundError, match="no attached dataset of that name under"):
        data.find_boxes("other-boxes")
    with pytest.raises(FileNotFoundError, match=r"boxes '.*/nope.csv': no such file or folder$"):
        data.find_boxes(tmp_path / "nope.csv")


def test_the_layout_names_every_file_and_folder_once(tmp_path):
    layout = data.Layout(str(tmp_path))
    assert layout.root == tmp_path and layout.train_csv == tmp_path / "train.csv"
    assert layout.sample_submission.name == "sample_submission.csv"
    assert (layout.test_solution.name, layout.test_boxes.name) == (
        "test_solution.csv", "test_boxes.csv"
    )  # fmt: skip
    assert layout.images("train") == layout.images("valid") == tmp_path / "train_images"
    assert layout.photo("test", "a.jpg") == tmp_path / "test_images" / "a.jpg"
    with pytest.raises(ValueError, match="part must be 'train', 'valid' or 'test', got"):
        layout.images("gallery")


def test_write_tables_writes_what_the_readers_read(tmp_path):
    """The one writer of a new data set's tables (synth, prepare), read back by the readers
    and passed by validate once the photos are there."""
    from PIL import Image

    from whaleutils.datasets import validate

    layout = data.Layout(tmp_path)
    train = pd.DataFrame(
        {"image": ["t1.jpg", "t2.jpg", "t3.jpg"], "species": ["kiler_whale"] * 3,
         "individual_id": ["a", "a", "b"], "box": ["0 0 4 4", "", "1 1 3 3"]}
    )  # fmt: skip
    test = pd.DataFrame(
        {"image": ["q1.jpg", "q2.jpg"], "species": ["killer_whale"] * 2,
         "individual_id": ["a", "c"], "is_new": [False, True], "box": ["0 0 2 2", ""]}
    )  # fmt: skip
    for part, frame in (("train", train), ("test", test)):
        layout.images(part).mkdir()
        for name in frame["image"]:
            Image.new("RGB", (8, 8)).save(layout.photo(part, name))
    data.write_tables(layout, train, test, test_boxes=True)
    read = data.read_train(tmp_path)
    assert read["species"].tolist() == ["killer_whale"] * 3 and read["box"].iloc[1] == ""
    assert data.read_test_images(tmp_path) == ["q1.jpg", "q2.jpg"]
    solution = data.read_solution(layout.test_solution)
    assert solution["individual_id"].tolist() == ["a", "new_individual"]
    assert pd.read_csv(layout.sample_submission)["predictions"][0] == "a b new_individual"
    assert data.read_test_boxes(tmp_path)["box"].tolist() == ["0 0 2 2", ""]
    assert validate.validate_dataset(tmp_path) == []
