"""Hostile specs, run as a user runs them (a subprocess of the CLI, with a
memory cap): each ends in exit 2 and one line naming what is wrong, within
1.5 GB and CPU_SECONDS of CPU time (a hang guard, not a speed check: the 5 s
promise is timed by benchmarks/hostile_speed.py, which reads the times this
file records under ARCHCALC_HOSTILE_TIMES), and nothing in a spec is executed
or printed as markup.

Cases come in families (powers, includes, nesting, repeats, names, markup,
values), several members each, so the fix is general and not tuned to one file.
"""
import json
import os
import resource
import subprocess
import sys
import time

import pytest

HEADER = '[model]\nname = "h"\ninput = [3, 8, 8]\n'
CPU_SECONDS = 20        # work bound (a refusal costs ~1 s of CPU): SIGXCPU past it, whatever the load
MEMORY = 1_500_000_000
TIMES = os.environ.get("ARCHCALC_HOSTILE_TIMES")   # benchmarks/hostile_speed.py


def _cap_memory_and_cpu():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))


def run_cli(args, cwd, env=None):
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "archcalc", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=4 * CPU_SECONDS,  # hang guard
                          preexec_fn=_cap_memory_and_cpu, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if TIMES:   # recorded for the benchmark, asserted nowhere here
        with open(TIMES, "a") as f:
            f.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                "args": args[:1], "seconds": seconds}) + "\n")
    return proc, seconds


def refused(tmp_path, text, *fragments, args=(), files=None, code=2, cmd="table"):
    """Write the spec (and its companions), run the CLI, check the refusal."""
    for name, content in (files or {}).items():
        (tmp_path / name).write_text(content)
    (tmp_path / "spec.toml").write_text(text)
    proc, _ = run_cli([cmd, "spec.toml", *args], tmp_path)
    err = proc.stderr
    assert proc.returncode == code, (proc.returncode, err[-2000:], proc.stdout[-500:])
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def layer(text):
    return HEADER + f"layers = [{text}]\n"


# -- expressions: every intermediate value within a budget ------------------

@pytest.mark.parametrize("expr", [
    "((10**64)**64)**64", "(10**18)**2", "2**64 * 2**64", "9**64", "(99**9)**9",
    "10**17 * 10**17 * 10**17",
])
def test_huge_intermediate_values(tmp_path, expr):
    refused(tmp_path, layer(f'{{name = "c", conv = "{expr}", kernel = 1}}'),
            "spec.toml:4", "layer c", "ARCHCALC_MAX_VALUE_DIGITS")


@pytest.mark.parametrize("chain", [3, 5, 12])
def test_vars_chains_of_powers(tmp_path, chain):
    lines = ["[vars]", 'v0 = "10"'] + [f'v{i} = "v{i - 1}**9"' for i in range(1, chain)]
    refused(tmp_path, "\n".join(lines) + "\n" + layer(f'{{conv = "v{chain - 1}", kernel = 1}}'),
            "[vars] v", "digits")


@pytest.mark.parametrize("expr", ["(C**64)**8", "C**64 * C**64", "(C*C)**40"])
def test_symbolic_powers_are_bounded(tmp_path, expr):
    refused(tmp_path, '[vars]\nC = "?"\n' + layer(f'{{conv = "{expr}", kernel = 1}}'),
            "degree", "ARCHCALC_MAX_DEGREE")


@pytest.mark.parametrize("expr, fragment", [
    ("-(" * 100 + "1" + ")" * 100, "ARCHCALC_MAX_EXPR_DEPTH"),
    ("max(" * 60 + "1" + ")" * 60, "ARCHCALC_MAX_EXPR_DEPTH"),
    ("+".join(["1"] * 5000), "ARCHCALC_MAX_EXPR_CHARS"),
    ("9" * 5000, "ARCHCALC_MAX_EXPR_CHARS"),
    ("ceil_div(3)", "ceil_div() takes 2 arguments"),
    ("ceil_div(3, 4, 5)", "ceil_div() takes 2 arguments"),
    ("ceil_div(3, 0)", "by zero"),
    ("C // 0", "division by zero"),
    ("__import__('os').system('touch pwned')", "is not allowed in a spec expression"),
    ("C.__class__", "not allowed"),
    ("[c for c in range(10**9)]", "not allowed"),
    ("1e999", "not a finite number"),
    ("1.5", "is not an integer"),
])
def test_bad_expressions(tmp_path, expr, fragment):
    refused(tmp_path, '[vars]\nC = 8\n' + layer(f'{{conv = "{expr}", kernel = 1}}'), fragment)
    assert not (tmp_path / "pwned").exists()


# -- includes: regular files only, bounded in size, count and depth ----------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_include_of_a_fifo_does_not_block(tmp_path):
    os.mkfifo(tmp_path / "pipe.toml")
    refused(tmp_path, 'include = ["pipe.toml"]\n' + layer("{relu = true}"),
            "pipe.toml", "not a regular file")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom", "/dev/null", "/proc/self/fd/0"])
def test_include_of_a_device(tmp_path, target):
    if not os.path.exists(target):
        pytest.skip(f"{target} is missing here")
    refused(tmp_path, f'include = ["{target}"]\n' + layer("{relu = true}"), target)


@pytest.mark.parametrize("levels, fanout", [(8, 10), (3, 100), (40, 1)])
def test_include_bombs_stop_at_a_limit(tmp_path, levels, fanout):
    files = {}
    for d in range(levels):
        incs = ", ".join(f'"b{d + 1}.toml"' for _ in range(fanout)) if d < levels - 1 else ""
        files[f"b{d}.toml"] = (f"include = [{incs}]\n" if incs else "") + "[vars]\nX = 1\n"
    refused(tmp_path, 'include = ["b0.toml"]\n' + layer("{relu = true}"),
            "ARCHCALC_MAX_INCLUDE", files=files)


def test_include_cycle_and_a_big_file(tmp_path):
    refused(tmp_path, 'include = ["spec.toml"]\n' + layer("{relu = true}"), "includes itself")
    big = "# " + "x" * (2 << 20) + "\n[vars]\nX = 1\n"
    refused(tmp_path, 'include = ["big.toml"]\n' + layer("{relu = true}"),
            "big.toml", "ARCHCALC_MAX_FILE_BYTES", files={"big.toml": big})


def test_errors_in_an_included_file_name_that_file(tmp_path):
    refused(tmp_path, 'include = ["lib.toml"]\n' + layer("{relu = true}"),
            "lib.toml", "[vars] Y", files={"lib.toml": '[vars]\nY = "1 +"\n'})
    refused(tmp_path, HEADER + 'layers = [{include = "part.toml"}]\n',
            "part.toml:1", "convv", files={"part.toml": "layers = [{convv = 3}]\n"})


# -- nesting and repeats -----------------------------------------------------

@pytest.mark.parametrize("depth", [40, 1000, 100_000])
def test_deep_toml_nesting(tmp_path, depth):
    refused(tmp_path, layer("{relu = true}") + "[vars]\nZ = " + "[" * depth + "]" * depth + "\n",
            "ARCHCALC_MAX_TOML_DEPTH")


@pytest.mark.parametrize("repeat", ["1000000000", "10**15", "100001"])
def test_repeat_is_bounded(tmp_path, repeat):
    refused(tmp_path, layer(f'{{name = "r", relu = true, repeat = "{repeat}"}}'),
            "layer r", "ARCHCALC_MAX_ROWS")


def test_nested_repeats_multiply_against_the_row_limit(tmp_path):
    text = ('[blocks.inner]\nlayers = [{relu = true, repeat = 1000}]\n'
            '[blocks.outer]\nlayers = [{block = "inner", repeat = 1000}]\n'
            + layer('{block = "outer", repeat = 1000}'))
    refused(tmp_path, text, "ARCHCALC_MAX_ROWS")


def test_inline_structures_nested_past_the_limit(tmp_path):
    body = "{relu = true}"
    for _ in range(40):
        body = f"{{layers = [{body}]}}"
    refused(tmp_path, layer(body) + "", "ARCHCALC_MAX")


def test_limits_can_be_raised(tmp_path):
    (tmp_path / "spec.toml").write_text(layer('{relu = true, repeat = 200}'))
    proc, _ = run_cli(["table", "spec.toml", "--format", "json"], tmp_path,
                      env={"ARCHCALC_MAX_ROWS": "100"})
    assert proc.returncode == 2 and "ARCHCALC_MAX_ROWS" in proc.stderr
    proc, _ = run_cli(["table", "spec.toml", "--format", "json"], tmp_path,
                      env={"ARCHCALC_MAX_ROWS": "1000"})
    assert proc.returncode == 0, proc.stderr


# -- huge integers in options ------------------------------------------------

@pytest.mark.parametrize("args, fragment", [
    (["--set", "C=" + "9" * 5000], "--set C"),
    (["--set", "C=nan"], "--set C"),
    (["--set", "C=-3"], "--set C"),
    (["--input", "3x" + "9" * 5000 + "x8"], "--input"),
    (["--input", "3x0x8"], "--input"),
    (["--batch", "9" * 5000], "batch"),
])
def test_option_values(tmp_path, args, fragment):
    refused(tmp_path, "[vars]\nC = 4\n" + layer('{conv = "C", kernel = 1}'), fragment, args=args)


# -- names: one module per name ------------------------------------------------

@pytest.mark.parametrize("layers, fragment", [
    ('{name = "c", conv = 4, kernel = 3}, {name = "c", relu = true}', "'c' is used twice"),
    ('{name = "relu2", relu = true}, {relu = true}, {relu = true}', "'relu2' is used twice"),
    ('{name = "c", relu = true, repeat = 2}, {name = "c_2", relu = true}', "'c_2' is used twice"),
    ('{name = "x", residual = [{name = "add", relu = true}]}', "'add' is used twice"),
    ('{name = "x", residual = [{name = "shortcut", conv = 5, kernel = 1}]}',
     "'shortcut' is used twice"),
    ('{name = "x", layers = [{relu = true}, {name = "relu1", relu = true}]}',
     "'relu1' is used twice"),
    # a dotted name is a path of names (tests/test_spec_level_parts.py): each part valid
    ('{name = "a..b", relu = true}', "not a valid layer name"),
    ('{name = ".a", relu = true}', "not a valid layer name"),
    ('{name = "a.", relu = true}', "not a valid layer name"),
    ('{name = "a.forward", relu = true}', "reserved"),
    ('{name = "c/d", relu = true}', "not a valid layer name"),
    ('{name = "", relu = true}', "not a valid layer name"),
    ('{name = "x y", relu = true}', "not a valid layer name"),
    ('{name = "forward", relu = true}', "reserved"),
    ('{name = "train", relu = true}', "reserved"),
    ('{name = 3, relu = true}', "not a valid layer name"),
])
def test_name_collisions_and_characters(tmp_path, layers, fragment):
    refused(tmp_path, layer(layers), "spec.toml", fragment)


def test_two_layers_on_one_line_keep_their_line(tmp_path):
    refused(tmp_path, HEADER + 'layers = [\n  {relu = true},\n  {relu = true}, {convv = 3}]\n',
            "spec.toml:6:", "layer #3")


# -- values --------------------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    (layer('{dropout = nan}'), "finite"),
    (layer('{dropout = inf}'), "finite"),
    (layer('{leaky_relu = true, negative_slope = -inf}'), "finite"),
    (HEADER.replace('name = "h"', "name = 3") + "layers = [{relu = true}]\n", "name must be a string"),
    (HEADER + "notes = 3\nlayers = [{relu = true}]\n", "notes must be"),
    (HEADER + 'source = ["x"]\nlayers = [{relu = true}]\n', "source must be a string"),
    ("[blocks]\nb = 3\n" + layer("{relu = true}"), "[blocks.b] must be a table"),
    ("[blocks]\n\"a b\" = {layers = []}\n" + layer("{relu = true}"), "not a valid block name"),
    (layer('{conv_table = [], kernel = 3}'), "non-empty"),
    (layer('{conv_table = [[]], kernel = 3}'), "non-empty"),
    (layer('{se = 16}'), "0 squeeze channels"),
    (layer('{name = "p", maxpool = 2}, {max_unpool = 2, of = 3}'), "of takes a string"),
    (HEADER.replace("[3, 8, 8]", "[3, 0, 8]") + "layers = [{relu = true}]\n", "input must be positive"),
    (HEADER.replace("[3, 8, 8]", "[3, 8.5, 8]") + "layers = [{relu = true}]\n", "input"),
    (HEADER.replace("[3, 8, 8]", '[3, "8/3", 8]') + "layers = [{relu = true}]\n", "not an integer"),
    ("[vars]\nC = nan\n" + layer("{relu = true}"), "[vars] C"),
    ("[vars]\nC = " + "9" * 30 + "\n" + layer("{relu = true}"), "ARCHCALC_MAX_VALUE_DIGITS"),
])
def test_every_value_validated(tmp_path, text, fragment):
    line = refused(tmp_path, text, "spec.toml", fragment)
    assert "Received" in line or "ARCHCALC" in line or "must" in line or "valid" in line \
        or "non-empty" in line or "squeeze" in line or "integer" in line


# -- user strings are data in the terminal ---------------------------------------

@pytest.mark.parametrize("text", ["[/]x", "[link=http://evil.example]x[/link]", "[bold red]x",
                                  "\\u001b[31mred\\u001b[0m", "a\\rb\\u0007"])
def test_markup_and_control_characters_are_data(tmp_path, text):
    spec = (f'[model]\nname = "{text}"\nsource = "{text}"\nnotes = "{text}"\ninput = [3, 8, 8]\n'
            'layers = [{relu = true}]\n')
    (tmp_path / "spec.toml").write_text(spec)
    for args in (["table", "spec.toml"], ["compare", "spec.toml", "spec.toml"],
                 ["table", "spec.toml", "--format", "markdown"]):
        proc, _ = run_cli(args, tmp_path, env={"COLUMNS": "200"})
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout + proc.stderr
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out
        assert "Traceback" not in out
    proc, _ = run_cli(["table", "spec.toml"], tmp_path, env={"COLUMNS": "200"})
    if "\\" not in text:  # markup is printed as written, not interpreted
        assert text in proc.stdout


@pytest.mark.parametrize("text", [
    layer('{relu = true, name = "' + "{i}" * 5000 + '", repeat = 2}'),     # a name template
    layer('{conv = 4, kernel = 1, padding = [' + ", ".join(["1"] * 3000) + "]}"),  # a value
    layer('{name = "' + "a" * 20000 + '", relu = true}'),
])
def test_a_long_value_makes_one_readable_line(tmp_path, text):
    """The message quotes the value; the line is cut at 1,000 characters and
    says how much was left out."""
    line = refused(tmp_path, text, "more characters)")
    assert len(line) <= 1000 + len("error: "), len(line)
