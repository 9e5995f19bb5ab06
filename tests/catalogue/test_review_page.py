"""The review page in a real browser: Debian's Chromium, headless, driven by selenium through
Debian's chromedriver (``.ci/run`` installs both; no browser is downloaded)."""

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import copy_catalogue

from whaleutils.catalogue import identify, review
from whaleutils.images.photos import prepare as prepare_photo

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (.ci/run installs them)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1400, 1000)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """One trained notebook's folder for every page of this file (its model loaded once)."""
    from test_identify import make_run_dir

    return make_run_dir(tmp_path_factory.mktemp("run") / "04_effnet_arcface")


@pytest.fixture(scope="module")
def page(tmp_path_factory, small_synth, run_dir):
    """identify's review page for three photos against a catalogue of the small synthetic set:
    the first two are catalogue photos, the third one a dark mirror image of one."""
    folder = tmp_path_factory.mktemp("review")
    catalogue = folder / "catalogue"
    (catalogue / "train_images").mkdir(parents=True)
    frame = pd.read_csv(small_synth / "train.csv").head(40).drop(columns="box")
    frame.to_csv(catalogue / "train.csv", index=False)
    for name in frame["image"]:
        shutil.copy(small_synth / "train_images" / name, catalogue / "train_images" / name)
    photos = [catalogue / "train_images" / name for name in frame["image"][:2]]
    dark = prepare_photo(photos[0])[:, ::-1] // 3
    identifier = identify.Identifier(run_dir, catalogue, None)
    matches = identifier.match([*photos, np.ascontiguousarray(dark)], top=3)
    path = review.write_review(folder / "review.html", matches, identifier, title="test")
    return path, matches


def test_the_page_loads_with_every_image_decoded(browser, page):
    path, matches = page
    browser.get(path.as_uri())
    images = browser.find_elements("css selector", "main img")  # not the drawings' viewer
    # three queries, and up to three catalogue photos for each of their three candidates
    assert len(images) >= 3 + 3 * 3
    assert all(
        browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)
        for img in images
    )
    sections = browser.find_elements("css selector", "section.photo")
    assert [s.get_attribute("data-photo") for s in sections] == list(matches["photo"].unique())
    assert browser.find_element("id", "total").text == "3"
    assert browser.execute_script("return document.activeElement.dataset.index") == "0"


def test_keyboard_decisions_export_as_csv(browser, page):
    from selenium.webdriver.common.action_chains import ActionChains

    path, matches = page
    browser.get(path.as_uri())
    keys = ActionChains(browser)
    keys.send_keys("2").send_keys("j").send_keys("n").send_keys("j").send_keys("1").perform()
    keys.send_keys("u").perform()  # the third photo: undecided again
    assert browser.find_element("id", "progress").text == "2"
    browser.find_element("id", "export").click()  # no reviewer yet: refused, saying why
    assert browser.find_element("id", "reviewer-note").is_displayed()
    assert browser.find_element("id", "csv").get_attribute("value") == ""
    browser.find_element("id", "reviewer").send_keys("A. Reviewer, jr")  # keys typed stay text
    assert browser.find_element("id", "progress").text == "2"
    browser.find_element("id", "export").click()
    assert not browser.find_element("id", "reviewer-note").is_displayed()
    exported = browser.find_element("id", "csv").get_attribute("value")
    first, second = matches["photo"].unique()[:2]
    second_choice = matches[(matches["photo"] == first) & (matches["rank"] == 2)]
    table = pd.read_csv(io.StringIO(exported), dtype=str)
    assert table.columns.tolist() == [
        "photo", "individual_id", "reviewer", "reviewed_at", "same_as"
    ]  # fmt: skip
    assert table[["photo", "individual_id"]].values.tolist() == [
        [first, second_choice["individual_id"].iloc[0]], [second, "new_individual"]
    ]  # fmt: skip
    assert (table["reviewer"] == "A. Reviewer, jr").all()  # quoted in the CSV, read back whole
    now = pd.Timestamp.now(tz="UTC")
    times = pd.to_datetime(table["reviewed_at"], utc=True)
    assert ((now - times) < pd.Timedelta(minutes=5)).all() and (times <= now).all()
    link = browser.find_element("id", "download")
    assert link.get_attribute("href").startswith("blob:")
    assert link.get_attribute("download") == "decisions.csv"


def test_mouse_choice_and_the_suggestion(browser, page):
    path, matches = page
    browser.get(path.as_uri())
    third = browser.find_elements("css selector", "section.photo")[2]
    verdict = matches[matches["photo"] == "array-2"]["new_individual"].iloc[0]
    suggested = third.find_element("css selector", "label.option.suggested")
    assert suggested.get_attribute("data-key") == ("n" if verdict else "1")
    third.find_element("css selector", 'label.option[data-key="3"]').click()
    browser.find_element("id", "reviewer").send_keys("B")
    browser.find_element("id", "export").click()
    chosen = matches[(matches["photo"] == "array-2") & (matches["rank"] == 3)]
    exported = browser.find_element("id", "csv").get_attribute("value").splitlines()
    assert exported[1].startswith(f"array-2,{chosen['individual_id'].iloc[0]},B,")


def test_same_as_another_photo_of_the_batch_exports_one_animal(browser, page):
    """ "same as another photo in this batch" (key s, then the photo): the photo takes the
    decision of the photo it is like, through a chain; left out while that one is undecided."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    path, matches = page
    browser.get(path.as_uri())
    first, second, third = matches["photo"].unique()
    sections = browser.find_elements("css selector", "section.photo")
    ActionChains(browser).send_keys("j").send_keys("s").perform()  # the second photo
    Select(sections[1].find_element("css selector", "select.same-as")).select_by_value(first)
    Select(sections[2].find_element("css selector", "select.same-as")).select_by_value(second)
    browser.find_element("id", "reviewer").send_keys("C")
    browser.find_element("id", "export").click()
    assert browser.find_element("id", "csv").get_attribute("value").splitlines()[1:] == []
    assert "2 photo(s) left out" in browser.find_element("id", "waiting").text  # first undecided

    def click(label):  # in view, below the sticky header
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", label)
        label.click()

    click(sections[0].find_element("css selector", 'label.option[data-key="n"]'))
    browser.find_element("id", "export").click()
    exported = browser.find_element("id", "csv").get_attribute("value")
    table = pd.read_csv(io.StringIO(exported), dtype=str, keep_default_na=False)
    assert table[["photo", "individual_id", "same_as"]].values.tolist() == [
        [first, "new_individual", ""], [second, "new_individual", first],
        [third, "new_individual", second],
    ]  # fmt: skip
    assert browser.find_element("id", "progress").text == "3"
    known = matches[(matches["photo"] == first) & (matches["rank"] == 1)]["individual_id"].iloc[0]
    click(sections[0].find_element("css selector", 'label.option[data-key="1"]'))
    browser.find_element("id", "export").click()  # the first is a known whale: so are the others
    table = pd.read_csv(io.StringIO(browser.find_element("id", "csv").get_attribute("value")))
    assert table["individual_id"].tolist() == [known] * 3


HOSTILE_ID = "<img src=x onerror=\"document.title='injected'\">"
HOSTILE_PHOTO = "x<!--<script>.jpg"


@pytest.fixture(scope="module")
def hostile_page(tmp_path_factory, small_synth, run_dir):
    """A page whose title holds the data placeholder and markup, whose catalogue id is markup
    that runs script if parsed as HTML, and whose photo's name opens an HTML comment and a
    script inside the data block."""
    folder = tmp_path_factory.mktemp("hostile")
    catalogue = folder / "catalogue"
    (catalogue / "train_images").mkdir(parents=True)
    frame = pd.read_csv(small_synth / "train.csv").head(12).drop(columns="box")
    frame["individual_id"] = frame["individual_id"].where(
        frame["individual_id"] != frame["individual_id"].iloc[0], HOSTILE_ID
    )
    frame.to_csv(catalogue / "train.csv", index=False)
    for name in frame["image"]:
        shutil.copy(small_synth / "train_images" / name, catalogue / "train_images" / name)
    photo = folder / HOSTILE_PHOTO
    shutil.copy(catalogue / "train_images" / frame["image"].iloc[0], photo)
    identifier = identify.Identifier(run_dir, catalogue, None)
    matches = identifier.match([photo], top=3)
    title = "__DATA__ </title><script>document.title='injected'</script>"
    return review.write_review(folder / "review.html", matches, identifier, title=title), title


def test_hostile_names_and_ids_stay_text(browser, hostile_page):
    path, title = hostile_page
    browser.get(path.as_uri())
    assert browser.title == f"Photo-ID review: {title}"  # text: no script ran, nothing filled in
    assert browser.find_element("tag name", "h1").text == f"Photo-ID review: {title}"
    sections = browser.find_elements("css selector", "section.photo")
    assert [s.get_attribute("data-photo") for s in sections] == [str(path.parent / HOSTILE_PHOTO)]
    assert HOSTILE_ID in sections[0].text  # shown as text, not parsed as an element
    assert not browser.find_elements("css selector", "section.photo img[src='x']")
    browser.find_element("css selector", 'label.option[data-key="1"]').click()
    browser.find_element("id", "reviewer").send_keys(HOSTILE_ID)
    browser.find_element("id", "export").click()
    exported = browser.find_element("id", "csv").get_attribute("value")
    assert HOSTILE_ID.split('"')[0] in exported  # the export carries the id as it is


@pytest.fixture(scope="module")
def evidence_page(tmp_path_factory, small_synth, run_dir):
    """identify's page with a fused head (by hand): a turned copy of a catalogue photo, its
    matched keypoints drawn into evidence/ beside the page."""
    from PIL import Image
    from test_identify import make_fused_run, turned_catalogue_photo

    folder = tmp_path_factory.mktemp("evidence")
    fused_run = make_fused_run(run_dir, folder)
    catalogue = copy_catalogue(small_synth, folder / "catalogue", photos=20)
    photo = folder / "turned.png"
    Image.fromarray(turned_catalogue_photo(catalogue)).save(photo)
    identifier = identify.Identifier(fused_run, catalogue, None)
    matches = identifier.match([photo], top=3)
    matches["evidence"] = review.write_evidence(folder, matches, identifier)
    return review.write_review(folder / "review.html", matches, identifier), matches


def test_matched_keypoints_open_at_full_resolution_on_demand(browser, evidence_page):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    path, matches = evidence_page
    browser.get(path.as_uri())
    drawn = matches[matches["evidence"] != ""]
    buttons = browser.find_elements("css selector", "button.keypoints")
    assert len(buttons) == len(drawn) >= 1
    viewer = browser.find_element("id", "viewer")
    image = browser.find_element("id", "viewer-image")
    assert not viewer.is_displayed() and not image.get_attribute("src")  # nothing loaded yet
    buttons[0].click()
    assert viewer.is_displayed()
    from selenium.webdriver.support.ui import WebDriverWait

    width = Image.open(path.parent / drawn["evidence"].iloc[0]).width
    WebDriverWait(browser, 20).until(  # loaded now, not before
        lambda driver: driver.execute_script("return arguments[0].complete", image)
    )
    assert browser.execute_script("return arguments[0].naturalWidth", image) == width
    assert image.size["width"] == width  # shown at full resolution
    caption = browser.find_element("id", "viewer-caption").text
    assert drawn["catalogue_photo"].iloc[0] in caption and str(drawn["inliers"].iloc[0]) in caption
    assert "matching keypoints (RootSIFT)" in caption  # which matcher's pairs are drawn
    # the per-photo answer: P(new) by the verdict, P(this whale) on each shortlisted candidate
    p_new = matches["new_probability"].iloc[0]
    assert f"P(new)={p_new:.2f}" in browser.find_element("css selector", ".query").text
    best = f"P(this whale)={matches['photo_probability'].iloc[0]:.2f}"
    assert best in browser.find_element("css selector", ".candidates").text
    assert browser.find_element("id", "progress").text == "0"  # the button chose nothing
    browser.find_element("id", "viewer-fit").click()
    assert "fit" in image.get_attribute("class")
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert not viewer.is_displayed()
    ActionChains(browser).send_keys("v").perform()  # the first candidate with a drawing
    assert viewer.is_displayed()
    ActionChains(browser).send_keys("1").send_keys(Keys.ESCAPE).perform()  # no choice while open
    assert browser.find_element("id", "progress").text == "0"


def test_compare_shows_metadata_and_opens_both_photos_at_full_resolution_to_zoom(browser, page):
    """The candidate's best photo's file name, date and place are on the page; "compare" loads
    the query and the candidate's photos (not before) at their own resolution side by side;
    keys and the mouse wheel change the displayed scale; [ and ] walk the candidate's photos."""
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains, ScrollOrigin
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    path, matches = page
    browser.get(path.as_uri())
    query = matches["photo"].iloc[0]
    best = matches[(matches["photo"] == query) & (matches["rank"] == 1)].iloc[0]
    section = browser.find_elements("css selector", "section.photo")[0]
    place = section.find_elements("css selector", ".place")[0].text
    assert best["catalogue_photo"] and best["catalogue_photo"] in place
    assert best["catalogue_date"] in place and best["catalogue_location"] in place
    assert f"viewpoint {best['catalogue_viewpoint']}" in place
    # an array given to match has no file to open: no compare button on its row
    assert not browser.find_elements("css selector", "section.photo")[2].find_elements(
        "css selector", "button.compare"
    )
    compare = browser.find_element("id", "compare")
    images = [
        browser.find_element("css selector", f"#{pane} img")
        for pane in ("pane-query", "pane-candidate")
    ]
    assert not compare.is_displayed() and not any(i.get_attribute("src") for i in images)

    section.find_elements("css selector", "button.compare")[0].click()
    assert compare.is_displayed()
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    WebDriverWait(browser, 20).until(lambda d: all(d.execute_script(loaded, i) for i in images))
    natural = [browser.execute_script("return arguments[0].naturalWidth", i) for i in images]
    assert natural[0] == Image.open(query).width  # the file itself, not a thumbnail

    def scale(pane):
        return float(browser.find_element("id", pane).get_attribute("data-scale"))

    def shown_width(image):
        return browser.execute_script("return arguments[0].getBoundingClientRect().width", image)

    fitted = scale("pane-query")
    assert shown_width(images[0]) == pytest.approx(natural[0] * fitted, abs=1.5)
    ActionChains(browser).send_keys("+").perform()  # both panes zoom in by 1.25
    assert scale("pane-query") == pytest.approx(fitted * 1.25, rel=1e-3)
    assert shown_width(images[0]) == pytest.approx(natural[0] * fitted * 1.25, abs=1.5)
    candidate_scale = scale("pane-candidate")
    view = browser.find_element("css selector", "#pane-candidate .view")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(view), 0, -120).perform()
    WebDriverWait(browser, 5).until(lambda d: scale("pane-candidate") > candidate_scale * 1.2)
    assert scale("pane-query") == pytest.approx(fitted * 1.25, rel=1e-3)  # the other pane stays
    ActionChains(browser).send_keys("0").perform()
    assert scale("pane-query") == pytest.approx(fitted, rel=1e-3)

    catalogue = pd.read_csv(path.parent / "catalogue" / "train.csv", dtype=str)
    count = int((catalogue["individual_id"] == best["individual_id"]).sum())
    first_src = images[1].get_attribute("src")
    ActionChains(browser).send_keys("]").perform()
    caption = browser.find_element("css selector", "#pane-candidate .pane-caption")
    assert f"of {count})" in caption.text  # named at once, before the photo has loaded
    WebDriverWait(browser, 20).until(lambda d: caption.text.endswith("%"))  # loaded and fitted
    if count > 1:
        assert images[1].get_attribute("src") != first_src
    ActionChains(browser).send_keys("[").perform()
    assert images[1].get_attribute("src") == first_src
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    assert not compare.is_displayed()


@pytest.fixture(scope="module")
def encounter_page(tmp_path_factory, small_synth, run_dir):
    """identify's page answering by encounter (a fused head by hand): a and b, two turned
    copies of one catalogue photo, are encounter E; c, another catalogue photo, is alone and
    given between them."""
    from PIL import Image
    from test_identify import make_fused_run, turned_catalogue_photo

    folder = tmp_path_factory.mktemp("encounter")
    fused_run = make_fused_run(run_dir, folder, encounter_rule="mean")
    catalogue = copy_catalogue(small_synth, folder / "catalogue", photos=20)
    frame = pd.read_csv(catalogue / "train.csv", keep_default_na=False)
    photos = [folder / "a.png", folder / "c.jpg", folder / "b.png"]
    Image.fromarray(turned_catalogue_photo(catalogue)).save(photos[0])
    shutil.copy(catalogue / "train_images" / frame["image"][5], photos[1])
    Image.fromarray(turned_catalogue_photo(catalogue, -8)).save(photos[2])
    identifier = identify.Identifier(fused_run, catalogue, None)
    encounters = {str(photos[0]): "E", str(photos[2]): "E"}
    matches = identifier.match(photos, top=3, encounters=encounters)
    return review.write_review(folder / "review.html", matches, identifier), matches


def test_an_encounters_photos_are_shown_together_and_decided_together(browser, encounter_page):
    from selenium.webdriver.common.action_chains import ActionChains

    path, matches = encounter_page
    browser.get(path.as_uri())
    sections = browser.find_elements("css selector", "section.photo")
    shown = [section.get_attribute("data-photo") for section in sections]
    a, c, b = matches["photo"].unique()
    assert shown == [a, b, c]  # the encounter's photos together
    answer = matches["encounter_answer"].iloc[0]
    note = sections[0].find_element("css selector", ".encounter").text
    assert note.startswith(f"encounter E (2 photos): {answer} p=")
    assert sections[1].find_element("css selector", ".encounter").text == note
    assert not sections[2].find_elements("css selector", ".encounter")
    keys = ActionChains(browser)
    keys.send_keys("n").perform()  # a: new, and so b
    assert browser.find_element("id", "progress").text == "2"
    second = matches[(matches["photo"] == a) & (matches["rank"] == 2)]["individual_id"].item()
    keys.send_keys("2").perform()  # a: its second candidate, and so b (listed there or added)
    keys.send_keys("j").send_keys("u").perform()  # b undecided again: a keeps its choice
    assert browser.find_element("id", "progress").text == "1"
    keys.send_keys("k").send_keys("2").perform()
    browser.find_element("id", "reviewer").send_keys("R")
    browser.find_element("id", "export").click()
    table = pd.read_csv(io.StringIO(browser.find_element("id", "csv").get_attribute("value")))
    assert table[["photo", "individual_id"]].values.tolist() == [[a, second], [b, second]]
