"""A device profile read for the prediction (archcalc.predict): the
calibrated convolutions and GEMMs as rates interpolated by shape, the ops as
curves by size, the bandwidth, overhead and optimizer curves. The profile is
validated once, on reading, against its schema (schema.py), so everything
here can trust its types and ranges. Pure Python: no torch."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass

from .schema import ProfileError, read_json, validate

NEIGHBOURS = 4          # calibrated shapes an interpolation weighs
# squared log2 distances added between conv classes: another kernel size
# counts as a factor 4 off in one dimension, another stride as a factor 2;
# grouped and depthwise stay apart from dense convs
KERNEL_PENALTY, STRIDE_PENALTY, GROUP_PENALTY = 4.0, 1.0, 64.0

# the ops no kind owns: a merge's add and concat (kinds rated as them too),
# and the copy every chain ends in (then the copy bandwidth)
MERGE_OP_RELATIVES = {"add": "copy", "cat": "copy"}


@functools.lru_cache(maxsize=None)
def op_relatives() -> dict:
    """An op missing from a profile -> its nearest calibrated relative: each
    kind names its own ops' relatives (``Kind.op_relatives``), beside the cost
    model that names those ops."""
    from ..layers import kinds
    table = dict(MERGE_OP_RELATIVES)
    for kind in kinds().values():
        for op, relative in kind.op_relatives.items():
            if table.setdefault(op, relative) != relative:   # a bug in a kind, caught in tests
                raise AssertionError(f"kind {kind.name!r} rates op {op!r} as {relative!r}, "
                                     f"another kind as {table[op]!r}")
    return table


# --------------------------------------------------------------------------
# the profile


class Profile:
    """A device profile: what `archcalc calibrate` measured (see its module)."""

    def __init__(self, data: dict, source: str = ""):
        validate(data, source)   # once: types, ranges, finite numbers (profiles/schema.py)
        try:
            self.data, self.source = data, source
            self.device = str(data["device"])
            self.device_name = str(data.get("device_name", self.device))
            over = data["overhead"]
            self.overhead = {"inference": float(over["forward_s"]),
                             "train": float(over["forward_train_s"]),
                             "backward": float(over["backward_s"])}
            # a GPU profile times the host's launching and the device's kernels
            # apart (calibrate's Clock.split): the prediction then follows both
            self.split = self.device == "cuda" and "forward_host_s" in over
            self.host_overhead = {k: float(over.get(f"{key}_host_s", over[f"{key}_s"]))
                                  for k, key in (("inference", "forward"),
                                                 ("train", "forward_train"),
                                                 ("backward", "backward"))}
            self.optimizer_host_curve = sorted(   # > 0: interpolated in log space
                (float(p["elements"]), max(float(p["step_host_s"]), 1e-9))
                for p in data["optimizer"] if "step_host_s" in p)
            self.optimizer_gpu_curve = sorted(
                (float(p["elements"]), float(p["step_gpu_s"])) for p in data["optimizer"]
                if "step_gpu_s" in p)
            self.bandwidth_curve = sorted((float(p["bytes"]), float(p["bandwidth"]))
                                          for p in data["bandwidth"])
            self.optimizer_curve = sorted((float(p["elements"]), float(p["step_s"]))
                                          for p in data["optimizer"])
            self.free_curve = sorted((float(p["elements"]), max(float(p["free_s"]), 1e-9))
                                     for p in data["optimizer"] if "free_s" in p)
            self.tables = {name: Table(t, self, name) for name, t in data["tables"].items()}
            self.compile = data.get("compile") or {}
            cache = data.get("cache") or {}
            self.l2_bytes = float(cache["l2_bytes"]) if cache.get("l2_bytes") else None
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError):
            # the schema admits only what this reads: a bug if it ever shows
            raise ProfileError("a malformed profile that passed its schema; make one with "
                               "`archcalc calibrate`", file=source or "profile") from None

    @property
    def summary(self) -> dict:
        d = self.data
        # a path from the command line may hold undecodable bytes (lone surrogates)
        source = self.source.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return {"file": source, "device": self.device, "device_name": self.device_name,
                "torch": d.get("torch"), "date": d.get("date"), "threads": d.get("threads"),
                "quick": d.get("quick", False),
                "measured_under_load": bool((d.get("trust") or {}).get("measured_under_load"))}

    def table(self, dtype: str, channels_last: bool, notes: list) -> "Table":
        name = dtype + ("-cl" if channels_last else "")
        if name in self.tables:
            return self.tables[name]
        if channels_last and dtype in self.tables:
            notes.append(f"the profile has no channels-last {dtype} table: rated as the "
                         f"{dtype} (NCHW) one")
            return self.tables[dtype]
        have = ", ".join(sorted(self.tables))
        raise ProfileError(f"the profile has no {name} table (it has: {have}); run "
                           f"`archcalc calibrate` without --quick on a device that supports "
                           f"{dtype}", file=self.source or "profile")

    def bandwidth(self, nbytes: float) -> float:
        """Bytes/s of a copy whose working set is `nbytes` (caches included)."""
        return interp(self.bandwidth_curve, max(nbytes, 1.0), log_y=True, flat=True)

    def optimizer_s(self, elements: float) -> float:
        """One SGD-momentum step on a parameter tensor of this many elements, and
        freeing its gradient (zero_grad(set_to_none=True))."""
        free = interp(self.free_curve, max(elements, 1.0), log_y=True) \
            * max(1.0, elements / self.free_curve[-1][0]) if self.free_curve else 0.0
        return loglog_time(self.optimizer_curve, max(elements, 1.0)) + free


def interp(points, x, log_y=False, flat=False):
    """Piecewise-linear in log x (and log y); beyond the ends the end value."""
    if x <= points[0][0]:
        return points[0][1]
    if x >= points[-1][0]:
        return points[-1][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            f = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) if x1 > x0 else 0
            if log_y:
                return math.exp(math.log(y0) + f * (math.log(y1) - math.log(y0)))
            return y0 + f * (y1 - y0)
    return points[-1][1]  # pragma: no cover - sorted points cover every x


def loglog_time(points, x, floor=None):
    """A time at size x from (size, time) points: log-log between them; past
    the largest, linear in the size (bandwidth-bound); below the smallest, the
    smallest's time (overhead-bound), or with a ``floor`` (the per-call
    overhead) that floor plus the smallest's work scaled down to x."""
    pts = [(s, max(t, 1e-9)) for s, t in points if s > 0]
    if not pts:
        return 0.0
    if x >= pts[-1][0]:
        return pts[-1][1] * x / pts[-1][0]
    if x <= pts[0][0]:
        if floor is None or floor >= pts[0][1]:
            return pts[0][1]
        return floor + (pts[0][1] - floor) * x / pts[0][0]
    return interp(pts, x, log_y=True)


def _log2(v):
    return math.log2(max(float(v), 1e-9))


def conv_class(kh, kw, sh, sw, cin, cout, groups):
    kernel = "1x1" if kh * kw == 1 else "3x3" if max(kh, kw) <= 3 else \
        "5x5" if max(kh, kw) <= 5 else "large"
    group = "depthwise" if groups > 1 and groups == cin else "grouped" if groups > 1 else "dense"
    return kernel, sh * sw > 1, group


def conv_features(kh, kw, sh, sw, cin, cout, ho, wo, groups, batch):
    m = batch * ho * wo
    if groups > 1 and groups == cin:   # depthwise: elements, channels, window
        return (_log2(m), _log2(cin), _log2(kh * kw))
    return (_log2(m), _log2(cout / groups), _log2(cin / groups * kh * kw))


def conv_flops(kh, kw, sh, sw, cin, cout, ho, wo, groups, batch):
    return 2 * batch * cout * ho * wo * (cin // groups) * kh * kw


@dataclass
class _Point:
    cls: tuple
    features: tuple
    log_forward: float
    log_backward: float | None
    log_forward_host: float | None = None    # a GPU profile: the host's launching
    log_backward_host: float | None = None


def _idw(points, cls, features, which, penalty):
    """Inverse-distance-weighted mean of log rates over the nearest points."""
    scored = []
    for p in points:
        value = getattr(p, which)
        if value is None:
            continue
        d2 = sum((a - b) ** 2 for a, b in zip(p.features, features)) + penalty(p.cls, cls)
        scored.append((d2, value))
    if not scored:
        return None
    scored.sort(key=lambda s: s[0])
    near = scored[:NEIGHBOURS]
    if near[0][0] < 1e-9:
        return math.exp(near[0][1])
    weights = [1.0 / (d2 + 0.05) for d2, _ in near]
    return math.exp(sum(w * v for w, (_, v) in zip(weights, near)) / sum(weights))


def _conv_penalty(a, b):
    return (KERNEL_PENALTY * (a[0] != b[0]) + STRIDE_PENALTY * (a[1] != b[1])
            + GROUP_PENALTY * (a[2] != b[2]))


def _no_penalty(a, b):
    return 0.0


class Table:
    """One dtype and memory format of a profile: conv and GEMM rates, op curves."""

    def __init__(self, t: dict, profile: Profile, name: str = "fp32"):
        self.name, self.planned = name, dict(t.get("planned") or {})
        # a GPU profile (split): rates from the kernels' own time, and the
        # host's launching beside them; a CPU's: the call's time, its overhead out
        split = profile.split
        o = {k: 0.0 for k in profile.overhead} if split else profile.overhead
        key = "_gpu_s" if split else "_s"

        def host(p, which):
            v = p.get(f"{which}_host_s")
            return math.log(max(float(v), 1e-9)) if split and v is not None else None

        self.convs = []
        for p in t.get("conv", []):
            kh, kw = p["kernel"]
            sh, sw = p["stride"]
            n = p["size"]
            ho = (n[0] + 2 * p["padding"][0] - kh) // sh + 1
            wo = (n[1] + 2 * p["padding"][1] - kw) // sw + 1
            dims = (kh, kw, sh, sw, p["cin"], p["cout"], ho, wo, p["groups"])
            flops = conv_flops(*dims, p["batch"])
            fwd = _rate(flops, p.get("forward" + key, p["forward_s"]), o["inference"])
            bwd = None
            if "backward_s" in p:
                bwd = _rate(flops * (2 if p.get("input_grad", True) else 1),
                            p.get("backward" + key, p["backward_s"]), o["backward"])
            self.convs.append(_Point(conv_class(*dims[:6], p["groups"]),
                                     conv_features(*dims, p["batch"]), fwd, bwd,
                                     host(p, "forward"), host(p, "backward")))
        self.linears = []
        for p in t.get("linear", []):
            flops = 2 * p["m"] * p["n"] * p["k"]
            fwd = _rate(flops, p.get("forward" + key, p["forward_s"]), o["inference"])
            bwd = _rate(2 * flops, p.get("backward" + key, p["backward_s"]), o["backward"]) \
                if "backward_s" in p else None
            self.linears.append(_Point((), (_log2(p["m"]), _log2(p["n"]), _log2(p["k"])),
                                       fwd, bwd, host(p, "forward"), host(p, "backward")))
        self.ops = {}
        for name, points in t.get("ops", {}).items():
            pts = sorted(points, key=lambda p: p["elements"])

            def curve(which, fallback=None, pts=pts):
                out = []
                for p in pts:
                    v = p.get(which + key, p.get(which + "_s"))
                    if v is None and fallback:
                        v = p.get(fallback + key, p.get(fallback + "_s"))
                    if v is not None:
                        out.append((p["elements"], v))
                return out

            def host_curve(which, pts=pts):   # > 0: interpolated in log space
                return [(p["elements"], max(float(p[f"{which}_host_s"]), 1e-9)) for p in pts
                        if f"{which}_host_s" in p]

            self.ops[name] = {
                "inference": curve("forward"),
                "train": curve("forward_train", "forward"),
                "backward": curve("backward"),
                "inference_host": host_curve("forward"),
                "train_host": host_curve("forward_train"),
                "backward_host": host_curve("backward"),
            }

    def conv_rate(self, dims, batch, which):
        cls = conv_class(*dims[:6], dims[8])
        return _idw(self.convs, cls, conv_features(*dims, batch), which, _conv_penalty)

    def linear_rate(self, m, n, k, which):
        return _idw(self.linears, (), (_log2(m), _log2(n), _log2(k)), which, _no_penalty)

    def op_curve(self, name, which, notes):
        seen = []
        while name and name not in self.ops:
            seen.append(name)
            name = op_relatives().get(name)
        if seen:
            note = f"op {seen[0]!r} is not in the profile: rated as {name!r}" if name else \
                f"op {seen[0]!r} is not in the profile: rated by the copy bandwidth"
            if note not in notes:
                notes.append(note)
        if not name:
            return None
        return self.ops[name][which] or self.ops[name]["inference"]


def _rate(flops, seconds, overhead):
    """FLOP/s of the work itself: the call's overhead taken out (at most half)."""
    return math.log(flops / max(seconds - overhead, seconds * 0.5, 1e-12))


def load_profile(name_or_path: str) -> Profile:
    """A profile from a JSON file, or a shipped profile by its name."""
    from . import names, resolve
    path = resolve(name_or_path)
    if not os.path.lexists(path):
        raise ProfileError(f"no such profile: {name_or_path} (make one with `archcalc "
                           f"calibrate -o FILE`; shipped: {', '.join(names()) or 'none'})")
    return Profile(read_json(path), source=path)
