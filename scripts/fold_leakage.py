"""How much do folds that split encounters overstate validation? Two trained runs of notebook 04
on one data set, one with photo-by-photo folds (``-p fold_groups null``) and one with encounter
folds (the default), compared on validation and on test.

For each run: validation and test MAP@5 (its ``scores.json``); nearest-neighbour top-1 of the
known photos (the query's nearest gallery photo is of its individual), split by how many
gallery photos of that individual the query may find (1, 2-3, 4 or more: the few-photo
individuals are where a burst-mate in the gallery helps most) and, for validation, by
whether a photo of the query's own encounter is in the training part. The galleries are the
notebooks' own (``heads.neighbours``: a validation photo never finds itself, nor, with
encounter folds, its own encounter).

Usage:
    python -m whaleutils run --profile local --out RUNS        # encounter folds (auto)
    python -m whaleutils run --profile local --out RUNS --only 04_effnet_arcface \\
        -p fold_groups null --variant photofolds
    python scripts/fold_leakage.py --data RUNS/data/synth-seed0-500ind-512px-v2 \\
        --runs RUNS/local/04_effnet_arcface-photofolds RUNS/local/04_effnet_arcface
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import embed, heads, splits

BUCKETS = ((1, 1), (2, 3), (4, None))


def known_top1(split, embeddings, part: str) -> pd.DataFrame:
    """One row per known query photo of ``part``: whether its nearest gallery photo is of its
    individual, the individual's gallery photos it may find, whether its encounter is in
    training."""
    _, indices, labels = heads.neighbours(split, embeddings, part, 1)  # the notebooks' gallery
    truth = np.asarray(split.truth(part, split.frame(part)["image"]), dtype=object)
    known = truth != NEW_INDIVIDUAL
    nearest = labels[indices[known, 0]]
    counts = pd.Series(labels).value_counts()
    own = split.own_gallery_rows(part).reshape(len(truth), -1)
    excluded = (own >= 0).sum(axis=1)[known]  # the query's own photo (and its encounter's)
    rows = pd.DataFrame(
        {
            "right": nearest == truth[known],
            "gallery_photos": counts.reindex(truth[known]).to_numpy() - excluded,
        }
    )
    frame = split.frame(part)
    if part == "valid" and "encounter" in frame:
        in_training = set(split.train["encounter"]) - {""}
        rows["own_encounter_in_training"] = frame["encounter"][known].isin(in_training).to_numpy()
    return rows


def report(run: Path, data_dir: Path) -> list[dict]:
    scores = json.loads((run / "scores.json").read_text())
    settings = scores["split"]
    split = splits.load_split(
        data_dir, settings["fold"], settings["n_folds"], settings["seed"],
        fold_groups=settings.get("fold_groups"),
    )  # fmt: skip
    embeddings = {part: embed.load_embeddings(run / f"{part}.npz")["embeddings"]
                  for part in ("train", "valid", "test")}  # fmt: skip
    out = []
    for part in ("valid", "test"):
        rows = known_top1(split, embeddings, part)
        line = {"run": run.name, "fold_groups": settings.get("fold_groups"), "part": part,
                "MAP@5": scores[part]["map5"], "known photos": len(rows),
                "known top-1": rows["right"].mean()}  # fmt: skip
        for low, high in BUCKETS:
            chosen = rows["gallery_photos"].between(low, high if high else np.inf)
            name = f"{low}" if low == high else f"{low}-{high}" if high else f"{low}+"
            line[f"top-1, {name} gallery photos"] = (
                f"{rows['right'][chosen].mean():.3f} ({int(chosen.sum())})"
            )
        if "own_encounter_in_training" in rows:
            leaked = rows["own_encounter_in_training"]
            line["share with own encounter in training"] = leaked.mean()
        out.append(line)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the data set both runs trained on")
    parser.add_argument("--runs", nargs="+", required=True, help="notebook 04 output folders")
    args = parser.parse_args()
    lines = [line for run in args.runs for line in report(Path(run), Path(args.data))]
    columns = list(dict.fromkeys(key for line in lines for key in line))
    print("| " + " | ".join(columns) + " |")
    print("|" + " --- |" * len(columns))
    for line in lines:
        cells = [line.get(c, "") for c in columns]
        print(
            "| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in cells) + " |"
        )


if __name__ == "__main__":
    main()
