"""Grad-CAM for embedding models: where the model looks when it matches two photos.

The score explained is the cosine similarity between a query's embedding and a target
embedding (its top match in the gallery). Its gradient with respect to the last convolutional
feature map, averaged over space, weights the feature channels; the weighted sum, rectified and
scaled to [0, 1], is the heatmap (Selvaraju et al., 2017).
"""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
from keras import ops
from matplotlib import colormaps

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import heads


def _feature_split(embedding_model: keras.Model) -> tuple[list, list]:
    """Layers before (up to and including the feature layer) and after it, in call order.

    The feature layer is a nested backbone model if there is one (``models.build_model``), else
    the last ``Conv2D`` (the basic CNN). Both model kinds are chains of layers.
    """
    layers = [
        layer for layer in embedding_model.layers if not isinstance(layer, keras.layers.InputLayer)
    ]
    nested = [i for i, layer in enumerate(layers) if isinstance(layer, keras.Model)]
    convolutions = [i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.Conv2D)]
    if nested:
        cut = nested[-1]
    elif convolutions:
        cut = convolutions[-1]
    else:
        raise ValueError(f"{embedding_model.name} has no backbone or Conv2D layer to explain")
    return layers[: cut + 1], layers[cut + 1 :]


def heatmaps(
    embedding_model: keras.Model, images: np.ndarray, target_embeddings: np.ndarray
) -> np.ndarray:
    """Grad-CAM heatmaps of the similarity of each image to its target embedding.

    Parameters
    ----------
    embedding_model : a model from ``models.build_model`` or ``models.build_basic_cnn``
    images : float32 (n, S, S, 3), 0-255 RGB (as the pipeline yields)
    target_embeddings : (n, d), the embeddings to match (normalised or not)

    Returns
    -------
    float32 (n, h, w) in [0, 1], at the feature map's resolution (an all-zero map where no
    feature raises the similarity).
    """
    before, after = _feature_split(embedding_model)
    targets = ops.normalize(ops.convert_to_tensor(target_embeddings, "float32"), axis=1)
    x = ops.convert_to_tensor(images, "float32")
    for layer in before:
        x = layer(x, training=False)
    features = ops.cast(x, "float32")

    def similarity(features):  # (n,): cosine of each photo's embedding to its target
        y = features
        for layer in after:
            y = layer(y, training=False)
        return ops.sum(ops.normalize(ops.cast(y, "float32"), axis=1) * targets, axis=1)

    gradients = _gradient_of_sum(similarity, features)
    weights = ops.mean(gradients, axis=(1, 2), keepdims=True)
    cam = ops.convert_to_numpy(ops.relu(ops.sum(weights * features, axis=-1)))
    peak = cam.max(axis=(1, 2), keepdims=True)
    return (cam / np.maximum(peak, 1e-12)).astype(np.float32)


def _gradient_of_sum(function, x):
    """The gradient of ``sum(function(x))`` with respect to ``x``, by the Keras backend's own
    automatic differentiation (TensorFlow's tape or ``jax.grad``)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            total = ops.sum(function(x))
        return tape.gradient(total, x)
    if backend == "jax":
        import jax

        return jax.grad(lambda value: ops.sum(function(value)))(x)
    raise ValueError(f"Grad-CAM runs on the tensorflow or jax backend, not {backend}")


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45, colormap: str = "jet"
) -> np.ndarray:
    """The heatmap, upsampled and coloured, blended over a 0-255 RGB image; uint8 (S, S, 3)."""
    size = image.shape[:2]
    upsampled = ops.convert_to_numpy(ops.image.resize(heatmap[..., None], size))[..., 0]
    coloured = colormaps[colormap](np.clip(upsampled, 0, 1))[..., :3] * 255.0
    blended = (1 - alpha) * np.asarray(image, np.float32) + alpha * coloured
    return np.clip(blended, 0, 255).astype(np.uint8)


def top_matches(split, trained) -> pd.DataFrame:
    """The top match of each validation photo of a known individual, as the KNN head sees it
    (``heads.neighbours``: the mirrored gallery, the saved flip-TTA embeddings; without mirror
    images in the gallery, so that every match is a photo to show).

    Returns the known validation rows with ``row`` (position in ``split.valid``),
    ``top_match`` (individual id), ``similarity``, ``correct`` and ``gallery_row``.
    """

    embeddings = trained.embeddings
    rows = np.flatnonzero(split.valid["target_id"].to_numpy() != NEW_INDIVIDUAL)
    similarities, indices, labels = heads.neighbours(
        split, embeddings, "valid", 1, queries=embeddings["valid"][rows], rows=rows
    )
    known = split.valid.iloc[rows].reset_index(drop=True)
    return known.assign(
        row=rows,
        top_match=labels[indices[:, 0]],
        similarity=similarities[:, 0],
        correct=labels[indices[:, 0]] == known["target_id"].to_numpy(),
        gallery_row=indices[:, 0],
    )


def examples(matches: pd.DataFrame, per_kind: int) -> pd.DataFrame:
    """The first ``per_kind`` right and the first ``per_kind`` wrong top matches."""
    return pd.concat(
        [matches[matches["correct"]].head(per_kind), matches[~matches["correct"]].head(per_kind)]
    )


def plot_examples(images: np.ndarray, maps: np.ndarray, chosen: pd.DataFrame):
    """Photos (top row) and their Grad-CAM overlays (bottom row), titled right / wrong."""
    import matplotlib.pyplot as plt

    n = max(1, len(chosen))
    figure, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6), squeeze=False)
    for column, (image, heatmap, (_, match)) in enumerate(
        zip(images, maps, chosen.iterrows(), strict=True)
    ):
        axes[0, column].imshow(np.asarray(image).astype("uint8"))
        axes[1, column].imshow(overlay(image, heatmap))
        verdict = "right" if match["correct"] else "wrong"
        axes[0, column].set_title(f"{verdict}: sim {match['similarity']:.2f}", fontsize=8)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.suptitle(
        "Validation photos (top) and Grad-CAM of the similarity to their top match (bottom)"
    )
    figure.tight_layout()
    return figure
