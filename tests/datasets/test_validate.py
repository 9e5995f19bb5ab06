import hashlib
import shutil

import pandas as pd
import pytest

from whaleutils.datasets import validate


def _tree_digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_synthetic_set_is_sound_and_left_untouched(small_synth):
    before = _tree_digest(small_synth)
    assert validate.validate_dataset(small_synth) == []
    assert _tree_digest(small_synth) == before


@pytest.fixture
def broken_set(small_synth, tmp_path):
    """A copy of the small set with one problem of every kind, each on a known line."""
    out = tmp_path / "broken"
    shutil.copytree(small_synth, out)
    train = pd.read_csv(out / "train.csv", dtype=str, keep_default_na=False)
    names = train["image"].tolist()
    train.loc[1, "individual_id"] = ""  # line 3: empty id
    train.loc[2, "species"] = ""  # line 4: empty species
    (out / "train_images" / names[3]).unlink()  # line 5: missing image
    truncated = (out / "train_images" / names[4]).read_bytes()
    (out / "train_images" / names[4]).write_bytes(truncated[: len(truncated) // 2])  # line 6
    (out / "train_images" / names[5]).write_text("not an image")  # line 7
    train.loc[6, "box"] = "0 0 5000 20"  # line 8: box outside the image
    train.loc[7, "box"] = "1 2 3"  # line 9: malformed box
    duplicate = train.iloc[[0]]  # appended last: duplicate row of line 2
    relabelled = train.iloc[[8]].assign(individual_id="someone_else")  # same image, other id
    train = pd.concat([train, duplicate, relabelled], ignore_index=True)
    train.to_csv(out / "train.csv", index=False)
    return out, names, len(train)


def test_every_problem_is_named_with_file_and_line(broken_set):
    out, names, n_rows = broken_set
    problems = validate.validate_dataset(out)
    text = "\n".join(problems)
    assert f"train.csv line 3 ('{names[1]}'): empty individual_id" in problems
    assert f"train.csv line 4 ('{names[2]}'): empty species" in problems
    assert f"train.csv line 5 ('{names[3]}'): image missing: train_images/{names[3]}" in problems
    assert f"train.csv line 6 ('{names[4]}'): train_images/{names[4]} does not decode" in text
    assert f"train.csv line 7 ('{names[5]}'): train_images/{names[5]} does not decode" in text
    assert f"train.csv line 8 ('{names[6]}'): box '0 0 5000 20' outside the" in text
    assert f"train.csv line 9 ('{names[7]}'): box '1 2 3' has 3 numbers" in text
    assert f"train.csv line {n_rows} ('{names[0]}'): duplicate row (same as line 2)" in problems
    assert (
        f"train.csv line {n_rows + 1} ('{names[8]}'): "
        "image listed twice (also at line 10) with other values" in problems
    )


def test_missing_columns_and_files(tmp_path):
    (tmp_path / "train.csv").write_text("image,species\na.jpg,beluga\n")
    problems = validate.validate_dataset(tmp_path)
    assert "train.csv: missing column(s) ['individual_id']; found ['image', 'species']" in problems
    assert "sample_submission.csv: file missing" in problems


def test_image_in_train_and_test(small_synth, tmp_path):
    out = tmp_path / "both"
    shutil.copytree(small_synth, out)
    train = pd.read_csv(out / "train.csv")
    test = pd.read_csv(out / "sample_submission.csv")
    test.loc[0, "image"] = train.loc[0, "image"]
    shutil.copy(
        out / "train_images" / train.loc[0, "image"], out / "test_images" / train.loc[0, "image"]
    )
    test.to_csv(out / "sample_submission.csv", index=False)
    problems = validate.validate_dataset(out)
    assert any(
        p.startswith("sample_submission.csv line 2") and "also train.csv line 2" in p
        for p in problems
    )
