"""Every registered kind against PyTorch, with no test written for the kind.

For each kind in the registry (a new kind is covered as soon as it
registers), hypothesis draws valid arguments from the kind's own argument
schema (``Arg`` type, min, max, choices; a kind may narrow a draw with
``arg_examples`` in its own file) and an input shape; the module the kind
builds is run on the meta device (on the CPU where an op has no meta kernel,
the shapes being tiny) and must agree with the engine on:

- the output shape (PyTorch's, per sample),
- the parameter count (``sum(p.numel())``),
- the MACs torch.utils.flop_counter.FlopCounterMode counts (FLOPs / 2),
  for every kind whose ``flop_counter_gap`` is empty; a kind whose MACs the
  counter does not see (it counts convolutions and matrix products only)
  states why in that attribute, in its own file.

A kind that cannot run alone (its input comes from elsewhere: a max unpool's
indices, a transformer's theta) states why in ``needs_context``; its
parameters are still compared. A few examples per kind by default; many more
with ARCHCALC_SLOW=1.
"""
from __future__ import annotations

import os
import sys

import pytest

pytest.importorskip("torch")
import torch  # noqa: E402
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from archcalc.errors import SpecError  # noqa: E402
from archcalc.layers import kinds  # noqa: E402
from archcalc.layers.base import REQUIRED  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import SLOW  # noqa: E402

KINDS = kinds()
EXAMPLES = 60 if SLOW else 4
BATCH = 2


def _value(arg, draw):
    """One value a spec could write for this argument, from its schema."""
    low = 0 if arg.min is None else arg.min
    if arg.choices:
        return draw(st.sampled_from(arg.choices))
    if arg.type == "int":
        return draw(st.integers(max(low, 0), max(low, 0) + 4))
    if arg.type == "pair":
        side = st.integers(max(low, 0), max(low, 0) + 2)
        return draw(st.one_of(side, st.lists(side, min_size=2, max_size=2)))
    if arg.type == "padding":
        return draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2),
                              st.lists(st.integers(0, 2), min_size=2, max_size=2)))
    if arg.type == "size":
        side = st.one_of(st.integers(1, 4), st.just("none"))
        return draw(st.lists(side, min_size=2, max_size=2))
    if arg.type == "bool":
        return draw(st.booleans())
    if arg.type == "float":
        high = arg.max if arg.max is not None else low + 1.0
        return draw(st.floats(float(low), float(min(high, low + 1.0)), allow_nan=False))
    raise LookupError(arg.type)  # a kind must give arg_examples for this argument


@st.composite
def _input_shape(draw, kind):
    chw = (draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    if kind.inputs == "chw":
        return chw
    tokens = (draw(st.integers(1, 6)), draw(st.integers(1, 4)) * 4)
    if kind.inputs == "tokens":
        return tokens
    return draw(st.sampled_from([chw, (draw(st.integers(1, 12)),)]))


@st.composite
def _case(draw, kind):
    """(arguments as a spec writes them, input shape): valid for the engine."""
    x = draw(_input_shape(kind))
    examples = getattr(kind, "arg_examples", {})
    given_args = {}
    for name, arg in kind.args.items():
        if name in examples:
            choice = draw(st.sampled_from(examples[name]))
            given_args[name] = choice(x) if callable(choice) else choice
        elif arg.default is REQUIRED or draw(st.booleans()):
            given_args[name] = _value(arg, draw)
    return given_args, x


def _engine(kind, given_args, x):
    """The engine's figures, or None where the engine refuses the arguments."""
    try:
        kind.check_input(x)
        a = kind.read_args(given_args, {})
        y = kind.output_shape(a, x)
        if any(d <= 0 for d in y):
            return None
        return a, y, kind.params(a, x), kind.macs(a, x, y)
    except SpecError:
        return None


def _run(module, x, device):
    module = module.to(device).eval()
    inp = torch.randn(BATCH, *x, device=device)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = module(inp)
    return tuple(out.shape[1:]), counter.get_total_flops()


def _build_and_run(kind, a, x):
    try:  # meta: nothing allocated, nothing computed
        with torch.device("meta"):
            module = kind.build(a, x)
        return module, _run(module, x, "meta")
    except (NotImplementedError, RuntimeError):
        module = kind.build(a, x)  # an op without a meta kernel: tiny shapes on the CPU
        return module, _run(module, x, "cpu")


CHECKED = [name for name, kind in KINDS.items() if not kind.not_built]


@pytest.mark.parametrize("name", CHECKED)
def test_kind_matches_pytorch(name):
    kind = KINDS[name]

    compared = []

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
    @given(_case(kind))
    def check(case):
        given_args, x = case
        engine = _engine(kind, given_args, x)
        assume(engine is not None)
        a, y, params, macs = engine
        compared.append((given_args, x, macs))
        if kind.needs_context:
            module = kind.build(a, x)
            assert sum(p.numel() for p in module.parameters()) == params
            return
        module, (shape, flops) = _build_and_run(kind, a, x)
        assert shape == tuple(y), (given_args, x)
        assert sum(p.numel() for p in module.parameters()) == params, (given_args, x)
        if not kind.flop_counter_gap:
            assert flops / 2 / BATCH == macs, (given_args, x)

    check()
    assert compared, "no valid arguments drawn: narrow the draw with arg_examples"
    if os.environ.get("ARCHCALC_SHOW_CASES"):
        print(name, compared)


def test_every_exclusion_gives_its_reason():
    """A kind left out of a comparison says why, in its own file."""
    for name, kind in KINDS.items():
        for reason in (kind.flop_counter_gap, kind.needs_context, kind.not_built):
            assert isinstance(reason, str)
            assert reason == "" or len(reason.split()) >= 4, (name, reason)


def test_the_comparison_covers_most_kinds():
    """Exclusions stay the exception: most kinds build, run and have their MACs counted."""
    counted = [n for n, k in KINDS.items()
               if not (k.flop_counter_gap or k.needs_context or k.not_built)]
    assert len(CHECKED) >= len(KINDS) - 2
    assert {"conv", "conv_transpose", "fc", "attention", "conv_table"} <= set(counted)


def test_companion_modules_stay_lazy():
    """Analysing never imports a kind's torch companion (nor torch)."""
    import subprocess
    code = ("import sys, archcalc.layers, archcalc.analysis\n"
            "print([m for m in sys.modules if m == 'torch' or m.endswith('_torch')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_every_custom_module_exports_on_its_own():
    """`archcalc export` copies a kind's module classes by their source: each
    resolves, is in export's list, and names no global beyond torch, nn, F and
    the builtins (a copied class that did would fail in the exported file)."""
    import ast
    import builtins
    import inspect

    from archcalc.torch.export import CUSTOM
    allowed = {"torch", "nn", "F", *dir(builtins)}
    for name, kind in KINDS.items():
        for cls in kind.module_classes():
            assert cls in CUSTOM, (name, cls)
            tree = ast.parse(inspect.getsource(cls))
            bound = {n.id for n in ast.walk(tree)
                     if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
            bound |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.arguments)
                      for a in n.args + n.kwonlyargs + n.posonlyargs}
            bound |= {n.name for n in ast.walk(tree)
                      if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
            bound |= {alias.asname or alias.name.split(".")[0] for n in ast.walk(tree)
                      if isinstance(n, (ast.Import, ast.ImportFrom)) for alias in n.names}
            loaded = {n.id for n in ast.walk(tree)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
            assert loaded <= allowed | bound, (cls.__name__, loaded - allowed - bound)
