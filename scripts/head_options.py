"""The KNN head's options on one trained model: which rule, gallery and new-individual rule score
best, chosen on validation and scored on test.

Embeds the data set once with the trained notebook's embedding model and TTA, the gallery's
mirror images too (``embed.embed_split(..., mirrored_gallery=True)``), then runs
``heads.knn_head`` with each option: the rule (vote, max, or best on validation), the flipped
gallery (off, on, or best on validation) and ``new_individual`` by the validated distance
threshold or by a share of the photos (the 1st-place solution's 0.165). Every choice of k and
threshold is made on the validation fold; the test column needs the data set's
``test_solution.csv`` and is shown, never used to choose.

    python scripts/head_options.py --model RUN_DIR --data DATA_DIR [--out DIR]

Prints one Markdown table row per option and writes ``head_options.csv`` into ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from whaleutils.contracts import outputs
from whaleutils.retrieval import embed, heads, splits
from whaleutils.suite import runner
from whaleutils.training import models

OPTIONS = (  # (name, rule, flipped_gallery, new_share)
    ("vote, threshold (the paper)", "vote", False, None),
    ("max", "max", False, None),
    ("best rule", "best", False, None),
    ("vote, flipped gallery", "vote", True, None),
    ("best rule, best gallery", "best", "best", None),
    ("vote, new share 0.165", "vote", False, 0.165),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained KNN notebook's output folder")
    parser.add_argument("--data", required=True, help="the data set it was trained on")
    parser.add_argument("--out", help="folder for head_options.csv (default: a temporary one)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    run = Path(args.model)
    scores = outputs.read_scores(run)
    common = runner.load_profile("local")["_common"]
    fold = scores.get("split", common)  # runs before fold records used the local profile's
    split = splits.load_split(args.data, fold["fold"], fold["n_folds"], fold["seed"])
    tta = str(embed.load_embeddings(run / "valid.npz")["tta"])
    out = Path(args.out or tempfile.mkdtemp(prefix="head-options-"))
    out.mkdir(parents=True, exist_ok=True)
    model = models.load_model(run / outputs.EMBEDDING_MODEL)
    embeddings = embed.embed_split(
        model, split, args.batch_size, out / "embeddings", tta, str(run), mirrored_gallery=True
    )
    rows = []
    for name, rule, flipped, share in OPTIONS:
        folder = out / name.replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
        folder.mkdir(exist_ok=True)
        result = heads.knn_head(
            split, embeddings, folder, rule, new_share=share, flipped_gallery=flipped
        )
        rows.append(
            {
                "option": name,
                "chosen": f"{result['rule']}, k={result['k']}"
                + (", flipped" if result["flipped_gallery"] else ""),
                "valid_map5": result["valid"]["map5"],
                "test_map5": (result["test"] or {}).get("map5"),
                "test_known": (result["test"] or {}).get("map5_known"),
                "test_new": (result["test"] or {}).get("map5_new"),
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out / "head_options.csv", index=False)
    print(f"{run} on {args.data} (fold {fold['fold']} of {fold['n_folds']}), TTA {tta}")
    print("| option | chosen on validation | valid MAP@5 | test MAP@5 | known | new |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        cells = [f"{row[key]:.3f}" if row[key] is not None else "-" for key in
                 ("valid_map5", "test_map5", "test_known", "test_new")]  # fmt: skip
        print(f"| {row['option']} | {row['chosen']} | " + " | ".join(cells) + " |")
    print(f"written: {out / 'head_options.csv'}")


if __name__ == "__main__":
    main()
