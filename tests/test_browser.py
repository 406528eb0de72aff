"""A real browser: headless Chromium (selenium) loads the demo, uploads an image and sees the results.

Screenshots go to the test's temporary folder only (tests never write tracked files;
docs/demo.png is taken from a real `make demo` by docs/screenshot.py). Skipped only where chromium or chromedriver is missing
(`make browser` installs the Debian packages).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1200")


def _browser() -> tuple[str, str] | None:
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                    None)
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    found = _browser()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed (`make browser`, or apt-get install chromium "
                    "chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager must not look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=found[1]))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def test_upload_an_image_and_see_the_results(browser, served, gallery, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app, url = served
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    upload = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#query input[type=file]")))
    query = sorted((gallery / "bees").iterdir())[4]
    upload.send_keys(str(query))

    def results_shown(driver):
        images = driver.find_elements(By.CSS_SELECTOR, "#results img")
        return images if len(images) >= app.top_k and all(i.get_attribute("src") for i in images) else False

    images = wait.until(results_shown)
    assert len(images) >= app.top_k
    wait.until(lambda d: query.name in d.find_element(By.ID, "results").get_attribute("innerHTML"))
    assert "1.000" in browser.find_element(By.ID, "results").get_attribute("innerHTML")
    wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                             for i in d.find_elements(By.CSS_SELECTOR, "#results img")))

    shot = tmp_path / "demo.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # The embedding tab: size and norm of the query's embedding, and the PCA plot of the gallery.
    next(t for t in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if "Embedding" in t.text).click()
    wait.until(lambda d: "L2 norm" in d.find_element(By.ID, "embedding").text)
    assert "-d" in browser.find_element(By.ID, "embedding").text
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#pca canvas, #pca svg"))
    browser.save_screenshot(str(tmp_path / "demo-embedding.png"))


def test_pick_a_gallery_image_as_the_query(browser, served, gallery):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    app, url = served
    browser.get(url)
    wait = WebDriverWait(browser, 60)
    thumbs = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#picker button img, #picker img")))
    picked = app.picker_items()[3][1]
    thumbs[3].click()
    wait.until(lambda d: Path(picked).name in d.find_element(By.ID, "results").get_attribute("innerHTML")
               and "1.000" in d.find_element(By.ID, "results").get_attribute("innerHTML"))
