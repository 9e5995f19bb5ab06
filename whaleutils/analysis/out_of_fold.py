"""The blend's members: every output of the notebooks it reads, across folds, joined out of
fold.

:func:`find_members` lists every output of notebooks 02-04 (each fold, each variant) and the
snapshots they embedded; :func:`assemble_oof` joins them by name so that every training photo
is predicted, for each name, by the model of that name whose validation fold holds it;
:func:`oof_truth_and_galleries` gives each such photo its own fold's truth and gallery counts;
:func:`member_scores` and :func:`blend_rows` lay out the blend notebook's comparison table.
The blend itself (``rank_blend``, ``search_alphas``) is ``analysis.blend``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from whaleutils.analysis.blend import check_alphas, rank_blend
from whaleutils.contracts import environment, outputs, submission
from whaleutils.retrieval import embed, heads, splits


def load_members(paths: Sequence[str | os.PathLike]) -> tuple[list[str], list[list[list[str]]]]:
    """Read prediction files (``submission.read_predictions``) of several members, aligned
    to the first file's image order.

    Raises
    ------
    ValueError
        Naming the file whose images differ from the first file's (missing or extra, with
        examples) or that lists an image twice.
    """
    if not paths:
        raise ValueError("no prediction files given")
    images, members = None, []
    for path in paths:
        frame = submission.read_predictions(path)
        duplicated = frame["image"][frame["image"].duplicated()].tolist()
        if duplicated:
            raise ValueError(f"{path}: image(s) listed twice, e.g. {duplicated[:3]}")
        lookup = dict(zip(frame["image"], frame["labels"], strict=True))
        if images is None:
            images = frame["image"].tolist()
        else:
            missing = [i for i in images if i not in lookup]
            extra = sorted(set(lookup) - set(images))
            if missing or extra:
                raise ValueError(
                    f"{path}: covers other images than {paths[0]}: {len(missing)} missing "
                    f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]})"
                )
        members.append([lookup[i] for i in images])
    return images, members


# ------------------------------------------------------------------ members across folds


@dataclass(frozen=True)
class Member:
    """One blend member: a trained model's predictions in ``folder`` (``oof_predictions.csv``
    for its validation fold, ``test_predictions.csv``; ``{train,valid,test}.npz`` too for
    embedding models). ``name`` is the same on every fold (e.g. ``keras-efficientnet-b5 380px
    epoch-010``): members of one name are one model trained on different folds."""

    name: str
    fold: int
    n_folds: int
    seed: int
    folder: Path
    fold_groups: str | None = None  # the column the folds kept together (splits.load_split)


def find_members(inputs_dir: str | os.PathLike, notebooks: Sequence[str]) -> list[Member]:
    """Every member the ``notebooks``' outputs under ``inputs_dir`` hold: each output folder
    (``environment.notebook_outputs``: one per fold or variant), the snapshots it embedded
    (``snapshots/epoch-NNN/``, see :func:`snapshot_members`) and its fused head (``local/``,
    ``fusion.write_fused_head``).

    The name is ``scores.json``'s ``member`` (notebook 04 writes its backbone and image size),
    else the notebook's name; snapshots add their epoch. The fold comes from ``scores.json``'s
    ``split``.

    Raises
    ------
    ValueError
        If an output has no ``split`` (written before folds were recorded: run it again), if the
        outputs come from different fold assignments (n_folds, seed, fold_groups), or if two
        outputs give the same name on the same fold (set notebook 04's ``member`` parameter to
        tell them apart).
    """

    members: list[Member] = []
    for notebook in notebooks:
        for folder in environment.notebook_outputs(inputs_dir, notebook):
            scores = outputs.read_scores(folder)
            if "split" not in scores:
                raise ValueError(
                    f"{folder / outputs.SCORES}: no 'split' (fold, n_folds, seed); this output "
                    f"predates fold records: run notebook {notebook} again"
                )
            split = scores["split"]
            name = scores.get("member") or notebook
            common = (int(split["fold"]), int(split["n_folds"]), int(split["seed"]))
            groups = split.get("fold_groups")  # absent before encounters: photo by photo
            members.append(Member(name, *common, folder, groups))
            for snapshot in sorted((folder / "snapshots").glob("epoch-*")):
                if (snapshot / "oof_predictions.csv").is_file():
                    members.append(Member(f"{name} {snapshot.name}", *common, snapshot, groups))
            if (folder / "local" / "oof_predictions.csv").is_file():  # fusion.write_fused_head
                members.append(Member(f"{name} local", *common, folder / "local", groups))
    assignments = {(m.n_folds, m.seed, m.fold_groups) for m in members}
    if len(assignments) > 1:
        examples = {(m.n_folds, m.seed, m.fold_groups): m.folder for m in members}
        raise ValueError(
            "the members come from different fold assignments (n_folds, seed, fold_groups): "
            + "; ".join(f"{key} in {folder}" for key, folder in sorted(examples.items(), key=str))
        )
    seen: dict[tuple[str, int], Path] = {}
    for member in members:
        other = seen.setdefault((member.name, member.fold), member.folder)
        if other != member.folder:
            raise ValueError(
                f"two members named {member.name!r} on fold {member.fold}: {other} and "
                f"{member.folder}; give them different `member` names"
            )
    return members


def fold_assignment(members: Sequence[Member]) -> dict:
    """The fold assignment the ``members`` were validated on (:func:`find_members` checks that
    they share one), as ``splits.load_split`` takes it: n_folds, seed, fold_groups.

    Raises
    ------
    ValueError
        When there is no member (no trained notebook's output was found).
    """
    if not members:
        raise ValueError("no blend members: run the training notebooks (02-04) first")
    first = members[0]
    return {"n_folds": first.n_folds, "seed": first.seed, "fold_groups": first.fold_groups}


@dataclass
class OutOfFold:
    """Out-of-fold predictions of every member name over the images some member of that name
    did not train on. ``images`` in the order of ``fold_of_image``; ``folds`` (n,) their folds;
    ``names`` the member names (first-seen order); ``predictions[j][i]`` name j's five labels for
    image i, from its member of that image's fold, or None if it has no member there."""

    images: list[str]
    folds: np.ndarray
    names: list[str]
    predictions: list[list[list[str] | None]]

    def coverage(self) -> dict[str, int]:
        """Images each member name predicted."""
        return {
            name: sum(row is not None for row in rows)
            for name, rows in zip(self.names, self.predictions, strict=True)
        }


def assemble_oof(members: Sequence[Member], fold_of_image: Mapping[str, int]) -> OutOfFold:
    """Join the members' ``oof_predictions.csv`` by name: each image's prediction comes from the
    member of that name whose validation fold holds the image, i.e. a model that did not train
    on it (``fold_of_image``: every training image's fold, ``data.make_folds``).

    Raises
    ------
    ValueError
        Naming the file and image if a member's out-of-fold file holds an image outside its own
        fold (its model trained on it), or an image not in ``fold_of_image``.
    """
    names = list(dict.fromkeys(member.name for member in members))
    by_image: dict[str, dict[str, list[str]]] = {}
    for member in members:
        path = member.folder / "oof_predictions.csv"
        frame = submission.read_predictions(path)
        for image, labels in zip(frame["image"], frame["labels"], strict=True):
            fold = fold_of_image.get(image)
            if fold is None:
                raise ValueError(f"{path}: image {image!r} is not a training image of these folds")
            if fold != member.fold:
                raise ValueError(
                    f"{path}: image {image!r} lies in fold {fold}, but this member was "
                    f"validated on fold {member.fold} and so trained on it"
                )
            by_image.setdefault(image, {})[member.name] = list(labels)
    images = [image for image in fold_of_image if image in by_image]
    return OutOfFold(
        images,
        np.array([fold_of_image[image] for image in images], dtype=np.int64),
        names,
        [[by_image[image].get(name) for image in images] for name in names],
    )


def fold_member_alphas(members: Sequence[Member], names: Sequence[str], alphas) -> list[float]:
    """Each member's weight on the test set: its name's weight shared among that name's
    members (one per fold), so a name weighs the same whatever its number of folds."""
    alpha_of = dict(zip(names, check_alphas(alphas, len(names)), strict=True))
    folds_of = pd.Series([m.name for m in members]).value_counts().to_dict()
    return [float(alpha_of[m.name] / folds_of[m.name]) for m in members]


def load_member_embeddings(
    folders: Sequence[str | os.PathLike], part: str, image_names: Sequence[str]
) -> list[np.ndarray]:
    """Each member folder's ``<part>.npz`` embeddings (schema in ``retrieval.embed``), checked
    to hold exactly ``image_names`` in that order, so that rows can be joined.

    Raises
    ------
    ValueError
        Naming the file and the first row whose image differs.
    """

    result = []
    for folder in folders:
        path = Path(folder) / f"{part}.npz"
        payload = embed.load_embeddings(path)
        embed.check_image_names(payload, path, part, image_names)
        result.append(payload["embeddings"])
    return result


def oof_truth_and_galleries(
    data_dir, oof: OutOfFold, n_folds: int, seed: int, fold_groups: str | None = "auto"
) -> tuple[list[str], list[dict[str, int]]]:
    """Each out-of-fold image's true label on its own fold (``new_individual`` for individuals
    absent from that fold's training part) and the photo counts of the gallery it was matched
    against (its fold's validation gallery, ``splits.Split.photo_counts``): the blend's truth
    and frequency penalty. Images of one fold share one counts mapping."""

    truth: list = [None] * len(oof.images)
    galleries: list = [None] * len(oof.images)
    for fold in sorted(set(oof.folds.tolist())):
        split = splits.load_split(data_dir, fold, n_folds, seed, fold_groups=fold_groups)
        rows = np.flatnonzero(oof.folds == fold)
        counts = split.photo_counts("valid")
        for row, label in zip(
            rows, split.truth("valid", [oof.images[i] for i in rows]), strict=True
        ):
            truth[row], galleries[row] = label, counts
    return truth, galleries


def member_scores(split, oof: OutOfFold, truth, members, test_images, test_members):
    """One row per member name: its folds, the images it predicted out of fold and their
    MAP@5, and the test MAP@5 (None without a solution) of its fold models' predictions joined
    by plain rank voting (a single fold: its own predictions): the blend notebook's table."""

    rows = []
    for name, predictions in zip(oof.names, oof.predictions, strict=True):
        covered = [i for i, row in enumerate(predictions) if row is not None]
        own = [test_members[k] for k, member in enumerate(members) if member.name == name]
        test = (
            own[0]
            if len(own) == 1
            else rank_blend(own, [1.0] * len(own), {}, frequency_penalty=0.0)
        )
        test_scores = heads.split_scores(split, "test", test_images, test) or {}
        rows.append(
            {
                "model": name,
                "folds": len(own),
                "oof_images": len(covered),
                "oof_map5": heads.score(
                    [truth[i] for i in covered], [predictions[i] for i in covered]
                )["map5"],
                "test_map5": test_scores.get("map5"),
            }
        )
    return pd.DataFrame(rows)


def blend_rows(results: dict[str, tuple[dict, int]]) -> pd.DataFrame:
    """Rows of :func:`member_scores`' table for blends: name -> (its scores, as
    ``heads.write_predictions`` or ``heads.knn_head`` return them; the images it predicted out
    of fold)."""
    return pd.DataFrame(
        [
            {
                "model": name,
                "folds": None,
                "oof_images": covered,
                "oof_map5": result["valid"]["map5"],
                "test_map5": (result["test"] or {}).get("map5"),
            }
            for name, (result, covered) in results.items()
        ]
    )
