"""The device profile's schema: every field `archcalc calibrate` writes, its
type and range, checked once when a profile is read (``validate``), so that
the prediction code can trust what it reads and a hand-edited or hostile
profile gets one line naming the file and the field:

    p.json: field tables.fp32.conv[3].stride: must be two integers from 1 to 1024. Received: [0, 0]

Ranges are wide (a measured time up to an hour, a bandwidth up to 10^18 B/s)
but closed, so every quantity the prediction derives from them stays finite:
JSON output never carries NaN or Infinity. Fields not listed here are allowed
(newer profiles add keys) and only checked for finite numbers and valid text.
``markdown()`` writes the field reference of docs/profiles.md from this module.
"""
from __future__ import annotations

import json
import math
import re

from .. import limits
from ..errors import SpecError

PROFILE_FORMAT = "archcalc-device-profile"
PROFILE_VERSION = 1
TABLE_NAME = re.compile(r"(fp32|bf16|fp16)(-cl)?")
DTYPE_NAME = re.compile(r"fp32|bf16|fp16")
OP_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_INT = 10 ** 18       # no count or size in a profile is larger
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class ProfileError(SpecError):
    """A profile that is not what `archcalc calibrate` writes (exit 2)."""


def parse_table_names(text: str, option: str = "--tables") -> list[str]:
    """A comma-separated list of table names (fp32, bf16-cl, ...), each once:
    a repeated name would time it twice into one table."""
    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not names or not all(TABLE_NAME.fullmatch(t) for t in names):
        raise SpecError(f"{option} takes dtypes fp32, bf16, fp16, each optionally with "
                        f"-cl (channels-last). Received: {text!r}")
    return names

def _show(value) -> str:
    """A value as the message quotes it: JSON-like, escaped, short."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        # str() of an int past 4,300 digits is refused: count those roughly
        digits = len(str(value)) if value.bit_length() < 14000 else "thousands of"
        return f"an integer of {digits} digits"
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except (ValueError, RecursionError):   # pragma: no cover - depth is bounded on read
        text = type(value).__name__
    return text if len(text) <= 60 else text[:50] + "... (truncated)"


# --------------------------------------------------------------------------
# field types: each checks a value and says what it must be


class Field:
    what = "anything"

    def check(self, value, path: str) -> None:
        _generic(value, path)

    def fail(self, path, value, what=None):
        raise ProfileError(f"field {path}: must be {what or self.what}. "
                           f"Received: {_show(value)}")


class Num(Field):
    """A finite number in [lo, hi] (lo excluded with ``positive``)."""

    def __init__(self, lo, hi, unit="", integer=False, positive=False):
        self.lo, self.hi, self.unit, self.integer, self.positive = lo, hi, unit, integer, positive
        kind = "an integer" if integer else "a number"
        low = f"above {_num(lo)}" if positive else f"from {_num(lo)}"
        self.what = f"{kind} {low} to {_num(hi)}{' ' + unit if unit else ''}" if lo != hi \
            else f"{_num(lo)}"

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(path, value)
        if self.integer and not isinstance(value, int):
            self.fail(path, value)
        if isinstance(value, int) and abs(value) > MAX_INT:   # before float(): no overflow
            self.fail(path, value)
        if not math.isfinite(value):
            self.fail(path, value, f"a finite number ({self.what})")
        if value < self.lo or value > self.hi or (self.positive and value <= self.lo):
            self.fail(path, value)


def _num(x) -> str:
    """1,048,576 rather than 1.04858e+06; 1e+18 stays short."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


def Int(lo, hi, unit=""):
    return Num(lo, hi, unit, integer=True)


class Pair(Field):
    def __init__(self, item: Num):
        self.item = item
        self.what = f"two integers from {_num(item.lo)} to {_num(item.hi)}"

    def check(self, value, path):
        if not isinstance(value, list) or len(value) != 2:
            self.fail(path, value)
        for v in value:
            try:
                self.item.check(v, path)
            except ProfileError:
                self.fail(path, value)


class Text(Field):
    """A string: valid Unicode (no lone surrogates), at most ``size``
    characters; ``plain``: no control characters (shown on a terminal);
    ``pattern`` or ``choices``: the values allowed."""

    def __init__(self, size=200, plain=False, choices=None, pattern=None):
        self.size, self.plain, self.choices, self.pattern = size, plain, choices, pattern
        self.what = ("one of " + ", ".join(map(repr, choices)) if choices else
                     f"a name matching {pattern.pattern}" if pattern else
                     f"{'plain text (no control characters)' if plain else 'text'} of at "
                     f"most {size} characters")

    def check(self, value, path):
        if not isinstance(value, str):
            self.fail(path, value)
        _text(value, path)
        if len(value) > self.size or (self.plain and _CONTROL.search(value)) or \
                (self.choices and value not in self.choices) or \
                (self.pattern and not self.pattern.fullmatch(value)):
            self.fail(path, value)


class Flag(Field):
    what = "true or false"

    def check(self, value, path):
        if not isinstance(value, bool):
            self.fail(path, value)


class Nullable(Field):
    def __init__(self, inner: Field):
        self.inner = inner
        self.what = f"null or {inner.what}"

    def check(self, value, path):
        if value is not None:
            self.inner.check(value, path)


class List(Field):
    def __init__(self, item: Field, least=0, most=None):
        self.item, self.least, self.most = item, least, most
        self.what = (f"a list of at least {least} item{'s' if least > 1 else ''}, each "
                     if least else "a list, each item ") + getattr(item, "noun", item.what)

    def check(self, value, path):
        if not isinstance(value, list):
            self.fail(path, value)
        if len(value) < self.least:
            self.fail(path, value, f"a list of at least {self.least} item"
                                   f"{'s' if self.least > 1 else ''}")
        most = limits.MAX_PROFILE_POINTS.value if self.most is None else self.most
        if len(value) > most:
            if self.most is None:
                raise ProfileError(str(limits.MAX_PROFILE_POINTS.exceeded(
                    f"field {path}: {len(value):,} items")))
            self.fail(path, value)
        for i, v in enumerate(value):
            self.item.check(v, f"{path}[{i}]")


class Obj(Field):
    """A JSON object: its known fields (name -> (Field, required)); other keys
    ending in ``_s`` are times; any other key is free (checked generically)."""

    def __init__(self, noun: str, fields: dict, extra_times=True, rule=None):
        self.noun, self.fields, self.extra_times, self.rule = noun, fields, extra_times, rule
        self.what = f"an object ({noun})"

    def check(self, value, path):
        if not isinstance(value, dict):
            self.fail(path, value)
        for name, (field, required) in self.fields.items():
            if name in value:
                field.check(value[name], _join(path, name))
            elif required:
                raise ProfileError(f"field {_join(path, name)}: missing "
                                   f"({field.what}) in {self.noun}")
        for name, v in value.items():
            if name in self.fields:
                continue
            _text(name, path)
            if self.extra_times and name.endswith("_s"):
                TIME.check(v, _join(path, name))
            else:
                _generic(v, _join(path, name))
        if self.rule:
            self.rule(value, path)


class Map(Field):
    """An object whose keys are names (``key``) and whose values are ``value``."""

    def __init__(self, noun: str, key: Text, value: Field, least=0):
        self.key, self.value, self.least = key, value, least
        self.what = f"an object of {noun}"

    def check(self, value, path):
        if not isinstance(value, dict) or len(value) < self.least:
            self.fail(path, value, self.what + (" (at least one)" if self.least else ""))
        limits.MAX_PROFILE_POINTS.check(len(value), f"field {path}: {len(value):,} names")
        for name, v in value.items():
            try:
                self.key.check(name, path)
            except ProfileError:
                raise ProfileError(f"field {path}: the name {_show(name)} is not "
                                   f"{self.key.what}") from None
            self.value.check(v, _join(path, name))


def _join(path, name):
    return f"{path}.{name}" if path else name


def _text(value: str, path: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProfileError(f"field {path or '<top>'}: text with a lone surrogate "
                           "(not valid Unicode)") from None


def _generic(value, path) -> None:
    """A field this schema does not list: finite numbers, valid text (iterative:
    the depth is bounded on read)."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            if abs(v) > MAX_INT:
                raise ProfileError(f"field {p}: must be an integer of at most 18 digits. "
                                   f"Received: {_show(v)}")
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ProfileError(f"field {p}: must be a finite number. Received: {_show(v)}")
        elif isinstance(v, str):
            _text(v, p)
        elif isinstance(v, list):
            stack += [(x, f"{p}[{i}]") for i, x in enumerate(v)]
        elif isinstance(v, dict):
            for k, x in v.items():
                _text(k, p)
                stack.append((x, _join(p, k)))


# --------------------------------------------------------------------------
# the profile

TIME = Num(0, 3600, "seconds")             # one timed call: never an hour
RATE = Num(1, 1e18, "per second")         # at least 1/s: bytes / rate stays finite
SIZE = Num(1, 2 ** 50, "elements or bytes")
DIM = Int(1, 2 ** 20)
LOAD = Nullable(List(Num(0, 1e6), 1, 3))
NOTES = List(Text(500), most=1000)


def _conv_rule(p, path):
    """A conv point whose shape PyTorch would refuse has no rate."""
    for name in ("cin", "cout"):
        if p[name] % p["groups"]:
            raise ProfileError(f"field {path}.groups: must divide cin and cout. Received: "
                               f"groups {p['groups']}, cin {p['cin']}, cout {p['cout']}")
    for i in (0, 1):
        if p["size"][i] + 2 * p["padding"][i] < p["kernel"][i]:
            raise ProfileError(f"field {path}.kernel: larger than the padded input "
                               f"(size {p['size']}, padding {p['padding']}). "
                               f"Received: {p['kernel']}")


CONV_POINT = Obj("a conv point", {
    "kernel": (Pair(Int(1, 1024)), True), "stride": (Pair(Int(1, 1024)), True),
    "padding": (Pair(Int(0, 1024)), True), "cin": (DIM, True), "cout": (DIM, True),
    "size": (Pair(Int(1, 2 ** 16)), True), "groups": (DIM, True), "batch": (DIM, True),
    "depthwise": (Flag(), False), "input_grad": (Flag(), False),
    "forward_s": (TIME, True), "backward_s": (TIME, False),
}, rule=_conv_rule)
LINEAR_POINT = Obj("a GEMM point", {
    "m": (Int(1, 2 ** 31), True), "k": (Int(1, 2 ** 31), True), "n": (Int(1, 2 ** 31), True),
    "forward_s": (TIME, True), "backward_s": (TIME, False),
})
OP_POINT = Obj("an op point", {
    "elements": (SIZE, True), "shape": (List(Int(1, 2 ** 31), 1, 8), False),
    "forward_s": (TIME, True), "forward_train_s": (TIME, False), "backward_s": (TIME, False),
})
COUNTS = Obj("counts per family", {k: (Int(0, MAX_INT), False) for k in ("conv", "linear", "ops")},
             extra_times=False)
TABLE = Obj("a table", {
    "conv": (List(CONV_POINT), True), "linear": (List(LINEAR_POINT), True),
    "ops": (Map("op curves by op name (relu, batch_norm, ...)", Text(pattern=OP_NAME),
                 List(OP_POINT, 1)), True),
    "planned": (COUNTS, False), "skipped": (Int(0, MAX_INT), False),
    "failed": (NOTES, False),
})
PROFILE = Obj("the profile", {
    "format": (Text(choices=(PROFILE_FORMAT,)), True),
    "version": (Int(PROFILE_VERSION, PROFILE_VERSION), True),
    "device": (Text(choices=("cpu", "cuda")), True),
    "device_name": (Text(200, plain=True), False),
    "torch": (Text(100, plain=True), False),
    "date": (Text(100, plain=True), False),
    "threads": (DIM, False),
    "quick": (Flag(), False),
    "budget_s": (Num(0, 1e7, "seconds", positive=True), False),
    "timing": (Text(500), False),
    "clock": (Text(choices=("wall", "cpu")), False),
    "host": (Obj("the host", {"platform": (Text(500), False), "cpu_count": (DIM, False),
                              "load_before": (LOAD, False), "load_after": (LOAD, False)},
                 extra_times=False), False),
    "overhead": (Obj("the per-op overhead", {k: (TIME, True) for k in (
        "forward_s", "forward_train_s", "backward_s")} | {"how": (Text(500), False)}), True),
    "cache": (Nullable(Obj("the caches", {"l2_bytes": (Int(0, 2 ** 50), False),
                                          "how": (Text(500), False)})), False),
    "bandwidth": (List(Obj("a bandwidth point", {
        "bytes": (SIZE, True), "bandwidth": (RATE, True), "best_bandwidth": (RATE, False)}),
        1), True),
    "peak": (Map("peaks by dtype (fp32, bf16, fp16)", Text(pattern=DTYPE_NAME), Obj("a peak", {
        "flops_per_s": (RATE, True),
        "gemms": (List(Obj("a GEMM", {"n": (DIM, True), "flops_per_s": (RATE, True)})),
                  False)})), False),
    "optimizer": (List(Obj("an optimizer point", {
        "elements": (SIZE, True), "step_s": (TIME, True)}), 1), True),
    "tables": (Map("tables by name (fp32, bf16 or fp16; -cl: channels-last)",
                    Text(pattern=TABLE_NAME), TABLE, least=1), True),
    "compile": (Nullable(Obj("the torch.compile measurement", {"skipped": (Text(500), False)} | {
        mode: (Obj(f"torch.compile in {mode}", {
            "speedup": (Num(0, 1e6, positive=True), True),
            "elementwise_factor": (Num(0, 1), True)}), False)
        for mode in ("inference", "train")})), False),
    "trust": (Obj("the trust record", {
        "measured_under_load": (Flag(), True), "reasons": (NOTES, False),
        "sanity": (NOTES, False), "spread": (Num(0, 1e6), False),
        "load_limit": (Num(0, 1e6), False)}, extra_times=False), False),
    "elapsed_s": (Num(0, 1e7, "seconds"), False),
    "wall_s": (Num(0, 1e7, "seconds"), False),
})


def validate(data, source: str = "") -> None:
    """Raise ProfileError (naming ``source`` and the field) unless ``data`` is
    a profile this archcalc reads. Format and version first: a file that is no
    profile at all, or an older one, is told so rather than its first field."""
    where = source or "profile"
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"not an archcalc device profile (no \"format\": "
                           f"\"{PROFILE_FORMAT}\"); make one with `archcalc calibrate`",
                           file=where)
    if data.get("version") != PROFILE_VERSION:
        raise ProfileError(f"profile version {_show(data.get('version'))}; this archcalc "
                           f"reads version {PROFILE_VERSION}: run `archcalc calibrate` again",
                           file=where)
    try:
        PROFILE.check(data, "")
    except SpecError as e:   # a ProfileError, or a limit's
        raise e.at(file=where) from None


# --------------------------------------------------------------------------
# reading


def read_json(path: str, what: str = "profile") -> object:
    """A JSON file from a stranger, read through archcalc.inputs (a regular
    file only: a FIFO would block, /dev/zero fill memory; at most
    ARCHCALC_MAX_PROFILE_BYTES), nested at most ARCHCALC_MAX_PROFILE_DEPTH
    levels. NaN and Infinity parse here and are refused by the schema, which
    names their field. Every failure a SpecError naming the file."""
    from ..inputs import read_input_text
    text = read_input_text(path, f"a device {what}", limits.MAX_PROFILE_BYTES)
    try:
        data = json.loads(text)
    except RecursionError:
        raise limits.MAX_PROFILE_DEPTH.exceeded("nests too deeply").at(file=path) from None
    except ValueError as e:   # invalid JSON; an integer of over 4,300 digits
        raise ProfileError(f"not a readable {what} (invalid JSON: {str(e)[:100]})",
                           file=path) from None
    depth = _depth(data)
    if depth > limits.MAX_PROFILE_DEPTH.value:
        raise limits.MAX_PROFILE_DEPTH.exceeded(f"nests {depth} levels").at(file=path)
    return data


def _depth(data) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (list, dict)):
            deepest = max(deepest, d)
            stack += [(x, d + 1) for x in (v.values() if isinstance(v, dict) else v)]
    return deepest


# --------------------------------------------------------------------------
# the reference page


def markdown() -> str:
    """The field reference (docs/profiles.md's generated part): one row per
    field, its path, whether it is required, and what it must be."""
    rows = ["| field | required | must be |", "|---|---|---|"]

    def walk(field, path):
        if isinstance(field, Nullable):
            field = field.inner
        if isinstance(field, Obj):
            for name, (f, required) in field.fields.items():
                rows.append(f"| `{_join(path, name)}` | {'yes' if required else 'no'} | "
                            f"{_md(f.what)} |")
                walk(f, _join(path, name))
            if field.extra_times:
                rows.append(f"| `{_join(path, '*_s')}` | no | {_md(TIME.what)} |")
        elif isinstance(field, List):
            walk(field.item, path + "[]")
        elif isinstance(field, Map):
            walk(field.value, _join(path, "<name>"))

    walk(PROFILE, "")
    return "\n".join(rows) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


if __name__ == "__main__":   # python -m archcalc.profiles.schema: docs/profiles.md's table
    print(markdown(), end="")
