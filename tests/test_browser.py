"""The web page in a real headless browser (Debian's chromium + chromedriver) against a live server on loopback."""

import shutil
import socket
import threading
import time

import numpy as np
import pytest
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from api.app import create_app
from api.settings import Settings

pytestmark = pytest.mark.slow  # a real browser against a live server

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_server(tiny_detector, tmp_path_factory):
    port = _free_port()
    db = tmp_path_factory.mktemp("browser") / "audits.sqlite"
    app = create_app(Settings(host="127.0.0.1", port=port, torch_threads=1, audit_db=str(db)),
                     loader=lambda s: tiny_detector[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (`make test` installs them where apt can)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path_factory.mktemp('chrome-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    yield driver
    driver.quit()


def test_upload_and_read_result(live_server, browser, tmp_path):
    img = tmp_path / "garment.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16), dtype=np.uint8)).save(img)
    browser.get(live_server + "/")
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "model"), "Model:"))
    browser.find_element(By.ID, "file").send_keys(str(img))
    WebDriverWait(browser, 60).until(EC.visibility_of_element_located((By.ID, "result")))
    p = float(browser.find_element(By.ID, "p-fake").text)
    assert 0.0 <= p <= 1.0
    assert browser.find_element(By.ID, "verdict").text in ("real", "fake")
    src = browser.find_element(By.ID, "img-reconstruction").get_attribute("src")
    assert src.startswith("data:image/png;base64,") and len(src) > 100
    assert browser.find_element(By.ID, "error").text == ""


def test_uncertain_verdict_says_what_was_inconclusive(live_server, browser, tmp_path):
    img = tmp_path / "colour.png"  # a colour image given to the grayscale model: out of domain, 'uncertain'
    Image.fromarray(np.random.default_rng(9).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(img)
    browser.get(live_server + "/")
    browser.find_element(By.ID, "file").send_keys(str(img))
    WebDriverWait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "verdict"), "uncertain"))
    sentence = browser.find_element(By.ID, "inconclusive")
    assert sentence.text.startswith("Uncertain: the evidence is not enough") and "colour image" in sentence.text
    assert sentence.value_of_css_property("color") == browser.find_element(By.ID, "verdict").value_of_css_property(
        "color")


def test_bad_file_shows_error(live_server, browser, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is not an image")
    browser.get(live_server + "/")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 30).until(EC.text_to_be_present_in_element((By.ID, "error"), "415"))
    assert "unsupported_media_type" in browser.find_element(By.ID, "error").text
