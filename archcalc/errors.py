"""One error type for bad input, carrying where it happened.

Context is added on the way out (einops-style): the layer code raises
``SpecError("kernel 7x7 is larger than the padded input 5x5")`` and the
callers that know the file, the line and the layer path fill those in, so the
CLI can print one line such as::

    specs/net.toml:14: layer conv3 (#5): kernel 7x7 is larger than the padded input 5x5
"""
from __future__ import annotations

import re


def path_text(path) -> str:
    """A layer's one name everywhere (table, JSON, CSV, errors, export, check):
    its PyTorch module path, as named_modules() prints it: 'layer1.0.conv1'."""
    return ".".join(path)


def split_path(text: str) -> tuple:
    """Any spelling of a path ('layer1.0.conv1', 'layer1/0/conv1',
    'layer1 > 0 > conv1') as its parts."""
    return tuple(p.strip() for p in re.split(r"\s*>\s*|/|\.", text.strip()) if p.strip())


class SpecError(Exception):
    """Bad input: a spec, an option or a value. The CLI exits 2 on it."""

    def __init__(self, message: str, *, file: str | None = None,
                 line: int | None = None, path: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.path = tuple(path)

    def at(self, *, file: str | None = None, line: int | None = None,
           layer: str | None = None) -> "SpecError":
        """Add context that is not known yet; the innermost context wins."""
        if file is not None and self.file is None:
            self.file = file
        if line is not None and self.line is None:
            self.line = line
        if layer is not None:
            self.path = (layer,) + self.path
        return self

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        layer = f"layer {path_text(tuple(map(_short, self.path)))}: " if self.path else ""
        # one line, control characters made visible: messages quote spec values
        return _short(printable(f"{where}{layer}{self.message}"), MAX_LINE)


# A message quotes spec values, which may be any length: one line stays readable.
MAX_LINE = 1000


def _short(text, limit: int = 64) -> str:
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit - 30]}... ({len(text) - (limit - 30):,} more characters)"


_CONTROL = {c: "?" for c in (*range(0x20), *range(0x7f, 0xa0))}
_CONTROL_KEEP_NL = {c: r for c, r in _CONTROL.items() if c != 0x0a}


def printable(text: str, keep_newlines: bool = False) -> str:
    """User text made safe for a terminal: control characters (ESC sequences,
    carriage returns, bells; newlines unless kept) become '?'. Markup is the
    renderer's business (rich.markup.escape, html.escape)."""
    return str(text).translate(_CONTROL_KEEP_NL if keep_newlines else _CONTROL)


class RunError(Exception):
    """A run that failed (training diverged, a write failed, out of memory):
    the CLI prints its one line and exits 1."""


class SpecWarning:
    """A finding that is not fatal (a layer that does not tile its input or
    grows its map)."""

    def __init__(self, message: str, path: tuple[str, ...] = (), line: int | None = None,
                 rule: str = "dropped-input"):
        self.message = message
        self.path = tuple(path)
        self.line = line
        self.rule = rule        # the lint rule it is (dropped-input, grows-map)

    def __str__(self) -> str:
        layer = f"layer {path_text(self.path)}: " if self.path else ""
        return printable(f"{layer}{self.message}")


class MissingExtra(Exception):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the '{module}' package, which is not installed. "
            f'Install it from the archcalc clone with: pip install ".[{extra}]" '
            f'(or pip install "archcalc[{extra}]" where archcalc comes from a package index)')


def require(module: str, extra: str, purpose: str):
    """Import an optional heavy module or raise MissingExtra naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingExtra(module, extra, purpose) from exc
