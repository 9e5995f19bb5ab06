"""Spread training over the devices at hand, on either Keras backend, behind one interface.

- TensorFlow: ``TPUStrategy`` if a TPU answers, ``MirroredStrategy`` over several GPUs, else
  the default strategy (one GPU or the CPU).
- JAX: ``keras.distribution.DataParallel`` over every device JAX sees (the 8 chips of a TPU
  v5e-8, several GPUs, or CPU devices made with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=N``); one device needs nothing.

Either way the model is built inside :meth:`StrategyChoice.scope`, the global batch is the
per-replica batch times the replicas, and ``describe()`` says the backend, the device kind and
their count. Kaggle's TPU image ships tensorflow-cpu, Keras 3 and jax[tpu]: only Keras on JAX
uses its TPU, and on a TPU machine where the chosen backend sees none, :func:`get_strategy`
raises with what to do (:data:`environment.TPU_UNUSED_HINT`) rather than train for hours on the
host CPU.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import keras

from whaleutils.contracts import environment

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


@dataclass(frozen=True)
class StrategyChoice:
    """What training runs on: the Keras ``backend``, the device ``kind`` ("tpu", "gpu", "cpu"),
    the ``replicas`` (devices the batch is split over) and the ``device_name`` (e.g.
    "TPU v5 lite"), with the TensorFlow ``strategy`` or the JAX ``distribution`` that spreads
    the work (None where one device needs none)."""

    backend: str
    kind: str
    replicas: int
    device_name: str
    strategy: Any = None  # tf.distribute.Strategy on TensorFlow
    distribution: Any = None  # keras.distribution.Distribution on JAX

    def describe(self) -> str:
        """One plain sentence: backend, device kind and count, how the batch is spread."""
        spreader = self.strategy if self.strategy is not None else self.distribution
        how = "one device" if spreader is None else f"data-parallel ({type(spreader).__name__})"
        return (
            f"Keras on {self.backend}: {self.replicas} {self.kind} device(s) "
            f"({self.device_name}), {how}"
        )

    def global_batch_size(self, per_replica_batch_size: int) -> int:
        """Per-replica batch (16 in the paper) times the replicas."""
        return per_replica_batch_size * self.replicas

    def scope(self):
        """The context to build and compile the model in (its variables are then laid out on
        every replica)."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def precision(self, requested: str = "auto") -> str:
        """The Keras dtype policy to train with: ``requested``, or for "auto" bfloat16 mixed
        precision on TPUs (their matrix units compute in bfloat16), float16 on GPUs (the T4's
        tensor cores; Keras adds dynamic loss scaling) and float32 on CPUs. The ArcFace head and
        the embedding layers stay float32 under any policy."""
        if requested not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {requested!r}")
        if requested != "auto":
            return requested
        return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}.get(self.kind, "float32")


def _connect_tpu():
    """A TPUStrategy if a TPU answers: the TPU-node resolver first, then the TPU-VM "local" one."""
    import tensorflow as tf

    for tpu in (None, "local"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            if tpu is None:
                tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (
            ValueError,
            RuntimeError,
            tf.errors.NotFoundError,
            tf.errors.InvalidArgumentError,
        ) as error:
            logger.debug("no TPU through resolver tpu=%r: %s", tpu, error)
    return None


def _tensorflow_choice(allow_tpu: bool) -> StrategyChoice:
    import tensorflow as tf

    strategy = _connect_tpu() if allow_tpu else None
    if strategy is not None:
        return StrategyChoice(
            "tensorflow", "tpu", strategy.num_replicas_in_sync, "TPU", strategy=strategy
        )
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
        return StrategyChoice("tensorflow", "gpu", len(gpus), "GPU", strategy=strategy)
    return StrategyChoice("tensorflow", "gpu" if gpus else "cpu", 1, "GPU" if gpus else "CPU")


def _jax_choice() -> StrategyChoice:
    import jax

    devices = jax.devices()  # the default platform's: TPU, else GPU, else CPU
    kind = devices[0].platform
    name = devices[0].device_kind
    if len(devices) == 1:
        return StrategyChoice("jax", kind, 1, name)
    distribution = keras.distribution.DataParallel(devices=devices)
    # Keras on JAX lays out variables and shards each batch by the global distribution.
    keras.distribution.set_distribution(distribution)
    return StrategyChoice("jax", kind, len(devices), name, distribution=distribution)


def get_strategy(allow_tpu: bool = True, tpu_host: bool | None = None) -> StrategyChoice:
    """Spread training over every device the Keras backend in use sees.

    On TensorFlow: a TPU if one answers (``allow_tpu``), else MirroredStrategy over several
    GPUs, else one device. On JAX: DataParallel over all of JAX's devices, set as Keras' global
    distribution (so ``fit`` shards each batch over them).

    Raises
    ------
    RuntimeError
        On a TPU machine (``tpu_host``, detected by default) where the backend sees no TPU,
        with what to do: :data:`environment.TPU_UNUSED_HINT`.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        choice = _jax_choice()
    elif backend == "tensorflow":
        choice = _tensorflow_choice(allow_tpu)
    else:
        raise ValueError(f"training runs on the tensorflow or jax backend, not {backend}")
    if tpu_host is None:
        tpu_host = environment.tpu_host()
    if tpu_host and choice.kind != "tpu":
        raise RuntimeError(environment.TPU_UNUSED_HINT.format(backend=backend))
    logger.info(choice.describe())
    return choice


def describe_devices(tpu_host: bool | None = None) -> str:
    """What a single-device notebook runs on, in one plain sentence (with a warning on a TPU
    machine where the backend sees no TPU: such a notebook runs on the host CPU)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        text = f"Keras on jax runs this notebook on {device.platform} ({device.device_kind})"
        uses_tpu = device.platform == "tpu"
    else:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            text = (
                f"Keras on tensorflow runs this notebook on the GPU ({len(gpus)} visible, "
                "the first is used)"
            )
        else:
            text = "Keras on tensorflow runs this notebook on the CPU (no GPU visible)"
        uses_tpu = bool(tf.config.list_logical_devices("TPU"))
    if tpu_host is None:
        tpu_host = environment.tpu_host()
    if tpu_host and not uses_tpu:
        return f"{text}. WARNING: {environment.TPU_UNUSED_HINT.format(backend=backend)}"
    return text
