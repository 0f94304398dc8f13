"""Behaviour pinned byte for byte: every shipped spec's `table --format json`
and the spec text `import` writes for twelve torchvision models equal the
files under tests/golden/ (tests/golden/regenerate.py writes them, only when a
change of figures is intended). A refactoring must leave all of them equal."""
import os

import pytest

from golden.regenerate import HERE, IMPORTS, import_text, shipped_specs, table_json


@pytest.mark.parametrize("name", shipped_specs())
def test_table_json_is_unchanged(name):
    with open(os.path.join(HERE, "table", name + ".json"), encoding="utf-8") as fh:
        expected = fh.read()
    assert table_json(name) == expected, (
        f"`archcalc table specs/{name}.toml --format json` changed; if intended, "
        f"run python tests/golden/regenerate.py and say why in the commit")


@pytest.mark.parametrize("name", sorted(IMPORTS))
def test_import_text_is_unchanged(name):
    pytest.importorskip("torchvision")
    with open(os.path.join(HERE, "import", name + ".toml"), encoding="utf-8") as fh:
        expected = fh.read()
    assert import_text(name) == expected, (
        f"the spec imported from torchvision's {name} changed; if intended, run "
        f"python tests/golden/regenerate.py --import and say why in the commit")
