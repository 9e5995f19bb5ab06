"""Pick the distribution strategy for the hardware at hand: TPU, several GPUs, or one device."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import tensorflow as tf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StrategyChoice:
    """The strategy, what it runs on ("tpu", "gpu", "cpu") and its replica count."""

    strategy: tf.distribute.Strategy
    kind: str
    replicas: int

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


def get_strategy(allow_tpu: bool = True) -> StrategyChoice:
    """TPU if one answers, else MirroredStrategy over several GPUs, else the default strategy.

    Logs (and returns) which was chosen and the replica count. Kaggle's TPU image ships
    tensorflow-cpu, which finds no TPU: the notebooks say so rather than silently train on CPU.
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
    choice = StrategyChoice(strategy, kind, strategy.num_replicas_in_sync)
    logger.info(
        "strategy: %s on %s with %d replica(s)", type(strategy).__name__, kind, choice.replicas
    )
    return choice
