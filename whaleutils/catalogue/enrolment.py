"""Writing into a catalogue safely: ``enroll`` as a transaction.

A catalogue is a Happywhale-format folder (``train.csv`` and ``train_images/``) that
researchers keep for years, so ``enroll`` treats it as a small database:

- **One writer at a time.** :class:`CatalogueLock` holds ``.enroll.lock`` in the catalogue (an
  advisory ``flock``); a second ``enroll`` waits for it (up to ``wait`` seconds), then refuses
  naming the process that holds it. New ids are computed under the lock, from the table as it
  is then, so two runs never hand out one id.
- **Nothing changes until everything is checked**: each decided photo must be a decodable
  image of a sane size (:func:`check_photo`), not yet in the catalogue, of a known individual.
- **Staged, then moved into place.** The photos are copied into a staging folder inside the
  catalogue and the new ``train.csv`` (the old bytes as they were, the new rows appended) is
  written beside it, each file synced; a journal (``.enroll-journal.json``) records the
  transaction; then each photo is hard-linked into ``train_images/`` (a link never replaces
  a file) and ``train.csv`` is replaced in one rename. Readers see the old table or the new one,
  never a half-written one.
- **A crash is finished or undone by the next run** (:func:`recover`, run under the lock by
  every ``enroll``): killed before the journal said "staged", nothing visible changed and the
  staging is removed; after, the enrolment is completed. Rerunning the same decisions after a
  crash (or after a run that finished) reports the finished enrolment and adds nothing.
- **An audit trail**: each enrolled photo appends a line to ``decisions_log.csv`` (time,
  reviewer, decisions file, source photo, catalogue name, individual, known or new, and the
  model run and scores the decisions file carries), never rewritten.

What it does not guarantee: ``flock`` is advisory (a program that ignores the lock, or a
person editing ``train.csv`` by hand meanwhile, is not stopped) and unreliable on some network
filesystems (NFS, SMB): keep a catalogue that is written on a local disk.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from whaleutils.contracts import folders, outputs, tables
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.contracts.tables import looks_like_formula, spreadsheet_safe
from whaleutils.datasets import data, encounters

LOCK_FILE = ".enroll.lock"
JOURNAL_FILE = ".enroll-journal.json"
STAGING_PREFIX = ".enroll-staging-"
AUDIT_LOG = "decisions_log.csv"
AUDIT_COLUMNS = (
    "time", "reviewer", "decisions", "photo", "image", "individual_id", "decision",
    "model", "similarity", "probability", "transaction", "decisions_sha256", "reviewed_at",
)  # fmt: skip
CURATION_LOG = "curation_log.csv"  # curate's edits (curation.py): merges, renames, splits
CURATION_COLUMNS = (
    "time", "transaction", "action", "reviewer", "individual_id", "other_id", "image",
    "previous_id", "undoes", "decisions", "decisions_sha256", "reviewed_at", "note",
)  # fmt: skip
EDIT_ACTIONS = ("merge", "rename", "split", "undo")  # curate's edits that move photos
DECISION_COLUMNS = ("photo", "individual_id")
# the review page's export (reviewer, reviewed_at, same_as: another photo of the file that shows
# the same animal), and scores a script may add
OPTIONAL_DECISION_COLUMNS = (
    "model", "similarity", "probability", "reviewer", "reviewed_at", "same_as",
)  # fmt: skip


# ---------------------------------------------------------------------------- curate's log


def read_log(catalogue: str | os.PathLike) -> pd.DataFrame:
    """``curation_log.csv`` (``CURATION_COLUMNS``, strings; empty if there is none yet), with
    ``undone``: whether a later undo, itself not undone, reversed the line's transaction."""
    path = Path(catalogue) / CURATION_LOG
    if not path.is_file():
        log = pd.DataFrame(columns=list(CURATION_COLUMNS))
    else:
        log = tables.read_csv(path).reindex(columns=list(CURATION_COLUMNS)).fillna("")
    undone: set[str] = set()
    order = list(dict.fromkeys(log["transaction"]))
    undoes = log.drop_duplicates("transaction").set_index("transaction")["undoes"]
    for transaction in reversed(order):  # the last word first: an undo undone stands undone
        if transaction not in undone and undoes.get(transaction, ""):
            undone.add(undoes[transaction])
    return log.assign(undone=log["transaction"].isin(undone))


def where_it_went(log: pd.DataFrame, individual: str) -> str:
    """Where the standing edits took an id that the catalogue no longer has: ``"merged into
    'A', transaction T, time"`` (the last one), or "" if no edit did."""
    gone = log[
        (log["previous_id"] == individual) & log["action"].isin(EDIT_ACTIONS) & ~log["undone"]
    ]
    if gone.empty:
        return ""
    last = gone.iloc[-1]
    verb = {"merge": "merged into", "rename": "renamed to", "split": "split into",
            "undo": "undone to"}[last["action"]]  # fmt: skip
    return f"{verb} {last['individual_id']!r}, transaction {last['transaction']}, {last['time']}"


# ---------------------------------------------------------------------------- the lock


class CatalogueBusy(folders.FolderBusy):
    """Another process holds the catalogue's lock."""


class CatalogueLock(folders.FolderLock):
    """An exclusive advisory lock on a catalogue (``.enroll.lock``), held in a ``with`` block.

    Waits up to ``wait`` seconds for another holder, then raises :class:`CatalogueBusy` naming
    its process id. The lock is the operating system's (``flock``): it ends with the process
    that holds it, however that process ends."""

    busy_error = CatalogueBusy

    def __init__(self, catalogue: str | os.PathLike, wait: float = 60.0):
        super().__init__(Path(catalogue) / LOCK_FILE, wait)

    def busy_message(self, holder: str) -> str:
        return (
            f"{self.path.parent}: another enroll (process {holder}) is writing the "
            f"catalogue; waited {self.wait:g} s. Run again when it has finished "
            f"(the lock {self.path} is released when that process ends)."
        )


# ---------------------------------------------------------------------------- checks


def check_photo(path: str | os.PathLike) -> tuple[int, int]:
    """The (width, height) of a photo that decodes completely; raises ValueError naming the
    file when it is not an image, is truncated, or has more than ``data.MAX_PHOTO_PIXELS`` (its
    declared size is checked before anything is decoded)."""

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: photo not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            data.check_photo_size(width, height, path)
            image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"{path}: refused as a decompression bomb, not decoded ({error})"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path}: not a readable image ({error})") from None
    return width, height


def read_decisions(path: str | os.PathLike) -> pd.DataFrame:
    """The exported decisions (``photo,individual_id`` and optionally ``model``,
    ``similarity``, ``probability``), checked.

    Raises
    ------
    ValueError
        Naming the file and row of a missing column, an empty value, a photo listed twice or a
        photo file that does not exist.
    """
    frame = data.read_csv(path)
    missing = set(DECISION_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    for column in OPTIONAL_DECISION_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    for row, (photo, individual) in enumerate(
        zip(frame["photo"], frame["individual_id"], strict=True), start=2
    ):
        if not photo.strip() or not individual.strip():
            raise ValueError(f"{path}, row {row}: empty photo or individual_id")
        if not Path(photo).is_file():
            raise ValueError(f"{path}, row {row}: photo {photo} not found")
    names = frame["photo"].map(lambda p: Path(p).name)
    twice = sorted(names[names.duplicated()].unique())
    if twice:
        raise ValueError(f"{path}: photo name(s) listed twice: {twice}")
    for row, stamp in enumerate(frame["reviewed_at"], start=2):
        try:
            if stamp.strip():
                datetime.datetime.fromisoformat(stamp.strip())
        except ValueError:
            raise ValueError(f"{path}, row {row}: reviewed_at {stamp!r} is not a date and time "
                             "(ISO 8601, e.g. 2026-06-01T14:05:00Z)") from None  # fmt: skip
    problems = encounters.check_metadata(frame.assign(image=frame["photo"]), Path(path).name)
    if problems:
        raise ValueError("\n".join(problems))
    same_animal_groups(frame, path)  # raises on a same_as that names no row or contradicts
    return frame


def joined(links, items=()) -> dict:
    """Each item's group, named by one of its items: items linked by a pair of ``links``, or
    through a chain of them, are one group (a union-find); ``items`` adds the unlinked.

    >>> group = joined([("a", "b"), ("c", "b")], ["d"])
    >>> group["a"] == group["b"] == group["c"] != group["d"]
    True
    """
    parent = {item: item for item in items}

    def root(item):
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for first, second in links:
        parent[root(second)] = root(first)
    return {item: root(item) for item in list(parent)}


def same_animal_groups(frame: pd.DataFrame, path) -> list[int]:
    """Each decided photo's group (rows numbered 0, 1, ...): photos linked by ``same_as`` (the
    review page's "same as another photo in this batch"; a row's ``photo`` or its file name)
    are one animal, and so one group.

    Raises
    ------
    ValueError
        Naming the row of a ``same_as`` that names no row of the file or its own, and of two
        linked photos decided to be different individuals.
    """
    links = []
    by_photo = {photo: row for row, photo in enumerate(frame["photo"])}
    by_name = {Path(photo).name: row for row, photo in enumerate(frame["photo"])}
    for row, other in enumerate(frame["same_as"].str.strip()):
        if not other:
            continue
        target = by_photo.get(other, by_name.get(Path(other).name))
        if target is None:
            raise ValueError(f"{path}, row {row + 2}: same_as {other!r} is no photo of the file")
        if target == row:
            raise ValueError(f"{path}, row {row + 2}: same_as names the row's own photo")
        links.append((target, row))
    group_of = joined(links, range(len(frame)))
    groups = [group_of[row] for row in range(len(frame))]
    decided = {}
    for row, (group, individual) in enumerate(zip(groups, frame["individual_id"], strict=True)):
        first = decided.setdefault(group, (row, individual))
        if first[1] != individual:
            raise ValueError(
                f"{path}, rows {first[0] + 2} and {row + 2}: one animal by same_as, but decided "
                f"{first[1]!r} and {individual!r}"
            )
    return groups


def photo_metadata(record: dict) -> dict[str, str]:
    """The encounter columns of a decided photo: those its decisions row gives (the decisions
    file is the sidecar: ``encounter``, ``date``, ``latitude``, ... columns), the date and
    GPS position its EXIF records where the row leaves them empty."""
    given = {
        column: str(record[column]).strip()
        for column in encounters.ENCOUNTER_COLUMNS
        if str(record.get(column, "")).strip()
    }
    exif = encounters.exif_metadata(record["photo"])
    if "date" not in given and "date" in exif:
        given["date"] = exif["date"]
    if not ("latitude" in given or "longitude" in given) and "latitude" in exif:
        given["latitude"], given["longitude"] = exif["latitude"], exif["longitude"]
    return given


def new_ids(prefix: str, count: int, taken) -> list[str]:
    """``count`` fresh ids ``prefix0001``, ``prefix0002``, ... after the highest taken one.

    >>> new_ids("nw-", 2, ["nw-0007", "a"])
    ['nw-0008', 'nw-0009']
    """
    numbers = [
        int(name[len(prefix) :])
        for name in taken
        if name.startswith(prefix) and re.fullmatch(r"[0-9]+", name[len(prefix) :])
    ]  # ASCII digits only: "new-²" is a name, not a number
    start = max(numbers, default=0) + 1
    return [f"{prefix}{n:04d}" for n in range(start, start + count)]


# ---------------------------------------------------------------------------- files


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def write_synced(path: Path, payload: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def _move_into_place(staged: Path, target: Path) -> None:
    """``staged`` at ``target`` too: a hard link, which fails rather than replace a file; on a
    filesystem without hard links (FAT, exFAT) a rename, after checking under the lock that
    ``target`` does not exist."""
    try:
        os.link(staged, target)
    except FileExistsError:
        raise
    except OSError:
        if target.exists():
            raise FileExistsError(f"{target}: exists, not replaced") from None
        os.rename(staged, target)


def write_journal(catalogue: Path, journal: dict) -> None:
    """The journal, replaced atomically (a crash leaves the old one or the new one)."""
    temporary = catalogue / f"{JOURNAL_FILE}.{os.getpid()}.tmp"
    write_synced(temporary, json.dumps(journal, indent=1).encode())
    os.replace(temporary, catalogue / JOURNAL_FILE)
    _fsync_dir(catalogue)


def _table_with_rows(table_path: Path, rows: list[dict]) -> bytes:
    """``train.csv``'s bytes as they are, with ``rows`` appended in its columns."""
    old = table_path.read_bytes()
    header = pd.read_csv(table_path, nrows=0).columns.tolist()
    ending = "\r\n" if b"\r\n" in old[: old.find(b"\n") + 1 or len(old)] else "\n"  # the file's
    text = io.StringIO()
    if old and not old.endswith(b"\n"):
        text.write(ending)
    csv.DictWriter(
        text, fieldnames=header, restval="", extrasaction="ignore", lineterminator=ending
    ).writerows(rows)
    return old + text.getvalue().encode("utf-8")


def _audit_lines(journal: dict) -> list[dict]:
    return [
        {
            "time": journal["time"],
            "reviewer": photo.get("reviewer") or journal["reviewer"],
            "reviewed_at": photo.get("reviewed_at", ""),
            "decisions": journal["decisions"],
            "photo": photo["source"],
            "image": photo["name"],
            "individual_id": photo["individual_id"],
            "decision": photo["decision"],
            "model": photo["model"],
            "similarity": photo["similarity"],
            "probability": photo["probability"],
            "transaction": journal["transaction"],
            "decisions_sha256": journal["decisions_sha256"],
        }
        for photo in journal["photos"]
    ]


def check_audit_log(path: Path) -> None:
    """Refuse an audit log that is a link or not a file: appending to it (and a crash's cut
    back to its recorded size) would write what it points at, outside the catalogue.

    Raises
    ------
    ValueError
        Naming the log and what it is."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        what = f"a link to {os.readlink(path)}" if path.is_symlink() else "not a file"
        raise ValueError(
            f"{path}: the audit log is {what}, not the catalogue's own file; nothing was "
            "changed (put the log itself there)"
        )


def _append_audit(catalogue: Path, journal: dict) -> None:
    """The transaction's lines at the end of its audit log (an enrolment's in
    ``decisions_log.csv``, an edit's in ``curation_log.csv``). The log is cut back to the size
    the journal recorded before it is appended to, so that a crash in the middle of this append
    (a torn line) or after it (all lines there) is written once, whole; earlier lines stay."""
    curate = journal.get("kind") == "curate"
    path = catalogue / (CURATION_LOG if curate else AUDIT_LOG)
    check_audit_log(path)
    size = journal["audit_size"]
    if path.is_file() and path.stat().st_size > size:
        os.truncate(path, size)
    text = io.StringIO()
    columns = CURATION_COLUMNS if curate else AUDIT_COLUMNS
    if size > 0:  # a log begun by an earlier version keeps its own columns
        with open(path, newline="", encoding="utf-8") as handle:
            columns = next(csv.reader(handle))
    writer = csv.DictWriter(
        text, fieldnames=columns, restval="", extrasaction="ignore", lineterminator="\n"
    )
    if size == 0:
        writer.writeheader()
    lines = journal["lines"] if curate else _audit_lines(journal)
    writer.writerows([{k: spreadsheet_safe(v) for k, v in line.items()} for line in lines])
    with open(path, "ab") as handle:
        handle.write(text.getvalue().encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


# ---------------------------------------------------------------------------- the transaction


def _enrolled_before(
    catalogue: Path, decisions_digest: str, table: pd.DataFrame
) -> pd.DataFrame | None:
    """The rows (image, species, individual_id) an earlier transaction of the same decisions
    file (by content) added, per the audit log and still in ``table``; None if none did."""
    path = catalogue / AUDIT_LOG
    if not path.is_file():
        return None
    log = data.read_csv(path)
    if "decisions_sha256" not in log.columns:
        return None
    images = log.loc[log["decisions_sha256"] == decisions_digest, "image"]
    rows = table[table["image"].isin(set(images))]
    if images.empty or len(rows) != len(images):
        return None
    chosen = rows[["image", "species_raw", "individual_id"]].reset_index(drop=True)
    return chosen.rename(columns={"species_raw": "species"})


TRANSACTION = re.compile(r"[0-9a-f]{12}")
DIGEST = re.compile(r"[0-9a-f]{64}")


def read_journal(catalogue: Path) -> dict:
    """The catalogue's journal, checked to be one ``enroll`` wrote: every path in it a name
    of this tool's own making inside the catalogue (the staging folder and the new table by
    their transaction, photos by bare file names), every digest and size well-formed, no link
    where a file or folder is expected. A journal is a file anyone could place in a shared
    catalogue: nothing it names is touched before this check.

    Raises
    ------
    ValueError
        Naming the journal and what is wrong with it (it is left as it is).
    """
    path = catalogue / JOURNAL_FILE
    journal = outputs.read_json(path)

    def refuse(reason: str):
        raise ValueError(
            f"{path}: {reason}; not a journal enroll wrote: inspect it and remove it by hand"
        )

    transaction = journal.get("transaction")
    if not isinstance(transaction, str) or not TRANSACTION.fullmatch(transaction):
        refuse(f"transaction {str(transaction)[:40]!r} is not one enroll makes")
    if journal.get("kind", "enroll") not in ("enroll", "curate"):
        refuse(f"kind {str(journal.get('kind'))[:40]!r} is neither enroll nor curate")
    if journal.get("kind") == "curate":
        lines = journal.get("lines")
        if not isinstance(lines, list) or not all(
            isinstance(line, dict)
            and set(line) <= set(CURATION_COLUMNS)
            and all(isinstance(value, str) for value in line.values())
            for line in lines
        ):
            refuse("lines is not a list of curation_log.csv lines")
        if journal.get("photos") != []:
            refuse("an edit moves no photos, but photos is not empty")
    if journal.get("state") not in ("staging", "staged"):
        refuse(f"state {str(journal.get('state'))[:40]!r} is neither staging nor staged")
    if journal.get("staging") != f"{STAGING_PREFIX}{transaction}":
        refuse(f"staging {str(journal.get('staging'))[:80]!r} is not its transaction's folder")
    if journal.get("new_table") != f".train.csv.{transaction}.tmp":
        refuse(f"new_table {str(journal.get('new_table'))[:80]!r} is not its transaction's table")
    photos = journal.get("photos")
    if not isinstance(photos, list) or not all(isinstance(p, dict) for p in photos):
        refuse("photos is not a list of photos")
    staged = journal["state"] == "staged"
    for photo in photos:
        name = photo.get("name")
        if not isinstance(name, str) or not _is_bare_name(name):
            refuse(f"photo name {str(name)[:80]!r} is not a file name inside train_images")
        if staged and not _is_digest(photo.get("sha256")):
            refuse(f"photo {name}: no sha256 digest")
    for key in ("table_before", *(("table_after",) if staged else ())):
        if not _is_digest(journal.get(key)):
            refuse(f"{key} is not a sha256 digest")
    if staged:
        size = journal.get("audit_size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            refuse(f"audit_size {size!r} is not a size")
        for key in ("time", "reviewer", "decisions", "decisions_sha256"):
            if not isinstance(journal.get(key), str):
                refuse(f"{key} is not text")
    for name in (journal["staging"], journal["new_table"]):
        if (catalogue / name).is_symlink():
            refuse(f"{name} is a link, not this tool's own file")
    return journal


def _is_digest(value) -> bool:
    return isinstance(value, str) and DIGEST.fullmatch(value) is not None


def _is_bare_name(name: str) -> bool:
    """A plain file name: no folder, no parent, no hidden or empty name, no control character."""
    return (
        bool(name)
        and name == Path(name).name
        and "/" not in name
        and "\\" not in name
        and name not in (".", "..")
        and not name.startswith(".")
        and name.isprintable()
    )


def recover(catalogue: str | os.PathLike) -> dict | None:
    """Finish or undo an interrupted enrolment (call under :class:`CatalogueLock`); returns its
    journal if there was one (``"outcome"``: "finished" or "undone"), else None."""
    catalogue = Path(catalogue)
    journal_path = catalogue / JOURNAL_FILE
    for leftover in catalogue.glob(f"{JOURNAL_FILE}.*.tmp"):  # a journal write cut short
        if re.fullmatch(rf"{re.escape(JOURNAL_FILE)}\.\d+\.tmp", leftover.name):
            if not leftover.is_symlink() and leftover.is_file():
                leftover.unlink(missing_ok=True)
    if not journal_path.is_file() and not journal_path.is_symlink():
        return None
    if journal_path.is_symlink():
        raise ValueError(f"{journal_path}: a link, not a journal enroll wrote: remove it by hand")
    journal = read_journal(catalogue)
    staging = catalogue / journal["staging"]
    new_table = catalogue / journal["new_table"]
    table = data.Layout(catalogue).train_csv
    if journal["state"] == "staging":  # nothing visible changed yet: undo
        shutil.rmtree(staging, ignore_errors=True)
        new_table.unlink(missing_ok=True)
        journal_path.unlink()
        _fsync_dir(catalogue)
        return {**journal, "outcome": "undone"}
    images = data.Layout(catalogue).images("train")
    for photo in journal["photos"]:  # "staged": complete it
        target, staged = images / photo["name"], staging / photo["name"]
        if not target.exists() and not target.is_symlink():
            if staged.is_symlink() or not staged.is_file():
                raise ValueError(
                    f"{staged}: not the photo the interrupted enrolment staged (a link or "
                    f"missing); resolve by hand (journal {journal_path})"
                )
            if data.file_sha256(staged) != photo["sha256"]:
                raise ValueError(
                    f"{staged}: differs from the photo the interrupted enrolment staged; "
                    f"resolve by hand (journal {journal_path})"
                )
            _move_into_place(staged, target)
        elif data.file_sha256(target) != photo["sha256"]:
            raise RuntimeError(
                f"{target}: differs from the photo the interrupted enrolment staged; "
                f"resolve by hand (journal {journal_path})"
            )
    _fsync_dir(images)
    if new_table.is_file():
        current = data.file_sha256(table)
        if current == journal["table_before"]:
            os.replace(new_table, table)
        elif current != journal["table_after"]:
            raise RuntimeError(
                f"{table}: changed since the interrupted enrolment began; resolve by hand "
                f"(journal {journal_path}, its table {new_table})"
            )
        else:
            new_table.unlink()
    _fsync_dir(catalogue)
    _append_audit(catalogue, journal)
    shutil.rmtree(staging, ignore_errors=True)
    journal_path.unlink()
    _fsync_dir(catalogue)
    return {**journal, "outcome": "finished"}


def enroll(
    catalogue: str | os.PathLike,
    decisions: str | os.PathLike,
    new_id_prefix: str = "new-",
    new_species: str = "unknown",
    reviewer: str = "",
    wait: float = 60.0,
) -> pd.DataFrame:
    """Add the decided photos to the catalogue as one transaction; returns the rows added to
    ``train.csv`` (image, species, individual_id).

    Known individuals keep the catalogue's species; each photo decided ``new_individual``
    becomes a new individual with a fresh id (:func:`new_ids`) and ``new_species``.
    ``reviewer`` is written to the audit log; ``wait``: seconds to wait for another enroll.

    Raises
    ------
    ValueError
        Naming the photos already in the catalogue, the individuals it does not have, and
        each photo that is not a readable image of a sane size; nothing is added.
    CatalogueBusy
        When another enroll holds the catalogue for longer than ``wait``.
    RuntimeError
        When an interrupted enrolment cannot be completed (its table or a photo changed since).
    PermissionError
        When ``train.csv`` cannot be written (checked before anything changes).
    """
    catalogue = Path(catalogue)
    layout = data.Layout(catalogue)
    table_path, images_dir = layout.train_csv, layout.images("train")
    chosen = read_decisions(decisions)
    decisions_digest = data.file_sha256(Path(decisions))
    with CatalogueLock(catalogue, wait):
        recovered = recover(catalogue)
        if (
            recovered is not None
            and recovered["outcome"] == "finished"
            and recovered.get("kind", "enroll") == "enroll"
            and recovered["decisions_sha256"] == decisions_digest
        ):  # this very enrolment was interrupted and is now complete
            return pd.DataFrame(recovered["rows"], columns=["image", "species", "individual_id"])
        return _enroll_locked(
            catalogue, table_path, images_dir, chosen, Path(decisions), decisions_digest,
            new_id_prefix, new_species, reviewer,
        )  # fmt: skip


def _new_animals(chosen: pd.DataFrame, metadata_of: list[dict], decisions) -> list:
    """Each decided photo's new animal (a number; None for a known individual): the photos
    decided new that ``same_as`` links, or that share an encounter (one encounter is one
    animal), are one new animal, and get one id."""
    groups = same_animal_groups(chosen, decisions)
    first_of_encounter, links = {}, []
    is_new = (chosen["individual_id"] == NEW_INDIVIDUAL).tolist()
    for group, new, metadata in zip(groups, is_new, metadata_of, strict=True):
        encounter = metadata.get("encounter", "")
        if new and encounter:
            links.append((first_of_encounter.setdefault(encounter, group), group))
    root = joined(links, groups)
    numbers = {}
    return [
        numbers.setdefault(root[group], len(numbers)) if new else None
        for group, new in zip(groups, is_new, strict=True)
    ]


def _check_new_rows(rows: list[dict], table_path: Path, decisions: Path, known: set) -> None:
    """Refuse, before anything is written, rows that a spreadsheet would run as formulas (the
    catalogue's own ids pass: they are there already) and rows whose encounter contradicts
    the catalogue or another new row (one encounter is one animal, one day, one place)."""
    problems = []
    for line, row in enumerate(rows, start=2):
        for column, value in row.items():
            if looks_like_formula(value) and not (column == "individual_id" and value in known):
                problems.append(
                    f"row {line}: {column} {str(value)[:60]!r} would run as a spreadsheet "
                    "formula (it starts with =, +, -, @): give another"
                )
    table = tables.read_csv(table_path)
    if "encounter" in table.columns:
        added = pd.DataFrame(rows).reindex(columns=table.columns).fillna("").astype(str)
        combined = pd.concat([table, added], ignore_index=True)
        named = set(added["encounter"].str.strip()) - {""}
        for problem in encounters.check_metadata(
            combined[combined["encounter"].str.strip().isin(named)], table_path.name
        ):
            problems.append(f"with the new rows, {problem}")
    if problems:
        raise ValueError(
            f"{decisions}: {len(problems)} problem(s) (nothing added):\n  " + "\n  ".join(problems)
        )


def _enroll_locked(
    catalogue, table_path, images_dir, chosen, decisions, decisions_digest,
    new_id_prefix, new_species, reviewer,
) -> pd.DataFrame:  # fmt: skip
    existing = data.read_train(catalogue)
    with open(table_path, "r+b"):  # writable (not read-only, not immutable): else stop here
        pass
    names = chosen["photo"].map(lambda p: Path(p).name)
    inside = images_dir.resolve()
    present = sorted(
        name
        for name, photo in zip(names, chosen["photo"], strict=True)
        if name in set(existing["image"])
        or (images_dir / name).exists()
        or inside in Path(photo).resolve().parents  # a link to a catalogue photo
    )
    done = _enrolled_before(catalogue, decisions_digest, existing)
    if done is not None and set(done["image"]) == set(names):
        return done  # these very decisions were enrolled already (a rerun after a kill)
    if present:
        raise ValueError(
            f"already in the catalogue {catalogue}, refused (nothing added): {present}"
        )
    species_of = dict(zip(existing["individual_id"], existing["species_raw"], strict=True))
    unknown = sorted(set(chosen["individual_id"]) - set(species_of) - {NEW_INDIVIDUAL})
    if unknown:
        log = read_log(catalogue)
        gone = [f"{name} ({where_it_went(log, name)})" for name in unknown
                if where_it_went(log, name)]  # fmt: skip
        raise ValueError(
            f"{decisions}: individual(s) not in the catalogue {catalogue}: {unknown} "
            f"(a new animal is '{NEW_INDIVIDUAL}')"
            + (f"; since curated: {', '.join(gone)}" if gone else "")
        )
    bad = []
    for row, (photo, name) in enumerate(zip(chosen["photo"], names, strict=True), start=2):
        if not _is_bare_name(name):
            bad.append(f"row {row}: {photo}: a hidden or unprintable file name; rename it")
            continue
        try:
            check_photo(photo)
        except ValueError as error:
            bad.append(f"row {row}: {error}")
    if bad:
        raise ValueError(
            f"{decisions}: {len(bad)} photo(s) refused (nothing added):\n  " + "\n  ".join(bad)
        )
    metadata_of = [photo_metadata(record) for record in chosen.to_dict("records")]
    animal = _new_animals(chosen, metadata_of, decisions)
    fresh = dict(zip(
        sorted(set(animal) - {None}),
        new_ids(new_id_prefix, len(set(animal) - {None}), existing["individual_id"]),
        strict=True,
    ))  # fmt: skip
    transaction = uuid.uuid4().hex[:12]
    staging = catalogue / f"{STAGING_PREFIX}{transaction}"
    rows, photos = [], []
    header = pd.read_csv(table_path, nrows=0).columns.tolist()
    unkept: set[str] = set()
    for record, name, metadata, group in zip(
        chosen.itertuples(index=False), names, metadata_of, animal, strict=True
    ):
        individual = fresh[group] if group is not None else record.individual_id
        unkept |= set(metadata) - set(header)
        rows.append(
            {"image": name, "species": species_of.get(individual, new_species),
             "individual_id": individual, **{k: v for k, v in metadata.items() if k in header}}
        )  # fmt: skip
        photos.append(
            {"source": str(record.photo), "name": name, "individual_id": individual,
             "decision": "new" if record.individual_id == NEW_INDIVIDUAL else "known",
             "model": record.model, "similarity": record.similarity,
             "probability": record.probability, "reviewer": record.reviewer,
             "reviewed_at": record.reviewed_at}
        )  # fmt: skip
    _check_new_rows(rows, table_path, decisions, set(existing["individual_id"]))
    new_table = f".train.csv.{transaction}.tmp"
    journal = {
        "transaction": transaction,
        "state": "staging",
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "reviewer": reviewer,
        "decisions": str(decisions),
        "decisions_sha256": decisions_digest,
        "staging": staging.name,
        "new_table": new_table,
        "table_before": data.file_sha256(table_path),
        "rows": rows,
        "photos": photos,
    }
    if unkept:
        warnings.warn(
            f"{table_path} has no {', '.join(sorted(unkept))} column(s): the photos' "
            f"{', '.join(sorted(unkept))} are not kept (add the column(s) to train.csv's header "
            "to keep them)",
            stacklevel=3,
        )
    check_audit_log(catalogue / AUDIT_LOG)
    write_journal(catalogue, journal)  # from here on a crash is undone by the next run
    staging.mkdir()
    for photo in photos:
        with open(photo["source"], "rb") as source, open(staging / photo["name"], "xb") as target:
            shutil.copyfileobj(source, target)
            target.flush()
            os.fsync(target.fileno())
        photo["sha256"] = data.file_sha256(staging / photo["name"])
    _fsync_dir(staging)
    table_bytes = _table_with_rows(table_path, rows)
    write_synced(catalogue / new_table, table_bytes)
    journal["table_after"] = hashlib.sha256(table_bytes).hexdigest()
    audit = catalogue / AUDIT_LOG
    journal["audit_size"] = audit.stat().st_size if audit.is_file() else 0
    journal["state"] = "staged"
    write_journal(catalogue, journal)  # from here on a crash is completed by the next run
    recover(catalogue)
    kept = [c for c in encounters.ENCOUNTER_COLUMNS if any(c in row for row in rows)]
    return pd.DataFrame(rows, columns=["image", "species", "individual_id", *kept]).fillna("")
