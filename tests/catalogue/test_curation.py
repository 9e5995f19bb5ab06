"""curate: merge, rename, split, apply and undo as transactions (catalogue.curation), their
history, a kill at every step, and duplicates found by matching the catalogue against itself."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_catalogue

from whaleutils import cli
from whaleutils.catalogue import curation, duplicates, enrolment, identify, interop
from whaleutils.datasets import validate

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def catalogue(small_synth, tmp_path):
    """60 photos of the small synthetic set (encounter, date and place columns)."""
    return copy_catalogue(small_synth, tmp_path / "catalogue")


def table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "train.csv", dtype=str, keep_default_na=False)


def two_of_one_species(folder: Path) -> tuple[str, str]:
    """Two ids of one species, the first with the more photos."""
    frame = table(folder)
    for _, rows in frame.groupby("species"):
        counts = rows["individual_id"].value_counts()
        if len(counts) >= 2:
            return counts.index[0], counts.index[1]
    raise AssertionError("no species with two individuals")


def whole_encounters(frame: pd.DataFrame, individual: str, share: float = 0.5) -> list[str]:
    """About ``share`` of an individual's photos, whole encounters at a time."""
    rows = frame[frame["individual_id"] == individual]
    encounters = list(dict.fromkeys(rows["encounter"]))
    chosen = encounters[: max(1, int(len(encounters) * share))]
    return rows.loc[rows["encounter"].isin(chosen), "image"].tolist()


def test_merge_rename_split_then_each_undone_gives_the_table_byte_for_byte(catalogue):
    """Each edit moves only its photos (every other byte of train.csv kept), validate is
    clean after each, its undo restores the bytes before it; history and the Darwin Core
    export carry the ids a photo had."""
    keep, merged = two_of_one_species(catalogue)
    start = (catalogue / "train.csv").read_bytes()
    moved = set(table(catalogue).query("individual_id == @merged")["image"])

    merge = curation.merge(catalogue, keep, merged, reviewer="ana")
    after_merge = (catalogue / "train.csv").read_bytes()
    assert set(merge.changes["image"]) == moved and len(merge.transaction) == 12
    frame = table(catalogue)
    assert merged not in set(frame["individual_id"])
    assert set(frame.loc[frame["image"].isin(moved), "individual_id"]) == {keep}
    assert after_merge.replace(merged.encode(), keep.encode()) == start.replace(
        merged.encode(), keep.encode()
    )  # only those cells changed
    assert validate.validate_dataset(catalogue) == []

    rename = curation.rename(catalogue, keep, "Porter")
    assert set(table(catalogue)["individual_id"]) >= {"Porter"}
    photos = whole_encounters(table(catalogue), "Porter")
    split = curation.split(catalogue, "Porter", photos, into="Pearl")
    assert sorted(table(catalogue).query("individual_id == 'Pearl'")["image"]) == sorted(photos)
    assert validate.validate_dataset(catalogue) == []

    earlier = curation.previous_ids(catalogue)
    now = table(catalogue).set_index("image")["individual_id"]
    for image in moved:  # merged, then keep's, then Porter's, and some split off to Pearl
        assert earlier[image] == [merged, keep] + (["Porter"] if now[image] == "Pearl" else [])
    some_merged = sorted(moved)[0]
    dwc = interop.darwin_core(catalogue).set_index("occurrenceID")
    assert dwc.at[some_merged, "organismID"] in {"Porter", "Pearl"}
    assert json.loads(dwc.at[some_merged, "dynamicProperties"])["previous_ids"][:2] == [
        merged, keep
    ]  # fmt: skip

    events = curation.history(catalogue, "Porter")
    assert events["action"].tolist() == ["rename", "split"]
    assert events["what"].iloc[0] == f"renamed from {keep}"
    assert curation.history(catalogue, merged)["what"].tolist() == [
        f"merged into {keep} ({len(moved)} photo(s))"
    ]
    with pytest.raises(ValueError, match=r"undo .*later edits moved its photo\(s\) again"):
        curation.undo(catalogue, rename.transaction)  # the split moved some of them since

    curation.undo(catalogue, split.transaction)
    curation.undo(catalogue, rename.transaction)
    assert (catalogue / "train.csv").read_bytes() == after_merge
    again = curation.undo(catalogue, rename.transaction)  # a rerun: reported, nothing more
    assert again.repeated and again.transaction != rename.transaction
    curation.undo(catalogue, merge.transaction)
    assert (catalogue / "train.csv").read_bytes() == start
    assert validate.validate_dataset(catalogue) == []
    assert curation.previous_ids(catalogue) == {}  # every edit undone: no earlier ids
    events = curation.history(catalogue, "Porter")
    assert events["action"].tolist() == ["rename", "split", "undo", "undo"]
    assert events["undone"].tolist() == [True, True, False, False]  # the undos stand
    log = curation.read_log(catalogue)
    assert set(log["action"]) == {"merge", "rename", "split", "undo"}
    assert (log.loc[log["action"] == "merge", "reviewer"] == "ana").all()


def test_undoing_a_split_restores_its_table_and_an_undo_undone_is_a_redo(catalogue):
    individual = table(catalogue)["individual_id"].value_counts().index[0]
    photos = whole_encounters(table(catalogue), individual)
    before = (catalogue / "train.csv").read_bytes()
    split = curation.split(catalogue, individual, photos)  # a fresh id
    after = (catalogue / "train.csv").read_bytes()
    assert set(split.changes["individual_id"]) == {"new-0001"}
    undo = curation.undo(catalogue, split.transaction)
    assert (catalogue / "train.csv").read_bytes() == before
    curation.undo(catalogue, undo.transaction)  # the redo
    assert (catalogue / "train.csv").read_bytes() == after
    assert curation.previous_ids(catalogue)[photos[0]] == [individual]


def refusals(folder: Path):
    frame = table(folder)
    keep, merged = two_of_one_species(folder)
    species = frame.drop_duplicates("individual_id").groupby("species")["individual_id"].first()
    a, b = species.iloc[0], species.iloc[1]  # of two species
    busiest = frame["individual_id"].value_counts()
    multi = next(i for i in busiest.index if frame.query("individual_id == @i")["encounter"]
                 .duplicated().any())  # fmt: skip
    encounter = frame.loc[frame["individual_id"] == multi, "encounter"].value_counts().index[0]
    half = frame.loc[frame["encounter"] == encounter, "image"].tolist()[:1]
    stranger = frame.query("individual_id != @keep")["image"].iloc[0]
    return [
        (lambda: curation.merge(folder, keep, "nobody"), r"no individual 'nobody'"),
        (lambda: curation.merge(folder, keep, keep), r"into itself"),
        (lambda: curation.merge(folder, a, b), r"two species"),
        (lambda: curation.rename(folder, keep, merged), r"has that individual already.*merge"),
        (lambda: curation.rename(folder, keep, "=HYPERLINK(1)"), r"spreadsheet formula"),
        (lambda: curation.rename(folder, keep, "new_individual"), r"label of an unknown animal"),
        (lambda: curation.rename(folder, keep, "a,b"), r"no comma, quote"),
        (lambda: curation.rename(folder, keep, " x"), r"no spaces around"),
        (lambda: curation.split(folder, keep, [stranger]), rf"not its photo\(s\): {stranger}"),
        (lambda: curation.split(folder, keep, ["nowhere.jpg"]), r"not in the catalogue"),
        (lambda: curation.split(folder, keep, table(folder).query("individual_id == @keep")
                                ["image"].tolist()), r"all its .* photos listed.*rename"),
        (lambda: curation.split(folder, multi, half, into="x1"), r"split an encounter across"),
        (lambda: curation.split(folder, keep, []), r"give the photos"),
        (lambda: curation.undo(folder, "0123456789ab"), r"no transaction '0123456789ab'"),
    ]  # fmt: skip


def test_edits_refuse_what_would_break_the_catalogue_by_name(catalogue):
    before = (catalogue / "train.csv").read_bytes()
    for attempt, message in refusals(catalogue):
        with pytest.raises(ValueError, match=message):
            attempt()
    assert (catalogue / "train.csv").read_bytes() == before
    assert not (catalogue / enrolment.CURATION_LOG).exists()
    assert not (catalogue / enrolment.JOURNAL_FILE).exists()


def test_a_merged_id_is_named_where_it_went_and_a_rerun_is_reported_done(catalogue, capsys):
    keep, merged = two_of_one_species(catalogue)
    argv = ["curate", "merge", "--catalogue", str(catalogue), keep, merged, "--reviewer", "r"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    transaction = curation.read_log(catalogue)["transaction"].iloc[0]
    assert f"transaction {transaction}" in out and "curate undo --catalogue" in out
    assert cli.main(argv) == 0  # the same merge again (a rerun after a kill): nothing more
    assert f"was done already as transaction {transaction}" in capsys.readouterr().out
    assert curation.read_log(catalogue)["transaction"].nunique() == 1
    assert cli.main(["curate", "rename", "--catalogue", str(catalogue), merged, "X"]) == 2
    assert f"no individual '{merged}' in the catalogue (merged into '{keep}'" in (
        capsys.readouterr().err
    )
    assert cli.main(["curate", "history", "--catalogue", str(catalogue), keep]) == 0
    assert f"received {merged}'s" in capsys.readouterr().out
    from test_catalogue import new_photos, write_decisions  # enroll names where it went too

    decisions = write_decisions(catalogue.parent / "d.csv", [(new_photos(catalogue.parent /
                                "new", 1)[0], merged)])  # fmt: skip
    with pytest.raises(ValueError, match=rf"since curated: {merged} \(merged into '{keep}'"):
        enrolment.enroll(catalogue, decisions)


def test_apply_merges_each_group_into_its_largest_id_and_records_judgements(catalogue, tmp_path):
    frame = table(catalogue)
    ids = frame.groupby("species")["individual_id"].unique()
    trio = next(list(group[:3]) for group in ids if len(group) >= 3)
    pair = next(list(group[:2]) for group in ids if len(group) >= 2 and set(group) & set(trio)
                == set())  # fmt: skip
    decisions = tmp_path / "duplicate_decisions.csv"
    pd.DataFrame(
        [(trio[0], trio[1], "same", "ana", "2026-12-01T10:00:00Z"),
         (trio[2], trio[1], "same", "ana", "2026-12-01T10:01:00Z"),
         (pair[0], pair[1], "different", "bo", "2026-12-01T10:02:00Z"),
         (pair[0], trio[0], "unsure", "bo", "2026-12-01T10:03:00Z")],
        columns=["individual_a", "individual_b", "decision", "reviewer", "reviewed_at"],
    ).to_csv(decisions, index=False)  # fmt: skip
    counts = frame["individual_id"].value_counts()
    keep = sorted(trio, key=lambda name: (-counts[name], name))[0]
    edit = curation.apply(catalogue, decisions)
    after = table(catalogue)
    assert set(after.loc[frame["individual_id"].isin(trio), "individual_id"]) == {keep}
    assert len(edit.changes) == counts[trio].sum() - counts[keep]
    assert edit.judged.values.tolist() == [
        [pair[0], pair[1], "different"], [pair[0], trio[0], "unsure"]
    ]  # fmt: skip
    assert curation.judged_pairs(curation.read_log(catalogue)) == {
        frozenset(pair): "different", frozenset((pair[0], trio[0])): "unsure"
    }  # fmt: skip
    log = curation.read_log(catalogue)
    assert set(log["reviewer"]) == {"ana", "bo"}  # the page's reviewers, per pair
    assert curation.apply(catalogue, decisions).repeated  # the same file again: done already
    assert validate.validate_dataset(catalogue) == []
    curation.undo(catalogue, edit.transaction)
    assert (
        table(catalogue).equals(frame) and curation.judged_pairs(curation.read_log(catalogue)) == {}
    )

    contradiction = tmp_path / "contradiction.csv"
    pd.DataFrame(
        [(trio[0], trio[1], "same"), (trio[1], trio[2], "same"), (trio[0], trio[2], "different")],
        columns=["individual_a", "individual_b", "decision"],
    ).to_csv(contradiction, index=False)  # fmt: skip
    with pytest.raises(ValueError, match="decided different, but other rows decide them one"):
        curation.apply(catalogue, contradiction)
    bad = tmp_path / "bad.csv"
    bad.write_text(f"individual_a,individual_b,decision\n{trio[0]},{trio[1]},merge\n")
    with pytest.raises(ValueError, match=r"bad.csv, row 2: decision 'merge' is none of"):
        curation.apply(catalogue, bad)


# ------------------------------------------------------------------- a kill at every step

HARNESS = """
import os, signal, sys
from whaleutils.catalogue import curation, enrolment
kill_at = int(sys.argv[1])
steps = [0]
def step(function):
    def wrapped(*args, **kwargs):
        steps[0] += 1
        if steps[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return function(*args, **kwargs)
    return wrapped
for name in ("write_synced", "_fsync_dir", "_append_audit"):
    setattr(enrolment, name, step(getattr(enrolment, name)))
os.replace, os.truncate, os.unlink = step(os.replace), step(os.truncate), step(os.unlink)
action = sys.argv[2]
if action == "merge":
    curation.merge(sys.argv[3], sys.argv[4], sys.argv[5])
elif action == "split":
    curation.split(sys.argv[3], sys.argv[4], sys.argv[5].split(","), into="split-off")
else:
    curation.undo(sys.argv[3], sys.argv[4])
print("steps", steps[0])
"""


def killed_at(step: int, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HARNESS, str(step), *arguments],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("action", ["merge", "split", "undo"])
def test_an_edit_killed_at_every_step_leaves_the_catalogue_before_or_after(
    catalogue, tmp_path, action
):
    """SIGKILL before each file operation of an edit (the journal's writes, the new table,
    the rename into place, the log's append, each sync), in turn: train.csv is always the
    bytes before or the bytes after; the next curate completes or undoes it (a rerun of the
    same edit then reports it done), validate is clean and the log holds the edit once."""
    import shutil

    keep, merged = two_of_one_species(catalogue)
    individual = table(catalogue)["individual_id"].value_counts().index[0]
    if action == "merge":
        arguments = [keep, merged]
    elif action == "split":
        arguments = [individual, ",".join(whole_encounters(table(catalogue), individual))]
    else:
        arguments = [curation.merge(catalogue, keep, merged).transaction]
    template = shutil.copytree(catalogue, tmp_path / "template")
    before = (template / "train.csv").read_bytes()
    whole = killed_at(0, action, str(shutil.copytree(template, tmp_path / "whole")), *arguments)
    assert whole.returncode == 0, whole.stderr
    steps = int(whole.stdout.split()[-1])
    after = (tmp_path / "whole" / "train.csv").read_bytes()
    assert steps >= 8 and after != before
    seen = set()
    for step in range(1, steps + 1):
        folder = shutil.copytree(template, tmp_path / f"killed-{step}")
        run = killed_at(step, action, str(folder), *arguments)
        assert run.returncode == -signal.SIGKILL, (step, run.stderr[-300:])
        now = (folder / "train.csv").read_bytes()
        assert now in (before, after), step
        journal = folder / enrolment.JOURNAL_FILE
        seen.add(json.loads(journal.read_text())["state"] if journal.is_file() else "-")
        rerun = killed_at(0, action, str(folder), *arguments)  # completes or undoes, then redoes
        assert rerun.returncode == 0, (step, rerun.stderr[-300:])
        assert (folder / "train.csv").read_bytes() == after, step
        assert validate.validate_dataset(folder) == [], step
        log = curation.read_log(folder)
        assert log.loc[log["action"] == action, "transaction"].nunique() == 1, step
        assert not journal.exists() and not list(folder.glob(".train.csv.*.tmp")), step
    assert {"staging", "staged"} <= seen  # killed inside the transaction, both halves


def test_two_curates_at_once_both_land(catalogue):
    """Two processes editing one catalogue: the second waits for the lock; both edits land."""
    frame = table(catalogue)
    counts = frame["individual_id"].value_counts()
    first, second = counts.index[:2]
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "whaleutils",
                "curate",
                "rename",
                "--catalogue",
                str(catalogue),
                individual,
                f"renamed-{n}",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for n, individual in enumerate((first, second))
    ]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read()
    after = table(catalogue)
    assert {"renamed-0", "renamed-1"} <= set(after["individual_id"])
    assert {first, second}.isdisjoint(after["individual_id"])
    assert curation.read_log(catalogue)["transaction"].nunique() == 2
    assert validate.validate_dataset(catalogue) == []


# ------------------------------------------------------------------- duplicates


@pytest.fixture(scope="module")
def fused_run(tmp_path_factory):
    from test_identify import make_fused_run, make_run_dir

    folder = tmp_path_factory.mktemp("duplicates-run")
    return make_fused_run(make_run_dir(folder / "04_effnet_arcface"), folder)


@pytest.mark.slow
def test_duplicates_rank_a_planted_pair_first_and_apply_merges_it(
    fused_run, catalogue, tmp_path, capsys
):
    """An individual split in two by encounters (a planted duplicate): curate duplicates ranks
    the pair first, writes duplicates.csv, photo_pairs.csv, the page and the drawings; the
    page's decision applied merges it back; a pair judged different is left out next time."""
    frame = table(catalogue)
    individual = frame["individual_id"].value_counts().index[0]
    photos = whole_encounters(frame, individual)
    curation.split(catalogue, individual, photos, into="planted")
    out = tmp_path / "curation"
    argv = ["curate", "duplicates", "--model", str(fused_run), "--catalogue", str(catalogue),
            "--out", str(out), "--cache", str(tmp_path / "cache")]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr()
    assert "matched 60 of 60 catalogue photos" in printed.err
    ranked = pd.read_csv(out / "duplicates.csv", keep_default_na=False)
    assert {ranked.at[0, "individual_a"], ranked.at[0, "individual_b"]} == {individual, "planted"}
    assert ranked.columns.tolist()[: len(duplicates.DUPLICATE_COLUMNS)] == (
        duplicates.DUPLICATE_COLUMNS
    )
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert (ranked["probability"].diff().dropna() <= 1e-12).all()
    assert (ranked["photos_a"] >= ranked["photos_b"]).all()  # a: the id a merge keeps
    assert not ranked["species"].str.contains(" / ").any()  # one species per pair by default
    first = ranked.iloc[0]
    of = frame.set_index("image")["individual_id"]
    assert of[first["photo_a"]] == individual and of[first["photo_b"]] == individual
    assert (out / first["evidence"]).is_file() and (out / "review.html").is_file()
    photo_pairs = pd.read_csv(out / "photo_pairs.csv")
    assert set(photo_pairs["photo_a"]) <= set(frame["image"])
    assert (photo_pairs["individual_a"] != photo_pairs["individual_b"]).all()  # never its own

    assert cli.main(argv) == 2  # the folder holds results: refused without --force
    assert "not empty" in capsys.readouterr().err
    decisions = tmp_path / "duplicate_decisions.csv"
    second = ranked.iloc[1]
    pd.DataFrame(
        [(first["individual_a"], first["individual_b"], "same"),
         (second["individual_a"], second["individual_b"], "different")],
        columns=["individual_a", "individual_b", "decision"],
    ).to_csv(decisions, index=False)  # fmt: skip
    assert cli.main(["curate", "apply", "--catalogue", str(catalogue), str(decisions)]) == 0
    after = table(catalogue)
    assert "planted" not in set(after["individual_id"])
    assert set(after.loc[after["image"].isin(photos), "individual_id"]) == {individual}
    assert cli.main([*argv, "--force"]) == 0
    again = pd.read_csv(out / "duplicates.csv", keep_default_na=False)
    pairs = set(map(frozenset, zip(again["individual_a"], again["individual_b"], strict=True)))
    assert frozenset((second["individual_a"], second["individual_b"])) not in pairs
    assert "1 judged different before, left out" in capsys.readouterr().out


def test_the_knn_head_ranks_by_similarity_and_one_individual_is_refused(fused_run, catalogue):
    identifier = identify.Identifier(fused_run, catalogue, None, local=False)
    ranked, pairs = duplicates.find_duplicates(identifier)
    assert ranked["probability"].isna().all() and len(ranked)
    assert (ranked["similarity"].diff().dropna() <= 1e-12).all()
    # the reference: each pair's similarity is its two ids' most similar photos'
    index = identifier.index
    scores = index.embeddings @ index.embeddings.T
    labels = index.labels
    for row in ranked.head(5).itertuples(index=False):
        block = scores[np.ix_(labels == row.individual_a, labels == row.individual_b)]
        assert row.similarity == pytest.approx(block.max(), abs=1e-6)
    lonely = copy_catalogue(catalogue, catalogue.parent / "lonely", photos=2)
    frame = table(lonely).assign(individual_id="only")
    frame.to_csv(lonely / "train.csv", index=False)
    with pytest.raises(ValueError, match="one individual only"):
        duplicates.find_duplicates(identify.Identifier(fused_run, lonely, None, local=False))


@pytest.mark.slow
def test_the_duplicates_page_decides_pairs_in_a_browser_and_exports_them(
    fused_run, catalogue, tmp_path
):
    """The page in Chromium: every thumbnail decoded, s/d/u by key, compare opens both ids'
    photos at full resolution (, . and [ ] walk them), the export names the reviewer."""
    import io

    from test_review_page import CHROMEDRIVER, CHROMIUM

    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    identifier = identify.Identifier(fused_run, catalogue, None)
    ranked, pairs = duplicates.find_duplicates(identifier)
    out = duplicates.prepare_out(tmp_path / "out", catalogue)
    duplicates.write_duplicates(out, ranked, pairs, identifier, shown=5, evidence=2)
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--allow-file-access-from-files"):  # fmt: skip
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    browser = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        browser.set_window_size(1400, 1000)
        browser.get((out / "review.html").as_uri())
        images = browser.find_elements("css selector", "main img")
        assert len(images) >= 5 * 2
        assert all(
            browser.execute_script("return arguments[0].naturalWidth > 0", i) for i in images
        )
        keys = ActionChains(browser)
        keys.send_keys("s").send_keys("j").send_keys("d").send_keys("j").send_keys("u").perform()
        keys.send_keys("x").perform()  # the third pair: undecided again
        assert browser.find_element("id", "progress").text == "2"
        keys.send_keys("k").send_keys("k").send_keys("c").perform()  # compare the first pair
        panes = [browser.find_element("css selector", f"#{p} img")
                 for p in ("pane-query", "pane-candidate")]  # fmt: skip
        loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
        WebDriverWait(browser, 20).until(lambda d: all(d.execute_script(loaded, i) for i in panes))
        left = panes[0].get_attribute("src")
        keys.send_keys(".").perform()
        caption = browser.find_element("css selector", "#pane-query .pane-caption")
        assert (  # named at once, before the photo has loaded
            f"(2 of {ranked.at[0, 'photos_a']})" in caption.text
            and panes[0].get_attribute("src") != left
        )
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(loaded, panes[0]))
        WebDriverWait(browser, 5).until(lambda d: caption.text.endswith("%"))  # fitted
        assert f"(2 of {ranked.at[0, 'photos_a']})" in caption.text
        keys.send_keys("\ue00c").perform()  # Escape
        browser.find_element("id", "reviewer").send_keys("D. Reviewer")
        browser.find_element("id", "export").click()
        exported = browser.find_element("id", "csv").get_attribute("value")
    finally:
        browser.quit()
    table_ = pd.read_csv(io.StringIO(exported), dtype=str)
    assert table_[["individual_a", "individual_b", "decision"]].values.tolist() == [
        [ranked.at[0, "individual_a"], ranked.at[0, "individual_b"], "same"],
        [ranked.at[1, "individual_a"], ranked.at[1, "individual_b"], "different"],
    ]  # fmt: skip
    assert (table_["reviewer"] == "D. Reviewer").all()
    decisions = tmp_path / "exported.csv"
    decisions.write_text(exported)
    assert len(curation.read_pair_decisions(decisions)) == 2  # what apply reads


def test_history_of_an_enrolled_id_and_an_unknown_one(catalogue, tmp_path, capsys):
    from test_catalogue import new_photos, write_decisions

    photos = new_photos(tmp_path / "new", 2)
    decisions = write_decisions(tmp_path / "d.csv", [(photos[0], "new_individual"),
                                                     (photos[1], "new_individual")])  # fmt: skip
    enrolment.enroll(catalogue, decisions, reviewer="eve")
    events = curation.history(catalogue, "new-0001")
    assert events["action"].tolist() == ["enrolled"] and events["reviewer"].tolist() == ["eve"]
    with pytest.raises(ValueError, match="no individual 'ghost' in the catalogue or its logs"):
        curation.history(catalogue, "ghost")
    transaction = pd.read_csv(catalogue / enrolment.AUDIT_LOG, dtype=str)["transaction"].iloc[0]
    with pytest.raises(ValueError, match="is an enrolment"):
        curation.undo(catalogue, transaction)
    assert cli.main(["curate", "history", "--catalogue", str(catalogue), "new-0001"]) == 0
    assert "1 photo(s) enrolled (new)" in capsys.readouterr().out


def test_two_workers_and_any_chunk_match_as_one_whole_does(fused_run, catalogue, monkeypatch):
    """Chunks of queries (their similarities computed a chunk at a time, so that memory grows
    with the catalogue and not with its square) matched by two threads give the very pairs
    one thread does with all photos in one chunk; the KNN head's pairs too."""
    monkeypatch.setattr(duplicates, "QUERY_CHUNK", 1000)  # 60 photos: one chunk
    identifier = identify.Identifier(fused_run, catalogue, None)
    knn = identify.Identifier(fused_run, catalogue, None, local=False)
    whole, knn_whole = duplicates.photo_pairs(identifier), duplicates.photo_pairs(knn)
    monkeypatch.setattr(duplicates, "QUERY_CHUNK", 16)  # four chunks
    seen = []
    one = duplicates.photo_pairs(identifier, progress=lambda done, total: seen.append(done))
    two = duplicates.photo_pairs(identifier, workers=2)
    assert seen == [16, 32, 48, 60]
    pd.testing.assert_frame_equal(one, whole)
    pd.testing.assert_frame_equal(one, two)
    assert len(knn_whole) and knn.fused_head is None
    pd.testing.assert_frame_equal(duplicates.photo_pairs(knn), knn_whole)


def test_plant_duplicates_splits_whales_by_encounter_and_scores_their_ranks(small_synth, tmp_path):
    """scripts/plant_duplicates.py: planted ids hold whole encounters of their whale, the
    data set is untouched, and score counts the planted pairs among the first ranks."""
    sys.path.insert(0, str(REPO))
    from scripts import plant_duplicates

    before = (small_synth / "train.csv").read_bytes()
    out = tmp_path / "planted"
    with pytest.raises(ValueError, match="only 2 whales have 4 photos or more"):
        plant_duplicates.plant(small_synth, out, 3, None, "any", seed=0)
    plant_duplicates.plant(small_synth, out, 2, None, "any", seed=0)
    assert (small_synth / "train.csv").read_bytes() == before
    assert validate.validate_dataset(out) == []
    planted = pd.read_csv(out / plant_duplicates.PLANTED_FILE)
    frame, original = table(out), table(small_synth).set_index("image")["individual_id"]
    assert len(planted) == 2 and (planted["photos"] >= 1).all() and (planted["planted"] >= 1).all()
    for row in planted.itertuples(index=False):
        moved = frame[frame["individual_id"] == row.planted_id]
        assert len(moved) == row.planted and (original[moved["image"]] == row.individual_id).all()
        kept = frame[frame["individual_id"] == row.individual_id]
        assert set(moved["encounter"]).isdisjoint(kept["encounter"])  # encounters whole
    ranked = pd.DataFrame(
        {"rank": [1, 2, 3], "individual_a": [planted.at[0, "individual_id"], "x", "y"],
         "individual_b": [planted.at[0, "planted_id"], "z", planted.at[1, "individual_id"]]}
    )  # fmt: skip
    ranked.loc[2, "individual_a"] = planted.at[1, "planted_id"]
    ranked.to_csv(tmp_path / "duplicates.csv", index=False)
    report = plant_duplicates.score(out, tmp_path / "duplicates.csv")
    assert report["ranks"] == [1, 3] and report["in_first_20"] == 2 and report["not_ranked"] == 0


def test_a_curation_log_that_is_a_link_is_refused_before_anything_changes(catalogue, tmp_path):
    precious = tmp_path / "notes.csv"
    precious.write_text("my own notes\n")
    (catalogue / curation.CURATION_LOG).symlink_to(precious)
    keep, merged = two_of_one_species(catalogue)
    start = (catalogue / "train.csv").read_bytes()
    with pytest.raises(ValueError, match=rf"the audit log is a link to {precious}, not the"):
        curation.merge(catalogue, keep, merged)
    assert precious.read_text() == "my own notes\n"
    assert (catalogue / "train.csv").read_bytes() == start
    assert not (catalogue / enrolment.JOURNAL_FILE).exists()
