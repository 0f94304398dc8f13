"""Read a TOML spec into a frozen ``Spec``: header, variables, defaults, layers.

tomllib gives no positions, so layer tables are mapped to lines by scanning
the text for their ``[[layers]]`` headers (or the ``{`` of inline tables).
Includes are resolved here: ``include = ["lib.toml"]`` at the top merges the
library's [vars], [defaults] and [blocks] under this file's own; a layer entry
``{include = "part.toml"}`` splices that file's layers in its place.
"""
from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType

from .. import limits
from ..errors import SpecError
from ..inputs import check_input_file, read_input_text
from .expr import check_identifier

HEADER_KEYS = {"name", "input", "source", "init", "notes", "outputs"}
TOP_KEYS = {"model", "vars", "defaults", "layers", "include", "blocks"}


@dataclass(frozen=True)
class RawLayer:
    """A layer table as written, with where it was written."""
    table: MappingProxyType
    file: str
    line: int | None


@dataclass(frozen=True)
class Spec:
    file: str
    name: str
    input: tuple
    source: str
    vars: MappingProxyType           # name -> int or expression text, in order
    defaults: MappingProxyType       # kind -> {arg: value}
    blocks: MappingProxyType         # block name -> table (graph issue)
    layers: tuple[RawLayer, ...]
    extra: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    var_files: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    # (kind, argument) -> (file, line) of each [defaults.KIND] entry, for its errors
    default_lines: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    # [model] outputs = ["p2", "p3"]: the entries (names or dotted paths) the
    # model returns, as a dict; () returns the last entry's output
    outputs: tuple = ()

    # the Python API: archcalc.load(...).analyze(...)
    def analyze(self, **options):
        from ..analysis import analyze
        return analyze(self, **options)

    def graph(self, **options):
        from ..graph import build_graph
        return build_graph(self, **options)

    def build(self, **options):
        from ..torch.build import build_model
        return build_model(self, **options)

    def to_toml(self) -> str:
        """The spec as TOML text (archcalc.spec.writer): includes merged in."""
        from .writer import to_toml
        return to_toml(self)

    def _repr_html_(self) -> str:
        """A notebook shows the spec's report at its own input."""
        from ..render.report import spec_html
        return spec_html(self)


def read_toml(path: str) -> tuple[dict, str]:
    """Read a spec file's TOML, every failure a SpecError naming the file."""
    text = read_text(path)
    return parse_toml(text, path), text


def read_text(path: str) -> str:
    """A spec file's text: a regular file only (a FIFO would block, /dev/zero
    fill memory), at most ARCHCALC_MAX_FILE_BYTES, UTF-8 (archcalc.inputs)."""
    return read_input_text(path, "a spec file", limits.MAX_FILE_BYTES)


def parse_toml(text: str, path: str) -> dict:
    if not text.strip():
        raise SpecError("is empty; a spec needs a [model] table and [[layers]]", file=path)
    depth = _bracket_depth(text)
    # a coarse bound before tomllib recurses; the exact check follows the parse
    if depth > max(200, limits.MAX_TOML_DEPTH.value):
        raise limits.MAX_TOML_DEPTH.exceeded(f"nests {depth} levels").at(file=path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise SpecError(f"invalid TOML: {msg}" + (f" (column {m.group(2)})" if m else ""),
                        file=path, line=line) from None
    except (RecursionError, MemoryError):
        raise limits.MAX_TOML_DEPTH.exceeded("nests too deeply").at(file=path) from None
    except ValueError as e:  # e.g. an integer of over 4,300 digits
        raise SpecError(f"invalid TOML: {str(e)[:100]}", file=path) from None
    depth = _data_depth(data)
    if depth > limits.MAX_TOML_DEPTH.value:
        raise limits.MAX_TOML_DEPTH.exceeded(f"nests {depth} levels").at(file=path)
    return data


def _bracket_depth(text: str) -> int:
    """An upper bound of the nesting of inline arrays and tables, before tomllib
    (which recurses and would raise RecursionError on thousands of '[')."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    return deepest


def _data_depth(data) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def layer_lines(text: str, count: int) -> list[int | None]:
    """Line numbers of the layer tables, in order; None where they cannot be told."""
    lines = text.splitlines()
    headers = [i + 1 for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*layers\s*\]\]", ln)]
    if len(headers) == count:
        return headers
    # inline form: layers = [ {..}, {..} ]: the line of each table's "{"
    m = re.search(r"^[ \t]*layers[ \t]*=[ \t]*\[", text, re.M)
    if m is not None:
        found = _inline_table_lines(text, m.end())
        if len(found) == count:
            return found
    return [None] * count


def _inline_table_lines(text: str, pos: int) -> list[int]:
    """Scan an inline array from just after its '[' to its ']': the line of every
    '{' directly inside it. Strings and comments are skipped, so a '{' in a
    name or a note is not a table."""
    found, depth, line, i, n = [], 1, text.count("\n", 0, pos) + 1, pos, len(text)
    while i < n and depth > 0:
        ch = text[i]
        if ch == "\n":
            line += 1
        elif ch == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif ch in "\"'":
            quote = text[i:i + 3] if text[i:i + 3] in ('"""', "'''") else ch
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if ch == '"' and text[j] == "\\":
                    j += 1
                j += 1
            line += text.count("\n", i, j)
            i = j + len(quote)
            continue
        elif ch in "[{":
            if ch == "{" and depth == 1:
                found.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
        i += 1
    return found


class _Loading:
    """One load: the include chain down to the file being read, and a count of
    the files included in all (shared along the chain: an include bomb of
    fan-out 10 over 8 levels stops at the limit, not after 10^8 reads)."""

    def __init__(self, stack: tuple = (), counter: list | None = None):
        self.stack = stack
        self.counter = counter if counter is not None else [0]

    @property
    def included(self) -> bool:
        return len(self.stack) > 1

    def enter(self, path: str, real: str) -> "_Loading":
        if real in self.stack:
            chain = " -> ".join(os.path.basename(p) for p in (*self.stack, real))
            raise SpecError(f"includes itself ({chain})", file=path)
        if self.stack:  # an included file, not the top one
            self.counter[0] += 1
            try:
                limits.MAX_INCLUDES.check(self.counter[0], f"included file #{self.counter[0]}")
                limits.MAX_INCLUDE_DEPTH.check(len(self.stack),
                                               f"included {len(self.stack)} levels deep")
            except SpecError as e:
                raise e.at(file=path) from None
        return _Loading((*self.stack, real), self.counter)


def load(path: str, _loading: _Loading | None = None) -> Spec:
    """Read and check the structure of a spec file (values are checked later)."""
    if not isinstance(path, (str, os.PathLike)):
        raise SpecError(f"a spec path must be a file name. Received: {path!r}")
    path = os.fspath(path)
    # before realpath, which fails on a NUL byte
    check_input_file(path, "a spec file", limits.MAX_FILE_BYTES)
    real = os.path.realpath(path)
    loading = (_loading or _Loading()).enter(path, real)
    data, text = read_toml(path)
    return _from_data(data, text, path, loading)


def loads(text: str, file: str = "<spec>") -> Spec:
    """A spec from TOML text; includes are relative to the current directory."""
    if not isinstance(file, str) or "\0" in file:
        raise SpecError(f"loads(): file must be a name without NUL bytes. Received: {file!r:.60}")
    loading = _Loading().enter(file, os.path.realpath(file))
    return _from_data(parse_toml(text, file), text, file, loading)


def _from_data(data: dict, text: str, path: str, loading: _Loading) -> Spec:
    model = _hoist_model_keys(data, path)
    base_vars: dict = {}
    var_files: dict = {}     # where each variable is written, for its errors
    base_defaults: dict = {}
    default_lines: dict = {}
    base_blocks: dict = {}
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError("include takes a file name or a list of file names", file=path)
    for inc in includes:
        lib = _load_include(path, inc, loading, None)
        base_vars.update(lib.vars)
        var_files.update(lib.var_files)
        for kind, d in lib.defaults.items():
            base_defaults.setdefault(kind, {}).update(d)
        default_lines.update(lib.default_lines)
        base_blocks.update(lib.blocks)

    if not isinstance(model, dict):
        raise SpecError("[model] must be a table with name and input", file=path)
    bad = set(model) - HEADER_KEYS
    if bad:
        raise SpecError(f"[model] has unknown key(s) {', '.join(sorted(map(repr, bad)))}; "
                        f"it takes {', '.join(sorted(HEADER_KEYS))}", file=path)

    vars_ = _read_vars(data, path)
    defaults = _read_defaults(data, path)
    for kind, d in defaults.items():
        base_defaults.setdefault(kind, {}).update(d)
    default_lines.update(defaults_lines(text, defaults, path))
    base_vars.update(vars_)
    var_files.update(dict.fromkeys(vars_, path))
    base_blocks.update(_read_blocks(data, path))

    included = loading.included  # a library or a part: no [model] or layers needed
    raw = _read_layers(data, text, path, loading, bool(includes))
    name, source, outputs, inp = _read_header(model, path, included)
    return Spec(file=path, name=name, input=tuple(inp), source=source,
                vars=MappingProxyType(base_vars),
                defaults=MappingProxyType({k: MappingProxyType(v)
                                           for k, v in base_defaults.items()}),
                blocks=MappingProxyType(base_blocks), layers=tuple(raw),
                extra=MappingProxyType({k: v for k, v in model.items()
                                        if k in ("init", "notes")}),
                var_files=MappingProxyType(var_files),
                default_lines=MappingProxyType(default_lines), outputs=tuple(outputs))


def _hoist_model_keys(data: dict, path: str) -> dict:
    """[model] as a table; TOML puts keys written after [model] into it, so a
    spec may list its layers (and includes) right under the header."""
    model = data.get("model", {})
    if isinstance(model, dict) and ({"layers", "include"} & set(model)):
        for key in ("layers", "include"):
            if key in model:
                if key in data:
                    raise SpecError(f"{key} is given twice: at the top and under [model]",
                                    file=path)
                data[key] = model[key]
        data["model"] = model = {k: v for k, v in model.items()
                                 if k not in ("layers", "include")}
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise SpecError(f"unknown top-level key(s) {', '.join(sorted(map(repr, unknown)))}; "
                        f"a spec has {', '.join(sorted(TOP_KEYS))}", file=path)
    return model


def _read_vars(data: dict, path: str) -> dict:
    vars_ = _table(data, "vars", path)
    for name, value in vars_.items():
        try:
            check_identifier(name, "[vars] name")
        except SpecError as e:
            raise e.at(file=path) from None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or \
                (isinstance(value, float) and not math.isfinite(value)):
            raise SpecError(f"[vars] {name} must be a number, an expression string or \"?\". "
                            f"Received: {name}={_short(value)}", file=path)
    return vars_


def _read_defaults(data: dict, path: str) -> dict:
    defaults = _table(data, "defaults", path)
    for kind, d in defaults.items():
        if not isinstance(d, dict):
            raise SpecError(f"[defaults.{kind}] must be a table of arguments", file=path)
        misplaced = set(d) & TOP_KEYS
        if misplaced:
            key = sorted(misplaced)[0]
            raise SpecError(f"[defaults.{kind}] has a key {key!r}: in TOML, keys after a "
                            f"[table] header belong to that table; move {key} above the "
                            "[defaults] tables (e.g. under [model])", file=path)
    return defaults


def _read_blocks(data: dict, path: str) -> dict:
    blocks = _table(data, "blocks", path)
    for block, definition in blocks.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_]{0,60}", block):
            raise SpecError(f"[blocks] name {block[:40]!r} is not a valid block name: use "
                            "letters, digits and underscores (instances are named "
                            f"{block[:40]}1, {block[:40]}2, ...)", file=path)
        if not isinstance(definition, dict):
            raise SpecError(f"[blocks.{block}] must be a table with args and one of layers, "
                            f"concat, residual, scale, dense. Received: {block} = "
                            f"{_short(definition)}", file=path)
    return blocks


def _read_layers(data: dict, text: str, path: str, loading: _Loading,
                 has_includes: bool) -> list:
    layers = data.get("layers")
    included = loading.included
    if layers is None and not has_includes and not included:
        raise SpecError("has no layers: add [[layers]] tables", file=path)
    layers = layers or []
    if not isinstance(layers, list) or not all(isinstance(t, dict) for t in layers):
        raise SpecError("layers must be an array of tables ([[layers]])", file=path)
    raw: list[RawLayer] = []
    for table, line in zip(layers, layer_lines(text, len(layers))):
        if "include" in table:
            if set(table) - {"include"}:
                raise SpecError("a layer entry with include takes nothing else",
                                file=path, line=line)
            part = _load_include(path, table["include"], loading, line)
            raw.extend(part.layers)
            continue
        raw.append(RawLayer(MappingProxyType(table), path, line))
    return raw


def _read_header(model: dict, path: str, included: bool) -> tuple:
    """(name, source, outputs, input) of [model], each checked (notes too)."""
    name = model.get("name", os.path.splitext(os.path.basename(path))[0])
    source = model.get("source", "")
    for key, value in (("name", name), ("source", source), ("init", model.get("init", ""))):
        if not isinstance(value, str):
            raise SpecError(f"[model] {key} must be a string. Received: {key} = {_short(value)}",
                            file=path)
    notes = model.get("notes", [])
    if isinstance(notes, str):
        notes = [notes]
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise SpecError(f"[model] notes must be a string or a list of strings. "
                        f"Received: notes = {_short(model.get('notes'))}", file=path)
    outputs = model.get("outputs", [])
    if not isinstance(outputs, list) or not outputs and "outputs" in model or \
            not all(isinstance(o, str) for o in outputs):
        raise SpecError(f"[model] outputs takes a list of entry names such as "
                        f"[\"p2\", \"p3\"]. Received: outputs = {_short(model.get('outputs'))}",
                        file=path)
    if len(set(outputs)) != len(outputs):
        twice = next(o for o in outputs if outputs.count(o) > 1)
        raise SpecError(f"[model] outputs names {twice!r} twice", file=path)
    if "input" not in model and included:
        model = {**model, "input": []}
    elif "input" not in model:
        raise SpecError("[model] needs input = [channels, height, width]", file=path)
    inp = model["input"]
    if not isinstance(inp, list) or (len(inp) not in (1, 3) and not included):
        raise SpecError(f"[model] input must be [channels, height, width] (or [features]). "
                        f"Received: input={inp!r}", file=path)
    return name, source, outputs, model["input"]


def defaults_lines(text: str, defaults: dict, path: str) -> dict:
    """(kind, argument) -> (file, line) of the [defaults] entries: a typo in
    [defaults.conv] is reported where it is written, not at the first conv.
    Keys of a [defaults.KIND] table by their line; an inline table
    (conv = {...} under [defaults]) by the line of its kind."""
    found: dict = {}
    kind = None          # the [defaults.KIND] table the lines are in, "" for [defaults]
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[\s*defaults\s*(?:\.\s*[\"']?([\w-]+)[\"']?\s*)?\]", line)
        if header:
            kind = header.group(1) or ""
            continue
        if re.match(r"\s*\[", line):
            kind = None
            continue
        key = re.match(r"\s*[\"']?([\w-]+)[\"']?\s*=", line)
        if kind is None or not key:
            continue
        if kind:
            found.setdefault((kind, key.group(1)), (path, number))
        elif isinstance(defaults.get(key.group(1)), dict):
            for arg in defaults[key.group(1)]:
                found.setdefault((key.group(1), arg), (path, number))
    return found


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _relative(path: str, inc) -> str:
    if not isinstance(inc, str):
        raise SpecError(f"include takes a file name. Received: include={_short(inc)}",
                        file=path)
    if not inc.strip():
        raise SpecError("include takes a file name; received an empty one", file=path)
    if "\0" in inc:
        raise SpecError(f"include {_short(inc)}: a file name has no NUL byte", file=path)
    return os.path.join(os.path.dirname(path), inc)


def _load_include(path: str, inc, loading: _Loading, line: int | None) -> Spec:
    """An included file; what is wrong with the file itself (missing, a
    directory, a FIFO, too big) is named from the spec that includes it."""
    target = _relative(path, inc)
    try:
        check_input_file(target, "a spec file", limits.MAX_FILE_BYTES)
    except SpecError as e:
        shown = inc if len(inc) <= 60 else _short(inc)   # as written: "include lib.toml: ..."
        raise SpecError(f"include {shown}: {e.message}", file=path, line=line) from None
    try:
        return load(target, loading)
    except SpecError as e:
        # what is wrong inside it is named in it, and where it was included from
        if e.file != path and "(included from " not in e.message:
            e.message += f" (included from {path}{f':{line}' if line else ''})"
        raise


def _table(data: dict, key: str, path: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"[{key}] must be a table", file=path)
    return value
