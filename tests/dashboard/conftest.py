"""Fixtures for the dashboard's tests: headless Chromium driven by Selenium (`chromium`),
and the folder screenshots are saved to (`artifacts`).

Chromium and its driver are found on PATH (Debian's `chromium` and `chromium-driver`),
or named by BLACKTAIL_CHROMIUM and BLACKTAIL_CHROMEDRIVER. Without them the browser tests
are skipped, except in CI (CI set), where they fail: a CI run must not pass without
having looked at the pages. Screenshots go to BLACKTAIL_ARTIFACTS_DIR when it is set
(e.g. tests/dashboard/artifacts, which git ignores), else to pytest's temporary folder;
the path is printed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

WINDOW_WIDTH = 1360
WINDOW_HEIGHT = 900
# A full-page screenshot is the page's height, up to this.
screenshot_height_max = 8000


def _find(variable: str, *names: str) -> str | None:
    named = os.environ.get(variable)
    if named:
        return named if Path(named).is_file() else None
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium for the module's tests."""
    binary = _find("BLACKTAIL_CHROMIUM", "chromium", "chromium-browser")
    driver = _find("BLACKTAIL_CHROMEDRIVER", "chromedriver")
    if binary is None or driver is None:
        missing = " and ".join(
            name for name, path in (("chromium", binary), ("chromedriver", driver)) if path is None
        )
        reason = f"{missing} not found (apt-get install chromium chromium-driver)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the dashboard's browser tests")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        f"--window-size={WINDOW_WIDTH},{WINDOW_HEIGHT}",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(executable_path=driver))
    browser.set_page_load_timeout(30)
    browser.set_script_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go."""
    named = os.environ.get("BLACKTAIL_ARTIFACTS_DIR")
    folder = Path(named) if named else tmp_path_factory.mktemp("dashboard-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {folder}")
    return folder


def screenshot(browser: WebDriver, folder: Path, name: str) -> Path:
    """Save the whole page (up to screenshot_height_max pixels high) as NAME.png."""
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(WINDOW_WIDTH, min(max(height, WINDOW_HEIGHT), screenshot_height_max))
    path = folder / f"{name}.png"
    try:
        assert browser.save_screenshot(str(path)), f"no screenshot of {name}"
    finally:
        browser.set_window_size(WINDOW_WIDTH, WINDOW_HEIGHT)
    return path
