"""The package's shape, read with ast: no file under archcalc/ over 800 lines,
no function (or method) over 80 (a newcomer reads a file in one sitting and
a function on one screen), and no stage outside archcalc/layers/ tests a
layer kind by its name (``op.kind.name == "conv"``): it reads an attribute
the kind declares, so that adding a kind touches its own file only."""
import ast
import pathlib

import archcalc

PACKAGE = pathlib.Path(archcalc.__file__).parent
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80

# Exceptions, each with its reason (none today); an entry that no longer
# offends fails, so the lists cannot go stale.
ALLOWED_LONG_FUNCTIONS: set = set()
ALLOWED_LONG_FILES: set = set()
# (file, kind name) tests of a kind by its name
ALLOWED_NAME_TESTS: set = set()


def _files():
    return sorted(PACKAGE.rglob("*.py"))


def _long_functions():
    found = {}
    for path in _files():
        where = path.relative_to(PACKAGE).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found[(where, node.name)] = lines
    return found


def _long_files():
    return {path.relative_to(PACKAGE).as_posix(): n for path in _files()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES}


def test_the_walk_sees_the_whole_package():
    names = {p.relative_to(PACKAGE).as_posix() for p in _files()}
    assert {"analysis.py", "layers/base.py", "torch/importer/mappers.py",
            "cli/__init__.py"} <= names


def test_no_file_over_800_lines():
    assert set(_long_files()) - ALLOWED_LONG_FILES == set(), _long_files()


def test_no_function_over_80_lines():
    over = {k: v for k, v in _long_functions().items() if k not in ALLOWED_LONG_FUNCTIONS}
    assert over == {}, f"split these (file, function): lines: {over}"


def test_the_allow_lists_hold_only_real_offenders():
    assert ALLOWED_LONG_FUNCTIONS <= set(_long_functions()), \
        "an allowed function is now short: remove it from ALLOWED_LONG_FUNCTIONS"
    assert ALLOWED_LONG_FILES <= set(_long_files())


def _literals(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_literals(e) for e in node.elts))
    return set()


def _is_kind_name(node):
    return isinstance(node, ast.Attribute) and node.attr == "name" and \
        isinstance(node.value, ast.Attribute) and node.value.attr == "kind"


def _kind_name_tests():
    """(file, name) for every comparison of a ``.kind.name`` with string literals."""
    found = set()
    for path in _files():
        where = path.relative_to(PACKAGE).as_posix()
        if where.startswith("layers/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(_is_kind_name(side) for side in sides):
                    found |= {(where, name) for side in sides for name in _literals(side)}
    return found


def test_the_name_check_finds_a_kind_tested_by_name():
    tree = ast.parse('if op.kind.name in ("conv", "fc"): pass')
    compare = tree.body[0].test
    assert _is_kind_name(compare.left) and _literals(compare.comparators[0]) == {"conv", "fc"}


def test_no_stage_tests_a_kind_by_its_name():
    found = _kind_name_tests()
    assert found - ALLOWED_NAME_TESTS == set(), "read a kind attribute instead"
    assert ALLOWED_NAME_TESTS <= found, "an allowed name test is gone: remove it from the list"
