"""Global context block (Cao et al. 2019, GCNet), as timm's GlobalContext: a
context vector per image, the map's positions weighted by a softmax over a
1x1 conv to one channel (``context = "attention"``; else the mean), then one
or two bottleneck MLPs on it (1x1 conv to ``reduced`` channels, LayerNorm
over the channels, ReLU or SiLU, 1x1 conv back): ``fuse = "scale"`` gates the
input channel by channel (sigmoid), ``"add"`` adds it to every position,
``"both"`` does both.

MACs (FlopCounterMode's: the convs and the context's matrix product): the
attention conv H*W*C, the weighted sum C*H*W, each MLP 2*C*r on the 1 x 1
context."""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, lookup, register

FP32 = 4
ACTIVATIONS = ("relu", "silu")
TORCH_ACTIVATIONS = {"ReLU": "relu", "SiLU": "silu"}


@register
class GlobalContext(Kind):
    name = "global_context"
    torch_classes = ("GlobalContext",)  # in global_context_torch.py
    aliases = ("gc",)
    primary = "reduced"
    summary = ("GCNet's global context: softmax-weighted (or mean) context vector, a "
               "bottleneck MLP to a sigmoid gate (scale) and/or an additive term (add)")
    flops_rule = ("2 x MACs + 3 per position (softmax) + per MLP 2*r (its biases) + 7*r "
                  "(LayerNorm) + the activation's rule on r + C (the last bias) + C*H*W (the gate's multiply or "
                  "the add) + 4*C (sigmoid); MACs = 2*H*W*C (attention: else the mean, "
                  "H*W*C FLOPs) + 2*C*r per MLP")
    inputs = "chw"
    args = {
        "reduced": Arg("int", min=1, numeric=True, doc="the MLPs' bottleneck channels"),
        "context": Arg("str", "attention", choices=("attention", "mean"),
                       doc="the positions weighted by a softmax (conv_attn), or their mean"),
        "fuse": Arg("str", "scale", choices=("scale", "add", "both"),
                    doc="an MLP to a sigmoid gate on the input (scale), an MLP added to "
                        "every position (add), or both"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the MLPs' LayerNorm"),
        "activation": Arg("str", "relu", choices=ACTIVATIONS, doc="the MLPs' (timm: act_layer)"),
    }
    arg_examples = {"reduced": (1, 2, 4)}

    @staticmethod
    def mlps(a) -> int:
        return 2 if a.fuse == "both" else 1

    @staticmethod
    def scaled(a) -> bool:
        return a.fuse in ("scale", "both")

    @staticmethod
    def added(a) -> bool:
        return a.fuse in ("add", "both")

    def params(self, a, x):
        c, r = x[0], a.reduced
        return sym.norm((c + 1 if (a.context == "attention") else 0) +
                        self.mlps(a) * (c * r + r + 2 * r + r * c + c))

    def params_formula(self, a, x):
        c, r = sym.plain(x[0]), a.reduced
        mlp = f"({c}*{r} + {r} + 2*{r} + {r}*{c} + {c})"
        return (f"({c} + 1) + " if (a.context == "attention") else "") + \
            (f"{self.mlps(a)}*{mlp}" if self.mlps(a) > 1 else mlp)

    def macs(self, a, x, y):
        c, h, w = x
        pool = 2 * h * w * c if (a.context == "attention") else 0
        return sym.norm(pool + self.mlps(a) * 2 * c * a.reduced)

    def flops(self, a, x, y):
        c, h, w = x
        r, k = a.reduced, self.mlps(a)
        pool = 3 * h * w if (a.context == "attention") else h * w * c
        act = lookup(a.activation)
        act_flops = act.flops(act.read_args({}, {}), (r, 1, 1), (r, 1, 1))
        return sym.norm(2 * self.macs(a, x, y) + pool + k * (2 * r + 7 * r + act_flops + c)
                        + k * c * h * w + (4 * c if self.scaled(a) else 0))

    def cost(self, a, x, y):
        """The attention conv and its softmax (or the mean), the context's
        product, the MLPs on 1 x 1, the gate and the rescale or the add."""
        c, h, w = x
        r = a.reduced
        act = lookup(a.activation)
        out = []
        if (a.context == "attention"):
            out += [Cost("conv", conv=(1, 1, 1, 1, c, 1, h, w, 1), tensors=(c, 1)),
                    Cost("softmax", elements=sym.norm(h * w)),
                    Cost("linear", gemm=(1, 1, sym.norm(h * w)))]
        else:
            out.append(Cost("global_avgpool", elements=sym.prod(x)))
        mlp = (Cost("conv", conv=(1, 1, 1, 1, c, r, 1, 1, 1), tensors=(c * r, r)),
               Cost("layer_norm", elements=r, tensors=(r, r)),
               *act.cost(act.read_args({}, {}), (r, 1, 1), (r, 1, 1)),
               Cost("conv", conv=(1, 1, 1, 1, r, c, 1, 1, 1), tensors=(r * c, c)))
        if self.scaled(a):
            out += [*mlp, Cost("sigmoid", elements=c), Cost("mul", elements=sym.prod(x))]
        if self.added(a):
            out += [*mlp, Cost("add", elements=sym.prod(x))]
        return tuple(out)

    def saved(self, a, x, y):
        # the input (the conv, the product, the rescale), the softmax's output,
        # the context; per MLP its input's norm statistics (fp32), the norm's
        # output, the ReLU's output; the gate
        c, h, w = x[0], x[-2] if len(x) == 3 else 1, x[-1] if len(x) == 3 else 1
        r = a.reduced
        extra = [(sym.norm(h * w), None)] if (a.context == "attention") else []
        extra.append((c, None))
        for _ in range(self.mlps(a)):
            extra += [(r, None), (r, None), (2, FP32)]
        if self.scaled(a):
            extra.append((c, None))
        return Saved(input=True, extra=tuple(extra))

    def build(self, a, x):
        from .global_context_torch import GlobalContext as Module
        return Module(x[0], a.reduced, a.context == "attention", self.scaled(a), self.added(a),
                      a.eps, a.activation)

    torch_modules = ("archcalc.layers.global_context_torch.GlobalContext",
                     "timm.layers.global_context.GlobalContext")

    def from_torch(self, call, m):
        """archcalc's and timm's GlobalContext: a 1x1 attention conv (or none),
        ConvMlp(s) of 1x1 convs with a LayerNorm2d and a ReLU, a sigmoid gate."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "GlobalContext")
        c = call.x[0]
        attn = m.conv_attn
        if attn is not None and (attn.in_channels, attn.out_channels, tuple(attn.kernel_size),
                                 attn.bias is not None) != (c, 1, (1, 1), True):
            raise NoMapping(f"GlobalContext whose conv_attn is not a 1x1 conv {c} -> 1")
        found, reduced, eps, acts = {}, set(), set(), set()
        for key, mlp in (("scale", m.mlp_scale), ("add", m.mlp_add)):
            found[key] = mlp is not None
            if mlp is None:
                continue
            r = mlp.fc1.out_channels
            norm, act = mlp.norm, mlp.act
            if (mlp.fc1.in_channels, mlp.fc2.in_channels, mlp.fc2.out_channels) != (c, r, c) or \
                    mlp.fc1.bias is None or mlp.fc2.bias is None or \
                    tuple(mlp.fc1.kernel_size) != (1, 1) or tuple(mlp.fc2.kernel_size) != (1, 1) \
                    or type(norm).__name__ != ("LayerNorm" if hasattr(m, "init_args") else
                                               "LayerNorm2d") or \
                    not norm.elementwise_affine or \
                    type(act).__name__ not in TORCH_ACTIVATIONS or mlp.drop.p:
                raise NoMapping("GlobalContext whose MLP is not 1x1 conv, LayerNorm2d, ReLU "
                                f"or SiLU, 1x1 conv ({type(act).__name__})")
            reduced.add(r)
            acts.add(TORCH_ACTIVATIONS[type(act).__name__])
            eps.add(float(norm.eps))
        if len(reduced) != 1 or len(eps) != 1 or len(acts) != 1 or \
                type(m.gate).__name__ != "Sigmoid":
            raise NoMapping("GlobalContext with MLPs of two widths or a gate not a sigmoid")
        fuse = "both" if found["scale"] and found["add"] else \
            "scale" if found["scale"] else "add"
        if not (found["scale"] or found["add"]):
            raise NoMapping("GlobalContext with neither MLP")
        args = {"reduced": reduced.pop(), "context": "attention" if attn is not None else "mean",
                "fuse": fuse, "eps": eps.pop(), "activation": acts.pop()}
        return row("global_context", **{k: v for k, v in args.items()
                                         if k == "reduced" or v != self.args[k].default})
