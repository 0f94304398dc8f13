"""The table fits the terminal (COLUMNS), drops detail before digits and never
breaks a number; --columns chooses the columns; piped output keeps them all."""
import json
import re

import pytest
from click.testing import CliRunner

from archcalc import sym
from archcalc.cli import main
from conftest import spec_path

NUMBER = re.compile(r"^\d{1,3}(,\d{3})*$")


def table(*args, columns=None):
    env = {"COLUMNS": str(columns) if columns else None}
    result = CliRunner().invoke(main, ["table", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.stdout


def rows_of(spec, *args):
    result = CliRunner().invoke(main, ["table", spec_path(spec), *args, "--format", "json"])
    return json.loads(result.stdout)["layers"]


def tokens(line):
    return [t.rstrip(",*") for t in re.split(r"[\s│┃|]+", line) if t]


def assert_numbers_intact(out, rows):
    lines = out.splitlines()
    at = 0
    for row in rows[1:]:
        labels = {row["name"]}
        found = None
        for i in range(at, len(lines)):
            if any(re.search(rf"(^|[\s│]){re.escape(lb)}(\s|│|$)", lines[i]) for lb in labels):
                found = i
                break
        assert found is not None, f"row {row['name']} not found"
        at = found + 1
        words = tokens(lines[found])
        # a number is whole: 1,849,688,064, never 1,849,6 and 88,064 on the next line
        for word in words:
            if re.fullmatch(r"[\d,]+", word) and "," in word:
                assert NUMBER.match(word), (word, lines[found])
        for key in ("params", "macs"):
            value = row[key]
            assert f"{value:,}" in words or sym.human(value) in words, (key, lines[found])


@pytest.mark.parametrize("width", [80, 100, 200])
@pytest.mark.parametrize("spec", ["resnet50.toml", "vgg16.toml", "googlenet.toml",
                                  "inception_v3.toml"])
def test_table_fits_the_width_and_keeps_every_number(spec, width):
    out = table(spec_path(spec), columns=width)
    longest = max(len(line) for line in out.splitlines())
    assert longest <= width, (longest, [ln for ln in out.splitlines() if len(ln) > width][:3])
    assert_numbers_intact(out, rows_of(spec))


def test_resnet50_at_80_columns_keeps_exact_digits():
    """The acceptance: COLUMNS=80 archcalc table specs/resnet50.toml."""
    out = table(spec_path("resnet50.toml"), columns=80)
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "115,605,504" in out and "2,360,320" in out   # layer1 conv2 MACs; layer4 3x3 + BN params
    assert "TOTAL params: 25.6M (25,557,032)" in out


def test_wide_terminals_keep_the_formulas():
    out = table(spec_path("vgg16.toml"), columns=200)
    assert "(3*3*64)*128 + 128 = 73,856" in out and "3,211,264 (3.2M)" in out


def test_huge_tables_fit_too():
    out = table(spec_path("preact_resnet1001_cifar.toml"), columns=80)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "TOTAL params: 10.3M (10,327,706)" in out


def test_piped_output_is_not_cut_at_a_fixed_width():
    out = table(spec_path("googlenet.toml"))
    assert max(len(line) for line in out.splitlines()) > 160   # the conventions, one line
    assert "(7*7*3)*64 + 64 = 9,472" in out


def test_columns_choose_and_order():
    out = table(spec_path("vgg16.toml"), "--columns", "layer,params,params%,flops", columns=100)
    header = next(line for line in out.splitlines() if "layer" in line and "params" in line)
    assert re.findall(r"layer|% params|params|FLOPs|MACs|kind", header) == \
        ["layer", "params", "% params", "FLOPs"]
    assert "74.3%" in out                     # fc6: 102,764,544 of 138,357,544
    md = CliRunner().invoke(main, ["table", spec_path("lenet5.toml"), "--format", "markdown",
                                   "--columns", "name,output_shape,num_params"]).stdout
    assert "| layer | output (C x H x W) | params |" in md
    bad = CliRunner().invoke(main, ["table", spec_path("vgg16.toml"), "--columns", "layer,nope"])
    assert bad.exit_code == 2 and "unknown column 'nope'" in bad.stderr


def test_notes_hold_only_at_the_spec_s_own_input():
    own = table(spec_path("vgg16.toml"), columns=200)
    assert "24M is a slip" in own
    other = table(spec_path("vgg16.toml"), "--input", "3x32x32", columns=200)
    assert "24M is a slip" not in other and "spec notes omitted" in other
    same = table(spec_path("vgg16.toml"), "--input", "3x224x224", columns=200)
    assert "24M is a slip" in same
    md = CliRunner().invoke(main, ["table", spec_path("vgg16.toml"), "--input", "3x32x32",
                                   "--format", "markdown"]).stdout
    assert "24M is a slip" not in md and "spec notes omitted" in md
