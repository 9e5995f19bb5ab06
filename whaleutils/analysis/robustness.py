"""Degraded photos for the robustness study: Gaussian blur and low light.

The paper reports MAP@5 under blur and reduced brightness; ``CONDITIONS`` lists ours. All
functions take and return float 0-255 image batches (b, S, S, 3), as the pipeline yields.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from whaleutils.retrieval import embed, heads

# (name, blur sigma in pixels, brightness factor)
CONDITIONS = (
    ("original", 0.0, 1.0),
    ("blur sigma 0.5", 0.5, 1.0),
    ("blur sigma 1", 1.0, 1.0),
    ("blur sigma 2", 2.0, 1.0),
    ("brightness 70%", 0.0, 0.7),
    ("brightness 60%", 0.0, 0.6),
    ("brightness 50%", 0.0, 0.5),
    ("blur 1 + brightness 60%", 1.0, 0.6),
)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of radius ``ceil(3 sigma)``, float32.

    Examples
    --------
    >>> gaussian_kernel(0.0).tolist()
    [1.0]
    >>> round(float(gaussian_kernel(1.0).sum()), 6)
    1.0
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got sigma={sigma}")
    if sigma == 0:
        return np.ones(1, dtype=np.float32)
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


def gaussian_blur(images: tf.Tensor, sigma: float) -> tf.Tensor:
    """Separable Gaussian blur of each channel, edges padded by reflection; float32 out (uint8
    or float images in)."""
    kernel = gaussian_kernel(sigma)
    images = tf.cast(images, tf.float32)
    if len(kernel) == 1:
        return images
    radius = len(kernel) // 2
    x = tf.pad(
        images,
        [[0, 0], [radius, radius], [radius, radius], [0, 0]],
        "REFLECT",
    )
    horizontal = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), (1, 1, 3, 1))
    vertical = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), (1, 1, 3, 1))
    x = tf.nn.depthwise_conv2d(x, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    return tf.nn.depthwise_conv2d(x, vertical, strides=[1, 1, 1, 1], padding="VALID")


def degrade(images: tf.Tensor, blur_sigma: float = 0.0, brightness: float = 1.0) -> tf.Tensor:
    """Blur, then scale brightness (0.6 keeps 60% of the light), clipped to 0-255."""
    if not 0 < brightness <= 1:
        raise ValueError(f"brightness must be in (0, 1], got brightness={brightness}")
    return tf.clip_by_value(gaussian_blur(images, blur_sigma) * brightness, 0.0, 255.0)


def robustness_table(
    trained,
    split,
    batch_size: int,
    max_images: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """MAP@5 of a trained model's KNN head on (a subset of) the validation fold under each of
    ``CONDITIONS``.

    Only the query photos are degraded, as when new field photos are blurred or under-exposed;
    the gallery is the clean one the KNN head was tuned with (``heads.neighbours``), and the
    queries are embedded with the model's own TTA (``trained.tta``). With ``max_images=None``
    the ``original`` row therefore equals the model notebook's validation score.

    Parameters
    ----------
    trained : ``trained_run.TrainedModel`` (model, image size, k / threshold / rule, embeddings)
    split : the ``splits.Split`` the model was trained on
    max_images : a deterministic random subset of the validation photos (None: all)
    """

    rows = np.arange(len(split.valid))
    if max_images is not None and len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
    embeddings = trained.embeddings
    subset = split.valid.iloc[rows]
    records = []
    for name, sigma, brightness in CONDITIONS:
        batches = split.batches("valid", trained.image_size, batch_size, rows=rows)
        degraded = batches.map(
            lambda images, s=sigma, b=brightness: degrade(images, s, b),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        queries = embed.compute_embeddings(trained.embedding_model, degraded, tta=trained.tta)
        lists, _ = heads.knn_predictions(
            split,
            embeddings,
            "valid",
            trained.knn.k,
            trained.knn.threshold,
            trained.knn.rule,
            queries=queries,
            rows=rows,
            flipped=trained.knn.flipped_gallery,
        )
        records.append(
            {
                "condition": name,
                "blur_sigma": sigma,
                "brightness": brightness,
                **heads.score(subset["target_id"], lists),
            }
        )
    return pd.DataFrame(records)


def plot_table(table: pd.DataFrame):
    """Horizontal bars of MAP@5 per condition, the clean photos first and in green."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4))
    colours = ["tab:green"] + ["tab:orange"] * (len(table) - 1)
    axis.barh(table["condition"], table["map5"], color=colours)
    axis.invert_yaxis()
    axis.set_xlabel("validation MAP@5")
    axis.set_title("MAP@5 on degraded query photos (clean gallery)")
    figure.tight_layout()
    return figure
