"""The design space of a sweep: grids, links and an input that may depend on them.

    --grid C=32,48,64              a list of numbers
    --grid width=0.5:2.0:0.25      a range, both ends included (start:stop:step)
    --grid batch=1:4096:*2         a geometric range (1, 2, 4, ... 4096)
    --link "depth=1.2**phi"        a variable computed from the others (safe evaluator)
    --input 3,res,res              channels, height, width: numbers or expressions

Every point is the product of the grids, then the links computed in order.
The number of points is known, and refused past ARCHCALC_MAX_SWEEP_POINTS,
before any point is made.
"""
from __future__ import annotations

import ast
import itertools
import math
import re
from dataclasses import dataclass

from .. import limits
from ..errors import SpecError
from ..spec.expr import evaluate, evaluate_value

NAME = re.compile(r"[A-Za-z_]\w{0,63}")
RESERVED = {"batch"}     # a grid over the batch size: every other name binds a spec variable


def _number(text: str, option: str):
    """An int or a finite float, from an option's text (never evaluated as code)."""
    t = text.strip()
    try:
        if re.fullmatch(r"[+-]?\d+", t):
            return limits.parse_int(t, option)
        value = float(t)
    except ValueError:
        raise SpecError(f"{option}: {t[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise SpecError(f"{option}: {t[:40]!r} is not a finite number")
    return value


def _tidy(x: float):
    """0.1 + 0.2 -> 0.3: a range's values as a person writes them (12 digits)."""
    value = float(f"{x:.12g}")
    return int(value) if value == int(value) and abs(value) < 2 ** 53 else value


@dataclass(frozen=True)
class Grid:
    name: str
    values: tuple

    @property
    def text(self) -> str:
        return f"{self.name}=" + ",".join(str(v) for v in self.values)


def parse_grid(text: str) -> Grid:
    """NAME=VALUES: a list, start:stop[:step] or start:stop:*factor."""
    option = f"--grid {text[:60]}"
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not NAME.fullmatch(name):
        raise SpecError(f"--grid takes NAME=VALUES, e.g. C=32,48,64 or width=0.5:2:0.25. "
                        f"Received: {text[:60]!r}")
    values = values.strip()
    if not values:
        raise SpecError(f"{option}: no values")
    if ":" in values:
        return Grid(name, _range(values, option))
    items = [_number(v, option) for v in values.split(",") if v.strip()]
    if not items:
        raise SpecError(f"{option}: no values")
    limits.MAX_SWEEP_POINTS.check(len(items), f"{option}: {len(items):,} values")
    return Grid(name, tuple(dict.fromkeys(items)))    # a repeated value is one point


def _range(text: str, option: str) -> tuple:
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise SpecError(f"{option}: a range is start:stop or start:stop:step "
                        "(or start:stop:*factor)")
    start, stop = _number(parts[0], option), _number(parts[1], option)
    if stop < start:
        raise SpecError(f"{option}: the range ends ({stop}) before it starts ({start})")
    step_text = parts[2].strip() if len(parts) == 3 else "1"
    if step_text.startswith("*"):
        factor = _number(step_text[1:], option)
        if not factor > 1:
            raise SpecError(f"{option}: a geometric step *F needs F > 1. Received: {factor}")
        if not start > 0:
            raise SpecError(f"{option}: a geometric range starts above 0. Received: {start}")
        count = _count(math.log(stop / start) / math.log(factor), option)
        return tuple(_tidy(start * factor ** i) for i in range(count))
    step = _number(step_text, option)
    if not step > 0:
        raise SpecError(f"{option}: the step must be positive. Received: {step}")
    # counted before made: 0:1e12 is refused, not built
    count = _count((stop - start) / step, option)
    return tuple(_tidy(start + i * step) for i in range(count))


def _count(steps: float, option: str) -> int:
    """The values of a range (steps + 1), refused past the limit before any is made;
    an astronomically long range is named by the limit, not printed in full."""
    cap = limits.MAX_SWEEP_POINTS.value
    if not math.isfinite(steps) or steps > 1e18:
        raise limits.MAX_SWEEP_POINTS.exceeded(f"{option}: more than 10^18 values")
    count = math.floor(steps + 1e-9) + 1
    if count > cap:
        raise limits.MAX_SWEEP_POINTS.exceeded(f"{option}: {count:,} values")
    return count


@dataclass(frozen=True)
class Link:
    name: str
    text: str


def parse_link(text: str) -> Link:
    name, sep, expression = text.partition("=")
    name = name.strip()
    if not sep or not NAME.fullmatch(name) or not expression.strip():
        raise SpecError(f"--link takes NAME=EXPRESSION, e.g. \"depth=1.2**phi\". "
                        f"Received: {text[:60]!r}")
    return Link(name, expression.strip())


def names_in(text: str) -> set[str]:
    """The variable names an expression reads (a syntax error is reported later)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and id(n) not in called}


def parse_input(text: str | None) -> tuple | None:
    """--input: CxHxW of numbers, or C,H,W where each part may be an expression."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")] if "," in text else \
        [p.strip() for p in re.split(r"(?<=\d)x(?=\d)|\s+x\s+", text)]
    if len(parts) not in (1, 3) or not all(parts):
        raise SpecError(f"--input takes CxHxW, or C,H,W with expressions of the sweep's "
                        f"variables (3,res,res). Received: {text[:60]!r}")
    return tuple(parts)


@dataclass
class Space:
    grids: list
    links: list
    input: tuple | None      # texts of C, H, W, or None: the spec's own

    @property
    def size(self) -> int:
        return math.prod(len(g.values) for g in self.grids)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.grids] + [link.name for link in self.links]

    def check(self) -> None:
        """Names once each, links that read only what is known before them, and
        a size within the limit: all before the first point is made."""
        seen: set[str] = set()
        for name in self.names:
            if name in seen:
                raise SpecError(f"the sweep variable {name!r} is given twice "
                                "(in --grid or --link)")
            seen.add(name)
        known = {g.name for g in self.grids}
        for link in self.links:
            unknown = names_in(link.text) - known
            if unknown:
                raise SpecError(f"--link {link.name}={link.text[:60]}: it reads "
                                f"{', '.join(sorted(unknown))}, which is not a --grid variable "
                                "or an earlier --link")
            known.add(link.name)
        for part in self.input or ():
            unknown = names_in(part) - known
            if unknown:
                raise SpecError(f"--input: {part[:40]!r} reads {', '.join(sorted(unknown))}, "
                                "which is not a --grid or --link variable")
        if not self.grids:
            raise SpecError("a sweep needs at least one --grid NAME=VALUES")
        limits.MAX_SWEEP_POINTS.check(
            self.size, "the grid has " + " x ".join(str(len(g.values)) for g in self.grids)
            + f" = {self.size:,} points")

    def points(self):
        """Every point: a dict name -> value, grids first, links after, in order."""
        names = [g.name for g in self.grids]
        for values in itertools.product(*(g.values for g in self.grids)):
            yield self.complete(dict(zip(names, values)))

    def complete(self, point: dict) -> dict:
        """A point of the grids with its links computed."""
        for link in self.links:
            try:
                value = evaluate_value(link.text, point)
            except SpecError as e:
                raise SpecError(f"--link {link.name}: {e.message}") from None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"--link {link.name}={link.text[:60]}: gives {value!r}, "
                                "not a number")
            point[link.name] = value
        return point

    def input_shape(self, point: dict) -> tuple | None:
        if self.input is None:
            return None
        shape = []
        for part in self.input:
            try:
                value = evaluate(part, point)
            except SpecError as e:
                raise SpecError(f"--input {part[:40]!r}: {e.message}") from None
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"--input {part[:40]!r} gives {value!r}; a size is a "
                                "positive integer")
            shape.append(value)
        return tuple(shape)
