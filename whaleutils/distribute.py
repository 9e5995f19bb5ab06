"""Pick the distribution strategy for the hardware at hand: TPU, several GPUs, or one device."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tensorflow as tf

from whaleutils import environment

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyChoice:
    """The strategy, what it runs on ("tpu", "gpu", "cpu"), its replica count, and a warning
    (``note``) when the machine has an accelerator that TensorFlow cannot use."""

    strategy: tf.distribute.Strategy
    kind: str
    replicas: int
    note: str = ""

    def describe(self) -> str:
        """One plain sentence on what training runs on, plus the note if there is one."""
        text = f"running on {self.kind} with {self.replicas} replica(s)"
        return f"{text}. WARNING: {self.note}" if self.note else text

    def global_batch_size(self, per_replica_batch_size: int) -> int:
        """Per-replica batch (16 in the paper) times the replicas."""
        return per_replica_batch_size * self.replicas


def _connect_tpu() -> tf.distribute.Strategy | None:
    """A TPUStrategy if a TPU answers: the TPU-node resolver first, then the TPU-VM "local" one."""
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


def _unused_tpu_note(tpu_host: bool | None, tensorflow_uses_tpu: bool) -> str:
    """The install hint on a TPU machine (``tpu_host``, detected if None) where TensorFlow
    does not use the TPU; else empty."""
    if tpu_host is None:
        tpu_host = environment.tpu_host()
    return environment.TPU_INSTALL_HINT if tpu_host and not tensorflow_uses_tpu else ""


def describe_devices(tpu_host: bool | None = None) -> str:
    """What TensorFlow will run a single-device notebook on, in one plain sentence (with the
    unused-TPU warning on a TPU machine where TensorFlow sees no TPU)."""
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        text = f"TensorFlow runs this notebook on the GPU ({len(gpus)} visible, the first is used)"
    else:
        text = "TensorFlow runs this notebook on the CPU (no GPU visible)"
    note = _unused_tpu_note(tpu_host, bool(tf.config.list_logical_devices("TPU")))
    return f"{text}. WARNING: {note}" if note else text


def get_strategy(allow_tpu: bool = True, tpu_host: bool | None = None) -> StrategyChoice:
    """TPU if one answers, else MirroredStrategy over several GPUs, else the default strategy.

    Logs (and returns) which was chosen and the replica count. Kaggle's TPU image ships
    tensorflow-cpu, which finds no TPU: on a TPU machine (``tpu_host``, detected by default)
    where TensorFlow finds none, the choice carries a ``note`` saying so and how to fix it,
    rather than silently training on the CPU.
    """
    strategy = _connect_tpu() if allow_tpu else None
    if strategy is not None:
        kind = "tpu"
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            strategy, kind = tf.distribute.MirroredStrategy([g.name for g in gpus]), "gpu"
        else:
            strategy, kind = tf.distribute.get_strategy(), "gpu" if gpus else "cpu"
    note = _unused_tpu_note(tpu_host, kind == "tpu")
    choice = StrategyChoice(strategy, kind, strategy.num_replicas_in_sync, note)
    if note:
        logger.warning("a TPU is attached but TensorFlow cannot use it: %s", note)
    logger.info(
        "strategy: %s on %s with %d replica(s)", type(strategy).__name__, kind, choice.replicas
    )
    return choice
