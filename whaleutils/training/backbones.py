"""The backbones: one record each, read by the model builder, the weights lookup, preflight and
the docs' table.

A :class:`Backbone` says everything the code knows about one backbone: how it is built
(``build(image_size, weights)``: a Keras model without its top, (batch, S, S, 3) 0-255 RGB to a
feature map), the input normalisation it expects (a mode of ``layers.ImageNormalization``), the
named weights it accepts and the file each is saved as (what Keras would download, and what a
Kaggle kernel without internet finds attached), the backends it builds under and the optional
package it needs. Adding a backbone is one record in ``BACKBONES`` and its test.

Importing this module does not import Keras (preflight and the weights lookup read it before a
notebook chooses its backend); a record's ``build`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from whaleutils.contracts import environment

ALL_BACKENDS = ("tensorflow", "jax")
BACKEND_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX"}


@dataclass(frozen=True)
class Backbone:
    """One backbone: its name, builder, input normalisation, weights and needs.

    ``weights``: the named weights it accepts besides None (random) and the path of a weights
    file; ``weight_files``: the file each named set is saved as, where one exists;
    ``package``: the optional top-level module it imports (None: Keras alone);
    ``backends``: the Keras backends it builds under; ``source``: where it comes from, for the
    docs' table."""

    name: str
    build: Callable
    normalization: str
    source: str
    weights: tuple[str, ...] = ()
    weight_files: Mapping[str, str] = field(default_factory=dict)
    backends: tuple[str, ...] = ALL_BACKENDS
    package: str | None = None

    def check_weights(self, weights) -> None:
        """Raise naming the accepted values unless ``weights`` is None, one of ``weights`` or
        the path of an existing file."""
        if weights is None or weights in self.weights:
            return
        if isinstance(weights, str | os.PathLike) and Path(weights).is_file():
            return
        raise ValueError(
            f"weights must be one of {[None, *self.weights]} or the path of an existing weights "
            f"file for {self.name}, got weights={weights!r}"
        )

    def check_backend(self, backend: str) -> None:
        """Raise, naming what to use instead, if the backbone does not build under ``backend``."""
        if backend in self.backends:
            return
        alternative = BACKBONES.get(f"keras-{self.name}")
        hint = (
            f": use {alternative.name!r}, the same architecture from {alternative.source}, "
            "which loads the same weights"
            if alternative is not None and backend in alternative.backends
            else ""
        )
        raise ValueError(
            f"backbone {self.name!r} ({self.source}) runs on "
            f"{' and '.join(BACKEND_NAMES[b] for b in self.backends)} only, and Keras runs on "
            f"{backend}{hint}"
        )


def _resnet50(image_size: int, weights=None):
    import keras

    return keras.applications.ResNet50(
        include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
    )


def _efficientnet_lite(variant: int) -> Callable:
    def build(image_size: int, weights=None):
        from whaleutils.training import efficientnet_lite

        return efficientnet_lite.build(image_size, weights, variant=variant)

    return build


def _qubvel_efficientnet(variant: int) -> Callable:
    def build(image_size: int, weights=None):
        import efficientnet.tfkeras as efficientnet

        constructor = getattr(efficientnet, f"EfficientNetB{variant}")
        weights = str(weights) if isinstance(weights, os.PathLike) else weights
        return constructor(include_top=False, weights=weights, input_shape=(image_size,) * 2 + (3,))

    return build


def _keras_efficientnet(variant: int) -> Callable:
    def build(image_size: int, weights=None):
        from whaleutils.training import models

        return models.keras_efficientnet(variant, image_size, weights)

    return build


def _records() -> dict[str, Backbone]:
    records = [
        Backbone(
            "resnet50",
            _resnet50,
            normalization="caffe",
            source="keras.applications",
            weights=("imagenet",),
            weight_files={"imagenet": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"},
        ),
        *(
            Backbone(
                f"efficientnet-lite{variant}",
                _efficientnet_lite(variant),
                normalization="lite",
                source="training.efficientnet_lite (ImageNet weights from the package index)",
                weights=("imagenet",),
            )
            for variant in (0, 1, 2)
        ),
    ]
    for variant in range(8):
        qubvel = f"efficientnet-b{variant}"
        noisy_student = f"{qubvel}_noisy-student_notop.h5"  # qubvel's release file
        records.append(
            Backbone(
                qubvel,
                _qubvel_efficientnet(variant),
                normalization="torch",
                source="the efficientnet package (qubvel)",
                weights=("imagenet", "noisy-student"),
                weight_files={
                    "noisy-student": noisy_student,
                    "imagenet": f"{qubvel}_weights_tf_dim_ordering_tf_kernels_autoaugment_notop.h5",
                },
                backends=("tensorflow",),
                package="efficientnet",
            )
        )
        records.append(
            Backbone(
                f"keras-{qubvel}",
                _keras_efficientnet(variant),
                normalization="none",  # the model rescales its input itself
                source="keras.applications",
                weights=("imagenet", "noisy-student"),
                weight_files={
                    "noisy-student": noisy_student,  # loaded by layer name (models)
                    "imagenet": f"efficientnetb{variant}_notop.h5",
                },
            )
        )
    records.sort(key=lambda record: record.name.startswith("keras-"))  # stable: B0-B7 each
    return {record.name: record for record in records}


BACKBONES: dict[str, Backbone] = _records()


def get(name: str) -> Backbone:
    """The record of backbone ``name``; raises naming every known backbone."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {list(BACKBONES)}")
    return BACKBONES[name]


def packages() -> dict[str, list[str]]:
    """Each optional package a backbone needs, with the backbones that need it."""
    needed: dict[str, list[str]] = {}
    for record in BACKBONES.values():
        if record.package:
            needed.setdefault(record.package, []).append(record.name)
    return needed


def weights_file_name(backbone: str, weights) -> str | None:
    """The file a backbone's named weights are saved as (what Keras would download), or None
    (an unknown backbone, unnamed weights, or weights with no file of their own)."""
    record = BACKBONES.get(backbone)
    if record is None or not isinstance(weights, str):
        return None
    return record.weight_files.get(weights)


def attached_weights(backbone: str, weights, root: str | os.PathLike | None = None):
    """``weights`` resolved to an attached file when one is mounted under ``root``.

    A named set of weights ("noisy-student", "imagenet") is replaced by the path of its
    ``.h5`` file if an attached dataset under ``root`` (default ``environment.KAGGLE_INPUT``)
    holds it, so a kernel without internet can load it; otherwise the name is returned
    unchanged (Keras then downloads it, which needs internet). None and explicit paths are
    returned unchanged.
    """
    if not isinstance(weights, str) or Path(weights).suffix == ".h5":
        return weights
    file_name = weights_file_name(backbone, weights)
    if file_name is None:
        return weights
    found = environment.find_file(file_name, root)
    return str(found) if found is not None else weights


def markdown_table() -> str:
    """The docs' table of backbones (docs/models.md holds it; a test checks it is current)."""
    rows = [
        "| backbone | from | input normalisation | named weights | backends | needs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for record in BACKBONES.values():
        rows.append(
            f"| `{record.name}` | {record.source} | `{record.normalization}` | "
            f"{', '.join(record.weights) or '-'} | {', '.join(record.backends)} | "
            f"{record.package or '-'} |"
        )
    return "\n".join(rows)
