"""Models: backbones by name, the embedding model and the training model around it.

``build_model`` returns ``(training_model, embedding_model)`` sharing their weights::

    image (0-255 RGB) -> ImageNormalization -> backbone -> pooling -> dropout
        -> Dense(embedding_dim) [-> BatchNormalization]   = embedding_model output (batch, d)
        -> ArcMarginProduct([embedding, label])           = training_model output (batch, classes)

The training model takes ``{"image": (batch, S, S, 3), "label": (batch,)}``; the embedding
model takes images alone. The paper's basic CNN is ``build_basic_cnn``: a softmax classifier.

Saved models are portable (:func:`save_model`): beside ``NAME.keras`` go ``NAME.weights.h5``
and ``NAME.recipe.json`` (the builder's arguments), from which :func:`load_model` rebuilds the
embedding model in float32 under any Keras 3: a model trained on a TPU under
``mixed_bfloat16`` with Keras >= 3.12 loads on Kaggle's GPU image (Keras 3.10, T4s without
bfloat16), where its ``.keras`` file would not.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import weakref
import zipfile
from pathlib import Path

import keras

from whaleutils.datasets import data
from whaleutils.training import backbones
from whaleutils.training.layers import (
    NORMALIZATION_MODES,
    ArcMarginProduct,
    GeMPooling,
    ImageNormalization,
)

# build_model's pooling choices: the backbone's feature map (b, H, W, C) -> (b, C)
POOLINGS = {
    "avg": keras.layers.GlobalAveragePooling2D,
    "max": keras.layers.GlobalMaxPooling2D,
    "gem": GeMPooling,
}


def build_backbone(name: str, image_size: int, weights=None) -> tuple[keras.Model, str]:
    """A convolutional backbone without its top, and the input normalisation it expects.

    Parameters
    ----------
    name : str
        A name in ``backbones.BACKBONES`` (its table: docs/models.md): ``resnet50``,
        ``efficientnet-lite0``, ``efficientnet-b0`` ... ``-b7`` (qubvel's package, TensorFlow
        only) or ``keras-efficientnet-b0`` ... ``-b7`` (any backend).
    image_size : int
        Square input side in pixels.
    weights : None (random), one of the backbone's named weights ("imagenet", "noisy-student"),
        or the path of a weights file, which is how Kaggle kernels without internet attach
        weights: an ``.h5`` file (for ``keras-efficientnet-bN``, qubvel's file) or, for
        ``efficientnet-lite0``, a ``.pth`` checkpoint in the package's format.

    Returns
    -------
    (backbone, normalization_mode)
        ``backbone`` maps (batch, S, S, 3) to a feature map (batch, h, w, c).

    Raises
    ------
    ValueError
        Naming the known backbones, the accepted weights, or the backbone to use on this
        Keras backend.
    """
    backbone = backbones.get(name)
    backbone.check_weights(weights)
    backbone.check_backend(keras.backend.backend())
    return backbone.build(image_size, weights), backbone.normalization


def keras_efficientnet(variant: int, image_size: int, weights=None) -> keras.Model:
    """``keras.applications`` EfficientNet-B``variant`` without its top, on 0-255 RGB input.

    Builds under every Keras backend (qubvel's ``efficientnet`` needs TensorFlow), so it is the
    backbone that trains on TPUs through JAX. ``weights``: None (random), "imagenet"
    (``keras.applications``' own), the paper's "noisy-student" (:func:`qubvel_weights_file`), or
    the path of a qubvel ``efficientnet`` ``.h5`` weights file; qubvel's files are loaded by
    :func:`load_qubvel_weights`, so the model computes what qubvel's model computes on its
    ``torch``-normalised input.
    """
    constructor = getattr(keras.applications, f"EfficientNetB{variant}")
    shape = (image_size, image_size, 3)
    if weights in (None, "imagenet"):
        return constructor(include_top=False, weights=weights, input_shape=shape)
    if weights == "noisy-student":
        weights = qubvel_weights_file(variant, weights)
    model = constructor(include_top=False, weights=None, input_shape=shape)
    load_qubvel_weights(model, weights)
    return model


def qubvel_weights_file(variant: int, weights: str = "noisy-student") -> str:
    """The local path of qubvel's ``efficientnet-bN_noisy-student_notop.h5``, downloaded into
    Keras' cache the way the ``efficientnet`` package does (same address and hash); needs the
    internet unless cached. On Kaggle, attach the file and pass its path instead."""
    from efficientnet import weights as qubvel

    name = f"efficientnet-b{variant}"
    file_name = f"{name}_{weights}_notop.h5"
    return keras.utils.get_file(
        file_name,
        qubvel.NS_WEIGHTS_PATH + file_name,
        cache_subdir="models",
        file_hash=qubvel.NS_WEIGHTS_HASHES[name][1],
    )


def load_qubvel_weights(model: keras.Model, path) -> None:
    """Load a qubvel ``efficientnet`` weights file (Keras' legacy ``.h5`` layout) into a
    ``keras.applications`` EfficientNet of the same variant built with ``weights=None``.

    The two architectures share their layer names (keras.applications' EfficientNet was made
    from qubvel's) and their padding arithmetic, so the weights load by layer name; every layer
    of ``model`` that has weights must find them in the file. Only the input differs: the
    ``keras.applications`` model starts with ``x / 255`` and a ``Normalization`` layer, which is
    set to the ImageNet mean and variance that qubvel's weights expect (its ``torch`` mode).

    Raises
    ------
    ValueError
        Naming the layers of ``model`` that the file does not have, or a shape that differs.
    """
    import h5py

    with h5py.File(path, "r") as file:
        group = file["model_weights"] if "layer_names" not in file.attrs else file
        in_file = {_decode(name) for name in group.attrs["layer_names"]}
    normalizations = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)
    ]
    if len(normalizations) != 1:
        raise ValueError(f"{model.name}: expected one Normalization layer, found {normalizations}")
    missing = [
        layer.name
        for layer in model.layers
        if layer.weights and layer not in normalizations and layer.name not in in_file
    ]
    if missing:
        raise ValueError(
            f"{path}: not the weights of {model.name}: no weights for its layers "
            f"{missing[:5]}{' ...' if len(missing) > 5 else ''} ({len(missing)} in all)"
        )
    model.load_weights(str(path), by_name=True)  # raises on a count or shape mismatch
    # qubvel's "torch" statistics are on 0-255; this layer follows keras.applications' x / 255
    mean, std, _ = NORMALIZATION_MODES["torch"]
    normalization = normalizations[0]
    normalization.adapt_mean.assign([m / 255.0 for m in mean])
    normalization.adapt_variance.assign([(s / 255.0) ** 2 for s in std])
    normalization.finalize_state()  # the layer computes with copies made from these weights


def _decode(name) -> str:
    return name.decode("utf8") if isinstance(name, bytes) else str(name)


def build_model(
    backbone: str,
    n_classes: int,
    image_size: int,
    weights=None,
    embedding_dim: int = 512,
    dropout: float = 0.2,
    pooling: str = "avg",
    embedding_batchnorm: bool = True,
    s: float = 30.0,
    m: float = 0.5,
    easy_margin: bool = False,
    ls_eps: float = 0.0,
    k_subcenters: int = 1,
    class_margins=None,
    freeze_backbone_batchnorm: bool = False,
    any_input_size: bool = False,
) -> tuple[keras.Model, keras.Model]:
    """The ArcFace training model and the embedding model, sharing weights.

    Parameters are those of :func:`build_backbone` and
    :class:`whaleutils.training.layers.ArcMarginProduct` (``s``, ``m``, ``easy_margin``, ``ls_eps``,
    ``k_subcenters``, ``class_margins``), plus ``embedding_dim`` (512 in the paper),
    ``dropout`` before the embedding, ``pooling`` ("avg", "max" or "gem": generalised mean
    with a learned exponent, :class:`whaleutils.training.layers.GeMPooling`),
    ``embedding_batchnorm``, and ``freeze_backbone_batchnorm``: the backbone's BatchNorm layers
    keep their pretrained statistics and scales (they run in inference mode), as when
    fine-tuning on a few thousand photos whose batches would give noisy statistics. With
    ``any_input_size`` the training model takes images of any size (progressive resizing:
    ``train.fit_progressive``); the embedding model still takes ``image_size``.

    Returns
    -------
    (training_model, embedding_model)
        ``training_model({"image", "label"}) -> logits (batch, n_classes)``;
        ``embedding_model(image) -> embeddings (batch, embedding_dim)`` (not normalised).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {list(POOLINGS)}, got pooling={pooling!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got dropout={dropout!r}")
    base, mode = build_backbone(backbone, None if any_input_size else image_size, weights)
    if freeze_backbone_batchnorm:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
    chain = [
        ImageNormalization(mode, name="normalization"),
        base,
        POOLINGS[pooling](name="pooling"),
        keras.layers.Dropout(dropout, name="dropout"),
        # The embedding layers compute in float32 under a mixed-precision policy, as the head.
        keras.layers.Dense(embedding_dim, name="embedding", dtype="float32"),
    ]
    if embedding_batchnorm:
        chain.append(keras.layers.BatchNormalization(name="embedding_bn", dtype="float32"))

    def embed(x):
        for layer in chain:
            x = layer(x)
        return x

    image = keras.Input(shape=(image_size, image_size, 3), name="image")
    embedding = embed(image)
    embedding_model = keras.Model(image, embedding, name=f"{backbone}_embedding")
    if any_input_size:  # the same layers, called on images of any size
        image = keras.Input(shape=(None, None, 3), name="image")
        embedding = embed(image)

    label = keras.Input(shape=(), dtype="int32", name="label")
    head = ArcMarginProduct(
        n_classes,
        s=s,
        m=m,
        easy_margin=easy_margin,
        ls_eps=ls_eps,
        k_subcenters=k_subcenters,
        class_margins=class_margins,
        name="arc_margin",
    )
    logits = head([embedding, label])
    training_model = keras.Model(
        {"image": image, "label": label}, logits, name=f"{backbone}_arcface"
    )
    _RECIPES[embedding_model] = {
        "builder": "build_model",
        "arguments": {
            "backbone": backbone, "image_size": int(image_size),
            "embedding_dim": int(embedding_dim), "dropout": float(dropout), "pooling": pooling,
            "embedding_batchnorm": bool(embedding_batchnorm),
            "weights": None,  # rebuilt without pretrained weights: the saved ones replace them
        },
    }  # fmt: skip
    return training_model, embedding_model


def build_basic_cnn(
    n_classes: int,
    image_size: int,
    filters: tuple[int, ...] = (32, 64, 128, 256),
    dense_units: int = 512,
    dropout: float = 0.45,
) -> tuple[keras.Model, keras.Model]:
    """The paper's first model: four Conv2D + MaxPool blocks, Dense 512, Dropout 0.45, softmax.

    Returns
    -------
    (training_model, embedding_model)
        ``training_model(image) -> class probabilities (batch, n_classes)``;
        ``embedding_model(image) -> the Dense 512 features (batch, dense_units)``.
    """
    image = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = ImageNormalization("unit", name="normalization")(image)
    for block, n_filters in enumerate(filters):
        x = keras.layers.Conv2D(
            n_filters, 3, padding="same", activation="relu", name=f"conv{block}"
        )(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    features = keras.layers.Dense(dense_units, activation="relu", name="embedding")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(features)
    probabilities = keras.layers.Dense(n_classes, activation="softmax", name="softmax")(x)
    training_model = keras.Model(image, probabilities, name="basic_cnn")
    embedding_model = keras.Model(image, features, name="basic_cnn_embedding")
    _RECIPES[embedding_model] = {
        "builder": "build_basic_cnn",
        "arguments": {
            "image_size": int(image_size), "filters": [int(f) for f in filters],
            "dense_units": int(dense_units), "dropout": float(dropout),
        },
    }  # fmt: skip
    return training_model, embedding_model


def input_image_size(model: keras.Model) -> int:
    """The square image side a model takes (its image input is (batch, S, S, 3)): what later
    stages must feed a trained model, read from the model rather than restated."""
    shapes = [tuple(tensor.shape) for tensor in model.inputs if len(tensor.shape) == 4]
    if len(shapes) != 1 or shapes[0][1] != shapes[0][2] or shapes[0][1] is None:
        found = [tuple(tensor.shape) for tensor in model.inputs]
        raise ValueError(f"{model.name}: expected one square image input, got inputs {found}")
    return int(shapes[0][1])


# embedding model -> how it was built: {"builder": name, "arguments": {...}} (JSON-able; the
# arguments the embedding model depends on; the head's class count is not among them)
_RECIPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
RECIPE_SUFFIX = ".recipe.json"
WEIGHTS_SUFFIX = ".weights.h5"


def portable_files(path) -> tuple[Path, Path]:
    """``(NAME.recipe.json, NAME.weights.h5)`` beside the model file ``NAME.keras``."""
    path = Path(path)
    stem = path.with_suffix("")
    return stem.with_name(stem.name + RECIPE_SUFFIX), stem.with_name(stem.name + WEIGHTS_SUFFIX)


def save_model(model: keras.Model, path) -> list[Path]:
    """Save ``model`` to ``path`` (``.keras``) and, for a model built by :func:`build_model` or
    :func:`build_basic_cnn`, its portable pair beside it (:func:`portable_files`): the weights
    and a recipe (builder, arguments, the Keras version, backend and dtype policy it was saved
    under, the weights file's SHA-256). Returns the files written.

    Each file is written under a temporary name and renamed, recipe last: a kill mid-save
    leaves no recipe pointing at half-written weights.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path, weights_path = portable_files(path)
    recipe_path.unlink(missing_ok=True)  # an older save's recipe must not describe these files
    written = [path]
    _save_then_rename(path, model.save)
    recipe = _RECIPES.get(model)
    if recipe is not None:
        _save_then_rename(weights_path, model.save_weights)
        recipe = {
            **recipe,
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "dtype_policy": keras.config.dtype_policy().name,
            "weights": weights_path.name,
            "weights_sha256": data.file_sha256(weights_path),
        }
        text = json.dumps(recipe, indent=1) + "\n"
        _save_then_rename(recipe_path, lambda temporary: temporary.write_text(text))
        written += [weights_path, recipe_path]
    return written


def _save_then_rename(path: Path, save) -> None:
    """``save(temporary)`` then the temporary file renamed to ``path``: whole or not at all.
    Keras checks the file name's ending, so the temporary name keeps it."""
    temporary = path.with_name(".partial-" + path.name)
    save(temporary)
    os.replace(temporary, path)


def read_recipe(path) -> dict | None:
    """The recipe saved beside the model file ``path``, or None if there is none.

    Raises
    ------
    ValueError
        Naming the file, if the recipe is not a recipe this package wrote, or its weights file
        is missing or not the one the recipe was saved with (SHA-256).
    """
    recipe_path, weights_path = portable_files(path)
    if not recipe_path.is_file():
        return None
    try:
        recipe = json.loads(recipe_path.read_text())
        builder, arguments = recipe["builder"], dict(recipe["arguments"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{recipe_path}: not a model recipe ({error})") from None
    if not isinstance(builder, str) or builder not in _BUILDERS:
        raise ValueError(
            f"{recipe_path}: unknown builder {str(builder)[:40]!r}; known: {sorted(_BUILDERS)}"
        )
    problem = _recipe_problem(builder, arguments)
    if problem:
        raise ValueError(f"{recipe_path}: {problem}; not a recipe this package wrote")
    if not weights_path.is_file():
        raise ValueError(f"{recipe_path}: its weights file {weights_path} is missing")
    if recipe.get("weights_sha256") != data.file_sha256(weights_path):
        raise ValueError(
            f"{weights_path}: not the weights {recipe_path.name} was saved with (SHA-256 "
            "differs): a partial copy, or files of two different models?"
        )
    return {**recipe, "arguments": arguments}


# What a recipe may say, per builder: each argument's type and, for numbers, its range.
RECIPE_ARGUMENTS = {
    "build_model": {
        "backbone": (str, None), "image_size": (int, (16, 2048)),
        "embedding_dim": (int, (1, 16384)), "dropout": (float, (0.0, 0.99)),
        "pooling": (str, None), "embedding_batchnorm": (bool, None), "weights": (type(None), None),
    },
    "build_basic_cnn": {
        "image_size": (int, (16, 2048)), "filters": (list, (1, 4096)),
        "dense_units": (int, (1, 16384)), "dropout": (float, (0.0, 0.99)),
    },
}  # fmt: skip


def _recipe_problem(builder: str, arguments: dict) -> str | None:
    """What is wrong with a recipe's ``arguments`` for ``builder`` (None: nothing)."""
    allowed = RECIPE_ARGUMENTS[builder]
    unknown = sorted(set(arguments) - set(allowed))
    if unknown:
        return f"unknown argument(s) {unknown} for {builder}"
    for name, value in arguments.items():
        kind, bounds = allowed[name]
        numbers = value if kind is list else [value]
        if kind is list and (not isinstance(value, list) or not value):
            return f"{name} must be a list of whole numbers, got {str(value)[:40]!r}"
        for number in numbers:
            wanted = int if kind is list else kind
            right_type = isinstance(number, wanted) and not (
                wanted in (int, float) and isinstance(number, bool)
            )
            if wanted is float and isinstance(number, int) and not isinstance(number, bool):
                right_type = True
            if not right_type:
                return f"{name} must be {wanted.__name__}, got {str(number)[:40]!r}"
            if bounds and not bounds[0] <= number <= bounds[1]:
                return f"{name} {number} is outside {bounds[0]}..{bounds[1]}"
    if builder == "build_model":
        if arguments.get("pooling", "avg") not in POOLINGS:
            return f"pooling must be one of {list(POOLINGS)}, got {arguments['pooling']!r}"
        if arguments.get("backbone") not in backbones.BACKBONES:
            return f"unknown backbone {str(arguments.get('backbone'))[:40]!r}"
    return None


def rebuild_model(recipe: dict, weights_path, dtype_policy: str = "float32") -> keras.Model:
    """The embedding model a recipe describes, built under ``dtype_policy`` (float32: it runs on
    any device, whatever precision it was trained in) with the saved weights."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(dtype_policy)
    try:  # the head is not part of the embedding model: one class will do
        _, model = _BUILDERS[recipe["builder"]](n_classes=1, **recipe["arguments"])
    finally:
        keras.config.set_dtype_policy(previous)
    model.load_weights(weights_path)
    return model


def load_model(path) -> keras.Model:
    """Load an embedding model saved by :func:`save_model`, or any ``.keras`` model saved from
    this package.

    With a recipe beside it the model is rebuilt in float32 from the recipe and weights (any
    Keras 3, any device). Otherwise the ``.keras`` file is loaded, after checking the Keras
    version it was saved with (:func:`check_keras_version`). Our layers register themselves
    when ``training.layers`` is imported (this module does); the ``efficientnet`` package
    registers its ``swish`` and ``FixedDropout`` when ``efficientnet.tfkeras`` is imported, so
    it is imported first where the model uses them.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    recipe = read_recipe(path)
    if recipe is not None:
        return rebuild_model(recipe, portable_files(path)[1])
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras says "File not found"
        raise ValueError(f"{path}: not a Keras model (a .keras file is a zip archive): damaged?")
    if path.suffix == ".keras":
        check_keras_version(saved_keras_version(path), keras.__version__, path)
    if _needs_efficientnet_package(path):
        import efficientnet.tfkeras  # noqa: F401  (registers swish and FixedDropout)
    return keras.models.load_model(path)


# Models saved by Keras 3.12 or later do not load in Keras 3.11 or earlier (keras PR #21681);
# Kaggle's GPU image follows Colab's Keras (3.10 at the last announcement).
FORMAT_BREAK = (3, 12)


def saved_keras_version(path) -> str | None:
    """The Keras version a ``.keras`` file was saved with (its ``metadata.json``), or None."""

    with zipfile.ZipFile(path) as archive:
        if "metadata.json" not in archive.namelist():
            return None
        return json.loads(archive.read("metadata.json")).get("keras_version")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def check_keras_version(saved: str | None, running: str, path="the model") -> None:
    """Refuse, with what to do, a model this Keras cannot load: saved by Keras >= 3.12 and
    loaded by an older one (the saving format changed). A model saved by a newer Keras than
    this one is loaded with a warning.

    Raises
    ------
    ValueError
        Naming the file and both versions.
    """
    if not saved:
        return
    if _version(saved) >= FORMAT_BREAK > _version(running):
        raise ValueError(
            f"{path}: saved by Keras {saved}, which this Keras {running} cannot load (the "
            f"format changed in {'.'.join(map(str, FORMAT_BREAK))}); install keras>="
            f"{'.'.join(map(str, FORMAT_BREAK))} in this kernel (pip install from an attached "
            "wheel), or run this notebook where the model was trained"
        )
    if _version(saved) > _version(running):
        warnings.warn(
            f"{path}: saved by Keras {saved}, loaded by the older Keras {running}",
            stacklevel=3,
        )


def _needs_efficientnet_package(path: Path) -> bool:
    """Whether a saved model uses the ``efficientnet`` package's objects (``swish``,
    ``FixedDropout``): only then is that package (and the scikit-image it imports, which
    Kaggle's TPU image lacks) imported to load it. Not a ``.keras`` zip: assumed so."""

    if path.suffix != ".keras":
        return True
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json").decode("utf-8", errors="replace")
    return "FixedDropout" in config or '"swish"' in config


_BUILDERS = {"build_model": build_model, "build_basic_cnn": build_basic_cnn}
