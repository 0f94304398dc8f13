"""Every bound on the work one input may cause, in one place.

Specs come from strangers, so nothing a spec says may hang the machine or
take unbounded memory: each recursive or repeated thing has a limit here, and
the message that refuses it names the environment variable that raises it
(``ARCHCALC_MAX_ROWS=500000 archcalc table big.toml``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import SpecError


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
