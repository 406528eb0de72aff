"""Screenshot of a running demo, for README: picks one gallery image as the query and waits for its results.

    make demo &                                   # serves http://127.0.0.1:7860
    .venv/bin/python docs/screenshot.py http://127.0.0.1:7860 docs/demo.png

Needs headless Chromium and ChromeDriver (`make browser`) and selenium (`.[test]`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--window-size=1400,1300")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("url", help="the demo's address")
    p.add_argument("out", type=Path, help="PNG to write")
    p.add_argument("--pick", type=int, default=5, help="which picker thumbnail to query with (default: 5)")
    args = p.parse_args(argv)
    chromium = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                    None)
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        sys.exit("chromium and chromedriver are needed (make browser)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        browser.get(args.url)
        wait = WebDriverWait(browser, 120)
        thumbs = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "#picker button img, #picker img")))
        thumbs[args.pick].click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results img")) >= 8)
        wait.until(lambda d: all(d.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                                 for i in d.find_elements(By.CSS_SELECTOR, "#results img")))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(args.out))
    finally:
        browser.quit()
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
