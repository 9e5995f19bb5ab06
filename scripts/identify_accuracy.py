"""How well ``identify`` does on a prepared data set: its train part as the catalogue, its test
photos as the new photos, scored against ``test_solution.csv``.

Usage: python scripts/identify_accuracy.py --model RUN_DIR --data DATA_DIR --out OUT_DIR

Prints top-1 and top-5 accuracy on the photos of known individuals, precision and recall of
the new-individual verdict, seconds per query photo (reading, embedding and matching; the
catalogue excluded) and the catalogue's embedding rate (photos per second, cache not used).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from whaleutils.catalogue import identify
from whaleutils.contracts.metrics import NEW_INDIVIDUAL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    data = Path(args.data)
    solution = pd.read_csv(data / "test_solution.csv", dtype=str)
    started = time.perf_counter()
    identifier = identify.Identifier(args.model, data, None)
    catalogue_seconds = time.perf_counter() - started  # model loading included
    photos = [data / "test_images" / name for name in solution["image"]]
    started = time.perf_counter()
    matches = identifier.match(photos, top=5)
    query_seconds = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    matches.to_csv(out / "matches.csv", index=False)

    truth = dict(zip(map(str, photos), solution["individual_id"], strict=True))
    by_photo = matches.groupby("photo", sort=False)
    ranked = by_photo["individual_id"].apply(list)
    said_new = by_photo["new_individual"].first()
    known = [p for p in ranked.index if truth[p] != NEW_INDIVIDUAL]
    top1 = sum(ranked[p][0] == truth[p] for p in known) / len(known)
    top5 = sum(truth[p] in ranked[p][:5] for p in known) / len(known)
    is_new = pd.Series({p: truth[p] == NEW_INDIVIDUAL for p in ranked.index})
    true_positive = int((said_new & is_new).sum())
    precision = true_positive / max(1, int(said_new.sum()))
    recall = true_positive / max(1, int(is_new.sum()))
    print(
        f"catalogue: {len(identifier.index.table)} photos of "
        f"{identifier.index.table['individual_id'].nunique()} individuals, embedded at "
        f"{len(identifier.index.table) / catalogue_seconds:.1f} photos/s (model loading included)"
    )
    print(
        f"queries: {len(photos)} photos ({len(known)} of known individuals, {int(is_new.sum())} "
        f"new), {len(identifier.skipped)} skipped, {query_seconds / len(photos):.3f} s per photo"
    )
    print(f"known individuals: top-1 accuracy {top1:.3f}, top-5 accuracy {top5:.3f}")
    verdict = (
        f"distance threshold {identifier.matcher.threshold:.4f}"
        if identifier.fused_head is None
        else f"fused head, probability threshold {identifier.fused_head.threshold:.2f}"
    )
    print(
        f"new-individual verdict ({verdict}): precision "
        f"{precision:.3f}, recall {recall:.3f} ({int(said_new.sum())} photos called new)"
    )
    if identifier.fused_head is not None:
        verified = by_photo.head(1).set_index("photo")
        accepted = verified[verified["verified"]]
        right = sum(accepted.loc[p, "individual_id"] == truth[p] for p in accepted.index)
        print(f"verified tier: {len(accepted)} photos' first candidate verified, {right} rightly")


if __name__ == "__main__":
    main()
