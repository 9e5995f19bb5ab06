"""scripts/classifier_opinion.py's parts on hand-checkable cases."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from scripts import classifier_opinion


def test_centre_cosines_take_the_arcface_centre_else_the_gallery_mean():
    pairs = pd.DataFrame({"query": ["q1", "q1", "q2"], "individual": ["a", "b", "b"]})
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    centres = {"a": np.array([0.6, 0.8])}  # b has no class: its gallery photos' mean
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array(["b", "b", "a"])
    cosines, fallback = classifier_opinion.centre_cosines(
        pairs, queries, ["q1", "q2"], centres, gallery, labels
    )
    half = 1 / np.sqrt(2)
    np.testing.assert_allclose(cosines, [0.6, half, half])
    assert fallback == 2


def test_arcface_centres_are_the_kernels_columns_normalised(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "labels.json").write_text(json.dumps({"individual_ids": ["a", "b", "c"]}))
    kernel = np.array([[3.0, 0.0, 1.0], [4.0, 2.0, 1.0]])  # (d=2, 3 whales)
    with h5py.File(tmp_path / "run" / "final.weights.h5", "w") as weights:
        weights["layers/arc_margin_product/vars/0"] = kernel
        weights["layers/dense/vars/0"] = np.ones((5, 2))
    whales, centres = classifier_opinion.arcface_centres(tmp_path)
    assert whales == ["a", "b", "c"]
    np.testing.assert_allclose(centres, [[0.6, 0.8], [0.0, 1.0], [2**-0.5, 2**-0.5]])
    (tmp_path / "labels.json").write_text(json.dumps({"individual_ids": ["a", "b"]}))
    with pytest.raises(ValueError, match=r"expected one ArcFace kernel \(d, 2\)"):
        classifier_opinion.arcface_centres(tmp_path)
