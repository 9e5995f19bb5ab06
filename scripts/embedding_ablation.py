"""The embedding alone, measured for each trained notebook 04 run: what a change of recipe did.

    python scripts/embedding_ablation.py --data DATA_DIR RUN_DIR [RUN_DIR ...] [--tta rot4]

For each run folder (a finished notebook 04: ``train.npz``, ``valid.npz``, ``test.npz``,
``scores.json``, ``log.csv``, ``run/done.json``) and each part:

- validation: the validation photos against the training photos (the gallery notebook 04
  chose k and the threshold on); test: the test photos against training and validation photos,
  scored with the data set's ``test_solution.csv`` (shown, never used to choose);
- ``known top-1`` / ``top-5``: the share of photos of a known whale whose whale is first / in
  the first five when whales are ranked by their best cosine similarity to the photo
  (``best``); top-1 also by the cosine to each whale's centre (the normalised mean of its
  gallery embeddings, the data's own class centre: ``centre``) and by the mean of the two;
- ``recall@20``: the share whose whale is among the 20 the embedding shortlists for the fused
  head (``LocalSettings.shortlist``);
- ``MAP@5``: the KNN head's own (``scores.json``: k, threshold and rule chosen on validation);
- and the training: epochs, the last epoch's accuracy, minutes of training (every stage).

``--tta MODE`` embeds the photos again with the run's model and another TTA
(``embed.TTA_MODES``, e.g. ``rot4``), into ``RUN_DIR/tta-MODE/``, and scores that instead (the
KNN head run again there: the run's rule, k and threshold chosen again on validation): a TTA
costs no training, only its views' time per photo, which is printed.

Prints one Markdown row per run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.contracts import outputs
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.retrieval import embed, heads, matching, splits

SHORTLIST = 20


def whale_scores(queries: np.ndarray, gallery: np.ndarray, labels: np.ndarray) -> tuple:
    """(whales (w,), {ranking: (q, w)}): each gallery whale's best cosine similarity to each
    query (``best``, the fused head's ``similarity``), the cosine to the whale's centre (the
    normalised mean of its gallery embeddings: ``centre``) and their mean (``both``)."""
    whales, index = np.unique(labels, return_inverse=True)
    similarity = matching.photo_similarities(queries, gallery)
    best = matching.individual_maxima(similarity, labels, whales)
    centres = np.stack([gallery[index == column].mean(axis=0) for column in range(len(whales))])
    centre = queries @ embed.l2_normalize(centres).T
    return whales, {"best": best, "centre": centre, "both": (best + centre) / 2}


def ranking_scores(queries, gallery, gallery_labels, truth) -> dict:
    """Known top-1, top-5 and recall@SHORTLIST of each ranking of :func:`whale_scores` (top-5
    and recall for ``best`` only, the ranking the fused head shortlists by)."""
    whales, rankings = whale_scores(queries, gallery, np.asarray(gallery_labels))
    truth = np.asarray(truth)
    known = truth != NEW_INDIVIDUAL
    result = {}
    for name, scores in rankings.items():
        ranked = whales[np.argsort(-scores[known], axis=1)]
        hits = ranked == truth[known, None]
        result[f"known top-1 ({name})"] = float(hits[:, 0].mean())
        if name == "best":
            result["known top-5"] = float(hits[:, :5].any(axis=1).mean())
            result[f"recall@{SHORTLIST}"] = float(hits[:, :SHORTLIST].any(axis=1).mean())
    result["known photos"] = int(known.sum())
    return result


def training_record(run: Path) -> dict:
    log = pd.read_csv(run / "log.csv")
    seconds = 0.0
    for done in [run / "run" / "done.json", *sorted((run / "run" / "stages").glob("*/done.json"))]:
        if done.is_file():
            seconds += float(json.loads(done.read_text()).get("seconds", 0.0))
    return {
        "epochs": len(log),
        "accuracy": float(log["accuracy"].iloc[-1]),
        "training min": seconds / 60,
    }


def re_embed(run: Path, data: Path, tta: str) -> tuple[Path, float]:
    """Embed every part again with the run's model and ``tta`` into ``run/tta-TTA`` and run
    the KNN head there (the run's rule; k and the threshold chosen again on validation);
    returns the folder and the seconds per photo (NaN when the folder was already complete)."""
    from whaleutils.training import models

    folder = run / f"tta-{tta}"
    if (folder / "scores.json").is_file():
        return folder, float("nan")
    folder.mkdir(exist_ok=True)
    recorded = json.loads((run / "scores.json").read_text())
    split_settings = {k: v for k, v in recorded["split"].items() if k != "crop_to_box"}
    split = splits.load_split(data, **split_settings)
    model = models.load_model(run / outputs.EMBEDDING_MODEL)
    started = time.perf_counter()
    embeddings = embed.embed_split(model, split, 32, folder, tta, f"{run} {tta}")
    seconds = (time.perf_counter() - started) / sum(len(split.frame(p)) for p in splits.PARTS)
    heads.knn_head(split, embeddings, folder, recorded["rule"], member=recorded.get("member"))
    return folder, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--tta", choices=list(embed.TTA_MODES))
    arguments = parser.parse_args()
    solution = pd.read_csv(arguments.data / "test_solution.csv")
    identity = pd.read_csv(arguments.data / "train.csv").set_index("image")["individual_id"]
    rows = []
    for run in arguments.runs:
        folder, seconds = (
            re_embed(run, arguments.data, arguments.tta) if arguments.tta else (run, None)
        )
        parts = {part: embed.load_embeddings(folder / f"{part}.npz") for part in splits.PARTS}
        train, valid, test = parts["train"], parts["valid"], parts["test"]
        row = {"run": str(run), "tta": str(valid["tta"])}
        if seconds is not None:
            row["seconds per photo"] = seconds
        scores = {
            "valid": ranking_scores(
                valid["embeddings"], train["embeddings"], train["labels"], valid["labels"]
            ),
        }
        gallery = np.concatenate([train["embeddings"], valid["embeddings"]])
        gallery_labels = np.concatenate(
            [train["labels"], identity.loc[valid["image_names"]].to_numpy()]
        )
        truth = solution.set_index("image").loc[test["image_names"], "individual_id"].to_numpy()
        scores["test"] = ranking_scores(test["embeddings"], gallery, gallery_labels, truth)
        knn_scores = json.loads((folder / "scores.json").read_text())
        for part in ("valid", "test"):
            for name, value in scores[part].items():
                row[f"{part} {name}"] = value
            row[f"{part} MAP@5"] = knn_scores[part]["map5"]
        row.update(training_record(run))
        rows.append(row)
    print(markdown(pd.DataFrame(rows)))


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table, numbers to three decimals."""

    def cell(value) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
