"""A training notebook's snapshots as blend members, embedded where they were trained.

:func:`snapshot_members` embeds every snapshot embedding model a notebook saved at its own
image size with the notebook's TTA and runs it through the notebook's KNN head, writing
``SNAPSHOT_FILES`` per snapshot, so the blend (``analysis.out_of_fold``) only reads files.
"""

from __future__ import annotations

import os
from pathlib import Path

from whaleutils.contracts import outputs, submission
from whaleutils.retrieval import embed, heads

SNAPSHOT_FILES = (
    "train.npz",
    "valid.npz",
    "test.npz",
    "oof_predictions.csv",
    "test_predictions.csv",
)


def snapshot_members(
    split,
    member_folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    batch_size: int,
    final_epoch: int | None = None,
) -> list[Path]:
    """Every snapshot embedding model a trained notebook saved (``member_folder/run/snapshots/
    epoch-NNN.keras``; none for most notebooks) as a blend member: embedded at its own image
    size with the notebook's TTA (``embed.embed_split``) and run through the KNN head with the
    notebook's settings (its ``scores.json``: ``heads.settings_predictions``). Writes
    ``out_dir/<snapshot>/`` with ``{train,valid,test}.npz`` and ``{oof,test}_predictions.csv``;
    returns those folders. The snapshot of ``final_epoch`` is skipped: it is the notebook's own
    model, already a member."""
    from whaleutils.training import models

    paths = [
        path
        for path in sorted((Path(member_folder) / "run" / "snapshots").glob("epoch-*.keras"))
        if final_epoch is None or path.stem != f"epoch-{final_epoch:03d}"
    ]
    if not paths:
        return []
    run = outputs.read_run_settings(member_folder)
    settings, tta = run.scores, run.tta
    folders = []
    for path in paths:
        folder = Path(out_dir) / path.stem
        folder.mkdir(parents=True, exist_ok=True)
        embeddings = embed.embed_split(
            models.load_model(path), split, batch_size, folder, tta, str(path),
            mirrored_gallery=run.knn.flipped_gallery,
        )  # fmt: skip
        for name, part in (("oof_predictions.csv", "valid"), ("test_predictions.csv", "test")):
            lists, scores = heads.settings_predictions(split, embeddings, part, settings)
            submission.write_predictions(
                folder / name, split.frame(part)["image"], lists, scores, overwrite=True
            )
        folders.append(folder)
    return folders
