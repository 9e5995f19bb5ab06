"""Train a tiny EfficientNet + ArcFace for a few steps on a small synthetic set, embed it, run
the KNN head and check that its submission is valid and scores what scores.json says."""

import json

import numpy as np
import pytest

from whaleutils.contracts import metrics, outputs, submission
from whaleutils.retrieval import embed, heads, splits
from whaleutils.training import models, train


@pytest.mark.slow
def test_train_embed_knn_submit(small_synth, tmp_path):
    split = splits.load_split(small_synth, fold=0, n_folds=3, seed=0)
    image_size, batch_size = 48, 8
    batches, _ = split.training_batches(image_size, batch_size)
    training_model, embedding_model = models.build_model(
        "efficientnet-b0", split.encoding.n_individuals, image_size, embedding_dim=32
    )
    train.compile_model(training_model, learning_rate=1e-3)
    log = train.fit(
        training_model, batches, 2, tmp_path / "run", embedding_model, steps_per_epoch=3, verbose=0
    )
    assert len(log) == 2 and np.isfinite(log["loss"]).all()

    embeddings = embed.embed_split(embedding_model, split, 16, tmp_path, "flip", "tiny")
    saved = embed.load_embeddings(tmp_path / "train.npz")
    np.testing.assert_array_equal(saved["embeddings"], embeddings["train"])
    assert saved["image_names"].tolist() == split.train["image"].tolist()

    result = heads.knn_head(split, embeddings, tmp_path)
    outputs.write_outputs(tmp_path, heads.KNN_OUTPUTS)
    assert outputs.outputs_complete(tmp_path)
    written = submission.read_predictions(tmp_path / "submission.csv")
    assert (
        submission.check_submission(
            written, split.test["image"].tolist(), split.gallery_labels("test")
        )
        == []
    )
    truth = split.truth("test", written["image"])
    expected = metrics.map_at_k_split(truth, written["labels"].tolist())
    assert json.loads((tmp_path / "scores.json").read_text())["test"] == pytest.approx(
        expected, abs=1e-6, nan_ok=True
    )
    assert result["test"]["map5"] == pytest.approx(expected["map5"], abs=1e-6)
