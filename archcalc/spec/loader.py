"""Read a TOML spec into a frozen ``Spec``: header, variables, defaults, layers.

tomllib gives no positions, so layer tables are mapped to lines by scanning
the text for their ``[[layers]]`` headers (or the ``{`` of inline tables).
Includes are resolved here: ``include = ["lib.toml"]`` at the top merges the
library's [vars], [defaults] and [blocks] under this file's own; a layer entry
``{include = "part.toml"}`` splices that file's layers in its place.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from types import MappingProxyType

from ..errors import SpecError

HEADER_KEYS = {"name", "input", "source", "init", "notes"}
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

    def _repr_html_(self) -> str:
        """A notebook shows the spec's report at its own input."""
        from ..render.report import spec_html
        return spec_html(self)


def read_toml(path: str) -> tuple[dict, str]:
    """Read a spec file's TOML, every failure a SpecError naming the file."""
    if not os.path.exists(path):
        raise SpecError("no such file", file=path)
    if os.path.isdir(path):
        raise SpecError("is a directory, not a spec file", file=path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise SpecError(f"cannot read the file: {e.strerror}", file=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SpecError("is not UTF-8 text; a spec is a TOML file", file=path) from None
    return parse_toml(text, path), text


def parse_toml(text: str, path: str) -> dict:
    if not text.strip():
        raise SpecError("is empty; a spec needs a [model] table and [[layers]]", file=path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        line = int(m.group(1)) if m else None
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        raise SpecError(f"invalid TOML: {msg}" + (f" (column {m.group(2)})" if m else ""),
                        file=path, line=line) from None
    return data


def layer_lines(text: str, count: int) -> list[int | None]:
    """Line numbers of the layer tables, in order; None where they cannot be told."""
    lines = text.splitlines()
    headers = [i + 1 for i, ln in enumerate(lines) if re.match(r"\s*\[\[\s*layers\s*\]\]", ln)]
    if len(headers) == count:
        return headers
    # inline form: layers = [ {..}, {..} ], one table per line, up to the next [header]
    start = next((i for i, ln in enumerate(lines) if re.match(r"\s*layers\s*=\s*\[", ln)), None)
    if start is not None:
        inline = []
        for i in range(start, len(lines)):
            ln = lines[i]
            if i > start and re.match(r"\s*\[\[?\s*[A-Za-z_][\w.\-\" ]*\]\]?\s*(#.*)?$", ln):
                break
            if ln.lstrip().startswith("{") or (i == start and re.match(r"\s*layers\s*=\s*\[\s*\{", ln)):
                inline.append(i + 1)
        if len(inline) == count:
            return inline
    return [None] * count


def load(path: str, _stack: tuple[str, ...] = ()) -> Spec:
    """Read and check the structure of a spec file (values are checked later)."""
    real = os.path.realpath(path)
    if real in _stack:
        chain = " -> ".join(os.path.basename(p) for p in (*_stack, real))
        raise SpecError(f"includes itself ({chain})", file=path)
    data, text = read_toml(path)
    return _from_data(data, text, path, _stack, real)


def loads(text: str, file: str = "<spec>") -> Spec:
    """A spec from TOML text; includes are relative to the current directory."""
    return _from_data(parse_toml(text, file), text, file, (), os.path.realpath(file))


def _from_data(data: dict, text: str, path: str, _stack: tuple, real: str) -> Spec:
    """_stack: the files that include this one (empty for the top file)."""
    model = data.get("model", {})
    if isinstance(model, dict) and ({"layers", "include"} & set(model)):
        # TOML puts keys written after [model] into it: a spec may list its
        # layers (and includes) right under the header.
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

    base_vars: dict = {}
    base_defaults: dict = {}
    base_blocks: dict = {}
    includes = data.get("include", [])
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise SpecError("include takes a file name or a list of file names", file=path)
    for inc in includes:
        lib = load(_relative(path, inc), (*_stack, real))
        base_vars.update(lib.vars)
        for kind, d in lib.defaults.items():
            base_defaults.setdefault(kind, {}).update(d)
        base_blocks.update(lib.blocks)

    if not isinstance(model, dict):
        raise SpecError("[model] must be a table with name and input", file=path)
    bad = set(model) - HEADER_KEYS
    if bad:
        raise SpecError(f"[model] has unknown key(s) {', '.join(sorted(map(repr, bad)))}; "
                        f"it takes {', '.join(sorted(HEADER_KEYS))}", file=path)

    vars_ = _table(data, "vars", path)
    for name, value in vars_.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise SpecError(f"[vars] name {name!r} is not an identifier", file=path)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise SpecError(f"[vars] {name} must be an integer or an expression string. "
                            f"Received: {name}={value!r}", file=path)
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
        base_defaults.setdefault(kind, {}).update(d)
    base_vars.update(vars_)
    base_blocks.update(_table(data, "blocks", path))

    layers = data.get("layers")
    included = bool(_stack)  # a library or a part: no [model] or layers needed
    if layers is None and not includes and not included:
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
            part = load(_relative(path, table["include"]), (*_stack, real))
            raw.extend(part.layers)
            continue
        raw.append(RawLayer(MappingProxyType(table), path, line))

    name = model.get("name", os.path.splitext(os.path.basename(path))[0])
    source = model.get("source", "")
    if "input" not in model and included:
        model = {**model, "input": []}
    elif "input" not in model:
        raise SpecError("[model] needs input = [channels, height, width]", file=path)
    inp = model["input"]
    if not isinstance(inp, list) or (len(inp) not in (1, 3) and not included):
        raise SpecError(f"[model] input must be [channels, height, width] (or [features]). "
                        f"Received: input={inp!r}", file=path)
    return Spec(file=path, name=str(name), input=tuple(inp), source=str(source),
                vars=MappingProxyType(base_vars),
                defaults=MappingProxyType({k: MappingProxyType(v)
                                           for k, v in base_defaults.items()}),
                blocks=MappingProxyType(base_blocks), layers=tuple(raw),
                extra=MappingProxyType({k: v for k, v in model.items()
                                        if k in ("init", "notes")}))


def _relative(path: str, inc) -> str:
    if not isinstance(inc, str):
        raise SpecError(f"include takes a file name. Received: include={inc!r}", file=path)
    return os.path.join(os.path.dirname(path), inc)


def _table(data: dict, key: str, path: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"[{key}] must be a table", file=path)
    return value
