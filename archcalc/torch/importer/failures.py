"""The import's failures (each one line, with its exit status) and the helpers that keep
the user's warnings and tracebacks out of them."""
from __future__ import annotations

import contextlib


class ImportFailure(Exception):
    """The user's own code raised (exit status 1, one line naming the factory)."""


class Unsupported(Exception):
    """Operations the import cannot map, each with its module path and count
    (exit status 1: the model is fine, archcalc lacks kinds for it): refused by
    a strict import, or, without ``strict``, those that cannot be kept as
    opaque rows either (the reason beside each)."""

    def __init__(self, found: dict, what: str, strict: bool = True):
        self.found = found
        self.strict = strict
        by_op: dict = {}
        for (op, path), count in found.items():
            by_op.setdefault(op, []).append((path or "the model's forward", count))
        parts = []
        for op, places in sorted(by_op.items(), key=lambda kv: -sum(c for _, c in kv[1])):
            calls = sum(c for _, c in places)
            where = ", ".join(f"{p}" + (f" (x{c})" if c > 1 else "") for p, c in places[:3])
            more = f" and {len(places) - 3} more" if len(places) > 3 else ""
            parts.append(f"{op}: {calls} call{'s' if calls > 1 else ''}, at {where}{more}")
        shown = "; ".join(parts[:8]) + (f"; and {len(parts) - 8} more" if len(parts) > 8 else "")
        total = sum(found.values())
        if strict:
            super().__init__(f"{what}: {total} operation(s) have no archcalc kind: {shown}. "
                             "Without --strict they import as opaque rows (shape, params "
                             "and MACs measured on the module)")
        else:
            super().__init__(f"{what}: {total} operation(s) have no archcalc kind and "
                             f"cannot be kept as opaque rows: {shown}")


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 200 else line[:197] + "..."


class TraceFailure(Exception):
    """torch.fx cannot trace a forward; ``module``: the path of the innermost
    module whose forward it could not trace ("" for the model's own)."""
    module = ""
