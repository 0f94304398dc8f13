"""Elementwise activations, softmax and dropout.

Each activation states its FLOPs per element (one per arithmetic operation of
its textbook formula; exp, log, tanh and erf count one each; min and max one
each) and which tensor its backward needs: PyTorch keeps the output of relu,
tanh, sigmoid and softmax, and the input of leaky relu, prelu, elu, softplus,
gelu, relu6, hardswish, hardsigmoid, silu and mish. An in-place op whose
backward needs its input keeps a copy of it (autograd clones it before
overwriting), so in place saves forward memory there, not backward memory.
"""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, kinds, register

BOOL = 1


class Elementwise(Kind):
    nonlinear = True
    per_element = 1
    keeps = "output"          # which tensor the backward needs
    torch_name = ""
    torch_args: tuple[str, ...] = ()
    # cost (archcalc predict): the calibrated op table it is rated by, and a
    # multiple of that op's time: piecewise-linear kinds run like relu,
    # exp/tanh/erf kinds like sigmoid (memory-bound at CNN sizes either way)
    primitive = "relu"
    primitive_scale = 1.0
    fused_aliases: tuple[str, ...] = ()   # other names a row's activation = "..." accepts
    learned = False                       # has parameters (prelu)

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * self.per_element)

    def cost(self, a, x, y):
        p = self.params(a, x)
        return (Cost(self.primitive, elements=sym.prod(x), scale=self.primitive_scale,
                     tensors=(p,) if p else ()),)

    def saved(self, a, x, y):
        return Saved(input=self.keeps == "input", output=self.keeps == "output")

    def shares_storage(self, a):
        return bool(getattr(a, "inplace", False))

    def build(self, a, x):
        from torch import nn
        kwargs = {k: getattr(a, k) for k in self.torch_args}
        return getattr(nn, self.torch_name)(**kwargs)

    # torch attributes the kind cannot express: a module with another value has no mapping
    torch_fixed: dict = {}

    def from_torch(self, call, m):
        """nn.<torch_name> -> this activation, its torch_args read back (a module's
        inplace as it is: nn.ReLU() is not in place, the kind's default is)."""
        from .from_torch import NoMapping, row
        for key, value in self.torch_fixed.items():
            if getattr(m, key) != value:
                raise NoMapping(f"{type(m).__name__} with {key}={getattr(m, key)}")
        args = {}
        for key in self.torch_args:
            v = getattr(m, key)
            args[key] = float(v) if self.args[key].type == "float" else v
        return row(self.name, **args)


def activation(name, *, per_element, keeps, torch_name, summary, aliases=(),
               args=None, torch_args=(), primitive="relu", primitive_scale=1.0,
               fused_aliases=(), op_relatives=None):
    """Define and register one elementwise activation kind; ``primitive``: the
    calibrated op whose time it takes (times ``primitive_scale``);
    ``op_relatives``: that op's nearest relative, where a profile lacks it."""
    cls = type(name.title().replace("_", ""), (Elementwise,), {
        "name": name, "aliases": aliases, "per_element": per_element, "keeps": keeps,
        "torch_name": torch_name, "torch_args": torch_args, "summary": summary,
        "flops_rule": f"{per_element} per element",
        "args": args or {}, "primitive": primitive, "primitive_scale": primitive_scale,
        "fused_aliases": fused_aliases, "op_relatives": op_relatives or {},
        "torch_modules": (f"torch.nn.{torch_name}",),   # from_torch maps them back
    })
    register(cls)
    return cls


INPLACE = {"inplace": Arg("bool", True, doc="in place, as torchvision does (saves memory)")}

activation("relu", per_element=1, keeps="output", torch_name="ReLU", args=INPLACE,
           op_relatives={"relu": "copy"},
           torch_args=("inplace",), summary="max(0, x)")
activation("leaky_relu", per_element=2, keeps="input", torch_name="LeakyReLU",
           aliases=("leakyrelu",), torch_args=("negative_slope",),
           args={"negative_slope": Arg("float", 0.01)}, summary="x if x > 0 else slope*x")
activation("elu", per_element=4, keeps="input", torch_name="ELU", primitive="sigmoid",
           args={"alpha": Arg("float", 1.0)}, torch_args=("alpha",),
           summary="x if x > 0 else alpha*(exp(x) - 1)")
activation("tanh", per_element=1, keeps="output", torch_name="Tanh", summary="tanh(x)",
           primitive="sigmoid")
activation("sigmoid", per_element=3, keeps="output", torch_name="Sigmoid", primitive="sigmoid",
           op_relatives={"sigmoid": "relu"},
           summary="1 / (1 + exp(-x))")
SOFTPLUS = activation(
    "softplus", per_element=5, keeps="input", torch_name="Softplus", primitive="sigmoid",
    args={"beta": Arg("float", 1.0)}, torch_args=("beta",),
    summary="log(1 + exp(beta*x)) / beta")
SOFTPLUS.torch_fixed = {"threshold": 20}   # torch's linear tail past beta*x > 20


@register
class Gelu(Elementwise):
    name = "gelu"
    torch_name = "GELU"
    summary = "x * Phi(x): erf form, or approximate = \"tanh\""
    keeps = "input"
    per_element = 5
    primitive = "gelu"
    op_relatives = {"gelu": "sigmoid"}
    TANH_PER_ELEMENT = 9
    flops_rule = ("5 per element (x/sqrt2, erf, +1, *0.5, *x); tanh approximation: 9 "
                  "(x^3 2, *0.044715, +x, *sqrt(2/pi), tanh, +1, *0.5, *x)")
    args = {"approximate": Arg("str", "none", choices=("none", "tanh"),
                               doc="'tanh': 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))")}

    def flops(self, a, x, y):
        per = self.TANH_PER_ELEMENT if a.approximate == "tanh" else self.per_element
        return sym.norm(sym.prod(y) * per)

    def build(self, a, x):
        from torch import nn
        return nn.GELU(approximate=a.approximate)

    torch_modules = ("torch.nn.GELU",)   # from_torch (Elementwise's) reads them
    torch_args = ("approximate",)


# torchvision's Conv2dNormActivation runs these in place (MobileNet, EfficientNet)
INPLACE_TV = {"inplace": Arg("bool", True, doc="in place, as torchvision's conv blocks do")}
INPLACE_OFF = {"inplace": Arg("bool", False, doc="in place (PyTorch's default: off)")}

activation("relu6", per_element=2, keeps="input", torch_name="ReLU6", args=INPLACE_TV,
           torch_args=("inplace",), summary="min(max(0, x), 6) (MobileNetV2)")
activation("hardswish", per_element=5, keeps="input", torch_name="Hardswish",
           args=INPLACE_TV, torch_args=("inplace",), aliases=("hard_swish",),
           summary="x * relu6(x + 3) / 6 (MobileNetV3)")
activation("hardsigmoid", per_element=4, keeps="input", torch_name="Hardsigmoid",
           args=INPLACE_OFF, torch_args=("inplace",), aliases=("hard_sigmoid",),
           summary="relu6(x + 3) / 6 (MobileNetV3's squeeze-excitation gate)")
activation("silu", per_element=4, keeps="input", torch_name="SiLU", args=INPLACE_TV,
           primitive="sigmoid",
           torch_args=("inplace",), aliases=("swish",), fused_aliases=("swish",),
           summary="x * sigmoid(x) (EfficientNet's swish)")
activation("mish", per_element=5, keeps="input", torch_name="Mish", args=INPLACE_OFF,
           primitive="sigmoid", primitive_scale=2.0,
           torch_args=("inplace",), summary="x * tanh(softplus(x)) (softplus: exp, +1, log)")


@register
class PReLU(Elementwise):
    name = "prelu"
    torch_name = "PReLU"
    learned = True
    summary = "x if x > 0 else a*x, with a learned (one, or one per channel)"
    per_element = 2
    keeps = "input"
    flops_rule = "2 per element"
    args = {"per_channel": Arg("bool", False)}

    def params(self, a, x):
        return x[0] if a.per_channel else 1

    def params_formula(self, a, x):
        return sym.plain(x[0]) if a.per_channel else "1"

    def build(self, a, x):
        from torch import nn
        return nn.PReLU(x[0] if a.per_channel else 1)

    torch_modules = ("torch.nn.PReLU",)   # from_torch reads them

    def from_torch(self, call, m):
        """One learned slope, or one per channel of the input."""
        from .from_torch import NoMapping, row
        n = m.num_parameters
        if n != 1 and (len(call.x) == 0 or n != call.x[0]):
            raise NoMapping(f"PReLU with {n} parameters")
        return row("prelu", per_channel=n != 1)


@register
class Softmax(Elementwise):
    nonlinear = False  # an output normalization, not a hidden nonlinearity
    name = "softmax"
    summary = "softmax over the channels / features (over each token's D on N x D tokens)"
    per_element = 3
    keeps = "output"
    primitive = "softmax"
    op_relatives = {"softmax": "sigmoid"}
    flops_rule = "3 per element (exp, sum, divide)"
    args = {}

    def build(self, a, x):
        from torch import nn
        return nn.Softmax(dim=-1 if len(x) == 2 else 1)  # tokens: over each token's D

    torch_modules = ("torch.nn.Softmax",)   # from_torch reads them

    def from_torch(self, call, m):
        return self.over_dim(call, m.dim)

    @staticmethod
    def over_dim(call, dim):
        """A softmax over ``dim`` of the call's input: the kind's only where that
        is the channels of a map or a vector's features (F.softmax too)."""
        from .from_torch import NoMapping, row
        x = call.x
        if not ((len(x) == 1 and dim in (1, -1)) or (len(x) == 3 and dim in (1, -3))):
            raise NoMapping(f"softmax over dim {dim} of a {list(call.x_torch)} input "
                            "(archcalc's is over the channels or the features)")
        return row("softmax")


@register
class Dropout(Kind):
    name = "dropout"
    op_relatives = {"dropout": "mul"}
    primary = "p"
    summary = "dropout with probability p (identity at inference)"
    flops_rule = "0 (identity at inference)"
    args = {"p": Arg("float", 0.5, min=0.0, max=1.0)}

    def allocates(self, a):
        return False  # identity at inference: no forward memory of its own

    def saved(self, a, x, y):
        # training keeps a bool mask of the output's size
        return Saved(extra=((sym.prod(y), BOOL),))

    def cost(self, a, x, y):
        """Identity at inference (the call only); in training a mask and a multiply."""
        return (Cost("dropout", elements=sym.prod(x), train_only=True),)

    def build(self, a, x):
        from torch import nn
        return nn.Dropout(a.p)

    torch_modules = ("torch.nn.Dropout",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("dropout", p=float(m.p))


@register
class DropPath(Kind):
    """Stochastic depth (Huang et al. 2016) as torchvision.ops.StochasticDepth:
    identity at inference; in training each sample ("row") or the whole batch
    ("batch") is dropped with probability p and the rest scaled by 1/(1 - p)."""
    name = "drop_path"
    torch_classes = ('StochasticDepth',)  # in activation_torch.py
    aliases = ("stochastic_depth",)
    primary = "p"
    summary = "stochastic depth: drop a residual branch per sample (mode row) or per batch"
    flops_rule = "0 (identity at inference)"
    args = {
        "p": Arg("float", min=0.0, max=1.0, doc="probability of dropping"),
        "mode": Arg("str", "row", choices=("row", "batch")),
    }

    def allocates(self, a):
        return False  # identity at inference

    def shares_storage(self, a):
        return a.p == 0  # returns its input itself, in training too

    def saved(self, a, x, y):
        if a.p == 0:  # torchvision returns the input itself, even in training
            return Saved()
        # the mul keeps the noise: one element per sample (row) or one in all (batch)
        if a.mode == "row":
            return Saved(extra=((1, None),))
        return Saved(per_batch=((1, None),))

    def cost(self, a, x, y):
        """Identity at inference; in training a per-sample noise times the input."""
        return (Cost("mul", elements=sym.prod(x), train_only=True),)

    def build(self, a, x):
        from .activation_torch import StochasticDepth
        return StochasticDepth(a.p, a.mode)

    torch_modules = ("archcalc.layers.activation_torch.StochasticDepth",   # from_torch reads them
                     "torchvision.ops.StochasticDepth")     # the same p and mode

    def from_torch(self, call, m):
        from .from_torch import row
        return row("drop_path", p=float(m.p), mode=m.mode)


# the names a conv or fc row fuses with activation = "...": every elementwise
# kind's, in registration order (the kinds above; silu also as "swish")
ACTIVATIONS = tuple(name for kind in kinds().values() if isinstance(kind, Elementwise)
                    for name in (kind.name, *kind.fused_aliases))


@register
class Maxout(Kind):
    """Maxout over channels (Goodfellow et al. 2013): the max of each group of
    `pieces` consecutive channels; follow a conv or fc with pieces x the units."""
    name = "maxout"
    torch_classes = ('Maxout',)  # in activation_torch.py
    nonlinear = True
    primary = "pieces"
    summary = "max over groups of `pieces` channels: C x H x W -> C/pieces x H x W"
    flops_rule = "pieces - 1 comparisons per output element"
    args = {"pieces": Arg("int", 2, min=1)}

    def output_shape(self, a, x):
        c = x[0]
        if isinstance(c, int) and isinstance(a.pieces, int) and c % a.pieces:
            from ..errors import SpecError
            raise SpecError(f"pieces={a.pieces} must divide the channels. "
                            f"Received: channels={c}")
        return (sym.exact_div(c, a.pieces), *x[1:])

    def flops(self, a, x, y):
        return sym.norm(sym.prod(y) * (a.pieces - 1))

    def saved(self, a, x, y):
        return Saved(extra=((sym.prod(y), 8),))  # int64 argmax indices

    def cost(self, a, x, y):
        """A view to (C/pieces, pieces, H, W) and a max over the pieces: a pass
        over the input, rated as a 2x2 max pool is (one read per input element)."""
        return (Cost("maxpool2s2", elements=sym.prod(x)),)

    def build(self, a, x):
        from .activation_torch import Maxout as Module
        return Module(a.pieces)

    torch_modules = ("archcalc.layers.activation_torch.Maxout",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import row
        return row("maxout", pieces=m.pieces)
