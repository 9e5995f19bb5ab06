"""Which validation gallery chooses k and the threshold that score best on test?

Reads a finished run's KNN notebooks (their saved ``train/valid/test.npz`` and ``scores.json``)
and, for each, chooses k and the distance threshold on the validation fold in two ways, then
scores both choices on the test set (the data set's ``test_solution.csv``), test queries always
matched against every labelled photo:

- ``train gallery``: validation photos matched against the training photos only (the rule
  before the mirrored gallery; test queries then see a 25% larger gallery than validation did);
- ``mirrored``: ``splits.Split``'s validation gallery (training photos plus the other known
  validation photos, each query's own photo left out), composed like the test gallery.

    python scripts/compare_validation_gallery.py runs/local [--data DATA_DIR]

Prints one Markdown table row per notebook and rule.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from whaleutils.retrieval import embed, heads, knn, splits
from whaleutils.suite import runner


def train_gallery_search(split: splits.Split, embeddings: dict, rule: str) -> dict:
    """The old rule: validation queries against the training photos only."""
    similarities, indices = knn.cosine_topk(
        embeddings["train"], embeddings["valid"], min(max(knn.K_GRID), len(split.train))
    )
    return knn.search_k_and_threshold(
        similarities,
        indices,
        split.train["individual_id"].to_numpy(),
        split.valid["target_id"].to_numpy(),
        rule,
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a profile's run folder, e.g. runs/local")
    parser.add_argument("--data", help="the data set (default: the one in summary.json)")
    parser.add_argument("--profile", default="local", help="whose fold settings (default local)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    data_dir = args.data or json.loads((run_dir / "summary.json").read_text())["data_dir"]
    common = runner.load_profile(args.profile)["_common"]
    split = splits.load_split(data_dir, common["fold"], common["n_folds"], common["seed"])
    if split.solution is None:
        raise SystemExit(f"{data_dir} has no test_solution.csv: nothing to compare on")
    print("| model | validation gallery | k | threshold | valid MAP@5 | test MAP@5 | known | new |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for notebook in ("03_resnet_arcmargin", "04_effnet_arcface"):
        folder = run_dir / notebook
        if not (folder / "test.npz").is_file():
            continue
        rule = json.loads((folder / "scores.json").read_text())["rule"]
        embeddings = {
            part: embed.load_embeddings(folder / f"{part}.npz")["embeddings"]
            for part in embed.PARTS
        }
        for name, search in (
            ("train gallery", train_gallery_search(split, embeddings, rule)),
            ("mirrored", heads.knn_search(split, embeddings, rule)),
        ):
            lists, _ = heads.knn_predictions(
                split, embeddings, "test", search["k"], search["threshold"], rule
            )
            test = heads.split_scores(split, "test", split.test["image"], lists)
            print(
                f"| {notebook} | {name} | {search['k']} | {search['threshold']:.4g} "
                f"| {search['map5']:.3f} | {test['map5']:.3f} | {test['map5_known']:.3f} "
                f"| {test['map5_new']:.3f} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
