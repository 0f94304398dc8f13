"""The contract every layer kind fulfils, its argument schema, and the registry.

A kind is a class that owns, for one layer type: its arguments (``args``),
shape rule (``output_shape``), parameter count, MACs, FLOPs, what autograd
keeps for backward (``saved``), its receptive-field window, and its PyTorch
builder (``build``, the only method that imports torch). Kinds are found
through ``REGISTRY``; adding a kind touches its own module and its tests.

Shapes are per sample: ``(C, H, W)`` or ``(F,)``. Numbers are ints, or sympy
expressions where a spec left a variable unbound (see ``archcalc.sym``).
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

from .. import limits, sym
from ..errors import SpecError
from ..spec.expr import evaluate, evaluate_value

REQUIRED = object()

Shape = tuple


# --------------------------------------------------------------------------
# argument schema


@dataclass(frozen=True)
class Arg:
    """One argument of a kind: how a spec value is read and checked."""
    type: str                 # int | pair | size | padding | bool | float | str | table
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple = ()
    min: int | float | None = None   # smallest allowed value (ints, floats, pairs)
    numeric: bool = False     # must be a number: no unbound variables
    max: float | None = None

    def read(self, kind: str, name: str, value, env) -> Any:
        received = f"Received: {name}={value!r}"
        if self.type in ("int", "pair"):
            if self.type == "pair" and isinstance(value, list):
                if len(value) != 2:
                    raise SpecError(f"{kind}: {name} takes one integer or a pair "
                                    f"[height, width]. {received}")
                return tuple(self._int(kind, name, v, env) for v in value)
            v = self._int(kind, name, value, env)
            return (v, v) if self.type == "pair" else v
        if self.type == "size":  # a pair whose entries may be "none" (keep that dimension)
            items = value if isinstance(value, list) else [value, value]
            if len(items) != 2:
                raise SpecError(f"{kind}: {name} takes one size or a pair [height, width]; "
                                f"\"none\" keeps that dimension. {received}")
            return tuple(None if isinstance(v, str) and v.strip().lower() == "none"
                         else Arg("int", min=self.min, numeric=self.numeric)._int(kind, name, v, env)
                         for v in items)
        if self.type == "padding":
            if isinstance(value, str) and value in ("same", "valid"):
                return value
            return Arg("pair", min=0).read(kind, name, value, env)
        if self.type == "bool":
            if not isinstance(value, bool):
                raise SpecError(f"{kind}: {name} takes true or false. {received}")
            return value
        if self.type == "float":
            if isinstance(value, str):
                # an expression of the variables: EfficientNet's per-variant dropout
                # and batch-norm eps, a stochastic-depth p from the block's index
                try:
                    value = evaluate_value(value, env)
                except SpecError as e:
                    raise SpecError(f"{kind}: {name}: {e.message}") from None
                if not isinstance(value, bool) and not isinstance(value, (int, float)):
                    free = ", ".join(sorted(str(s) for s in value.free_symbols))
                    raise SpecError(f"{kind}: {name} needs a number, but the variable(s) "
                                    f"{free} are unbound; bind them in [vars] or with "
                                    f"--set NAME=VALUE")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(f"{kind}: {name} takes a number. {received}")
            if not math.isfinite(value):
                raise SpecError(f"{kind}: {name} takes a finite number. {received}")
            if (self.min is not None and value < self.min) or \
                    (self.max is not None and value > self.max):
                raise SpecError(f"{kind}: {name} must lie in "
                                f"[{self.min}, {self.max}]. {received}")
            return float(value)
        if self.type == "str":
            if not self.choices and not isinstance(value, str):
                raise SpecError(f"{kind}: {name} takes a string"
                                + (f" ({self.doc})" if self.doc else "") + f". {received}")
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise SpecError(f"{kind}: {name} takes one of "
                                f"{', '.join(map(repr, self.choices))}. {received}")
            return value
        if self.type == "table":
            if not isinstance(value, list) or not value or not all(
                    isinstance(r, list) and r and all(type(i) is int for i in r) for r in value):
                raise SpecError(f"{kind}: {name} takes a non-empty list of non-empty lists "
                                f"of integers. {received}")
            return tuple(tuple(r) for r in value)
        raise AssertionError(f"unknown argument type {self.type}")  # a bug in a kind

    def _int(self, kind, name, value, env):
        received = f"Received: {name}={value!r}"
        if isinstance(value, str):
            try:
                v = evaluate(value, env)
            except SpecError as e:
                raise SpecError(f"{kind}: {name}: {e.message}") from None
        elif type(value) is int:
            v = limits.check_value(value, f"{kind}: {name}")
        elif hasattr(value, "free_symbols"):  # a sympy value handed on by the engine
            v = sym.norm(value)
        else:
            raise SpecError(f"{kind}: {name} takes an integer or an expression such as "
                            f"\"2*C\". {received}")
        if sym.is_symbolic(v):
            if self.numeric:
                free = ", ".join(sorted(str(s) for s in v.free_symbols))
                raise SpecError(f"{kind}: {name} needs a number, but the variable(s) {free} "
                                f"are unbound; bind them in [vars] or with --set NAME=VALUE")
            return v
        if self.min is not None and v < self.min:
            what = "positive" if self.min == 1 else f"at least {self.min}"
            raise SpecError(f"{kind}: {name} must be {what}. Received: {name}={v}"
                            + (f" (from {value!r})" if isinstance(value, str) else ""))
        return v


# --------------------------------------------------------------------------
# what autograd keeps for backward


@dataclass(frozen=True)
class Saved:
    """Tensors a training step keeps for this layer's backward pass.

    ``input``/``output``: the layer's input or output tensor (shared storages
    are counted once by the analysis). ``extra``: tensors the op creates only
    for backward, as (elements, bytes per element or None for the dtype size),
    e.g. max-pool indices (int64) or a dropout mask (bool). ``per_batch``:
    tensors whose size does not grow with the batch (batch-norm statistics),
    as (elements, bytes per element).
    """
    input: bool = False
    output: bool = False
    extra: tuple = ()
    per_batch: tuple = ()


NOTHING_SAVED = Saved()


# --------------------------------------------------------------------------
# what a layer costs a device (archcalc predict)


@dataclass(frozen=True)
class Cost:
    """One primitive a layer's forward pass runs, in the terms a device
    profile rates (``archcalc calibrate`` measures them, ``archcalc.predict``
    turns them into time). A kind returns one or several (``Kind.cost``).

    ``primitive``: ``"conv"`` (rated by the calibrated convolutions nearest
    in shape: ``conv`` gives kh, kw, sh, sw, cin, cout, hout, wout, groups),
    ``"linear"`` (a GEMM: ``gemm`` gives m per sample, n, k), ``"view"`` (no
    work: the per-op overhead only), or the name of a calibrated op table
    (``relu``, ``sigmoid``, ``batch_norm``, ``maxpool3s2``, ``cat``, ``copy``,
    ...), rated on ``elements`` per sample (the op's input unless the kind
    says otherwise) and multiplied by ``scale``. ``tensors``: the element
    counts of the parameter tensors the optimizer steps. ``train_only``: the
    op does nothing at inference (dropout). ``backward``: whether the op
    has a backward pass of its own. ``per_batch``: ``elements`` counts the
    whole step, not one sample (DropConnect's mask over the weights).
    """
    primitive: str
    elements: Any = 0
    scale: float = 1.0
    conv: tuple | None = None
    gemm: tuple | None = None
    tensors: tuple = ()
    train_only: bool = False
    backward: bool = True
    per_batch: bool = False


class NoCostModel(NotImplementedError):
    """A kind without a cost model: ``archcalc predict`` names it and stops
    (a time of 0, or a guess, would pass for a prediction)."""


# --------------------------------------------------------------------------
# the kind contract


class Weighted:
    """Mixin for conv-like and fc kinds: they count towards depth, a row may fuse
    a batch norm and an activation, and backward = input grad + weight grad."""
    weighted = True
    fusable = True
    autocast = "low"      # autocast runs convolutions and GEMMs in the low precision

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        forward = self.flops(a, x, y)
        return sym.norm(forward * (2 if needs_input_grad else 1))


class Kind:
    name: str = ""
    aliases: tuple[str, ...] = ()
    primary: str | None = None          # set by the shorthand {conv = 64}
    args: dict[str, Arg] = {}
    summary: str = ""
    flops_rule: str = "none"            # stated in `archcalc kinds` and the docs
    weighted: bool = False              # counts towards depth (conv, fc)
    nonlinear: bool = False             # counts as a nonlinearity (relu, tanh, maxout, ...)
    fusable: bool = False               # accepts batch_norm = true, activation = "relu"
    view: bool = False                  # output is a view of the input (flatten)
    # under torch.autocast: "low" casts its input to the low precision (convs,
    # GEMMs: a fp32 input is saved as its own cast copy, per consumer), "fp32"
    # computes in fp32 (its output is fp32), "follow" runs in its input's dtype
    autocast: str = "follow"
    inputs: str = "any"                 # "chw" | "tokens" | "any": what input rank it takes
    # names of the nn.Module classes torch.nn lacks that ``build`` returns,
    # defined in the companion module ``<family>_torch.py`` beside the kind's
    # file (``export`` copies them into exported files; see ``module_classes``)
    torch_classes: tuple[str, ...] = ()
    # im2col copies of the input a CPU forward makes (a slow-path conv
    # unfolds its input once; a locally connected layer twice): the memory check
    im2col_copies: int = 0
    # its one parameter may sit on the enclosing block (`flat = true`, as
    # torchvision's ViT keeps class_token on the encoder); its module then
    # says how export writes that forward (``flat_forward``, ``flat_init``)
    flat: bool = False
    # its padding pads a sliding window's input (fitted to the kernel when
    # inherited from [defaults], and a grown map is a warning); a transposed
    # conv's or an unpool's padding crops the output instead
    pads_input: bool = False
    # lint: a bias this kind adds is cancelled by a batch norm right after it
    bias_redundant_before_norm: bool = False
    # lint: it subtracts a per-channel mean, which cancels such a bias (batch norm)
    cancels_bias: bool = False
    # lint: a fully connected layer (its weights are what VGG's head is made of)
    fully_connected: bool = False
    # the memory check on a GPU: cuDNN's tensor-core kernels take this kind's
    # NCHW input and output in channels-last copies when its kernel is over 1x1
    cuda_layout_copies: bool = False
    # archcalc predict: for each op table its cost() names that a profile may
    # lack, the calibrated op nearest it (rated as that one, with a note)
    op_relatives: dict = {}
    # for tests/test_import_stages.py: why the module `build` returns does not
    # map back to this kind's row by a from_torch hook ("" = it does)
    not_mapped_back: str = ""
    # max pool indices (SegNet's unpools): a kind whose module can hand its
    # indices on, and the argument by which a kind names the pool it reads them from
    gives_indices: bool = False
    indices_from: str | None = None
    # its figures were measured on a PyTorch module (an imported opaque row), not
    # derived from a formula: the table marks its rows, the JSON says derived: false
    measured: bool = False
    # for tests/test_registry_kinds.py, which checks every kind against
    # PyTorch: why torch's FlopCounterMode does not see this kind's MACs (it
    # counts convolutions and matrix products only; "" = compare them), why
    # the kind cannot run alone (its input comes from elsewhere; "" = run it),
    # why it has no PyTorch module at all; and, per argument, example values
    # (or callables of the input shape) where the schema alone cannot draw one
    flop_counter_gap: str = ""
    needs_context: str = ""
    not_built: str = ""
    arg_examples: dict = {}

    # -- the rules -------------------------------------------------------
    def output_shape(self, a, x: Shape) -> Shape:
        return x

    def params(self, a, x: Shape) -> sym.Num:
        return 0

    def params_formula(self, a, x: Shape) -> str | None:
        """The arithmetic as a lecture writes it: ``(3*3*64)*128 + 128``."""
        return None

    def buffers(self, a, x: Shape) -> sym.Num:
        return 0

    def macs(self, a, x: Shape, y: Shape) -> sym.Num:
        return 0

    def flops(self, a, x: Shape, y: Shape) -> sym.Num:
        return 2 * self.macs(a, x, y)

    def backward_flops(self, a, x: Shape, y: Shape, needs_input_grad: bool = True) -> sym.Num:
        """FLOPs of this layer's backward pass. Elementwise kinds: as forward
        (one gradient per element). Weighted kinds override: a gradient for the
        input (skipped for the first layer, whose input needs none) and one for
        the weights, each as costly as the forward."""
        return self.flops(a, x, y)

    def window(self, a, x: Shape):
        """Receptive-field window: ((kh, kw) effective kernel, (sh, sw) stride)."""
        return (1, 1), (1, 1)

    def receptive_field(self, a, x: Shape, rf: tuple, jump: tuple) -> tuple[tuple, tuple]:
        """Size and jump after this layer: r' = r + (k - 1) * j, j' = j * s per axis."""
        (kh, kw), (sh, sw) = self.window(a, x)
        return ((sym.norm(rf[0] + (kh - 1) * jump[0]), sym.norm(rf[1] + (kw - 1) * jump[1])),
                (sym.norm(jump[0] * sh), sym.norm(jump[1] * sw)))

    def saved(self, a, x: Shape, y: Shape) -> Saved:
        return NOTHING_SAVED

    def autocast_mode(self, a, device: str) -> str:
        """What torch.autocast does with this op on ``device``: low, fp32 or follow."""
        return self.autocast

    def saved_autocast(self, a, x: Shape, y: Shape, device: str) -> Saved:
        """What a step keeps under torch.autocast on ``device``, where that
        differs from ``saved`` (tensors kept in fp32): by default the same."""
        return self.saved(a, x, y)

    def cost(self, a, x: Shape, y: Shape) -> tuple[Cost, ...]:
        """What the forward pass runs, for ``archcalc predict``, as primitives
        a device profile rates. Every kind states its own, beside its FLOPs
        rule; a kind that does not is refused by predict, by name."""
        raise NoCostModel(f"kind {self.name!r} has no cost model")

    def shares_storage(self, a) -> bool:
        """The output lives in the input's storage (a view, or an in-place op)."""
        return self.view

    def allocates(self, a) -> bool:
        """Whether a forward pass at inference allocates this layer's output."""
        return not self.shares_storage(a)

    def size_arithmetic(self, a, x: Shape) -> list[str]:
        """How the output size comes about, with the numbers put in."""
        return []

    def macs_formula(self, a, x: Shape, y: Shape) -> str | None:
        """The multiply-accumulates as a product, e.g. (56*56*256)*(3*3*128)."""
        return None

    def macs_missed_by(self, a, x: Shape, y: Shape) -> dict:
        """MACs a peer tool cannot count, by peer ("fvcore"), with the reason:
        `check` leaves them out of that peer's expected count and says so."""
        return {}

    def check_references(self, a, x: Shape, find) -> None:
        """Check layers this one names (a max unpool's pool). ``find(name)``
        returns (kind name, input shape, output shape) of an earlier row."""

    def findings(self, a, x: Shape) -> list[str]:
        """Non-fatal remarks (a layer that does not tile its input)."""
        return []

    def pointwise(self, a) -> bool:
        """lint: a 1x1 conv at stride 1 over all its input channels (it mixes
        channels only)."""
        return False

    def depthwise(self, a, x: Shape) -> bool:
        """lint: one filter per input channel (MobileNet's depthwise conv)."""
        return False

    def im2col_columns(self, a, x: Shape, y: Shape) -> sym.Num:
        """Elements of one unfolded copy a slow-path CPU forward makes (the
        memory check counts ``im2col_copies`` of them): the windows of every
        output position gathered, kh*kw*C_in per position."""
        kh, kw = a.kernel
        return sym.norm(kh * kw * x[0] * y[1] * y[2])

    def module_classes(self) -> tuple:
        """The classes named by ``torch_classes``, from the kind's companion
        module (imports torch: call it only where torch is wanted)."""
        if not self.torch_classes:
            return ()
        import importlib
        companion = importlib.import_module(type(self).__module__ + "_torch")
        return tuple(getattr(companion, name) for name in self.torch_classes)

    def build(self, a, x: Shape):  # pragma: no cover - each kind overrides
        raise NotImplementedError(f"{self.name} has no PyTorch builder yet")

    # -- helpers shared by all kinds ------------------------------------
    def read_args(self, given: dict, env) -> SimpleNamespace:
        values = {}
        for key, value in given.items():
            if key not in self.args:
                close = difflib.get_close_matches(key, self.args, n=2)
                hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
                known = ", ".join(sorted(self.args)) or "none"
                raise SpecError(f"{self.name} has no argument {key!r}{hint}; "
                                f"its arguments are: {known}")
            values[key] = self.args[key].read(self.name, key, value, env)
        for key, arg in self.args.items():
            if key not in values:
                if arg.default is REQUIRED:
                    hint = (f" (write {{{self.name} = ...}} or {key} = ...)"
                            if key == self.primary else "")
                    raise SpecError(f"{self.name} needs the argument {key!r}{hint}")
                values[key] = (None if arg.default is None
                               else arg.read(self.name, key, arg.default, env))
        return SimpleNamespace(**values)

    def check_input(self, x: Shape) -> None:
        if self.inputs == "chw" and len(x) != 3:
            raise SpecError(f"{self.name} needs a C x H x W input, but its input is "
                            f"{fmt_shape(x)}; it cannot follow a flatten or fc layer")
        if self.inputs == "tokens" and len(x) != 2:
            raise SpecError(f"{self.name} needs tokens (N x D), but its input is "
                            f"{fmt_shape(x)}; put a `tokens` row first")


def fmt_shape(shape: Shape) -> str:
    return " x ".join(sym.fmt_int(d) for d in shape)


# --------------------------------------------------------------------------
# the registry


REGISTRY: dict[str, Kind] = {}
_CANONICAL: dict[str, Kind] = {}


def register(kind_cls: Callable[[], Kind]):
    """Class decorator: one instance per kind, found by its name and aliases."""
    kind = kind_cls()
    for key in (kind.name, *kind.aliases):
        if key in REGISTRY:  # two kinds claiming one name is a bug, caught at import
            raise RuntimeError(f"layer kind name {key!r} registered twice")
        REGISTRY[key] = kind
    _CANONICAL[kind.name] = kind
    return kind_cls


def kinds() -> dict[str, Kind]:
    """Canonical name -> kind, in registration order."""
    return dict(_CANONICAL)


def lookup(name: str) -> Kind:
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
            "; `archcalc kinds` lists them"
        raise SpecError(f"unknown layer kind {name!r}{hint}") from None


# --------------------------------------------------------------------------
# size arithmetic shared by conv and pool kinds


def sliding_output(n, f, s, p, d=1, ceil_mode=False):
    """floor((N + 2P - D(F-1) - 1) / S) + 1, as PyTorch computes it.

    With ceil_mode the last window may start in the padding but not past it
    (PyTorch drops a window that would start there).
    """
    span = n + 2 * p - d * (f - 1) - 1
    if not ceil_mode:
        return sym.norm(sym.floordiv(span, s) + 1)
    out = sym.ceildiv(span, s) + 1
    if isinstance(out, int) and (out - 1) * s >= n + p:
        out -= 1
    return sym.norm(out)


def same_padding(f, d=1):
    """Padding that keeps the size at stride 1 (PyTorch's padding='same')."""
    total = d * (f - 1)
    return total // 2 if isinstance(total, int) else sym.floordiv(total, 2)


def dropped_rows(n, f, s, p, d, p_after=None):
    """How many real input rows a sliding window never reaches at the end.

    The windows leave the last (N + 2P - F) mod S rows of the padded input
    uncovered. When those are padding only (every stride-2 ResNet conv)
    nothing is lost. A kernel smaller than its stride skips rows everywhere
    by design (a 1x1 stride-2 projection), so it is not judged here either.
    Returns 0 when the layer tiles its input, None when sizes are symbolic.
    """
    p_after = p if p_after is None else p_after
    if not all(isinstance(v, int) for v in (n, f, s, p, d, p_after)):
        return None
    fe = d * (f - 1) + 1
    span = n + p + p_after - fe
    if span < 0 or fe < s:
        return 0
    return max(0, span % s - p_after)


def sliding_arithmetic(x, kernel, stride, pads, dilation, ceil_mode=False) -> list[str]:
    """(N - F + 2P)/S + 1 per axis with the numbers put in (one line when both agree)."""
    lines = []
    for n, f, s, p, d, axis in zip(x[1:], kernel, stride, pads, dilation, ("height", "width")):
        fe = sym.norm(d * (f - 1) + 1)
        p_text = sym.plain(p)
        exact = (n - fe + 2 * p) / s + 1 if all(isinstance(v, int) for v in (n, fe, p, s)) else None
        out = sliding_output(n, f, s, p, d, ceil_mode)
        rnd = "ceil" if ceil_mode else "floor"
        value = sym.fmt_int(out)
        if exact is not None and exact != int(exact):
            value = f"{rnd}({exact:.2f}) = {value}"
        dil = f" (F = D(F - 1) + 1 = {sym.plain(d)}*({sym.plain(f)} - 1) + 1)" if d != 1 else ""
        lines.append((axis, f"(N - F + 2P)/S + 1 = ({sym.plain(n)} - {sym.plain(fe)} + 2*{p_text})"
                            f"/{sym.plain(s)} + 1 = {value}{dil}"))
    if len(lines) == 2 and lines[0][1] == lines[1][1]:
        return [lines[0][1]]
    return [f"{axis}: {text}" for axis, text in lines]


def tiling_remarks(x, kernel, stride, pads, dilation) -> list[str]:
    """The lecture's check, (N - F + 2P)/S + 1 must be an integer, where input is lost."""
    found = []
    for n, f, s, p, d, axis in zip(x[1:], kernel, stride, pads, dilation, ("height", "width")):
        lost = dropped_rows(n, f, s, p, d)
        if lost:
            fe = d * (f - 1) + 1
            found.append((axis, f"({n} - {fe} + 2*{p})/{s} + 1 = {(n - fe + 2 * p) / s + 1:.2f}"
                          + (f" (dilated kernel {fe})" if d != 1 else ""), lost))
    if len(found) == 2 and found[0][1:] == found[1][1:]:
        (_, arithmetic, lost), = found[:1]
        unit = "row and column" if lost == 1 else "rows and columns"
        found = [("height and width", arithmetic, lost, unit)]
    else:
        found = [(axis, arithmetic, lost, ("row" if axis == "height" else "column")
                  + ("s" if lost > 1 else "")) for axis, arithmetic, lost in found]
    return [f"does not tile its input along {axis}: (N - F + 2P)/S + 1 = {arithmetic}; "
            f"the last {lost} input {unit} {'is' if lost == 1 else 'are'} never covered"
            for axis, arithmetic, lost, unit in found]
