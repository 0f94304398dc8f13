"""The package's shape, read with ast: no file under archcalc/ over 800 lines,
no function (or method) over 80. A newcomer reads a file in one sitting and
a function on one screen."""
import ast
import pathlib

import archcalc

PACKAGE = pathlib.Path(archcalc.__file__).parent
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 80

# Today's offenders in files other helpers own, to be split there; the lead
# shrinks this list (an entry that no longer offends fails, so it cannot go stale).
ALLOWED_LONG_FUNCTIONS = {
    ("spec/loader.py", "_from_data"),     # 136 lines: the spec's sections read in one pass
}
ALLOWED_LONG_FILES: set = set()


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
