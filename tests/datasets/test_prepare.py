import json

import pandas as pd
import pytest
from conftest import REAL_PHOTOS, require

from whaleutils.datasets import prepare, validate


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = require(REAL_PHOTOS)
    out = tmp_path_factory.mktemp("prepared") / "catalogue"
    card = prepare.prepare(root / "labels.csv", root, out, test_share=0.2, new_share=0.1, seed=0)
    return root, out, card


def test_prepared_real_catalogue_is_a_sound_data_set(prepared):
    root, out, card = prepared
    assert validate.validate_dataset(out) == []
    labels = pd.read_csv(root / "labels.csv")
    assert card["train_images"] + card["test_images"] == len(labels) == 174
    assert card["individuals"] == 16  # 15 right whales and dolphin 1056
    assert json.loads((out / "prepare.json").read_text()) == card


def test_split_rule(prepared):
    root, out, _ = prepared
    train = pd.read_csv(out / "train.csv")
    solution = pd.read_csv(out / "test_solution.csv")
    labels = pd.read_csv(root / "labels.csv")
    truth = dict(zip(labels["image"].str.split("/").str[-1], labels["individual_id"], strict=True))
    new_ids = {
        truth[i] for i in solution.loc[solution["individual_id"] == "new_individual", "image"]
    }
    assert len(new_ids) == round(0.1 * 16)
    assert new_ids.isdisjoint(train["individual_id"])  # new individuals are entirely in test
    assert set(train["individual_id"]) == set(labels["individual_id"]) - new_ids  # one photo stays
    known = solution[solution["individual_id"] != "new_individual"]
    assert (known["individual_id"] == known["image"].map(truth)).all()
    assert 0.1 < len(known) / (len(known) + len(train)) < 0.3


def test_photos_are_copied_byte_for_byte(prepared):
    root, out, _ = prepared
    labels = pd.read_csv(root / "labels.csv")
    for source in labels["image"][:20]:
        name = source.split("/")[-1]
        copied = out / "train_images" / name
        if not copied.exists():
            copied = out / "test_images" / name
        assert copied.read_bytes() == (root / source).read_bytes()


def test_same_seed_same_split_other_seed_other_split(tmp_path):
    root = require(REAL_PHOTOS)
    catalogue = prepare.read_catalogue(root / "labels.csv", root)
    a = prepare.split_catalogue(catalogue, 0.2, 0.1, seed=4)
    b = prepare.split_catalogue(catalogue, 0.2, 0.1, seed=4)
    c = prepare.split_catalogue(catalogue, 0.2, 0.1, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not a["split"].equals(c["split"])


def test_bad_catalogue_lists_every_problem(tmp_path):
    images = tmp_path / "photos"
    (images / "sub").mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"x")
    (images / "sub" / "a.jpg").write_bytes(b"y")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,individual_id\na.jpg,w1\nmissing.jpg,w2\nsub/a.jpg,w3\n,w4\na.jpg,w1\n"
    )
    with pytest.raises(prepare.CatalogueError) as error:
        prepare.read_catalogue(labels, images)
    message = str(error.value)
    assert "labels.csv line 3 ('missing.jpg'): photo not found" in message
    assert "labels.csv line 4 ('sub/a.jpg'): base name 'a.jpg' already used at line 2" in message
    assert "labels.csv line 5: empty image" in message
    assert "labels.csv line 6 ('a.jpg'): photo listed twice (also line 2)" in message


def test_missing_column_and_non_empty_output(tmp_path):
    (tmp_path / "labels.csv").write_text("Image,whaleID\nw_1.jpg,whale_1\n")
    with pytest.raises(
        prepare.CatalogueError, match=r"missing column\(s\) \['image', 'individual_id'\]"
    ):
        prepare.read_catalogue(tmp_path / "labels.csv", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare.prepare(tmp_path / "labels.csv", tmp_path, out)
    assert (out / "keep.txt").read_text() == "user data"


def test_labels_never_reach_outside_the_images_folder(tmp_path):
    """A fresh hostile pass (issue 32's list does not name prepare): paths in labels.csv that
    lead out of --images, by .., an absolute path or a link, are refused, and so are ids a
    spreadsheet would run."""
    images = tmp_path / "photos"
    images.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    (images / "link.jpg").symlink_to(secret)
    (images / "a.jpg").write_bytes(b"x")
    labels = tmp_path / "labels.csv"
    labels.write_text(
        f"image,individual_id\n../secret.jpg,w1\n{secret},w2\nlink.jpg,w3\na.jpg,=HYPERLINK(1)\n"
    )
    with pytest.raises(prepare.CatalogueError) as error:
        prepare.prepare(labels, images, tmp_path / "out")
    message = str(error.value)
    assert "line 2 ('../secret.jpg'): not a path inside" in message
    assert f"line 3 ('{secret}'): not a path inside" in message
    assert "line 4 ('link.jpg'): a link leading out of" in message
    assert "line 5: individual_id '=HYPERLINK(1)' would run as a spreadsheet formula" in message
    assert not (tmp_path / "out").exists()


def test_a_prepare_that_fails_midway_leaves_nothing(tmp_path, monkeypatch):
    images = tmp_path / "photos"
    images.mkdir()
    rows = []
    for index in range(6):
        (images / f"p{index}.jpg").write_bytes(bytes([index]))
        rows.append(f"p{index}.jpg,w{index % 3}")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,individual_id\n" + "\n".join(rows) + "\n")
    real, calls = prepare.shutil.copy2, {"n": 0}

    def full_disk(source, target, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(prepare.shutil, "copy2", full_disk)
    with pytest.raises(OSError, match="No space left"):
        prepare.prepare(labels, images, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.csv", "photos"]
    monkeypatch.setattr(prepare.shutil, "copy2", real)
    assert prepare.prepare(labels, images, tmp_path / "out")["train_images"] > 0
