"""Every command in the README and the docs pages runs, and shows what it says.

A page's fenced blocks are read in order:
- ```bash: each line that starts with `archcalc` (after optional VAR=value
  settings) runs in-process through click's CliRunner; it must exit 0, or the
  status its comment names (`# exits 2`); `> FILE` writes stdout to FILE;
  a comment `# slow` moves the line into a slow test (with the page's other
  slow lines, in order);
- ```console: `$ archcalc ...` runs the same way, and every output line shown
  (a line of `...` skips) must appear in the real output, spaces aside;
- ```toml / ```python with `title="FILE"`: written to FILE before the page's
  commands run;
- ```python without a title: executed; a line `EXPR  # VALUE` where VALUE is a
  Python literal asserts EXPR == VALUE;
- ```text and other blocks are not run (setup commands CI runs, GPU jobs).

Each page runs in its own temporary folder holding `specs/` (a link to the
shipped specs). Commands for a CUDA or MPS device are skipped, with the reason.
"""
from __future__ import annotations

import ast
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import ROOT

PAGES = ["README.md"] + sorted(os.path.relpath(p, ROOT)
                               for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
FENCE = re.compile(r"^( *)```(\w*)([^\n]*)\n(.*?)^\1```[ \t]*$", re.M | re.S)
ENV_SETTING = re.compile(r"[A-Z][A-Z0-9_]*=\S*$")
GPU = ("--device cuda", "--device mps")
TORCH_COMMANDS = {"check", "bench", "train", "export", "import", "calibrate"}


def blocks(page: str):
    """(language, title, body) of every fenced block of a page, in order."""
    text = open(os.path.join(ROOT, page), encoding="utf-8").read()
    for m in FENCE.finditer(text):
        indent = len(m.group(1))
        body = "\n".join(line[indent:] for line in m.group(4).splitlines())
        title = re.search(r'title="([^"]+)"', m.group(3))
        yield m.group(2), title.group(1) if title else None, body


def commands(page: str):
    """(command line, expected output lines or None) of a page, in order."""
    found = []
    for language, _, body in blocks(page):
        if language == "bash":
            found += [(line.strip(), None) for line in body.splitlines() if _is_archcalc(line)]
        elif language == "console":
            for chunk in re.split(r"^\$ ", body, flags=re.M)[1:]:
                first, *shown = chunk.splitlines()
                if _is_archcalc(first):
                    found.append((first.strip(), shown))
    return found


def _is_archcalc(line: str) -> bool:
    words = line.split()
    while words and ENV_SETTING.match(words[0]):
        words = words[1:]
    return bool(words) and words[0] == "archcalc"


def _parse(command: str):
    """A command line as (env, args, redirect file, expected exit status)."""
    status = 0
    if "#" in command:
        command, comment = command.split("#", 1)
        m = re.search(r"exits (\d)", comment)
        status = int(m.group(1)) if m else 0
    words = shlex.split(command)
    env = {}
    while ENV_SETTING.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    redirect = None
    if ">" in words:
        redirect = words[words.index(">") + 1]
        words = words[:words.index(">")]
    assert words[0] == "archcalc"
    return env, words[1:], redirect, status


def _page_folder(tmp_path, page: str):
    os.symlink(os.path.join(ROOT, "specs"), tmp_path / "specs")
    for language, title, body in blocks(page):
        if title:
            (tmp_path / title).write_text(body + "\n", encoding="utf-8")
    return tmp_path


def _squeeze(text: str) -> str:
    return " ".join(text.split())


def run_command(command: str, shown=None):
    from archcalc.cli import main
    env, args, redirect, status = _parse(command)
    if args and args[0] in TORCH_COMMANDS:
        pytest.importorskip("torch")
    env = {"COLUMNS": None, "LINES": None, **env}   # piped output: full width, as shown
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == status, (
        f"{command}: exit status {result.exit_code}, expected {status}\n{result.output[-3000:]}")
    if redirect:
        with open(redirect, "w", encoding="utf-8") as fh:
            fh.write(result.stdout)
    actual = _squeeze(result.output)
    for line in shown or ():
        if line.strip() and line.strip() != "...":
            assert _squeeze(line) in actual, f"{command}: the page shows\n{line}\nnot in\n" \
                                             f"{result.output[-3000:]}"
    return result


def _python_with_checks(body: str) -> str:
    """`EXPR  # LITERAL` lines become assertions that EXPR == LITERAL."""
    out = []
    for line in body.splitlines():
        code, _, comment = line.partition("  #")
        try:
            expected = ast.literal_eval(comment.strip())
            ast.parse(code.strip(), mode="eval")
        except (ValueError, SyntaxError):
            out.append(line)
            continue
        out.append(f"assert ({code.strip()}) == {expected!r}, {code.strip()!r}")
    return "\n".join(out)


def _needs_gpu(command: str) -> bool:
    return any(flag in command for flag in GPU)


def _is_slow(command: str) -> bool:
    return bool(re.search(r"#.*\bslow\b", command))


@pytest.mark.parametrize("page", PAGES)
def test_page_commands_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(_page_folder(tmp_path, page))
    ran = 0
    for command, shown in commands(page):
        if not _needs_gpu(command) and not _is_slow(command):
            run_command(command, shown)
            ran += 1
    for language, title, body in blocks(page):
        if language == "python" and not title:
            if "torch" in body or "build()" in body:
                pytest.importorskip("torch")
            exec(compile(_python_with_checks(body), f"{page} (python block)", "exec"), {})
            ran += 1
    if not ran:
        pytest.skip(f"{page} shows no command")


SLOW_PAGES = [page for page in PAGES if any(_is_slow(c) for c, _ in commands(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", SLOW_PAGES)
def test_page_slow_commands_run(page, tmp_path, monkeypatch):
    """The lines marked `# slow` (a calibration: about a minute here), in order."""
    monkeypatch.chdir(_page_folder(tmp_path, page))
    for command, shown in commands(page):
        if _is_slow(command) and not _needs_gpu(command):
            run_command(command, shown)


GPU_COMMANDS = [(page, c) for page in PAGES for c, _ in commands(page) if _needs_gpu(c)]


@pytest.mark.parametrize("page,command", GPU_COMMANDS)
def test_gpu_commands_parse(page, command):
    """A GPU command cannot run here; its options are checked by click at least."""
    import torch
    if torch.cuda.is_available() and "cuda" in command:
        run_command(command)
        return
    from archcalc.cli import main
    _, args, _, _ = _parse(command)
    context = main.make_context("archcalc", list(args), resilient_parsing=True)
    sub = main.get_command(context, args[0])
    sub.make_context(args[0], list(args[1:]))    # a bad option raises a usage error
    pytest.skip(f"{command!r} needs a GPU (options checked, not run)")


def test_every_page_shows_a_command():
    assert sum(len(commands(p)) for p in PAGES) >= 40


# --- the JSON object the conventions page describes is the one printed ---

def test_json_keys_documented_match_output():
    from archcalc.cli import main
    text = open(os.path.join(ROOT, "docs", "conventions.md"), encoding="utf-8").read()
    section = text[text.index("## JSON"):]
    documented = set(re.findall(r"[`\"]([a-z_]+)[`\"]", section))
    printed = json.loads(CliRunner().invoke(
        main, ["table", "specs/vgg16.toml", "--format", "json"]).stdout)
    keys = set(printed) | set(printed["totals"]) | set(printed["layers"][0])
    assert keys <= documented, f"printed but not documented: {sorted(keys - documented)}"


# --- the generated references follow the code ---

def test_cli_reference_covers_every_command_and_option():
    import click
    from archcalc.cli import main
    from archcalc.docs import cli_markdown
    page = cli_markdown()
    for name, command in main.commands.items():
        assert f"## archcalc {name}\n" in page
        for param in command.params:
            for opt in getattr(param, "opts", ()) if isinstance(param, click.Option) else ():
                assert f"`{opt}`" in page, (name, opt)


def test_cli_reference_shared_options_are_read_from_the_commands():
    from archcalc.docs import cli_markdown
    page = cli_markdown()
    row = next(line for line in page.splitlines() if line.startswith("| `table` |"))
    assert row.split("|")[2].strip() == "rich, json, csv, markdown"
    lint_row = next(line for line in page.splitlines() if line.startswith("| `lint` |"))
    assert lint_row.split("|")[2].strip() == "rich, json"   # lint has no csv


def test_kinds_reference_lists_every_registered_kind():
    from archcalc.docs import kinds_markdown
    from archcalc.layers import kinds
    page = kinds_markdown()
    rows = {line.split("|")[1].strip() for line in page.splitlines()
            if line.startswith("| ") and not line.startswith("| kind")}
    assert rows == set(kinds())
    assert "| conv | conv2d, convolution |" in page


def test_generator_writes_both_pages(tmp_path):
    from archcalc.docs import write
    written = write(str(tmp_path))
    assert sorted(os.path.basename(p) for p in written) == ["cli.md", "kinds.md"]


def test_site_builds_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("material")
    # no -q: mkdocs counts the warnings that --strict refuses only at the default log level
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-d", str(tmp_path / "site")], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "cli" / "index.html").exists()
    assert (tmp_path / "site" / "kinds" / "index.html").exists()


def test_every_page_is_in_the_nav():
    """A page missing from mkdocs.yml's nav builds but cannot be reached from the menu."""
    config = open(os.path.join(ROOT, "mkdocs.yml"), encoding="utf-8").read()
    nav = config[config.index("\nnav:"):]
    listed = set(re.findall(r":\s*([\w./-]+\.md)\s*$", nav, re.M))
    pages = {os.path.basename(p) for p in PAGES if p.startswith("docs")}
    from archcalc.docs import GENERATED
    assert pages | set(GENERATED) <= listed, sorted(pages | set(GENERATED) - listed)


def _help_examples():
    """Every example line of every command's --help (continuation lines joined)."""
    from archcalc.cli import main
    from archcalc.docs import _help_parts
    found = []
    for name, command in sorted(main.commands.items()):
        text = "\n".join(_help_parts(command)[1]).replace("\\\n", " ")
        found += [(name, line) for line in text.splitlines() if line.startswith("archcalc ")]
    return found


@pytest.mark.parametrize("name,example", _help_examples())
def test_help_examples_parse(name, example):
    """The CLI reference shows each command's --help examples; running them all
    would import models and read data folders, so their options are checked:
    every option exists and every value is one the option accepts."""
    from archcalc.cli import main
    words = shlex.split(example.split(" #")[0])
    if ">" in words:
        words = words[:words.index(">")]
    command = main.get_command(None, words[1])     # import's help shows a table example too
    assert command is not None, example
    command.make_context(words[1], words[2:])
