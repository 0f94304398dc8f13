"""Gated linear unit MLP (Dauphin et al. 2017; Shazeer 2020, "GLU Variants
Improve Transformer"), as timm's GluMlp (gMLP-Mixer, the SwiGLU MLPs): on N x D
tokens, fc1 to 2H, its two halves x1, x2 (chunk along the features), x1 *
act(x2) (or act(x1) * x2), then fc2 from H to the output width. One row: the
split and the product read two halves of one tensor, which a chain of rows
cannot say."""
from __future__ import annotations

from .. import sym
from .activation import Elementwise
from .base import Arg, Cost, Kind, Saved, kinds, lookup, register

# every elementwise activation without learned parameters (as se's inner one)
GLU_ACTIVATIONS = tuple(kind.name for kind in kinds().values()
                        if isinstance(kind, Elementwise) and kind.nonlinear and not kind.learned)


@register
class GluMlp(Kind):
    name = "glu_mlp"
    torch_classes = ("GluMlp",)  # in glu_torch.py
    aliases = ("gated_mlp",)
    primary = "hidden"
    summary = ("gated MLP on N x D tokens: fc2(x1 * act(x2)), [x1, x2] = fc1(x) "
               "(D -> 2*hidden), fc2 hidden -> out")
    flops_rule = ("2 x MACs + the biases (2*hidden + out per token) + the activation's rule "
                  "on N*hidden + N*hidden (the product); MACs = N*(D*2*hidden + hidden*out)")
    inputs = "tokens"
    args = {
        "hidden": Arg("int", min=1, doc="the gated width H (fc1 gives 2*H)"),
        "out": Arg("int", None, min=1, doc="fc2's output width (default D)"),
        "activation": Arg("str", "sigmoid", choices=GLU_ACTIVATIONS),
        "gate_last": Arg("bool", True, doc="x1 * act(x2) (timm's default); false: act(x1) * x2"),
        "bias": Arg("bool", True, doc="fc1's and fc2's biases"),
    }

    @staticmethod
    def _out(a, x):
        return a.out if a.out is not None else x[1]

    def _act(self, a):
        act = lookup(a.activation)
        return act, act.read_args({}, {})

    def output_shape(self, a, x):
        return (x[0], self._out(a, x))

    def params(self, a, x):
        d, h, o = x[1], a.hidden, self._out(a, x)
        return sym.norm(d * 2 * h + h * o + ((2 * h + o) if a.bias else 0))

    def params_formula(self, a, x):
        d, h, o = sym.plain(x[1]), a.hidden, sym.plain(self._out(a, x))
        if a.bias:
            return f"({d}*{2 * h} + {2 * h}) + ({h}*{o} + {o})"
        return f"{d}*{2 * h} + {h}*{o}"

    def macs(self, a, x, y):
        n, d, h, o = x[0], x[1], a.hidden, self._out(a, x)
        return sym.norm(n * (d * 2 * h + h * o))

    def macs_formula(self, a, x, y):
        n, d, o = sym.plain(x[0]), sym.plain(x[1]), sym.plain(self._out(a, x))
        return f"{n}*({d}*{2 * a.hidden} + {a.hidden}*{o})"

    def flops(self, a, x, y):
        n, h, o = x[0], a.hidden, self._out(a, x)
        act, act_args = self._act(a)
        biases = n * (2 * h + o) if a.bias else 0
        return sym.norm(2 * self.macs(a, x, y) + biases + n * h
                        + act.flops(act_args, (n, h), (n, h)))

    def cost(self, a, x, y):
        """Two GEMMs (M = the tokens), the activation on one half, the product."""
        n, d, h, o = x[0], x[1], a.hidden, self._out(a, x)
        act, act_args = self._act(a)
        return (Cost("linear", gemm=(n, 2 * h, d), tensors=(d * 2 * h,) + ((2 * h,) if a.bias else ())),
                *act.cost(act_args, (n, h), (n, h)),
                Cost("mul", elements=n * h),
                Cost("linear", gemm=(n, o, h), tensors=(h * o,) + ((o,) if a.bias else ())))

    def saved(self, a, x, y):
        # fc1 keeps x; the product keeps both its factors (x1 and act(x2));
        # the activation its input or output; fc2 keeps the product
        n, h = x[0], a.hidden
        act, _ = self._act(a)
        extra = [(n * h, None), (n * h, None), (n * h, None)]
        if act.keeps in ("input", "output"):
            extra.append((n * h, None))
        return Saved(input=True, extra=tuple(extra))

    def build(self, a, x):
        from .glu_torch import GluMlp as Module
        return Module(x[1], a.hidden, self._out(a, x), lookup(a.activation).torch_name,
                      a.gate_last, a.bias)

    torch_modules = ("archcalc.layers.glu_torch.GluMlp", "timm.layers.mlp.GluMlp")

    def from_torch(self, call, m):
        """archcalc's and timm's GluMlp (the same submodules): fc1 and fc2 as
        nn.Linear on the last dim, no norm between, no dropout."""
        from .from_torch import NoMapping, row
        from .se import _kind_of_module
        if len(call.x) != 2 or type(m.fc1).__name__ != "Linear":
            raise NoMapping(f"a GluMlp with {type(m.fc1).__name__} on a {len(call.x)}-d input")
        if getattr(m, "chunk_dim", -1) not in (-1, 2) or type(m.norm).__name__ != "Identity":
            raise NoMapping("a GluMlp split along another dim or with a norm")
        if any(getattr(d, "p", 0) for d in (m.drop1, m.drop2)):
            raise NoMapping("a GluMlp with dropout")
        act = _kind_of_module(m.act)
        if act not in GLU_ACTIVATIONS:
            raise NoMapping(f"a GluMlp with {type(m.act).__name__}")
        bias = m.fc1.bias is not None
        if (m.fc2.bias is not None) != bias:
            raise NoMapping("a GluMlp with a bias on one fc only")
        hidden = m.fc2.in_features
        if m.fc1.out_features != 2 * hidden:
            raise NoMapping("a GluMlp whose fc1 does not give twice fc2's input")
        args = {"hidden": hidden, "activation": act}
        if m.fc2.out_features != call.x[1]:
            args["out"] = m.fc2.out_features
        if not m.gate_last:
            args["gate_last"] = False
        if not bias:
            args["bias"] = False
        return row("glu_mlp", **args)
