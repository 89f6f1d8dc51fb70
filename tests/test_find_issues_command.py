"""``aipflow find-issues`` through the installed script on a digits recipe (one subprocess), its files, and the review
page in a real browser (Debian's chromium + chromium-driver with selenium; skipped, with the reason, without them)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from aipflow.testing import _env


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    out = tmp_path_factory.mktemp("issues")
    script = Path(sys.executable).parent / "aipflow"
    command = [str(script) if script.exists() else "aipflow", "find-issues", "--config", "noisy_ce"]
    command += ["--issues.folds=2", "--issues.epochs=4", "--issues.batch_size=128", "--output", str(out / "found")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=out, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "found", done.stdout


def test_the_command_writes_every_training_row_worst_first_with_a_summary(found):
    folder, stdout = found
    with open(folder / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1167  # digits' training split (65 % of 1,797)
    scores = [float(r["label_score"]) for r in rows]
    assert scores == sorted(scores)
    flagged = sum(r["is_label_issue"] == "True" for r in rows)
    assert 0.25 * len(rows) < flagged < 0.55 * len(rows)  # the recipe's 40 % symmetric noise
    assert f"label issues: {flagged} of 1167 rows flagged" in stdout
    assert "2-fold cross-fit, 4 epochs per fold" in stdout and "fits of the recipe" in stdout
    assert "estimated transition matrix" in (folder / "label_issues_summary.txt").read_text()
    assert (folder / "label_issues.html").stat().st_size > 10_000


def test_a_bad_issue_option_is_one_line(capsys):
    from aipflow.cli import main

    assert main(["find-issues", "--config", "noisy_ce", "--issues.fold=2"]) == 2
    err = capsys.readouterr().err
    assert "--issues.fold: no such option (options: method, folds, epochs," in err and "Traceback" not in err
    assert main(["find-issues", "--config", "noisy_ce", "--issues.folds=1"]) == 2
    assert "issues.folds must be >= 2 (a cross-fit), got 1" in capsys.readouterr().err
    assert main(["find-issues", "--config", "noisy_ce", "--issues.method=aum"]) == 2
    assert "issues.method must be one of ('cross_fit', 'area_under_margin'), got 'aum'" in capsys.readouterr().err


def _browser():
    chrome = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    driver = shutil.which("chromedriver") or (os.path.exists("/usr/bin/chromedriver") and "/usr/bin/chromedriver")
    if not chrome or not driver:
        pytest.skip("no chromium + chromedriver installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra has it)")
    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver), options=options)


def test_the_review_page_loads_cleanly_and_its_filters_and_sort_change_the_rows(found):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    folder, _ = found
    browser = _browser()
    try:
        browser.get((folder / "label_issues.html").as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        flagged = int(browser.find_element(By.ID, "flagged-count").text)

        def rows():
            return browser.find_elements(By.CSS_SELECTOR, "#rows tr")

        assert len(rows()) == flagged > 0  # flagged rows only, by default
        assert all(r.get_attribute("class") == "issue" for r in rows()[:20])
        values = rows()[0].find_element(By.CSS_SELECTOR, "td.preview .values").text  # a flattened digit: its values
        assert values.startswith("x0=") and "more)" in values
        first_scores = [float(r.find_element(By.CSS_SELECTOR, ".score").text) for r in rows()[:10]]
        assert first_scores == sorted(first_scores)
        Select(browser.find_element(By.ID, "sort")).select_by_value("score-desc")
        assert [float(r.find_element(By.CSS_SELECTOR, ".score").text) for r in rows()[:10]] != first_scores
        Select(browser.find_element(By.ID, "given-filter")).select_by_value("3")
        shown = rows()
        assert 0 < len(shown) < flagged
        assert all(r.find_element(By.CSS_SELECTOR, ".labels").text.startswith("3 →") for r in shown)
        browser.find_element(By.ID, "only-flagged").click()
        assert len(rows()) > len(shown)  # the unflagged rows of class 3 too
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        browser.quit()


def test_an_image_folder_gets_its_rows_ids_class_names_and_thumbnails(tmp_path, monkeypatch):
    from aipflow.cli import main
    from aipflow.data.examples import write_digits_image_folder

    folder = write_digits_image_folder(tmp_path / "digits", size=12, per_class=12)
    monkeypatch.chdir(tmp_path)
    argv = ["find-issues", "--config", "noisy_images_nce_rce", f"--data.source={folder}", "--data.images.size=32"]
    argv += ["--issues.folds=2", "--issues.epochs=1", "--issues.batch_size=32", "--output", "out"]
    argv += ["--trainer.enable_progress_bar=false"]
    assert main(argv) == 0
    with open(tmp_path / "out" / "label_issues.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 78 and {r["given_label"] for r in rows} == {str(c) for c in range(10)}  # 65 % of 120 rows
    assert len({r["row"] for r in rows}) == 78 and all(0 <= int(r["row"]) < 120 for r in rows)
    page = (tmp_path / "out" / "label_issues.html").read_text()
    assert page.count("data:image/png;base64,") == 78  # every row's thumbnail
