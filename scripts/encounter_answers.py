"""Encounters as one query: what answering a whole encounter at once gains against answering
its photos one by one, measured on one fold of a data set with encounters.

    python scripts/encounter_answers.py --data DATA_DIR --pairs PAIRS_DIR --out OUT [--fold 0]

``PAIRS_DIR`` holds the candidate pairs of validation and test (``pairs_valid.csv``,
``pairs_test.csv``: notebook 04's ``local/`` or ``scripts/local_matching.py``'s output, made
with ``--shortlist``). Validation photos' encounters are ``train.csv``'s ``encounter`` column,
test photos' ``test_metadata.csv``'s; a photo without one is its own encounter.

The fused head is calibrated on validation (``fusion.FusedHead.calibrate``: cross-fitted pair
probabilities). Photo by photo, each photo gets its per-photo answer (``answers.PhotoAnswer``,
cross-fitted on validation). By encounter, each rule of ``answers.GROUP_RULES`` adds up the
photos' pair logits per candidate whale (``answers.group_pairs``), a per-photo answer is fitted
on validation encounters (cross-fitted by encounter halves) and every photo takes its
encounter's answer. The rule is chosen on validation (the most photos answered rightly:
``fusion.fit_encounter_answer``, as notebook 04's fused head chooses it); test is scored once,
photo by photo and with that rule. Scores are per photo
(``answers.answer_calibration`` and the photos named a whale from p_answer 0.9, with the
share right); writes ``encounter_answers.json`` into OUT and prints a table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from whaleutils.contracts import metrics
from whaleutils.retrieval import answers, fusion, matching, splits

NEW = metrics.NEW_INDIVIDUAL
NAMING_LEVEL = 0.9


def photo_scores(photos: pd.DataFrame, truth: dict[str, str]) -> dict:
    """Per-photo calibration and the photos named a whale from ``NAMING_LEVEL``."""
    scores = answers.answer_calibration(photos, truth)
    named = photos[(photos["answer"] != NEW) & (photos["p_answer"] >= NAMING_LEVEL)]
    right = int((named["answer"] == named["query"].map(truth)).sum())
    known = sum(t != NEW for t in truth.values())
    scores[f"named_from_{NAMING_LEVEL}"] = len(named)
    scores[f"named_right_from_{NAMING_LEVEL}"] = right / len(named) if len(named) else None
    scores["known_named_rightly"] = right / max(known, 1)
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--pairs", required=True, help="a folder of pairs_valid/test.csv")
    parser.add_argument("--out", required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shortlist", type=int, default=20, help="the pairs' shortlist")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    split = splits.load_split(args.data, args.fold, args.n_folds, args.seed)
    settings = matching.LocalSettings(shortlist=args.shortlist)
    pairs, truth, group_of = {}, {}, {}
    for part in ("valid", "test"):
        queries = list(split.frame(part)["image"])
        truth[part] = dict(zip(queries, split.truth(part, queries), strict=True))
        pairs[part] = matching.read_pairs(Path(args.pairs) / f"pairs_{part}.csv")
        group_of[part] = split.encounters(part)
    head, crossed = fusion.FusedHead.calibrate(
        pairs["valid"], truth["valid"], settings, split.frequent_ids("valid"),
        encounters=group_of["valid"],
    )  # fmt: skip
    if head.encounter_answer is None:
        raise SystemExit(f"{args.data}: its validation photos have no encounters of 2 or more")
    short = head.in_shortlist(pairs["valid"])
    photos = {
        "valid": fusion.cross_fitted_answers(pairs["valid"][short], crossed[short], truth["valid"]),
        "test": head.answer_photos(pairs["test"], list(truth["test"]))[1],
    }
    results = {("photo by photo", part): photo_scores(photos[part], truth[part]) for part in photos}
    by_rule = fusion.fit_encounter_answer(
        pairs["valid"][short], crossed[short], truth["valid"], group_of["valid"]
    )[1]
    for rule, valid_photos in by_rule.items():
        results[(f"by encounter ({rule})", "valid")] = photo_scores(valid_photos, truth["valid"])
    chosen = head.encounter_answer.rule
    test_photos = head.answer_encounters(pairs["test"], list(truth["test"]), group_of["test"])
    results[(f"by encounter ({chosen})", "test")] = photo_scores(test_photos, truth["test"])

    sizes = {
        part: pd.Series([group_of[part].get(q, q) for q in truth[part]]).value_counts()
        for part in truth
    }
    report = {
        "settings": vars(args),
        "chosen_rule": chosen,
        "encounters": {
            part: {
                "photos": int(size.sum()),
                "encounters": len(size),
                "photos_in_encounters_of_2_or_more": int(size[size > 1].sum()),
            }
            for part, size in sizes.items()
        },  # fmt: skip
        "results": {f"{method} {part}": scores for (method, part), scores in results.items()},
    }
    (out / "encounter_answers.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"encounters: {report['encounters']}; rule chosen on validation: {chosen}")
    columns = ["known_top1", "answer_right", "answer_ece", "new_ece", "known_vs_new_auc",
               "known_named_rightly",
               f"named_right_from_{NAMING_LEVEL}"]  # fmt: skip
    table = pd.DataFrame(
        [{"method": m, "part": p, **{c: v[c] for c in columns}} for (m, p), v in results.items()]
    ).set_index(["method", "part"])
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
