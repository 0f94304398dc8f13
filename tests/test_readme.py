"""The README: the two commands CI runs, a front door (no development
history, at most 250 lines), links that resolve, and a Trust section whose
limits table is archcalc/limits.py's. Its commands run in tests/test_docs.py."""
import os
import re

from conftest import ROOT

README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def test_readme_commands_are_what_ci_runs():
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    commands = re.findall(r"```bash\n(.+?)\n```", README)[:2]
    assert len(commands) == 2
    assert "archcalc table specs/vgg16.toml" in commands[0]
    assert "pytest" in commands[1]
    for command in commands:
        assert command in ci.splitlines(), command


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 250
    # the product, not its history: no issue numbers, rounds, sessions or run ids
    for pattern in (r"\bissue \d", r"\bround\b", r"\bsession", r"\b20\d{6}T\d{6}\b",
                    r"\brun id", r"DESIGN\.md"):
        assert not re.search(pattern, README, re.I), pattern
    for section in ("## A five-minute tour", "## Trust", "## Architecture", "## Documentation"):
        assert section in README


def test_readme_links_resolve():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    assert "docs/limits.md" in links
    for link in links:
        if not link.startswith("http"):
            assert os.path.exists(os.path.join(ROOT, link)), link


def test_trust_section_lists_every_limit():
    """The README's limits table is the one generated from archcalc/limits.py
    (`python -m archcalc.docs --limits` prints it): every Limit, its default
    and how to raise it, nothing stale."""
    from archcalc import limits
    from archcalc.docs import limits_markdown
    trust = README[README.index("## Trust"):README.index("\n## ", README.index("## Trust") + 1)]
    assert limits_markdown() in trust, "run: python -m archcalc.docs --limits"
    every = [v for v in vars(limits).values() if isinstance(v, limits.Limit)]
    assert len(every) >= 10
    for limit in every:
        assert f"| `{limit.env}=N` | {limit.default:,} |" in trust, limit.env


def test_one_torch_pin_everywhere():
    """The README's test command, CI and the docs pin the same torch and torchvision."""
    import glob
    texts = [README, open(os.path.join(ROOT, ".ci", "run")).read()] + [
        open(p, encoding="utf-8").read() for p in glob.glob(os.path.join(ROOT, "docs", "*.md"))]
    for package in ("torch", "torchvision"):
        pins = {pin for text in texts for pin in re.findall(rf'"{package}==([\d.]+)"', text)}
        assert len(pins) == 1, (package, pins)
