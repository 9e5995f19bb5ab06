import pandas as pd
import pytest

from whaleutils.contracts import submission


def _frame(rows):
    return pd.DataFrame(rows, columns=["image", "predictions"])


def test_check_submission_accepts_a_valid_one():
    frame = _frame(
        [("a.jpg", "i1 i2 i3 i4 new_individual"), ("b.jpg", "i2 i1 i3 i4 new_individual")]
    )
    assert submission.check_submission(frame, ["a.jpg", "b.jpg"], ["i1", "i2", "i3", "i4"]) == []


def test_check_submission_names_each_bad_line():
    frame = _frame(
        [
            ("a.jpg", "i1 i2 i3 i4"),  # line 2: four predictions
            ("b.jpg", "i1 i1 i3 i4 i2"),  # line 3: repeated
            ("b.jpg", "i1 i2 i3 i4 zz"),  # line 4: listed twice, unknown id
            ("x.jpg", "i1 i2 i3 i4 new_individual"),  # line 5: not in the test set
        ]
    )
    problems = submission.check_submission(
        frame, ["a.jpg", "b.jpg", "c.jpg"], ["i1", "i2", "i3", "i4"], "sub.csv"
    )
    assert "sub.csv line 2 ('a.jpg'): 4 predictions, expected 5" in problems
    assert "sub.csv line 3 ('b.jpg'): repeated prediction(s) ['i1']" in problems
    assert "sub.csv line 4 ('b.jpg'): image listed twice (first at line 3)" in problems
    assert "sub.csv line 4 ('b.jpg'): unknown individual id(s) ['zz']" in problems
    assert "sub.csv: 1 test image(s) missing, e.g. ['c.jpg']" in problems
    assert "sub.csv: 1 image(s) not in the test set, e.g. ['x.jpg']" in problems
    assert len(problems) == 6


def test_write_submission_round_trip_and_never_overwrites(tmp_path):
    path = tmp_path / "submission.csv"
    submission.write_submission(path, ["a.jpg"], [["i1", "i2", "i3", "i4", "new_individual"]])
    frame = submission.read_predictions(path)
    assert frame["labels"].tolist() == [["i1", "i2", "i3", "i4", "new_individual"]]
    with pytest.raises(FileExistsError, match="exists"):
        submission.write_submission(path, ["a.jpg"], [["i1", "i2", "i3", "i4", "i5"]])
    assert submission.read_predictions(path)["labels"][0][0] == "i1"


def test_write_submission_refuses_bad_rows(tmp_path):
    with pytest.raises(submission.SubmissionError, match="repeated prediction"):
        submission.write_submission(tmp_path / "s.csv", ["a.jpg"], [["i1", "i1", "i2", "i3", "i4"]])
    assert not (tmp_path / "s.csv").exists()


def test_read_predictions_names_missing_columns_and_bad_scores(tmp_path):
    (tmp_path / "s.csv").write_text("image,preds\na.jpg,x\n")
    with pytest.raises(submission.SubmissionError, match=r"missing column\(s\) \['predictions'\]"):
        submission.read_predictions(tmp_path / "s.csv")
    (tmp_path / "p.csv").write_text("image,predictions\na.jpg,a b c d e\n")
    assert submission.read_predictions(tmp_path / "p.csv")["labels"][0] == list("abcde")
    with pytest.raises(submission.SubmissionError, match=r"missing column\(s\) \['scores'\]"):
        submission.read_predictions(tmp_path / "p.csv", with_scores=True)
    (tmp_path / "q.csv").write_text("image,predictions,scores\na.jpg,a b c d e,1 0.5 x 0 0\n")
    with pytest.raises(submission.SubmissionError, match=r"q.csv line 2: scores '1 0.5 x 0 0'"):
        submission.read_predictions(tmp_path / "q.csv", with_scores=True)
