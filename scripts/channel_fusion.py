"""Does a second local-feature channel (XFeat beside SIFT) add to the fused head? Measured on
validation before it is built into the head.

    python scripts/channel_fusion.py --data DATA_DIR --first SIFT_OUT --second XFEAT_OUT

``SIFT_OUT`` and ``XFEAT_OUT``: two ``scripts/local_matching.py --model RUN_DIR --parts valid``
outputs on the same split and embedding, one per detector (their ``pairs_valid.csv``). The two
tables are joined on (query, individual): the union of both channels' candidates. Where a
channel did not list a candidate (outside its LNBNN shortlist and the embedding's), its
evidence is imputed as weak: that query's lowest LNBNN score in the channel, the next rank
after its last, no inliers (an approximation: the candidate was not checked). Three fusions of
the joined table are fitted as ``fusion.FusedHead`` fits one (logistic regression, validation
probabilities cross-fitted on halves of the queries, the ``new_individual`` threshold chosen
on them): the first channel's features, the second's, and both. Prints known top-1 / top-5,
AUC and MAP@5 of each on validation only (test is not read).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.local_matching import evaluate
from whaleutils.retrieval import fusion, matching, splits

SHARED_COLUMNS = ["query", "individual", "similarity", "similarity_rank"]


def join_channels(first: pd.DataFrame, second: pd.DataFrame) -> pd.DataFrame:
    """The union of two channels' pairs: shared columns, then each channel's own (LNBNN, its
    rank, inliers, matches, photo) suffixed ``_1`` and ``_2``, a missing candidate's evidence
    imputed as weak (module doc)."""
    joined = first.merge(
        second, on=["query", "individual"], how="outer", suffixes=("_1", "_2"), validate="1:1"
    )
    for column in ("similarity", "similarity_rank"):
        joined[column] = joined[f"{column}_1"].combine_first(joined[f"{column}_2"])
    for suffix in ("_1", "_2"):
        grouped = joined.groupby("query")
        joined[f"lnbnn{suffix}"] = joined[f"lnbnn{suffix}"].fillna(
            grouped[f"lnbnn{suffix}"].transform("min")
        )
        joined[f"lnbnn_rank{suffix}"] = joined[f"lnbnn_rank{suffix}"].fillna(
            grouped[f"lnbnn_rank{suffix}"].transform("max") + 1
        )
        for column in ("inliers", "matches"):
            joined[f"{column}{suffix}"] = joined[f"{column}{suffix}"].fillna(0)
    return joined


def channel(joined: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """The joined table as one channel's pairs table (``fusion.fusion_features``' columns)."""
    columns = {f"{c}{suffix}": c for c in ("lnbnn", "lnbnn_rank", "inliers")}
    return joined[SHARED_COLUMNS + list(columns)].rename(columns=columns)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--first", required=True, help="local_matching.py output (SIFT)")
    parser.add_argument("--second", required=True, help="local_matching.py output (XFeat)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    split = splits.load_split(args.data, args.fold, args.n_folds, args.seed)
    queries = list(split.frame("valid")["image"])
    truth = dict(zip(queries, split.truth("valid", queries), strict=True))
    joined = join_channels(
        matching.read_pairs(Path(args.first) / "pairs_valid.csv"),
        matching.read_pairs(Path(args.second) / "pairs_valid.csv"),
    )
    features = {
        "first": fusion.fusion_features(channel(joined, "_1")),
        "second": fusion.fusion_features(channel(joined, "_2")),
    }
    features["both"] = np.column_stack([features["first"], features["second"][:, 1:3]])
    known = [q for q in queries if truth[q] != fusion.NEW_INDIVIDUAL]
    listed = joined.groupby("query")["individual"].apply(set)
    recall = np.mean([truth[q] in listed.get(q, set()) for q in known])
    print(f"{len(joined)} joined pairs; shortlist recall of the union {recall:.3f}")
    padding = split.frequent_ids("valid")
    print("fusion  known_top1 known_top5   auc  map5")
    for name, inputs in features.items():
        probability = cross_fitted(joined, inputs, truth)
        ranked = fusion.ranked_candidates(joined, probability)
        labels = [truth[q] for q in queries]
        threshold = fusion.best_threshold(ranked, queries, labels, padding, fusion.PROBABILITY_GRID)
        scores = evaluate(ranked, queries, truth, padding, threshold)
        print(
            f"{name:7} {scores['known_top1']:10.3f} {scores['known_top5']:10.3f} "
            f"{scores['auc']:5.3f} {scores['map5']:5.3f}"
        )
    return 0


def cross_fitted(pairs: pd.DataFrame, inputs: np.ndarray, truth: dict, seed: int = 0):
    """``fusion.cross_fitted_probability`` for any input columns: each half of the queries
    scored by a logistic regression (standardised inputs) fitted on the other half."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    same = fusion.same_animal(pairs, truth)
    first = fusion.query_halves(pairs, seed)
    result = np.zeros(len(pairs))
    for held in (first, ~first):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        model.fit(inputs[~held], same[~held])
        result[held] = model.predict_proba(inputs[held])[:, 1]
    return result


if __name__ == "__main__":
    raise SystemExit(main())
