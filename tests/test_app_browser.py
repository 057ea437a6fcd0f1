"""``dispose app`` in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
installed by ``.ci/run``) loads the page served on a loopback port, uploads the dancer, runs the guidance
preview and finds its pictures on the page; the page must request nothing outside the loopback address (no
fonts, scripts or analytics from the internet).  The screenshot is saved to ``docs/app.png`` for the
README."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "app.png"
LOCAL_SCHEMES = {"data", "blob", "about", "chrome", "chrome-extension", "devtools"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail("headless Chromium is missing: apt-get install chromium chromium-driver (.ci/run does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--disable-default-apps", "--window-size=1400,2300",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


@pytest.fixture
def page_url(tmp_path, shared_data):
    from dispose.app.state import AppState
    from dispose.app.ui import launch

    port = free_port()
    state = AppState(device="cpu", output_dir=tmp_path / "out", examples_dir=shared_data)
    page = launch(state, port=port, block=False, extra_paths=[shared_data])
    yield f"http://127.0.0.1:{port}/"
    page.close()


def requested_urls(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_preview_in_a_real_browser(browser, page_url, shared_data, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 180)
    browser.get(page_url)
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#preview-button")))
    # the upload inputs of the reference and driving components (hidden file inputs)
    browser.find_element(By.CSS_SELECTOR, "#reference input[type=file]").send_keys(
        str(shared_data / "musepose_ref.png"))
    browser.find_element(By.CSS_SELECTOR, "#driving input[type=file]").send_keys(
        str(shared_data / "musepose_dance.mp4"))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#reference img")))
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#driving video")))
    browser.find_element(By.XPATH,
                         "//button[.//*[contains(text(), 'Settings')] or contains(., 'Settings')]").click()
    for selector, value in (("#resolution input[type=number]", "256"), ("#max-frames input", "8")):
        field = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, selector)))
        field.clear()
        field.send_keys(value)
        field.send_keys("\t")
    browser.find_element(By.CSS_SELECTOR, "#preview-button").click()
    wait.until(ready.text_to_be_present_in_element((By.CSS_SELECTOR, "#status"), "8 driving frames"))
    picture = wait.until(ready.visibility_of_element_located((By.CSS_SELECTOR, "#guidance img")))
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                  picture) == 3 * 256
    assert "256x448" in browser.find_element(By.CSS_SELECTOR, "#status").text

    SCREENSHOT.parent.mkdir(exist_ok=True)
    shot = tmp_path / "app.png"
    browser.save_screenshot(str(shot))
    shutil.copyfile(shot, SCREENSHOT)

    host, urls = urlparse(page_url).netloc, requested_urls(browser)
    assert sum(urlparse(url).netloc == host for url in urls) > 10  # the log saw the page's own requests
    outside = [url for url in urls
               if urlparse(url).scheme not in LOCAL_SCHEMES and urlparse(url).netloc != host]
    assert not outside, f"the page fetched from outside the loopback address: {outside}"
    assert os.path.getsize(SCREENSHOT) > 10_000
