"""Reading what a user hands in: files and JSON, each bounded before it is read.

Every input file (a spec, an include, a Python file to import, a JSON file)
goes through ``read_input``: ``os.stat`` first, so a FIFO is never opened
(it would block) and /dev/zero never read (it would fill memory); then at most
the limit's bytes. Every JSON text (``--kwargs``, a JSON file) goes through
``parse_json``: its nesting is measured before ``json.loads`` recurses (a
100,000-deep array is a RecursionError there), integers past the value budget
and NaN/Infinity are refused. Each failure is one SpecError naming the file
or the option.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat

from . import limits
from .errors import SpecError


def check_input_file(path, what: str, limit: limits.Limit) -> os.stat_result:
    """os.stat of an input file: a regular file of at most limit bytes, or a
    SpecError naming it. Nothing is opened."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise SpecError(f"{what} must be a file name. Received: {path!r}") from None
    if not path:
        raise SpecError(f"{what}: the file name is empty")
    if "\0" in path:
        raise SpecError(f"{what}: the file name {path[:60]!r} contains a NUL byte")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SpecError("no such file", file=path) from None
    except (OSError, ValueError) as e:
        raise SpecError(f"cannot read the file: {getattr(e, 'strerror', None) or e}",
                        file=path) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError(f"is a directory, not {what}", file=path)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError(f"is not a regular file (a device, FIFO or socket); {what} is a file",
                        file=path)
    if info.st_size > limit.value:
        raise limit.exceeded(f"{info.st_size:,} bytes").at(file=path)
    return info


def read_input(path, what: str, limit: limits.Limit) -> bytes:
    """The bytes of an input file, checked by check_input_file first."""
    check_input_file(path, what, limit)
    path = os.fspath(path)
    cap = limit.value
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat still cannot block
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=path) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError(f"is not a regular file; {what} is a file", file=path)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(cap + 1)
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=path) from None
    finally:
        os.close(fd)
    if len(raw) > cap:  # grew while we read it
        raise limit.exceeded(f"more than {cap:,} bytes").at(file=path)
    return raw


def read_input_text(path, what: str, limit: limits.Limit) -> str:
    raw = read_input(path, what, limit)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"is not UTF-8 text; {what} is a text file", file=path) from None


def load_json(path, what: str):
    """A JSON file, bounded like every input (size, depth, values)."""
    text = read_input_text(path, what, limits.MAX_JSON_BYTES)
    try:
        return parse_json(text, what)
    except SpecError as e:
        raise e.at(file=os.fspath(path)) from None


_STRING = re.compile(r'"(?:\\.|[^"\\])*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def json_depth(text: str) -> int:
    """Nesting of JSON text without parsing it (strings skipped): json.loads
    recurses and would raise RecursionError on 100,000 '['."""
    depth = deepest = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        if m.group() in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(0, depth - 1)
    return deepest


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def parse_json(text: str, what: str):
    """json.loads with bounds: length, nesting, integer digits, finite floats;
    every failure one SpecError naming `what` (an option or a file's role)."""
    if not isinstance(text, str):
        raise SpecError(f"{what} takes JSON text. Received: {type(text).__name__}")
    limits.MAX_JSON_BYTES.check(len(text.encode("utf-8", "surrogatepass")),
                                f"{what}: {len(text):,} characters of JSON")
    depth = json_depth(text)
    limits.MAX_JSON_DEPTH.check(depth, f"{what}: JSON nested {depth:,} levels")
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise SpecError(f"{what}: invalid JSON: {e.msg} (line {e.lineno}, column {e.colno})") \
            from None
    except RecursionError:
        raise limits.MAX_JSON_DEPTH.exceeded(f"{what}: JSON nested too deeply") from None
    except ValueError as e:  # an integer of over 4,300 digits; NaN, Infinity
        if "digits" in str(e):
            raise SpecError(f"{what}: an integer of more than 4,300 digits; values past "
                            f"10^{limits.MAX_VALUE_DIGITS.value} are refused") from None
        raise SpecError(f"{what}: invalid JSON: {str(e)[:120]}") from None
    _check_values(value, what)
    return value


def _check_values(value, what: str) -> None:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, bool) or node is None or isinstance(node, str):
            continue
        elif isinstance(node, int):
            limits.check_value(node, what)
        elif isinstance(node, float) and not math.isfinite(node):
            # 1e999 parses as inf without parse_constant's help
            raise SpecError(f"{what}: {node!r} is not a finite number")
