"""The parallel transformer block (Dehghani et al. 2023's ViT-22B, timm's
ParallelScalingBlock): one norm, then ONE linear layer computes the MLP's
hidden layer and q, k, v together; attention and the MLP run side by side;
their output projections (two, or one fused over both) are summed, scaled
(layer scale) and added to the input. On N x D tokens, the residual
included: N x D -> N x D.

MACs (FlopCounterMode's: the linears and F.scaled_dot_product_attention's
two products): in_proj N*D*(H + 3D), attention 2*N^2*D, out N*(D + H)*D."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, lookup, register

FP32 = 4
NORMS = ("layer_norm", "rms_norm")
# per element: LayerNorm's mean, variance, normalize, affine (7); RMS norm's (3 + 1)
NORM_FLOPS = {"layer_norm": 7, "rms_norm": 4}
TORCH_NORMS = {"LayerNorm": "layer_norm", "RmsNorm": "rms_norm", "RMSNorm": "rms_norm"}


@register
class ParallelBlock(Kind):
    name = "parallel_block"
    torch_classes = ("ParallelBlock",)  # in parallel_block_torch.py
    aliases = ("parallel_scaling_block",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("ViT-22B's parallel block: one norm and one linear for the MLP's hidden "
               "layer and q, k, v; attention and MLP side by side, summed, added")
    flops_rule = ("2 x MACs + the norms (7 per element for LayerNorm, 4 for RMS norm: N*D, "
                  "and 2*N*D for q_norm, k_norm) + 4 per attention score (4*heads*N^2) + "
                  "the MLP's activation (its rule on N*H) + biases (N*(H + 3D) or N*H, "
                  "N*D per output projection) + the layer scale (N*D) + the sum and the "
                  "residual (2*N*D); MACs = N*D*(H + 3D) + 2*N^2*D + N*(D + H)*D")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "mlp": Arg("int", min=1, numeric=True, doc="the MLP's hidden width H"),
        "norm": Arg("str", "layer_norm", choices=NORMS, doc="the input norm (and q, k norms)"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the norms"),
        "bias": Arg("bool", False, doc="in_proj's bias (else the MLP's bias of its own)"),
        "qk_norm": Arg("bool", False, doc="a norm on each head's q and k"),
        "proj_bias": Arg("bool", True, doc="the output projections' biases"),
        "fuse_out": Arg("bool", False, doc="one output projection over [attention, MLP]"),
        "gamma": Arg("float", None, doc="the layer scale's initial gamma (none: no "
                                              "layer scale)"),
        "activation": Arg("str", "gelu", choices=("gelu", "silu"), doc="the MLP's"),
    }
    arg_examples = {"heads": (1, 2), "mlp": (3, 8)}

    def output_shape(self, a, x):
        d = x[1]
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"parallel_block: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        return x

    @staticmethod
    def _norm_params(a, width):
        return 2 * width if a.norm == "layer_norm" else width

    def params(self, a, x):
        d, h = x[1], a.mlp
        in_proj = d * (h + 3 * d) + ((h + 3 * d) if a.bias else h)
        qk = 2 * self._norm_params(a, sym.exact_div(d, a.heads)) if a.qk_norm else 0
        out = (d + h) * d if a.fuse_out else d * d + h * d
        out_bias = (1 if a.fuse_out else 2) * d if a.proj_bias else 0
        scale = d if a.gamma is not None else 0
        return sym.norm(self._norm_params(a, d) + in_proj + qk + out + out_bias + scale)

    def macs(self, a, x, y):
        n, d = x
        h = a.mlp
        return sym.norm(n * d * (h + 3 * d) + 2 * n * n * d + n * (d + h) * d)

    def flops(self, a, x, y):
        n, d = x
        h = a.mlp
        norm = NORM_FLOPS[a.norm]
        act = lookup(a.activation)
        act_flops = act.flops(act.read_args({}, {}), (n, h), (n, h))
        biases = n * ((h + 3 * d) if a.bias else h) + \
            (n * d * (1 if a.fuse_out else 2) if a.proj_bias else 0)
        return sym.norm(2 * self.macs(a, x, y) + norm * n * d * (3 if a.qk_norm else 1)
                        + 4 * a.heads * n * n + act_flops + biases
                        + (n * d if a.gamma is not None else 0) + 2 * n * d)

    def macs_missed_by(self, a, x, y):
        n, d = x
        return {"fvcore": (sym.norm(2 * n * n * d),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*N^2*D)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The norm, in_proj, the scores, the softmax, the weighted values, the
        activation, the output projection(s), the scale and the adds."""
        n, d = x
        h = a.mlp
        act = lookup(a.activation)
        out = (Cost("linear", gemm=(n, d, d + h), tensors=((d + h) * d,)),) if a.fuse_out else \
            (Cost("linear", gemm=(n, d, d), tensors=(d * d,)),
             Cost("linear", gemm=(n, d, h), tensors=(h * d,)))
        return (Cost("layer_norm", elements=sym.norm(n * d), tensors=(d,)),   # RMS norm: rated as one
                Cost("linear", gemm=(n, h + 3 * d, d), tensors=(d * (h + 3 * d),)),
                Cost("linear", gemm=(n, n, d), backward=True),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, d, n)),
                *act.cost(act.read_args({}, {}), (n, h), (n, h)),
                *out,
                Cost("add", elements=sym.norm(2 * n * d)))

    def saved(self, a, x, y):
        # the input and the norm's output and statistics, in_proj's output,
        # the attention's output (and its softmax statistics), the activation's
        # input and output, the sum (the layer scale's input)
        n, d = x[0], x[-1]   # any shape: a merge asks with a dummy
        h = a.mlp
        return Saved(input=True, extra=((sym.norm(n * d + n * (h + 3 * d) + n * d + 2 * n * h
                                                  + n * d), None),
                                        (sym.norm(n + a.heads * n), FP32)))

    def build(self, a, x):
        from .parallel_block_torch import ParallelBlock as Module
        return Module(x[1], a.heads, a.mlp, a.norm, a.eps, a.bias, a.qk_norm, a.proj_bias,
                      a.fuse_out, a.gamma, a.activation)

    torch_modules = ("archcalc.layers.parallel_block_torch.ParallelBlock",
                     "timm.models.vision_transformer.ParallelScalingBlock")

    def from_torch(self, call, m):
        """archcalc's and timm's ParallelScalingBlock, with no mask."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2 or [v for v in list(call.args[1:]) + list(call.kwargs.values())
                                if v not in (None, False)]:
            raise NoMapping("ParallelScalingBlock with a mask, or not on N x D tokens")
        d, heads = call.x[1], int(m.num_heads)
        if type(m).__module__.startswith("archcalc."):    # archcalc's own: its arguments
            names = ("dim", "heads", "mlp", "norm", "eps", "bias", "qk_norm", "proj_bias",
                     "fuse_out", "gamma", "activation")
            found = dict(zip(names, m.init_args))
            if found.pop("dim") != d:
                raise NoMapping(f"ParallelBlock of another width than the tokens' {d}")
            defaults = {k: arg.default for k, arg in self.args.items()}
            return row("parallel_block", **{k: v for k, v in found.items()
                                             if k in ("heads", "mlp") or v != defaults[k]})
        h = int(m.in_split[0])
        norm, eps = _norm(m.in_norm, d)
        found = {"heads": heads, "mlp": h, "norm": norm, "eps": eps,
                 "bias": m.in_proj.bias is not None,
                 "qk_norm": type(m.q_norm).__name__ != "Identity",
                 "fuse_out": m.out_proj is not None,
                 "activation": {"GELU": "gelu", "SiLU": "silu"}.get(type(m.mlp_act).__name__)}
        if found["activation"] is None or getattr(m.mlp_act, "approximate", "none") != "none":
            raise NoMapping(f"ParallelScalingBlock with {type(m.mlp_act).__name__}")
        if found["qk_norm"] and {_norm(m.q_norm, d // heads), _norm(m.k_norm, d // heads)} != \
                {(norm, eps)}:
            raise NoMapping("ParallelScalingBlock whose q, k norms differ from its input norm")
        outs = [m.out_proj] if found["fuse_out"] else [m.attn_out_proj, m.mlp_out_proj]
        found["proj_bias"] = outs[0].bias is not None
        if float(m.scale) != (d // heads) ** -0.5 or m.in_proj.in_features != d:
            raise NoMapping("ParallelScalingBlock scaled otherwise, or of another width")
        ls = m.ls
        if type(ls).__name__ != "Identity":
            if type(ls).__name__ != "LayerScale" or getattr(ls, "inplace", False):
                raise NoMapping(f"ParallelScalingBlock with a {type(ls).__name__}")
            gamma = ls.gamma
            found["gamma"] = float(gamma.detach().flatten()[0]) if gamma.device.type != "meta" \
                else 1e-5
        if type(m.drop_path).__name__ != "Identity":
            raise NoMapping("ParallelScalingBlock with drop path")
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("parallel_block", **{k: v for k, v in found.items()
                                         if k in ("heads", "mlp") or v != defaults[k]})


def _norm(module, width):
    """(kind, eps) of a LayerNorm or RMS norm with a weight over ``width``."""
    from .from_torch import NoMapping
    kind = TORCH_NORMS.get(type(module).__name__)
    shape = tuple(getattr(module, "normalized_shape", ()))
    affine = getattr(module, "weight", None) is not None and \
        (kind == "rms_norm") == (getattr(module, "bias", None) is None)
    if kind is None or shape != (width,) or not affine:
        raise NoMapping(f"ParallelScalingBlock with a {type(module).__name__} norm")
    return kind, float(module.eps)


__all__ = ["ParallelBlock"]
