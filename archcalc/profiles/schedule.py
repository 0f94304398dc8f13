"""Which microbenchmark `archcalc calibrate` times next within a table's
budget. Every family of points (convolutions, GEMMs, ops) has a share of
the time; the next job comes from the family that has used the least of its
share, so a slow family (convolutions on a loaded machine) cannot starve the
others: a budget that runs out leaves each table with some of every family,
never 10 convolutions, 0 GEMMs and 0 ops. A few points of each family are
measured even past the budget (``MINIMUM``): a table without them cannot rate
that family at all.

Pure Python (no torch): calibrate.py gives it the jobs and a function that times one.
"""
from __future__ import annotations

from collections import deque

SHARES = {"conv": 0.6, "linear": 0.15, "op": 0.25}
MINIMUM = {"conv": 1, "linear": 2, "op": 4}
TABLE_KEYS = {"conv": "conv", "linear": "linear", "op": "ops"}   # the families' keys in a table


def run_fair(jobs, measure, now, stop, progress=None) -> dict:
    """Time ``jobs`` ([(family, payload)], each family's in priority order) with
    ``measure(family, payload)`` (True when it added a point) until the clock
    ``now()`` passes ``stop``; then only what MINIMUM still asks for.
    ``progress(done, planned)`` after each job. Returns the table's coverage:
    {"planned": {conv, linear, ops}, "measured": {...}, "skipped": n}."""
    queues = {family: deque(p for k, p in jobs if k == family) for family in SHARES}
    planned = {family: len(q) for family, q in queues.items()}
    spent = dict.fromkeys(SHARES, 0.0)
    measured = dict.fromkeys(SHARES, 0)
    skipped = handled = 0
    total = sum(planned.values())
    while any(queues.values()):
        family = min((k for k in SHARES if queues[k]), key=lambda k: spent[k] / SHARES[k])
        payload = queues[family].popleft()
        handled += 1
        if now() > stop and measured[family] >= MINIMUM[family]:
            skipped += 1
        else:
            start = now()
            if measure(family, payload):
                measured[family] += 1
            else:
                skipped += 1
            spent[family] += now() - start
        if progress:
            progress(handled, total)
    rename = TABLE_KEYS.get
    return {"planned": {rename(k): v for k, v in planned.items()},
            "measured": {rename(k): v for k, v in measured.items()}, "skipped": skipped}


def spread_order(n: int) -> list[int]:
    """Indices 0..n-1 in the order that covers a sorted list of sizes best
    when cut short: the second smallest and the largest first, then each
    time the index farthest from those taken (a curve of two points spans
    the range; more points fill it in)."""
    if n <= 2:
        return list(range(n))
    order = [1, n - 1]
    while len(order) < n:
        rest = [i for i in range(n) if i not in order]
        order.append(max(rest, key=lambda i: (min(abs(i - j) for j in order), -i)))
    return order


__all__ = ["run_fair", "spread_order", "SHARES", "MINIMUM"]
