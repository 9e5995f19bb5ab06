"""The learning-rate schedule of the paper (its figure 4): warm up, sustain, decay.

Linear warm-up from ``lr_start`` to ``lr_max`` over ``warmup_epochs``, ``lr_max`` held for
``sustain_epochs``, then exponential (geometric) decay that reaches ``lr_min`` at the last
epoch. ``lr_max`` scales with the global batch size (:func:`scaled_lr_max`), as in the public
Happywhale TPU notebooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable


def scaled_lr_max(lr_per_sample: float, global_batch_size: int) -> float:
    """``lr_per_sample * global_batch_size``: the linear scaling rule.

    Examples
    --------
    >>> scaled_lr_max(5e-6, 16 * 8)
    0.00064
    """
    if global_batch_size < 1:
        raise ValueError(
            f"global_batch_size must be >= 1, got global_batch_size={global_batch_size}"
        )
    return lr_per_sample * global_batch_size


def lr_at_epoch(
    epoch: int,
    epochs: int,
    lr_max: float,
    warmup_epochs: int = 5,
    sustain_epochs: int = 0,
    lr_start: float = 1e-6,
    lr_min: float = 1e-6,
) -> float:
    """Learning rate for a 0-based ``epoch`` of ``epochs``.

    ``epoch < warmup_epochs``: ``lr_start + (lr_max - lr_start) * epoch / warmup_epochs``;
    then ``lr_max`` for ``sustain_epochs``; then ``lr_max * (lr_min / lr_max) ** t`` with
    ``t`` going linearly from 0 at the first decay epoch to 1 at epoch ``epochs - 1``.

    Examples
    --------
    >>> [round(lr_at_epoch(e, 4, 1e-3, warmup_epochs=1, lr_min=1e-5), 6) for e in range(4)]
    [1e-06, 0.001, 0.0001, 1e-05]
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got epochs={epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs}), got epoch={epoch}")
    if min(warmup_epochs, sustain_epochs) < 0:
        raise ValueError(
            f"warmup_epochs and sustain_epochs must be >= 0, got {warmup_epochs}, {sustain_epochs}"
        )
    if min(lr_max, lr_start, lr_min) <= 0:
        raise ValueError(
            f"learning rates must be > 0, got lr_max={lr_max}, lr_start={lr_start}, lr_min={lr_min}"
        )
    if epoch < warmup_epochs:
        return lr_start + (lr_max - lr_start) * epoch / warmup_epochs
    decay_start = warmup_epochs + sustain_epochs
    if epoch < decay_start or epochs - 1 <= decay_start:
        return lr_max
    progress = (epoch - decay_start) / (epochs - 1 - decay_start)
    return lr_max * (lr_min / lr_max) ** progress


def paper_schedule(
    epochs: int, lr_max: float, warmup_epochs: int = 5, sustain_epochs: int = 0
) -> Callable[[int], float]:
    """The paper's schedule as ``epoch (0-based) -> learning rate`` (:func:`lr_at_epoch`), for
    ``train.fit``'s ``learning_rate_schedule`` and for plotting.

    Examples
    --------
    >>> schedule = paper_schedule(4, 1e-3, warmup_epochs=1)
    >>> schedule(1) == lr_at_epoch(1, 4, 1e-3, warmup_epochs=1)
    True
    """
    return functools.partial(
        lr_at_epoch,
        epochs=epochs,
        lr_max=lr_max,
        warmup_epochs=warmup_epochs,
        sustain_epochs=sustain_epochs,
    )
