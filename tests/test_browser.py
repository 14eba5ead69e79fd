"""The HTML pages in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
Selenium opens report.html, comparison.html and curves.html from file:// URLs and checks what a person would
see: no console error, every thumbnail decoded, sorting, filtering, the large view, the disagreeing cases, and
that a case named like markup runs nothing. Each page's screenshot is written to the test's tmp folder.

``.ci/run`` installs the browser, so in CI (``CI=true``) a missing browser fails this test instead of skipping.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from gmseg.cli import main
from gmseg.compare import compare_folders
from gmseg.evaluate import run_evaluate
from test_report_html import MARKUP_NAME, make_binary_dataset, make_class_dataset

WAIT_S = 15


def _missing() -> tuple[list[str], str | None, str | None]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    missing = [] if chromium else ["chromium (apt-get install chromium)"]
    missing += [] if driver else ["chromedriver (apt-get install chromium-driver)"]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    return missing, chromium, driver


@pytest.fixture(scope="module")
def browser():
    missing, chromium, driver_path = _missing()
    if missing:
        reason = "the browser test needs " + ", ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + ": .ci/run installs them; in CI this test must run, not skip")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument("--window-size=1200,900")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


def open_page(driver, path: Path) -> None:
    """Load a page from its file:// URL; nothing it logged at SEVERE (a console error, a failed load)."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(path.resolve().as_uri())
    errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def no_script_ran(driver) -> None:
    """No alert is open and no element a case name spelt out exists: the markup stayed text."""
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when no alert is open
    assert driver.execute_script("return document.querySelectorAll('img[src=\"x\"]').length") == 0


def all_decoded(driver, selector: str) -> int:
    """Scroll every image of ``selector`` into view (lazy images load only then) and wait until each is
    decoded (``naturalWidth > 0``); returns how many there are."""
    from selenium.webdriver.support.ui import WebDriverWait

    images = driver.find_elements("css selector", selector)
    for image in images:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", image)
    decoded = (
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".every(function (i) { return i.complete && i.naturalWidth > 0; })"
    )
    WebDriverWait(driver, WAIT_S).until(lambda d: d.execute_script(decoded, selector))
    driver.execute_script("window.scrollTo(0, 0)")
    return len(images)


def visible_names(driver) -> list[str]:
    rows = driver.find_elements("css selector", "#cases tbody tr.case")
    return [r.get_attribute("data-name") for r in rows if r.is_displayed()]


def dice_by_name(folder: Path) -> dict[str, float]:
    with open(folder / "metrics.csv", newline="", encoding="utf-8") as handle:
        return {row["name"]: float(row["dice"]) for row in csv.DictReader(handle)}


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    """Two scored folders (two prediction sets) of one binary dataset, and their comparison."""
    root = tmp_path_factory.mktemp("browser")
    first, names = make_binary_dataset(root / "data", n=12)
    second, _ = make_binary_dataset(root / "data", n=12, shift=2)
    run_evaluate(first, root / "data", out_dir=root / "model-a")
    run_evaluate(second, root / "data", out_dir=root / "model-b")
    assert main(["compare", str(root / "model-a"), str(root / "model-b"), "--out", str(root / "cmp")]) == 0
    return root, names


def test_the_report_page_sorts_filters_opens_cases_and_runs_no_markup(browser, scored, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    root, names = scored
    open_page(browser, root / "model-a" / "report.html")
    no_script_ran(browser)
    assert all_decoded(browser, "img.thumb") == len(names)
    assert browser.find_element("css selector", "#cases tbody td.name").text == MARKUP_NAME  # shown as text
    browser.save_screenshot(str(tmp_path / "report.png"))

    dice = dice_by_name(root / "model-a")
    browser.find_element("xpath", "//table[@id='cases']//th[normalize-space()='dice']").click()
    order = visible_names(browser)
    assert order[0] == min(dice, key=dice.get) == "case003"  # the worst case first (its prediction is empty)
    assert [dice[n] for n in order] == sorted(dice.values())

    box = browser.find_element("id", "filter")
    box.send_keys("case00")
    assert sorted(visible_names(browser)) == [f"case00{i}" for i in range(1, 10)]
    assert browser.find_element("id", "shown").text == "9"
    box.clear()
    box.send_keys("onerror")
    assert visible_names(browser) == [MARKUP_NAME]
    box.clear()
    box.send_keys("x")  # clear() fires no input event: type, then erase, to show every row again
    box.send_keys("\b")
    assert len(visible_names(browser)) == len(names)

    browser.find_element("css selector", "#cases tbody tr.case").click()  # the worst case, sorted first
    WebDriverWait(browser, WAIT_S).until(
        lambda d: d.execute_script(
            "var i = document.getElementById('case-image'); return i.complete && i.naturalWidth > 0"
        )
    )
    assert browser.execute_script("return document.getElementById('case-view').open") is True
    assert browser.find_element("id", "case-caption").text.startswith("case003")
    browser.save_screenshot(str(tmp_path / "report-case.png"))
    no_script_ran(browser)


def test_the_comparison_page_shows_the_cases_that_disagree_most_side_by_side(browser, scored, tmp_path):
    root, _ = scored
    open_page(browser, root / "cmp" / "comparison.html")
    no_script_ran(browser)
    cards = browser.find_elements("css selector", "div.disagreement")
    expected = compare_folders([root / "model-a", root / "model-b"]).most_disagreeing(24)
    assert [c.get_attribute("data-name") for c in cards] == expected
    first, second = dice_by_name(root / "model-a"), dice_by_name(root / "model-b")
    assert abs(first[expected[0]] - second[expected[0]]) == max(abs(first[n] - second[n]) for n in first)
    assert all(len(c.find_elements("css selector", "img")) == 2 for c in cards)  # both models' pictures
    assert all_decoded(browser, "div.disagreement img, img[alt=scatter]") == 2 * len(cards) + 1
    browser.save_screenshot(str(tmp_path / "comparison.png"))


def test_the_multiclass_page_has_one_colour_per_class_and_filters_by_class(browser, tmp_path):
    pred = make_class_dataset(tmp_path / "data")
    run_evaluate(pred, tmp_path / "data", out_dir=tmp_path / "scored")
    open_page(browser, tmp_path / "scored" / "report.html")
    assert all_decoded(browser, "img.thumb") == 3
    swatches = browser.find_elements("css selector", "#legend .swatch")
    colours = [s.value_of_css_property("background-color") for s in swatches]
    assert colours == ["rgba(255, 255, 255, 1)", "rgba(255, 0, 0, 1)"]
    from selenium.webdriver.support.ui import Select

    Select(browser.find_element("id", "class-filter")).select_by_visible_text("malignant")
    assert sorted(visible_names(browser)) == ["both", "m1"]
    browser.save_screenshot(str(tmp_path / "report-classes.png"))


def test_the_training_page_shows_the_curves_and_sorts_the_log(browser, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [(1, 0.9, 0.4), (2, 0.5, 0.7), (3, 0.4, 0.65)]
    (run / "train_log.csv").write_text("epoch,loss,val_dice\n" + "".join(f"{e},{lo},{d}\n" for e, lo, d in rows))
    assert main(["plot", str(run), "--html"]) == 0
    open_page(browser, run / "curves.html")
    assert all_decoded(browser, "img") == 1
    browser.find_element("xpath", "//table[@id='log']//th[normalize-space()='val_dice']").click()
    browser.find_element("xpath", "//table[@id='log']//th[normalize-space()='val_dice']").click()  # descending
    first_epoch = browser.find_element("css selector", "#log tbody tr td").text
    assert first_epoch == "2"
    browser.save_screenshot(str(tmp_path / "curves.png"))
