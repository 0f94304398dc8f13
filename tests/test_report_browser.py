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
    assert not inner.is_displayed()          # the page opens on the top level
    block.find_element(By.TAG_NAME, "summary").click()
    assert inner.is_displayed() and block.get_attribute("open") is not None
    block.find_element(By.TAG_NAME, "summary").click()
    assert not inner.is_displayed() and block.get_attribute("open") is None


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


# -- geometry: the comparison's bars, the per-layer charts' names, the page's height ------

PARAMS = {"vgg16.toml": 138_357_544, "googlenet.toml": 6_998_552, "resnet50.toml": 25_557_032}


@pytest.fixture(scope="module")
def three_nets(browser, tmp_path_factory):
    browser.get(_report(tmp_path_factory.mktemp("compare"), *map(spec_path, PARAMS)))
    return browser


def _boxes(d, selector):
    return d.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => {"
        "const r = e.getBoundingClientRect(); return {left: r.left, right: r.right, "
        "top: r.top, bottom: r.bottom, width: r.width, height: r.height, "
        "text: e.firstChild && e.firstChild.nodeType === 3 ? e.firstChild.nodeValue : "
        "e.textContent, title: e.querySelector('title') ? e.querySelector('title').textContent "
        ": null, value: e.getAttribute('data-value')}})", selector)


def test_comparison_bars_share_a_start_and_are_proportional(three_nets):
    d = three_nets
    figures = d.execute_script(
        "return Array.from(document.querySelectorAll('.ac-cmp')).map(f => f.dataset.key)")
    assert figures[:5] == ["params", "macs", "flops", "activations", "train_memory_bytes"]
    for key in figures:
        bars = _boxes(d, f'.ac-cmp[data-key="{key}"] .ac-cmptrack i')
        names = _boxes(d, f'.ac-cmp[data-key="{key}"] .ac-cmpname')
        assert [n["text"] for n in names] == ["VGG-16", "GoogLeNet", "ResNet-50"]
        assert len({round(b["left"], 1) for b in bars}) == 1, bars     # one start x
        assert len({round(n["width"], 1) for n in names}) == 1         # the names never shrink
        values = [int(b["value"]) for b in bars]
        longest = max(b["width"] for b in bars)
        assert longest > 100
        for b, v in zip(bars, values):
            assert b["width"] / longest == pytest.approx(v / max(values), abs=0.02), (key, v)
    params = [int(b["value"]) for b in _boxes(d, '.ac-cmp[data-key="params"] .ac-cmptrack i')]
    assert params == list(PARAMS.values())
    # GoogLeNet's 7.0 M next to ResNet-50's 25.6 M: 27.4% of its length (the issue saw 77 vs 176 px)
    bars = _boxes(d, '.ac-cmp[data-key="params"] .ac-cmptrack i')
    assert bars[1]["width"] / bars[2]["width"] == pytest.approx(6_998_552 / 25_557_032, rel=0.02)


@pytest.fixture(scope="module")
def resnet50(browser, tmp_path_factory):
    browser.set_window_size(1280, 1000)
    browser.get(_report(tmp_path_factory.mktemp("resnet50"), spec_path("resnet50.toml")))
    return browser


def test_resnet50_page_opens_on_the_top_level_within_two_screens(resnet50):
    d = resnet50
    height = d.execute_script("return document.body.scrollHeight")
    assert height < 2_500, height   # fully expanded it was 7,481 px
    blocks = d.execute_script(
        "return Array.from(document.querySelectorAll('details.ac-block')).map(b => b.open)")
    assert len(blocks) > 4 and not any(blocks)
    summaries = d.execute_script(
        "return Array.from(document.querySelectorAll('.ac-graph > details.ac-block > summary "
        ".ac-name')).map(e => e.textContent)")
    assert summaries == ["layer1", "layer2", "layer3", "layer4"]


def test_per_layer_charts_name_every_layer_under_its_bars(resnet50):
    d = resnet50
    table = d.execute_script(
        "return Array.from(document.querySelectorAll('table.ac-layers tbody tr'))"
        ".map(tr => tr.getAttribute('data-path'))")
    labels = _boxes(d, ".ac-perlayer .ac-xlabel")
    assert len(table) == len(labels) == 73
    for name, label in zip(table, labels):
        assert label["text"] == label["title"] == name            # all 27 characters or less
        # drawn, rotated: the name runs down the page, a few pixels a character
        assert label["height"] > 3 * len(name) and 4 < label["width"] < 16, label
    # each name sits under its own bars: centred on the activations bar of its layer
    bars = d.execute_script(
        "return Array.from(document.querySelectorAll('.ac-perlayer rect')).map(r => {"
        "const b = r.getBoundingClientRect(); return [Number(r.dataset.i), (b.left + b.right) / 2,"
        " b.bottom]})")
    first_panel = {}
    for i, centre, _ in bars:
        first_panel.setdefault(i, centre)
    assert len(first_panel) == 73
    for i, label in enumerate(labels):
        assert abs((label["left"] + label["right"]) / 2 - first_panel[i]) < 2.0, i
        assert label["top"] >= max(b for _, _, b in bars) - 1          # below every panel
    # neighbouring names do not overlap
    for a, b in zip(labels, labels[1:]):
        assert b["left"] >= a["right"] - 0.5
    three = d.execute_script(
        "return Array.from(document.querySelectorAll('.ac-perlayer .ac-paneltitle'))"
        ".map(e => e.textContent)")
    assert three == ["activations (elements per sample)", "params", "MACs"]


def test_hovering_a_bar_marks_its_layer_and_a_click_finds_its_row(resnet50):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    d = resnet50
    bar = d.find_element(By.CSS_SELECTOR, '.ac-perlayer rect[data-i="1"]')   # conv1
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", bar)
    ActionChains(d).move_to_element(bar).perform()
    marked = d.execute_script(
        "return Array.from(document.querySelectorAll('.ac-perlayer .ac-hit'))"
        ".map(e => e.tagName + ':' + e.dataset.i)")
    assert sorted(marked) == ["rect:1", "rect:1", "rect:1", "text:1"]
    assert bar.find_element(By.TAG_NAME, "title").get_attribute("textContent") \
        == "conv1: 802,816"
    bar.click()
    row = d.find_element(By.CSS_SELECTOR, "table.ac-layers tr.ac-hit")
    assert row.get_attribute("data-path") == "conv1"


def test_printing_opens_every_block_and_the_whole_table(resnet50):
    d = resnet50
    d.execute_script(
        "window.__printed = null; window.addEventListener('beforeprint', function () {"
        "window.__printed = [document.querySelectorAll('details.ac-block[open]').length,"
        "document.querySelectorAll('details.ac-block').length]; });")
    pdf = d.execute_cdp_cmd("Page.printToPDF", {})
    assert len(pdf["data"]) > 10_000
    opened, blocks = d.execute_script("return window.__printed")
    assert opened == blocks == 20            # 16 bottlenecks in 4 stages, all open on paper
    assert d.execute_script("return document.querySelectorAll('details.ac-block[open]')"
                            ".length") == 0  # and closed again on the screen
    d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    try:
        assert d.execute_script("return getComputedStyle(document.querySelector("
                                "'.ac-tablescroll')).maxHeight") == "none"
        labels = _boxes(d, ".ac-perlayer .ac-xlabel")
        assert len(labels) == 73 and all(b["height"] > 0 for b in labels)
    finally:
        d.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
