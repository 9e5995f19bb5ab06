"""Local-feature matching and its fusion with the embedding, measured on one fold of a data set.

    python scripts/local_matching.py --data DATA_DIR --out OUT [--model RUN_DIR] [--fold 0]
    python scripts/local_matching.py --data DATA_DIR --out OUT --pairs RUN_DIR/local

``--pairs`` reads the candidate pairs that notebook 04's fused head wrote (``pairs_valid.csv``,
``pairs_test.csv``, made with the settings in its ``scores.json``) instead of computing them.

Every choice is made on the validation fold; the test split (``test_solution.csv``) is scored
once with those choices. For each part the script extracts RootSIFT features (cached in OUT),
builds the candidate pairs (``matching.candidate_pairs``: LNBNN over all gallery descriptors
and, with ``--model``, the run's embeddings, each shortlisting ``--shortlist`` individuals,
all verified by RANSAC), then scores these rankings:

- ``embedding``: best cosine similarity per individual (needs ``--model``)
- ``lnbnn``: the LNBNN score alone
- ``lnbnn+inliers``: inlier count, LNBNN breaking ties
- ``fused``: notebook 04's fused head, ``fusion.FusedHead.calibrate`` on validation pairs (its
  validation figures are cross-fitted: each half of the validation queries scored by a model
  fitted on the other half; its threshold and verified tier are the head's)

with known top-1 and top-5 accuracy, the known-vs-new ROC AUC of the best score, and MAP@5 with
the ``new_individual`` threshold chosen on validation (for the other rankings, from the
quantiles of their best scores, whatever their scale). Writes ``pairs_valid.csv``,
``pairs_test.csv``, ``local_matching.json`` and the test photos in the verified tier
(``pseudo_labels.csv``, notebook 04's ``pseudo_labels`` for a second round), and the per-photo
answer's calibration (``local_matching.json``'s ``photo_answer``; its reliability diagrams in
``reliability.png``); prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import metrics
from whaleutils.retrieval import answers, embed, fusion, local_features, matching, splits

NEW = metrics.NEW_INDIVIDUAL


def threshold_grid(ranked, queries):
    """Thresholds for any score scale: the best scores' quantiles, and both extremes."""
    best = np.array([ranked[q][0][1] if ranked.get(q) else -np.inf for q in queries])
    grid = np.unique(np.quantile(best[np.isfinite(best)], np.linspace(0, 1, 101)))
    return np.concatenate([[-np.inf], grid, [np.inf]])


def evaluate(ranked, queries, truth, padding, threshold):
    lists = fusion.predictions(ranked, queries, threshold, padding)
    split_scores = metrics.map_at_k_split([truth[q] for q in queries], lists)
    return {
        "known_top1": fusion.known_accuracy(ranked, truth, 1),
        "known_top5": fusion.known_accuracy(ranked, truth, 5),
        "auc": fusion.known_vs_new_auc(ranked, truth),
        "map5": split_scores["map5"],
        "map5_known": split_scores["map5_known"],
        "map5_new": split_scores["map5_new"],
        "threshold": float(threshold),
    }


def method_scores(pairs, name):
    """The score each single-evidence ranking gives each pair."""
    if name == "embedding":
        return pairs["similarity"].to_numpy()
    if name == "lnbnn":
        return pairs["lnbnn"].to_numpy()
    return pairs["inliers"].to_numpy() + 1e-3 * pairs["lnbnn"].rank(pct=True).to_numpy()


def verified_share(pairs, truth, inliers):
    """Of the queries whose best candidate by inliers has at least ``inliers``: how many,
    how many rightly, how many new (wrong by definition)."""
    best = fusion.best_by_inliers(pairs)
    accepted = best[best["inliers"] >= inliers]
    right = accepted["individual"].to_numpy() == accepted["query"].map(truth).to_numpy()
    known = sum(t != NEW for t in truth.values())
    return {
        "accepted": len(accepted),
        "precision": float(right.mean()) if len(accepted) else float("nan"),
        "share_of_known": float(right.sum() / known) if known else float("nan"),
        "new_accepted": int(accepted["query"].map(truth).eq(NEW).sum()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", help="a trained notebook's output folder (its .npz files)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortlist", type=int, default=20)
    parser.add_argument("--max-side", type=int, default=224)
    parser.add_argument("--clahe", action="store_true")
    parser.add_argument("--detector", default="sift", choices=sorted(local_features.DETECTORS))
    parser.add_argument("--max-keypoints", type=int, default=0, help="per photo; 0: all")
    parser.add_argument("--lnbnn-k", type=int, default=1)
    parser.add_argument(
        "--lnbnn-normaliser", default="next", choices=local_features.LNBNN_NORMALISERS
    )
    parser.add_argument("--transform", default="affine", choices=local_features.TRANSFORMS)
    parser.add_argument("--ratio", type=float, default=0.8)
    parser.add_argument("--verify-photos", type=int, default=10)
    parser.add_argument("--parts", nargs="+", default=["valid", "test"])
    parser.add_argument("--pairs", help="a fused head's folder (RUN_DIR/local): its pairs, read")
    parser.add_argument(
        "--precision", type=float, nargs="*", default=[0.95],
        help="identify --precision values to choose on validation and score on test",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = splits.load_split(args.data, args.fold, args.n_folds, args.seed)
    settings = matching.LocalSettings(
        max_side=args.max_side, clahe=args.clahe, detector=args.detector,
        max_keypoints=args.max_keypoints, lnbnn_k=args.lnbnn_k,
        lnbnn_normaliser=args.lnbnn_normaliser,
        shortlist=args.shortlist, ratio=args.ratio,
        transform=args.transform, verify_photos=args.verify_photos,
    )  # fmt: skip
    features = embeddings = None
    if args.pairs is None:
        started = time.perf_counter()
        features = matching.split_features(
            split, settings.features, out / local_features.CACHE_FILE
        )
        n_photos = sum(len(v) for v in features.values())
        print(f"features of {n_photos} photos in {time.perf_counter() - started:.0f} s")
    if args.model:
        embeddings = {}
        for part in ("train", "valid", "test"):
            stored = embed.load_embeddings(Path(args.model) / f"{part}.npz")
            if list(stored["image_names"]) != list(split.frame(part)["image"]):
                raise ValueError(f"{args.model}/{part}.npz: photos differ from the split's {part}")
            embeddings[part] = stored["embeddings"]
    report = {"settings": vars(args), "parts": {}}
    pairs_by_part, truth_by_part = {}, {}
    for part in args.parts:
        queries = list(split.frame(part)["image"])
        started = time.perf_counter()
        if args.pairs is None:
            pairs = matching.part_pairs(split, part, features, embeddings, settings)
            pairs.to_csv(out / f"pairs_{part}.csv", index=False)
        else:
            pairs = matching.read_pairs(Path(args.pairs) / f"pairs_{part}.csv")
        seconds = time.perf_counter() - started
        truth = dict(zip(queries, split.truth(part, queries), strict=True))
        pairs_by_part[part], truth_by_part[part] = pairs, truth
        listed = pairs.groupby("query")["individual"].apply(set)
        known = [q for q in queries if truth[q] != NEW]
        report["parts"][part] = {
            "queries": len(queries),
            "seconds_per_query": seconds / max(len(queries), 1),
            "shortlist_recall": float(np.mean([truth[q] in listed.get(q, set()) for q in known])),
        }
        print(f"{part}: {len(queries)} queries, {seconds / len(queries):.3f} s each")
    has_similarity = any(p["similarity"].notna().any() for p in pairs_by_part.values())
    methods = (["embedding"] if has_similarity else []) + [
        "lnbnn", "lnbnn+inliers", "fused",
    ]  # fmt: skip
    head = crossed = None
    if "valid" in pairs_by_part:
        head, crossed = fusion.FusedHead.calibrate(
            pairs_by_part["valid"], truth_by_part["valid"], settings,
            split.frequent_ids("valid"),
        )  # fmt: skip
    results = {}
    for method in methods:
        if method == "fused" and head is None:
            continue
        threshold = None
        for part in ("valid", "test"):
            if part not in pairs_by_part:
                continue
            pairs, truth = pairs_by_part[part], truth_by_part[part]
            queries = list(truth)
            padding = split.frequent_ids(part)
            if method == "fused":
                ranked = (
                    fusion.ranked_candidates(pairs, crossed) if part == "valid"
                    else head.rank(pairs)
                )  # fmt: skip
                threshold = head.threshold
            else:
                ranked = fusion.ranked_candidates(pairs, method_scores(pairs, method))
                if part == "valid":
                    labels = [truth[q] for q in queries]
                    grid = threshold_grid(ranked, queries)
                    threshold = fusion.best_threshold(ranked, queries, labels, padding, grid)
            results[(method, part)] = evaluate(ranked, queries, truth, padding, threshold)
    report["results"] = {f"{m} {p}": v for (m, p), v in results.items()}
    if head is not None:
        report["fusion"] = head.fusion.to_json()
        report["verified_inliers"] = head.verified_inliers
        if "test" in pairs_by_part and report["verified_inliers"] is not None:
            report["verified_test"] = verified_share(
                pairs_by_part["test"], truth_by_part["test"], report["verified_inliers"]
            )
        if "test" in pairs_by_part:  # a second round's pseudo-labels (notebook 04's file)
            tier = fusion.pseudo_labels(
                pairs_by_part["test"], head.verified_inliers, split.encoding.individual_ids
            )
            tier.to_csv(out / fusion.PSEUDO_LABELS_FILE, index=False)
            truth = truth_by_part["test"]
            pairs_of = zip(tier["image"], tier["individual_id"], strict=True)
            right = [truth[image] == individual for image, individual in pairs_of]
            report["pseudo_labels"] = {
                "photos": len(tier),
                "right": float(np.mean(right)) if right else None,
            }
    if head is not None and "test" in pairs_by_part:  # identify --precision P, on test
        ranked_test = head.rank(pairs_by_part["test"])
        report["named_precision"] = {}
        for precision in args.precision:
            try:
                chosen = head.named_precision(precision)
            except ValueError as error:
                report["named_precision"][str(precision)] = str(error)
                continue
            chosen["test"] = named_on(ranked_test, truth_by_part["test"], chosen["threshold"])
            report["named_precision"][str(precision)] = chosen
    if head is not None:  # the per-photo answer, calibrated on validation
        report["photo_answer"] = photo_answer_report(head, crossed, pairs_by_part, truth_by_part)
        parts = report["photo_answer"].pop("parts")
        answers.plot_reliability(parts).savefig(out / "reliability.png", dpi=110)
    (out / "local_matching.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    table = pd.DataFrame(
        [{"method": m, "part": p, **v} for (m, p), v in results.items()]
    ).set_index(["method", "part"])
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    for part, info in report["parts"].items():
        print(f"{part}: shortlist recall {info['shortlist_recall']:.3f}")
    if "verified_inliers" in report:
        print(
            f"verified tier (98% precision on validation): >= {report['verified_inliers']} "
            f"inliers; on test {report.get('verified_test')}"
        )
    for precision, chosen in report.get("named_precision", {}).items():
        print(f"--precision {precision}: {chosen}")
    for name, scores in report.get("photo_answer", {}).items():
        print(f"per-photo answer, {name}: {scores}")
    return 0


NAMING_LEVELS = (0.5, 0.7, 0.9)  # p_answer from which a photo's whale is taken as named


def photo_answer_report(head, crossed, pairs_by_part: dict, truth_by_part: dict) -> dict:
    """The per-photo answer's calibration (``answers.answer_calibration``) on validation
    (cross-fitted), on test with validation's new share and, labelled as the oracle, with
    test's own share stated (what ``identify --new-share`` gives a user who knows it); and,
    per level of ``p_answer``, the photos named a whale from it and how often rightly.
    ``parts``: the photos and truths for the reliability figure."""
    result, parts = {}, {}
    valid_pairs, valid_truth = pairs_by_part["valid"], truth_by_part["valid"]
    short = head.in_shortlist(valid_pairs)
    answered = {
        "validation (cross-fitted)": (
            fusion.cross_fitted_answers(valid_pairs[short], crossed[short], valid_truth),
            valid_truth,
        )
    }
    if "test" in pairs_by_part:
        pairs, truth = pairs_by_part["test"], truth_by_part["test"]
        answered["test"] = (head.answer_photos(pairs, list(truth))[1], truth)
        share = float(np.mean([t == NEW for t in truth.values()]))
        stated = dataclasses.replace(head, answer=head.answer.with_new_share(share))
        answered[f"test, its own new share {share:.3f} stated (oracle)"] = (
            stated.answer_photos(pairs, list(truth))[1], truth,
        )  # fmt: skip
    for name, (photos, truth) in answered.items():
        scores = answers.answer_calibration(photos, truth)
        scores["new_share"] = float(np.mean([truth[q] == NEW for q in photos["query"]]))
        for level in NAMING_LEVELS:
            scores[f"named_from_{level}"] = named_from(photos, truth, level)
        result[name] = scores
    parts.update({name: value for name, value in answered.items() if "oracle" not in name})
    return {**result, "parts": parts}


def named_from(photos: pd.DataFrame, truth: dict, level: float) -> dict:
    """The per-photo answers (``answers.ANSWER_COLUMNS``) that name a whale at ``p_answer``
    >= ``level``: how many, the share right (with its Wilson lower bound) and the share of the
    known photos named rightly."""
    named = photos[(photos["answer"] != NEW) & (photos["p_answer"] >= level)]
    right = (named["answer"] == named["query"].map(truth)).to_numpy()
    known = sum(t != NEW for t in truth.values())
    return {
        "named": len(named),
        "right": float(right.mean()) if len(named) else None,
        "lower_bound": fusion.wilson_lower_bound(int(right.sum()), len(named)),
        "share_of_known_named_rightly": float(right.sum() / max(known, 1)),
    }


def named_on(ranked: dict, truth: dict, threshold: float) -> dict:
    """What ``identify --precision`` does on scored photos: those whose best candidate has at
    least ``threshold`` are named; the share named rightly (with its Wilson lower bound) and
    the share of the known photos named."""
    named = [q for q in truth if ranked.get(q) and ranked[q][0][1] >= threshold]
    right = sum(ranked[q][0][0] == truth[q] for q in named)
    known = [q for q in truth if truth[q] != NEW]
    return {
        "named": len(named),
        "right": right / len(named) if named else None,
        "lower_bound": fusion.wilson_lower_bound(right, len(named)),
        "share_of_known_named": sum(truth[q] != NEW for q in named) / max(len(known), 1),
        "new_named": sum(truth[q] == NEW for q in named),
    }


if __name__ == "__main__":
    raise SystemExit(main())
