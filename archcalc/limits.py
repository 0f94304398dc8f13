"""Every bound on the work one input may cause, in one place.

Specs come from strangers, so nothing a spec says may hang the machine or
take unbounded memory: each recursive or repeated thing has a limit here, and
the message that refuses it names the environment variable that raises it
(``ARCHCALC_MAX_ROWS=500000 archcalc table big.toml``).
"""
from __future__ import annotations

import contextvars
import os
from contextlib import contextmanager
from dataclasses import dataclass

from .errors import SpecError


# limits read once for a run of many analyses (a sweep): see pinned()
_PINNED: contextvars.ContextVar = contextvars.ContextVar("archcalc_pinned", default=None)


@dataclass(frozen=True)
class Limit:
    name: str          # the environment variable is ARCHCALC_<NAME upper>
    default: int
    what: str          # "rows after all repeats and blocks"

    @property
    def env(self) -> str:
        return "ARCHCALC_" + self.name.upper()

    @property
    def value(self) -> int:
        pinned = _PINNED.get()
        if pinned is not None:
            if self.name not in pinned:
                pinned[self.name] = self._read()
            return pinned[self.name]
        return self._read()

    def _read(self) -> int:
        raw = os.environ.get(self.env)
        if raw is None:
            return self.default
        try:
            v = int(raw)
        except ValueError:
            raise SpecError(f"{self.env} must be a positive integer. Received: {raw[:40]!r}") \
                from None
        if v < 1:
            raise SpecError(f"{self.env} must be a positive integer. Received: {v}")
        return v

    def exceeded(self, detail: str) -> SpecError:
        return SpecError(f"{detail}: over the limit of {self.value:,} {self.what}; "
                         f"if this is intended, raise it with {self.env}=N")

    def check(self, amount: int, detail: str) -> None:
        if amount > self.value:
            raise self.exceeded(detail)


MAX_ROWS = Limit("max_rows", 100_000, "rows after all repeats and blocks")
MAX_NESTING = Limit("max_nesting", 32, "levels of nested blocks and structures")
MAX_TOML_DEPTH = Limit("max_toml_depth", 32, "levels of nested TOML tables and arrays")
MAX_FILE_BYTES = Limit("max_file_bytes", 1 << 20, "bytes per spec file")
MAX_INCLUDES = Limit("max_includes", 64, "included files in total")
MAX_INCLUDE_DEPTH = Limit("max_include_depth", 8, "levels of include")
MAX_EXPR_CHARS = Limit("max_expr_chars", 1000, "characters per expression")
MAX_EXPR_DEPTH = Limit("max_expr_depth", 32, "levels of nesting per expression")
MAX_VALUE_DIGITS = Limit("max_value_digits", 18, "decimal digits per value")
MAX_DEGREE = Limit("max_degree", 64, "as the degree of a formula in unbound variables")
SIMPLIFY_MS = Limit("simplify_ms", 1000, "milliseconds of CPU time to simplify a formula")
SYMBOLIC_MS = Limit("symbolic_ms", 3000, "milliseconds of CPU time to analyze with unbound "
                    "variables")
MAX_FORMULA_NODES = Limit("max_formula_nodes", 5_000, "terms in a printed formula")
MAX_PROFILE_BYTES = Limit("max_profile_bytes", 8 << 20, "bytes per device profile")
MAX_PROFILE_DEPTH = Limit("max_profile_depth", 16, "levels of nested JSON in a device profile")
MAX_PROFILE_POINTS = Limit("max_profile_points", 2_000,
                           "items per list (or names per object) of a device profile")
MAX_SWEEP_POINTS = Limit("max_sweep_points", 100_000, "points in a sweep's grid")
MAX_EXPANSION = Limit("max_expansion", 300_000, "expansion steps (rows, switched-off and "
                      "zero-repeat rows, block calls, branches, expression operations)")
MAX_BATCHES = Limit("max_batches", 64, "batch sizes in one --batch list")
MAX_JSON_BYTES = Limit("max_json_bytes", 1 << 20, "bytes of JSON in one option or file")
MAX_JSON_DEPTH = Limit("max_json_depth", 32, "levels of nested JSON arrays and objects")
MAX_SOURCE_BYTES = Limit("max_source_bytes", 16 << 20, "bytes of a Python file to import")
IMPORT_TIMEOUT_S = Limit("import_timeout_s", 120, "seconds to import and trace a model "
                         "(the default of archcalc import --timeout)")

def check_value(v: int, detail: str) -> int:
    """An integer within the value budget (10^18 by default): larger numbers
    are never a channel count or a size, and unbounded ones cost unbounded time."""
    limit = MAX_VALUE_DIGITS.value
    # bit_length first: str() of a huge int is itself slow (and refused past 4,300 digits)
    if v.bit_length() > 3.33 * limit + 4 or len(str(abs(v))) > limit:
        raise SpecError(f"{detail}: the value has more than {limit} digits; values past "
                        f"10^{limit} are refused (raise with {MAX_VALUE_DIGITS.env}=N)")
    return v


def parse_int(text: str, detail: str) -> int:
    """int(text) for option values, refusing huge ones before converting them."""
    t = text.strip()
    if len(t.lstrip("+-")) > MAX_VALUE_DIGITS.value:
        raise SpecError(f"{detail}: {t[:24]}... has more than {MAX_VALUE_DIGITS.value} digits "
                        f"(raise with {MAX_VALUE_DIGITS.env}=N)")
    return int(t)


class Work:
    """The expansion budget of one graph build: every step of expanding a
    spec costs one, whether it makes a row or not (a switched-off row, a
    zero-repeat row, a block call), so a block of 100 switched-off rows called
    99,000 times is refused at the budget instead of running for minutes."""

    def __init__(self):
        self.steps = 0
        self.cap = MAX_EXPANSION.value

    def charge(self, steps: int, detail: str) -> None:
        self.steps += steps
        if self.steps > self.cap:
            raise MAX_EXPANSION.exceeded(detail)

    def predict(self, more: int, detail: str) -> None:
        """Refuse now what the remaining copies of a repeat would reach: a
        10^8 fan-out stops after one copy per level, not at the budget."""
        if self.steps + more > self.cap:
            raise MAX_EXPANSION.exceeded(f"{detail}: about {self.steps + more:,} steps")


_WORK: contextvars.ContextVar = contextvars.ContextVar("archcalc_work", default=None)


@contextmanager
def metered():
    """A fresh Work for one build; expressions evaluated inside charge it."""
    token = _WORK.set(Work())
    try:
        yield _WORK.get()
    finally:
        _WORK.reset(token)


@contextmanager
def pinned():
    """Every limit read from the environment once, for work that analyses a
    spec thousands of times (archcalc sweep): looking ARCHCALC_* up in
    os.environ at each check was a seventh of a sweep's time."""
    token = _PINNED.set({})
    try:
        yield
    finally:
        _PINNED.reset(token)


def current_work() -> "Work | None":
    return _WORK.get()


def charge(steps: int, detail: str) -> None:
    """Charge the build in progress, if any (an expression outside a build is
    bounded by its own length)."""
    work = _WORK.get()
    if work is not None:
        work.charge(steps, detail)


def all_limits() -> list[Limit]:
    """Every Limit of this module, in the order they are defined."""
    return [v for v in globals().values() if isinstance(v, Limit)]


def table_markdown() -> str:
    """docs/limits.md's table, generated so it cannot go stale."""
    rows = ["| Limit | Environment variable | Default | What it bounds |",
            "|---|---|---:|---|"]
    for limit in all_limits():
        rows.append(f"| {limit.name} | `{limit.env}` | {limit.default:,} | {limit.what} |")
    return "\n".join(rows) + "\n"
