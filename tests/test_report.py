"""`archcalc report`: one self-contained page with every layer and the totals,
nothing loaded from the network, every spec string escaped. The browser
tests are in test_report_browser.py."""
import html
import json
import re
import subprocess
import sys

from click.testing import CliRunner

import archcalc
from archcalc.cli import main
from archcalc.render.report import page
from conftest import ROOT, spec_path

EXTERNAL = re.compile(r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
                      r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import)""", re.I)

EVIL = "</script><script>window.__pwned=1</script>"


def write_report(tmp_path, *specs, name="r.html"):
    out = tmp_path / name
    result = CliRunner().invoke(main, ["report", *map(spec_path, specs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out.read_text(encoding="utf-8")


def table_json(spec):
    result = CliRunner().invoke(main, ["table", spec_path(spec), "--format", "json"])
    return json.loads(result.stdout)


def embedded(text):
    return [json.loads(m) for m in
            re.findall(r'<script type="application/json" class="ac-data">(.*?)</script>', text)]


def test_googlenet_page_has_every_layer_and_the_totals(tmp_path):
    text = write_report(tmp_path, "googlenet.toml")
    data = table_json("googlenet.toml")
    (inside,) = embedded(text)
    assert inside["totals"] == data["totals"] and inside["layers"] == data["layers"]
    for row in data["layers"][1:]:
        label = html.escape(row["name"])
        assert f'data-path="{label}"' in text, label
    for key in ("params", "macs", "flops", "activations", "train_memory_bytes"):
        assert f'data-key="{key}" data-value="{data["totals"][key]}"' in text
    assert text.count("<tr data-row=") == len(data["layers"]) == 85
    assert "Table 1 prints params in K = 1024" in text          # the spec's notes


def test_nothing_is_loaded_from_the_network(tmp_path):
    text = write_report(tmp_path, "googlenet.toml", "resnet50.toml")
    assert not EXTERNAL.search(text), EXTERNAL.search(text)
    assert "default-src 'none'" in text                        # CSP: no fetch at all
    assert not re.search(r"<(?:link|iframe|img|object|embed)\b", text, re.I)


def test_several_specs_side_by_side(tmp_path):
    text = write_report(tmp_path, "vgg16.toml", "resnet50.toml")
    assert "Side by side" in text and "[0.185x]" in text      # 25,557,032 / 138,357,544
    assert len(embedded(text)) == 2


def test_notes_at_another_input_are_omitted(tmp_path):
    out = tmp_path / "v.html"
    result = CliRunner().invoke(main, ["report", spec_path("vgg16.toml"), "--input", "3x32x32",
                                       "-o", str(out)])
    assert result.exit_code == 0
    text = out.read_text()
    assert "24M is a slip" not in text and "spec notes omitted" in text


def test_spec_strings_cannot_break_out(tmp_path):
    spec = tmp_path / "evil.toml"
    spec.write_text(
        f'[model]\nname = "<img src=x onerror=alert(1)>{EVIL}"\ninput = [3, 8, 8]\n'
        'source = "<b>bold</b> & \\u001b[31mred"\nnotes = "</style><script>alert(2)</script>"\n'
        # layer names are letters, digits and _ (the spec refuses others), so
        # the free-text fields carry the payloads
        'layers = [\n  {name = "conv_a", conv = 4, kernel = 3},\n'
        '  {name = "fc", fc = 2},\n]\n')
    out = tmp_path / "evil.html"
    result = CliRunner().invoke(main, ["report", str(spec), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert EVIL not in text and "<img" not in text and "<b>bold" not in text
    assert "\x1b" not in text
    assert text.count("<script") == 2           # the page's script and the data, nothing else
    assert text.count("</script>") == 2
    assert "</style><script>" not in text
    (inside,) = embedded(text)
    assert inside["model"].endswith(EVIL)  # the data round-trips exactly
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1" in text


def test_report_never_imports_torch(tmp_path):
    code = ("import sys, runpy\n"
            "sys.argv = ['archcalc', 'report', sys.argv[1], '-o', sys.argv[2]]\n"
            "try:\n    runpy.run_module('archcalc', run_name='__main__')\n"
            "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [m for m in ('torch', 'pandas', 'fvcore', 'matplotlib') if m in sys.modules]\n"
            "print('HEAVY=' + ','.join(heavy))\n")
    done = subprocess.run([sys.executable, "-c", code, spec_path("resnet50.toml"),
                           str(tmp_path / "r.html")], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "HEAVY="


def test_notebooks_show_reports_and_specs():
    spec = archcalc.load(spec_path("lenet5.toml"))
    for shown in (spec._repr_html_(), spec.analyze()._repr_html_()):
        assert shown.startswith('<div class="archcalc-report"')
        assert "61,706" in shown and "<html" not in shown
    a, b = spec.analyze()._repr_html_(), spec.analyze()._repr_html_()
    assert re.search(r'id="(archcalc-\d+)"', a).group(1) != re.search(r'id="(archcalc-\d+)"', b).group(1)


def test_formulas_and_folded_charts():
    symbolic = archcalc.load(spec_path("tricks/7x7-vs-3x3/three_3x3.toml")).analyze()
    text = page([symbolic])
    assert "27*C^2" in text and "Charts need numbers" in text
    big = archcalc.load(spec_path("preact_resnet1001_cifar.toml")).analyze()
    text = page([big])
    assert "3339 rows: one bar per block" in text
    assert text.count("<tr data-row=") == 3339
