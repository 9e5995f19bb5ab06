"""Planted duplicates: a catalogue in which some whales are known under two ids, to measure
how well ``curate duplicates`` finds them.

    python scripts/plant_duplicates.py plant --data DATA_DIR --out CATALOGUE [--pairs 20]
        [--labels LABELS.csv] [--from unseen|seen] [--seed 0]
    python -m whaleutils curate duplicates --model RUN_DIR --catalogue CATALOGUE --out OUT
    python scripts/plant_duplicates.py score --catalogue CATALOGUE --duplicates OUT/duplicates.csv

``plant`` makes a new catalogue from a prepared data set (``prepare``'s or ``synth``'s
``DATA_DIR``): its train photos, and its test photos of the animals the model never trained on
(``test_solution.csv`` calls them ``new_individual``; their own ids come from ``--labels``, the
file ``prepare`` read, or a ``truth.csv``). ``--pairs`` whales with at least four photos
(``--from unseen``: of those the model never saw, the honest case; ``--from seen``: of its
training whales, whose photos it learned to put together; ``--from any``: of the train part
alone, for a set the model never saw, e.g. ``synth`` with another seed) have their
photos split in two at random, whole encounters at a time where the set has encounters: one
half keeps the id, the other gets ``planted-NN``. ``planted.csv`` says which. Photos are hard
links to the data set's (copies where links fail): nothing of the data set changes.

``score`` reports, for the planted pairs, the rank ``curate duplicates`` gave each (its
``duplicates.csv``) and how many are among its first 20, 40 and 100 pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.datasets import data

PLANTED_FILE = "planted.csv"
SOURCES = {
    "unseen": "of the test part, absent from train: the model never saw them",
    "seen": "of the train part: the model trained on them",
    "any": "of the train part of a set the model did not train on",
}


def true_ids(data_dir: Path, labels: Path | None) -> dict[str, str]:
    """Each test photo's own id (image -> id): ``labels`` (``prepare``'s input: image paths
    whose file names are the data set's), else the synthetic set's ``truth.csv``."""
    if labels is not None:
        frame = data.read_csv(labels)
        return dict(zip(frame["image"].map(lambda p: Path(p).name), frame["individual_id"],
                        strict=True))  # fmt: skip
    truth = data_dir / "truth.csv"
    if not truth.is_file():
        raise ValueError(f"{data_dir}: give --labels (the file prepare read) or a truth.csv")
    frame = data.read_csv(truth)
    return dict(zip(frame["image"], frame["individual_id"], strict=True))


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def plant(data_dir: Path, out: Path, pairs: int, labels: Path | None, source: str, seed: int):
    train = data.read_csv(data_dir / "train.csv")
    if source == "any":  # the train part alone (a set the model never saw: another seed's)
        solution = pd.DataFrame(columns=["image", "individual_id", "species"])
    else:
        solution = data.read_csv(data_dir / "test_solution.csv")
    unseen = solution[solution["individual_id"] == NEW_INDIVIDUAL]
    own = true_ids(data_dir, labels) if len(unseen) else {}
    missing = sorted(set(unseen["image"]) - set(own))
    if missing:
        raise ValueError(f"no true id for {len(missing)} test photo(s), e.g. {missing[0]}")
    added = unseen[["image", "species"]].assign(individual_id=unseen["image"].map(own))
    added = added.reindex(columns=train.columns).fillna("")
    metadata = data_dir / "test_metadata.csv"
    if metadata.is_file():  # a synthetic set's test encounters, dates, places
        extra = data.read_csv(metadata).set_index("image")
        for column in set(extra.columns) & set(train.columns):
            added[column] = added["image"].map(extra[column]).fillna("")
    catalogue = pd.concat([train, added], ignore_index=True)
    pool = set(added["individual_id"]) if source == "unseen" else set(train["individual_id"])
    if source == "unseen" and not pool:
        raise ValueError(f"{data_dir}: no test photo of an animal absent from train")
    counts = catalogue["individual_id"].value_counts()
    candidates = sorted(name for name in pool if counts[name] >= 4)
    if len(candidates) < pairs:
        raise ValueError(f"only {len(candidates)} whales have 4 photos or more ({SOURCES[source]})")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(candidates, size=pairs, replace=False))
    records = []
    for number, individual in enumerate(chosen, start=1):
        rows = catalogue.index[catalogue["individual_id"] == individual]
        groups = (
            catalogue.loc[rows, "encounter"].where(catalogue.loc[rows, "encounter"] != "",
                                                   catalogue.loc[rows, "image"])
            if "encounter" in catalogue else catalogue.loc[rows, "image"]
        )  # fmt: skip
        names = list(dict.fromkeys(groups))
        rng.shuffle(names)
        moved = set(names[: len(names) // 2]) if len(names) > 1 else set()
        planted = f"planted-{number:02d}"
        moving = rows[groups.isin(moved).to_numpy()]
        catalogue.loc[moving, "individual_id"] = planted
        records.append((individual, planted, len(rows) - len(moving), len(moving)))
    out.mkdir(parents=True, exist_ok=False)
    (out / "train_images").mkdir()
    (out / "test_images").mkdir()
    (out / "sample_submission.csv").write_text("image,predictions\n")
    for image in train["image"]:
        _link(data_dir / "train_images" / image, out / "train_images" / image)
    for image in added["image"]:
        _link(data_dir / "test_images" / image, out / "train_images" / image)
    catalogue.to_csv(out / "train.csv", index=False)
    planted = pd.DataFrame(records, columns=["individual_id", "planted_id", "photos", "planted"])
    planted.to_csv(out / PLANTED_FILE, index=False)
    print(
        f"{out}: {len(catalogue)} photos of {catalogue['individual_id'].nunique()} ids; "
        f"{pairs} whales ({SOURCES[source]}) split in two ({planted['planted'].sum()} photos "
        f"moved): "
        f"{out / PLANTED_FILE}"
    )


def score(catalogue: Path, duplicates: Path) -> dict:
    planted = data.read_csv(catalogue / PLANTED_FILE)
    ranked = data.read_csv(duplicates)
    rank_of = {
        frozenset((a, b)): int(rank)
        for a, b, rank in zip(ranked["individual_a"], ranked["individual_b"], ranked["rank"],
                              strict=True)
    }  # fmt: skip
    ranks = [
        rank_of.get(frozenset((a, b)))
        for a, b in zip(planted["individual_id"], planted["planted_id"], strict=True)
    ]
    found = [rank for rank in ranks if rank is not None]
    report = {
        "planted": len(planted),
        "pairs_ranked": len(ranked),
        **{f"in_first_{n}": sum(rank <= n for rank in found) for n in (20, 40, 100)},
        "not_ranked": len(ranks) - len(found),
        "ranks": sorted(found),
    }
    print(json.dumps(report))
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plant")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--labels", type=Path)
    p.add_argument("--from", dest="source", choices=["unseen", "seen", "any"], default="unseen")
    p.add_argument("--seed", type=int, default=0)
    s = commands.add_parser("score")
    s.add_argument("--catalogue", required=True, type=Path)
    s.add_argument("--duplicates", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "plant":
            plant(args.data, args.out, args.pairs, args.labels, args.source, args.seed)
        else:
            score(args.catalogue, args.duplicates)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
