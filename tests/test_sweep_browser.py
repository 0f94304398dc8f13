"""The sweep's HTML page in headless Chromium, network off: every point drawn,
the front highlighted, hovering a point shows its variables, clicking it
opens the design's totals and (on the front) its per-layer table; nothing is
fetched. Skips without chromium/chromedriver/selenium, as test_report_browser
does (ARCHCALC_BROWSER_TESTS=required makes that a failure)."""
import json

import pytest
from click.testing import CliRunner

from archcalc.cli import main
from conftest import spec_path
from test_report_browser import browser  # noqa: F401 - the shared fixture

SPEC = spec_path("tricks/7x7-vs-3x3/three_3x3.toml")
ARGS = ["--grid", "C=16,32,64,128", "--grid", "H=7,14,28", "--set", "W=14",
        "--where", "macs <= 50e6", "--objectives", "macs,+C"]


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("sweep") / "front.html"
    result = CliRunner().invoke(main, ["sweep", SPEC, *ARGS, "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(CliRunner().invoke(main, ["sweep", SPEC, *ARGS, "--format",
                                                "json"]).stdout)
    browser.get("file://" + str(out))
    return browser, data


def test_points_drawn_and_the_front_highlighted(page):
    d, data = page
    drawn = d.execute_script(
        "return Array.from(document.querySelectorAll('circle.sw-point'))"
        ".map(c => Number(c.getAttribute('data-index')))")
    assert sorted(drawn) == [p["index"] for p in data["points"]]
    front = d.execute_script(
        "return Array.from(document.querySelectorAll('circle.sw-front'))"
        ".map(c => Number(c.getAttribute('data-index')))")
    assert sorted(front) == sorted(data["front"]) and front
    cut = d.execute_script("return document.querySelectorAll('circle.sw-cut').length")
    assert cut == sum(data["infeasible"].values()) > 0
    colors = d.execute_script(
        "var f = document.querySelector('circle.sw-front'),"
        " o = document.querySelector('circle.sw-point:not(.sw-front):not(.sw-cut)');"
        "return [getComputedStyle(f).fill, getComputedStyle(o).fill]")
    assert colors[0] != colors[1]
    assert d.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_hover_shows_the_variables(page):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    d, data = page
    index = data["front"][0]
    point = next(p for p in data["points"] if p["index"] == index)
    circle = d.find_element(By.CSS_SELECTOR, f'circle.sw-point[data-index="{index}"]')
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", circle)
    ActionChains(d).move_to_element(circle).perform()
    tip = d.find_element(By.ID, "sw-tip")
    assert tip.is_displayed()
    text = tip.text
    assert f"C = {point['variables']['C']}" in text and f"H = {point['variables']['H']}" in text
    assert "on the front" in text


def test_click_opens_the_design(page):
    from selenium.webdriver.common.by import By
    d, data = page
    index = data["front"][0]
    point = next(p for p in data["points"] if p["index"] == index)
    circle = d.find_element(By.CSS_SELECTOR, f'circle.sw-point[data-index="{index}"]')
    d.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))", circle)
    detail = d.find_element(By.ID, "sw-detail")
    assert detail.is_displayed()
    assert f"--set C={point['variables']['C']}" in detail.find_element(
        By.CSS_SELECTOR, ".sw-command").text
    table = d.find_element(By.CSS_SELECTOR, f'.sw-layers[data-index="{index}"]')
    assert table.is_displayed()
    rows = table.find_elements(By.CSS_SELECTOR, "table.ac-layers tbody tr")
    assert len(rows) == 4        # the input and three 3x3 convs
    params = sum(int(r.find_element(By.CSS_SELECTOR, "td.ac-params")
                     .get_attribute("data-value")) for r in rows)
    assert params == point["totals"]["params"] == 27 * point["variables"]["C"] ** 2
