"""The classifier's own opinion as an input of the fused head: does it add what the gallery lacks?

    python scripts/classifier_opinion.py --data DATA_DIR --run RUN_DIR --pairs PAIRS_DIR

``RUN_DIR``: a finished notebook 04 (its ``valid.npz``, ``test.npz``, ``train.npz``,
``labels.json``, ``scores.json`` and ``run/final.weights.h5``, whose ArcFace layer holds one
centre per training whale); ``PAIRS_DIR``: the candidate pairs of that run's embeddings
(``pairs_valid.csv``, ``pairs_test.csv``: ``scripts/local_matching.py --model RUN_DIR`` or the
notebook's ``local/``).

For every pair, ``centre``: the cosine between the query's embedding and its candidate's ArcFace
centre (the head's logit before the scale), or, for a whale the head has no class for (seen only
in validation), the cosine to the normalised mean of its gallery embeddings. Two fused heads are
fitted the way ``fusion.FusedHead.calibrate`` fits one (a logistic regression on validation
pairs, scored cross-fitted on validation, the ``new_individual`` threshold chosen there): with
``fusion.FUSION_FEATURES``, and with those and ``centre``. Test is scored once with each.
Prints known top-1 / top-5, the known-vs-new AUC and MAP@5 of each on both parts, and the
ArcFace centre alone as a ranking of the candidates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from whaleutils.contracts import metrics
from whaleutils.retrieval import embed, fusion, matching, splits

SHORTLIST = 20  # the pairs' (matching.LocalSettings.shortlist)


def arcface_centres(run_dir: Path) -> tuple[list[str], np.ndarray]:
    """(training whales (n,), their L2-normalised ArcFace centres (n, d)) of a run."""
    whales = json.loads((run_dir / "labels.json").read_text())["individual_ids"]
    path = run_dir / "run" / "final.weights.h5"
    found = []
    with h5py.File(path, "r") as weights:
        weights.visititems(
            lambda name, item: (
                found.append(item[()])
                if isinstance(item, h5py.Dataset) and "arc_margin" in name and item.ndim == 2
                else None
            )
        )
    if len(found) != 1 or found[0].shape[1] != len(whales):
        shapes = [f.shape for f in found]
        raise ValueError(
            f"{path}: expected one ArcFace kernel (d, {len(whales)}), found {shapes} "
            "(sub-centre and mirrored heads are not read here)"
        )
    return whales, embed.l2_normalize(found[0].T.astype(np.float64))


def centre_cosines(pairs, queries, names, centres, gallery, gallery_labels) -> tuple:
    """(pairs,) the cosine of each pair's query to its candidate's centre: the ArcFace one
    where the head has the whale (``centres``: name -> (d,)), else the normalised mean of its
    gallery photos; and how many pairs took the second."""
    row_of = {name: i for i, name in enumerate(names)}
    means = {}
    result = np.empty(len(pairs))
    fallback = 0
    for i, (query, whale) in enumerate(zip(pairs["query"], pairs["individual"], strict=True)):
        centre = centres.get(whale)
        if centre is None:
            fallback += 1
            if whale not in means:
                mean = gallery[gallery_labels == whale].mean(axis=0, keepdims=True)
                means[whale] = embed.l2_normalize(mean)[0]
            centre = means[whale]
        result[i] = float(queries[row_of[query]] @ centre)
    return result, fallback


def fit(inputs: np.ndarray, same: np.ndarray):
    """A standardised logistic regression (``fusion.fit_fusion``'s): a probability function."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(inputs)
    model = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(inputs), same)
    return lambda x: model.predict_proba(scaler.transform(x))[:, 1]


def cross_fitted(pairs, inputs, same, seed: int = 0) -> np.ndarray:
    """Validation probabilities, each half of the queries by a fit on the other half (the
    halves of ``fusion.cross_fitted_probability``)."""
    queries = np.array(sorted(pairs["query"].unique()))
    half = set(np.random.default_rng(seed).permutation(queries)[: len(queries) // 2])
    first = pairs["query"].isin(half).to_numpy()
    result = np.zeros(len(pairs))
    for held in (first, ~first):
        result[held] = fit(inputs[~held], same[~held])(inputs[held])
    return result


def scores(ranked, truth, threshold, padding) -> dict:
    queries = list(truth)
    lists = fusion.predictions(ranked, queries, threshold, padding)
    return {
        "known_top1": fusion.known_accuracy(ranked, truth, 1),
        "known_top5": fusion.known_accuracy(ranked, truth, 5),
        "auc": fusion.known_vs_new_auc(ranked, truth),
        "map5": metrics.map_at_k([truth[q] for q in queries], lists),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True, help="a finished notebook 04 folder")
    parser.add_argument("--pairs", required=True, help="pairs_valid.csv and pairs_test.csv")
    args = parser.parse_args(argv)
    run_dir, pairs_dir = Path(args.run), Path(args.pairs)
    recorded = json.loads((run_dir / "scores.json").read_text())["split"]
    split = splits.load_recorded_split(recorded, args.data, source=str(run_dir))
    embeddings = {
        part: embed.load_embeddings(run_dir / f"{part}.npz")["embeddings"]
        for part in ("train", "valid", "test")
    }
    whales, kernel = arcface_centres(run_dir)
    centres = dict(zip(whales, kernel, strict=True))
    parts, rows = {}, []
    for part in ("valid", "test"):
        pairs = matching.read_pairs(pairs_dir / f"pairs_{part}.csv")
        names = list(split.frame(part)["image"])
        truth = dict(zip(names, split.truth(part, names), strict=True))
        labels = split.gallery_labels(part).astype(str)
        centre, fallback = centre_cosines(
            pairs, embeddings[part], names, centres, split.gallery(part, embeddings), labels
        )
        base = fusion.fusion_features(pairs, SHORTLIST)
        parts[part] = {
            "pairs": pairs, "truth": truth, "same": fusion.same_animal(pairs, truth),
            "inputs": {"fused": base, "fused + centre": np.column_stack([base, centre])},
            "centre": centre, "padding": split.frequent_ids(part),
        }  # fmt: skip
        print(f"{part}: {len(pairs)} pairs, {fallback} of whales without an ArcFace class")
    valid, test = parts["valid"], parts["test"]
    for name in ("fused", "fused + centre"):
        crossed = cross_fitted(valid["pairs"], valid["inputs"][name], valid["same"])
        ranked_valid = fusion.ranked_candidates(valid["pairs"], crossed)
        queries = list(valid["truth"])
        threshold = fusion.best_threshold(
            ranked_valid, queries, [valid["truth"][q] for q in queries], valid["padding"]
        )
        probability = fit(valid["inputs"][name], valid["same"])(test["inputs"][name])
        ranked_test = fusion.ranked_candidates(test["pairs"], probability)
        for part, ranked in (("valid", ranked_valid), ("test", ranked_test)):
            found = scores(ranked, parts[part]["truth"], threshold, parts[part]["padding"])
            rows.append({"head": name, "part": part, **found, "threshold": threshold})
    for part in ("valid", "test"):  # the ArcFace centre alone, over the same candidates
        ranked = fusion.ranked_candidates(parts[part]["pairs"], parts[part]["centre"])
        truth = parts[part]["truth"]
        top1, top5 = (fusion.known_accuracy(ranked, truth, k) for k in (1, 5))
        rows.append({"head": "centre alone", "part": part, "known_top1": top1, "known_top5": top5})
    table = pd.DataFrame(rows).set_index(["head", "part"])
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
