"""Headless Chromium for the tests of the HTML report, through Selenium and Debian's chromium and chromium-driver.

Outside CI a machine without them skips those tests with a message saying what to install; in CI (CI=true, where
.ci/run installs them) their absence fails the test instead, so the page is always checked there.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package (pip install selenium)"
    if not any(shutil.which(name) for name in CHROMIUM) or not shutil.which("chromedriver"):
        return "Chromium and its driver (apt-get install chromium chromium-driver)"
    return None


@contextmanager
def page(path: Path, width: int = 1400, height: int = 1800):
    """A headless Chromium showing the file at `path`; its console log is kept (`driver.get_log("browser")`)."""
    missing = _missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {missing} is not installed (.ci/run installs it)")
        pytest.skip(f"no headless browser here: install {missing} to run the report's browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver's own path: Selenium then never tries to download one.
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(Path(path).resolve().as_uri())
        yield driver
    finally:
        driver.quit()
