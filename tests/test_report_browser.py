"""The HTML report in a real browser: headless Chromium driven by Selenium,
with the network switched off. It asserts on the DOM (every layer row, the
totals equal to the JSON's, a block that collapses, sorting, filtering), on a
screenshot (not blank) and on a spec that tries to run a script.

Needs Debian's `chromium` and `chromium-driver` (.ci/run installs them) and
selenium (the test extra). Without them these tests skip, unless
ARCHCALC_BROWSER_TESTS=required (CI) makes that a failure.
"""
import io
import json
import os
import shutil

import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import spec_path

REQUIRED = os.environ.get("ARCHCALC_BROWSER_TESTS") == "required"


def _missing(why):
    if REQUIRED:
        pytest.fail(f"browser tests are required here (ARCHCALC_BROWSER_TESTS): {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed (pip install selenium)")
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(b)), None)
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        _missing("no chromium and chromedriver (apt-get install -y chromium chromium-driver)")
    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    # no network at all: the page must render from its own bytes
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()


def _report(tmp_path, *args, name="report.html"):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["report", *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    return "file://" + str(out)


@pytest.fixture(scope="module")
def googlenet(browser, tmp_path_factory):
    url = _report(tmp_path_factory.mktemp("report"), spec_path("googlenet.toml"))
    browser.get(url)
    return browser


def test_every_layer_and_the_totals_in_the_dom(googlenet):
    from selenium.webdriver.common.by import By
    d = googlenet
    data = json.loads(CliRunner().invoke(main, ["table", spec_path("googlenet.toml"),
                                               "--format", "json"]).stdout)
    paths = d.execute_script(
        "return Array.from(document.querySelectorAll('table.ac-layers tbody tr'))"
        ".map(tr => tr.getAttribute('data-path'))")
    assert paths == ["input"] + [r["name"] for r in data["layers"][1:]]
    shown = {e.get_attribute("data-key"): int(e.get_attribute("data-value"))
             for e in d.find_elements(By.CSS_SELECTOR, ".ac-total")}
    for key in ("params", "macs", "flops", "activations", "activation_bytes",
                "saved_activation_bytes", "train_memory_bytes"):
        assert shown[key] == data["totals"][key], key
    inside = d.execute_script("return JSON.parse(document.querySelector('.ac-data').textContent)")
    assert inside["totals"] == data["totals"]
    # nothing was fetched: no resource entries beyond the page itself
    assert d.execute_script("return performance.getEntriesByType('resource').length") == 0
    assert d.execute_script("return document.querySelectorAll('svg.ac-svg rect').length") > 100


def test_collapsing_a_block(googlenet):
    from selenium.webdriver.common.by import By
    d = googlenet
    block = d.find_element(By.CSS_SELECTOR, 'details.ac-block[data-path="inception_4a"]')
    inner = block.find_element(By.CSS_SELECTOR, ".ac-node")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", block)
    assert inner.is_displayed()
    block.find_element(By.TAG_NAME, "summary").click()
    assert not inner.is_displayed() and block.get_attribute("open") is None
    block.find_element(By.TAG_NAME, "summary").click()
    assert inner.is_displayed()


def test_sorting_and_filtering(googlenet):
    from selenium.webdriver.common.by import By
    d = googlenet
    header = d.find_elements(By.CSS_SELECTOR, "table.ac-layers th")[5]   # params
    assert header.text == "params"
    d.execute_script("arguments[0].scrollIntoView()", header)
    header.click()
    header.click()                                                       # descending
    values = d.execute_script(
        "return Array.from(document.querySelectorAll('table.ac-layers tbody tr'))"
        ".map(tr => Number(tr.cells[5].getAttribute('data-value')))")
    assert values == sorted(values, reverse=True) and values[0] == 1_025_000   # the classifier
    box = d.find_element(By.CSS_SELECTOR, ".ac-filter")
    box.send_keys("5x5_reduce")
    visible = d.execute_script(
        "return Array.from(document.querySelectorAll('table.ac-layers tbody tr'))"
        ".filter(tr => tr.style.display !== 'none').map(tr => tr.getAttribute('data-path'))")
    assert len(visible) == 9 and all(p.endswith("5x5_reduce") for p in visible)
    hover = d.find_element(By.CSS_SELECTOR, "table.ac-layers tbody tr[data-row='1']")
    assert "(N - F + 2P)/S + 1 = (224 - 7 + 2*3)/2 + 1" in hover.get_attribute("title")


def test_screenshot_is_not_blank(googlenet):
    from PIL import Image
    googlenet.execute_script("window.scrollTo(0, 0)")
    image = Image.open(io.BytesIO(googlenet.get_screenshot_as_png())).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    assert len(colors) > 20                          # text, bars, boxes: not one flat color
    white = max(colors)[0]
    assert white < 0.97 * image.width * image.height


def test_a_spec_cannot_run_a_script(browser, tmp_path):
    spec = tmp_path / "evil.toml"
    spec.write_text(
        '[model]\nname = "<img src=x onerror=window.__pwned=2></script><script>window.__pwned=1'
        '</script>"\ninput = [3, 8, 8]\n'
        'notes = "</style><script>window.__pwned=3</script>"\nlayers = [\n'
        '  {name = "conv_a", conv = 4, kernel = 3},\n'
        '  {name = "fc", fc = 2},\n]\n')
    browser.get(_report(tmp_path, str(spec), name="evil.html"))
    assert browser.execute_script("return window.__pwned === undefined")
    names = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.ac-layers tbody tr'))"
        ".map(tr => tr.getAttribute('data-path'))")
    assert names[1] == "conv_a"
    assert "<img src=x" in browser.find_element("css selector", "h2").text
