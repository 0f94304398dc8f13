"""Whether a prediction can trust its profile: which tables a prediction drew
its rates from, how many points those tables hold, and what `archcalc
calibrate` recorded about the machine while it measured (load, spread,
sanity). A table the prediction needs and the profile lacks is an error; a
thin one, or a profile measured under load, is a warning (one line per
issue, never one per layer), which ``predict --strict`` refuses.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .schema import ProfileError

# fewer points than this and a rate is an extrapolation from a few shapes:
# the quick grid's one conv of every class is 10, its GEMM rows 12
MIN_POINTS = {"conv": 8, "linear": 3}
MIN_OP_SIZES = 2          # one size: no curve, a constant
MIN_COVERAGE = 0.5        # of the points calibrate planned for the table
FAMILY_WORDS = {"conv": "conv layer", "linear": "fc layer (GEMM)", "ops": "op"}


def _count(n: int, word: str) -> str:
    """'1 conv layer', '20 conv layers', '2 fc layers (GEMMs)'."""
    if n == 1:
        return f"1 {word}"
    head, _, tail = word.partition(" (")
    return f"{n} {head}s" + (f" ({tail[:-1]}s)" if tail else "")


@dataclass
class Usage:
    """What one prediction asked of a table: conv layers by their grouping
    (dense, grouped, depthwise), fc layers, and each op with the number of
    sizes its curve has."""
    convs: Counter = field(default_factory=Counter)
    linears: int = 0
    ops: Counter = field(default_factory=Counter)
    op_sizes: dict = field(default_factory=dict)

    def op(self, name: str, sizes: int) -> None:
        self.ops[name] += 1
        self.op_sizes[name] = sizes


def _missing(who, table, family, count):
    return ProfileError(
        f"table {table} has no {family} points, and {_count(count, FAMILY_WORDS[family])} of the "
        f"spec need{'s' if count == 1 else ''} them; make the profile again with `archcalc "
        "calibrate` (a larger --budget-s)",
        file=who)


def warnings_for(profile, table, usage: Usage, mode: str) -> list[str]:
    """One line per reason not to trust this prediction; a table it needs
    and the profile lacks raises ProfileError (naming the profile)."""
    who = profile.source or "profile"
    n_conv = sum(usage.convs.values())
    if n_conv and not table.convs:
        raise _missing(who, table.name, "conv", n_conv)
    if usage.linears and not table.linears:
        raise _missing(who, table.name, "linear", usage.linears)
    if usage.ops and not table.ops:
        raise _missing(who, table.name, "ops", sum(usage.ops.values()))
    out = []
    say = out.append
    have = {"conv": len(table.convs), "linear": len(table.linears),
            "ops": sum(len(c["inference"]) for c in table.ops.values())}
    used = {"conv": n_conv, "linear": usage.linears, "ops": sum(usage.ops.values())}
    for family in ("conv", "linear"):
        if used[family] and have[family] < MIN_POINTS[family]:
            say(f"profile {who}: rates for {_count(used[family], FAMILY_WORDS[family])} come "
                f"from a table ({table.name}) of {_count(have[family], 'point')} (fewer than "
                f"{MIN_POINTS[family]})")
    groupings = {p.cls[2] for p in table.convs}
    for grouping, count in sorted(usage.convs.items()):
        if table.convs and grouping not in groupings:
            say(f"profile {who}: {_count(count, grouping + ' conv layer')} "
                f"{'is' if count == 1 else 'are'} rated from other kinds of conv "
                f"(table {table.name} has no {grouping} point)")
    thin = sorted(name for name, sizes in usage.op_sizes.items() if sizes < MIN_OP_SIZES)
    if thin:
        say(f"profile {who}: rates for {_count(sum(usage.ops[n] for n in thin), 'op')} "
            f"({', '.join(thin[:6])}{', ...' if len(thin) > 6 else ''}) come from curves of "
            f"fewer than {MIN_OP_SIZES} sizes in table {table.name}")
    if mode == "train" and n_conv and table.convs and \
            all(p.log_backward is None for p in table.convs):
        say(f"profile {who}: table {table.name} has no backward times: the backward pass is "
            "rated as the forward")
    for family, planned in sorted(table.planned.items()):
        if used.get(family) and planned and have.get(family, 0) < MIN_COVERAGE * planned:
            say(f"profile {who}: table {table.name} holds {have[family]} of the {planned} "
                f"{family} points calibrate planned (its budget ran out)")
    trust = profile.data.get("trust") or _legacy_trust(profile.data)
    if trust.get("measured_under_load"):
        why = "; ".join(trust.get("reasons") or []) or "as calibrate recorded"
        say(f"profile {who}: measured under load ({why}): its times may be slower than this "
            "device's")
    for issue in trust.get("sanity") or []:
        say(f"profile {who}: {issue}")
    return out


def _legacy_trust(data: dict) -> dict:
    """A profile from a calibrate that recorded no trust: judged by the load
    averages it did record (no spread, no peaks: those it cannot tell)."""
    host = data.get("host") or {}
    if not host.get("load_before") and not host.get("load_after"):
        return {}
    return assess_calibration(cpu_count=host.get("cpu_count") or 1,
                              threads=data.get("threads") or 1, clock=data.get("clock", "wall"),
                              load_before=host.get("load_before"),
                              load_after=host.get("load_after"), spreads=[], peaks={},
                              native={})


# --------------------------------------------------------------------------
# what calibrate records

LOAD_SHARE = 0.5       # a load average above half the cores: others compete for them
SPREAD_LIMIT = 0.15    # median (median - min) / median of a point's repetitions
PEAK_MARGIN = 1.2      # a low-precision peak this far above fp32's without hardware for it


def assess_calibration(*, cpu_count: int, threads: int, clock: str, load_before, load_after,
                       spreads: list, peaks: dict, native: dict) -> dict:
    """The profile's ``trust`` record: whether the machine was busy while
    calibrate measured (the load average before, and after beyond
    calibrate's own threads, over half the cores; or repetitions of one point
    spread widely) and what looks wrong in the numbers themselves (a bf16
    peak above fp32's where the device has no bf16 hardware: the fp32 GEMMs
    ran slow). With the CPU-time clock the load average is no reason: the
    clock counts this process's time alone."""
    reasons = []
    limit = cpu_count * LOAD_SHARE
    if clock != "cpu":
        if load_before and load_before[0] > limit:
            reasons.append(f"load average {load_before[0]:.2f} on {cpu_count} cores before "
                           f"calibrating (over {limit:g})")
        others = load_after[0] - threads if load_after else 0.0
        if others > limit:
            reasons.append(f"load average {load_after[0]:.2f} after, {others:.2f} beyond "
                           f"calibrate's own {threads} threads")
    ordered = sorted(s for s in spreads if s == s)
    spread = ordered[len(ordered) // 2] if ordered else 0.0
    if spread > SPREAD_LIMIT:
        reasons.append(f"repetitions of a point spread {spread:.0%} (median over the points; "
                       f"over {SPREAD_LIMIT:.0%})")
    sanity = []
    fp32 = (peaks.get("fp32") or {}).get("flops_per_s")
    for dtype, peak in sorted(peaks.items()):
        rate = peak.get("flops_per_s", 0.0)
        if dtype != "fp32" and fp32 and rate > PEAK_MARGIN * fp32 and not native.get(dtype):
            sanity.append(f"the {dtype} GEMM peak ({rate / 1e9:,.1f} GFLOP/s) is above fp32's "
                          f"({fp32 / 1e9:,.1f}) on a device without {dtype} hardware: the fp32 "
                          "timings were likely disturbed")
    return {"measured_under_load": bool(reasons), "reasons": reasons,
            "spread": round(spread, 4), "load_limit": limit, "sanity": sanity}


__all__ = ["Usage", "warnings_for", "assess_calibration", "MIN_POINTS", "MIN_OP_SIZES",
           "MIN_COVERAGE"]
