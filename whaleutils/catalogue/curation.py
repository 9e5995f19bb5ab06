"""Keeping a catalogue's identities clean: merge, rename and split individuals, apply a
review's decisions, each an undoable transaction with a history.

Catalogues decay: one animal gets two ids (photographed from both sides, by two teams), two
animals share one, a name is agreed and an id must change. Each edit here changes only the
``individual_id`` cells of ``train.csv`` (the photos stay where they are, every other byte of
the table is kept: :func:`tables.rewrite_cells`) and runs as ``enroll`` does
(``enrolment.py``): under the catalogue's lock, checked in full before anything changes,
journalled, and finished or undone by the next run after a crash (``enroll``'s and
``curate``'s journals are one file, so either command completes the other's)::

    merge(catalogue, "whale_1", "whale_2")          # whale_2's photos become whale_1's
    rename(catalogue, "whale_1", "Porter")
    split(catalogue, "Porter", ["a.jpg", "b.jpg"], into="Pearl")
    undo(catalogue, result.transaction)              # the catalogue as before that edit
    history(catalogue, "Porter")                     # enrolled, merged, renamed, split, undone

Each edit appends its lines to ``curation_log.csv`` (one per photo it moves, or one per pair a
reviewer judged "different" or "unsure"): time, transaction, action, reviewer, the id after
and before, the photo. The log is only ever appended to; :func:`history` and :func:`undo` read
it, :func:`previous_ids` gives each photo's earlier ids for the exports.

What an edit refuses, naming it (and changing nothing): an id the catalogue does not have, a
new name that is taken or would run as a spreadsheet formula, a photo not of the individual
split, a split that would leave one encounter under two ids (one encounter is one animal), a
merge of two species, and an undo whose photos a later edit has moved again (undo that first).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from whaleutils.catalogue import enrolment
from whaleutils.catalogue.enrolment import (
    AUDIT_LOG,
    CURATION_COLUMNS,
    CURATION_LOG,
    EDIT_ACTIONS,
    read_log,
    where_it_went,
)
from whaleutils.contracts import tables
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.datasets import data, encounters

JUDGEMENTS = ("different", "unsure")  # a reviewer's verdict on a pair; nothing moves
DECISIONS = ("same", "different", "unsure")  # the duplicates page's, per pair
PAIR_DECISION_COLUMNS = ("individual_a", "individual_b", "decision")


@dataclass
class Edit:
    """A finished (or, ``repeated``, an earlier finished) transaction: its ``transaction`` id,
    ``action``, the photos it moved (``changes``: image, previous_id, individual_id) and the
    pairs it judged (``judged``: individual_id, other_id, action)."""

    transaction: str
    action: str
    changes: pd.DataFrame
    judged: pd.DataFrame
    repeated: bool = False

    def summary(self) -> str:
        verb = "was done already as" if self.repeated else "done:"
        moved = f"{len(self.changes)} photo(s) moved" if len(self.changes) else "no photo moved"
        judged = f", {len(self.judged)} pair(s) judged" if len(self.judged) else ""
        return f"{self.action} {verb} transaction {self.transaction} ({moved}{judged})"


# ---------------------------------------------------------------------------- the log


def judged_pairs(log: pd.DataFrame) -> dict[frozenset, str]:
    """The standing judgements of pairs of ids: {frozenset({a, b}): "different" or "unsure"},
    the last one per pair, those undone left out."""
    standing = log[log["action"].isin(JUDGEMENTS) & ~log["undone"]]
    return {
        frozenset((a, b)): action
        for a, b, action in zip(
            standing["individual_id"], standing["other_id"], standing["action"], strict=True
        )
    }


def previous_ids(catalogue: str | os.PathLike) -> dict[str, list[str]]:
    """Each photo's earlier ids (image -> ids, oldest first, its current id left out), from the
    edits that stand (an undone edit and its undo are left out)."""
    log = read_log(catalogue)
    moves = log[log["action"].isin(EDIT_ACTIONS) & ~log["undone"] & (log["action"] != "undo")]
    earlier: dict[str, list[str]] = {}
    for image, before, after in zip(
        moves["image"], moves["previous_id"], moves["individual_id"], strict=True
    ):
        ids = earlier.setdefault(image, [])
        if before not in ids:
            ids.append(before)
        if after in ids:
            ids.remove(after)
    return {image: ids for image, ids in earlier.items() if ids}


# ---------------------------------------------------------------------------- checks


def check_new_id(name: str, table: pd.DataFrame, what: str) -> str:
    """``name`` as a new individual's id, or ValueError saying why it cannot be one: empty,
    spaces around it, a comma, quote or control character (every CSV tool reads it then),
    ``new_individual``, a spreadsheet formula, taken."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{what}: an id cannot be empty")
    if name != name.strip() or not name.isprintable() or {",", '"'} & set(name):
        raise ValueError(
            f"{what} {name!r}: no spaces around an id, no comma, quote or control character"
        )
    if name == NEW_INDIVIDUAL:
        raise ValueError(f"{what}: {NEW_INDIVIDUAL!r} is the label of an unknown animal, not an id")
    if tables.looks_like_formula(name):
        raise ValueError(f"{what} {name!r}: would run as a spreadsheet formula (=, +, -, @)")
    if name in set(table["individual_id"]):
        raise ValueError(
            f"{what} {name!r}: the catalogue has that individual already "
            f"({int((table['individual_id'] == name).sum())} photos); to join them, merge"
        )
    return name


def _known(table: pd.DataFrame, individual: str, log: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``individual``, or ValueError naming it (and where it went, if an edit that
    stands moved it away)."""
    rows = table[table["individual_id"] == individual]
    if len(rows):
        return rows
    where = where_it_went(log, individual)
    raise ValueError(
        f"no individual {individual!r} in the catalogue" + (f" ({where})" if where else "")
    )


def _check_encounters(table: pd.DataFrame, changes: dict[str, str], path: Path) -> None:
    """Refuse a result in which one encounter's photos have two ids (naming the encounter)."""
    if "encounter" not in table.columns or not changes:
        return
    after = table.assign(individual_id=table["image"].map(changes).fillna(table["individual_id"]))
    touched = set(after.loc[after["image"].isin(set(changes)), "encounter"].str.strip()) - {""}
    problems = [
        problem
        for problem in encounters.check_metadata(
            after[after["encounter"].str.strip().isin(touched)], path.name
        )
        if "values of individual_id" in problem
    ]
    if problems:
        raise ValueError(
            "the edit would split an encounter across ids (one encounter is one animal; move "
            "all its photos or none), nothing changed:\n  " + "\n  ".join(problems)
        )


# ---------------------------------------------------------------------------- transactions


def _transact(catalogue, action, plan, reviewer="", wait=60.0, decisions=None) -> Edit:
    """Run one edit as a transaction: under the lock, after recovering an interrupted one,
    ``plan(table, log)`` returns the photos to move ({image: new id}), the log lines, and a
    finished :class:`Edit` when the very same edit was done before (then nothing is written)."""
    catalogue = Path(catalogue)
    layout = data.Layout(catalogue)
    table_path = layout.train_csv
    digest = data.file_sha256(decisions) if decisions is not None else ""
    with enrolment.CatalogueLock(catalogue, wait):
        enrolment.recover(catalogue)
        table = data.read_train(catalogue)
        log = read_log(catalogue)
        changes, lines, repeated = plan(table, log)
        if repeated is not None:
            return repeated
        if not lines:
            raise ValueError(f"{action}: nothing to do (no photo moves, no pair is judged)")
        with open(table_path, "r+b"):  # writable, or stop here
            pass
        _check_encounters(table, changes, table_path)
        transaction = uuid.uuid4().hex[:12]
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        lines = [
            {
                **{column: "" for column in CURATION_COLUMNS},
                **line,
                "time": now,
                "transaction": transaction,
                "action": line.get("action", action),
                "reviewer": line.get("reviewer") or reviewer,
                "decisions": "" if decisions is None else str(decisions),
                "decisions_sha256": digest,
            }
            for line in lines
        ]
        before = table_path.read_bytes()
        try:
            after = tables.rewrite_cells(before, "image", "individual_id", changes)
        except ValueError as error:
            raise ValueError(f"{table_path}: {error}") from None
        journal = {
            "kind": "curate",
            "transaction": transaction,
            "state": "staging",
            "time": now,
            "reviewer": reviewer,
            "decisions": "" if decisions is None else str(decisions),
            "decisions_sha256": digest,
            "staging": f"{enrolment.STAGING_PREFIX}{transaction}",
            "new_table": f".train.csv.{transaction}.tmp",
            "table_before": hashlib.sha256(before).hexdigest(),
            "photos": [],
            "lines": lines,
        }
        enrolment.check_audit_log(catalogue / CURATION_LOG)
        enrolment.write_journal(catalogue, journal)  # a crash from here: undone
        enrolment.write_synced(catalogue / journal["new_table"], after)
        journal["table_after"] = hashlib.sha256(after).hexdigest()
        log_path = catalogue / CURATION_LOG
        journal["audit_size"] = log_path.stat().st_size if log_path.is_file() else 0
        journal["state"] = "staged"
        enrolment.write_journal(catalogue, journal)  # a crash from here: completed
        enrolment.recover(catalogue)
    return _edit(pd.DataFrame(lines), transaction, action)


def _edit(lines: pd.DataFrame, transaction: str, action: str, repeated: bool = False) -> Edit:
    lines = lines.reindex(columns=list(CURATION_COLUMNS)).fillna("")
    moved = lines[lines["image"] != ""]
    judged = lines[lines["action"].isin(JUDGEMENTS)]
    return Edit(
        transaction, action,
        moved[["image", "previous_id", "individual_id"]].reset_index(drop=True),
        judged[["individual_id", "other_id", "action"]].reset_index(drop=True),
        repeated,
    )  # fmt: skip


def _done_before(log: pd.DataFrame, action: str, individual: str, other: str) -> Edit | None:
    """The standing transaction of this very edit (``action`` of ``other`` into
    ``individual``), for a rerun after a kill or a repeat; None if there is none."""
    found = log[
        (log["action"] == action)
        & (log["individual_id"] == individual)
        & (log["other_id"] == other)
        & ~log["undone"]
    ]
    if found.empty:
        return None
    transaction = found["transaction"].iloc[-1]
    return _edit(log[log["transaction"] == transaction], transaction, action, repeated=True)


def merge(
    catalogue: str | os.PathLike,
    keep: str,
    merged: str,
    reviewer: str = "",
    wait: float = 60.0,
) -> Edit:
    """``merged``'s photos become ``keep``'s (``merged`` is then no id of the catalogue).

    Raises
    ------
    ValueError
        Naming an unknown id, ``keep == merged``, or two species (``species`` as written).
    """
    if keep == merged:
        raise ValueError(f"merge {keep!r} into itself: give two ids")

    def plan(table, log):
        if not (table["individual_id"] == merged).any():
            repeated = _done_before(log, "merge", keep, merged)
            if repeated is not None and (table["individual_id"] == keep).any():
                return {}, [], repeated
        kept, moved = _known(table, keep, log), _known(table, merged, log)
        species = sorted(set(kept["species"]) | set(moved["species"]))
        if len(species) > 1:
            raise ValueError(
                f"merge {merged!r} into {keep!r}: they are of two species ({', '.join(species)});"
                " correct the species in train.csv first if they are one animal"
            )
        return _moves(moved, keep), [], None

    return _transact(catalogue, "merge", _with_lines(plan, "merge"), reviewer, wait)


def _moves(rows: pd.DataFrame, to: str) -> dict[str, str]:
    return {image: to for image in rows["image"]}


def _with_lines(plan, action: str):
    """``plan`` whose moves become log lines: per photo its id before and after (the id it
    came from is the line's ``other_id`` too)."""

    def planned(table, log):
        changes, lines, repeated = plan(table, log)
        if repeated is not None:
            return changes, lines, repeated
        before = dict(zip(table["image"], table["individual_id"], strict=True))
        lines = lines + [
            {
                "action": action,
                "individual_id": after,
                "other_id": before[image],
                "image": image,
                "previous_id": before[image],
            }
            for image, after in changes.items()
        ]
        return changes, lines, None

    return planned


def rename(
    catalogue: str | os.PathLike,
    individual: str,
    new_name: str,
    reviewer: str = "",
    wait: float = 60.0,
) -> Edit:
    """``individual``'s photos under the id ``new_name`` (a name not taken: to join two
    individuals, :func:`merge`)."""

    def plan(table, log):
        if not (table["individual_id"] == individual).any():
            repeated = _done_before(log, "rename", new_name, individual)
            if repeated is not None and (table["individual_id"] == new_name).any():
                return {}, [], repeated
        rows = _known(table, individual, log)
        check_new_id(new_name, table, f"rename {individual!r} to")
        return _moves(rows, new_name), [], None

    return _transact(catalogue, "rename", _with_lines(plan, "rename"), reviewer, wait)


def split(
    catalogue: str | os.PathLike,
    individual: str,
    photos: list[str],
    into: str | None = None,
    new_id_prefix: str = "new-",
    reviewer: str = "",
    wait: float = 60.0,
) -> Edit:
    """``photos`` (file names) of ``individual`` become a new individual's: ``into``, or a
    fresh id ``new_id_prefix`` + number (``enrolment.new_ids``).

    Raises
    ------
    ValueError
        Naming the photos that are not ``individual``'s (or not in the catalogue), a split of
        all its photos (that is a rename), a taken ``into``, or an encounter it would split.
    """
    photos = [Path(photo).name for photo in photos]
    if not photos:
        raise ValueError(f"split {individual!r}: give the photos that go to the new individual")
    twice = sorted({photo for photo in photos if photos.count(photo) > 1})
    if twice:
        raise ValueError(f"split {individual!r}: photo(s) listed twice: {twice}")

    def plan(table, log):
        of = dict(zip(table["image"], table["individual_id"], strict=True))
        now = {of.get(photo) for photo in photos}
        target = next(iter(now)) if len(now) == 1 else None
        if target not in (None, individual) and into in (None, target):
            repeated = _done_before(log, "split", target, individual)
            if repeated is not None and set(repeated.changes["image"]) == set(photos):
                return {}, [], repeated  # this very split, done before
        rows = _known(table, individual, log)
        strangers = [photo for photo in photos if of.get(photo) != individual]
        if strangers:
            described = [
                f"{photo} ({'not in the catalogue' if photo not in of else 'of ' + of[photo]})"
                for photo in strangers
            ]
            raise ValueError(
                f"split {individual!r}: not its photo(s): {', '.join(described)}; nothing changed"
            )
        if len(photos) == len(rows):
            raise ValueError(
                f"split {individual!r}: all its {len(rows)} photos listed; to change its id, rename"
            )
        name = into
        if name is None:
            name = enrolment.new_ids(new_id_prefix, 1, table["individual_id"])[0]
        check_new_id(name, table, f"split {individual!r} into")
        return {photo: name for photo in photos}, [], None

    return _transact(catalogue, "split", _with_lines(plan, "split"), reviewer, wait)


def read_pair_decisions(path: str | os.PathLike) -> pd.DataFrame:
    """The duplicates page's export (``individual_a,individual_b,decision[,reviewer,
    reviewed_at]``, decision one of ``DECISIONS``), checked.

    Raises
    ------
    ValueError
        Naming the file and row of a missing column or value, an unknown decision, a pair of
        one id, a pair decided twice, and "same" pairs that another row says are different.
    """
    frame = tables.read_csv(path)
    missing = set(PAIR_DECISION_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    for column in ("reviewer", "reviewed_at"):
        if column not in frame.columns:
            frame[column] = ""
    frame = frame.map(str.strip)
    seen = {}
    for row, (a, b, decision) in enumerate(
        zip(frame["individual_a"], frame["individual_b"], frame["decision"], strict=True), start=2
    ):
        if not a or not b:
            raise ValueError(f"{path}, row {row}: empty individual_a or individual_b")
        if a == b:
            raise ValueError(f"{path}, row {row}: a pair of one id ({a!r})")
        if decision not in DECISIONS:
            raise ValueError(
                f"{path}, row {row}: decision {decision[:40]!r} is none of {', '.join(DECISIONS)}"
            )
        pair = frozenset((a, b))
        if pair in seen:
            raise ValueError(f"{path}, rows {seen[pair]} and {row}: the pair {a}, {b} twice")
        seen[pair] = row
    groups = _same_groups(frame)
    for a, b, decision in zip(
        frame["individual_a"], frame["individual_b"], frame["decision"], strict=True
    ):
        if decision == "different" and groups.get(a, a) == groups.get(b, b):
            raise ValueError(
                f"{path}: {a} and {b} are decided different, but other rows decide them one "
                "animal (through 'same' pairs); nothing changed"
            )
    return frame


def _same_groups(frame: pd.DataFrame) -> dict[str, str]:
    """Each id of a "same" pair -> its group's name (ids joined by "same" pairs)."""
    same = frame[frame["decision"] == "same"]
    return enrolment.joined(zip(same["individual_a"], same["individual_b"], strict=True))


def apply(
    catalogue: str | os.PathLike,
    decisions: str | os.PathLike,
    reviewer: str = "",
    wait: float = 60.0,
) -> Edit:
    """A duplicates review's decisions as one transaction: ids joined by "same" pairs are
    merged into the one of them with the most photos (ties: the first in name order), pairs
    decided "different" or "unsure" are recorded (``curate duplicates`` leaves a standing
    "different" out of its ranking). Rerunning the same file does nothing more."""
    frame = read_pair_decisions(decisions)
    signed = {  # each pair's reviewer and time, as the page exported them
        frozenset((a, b)): {"reviewer": who, "reviewed_at": when}
        for a, b, who, when in zip(frame["individual_a"], frame["individual_b"],
                                   frame["reviewer"], frame["reviewed_at"], strict=True)
    }  # fmt: skip
    digest = data.file_sha256(decisions)

    def plan(table, log):
        if digest in set(log.loc[~log["undone"], "decisions_sha256"]) and digest:
            transaction = log.loc[log["decisions_sha256"] == digest, "transaction"].iloc[-1]
            return {}, [], _edit(log[log["transaction"] == transaction], transaction, "apply",
                                 repeated=True)  # fmt: skip
        named = set(frame["individual_a"]) | set(frame["individual_b"])
        for name in sorted(named):
            _known(table, name, log)
        counts = table["individual_id"].value_counts()
        groups: dict[str, list[str]] = {}
        for name, group in _same_groups(frame).items():
            groups.setdefault(group, []).append(name)
        changes, lines = {}, []
        for members in groups.values():
            keep = sorted(members, key=lambda name: (-counts[name], name))[0]
            species = sorted(set(table.loc[table["individual_id"].isin(members), "species"]))
            if len(species) > 1:
                raise ValueError(
                    f"{decisions}: {', '.join(sorted(members))} decided one animal, but they are "
                    f"of two species ({', '.join(species)}); nothing changed"
                )
            for name in sorted(set(members) - {keep}):
                pair = next((p for p in signed if name in p and (p - {name}) <= set(members)), None)
                for image in table.loc[table["individual_id"] == name, "image"]:
                    changes[image] = keep
                    lines.append(
                        {"action": "merge", "individual_id": keep, "other_id": name,
                         "image": image, "previous_id": name,
                         **signed.get(pair, {"reviewer": "", "reviewed_at": ""})}
                    )  # fmt: skip
        for a, b, decision in zip(
            frame["individual_a"], frame["individual_b"], frame["decision"], strict=True
        ):
            if decision in JUDGEMENTS:
                pair = frozenset((a, b))
                lines.append(
                    {"action": decision, "individual_id": a, "other_id": b, **signed[pair]}
                )  # fmt: skip
        return changes, lines, None

    return _transact(catalogue, "apply", plan, reviewer, wait, decisions=Path(decisions))


def undo(
    catalogue: str | os.PathLike,
    transaction: str,
    reviewer: str = "",
    wait: float = 60.0,
) -> Edit:
    """Reverse an edit (its transaction id, as the edit printed it and ``curation_log.csv``
    keeps it): each photo it moved goes back to its id before, its judgements are withdrawn.
    Right after the edit, ``train.csv`` is then byte for byte what it was before it. An undo
    is an edit too (undone in turn, it is a redo).

    Raises
    ------
    ValueError
        Naming an unknown transaction (or an enrolment's: curate undoes edits only) and the
        photos a later edit moved again (undo that one first). An edit undone already is
        reported done (``Edit.repeated``), as a rerun after a kill should be.
    """
    transaction = transaction.strip()

    def plan(table, log):
        lines = log[log["transaction"] == transaction]
        if lines.empty:
            enrolled = Path(catalogue) / AUDIT_LOG
            if enrolled.is_file() and transaction in set(
                tables.read_csv(enrolled).get("transaction", pd.Series(dtype=str))
            ):
                raise ValueError(
                    f"transaction {transaction} is an enrolment (decisions_log.csv): curate "
                    "undoes edits only; to take enrolled photos out, split them off and remove "
                    "them by hand"
                )
            raise ValueError(f"no transaction {transaction!r} in {Path(catalogue) / CURATION_LOG}")
        if lines["undone"].iloc[0]:  # by a standing undo: this very undo, done before
            by = log.loc[(log["undoes"] == transaction) & ~log["undone"], "transaction"].iloc[-1]
            return {}, [], _edit(log[log["transaction"] == by], by, "undo", repeated=True)
        now = dict(zip(table["image"], table["individual_id"], strict=True))
        moved = lines[lines["image"] != ""]
        later = []
        for image, after in zip(moved["image"], moved["individual_id"], strict=True):
            if now.get(image) != after:
                touched = log[(log["image"] == image) & (log.index > moved.index.max())]
                who = touched["transaction"].iloc[-1] if len(touched) else "an edit by hand"
                later.append(f"{image} (now {now.get(image, 'not in the catalogue')}, by {who})")
        if later:
            raise ValueError(
                f"undo {transaction}: later edits moved its photo(s) again: "
                f"{', '.join(later[:5])}{' ...' if len(later) > 5 else ''}; undo those first"
            )
        changes = dict(zip(moved["image"], moved["previous_id"], strict=True))
        undo_lines = [
            {"action": "undo", "undoes": transaction, "individual_id": before,
             "other_id": after, "image": image, "previous_id": after}
            for image, before, after in zip(
                moved["image"], moved["previous_id"], moved["individual_id"], strict=True
            )
        ]  # fmt: skip
        judged = lines[lines["action"].isin(JUDGEMENTS)]
        undo_lines += [
            {"action": "undo", "undoes": transaction, "individual_id": a, "other_id": b,
             "note": f"withdraws '{action}'"}
            for a, b, action in zip(
                judged["individual_id"], judged["other_id"], judged["action"], strict=True
            )
        ]  # fmt: skip
        if not undo_lines:
            undo_lines = [{"action": "undo", "undoes": transaction}]
        return changes, undo_lines, None

    return _transact(catalogue, "undo", plan, reviewer, wait)


# ---------------------------------------------------------------------------- history


HISTORY_COLUMNS = ("time", "transaction", "action", "photos", "what", "reviewer", "undone")


def history(catalogue: str | os.PathLike, individual: str) -> pd.DataFrame:
    """What happened to the id ``individual``, oldest first (``HISTORY_COLUMNS``): each
    enrolment of photos to it (``decisions_log.csv``) and each edit that gave it photos or
    took them (``curation_log.csv``), one row per transaction, with the photos it moved and
    whether it was undone.

    Raises
    ------
    ValueError
        When neither the catalogue nor its logs know the id.
    """
    catalogue = Path(catalogue)
    rows = []
    enrolled = catalogue / AUDIT_LOG
    if enrolled.is_file():
        log = tables.read_csv(enrolled)
        if "transaction" not in log.columns:
            log["transaction"] = ""
        mine = log[log["individual_id"] == individual]
        for transaction, lines in mine.groupby("transaction", sort=False):
            kinds = sorted(set(lines["decision"]))
            rows.append(
                (lines["time"].iloc[0], transaction, "enrolled", len(lines),
                 f"{len(lines)} photo(s) enrolled ({'/'.join(kinds)}) from "
                 f"{lines['decisions'].iloc[0]}", lines["reviewer"].iloc[0], False)
            )  # fmt: skip
    log = read_log(catalogue)
    involved = log[
        (log["individual_id"] == individual)
        | (log["other_id"] == individual)
        | (log["previous_id"] == individual)
    ]
    for transaction, lines in involved.groupby("transaction", sort=False):
        rows.append(
            (lines["time"].iloc[0], transaction, lines["action"].iloc[0],
             int((lines["image"] != "").sum()), _describe(lines, individual),
             lines["reviewer"].iloc[0], bool(lines["undone"].iloc[0]))
        )  # fmt: skip
    table = data.read_train(catalogue)
    if not rows and not (table["individual_id"] == individual).any():
        raise ValueError(f"{catalogue}: no individual {individual!r} in the catalogue or its logs")
    frame = pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _describe(lines: pd.DataFrame, individual: str) -> str:
    """One transaction's lines, as they concern ``individual``."""
    action = lines["action"].iloc[0]
    moved = lines[lines["image"] != ""]
    gained = moved[moved["individual_id"] == individual]
    lost = moved[moved["previous_id"] == individual]
    other = lines["other_id"].iloc[0]
    if action == "merge":
        if len(lost):
            return f"merged into {lost['individual_id'].iloc[0]} ({len(lost)} photo(s))"
        sources = ", ".join(sorted(set(gained["previous_id"])))
        return f"received {sources}'s {len(gained)} photo(s) (merged)"
    if action == "rename":
        if len(lost):
            return f"renamed to {lost['individual_id'].iloc[0]}"
        return f"renamed from {gained['previous_id'].iloc[0]}"
    if action == "split":
        if len(lost):
            return f"{len(lost)} photo(s) split off into {lost['individual_id'].iloc[0]}"
        return f"split from {gained['previous_id'].iloc[0]} ({len(gained)} photo(s))"
    if action == "undo":
        undone = lines["undoes"].iloc[0]
        if moved.empty:
            return f"undid transaction {undone} (judgements withdrawn)"
        return f"undid transaction {undone} ({len(gained)} photo(s) back, {len(lost)} away)"
    mine = lines[(lines["individual_id"] == individual) | (lines["other_id"] == individual)]
    pairs = [b if a == individual else a for a, b in zip(mine["individual_id"], mine["other_id"],
                                                         strict=True)]  # fmt: skip
    return f"judged {action} from {', '.join(pairs) or other}"
