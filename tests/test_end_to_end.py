"""Train a tiny EfficientNet + ArcFace for a few steps on a small synthetic set, embed,
run the KNN head and write a submission that the validator accepts."""

import numpy as np
import pandas as pd

from whaleutils import data, embed, knn, metrics, models, pipeline, submission, train


def test_train_embed_knn_submit(small_synth, tmp_path):
    train_frame = data.read_train(small_synth)
    test_images = data.read_test_images(small_synth)
    folds = data.make_folds(train_frame, n_folds=3, seed=0)
    fit_rows, valid_rows = data.split_fold(folds, 0)
    encoding = data.LabelEncoding.fit(fit_rows)
    encoding.save(tmp_path / "labels.json")

    image_size, batch_size = 48, 8
    records = pipeline.file_records(
        fit_rows,
        small_synth / "train_images",
        encoding.encode_individuals(fit_rows["individual_id"]),
    )
    train_batches = pipeline.make_dataset(
        records, image_size, batch_size, training=True, deterministic=True, repeat=True
    )
    training_model, embedding_model = models.build_model(
        "efficientnet-b0", encoding.n_individuals, image_size, embedding_dim=32
    )
    train.compile_model(training_model, learning_rate=1e-3)
    log = train.fit(
        training_model,
        train_batches,
        2,
        tmp_path / "run",
        embedding_model,
        steps_per_epoch=3,
        verbose=0,
    )
    assert len(log) == 2 and np.isfinite(log["loss"]).all()

    def embeddings_of(frame, folder):
        batches = pipeline.make_dataset(pipeline.file_records(frame, folder), image_size, 16)
        return embed.compute_embeddings(embedding_model, batches, tta="flip")

    gallery = embeddings_of(fit_rows, small_synth / "train_images")
    queries = embeddings_of(valid_rows, small_synth / "train_images")
    embed.save_embeddings(
        tmp_path / "train.npz", fit_rows["image"], gallery, fit_rows["individual_id"]
    )
    saved = embed.load_embeddings(tmp_path / "train.npz")
    np.testing.assert_array_equal(saved["embeddings"], gallery)

    similarities, indices = knn.cosine_topk(gallery, queries, min(100, len(gallery)))
    search = knn.search_k_and_threshold(
        similarities,
        indices,
        fit_rows["individual_id"].to_numpy(),
        valid_rows["target_id"].to_numpy(),
    )
    assert search["k"] in {min(k, len(gallery)) for k in knn.K_GRID}
    assert 0 <= search["threshold"] <= 1

    frequent = list(fit_rows["individual_id"].value_counts().index[:5])
    test_frame = pd.DataFrame({"image": test_images})
    predictions, scores = knn.predict(
        gallery,
        fit_rows["individual_id"],
        embeddings_of(test_frame, small_synth / "test_images"),
        k=search["k"],
        distance_threshold=search["threshold"],
        frequent_ids=frequent,
    )
    knn.write_predictions(tmp_path / "test_predictions.csv", test_images, predictions, scores)
    path = submission.write_submission(tmp_path / "submission.csv", test_images, predictions)
    problems = submission.check_submission(
        submission.read_submission(path), test_images, fit_rows["individual_id"]
    )
    assert problems == []
    solution = data.read_solution(small_synth / "test_solution.csv")
    score = metrics.map_at_k(solution["individual_id"], predictions)
    assert 0.0 <= score <= 1.0
