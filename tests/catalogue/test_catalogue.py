"""enroll as a transaction (catalogue.enrolment): checks before any change, the lock, the
journal that finishes or undoes a crashed enrolment, the audit log; validate's orphans."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import bomb_png, copy_catalogue, photo_with_exif
from PIL import Image

from whaleutils import cli
from whaleutils.catalogue import enrolment as cat
from whaleutils.contracts.metrics import NEW_INDIVIDUAL
from whaleutils.datasets import validate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def catalogue(small_synth, tmp_path):
    """A copy of the small synthetic set's train part (enroll writes into it)."""
    folder = tmp_path / "catalogue"
    return copy_catalogue(small_synth, folder)


def write_decisions(path, rows):
    pd.DataFrame(rows, columns=["photo", "individual_id"]).to_csv(path, index=False)
    return path


def new_photos(folder: Path, count: int, prefix: str = "n") -> list[Path]:
    """``count`` small distinct PNG photos."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}{index:04d}.png"
        pixels = np.full((12, 12, 3), index % 256, np.uint8)
        pixels[0, 0] = (index // 256) % 256
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a catalogue (train.csv and the photos) by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in [folder / "train.csv", *sorted((folder / "train_images").iterdir())]
    }


def test_enroll_copies_photos_and_appends_rows_without_touching_the_rest(catalogue, tmp_path):
    table = catalogue / "train.csv"
    before = table.read_bytes()
    frame = pd.read_csv(table)
    known = frame["individual_id"][0]
    photos = new_photos(tmp_path / "new", 3)
    decisions = write_decisions(
        tmp_path / "decisions.csv",
        [(photos[0], known), (photos[1], NEW_INDIVIDUAL), (photos[2], NEW_INDIVIDUAL)],
    )
    added = cat.enroll(
        catalogue, decisions, new_id_prefix="nw-", new_species="minke_whale", reviewer="ana"
    )
    assert added["individual_id"].tolist() == [known, "nw-0001", "nw-0002"]
    after = table.read_bytes()
    assert after.startswith(before)  # every row there before is there, byte for byte
    grown = pd.read_csv(table)
    assert len(grown) == len(frame) + 3
    assert grown.iloc[-3:]["species"].tolist() == [frame["species"][0], *["minke_whale"] * 2]
    for path in photos:
        assert (catalogue / "train_images" / path.name).read_bytes() == path.read_bytes()
    assert validate.validate_dataset(catalogue) == []
    left = sorted(p.name for p in catalogue.iterdir())
    assert left == sorted(  # no staging left, no journal
        [cat.LOCK_FILE, cat.AUDIT_LOG, "sample_submission.csv", "test_images", "train.csv",
         "train_images"]
    )  # fmt: skip
    log = pd.read_csv(catalogue / cat.AUDIT_LOG, dtype=str, keep_default_na=False)
    assert list(log.columns) == list(cat.AUDIT_COLUMNS)
    assert log["reviewer"].tolist() == ["ana"] * 3
    assert log["decision"].tolist() == ["known", "new", "new"]
    assert log["image"].tolist() == [p.name for p in photos]
    assert log["individual_id"].tolist() == added["individual_id"].tolist()
    assert log["transaction"].nunique() == 1
    # the same decisions again (a rerun): what they added, nothing more
    log_after = (catalogue / cat.AUDIT_LOG).read_bytes()
    again = cat.enroll(catalogue, decisions, new_id_prefix="nw-")
    pd.testing.assert_frame_equal(again, added)
    assert table.read_bytes() == after and (catalogue / cat.AUDIT_LOG).read_bytes() == log_after
    # other decisions about the same photos: refused by name, nothing added
    other = write_decisions(tmp_path / "other.csv", [(p, known) for p in photos])
    with pytest.raises(ValueError, match=r"already in the catalogue .*\['n0000.png', 'n0001"):
        cat.enroll(catalogue, other, new_id_prefix="nw-")
    assert table.read_bytes() == after
    # another new individual continues the numbering; the log grows, its lines stay
    log_before = (catalogue / cat.AUDIT_LOG).read_bytes()
    extra = new_photos(tmp_path / "more", 1, prefix="m")[0]
    more = cat.enroll(
        catalogue, write_decisions(tmp_path / "d2.csv", [(extra, NEW_INDIVIDUAL)]), "nw-"
    )
    assert more["individual_id"].tolist() == ["nw-0003"]
    assert (catalogue / cat.AUDIT_LOG).read_bytes().startswith(log_before)


def hostile_decisions(tmp_path: Path, catalogue: Path):
    """(name, decisions file, expected message) for each kind of bad decisions file."""
    good = new_photos(tmp_path / "good", 1, prefix="g")[0]
    truncated = tmp_path / "truncated.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0:root:/root:/bin/bash\n")
    bomb = bomb_png(tmp_path / "bomb.png")  # beyond Pillow's own limit
    large = bomb_png(tmp_path / "large.png", 12000)  # within Pillow's, beyond MAX_PHOTO_PIXELS
    known = pd.read_csv(catalogue / "train.csv")["individual_id"][0]
    utf16 = tmp_path / "utf16.csv"
    utf16.write_text(f"photo,individual_id\n{good},{known}\n", encoding="utf-16")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = [
        ("a text file as a photo", [(text, known)], r"row 2: .*passwd: not a readable image"),
        ("a truncated JPEG", [(truncated, NEW_INDIVIDUAL)], r"row 2: .*truncated.jpg: not a readable"),
        ("a decompression bomb", [(bomb, NEW_INDIVIDUAL)], r"bomb.png: refused as a decompression"),
        ("144 megapixels", [(large, NEW_INDIVIDUAL)], r"large.png: declares 12000 x 12000 px"),
        ("an unknown individual", [(good, "no-such-whale")], r"not in the catalogue .*no-such-whale"),
        ("a missing photo", [(tmp_path / "gone.jpg", known)], r"row 2: photo .*gone.jpg not found"),
        ("a blank id", [(good, " ")], r"row 2: empty photo or individual_id"),
        ("a photo twice", [(good, known), (good, known)], r"photo name\(s\) listed twice"),
    ]  # fmt: skip
    for name, rows, message in cases:
        yield name, write_decisions(tmp_path / f"{name}.csv", [(good, known), *rows][1:]), message
    yield "a UTF-16 file", utf16, r"utf16.csv: not UTF-8 text"
    yield "an empty file", empty, r"empty.csv: empty file, no header"
    (tmp_path / "columns.csv").write_text("photo,id\nx,y\n")
    yield "a wrong column", tmp_path / "columns.csv", r"missing column\(s\) \['individual_id'\]"


def test_hostile_decisions_are_refused_by_name_and_nothing_changes(catalogue, tmp_path):
    before = snapshot(catalogue)
    for name, decisions, message in hostile_decisions(tmp_path, catalogue):
        with pytest.raises(ValueError, match=message):
            cat.enroll(catalogue, decisions)
        assert snapshot(catalogue) == before, name
        assert not any(p.name.startswith(".enroll-") for p in catalogue.iterdir()), name


def test_the_cli_gives_one_line_for_bad_decisions(catalogue, tmp_path, capsys):
    bomb = bomb_png(tmp_path / "bomb.png")
    decisions = write_decisions(tmp_path / "d.csv", [(bomb, NEW_INDIVIDUAL)])
    argv = ["enroll", "--catalogue", str(catalogue), "--decisions", str(decisions)]
    assert cli.main(argv) == 2
    assert "bomb.png: refused as a decompression bomb" in capsys.readouterr().err
    assert cli.main([*argv[:-1], str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: file not found" in capsys.readouterr().err


def test_a_second_enroll_waits_for_the_lock_then_refuses(catalogue, tmp_path):
    photo = new_photos(tmp_path / "new", 1)[0]
    decisions = write_decisions(tmp_path / "d.csv", [(photo, NEW_INDIVIDUAL)])
    before = snapshot(catalogue)
    with cat.CatalogueLock(catalogue):  # another holder (a separate open file: flock conflicts)
        started = time.monotonic()
        with pytest.raises(cat.CatalogueBusy, match=rf"another enroll \(process {os.getpid()}\)"):
            cat.enroll(catalogue, decisions, wait=0.3)
        assert time.monotonic() - started >= 0.3
    assert snapshot(catalogue) == before
    assert len(cat.enroll(catalogue, decisions, wait=0.3)) == 1  # free again


def test_validate_names_photos_without_rows(catalogue):
    (catalogue / "train_images" / "stray.jpg").write_bytes(b"")
    gone = pd.read_csv(catalogue / "train.csv")["image"][3]
    (catalogue / "train_images" / gone).unlink()
    problems = validate.validate_dataset(catalogue)
    assert "train_images/stray.jpg: photo without a row in train.csv" in problems
    assert any(f"image missing: train_images/{gone}" in p for p in problems)


def enroll_command(catalogue: Path, decisions: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "whaleutils", "enroll", "--catalogue", str(catalogue),
            "--decisions", str(decisions), *extra]  # fmt: skip


def test_two_enrolls_at_once_never_share_an_id(catalogue, tmp_path):
    """Two processes, 300 new animals each, started together on one catalogue."""
    runs = []
    for side in ("a", "b"):
        photos = new_photos(tmp_path / side, 300, prefix=side)
        decisions = write_decisions(tmp_path / f"{side}.csv", [(p, NEW_INDIVIDUAL) for p in photos])
        runs.append(
            subprocess.Popen(
                enroll_command(catalogue, decisions, "--reviewer", side),
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
        )
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    table = pd.read_csv(catalogue / "train.csv", dtype=str)
    added = table[table["image"].str.match(r"[ab]\d{4}\.png")]
    assert len(added) == 600 and added["image"].is_unique
    assert added["individual_id"].is_unique  # 600 animals, 600 ids
    owner = added.set_index("individual_id")["image"].str[0]
    log = pd.read_csv(catalogue / cat.AUDIT_LOG, dtype=str)
    assert (log.set_index("individual_id")["reviewer"] == owner.loc[log["individual_id"]]).all()
    assert validate.validate_dataset(catalogue) == []


@pytest.mark.slow
def test_enroll_killed_at_random_points_is_finished_by_the_rerun(small_synth, tmp_path):
    """SIGKILL at 20 random moments of a 1,000-photo enrolment (10 anywhere in it, 10 within
    30 ms of its journal saying "staged": the short stretch in which the photos move into place
    and train.csv is replaced); after each: the rerun of the same decisions completes, validate
    passes, every photo has exactly one row and nothing the catalogue held before changed."""
    photos = new_photos(tmp_path / "new", 1000)
    frame = pd.read_csv(small_synth / "train.csv").head(60)
    known = frame["individual_id"].tolist()
    rows = [(p, NEW_INDIVIDUAL if i % 3 else known[i % len(known)]) for i, p in enumerate(photos)]
    decisions = write_decisions(tmp_path / "decisions.csv", rows)
    template = copy_catalogue(small_synth, tmp_path / "template")
    before = snapshot(template)
    started = time.monotonic()  # how long a whole enrolment takes, to spread the kills over
    subprocess.run(enroll_command(shutil.copytree(template, tmp_path / "timed"), decisions),
                   cwd=REPO, check=True, capture_output=True)  # fmt: skip
    whole = time.monotonic() - started
    rng = np.random.default_rng(0)
    outcomes = []
    for attempt in range(20):
        folder = shutil.copytree(template, tmp_path / f"killed-{attempt}")
        run = subprocess.Popen(enroll_command(folder, decisions), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        if attempt < 10:
            time.sleep(rng.uniform(0.2, whole))
        else:  # watch the journal (replaced atomically: always whole) for the last stretch
            journal = folder / cat.JOURNAL_FILE
            while run.poll() is None and not (
                journal.is_file() and '"staged"' in journal.read_text()
            ):
                time.sleep(0.001)
            time.sleep(rng.uniform(0.0, 0.03))
        run.send_signal(signal.SIGKILL)
        run.wait()
        journal = folder / cat.JOURNAL_FILE
        outcomes.append(json.loads(journal.read_text())["state"] if journal.is_file() else "-")
        rerun = subprocess.run(enroll_command(folder, decisions), cwd=REPO,
                               capture_output=True, text=True)  # fmt: skip
        assert rerun.returncode == 0, (attempt, outcomes[-1], rerun.stderr[-300:])
        assert validate.validate_dataset(folder) == [], attempt
        table = pd.read_csv(folder / "train.csv", dtype=str)
        assert sorted(table["image"]) == sorted([*frame["image"], *(p.name for p in photos)])
        after = snapshot(folder)
        assert after["train.csv"].startswith(before["train.csv"]), attempt
        assert all(
            after[name] == content for name, content in before.items() if name != "train.csv"
        )
        ids = table.set_index("image")["individual_id"]
        new = [
            p.name
            for p, (_, decided) in zip(photos, rows, strict=True)
            if decided == NEW_INDIVIDUAL
        ]
        assert ids[new].is_unique, attempt  # each new animal its own id
    print("journal state at each kill:", outcomes)
    assert "staging" in outcomes[:10] and outcomes[10:].count("staged") >= 5


def test_enroll_keeps_each_photos_encounter_from_the_decisions_or_its_exif(catalogue, tmp_path):
    """The review page's reviewer and time go to the audit log; the decisions' encounter
    columns, or where empty the photo's EXIF date and GPS position, go into the new rows."""

    table = catalogue / "train.csv"
    before = table.read_bytes()
    known = pd.read_csv(table)["individual_id"][0]
    folder = tmp_path / "new"
    folder.mkdir()
    gps = {1: "S", 2: (33.0, 30.0, 0.0), 3: "E", 4: (18.0, 15.0, 0.0)}
    exif_photo = photo_with_exif(folder / "exif.jpg", "2025:07:04 09:30:00", gps)
    sidecar_photo = photo_with_exif(folder / "sidecar.jpg", "2025:07:05 10:00:00")
    decisions = pd.DataFrame(
        {
            "photo": [str(exif_photo), str(sidecar_photo)],
            "individual_id": [known, NEW_INDIVIDUAL],
            "reviewer": ["Ana, B.", ""],
            "reviewed_at": ["2026-12-01T10:00:00Z", "2026-12-01T10:01:00Z"],
            "encounter": ["", "enc-x"],
            "date": ["", "2025-07-06"],
            "location": ["", "False Bay"],
            "viewpoint": ["left", "fluke"],
        }
    )
    decisions.to_csv(tmp_path / "decisions.csv", index=False)
    added = cat.enroll(catalogue, tmp_path / "decisions.csv", reviewer="cli-user")
    assert table.read_bytes().startswith(before)
    rows = pd.read_csv(table, dtype=str, keep_default_na=False).iloc[-2:]
    assert rows["date"].tolist() == ["2025-07-04T09:30:00", "2025-07-06"]  # EXIF, then given
    assert rows["latitude"].tolist() == ["-33.500000", ""]  # south: negative
    assert rows["longitude"].tolist() == ["18.250000", ""]
    assert rows["encounter"].tolist() == ["", "enc-x"]
    assert rows["location"].tolist() == ["", "False Bay"]
    assert rows["viewpoint"].tolist() == ["left", "fluke"]
    assert added["date"].tolist() == rows["date"].tolist()
    assert validate.validate_dataset(catalogue) == []
    log = pd.read_csv(catalogue / cat.AUDIT_LOG, dtype=str, keep_default_na=False)
    assert log["reviewer"].tolist() == ["Ana, B.", "cli-user"]  # the page's name, else --reviewer
    assert log["reviewed_at"].tolist() == decisions["reviewed_at"].tolist()

    # bad metadata or a bad time in the decisions: refused by row before anything changes
    after = table.read_bytes()
    more = photo_with_exif(folder / "more.jpg")
    for column, value, message in [
        ("latitude", "123", r"decisions2.csv line 2 .*: latitude '123' is outside -90..90"),
        ("reviewed_at", "yesterday", r"row 2: reviewed_at 'yesterday' is not a date and time"),
    ]:
        bad = pd.DataFrame({"photo": [str(more)], "individual_id": [known], column: [value]})
        if column == "latitude":
            bad["longitude"] = "10"
        bad.to_csv(tmp_path / "decisions2.csv", index=False)
        with pytest.raises(ValueError, match=message):
            cat.enroll(catalogue, tmp_path / "decisions2.csv")
        assert table.read_bytes() == after


def test_enroll_into_a_catalogue_without_the_columns_says_what_is_not_kept(catalogue, tmp_path):

    table = catalogue / "train.csv"
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    frame[["image", "species", "individual_id"]].to_csv(table, index=False)
    before = table.read_bytes()
    photo = photo_with_exif(tmp_path / "p.jpg", "2025:07:04 09:30:00")
    write_decisions(tmp_path / "d.csv", [(photo, frame["individual_id"][0])])
    with pytest.warns(UserWarning, match=r"has no date column\(s\): the photos' date are not kept"):
        cat.enroll(catalogue, tmp_path / "d.csv")
    assert table.read_bytes().startswith(before)
    assert pd.read_csv(table).columns.tolist() == ["image", "species", "individual_id"]


def crafted_journals(catalogue: Path, outside: Path) -> list[tuple[str, object, str]]:
    """(case, journal payload or raw text, expected message) for journals enroll never wrote."""
    transaction = "0123456789ab"
    good = {
        "transaction": transaction, "state": "staging", "time": "t", "reviewer": "",
        "decisions": "d.csv", "decisions_sha256": "0" * 64,
        "staging": f"{cat.STAGING_PREFIX}{transaction}", "new_table": f".train.csv.{transaction}.tmp",
        "table_before": "0" * 64, "rows": [], "photos": [],
    }  # fmt: skip
    staged = {**good, "state": "staged", "table_after": "0" * 64, "audit_size": 0}
    return [
        ("staging outside", {**good, "staging": "../victim_dir"}, "is not its transaction's"),
        ("table outside", {**good, "new_table": "../victim_file.txt"}, "is not its transaction's"),
        ("absolute staging", {**staged, "staging": str(outside / "victim_dir")}, "staging"),
        ("photo outside", {**staged, "photos": [{"name": "../../victim_file.txt",
                                                 "sha256": "0" * 64}]}, "not a file name"),
        ("hidden photo", {**staged, "photos": [{"name": ".x", "sha256": "0" * 64}]}, "not a file"),
        ("no digest", {**staged, "photos": [{"name": "a.jpg"}]}, "no sha256 digest"),
        ("bad state", {**good, "state": "rm -rf"}, "neither staging nor staged"),
        ("bad size", {**staged, "audit_size": -5}, "audit_size -5 is not a size"),
        ("a list", [1, 2], "must hold an object, not list"),
        ("truncated", '{"state": "stag', "not a readable JSON file"),
    ]  # fmt: skip


def test_a_crafted_journal_touches_nothing_outside_the_catalogue(catalogue, tmp_path):
    """A journal is a hidden file anyone could leave in a shared catalogue: enroll checks it
    before it deletes, links or moves anything it names, and refuses naming it."""
    outside = tmp_path / "outside"
    (outside / "victim_dir").mkdir(parents=True)
    (outside / "victim_dir" / "keep.txt").write_text("keep")
    (outside / "victim_file.txt").write_text("keep")
    (catalogue.parent / "victim_dir").mkdir(exist_ok=True)
    (catalogue.parent / "victim_file.txt").write_text("keep")
    known = pd.read_csv(catalogue / "train.csv")["individual_id"][0]
    decisions = write_decisions(
        tmp_path / "d.csv", [(str(new_photos(tmp_path / "new", 1)[0]), known)]
    )
    before = snapshot(catalogue)
    journal = catalogue / cat.JOURNAL_FILE
    for case, payload, message in crafted_journals(catalogue, outside):
        journal.write_text(payload if isinstance(payload, str) else json.dumps(payload))
        with pytest.raises(ValueError, match=r"\.enroll-journal\.json: ") as error:
            cat.enroll(catalogue, decisions, wait=1)
        assert message in str(error.value), case
        assert (outside / "victim_dir" / "keep.txt").read_text() == "keep", case
        assert (outside / "victim_file.txt").is_file(), case
        assert (catalogue.parent / "victim_dir").is_dir(), case
        assert (catalogue.parent / "victim_file.txt").is_file(), case
        assert snapshot(catalogue) == before, case
        assert journal.is_file(), case  # left for a person to look at
    # a staging folder that is a link out of the catalogue: refused, the folder kept
    transaction = "0123456789ab"
    link = catalogue / f"{cat.STAGING_PREFIX}{transaction}"
    link.symlink_to(outside / "victim_dir")
    payload = dict(crafted_journals(catalogue, outside)[0][1])
    payload["staging"] = link.name
    journal.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="is a link, not this tool's own file"):
        cat.enroll(catalogue, decisions, wait=1)
    assert (outside / "victim_dir" / "keep.txt").is_file()
    # the journal a person removed: enroll goes on
    journal.unlink()
    link.unlink()
    assert len(cat.enroll(catalogue, decisions, wait=1)) == 1


def test_enroll_refuses_what_would_break_the_catalogue(catalogue, tmp_path):
    """An encounter given to another animal, cells a spreadsheet would run, a link to a photo
    the catalogue holds: refused before anything changes. An id like ``new-²`` is a name, not
    a number; a CRLF table gets CRLF rows."""
    table = catalogue / "train.csv"
    frame = pd.read_csv(table, dtype=str, keep_default_na=False)
    first, other = frame.iloc[0], frame[frame["individual_id"] != frame["individual_id"][0]]
    photo = new_photos(tmp_path / "new", 3)
    before = snapshot(catalogue)
    cases = [
        ({"photo": [str(photo[0])], "individual_id": [other["individual_id"].iloc[0]],
          "encounter": [first["encounter"]]}, {}, "encounter"),
        ({"photo": [str(photo[0])], "individual_id": [NEW_INDIVIDUAL]},
         {"new_species": "=HYPERLINK(\"http://x\")"}, "species '=HYPERLINK"),
        ({"photo": [str(photo[0])], "individual_id": [NEW_INDIVIDUAL],
          "encounter": ["@SUM(A1)"]}, {}, "encounter '@SUM(A1)' would run as a spreadsheet"),
        ({"photo": [str(photo[0])], "individual_id": [NEW_INDIVIDUAL]},
         {"new_id_prefix": "-x"}, "individual_id '-x0001' would run"),
    ]  # fmt: skip
    assert first["encounter"], "the synthetic catalogue names encounters"
    for index, (columns, options, message) in enumerate(cases):
        pd.DataFrame(columns).to_csv(tmp_path / f"d{index}.csv", index=False)
        with pytest.raises(ValueError, match="nothing added") as error:
            cat.enroll(catalogue, tmp_path / f"d{index}.csv", **options)
        assert message in str(error.value)
        assert snapshot(catalogue) == before
    linked = tmp_path / "linked.jpg"
    linked.symlink_to((catalogue / "train_images" / first["image"]).resolve())
    write_decisions(tmp_path / "link.csv", [(str(linked), NEW_INDIVIDUAL)])
    with pytest.raises(ValueError, match="already in the catalogue"):
        cat.enroll(catalogue, tmp_path / "link.csv")
    # an id new-² in the catalogue, and the table in CRLF
    text = table.read_text().replace("\n", "\r\n").replace(first["individual_id"], "new-\u00b2", 1)
    table.write_bytes(text.encode())
    write_decisions(tmp_path / "new.csv", [(str(photo[1]), NEW_INDIVIDUAL)])
    added = cat.enroll(catalogue, tmp_path / "new.csv", reviewer="=cmd|' /C calc'!A0")
    assert added["individual_id"].tolist() == ["new-0001"]
    log = pd.read_csv(catalogue / cat.AUDIT_LOG, dtype=str, keep_default_na=False)
    assert log["reviewer"].iloc[-1] == "'=cmd|' /C calc'!A0"  # escaped for spreadsheets
    assert table.read_bytes().endswith(b"\r\n") and b"\n" not in table.read_bytes().replace(
        b"\r\n", b""
    )


def test_photos_the_same_as_each_other_or_of_one_encounter_get_one_new_id(catalogue, tmp_path):
    """The review page's same_as (through a chain), and photos decided new that share an
    encounter (one encounter is one animal), become one new individual; a same_as that names
    no photo of the file, or links photos decided two ways, is refused by row."""
    photos = new_photos(tmp_path / "new", 6)
    known = pd.read_csv(catalogue / "train.csv")["individual_id"][0]
    decisions = pd.DataFrame(
        {
            "photo": [str(p) for p in photos],
            "individual_id": [NEW_INDIVIDUAL] * 4 + [known, NEW_INDIVIDUAL],
            "same_as": ["", str(photos[0]), photos[1].name, "", str(photos[0].parent / "x"), ""],
            "encounter": ["", "", "", "enc-q", "", "enc-q"],
        }
    )
    decisions.loc[4, "same_as"] = ""  # a known whale, alone
    decisions.to_csv(tmp_path / "decisions.csv", index=False)
    added = cat.enroll(catalogue, tmp_path / "decisions.csv").set_index("image")["individual_id"]
    names = [p.name for p in photos]
    assert added[names[:3]].nunique() == 1 and added[names[3]] == added[names[5]]
    assert added[names[0]] != added[names[3]] and added[names[4]] == known
    assert sorted(set(added[names[:4]])) == ["new-0001", "new-0002"]  # two new animals
    assert validate.validate_dataset(catalogue) == []

    before = (catalogue / "train.csv").read_bytes()
    more = new_photos(tmp_path / "more", 2, prefix="m")
    for same_as, ids, message in [
        ("nowhere.png", [NEW_INDIVIDUAL] * 2, r"row 3: same_as 'nowhere.png' is no photo of"),
        (str(more[1]), [NEW_INDIVIDUAL] * 2, r"row 3: same_as names the row's own photo"),
        (str(more[0]), [known, NEW_INDIVIDUAL], r"rows 2 and 3: one animal by same_as, but"),
    ]:
        bad = pd.DataFrame({"photo": [str(p) for p in more], "individual_id": ids,
                            "same_as": ["", same_as]})  # fmt: skip
        bad.to_csv(tmp_path / "bad.csv", index=False)
        with pytest.raises(ValueError, match=message):
            cat.enroll(catalogue, tmp_path / "bad.csv")
    assert (catalogue / "train.csv").read_bytes() == before


def test_an_audit_log_that_is_a_link_is_refused_before_anything_changes(catalogue, tmp_path):
    """Appending to a linked decisions_log.csv (or cutting it back after a crash) would write
    the file it points at, outside the catalogue: enroll refuses it and changes nothing."""
    precious = tmp_path / "notes.csv"
    precious.write_text("my own notes\n")
    (catalogue / cat.AUDIT_LOG).symlink_to(precious)
    before = snapshot(catalogue)
    photos = new_photos(tmp_path / "new", 1)
    decisions = write_decisions(tmp_path / "d.csv", [(photos[0], NEW_INDIVIDUAL)])
    with pytest.raises(ValueError, match=rf"the audit log is a link to {precious}, not the"):
        cat.enroll(catalogue, decisions)
    assert precious.read_text() == "my own notes\n" and snapshot(catalogue) == before
    assert not (catalogue / cat.JOURNAL_FILE).exists()
