"""The README opens with the two commands CI runs; keep them identical."""
import os
import re

from conftest import ROOT


def test_readme_commands_are_what_ci_runs():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    commands = re.findall(r"```bash\n(.+?)\n```", readme)[:2]
    assert len(commands) == 2
    assert "archcalc table specs/vgg16.toml" in commands[0]
    assert "pytest" in commands[1]
    for command in commands:
        assert command in ci.splitlines(), command
