"""A PNG of a comparison's report.html as headless Chromium shows it (README's picture of the quickstart report).

    python examples/screenshot.py runs/quickstart/comparison/report.html docs/quickstart-report.png

Needs Chromium, its driver and selenium (`apt-get install chromium chromium-driver`; selenium is in tuner's test
extra).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def main(report: str, png: str, width: int = 1400, height: int = 1500) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or "chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(Path(report).resolve().as_uri())
        driver.save_screenshot(png)
    finally:
        driver.quit()
    print(f"{png}: {report} at {width}x{height}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
