"""Custom Keras layers: the ArcFace / ArcMargin head, GeM pooling and input normalisation.

Written with ``keras.ops`` only, so they run on any Keras 3 backend; weights are created in
``build()``; every layer is registered serializable and has ``get_config``, so a model that uses
them saves to ``.keras`` and loads back with ``keras.models.load_model`` and no custom_objects.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

PACKAGE = "whaleutils"

# Adaptive-margin defaults of the Happywhale 1st-place solution (knshnb/kaggle-happywhale-1st-place,
# config/default.yaml at commit badb4b2): margin = 0.27126 * n^-0.364399 + 0.05 per individual.
ADAPTIVE_MARGIN_A = 0.27126
ADAPTIVE_MARGIN_B = 0.364399
ADAPTIVE_MARGIN_C = 0.05


def adaptive_margins(
    class_counts,
    a: float = ADAPTIVE_MARGIN_A,
    b: float = ADAPTIVE_MARGIN_B,
    c: float = ADAPTIVE_MARGIN_C,
) -> np.ndarray:
    """Class-size-adaptive ArcFace margins, ``a * n ** -b + c`` for a class with ``n`` images.

    Rare classes get larger margins (they need a tighter cluster to be recognised from few
    photos). Returns float32 of shape (n_classes,).

    Examples
    --------
    >>> [round(float(m), 3) for m in adaptive_margins([1, 16], a=0.4, b=0.5, c=0.1)]
    [0.5, 0.2]
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 1):
        raise ValueError(f"class_counts must be a 1-D array of counts >= 1, got {counts!r:.80}")
    return (a * counts**-b + c).astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ArcMarginProduct(keras.layers.Layer):
    """Additive angular margin head (ArcFace), called on ``[embeddings, labels]``.

    For class weights ``W`` (one unit vector per class, or ``k_subcenters`` per class, of which
    the most similar counts) the layer returns scaled logits::

        cos = normalize(embeddings) @ normalize(W)                        # (batch, n_classes)
        phi = cos(theta + m) = cos * cos(m) - sin * sin(m)
        phi = where(cos > cos(pi - m), phi, cos - sin(pi - m) * m)        # unless easy_margin
        phi = where(cos > 0, phi, cos)                                    # if easy_margin
        onehot = (1 - ls_eps) * onehot(labels) + ls_eps / n_classes
        logits = s * (onehot * phi + (1 - onehot) * cos)

    This is the head of the public Happywhale TPU notebooks (the paper's "ArcMargin" on ResNet
    and "ArcFace" on EfficientNet). The fallback past ``pi - m`` keeps ``phi`` decreasing in
    theta. Computation is in float32 even under mixed precision, and ``sin`` is taken from a
    clipped ``1 - cos**2`` so it is never the square root of a negative number.

    Parameters
    ----------
    n_classes : int
    s : float, default=30.0
        Scale of the logits.
    m : float, default=0.50
        Margin in radians (the default for every class unless ``class_margins`` is given).
    easy_margin : bool, default=False
    ls_eps : float, default=0.0
        Label smoothing of the one-hot target inside the margin.
    k_subcenters : int, default=1
        Sub-centre ArcFace: ``k`` weight vectors per class; a class's cosine is their maximum.
    class_margins : array-like of shape (n_classes,), optional
        Per-class margins (see :func:`adaptive_margins`); stored as a non-trainable weight, so
        they are saved with the model.

    Every margin is multiplied by the non-trainable scalar ``margin_scale`` (1 by default),
    which :class:`whaleutils.training.train.MarginWarmup` ramps from 0 to 1 over the first epochs.

    Inputs
    ------
    ``[embeddings (batch, d), labels (batch,) or (batch, 1) int]``

    Output
    ------
    logits (batch, n_classes), float32
    """

    def __init__(
        self,
        n_classes: int,
        s: float = 30.0,
        m: float = 0.50,
        easy_margin: bool = False,
        ls_eps: float = 0.0,
        k_subcenters: int = 1,
        class_margins=None,
        adaptive_margin: bool | None = None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")  # the head stays float32 under mixed precision
        super().__init__(**kwargs)
        if n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got n_classes={n_classes}")
        if k_subcenters < 1:
            raise ValueError(f"k_subcenters must be >= 1, got k_subcenters={k_subcenters}")
        if not 0 <= ls_eps < 1:
            raise ValueError(f"ls_eps must be in [0, 1), got ls_eps={ls_eps}")
        self.n_classes = int(n_classes)
        self.s = float(s)
        self.m = float(m)
        self.easy_margin = bool(easy_margin)
        self.ls_eps = float(ls_eps)
        self.k_subcenters = int(k_subcenters)
        if class_margins is not None:
            class_margins = np.asarray(class_margins, dtype=np.float32)
            if class_margins.shape != (self.n_classes,):
                raise ValueError(
                    f"class_margins must have shape ({self.n_classes},), "
                    f"got class_margins.shape={class_margins.shape}"
                )
        self._initial_margins = class_margins
        self.adaptive_margin = bool(
            class_margins is not None if adaptive_margin is None else adaptive_margin
        )

    def build(self, input_shape):
        embedding_shape = input_shape[0]
        self.W = self.add_weight(
            name="W",
            shape=(int(embedding_shape[-1]), self.n_classes * self.k_subcenters),
            initializer="glorot_uniform",
            trainable=True,
        )
        # Multiplies every margin; 1 unless a warm-up (train.MarginWarmup) ramps it up from 0.
        self.margin_scale = self.add_weight(
            name="margin_scale", shape=(), initializer="ones", trainable=False
        )
        if self.adaptive_margin:
            initial = self._initial_margins
            initializer = (
                keras.initializers.Constant(self.m)
                if initial is None
                else (lambda shape, dtype=None: ops.convert_to_tensor(initial, dtype=dtype))
            )
            self.class_margins = self.add_weight(
                name="class_margins",
                shape=(self.n_classes,),
                initializer=initializer,
                trainable=False,
            )

    def cosine(self, embeddings):
        """Cosine similarity to each class, (batch, n_classes); the max over sub-centres."""
        x = ops.normalize(ops.cast(embeddings, "float32"), axis=1, epsilon=1e-12)
        w = ops.normalize(ops.cast(self.W, "float32"), axis=0, epsilon=1e-12)
        cos = ops.matmul(x, w)
        if self.k_subcenters > 1:
            cos = ops.max(ops.reshape(cos, (-1, self.n_classes, self.k_subcenters)), axis=2)
        return cos

    def call(self, inputs):
        embeddings, labels = inputs
        cos = self.cosine(embeddings)
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        onehot = ops.one_hot(labels, self.n_classes, dtype="float32")
        if self.adaptive_margin:
            margin = ops.expand_dims(ops.take(self.class_margins, labels), axis=1)  # (batch, 1)
        else:
            margin = ops.convert_to_tensor(self.m, dtype="float32")
        margin = margin * ops.cast(self.margin_scale, "float32")
        sin = ops.sqrt(ops.clip(1.0 - ops.square(cos), 0.0, 1.0))
        phi = cos * ops.cos(margin) - sin * ops.sin(margin)
        if self.easy_margin:
            phi = ops.where(cos > 0.0, phi, cos)
        else:
            threshold = ops.cos(math.pi - margin)
            fallback = cos - ops.sin(math.pi - margin) * margin
            phi = ops.where(cos > threshold, phi, fallback)
        if self.ls_eps > 0:
            onehot = (1.0 - self.ls_eps) * onehot + self.ls_eps / self.n_classes
        return self.s * (onehot * phi + (1.0 - onehot) * cos)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.n_classes)

    def get_config(self):
        config = super().get_config()
        config.update(
            n_classes=self.n_classes,
            s=self.s,
            m=self.m,
            easy_margin=self.easy_margin,
            ls_eps=self.ls_eps,
            k_subcenters=self.k_subcenters,
            adaptive_margin=self.adaptive_margin,  # the margins themselves are a saved weight
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class GeMPooling(keras.layers.Layer):
    """Generalised-mean pooling with a learned exponent: (b, H, W, C) -> (b, C)::

        gem(x) = mean over H, W of clip(x, eps) ** p, to the power 1 / p

    ``p = 1`` is average pooling and ``p -> inf`` max pooling; ``p`` starts at ``p`` (3, as in
    Radenovic et al. 2018 and the Happywhale 1st place) and is learned (kept >= ``min_p``).
    Computed in float32 under any dtype policy.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[[1.0], [3.0]]]], np.float32)          # (1, 1, 2, 1)
    >>> float(GeMPooling(p=1.0)(x)[0, 0])                    # the mean
    2.0
    >>> round(float(GeMPooling(p=2.0)(x)[0, 0]), 4)          # sqrt((1 + 9) / 2)
    2.2361
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, min_p: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if not (math.isfinite(p) and p >= min_p >= 1.0) or not 0 < eps < 1:
            raise ValueError(f"GeM needs p >= min_p >= 1 and 0 < eps < 1, got p={p}, "
                             f"min_p={min_p}, eps={eps}")  # fmt: skip
        self.initial_p, self.eps, self.min_p = float(p), float(eps), float(min_p)

    def build(self, input_shape):
        self.p = self.add_weight(
            name="p", shape=(), initializer=keras.initializers.Constant(self.initial_p)
        )

    def call(self, features):
        p = ops.maximum(ops.cast(self.p, "float32"), self.min_p)
        x = ops.power(ops.maximum(ops.cast(features, "float32"), self.eps), p)
        return ops.power(ops.mean(x, axis=(1, 2)), 1.0 / p)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(p=self.initial_p, eps=self.eps, min_p=self.min_p)
        return config


# Per-channel statistics the backbones were trained with, on 0-255 RGB input.
NORMALIZATION_MODES = {
    "unit": ((0.0, 0.0, 0.0), (255.0, 255.0, 255.0), False),  # x / 255
    "torch": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), False),  # ImageNet mean/std
    "caffe": ((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),  # BGR, mean subtracted
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), False),  # the backbone rescales itself
    "lite": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0), False),  # EfficientNet-Lite
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImageNormalization(keras.layers.Layer):
    """Turn 0-255 RGB images into what a backbone expects, inside the model.

    The input pipeline always yields 0-255 float RGB, and each model carries its own
    normalisation, so an embedding model saved to ``.keras`` needs no separate preprocessing.

    Parameters
    ----------
    mode : {"unit", "torch", "caffe", "none", "lite"}
        ``unit``: x / 255 (the basic CNN); ``torch``: ImageNet mean and std on 0-1 RGB
        (``efficientnet`` noisy-student and imagenet weights); ``caffe``: RGB to BGR, ImageNet
        mean subtracted (``keras.applications`` ResNet50); ``none``: unchanged
        (``keras.applications`` EfficientNet rescales inside); ``lite``: (x - 127) / 128
        (EfficientNet-Lite).
    """

    def __init__(self, mode: str = "unit", **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ValueError(
                f"mode must be one of {sorted(NORMALIZATION_MODES)}, got mode={mode!r}"
            )
        self.mode = mode

    def call(self, images):
        mean, std, to_bgr = NORMALIZATION_MODES[self.mode]
        images = ops.cast(images, "float32")
        if to_bgr:
            images = ops.flip(images, axis=-1)
        return (images - ops.convert_to_tensor(mean)) / ops.convert_to_tensor(std)

    def get_config(self):
        config = super().get_config()
        config.update(mode=self.mode)
        return config
