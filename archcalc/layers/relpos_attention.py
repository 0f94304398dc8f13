"""Self-attention with a relative position bias from an MLP of log-spaced
relative coordinates, as timm's RelPosAttention with its RelPosMlp (the
vit_relpos models; the 'cr' log coordinates of Liu et al. 2022's Swin V2
continuous bias, without its 16*sigmoid): the tokens are a wh x ww grid
(after ``prefix`` class tokens, whose bias is 0), the MLP (2 -> hidden ->
heads, ReLU) maps each of the (2wh-1)(2ww-1) offsets sign(d)*log(1+|d|) to a
bias per head, gathered to N x N and added to the scores before the softmax.
The attention itself is timm's Attention's (one qkv Linear, proj).

The MLP runs once per forward pass, whatever the batch; its MACs are counted
per sample here, exact at batch 1 (as `archcalc check` and the import's
measure run), as window_attention_v2 counts Swin V2's."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

MLP_DROPOUT = 0.125     # timm's RelPosMlp: Mlp(drop=(0.125, 0.))


@register
class RelPosAttention(Kind):
    name = "relpos_attention"
    torch_classes = ("RelPosAttention",)  # in relpos_attention_torch.py
    aliases = ("relpos_mlp_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("self-attention over a wh x ww token grid (+ prefix tokens) with a relative "
               "position bias per head from an MLP (2 -> hidden -> heads) of log offsets")
    flops_rule = ("2 x MACs + 5 per attention score (scale, bias add, exp, sum, divide: "
                  "5*heads*N^2) + the MLP's biases and ReLU (R*(2*hidden + heads)); "
                  "MACs = 4*N*D^2 + 2*N^2*D + R*(2*hidden + hidden*heads), "
                  "R = (2wh-1)(2ww-1)")
    flop_counter_gap = ("the bias MLP runs once per forward pass, not per sample: "
                        "FlopCounterMode at batch B counts it once where B x MACs counts it "
                        "B times (tests/test_import_attention_families.py compares at batch 1)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; D must divide by it"),
        "window": Arg("pair", min=1, numeric=True, doc="the token grid, wh x ww"),
        "prefix": Arg("int", 0, min=0, max=1, doc="class tokens before the grid (0 or 1)"),
        "hidden": Arg("int", 128, min=1, doc="the bias MLP's hidden width"),
        "bias": Arg("bool", False, doc="the qkv Linear's bias"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"heads": (1, 2, 4),
                    "window": (lambda x: [1, x[0]], lambda x: [x[0], 1],
                               lambda x: [1, x[0] - 1] if x[0] > 1 else [1, 1]),
                    "prefix": (lambda x: 0, lambda x: 1 if x[0] > 1 else 0),
                    "hidden": (1, 4, 8)}
    receptive_field = SelfAttention.receptive_field

    @staticmethod
    def offsets(a):
        """R, the relative offsets the MLP maps: (2wh-1)(2ww-1)."""
        return (2 * a.window[0] - 1) * (2 * a.window[1] - 1)

    def output_shape(self, a, x):
        n, d = x
        tokens = a.window[0] * a.window[1] + a.prefix
        if isinstance(n, int) and n != tokens:
            raise SpecError(f"relpos_attention: a window of {a.window[0]} x {a.window[1]} and "
                            f"{a.prefix} prefix tokens are {tokens} tokens, but there are {n}. "
                            f"Received: window={list(a.window)}")
        if isinstance(d, int) and d % a.heads:
            raise SpecError(f"relpos_attention: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        return x

    def mlp_params(self, a):
        return 3 * a.hidden + a.hidden * a.heads + a.heads

    def params(self, a, x):
        d = x[1]
        return sym.norm(4 * d * d + (3 * d if a.bias else 0) + d + self.mlp_params(a))

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        return (f"(3*{d}*{d}{' + 3*' + str(d) if a.bias else ''}) + ({d}*{d} + {d}) "
                f"+ (2*{a.hidden} + {a.hidden}) + ({a.hidden}*{a.heads} + {a.heads}) (bias MLP)")

    def mlp_macs(self, a):
        return self.offsets(a) * (2 * a.hidden + a.hidden * a.heads)

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * n * d + self.mlp_macs(a))

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        return (f"4*{n}*{d}^2 + 2*{n}^2*{d} + {self.offsets(a)}*(2*{a.hidden} + "
                f"{a.hidden}*{a.heads})")

    def flops(self, a, x, y):
        n = x[0]
        mlp = self.offsets(a) * (2 * a.hidden + a.heads)
        return sym.norm(2 * self.macs(a, x, y) + 5 * a.heads * n * n + mlp)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The bias MLP (two GEMMs on R offsets, once per pass), the qkv GEMM,
        the scores, the softmax, the weighted values, the projection."""
        n, d = x
        r, h = self.offsets(a), a.hidden
        return (Cost("linear", gemm=(r, h, 2), tensors=(2 * h, h)),
                Cost("linear", gemm=(r, a.heads, h), tensors=(h * a.heads, a.heads)),
                Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + ((3 * d,) if a.bias else ())),
                Cost("linear", gemm=(n, n, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, d, n)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))

    def saved(self, a, x, y):
        # the input, q, k, v, the heads' output, the softmax statistics (fp32),
        # the bias (N x N per head, once per pass) and the MLP's activations
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        r = self.offsets(a)
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (sym.norm(n * d), None),
                                        (sym.norm(a.heads * n), 4)),
                     per_batch=((sym.norm(a.heads * n * n), 4), (2 * r * a.hidden, 4)))

    def build(self, a, x):
        from .relpos_attention_torch import RelPosAttention as Module
        return Module(x[1], a.heads, tuple(a.window), a.prefix, a.hidden, a.bias, a.dropout,
                      a.proj_dropout)

    torch_modules = ("archcalc.layers.relpos_attention_torch.RelPosAttention",
                     "timm.models.vision_transformer_relpos.RelPosAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's RelPosAttention with a RelPosMlp ('cr' mode)."""
        from .from_torch import NoMapping, pair, row
        if len(call.x) != 2:
            raise NoMapping(f"RelPosAttention on a {len(call.x)}-d input (it takes tokens)")
        if [v for v in list(call.args[1:]) + list(call.kwargs.values()) if v is not None]:
            raise NoMapping("RelPosAttention with a shared relative position bias (the "
                            "model's, passed to every block)")
        d, heads = call.x[1], int(m.num_heads)
        if m.qkv.in_features != d or m.qkv.out_features != 3 * d or d % heads or \
                m.proj.in_features != d or m.proj.out_features != d or m.proj.bias is None:
            raise NoMapping(f"RelPosAttention of other widths than the tokens' {d}")
        if abs(float(m.scale) * (d // heads) ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"RelPosAttention scaled by {m.scale}")
        if any(type(n).__name__ != "Identity" for n in (m.q_norm, m.k_norm)):
            raise NoMapping("RelPosAttention with q and k norms")
        hidden = _relpos_mlp_hidden(m.rel_pos, heads)
        found = {"heads": heads, "window": pair(m.rel_pos.window_size),
                 "prefix": int(m.rel_pos.prefix_tokens), "hidden": hidden,
                 "bias": m.qkv.bias is not None, "dropout": float(m.attn_drop.p),
                 "proj_dropout": float(m.proj_drop.p)}
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("relpos_attention", **{k: v for k, v in found.items()
                                          if k in ("heads", "window") or v != defaults[k]})


def _relpos_mlp_hidden(rel_pos, heads) -> int:
    """The hidden width of a RelPosMlp in 'cr' mode (no sigmoid, no gain):
    fc1 2 -> hidden and fc2 hidden -> heads with biases, ReLU between, no norm,
    the dropouts timm's; anything else is refused by name."""
    from .from_torch import NoMapping
    if rel_pos is None or type(rel_pos).__name__ not in ("RelPosMlp", "RelPosBiasMlp"):
        raise NoMapping(f"RelPosAttention with a {type(rel_pos).__name__} (the kind's bias is "
                        "RelPosMlp's)")
    if getattr(rel_pos, "bias_gain", None) is not None or \
            type(getattr(rel_pos, "bias_act", None)).__name__ != "Identity":
        raise NoMapping("RelPosMlp in 'swin' mode (16*sigmoid of the bias)")
    mlp = rel_pos.mlp
    fc1, fc2 = mlp.fc1, mlp.fc2
    if type(mlp.act).__name__ != "ReLU" or type(getattr(mlp, "norm", None)).__name__ != \
            "Identity" or fc1.in_features != 2 or fc2.out_features != heads or \
            fc1.bias is None or fc2.bias is None or fc2.in_features != fc1.out_features:
        raise NoMapping("a RelPosMlp whose MLP is not 2 -> hidden -> heads with biases and ReLU")
    if abs(mlp.drop1.p - MLP_DROPOUT) > 1e-12 or mlp.drop2.p:
        raise NoMapping(f"a RelPosMlp with dropouts {mlp.drop1.p}, {mlp.drop2.p}")
    return int(fc1.out_features)
