"""Headless Chromium driven by selenium (Debian's ``chromium`` and ``chromium-driver``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

CHROMEDRIVER_NAMES = ("chromedriver",)
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def require_chromium() -> tuple[str, str]:
    """``(browser, driver)`` paths; skips (fails on CI) without them or selenium."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e .[dev])")
    browser = next((p for n in CHROMIUM_NAMES if (p := shutil.which(n))), None)
    driver = next((p for n in CHROMEDRIVER_NAMES if (p := shutil.which(n))), None)
    if browser is None or driver is None:
        pytest.skip("needs headless Chromium: apt-get install chromium chromium-driver")
    return browser, driver


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
    """A selenium WebDriver of a headless Chromium, quit at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    try:
        yield chrome
    finally:
        chrome.quit()
