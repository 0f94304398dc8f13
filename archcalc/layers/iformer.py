"""Single-head modulation attention (iFormer, Zheng 2025), as timm's SHMA: on
a C x H x W map, q and k (1x1 conv + batch norm to A channels), v and a gate
(one 1x1 conv + batch norm to 2M, a sigmoid on both halves), one head of
softmax(q k^T / sqrt(A)) v over the P = H*W positions, times the gate, and a
1x1 conv + batch norm back to C. One row: the gate and the values are two
halves of one conv's output and the attention reads three tensors, which a
chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class ModulationAttention(Kind):
    name = "shma"
    torch_classes = ("ModulationAttention",)  # in iformer_torch.py
    aliases = ("single_head_modulation_attention",)
    primary = "attn"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("iFormer's single-head modulation attention on a map: one head over the "
               "H*W positions (q, k of A channels), its output times a sigmoid gate")
    flops_rule = ("2 x MACs + 2 per batch-normalized element (P*(2A + 2M + C)) + 4 per "
                  "sigmoid (P*2M) + 4 per score (P^2) + the gate's product (P*M); MACs = "
                  "P*C*(2A + 2M) + P^2*(A + M) + P*M*C, P = H*W")
    args = {
        "attn": Arg("int", None, min=1, doc="q's and k's channels A (default C/2)"),
        "mid": Arg("int", None, min=1, doc="v's and the gate's channels M (default C)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the four batch norms"),
    }
    arg_examples = {"attn": (None, 1, 4), "mid": (None, 2, 8)}

    @staticmethod
    def widths(a, x):
        """(A, M)."""
        c = x[0]
        return (a.attn if a.attn is not None else sym.norm(c // 2),
                a.mid if a.mid is not None else c)

    def output_shape(self, a, x):
        if a.attn is None and isinstance(x[0], int) and x[0] < 2:
            raise SpecError(f"shma: C/2 q and k channels of C = {x[0]}; give attn")
        return x

    def receptive_field(self, a, x, rf, jump):
        # every position sees every other
        return ((sym.norm(rf[0] + (x[1] - 1) * jump[0]), sym.norm(rf[1] + (x[2] - 1) * jump[1])),
                jump)

    def params(self, a, x):
        c = x[0]
        att, mid = self.widths(a, x)
        return sym.norm(2 * c * att + 2 * c * mid + mid * c + 2 * (2 * att + 2 * mid + c))

    def params_formula(self, a, x):
        c = sym.plain(x[0])
        att, mid = (sym.plain(v) for v in self.widths(a, x))
        return (f"2*{c}*{att} (q, k) + {c}*2*{mid} (v, gate) + {mid}*{c} (proj) "
                f"+ 2*(2*{att} + 2*{mid} + {c}) (batch norms)")

    def buffers(self, a, x):
        att, mid = self.widths(a, x)
        return sym.norm(2 * (2 * att + 2 * mid + x[0]))   # running mean and variance

    def macs(self, a, x, y):
        c, h, w = x
        att, mid = self.widths(a, x)
        p = h * w
        return sym.norm(p * c * (2 * att + 2 * mid) + p * p * (att + mid) + p * mid * c)

    def macs_formula(self, a, x, y):
        c, h, w = (sym.plain(v) for v in x)
        att, mid = (sym.plain(v) for v in self.widths(a, x))
        p = f"({h}*{w})"
        return f"{p}*{c}*(2*{att} + 2*{mid}) + {p}^2*({att} + {mid}) + {p}*{mid}*{c}"

    def flops(self, a, x, y):
        c, h, w = x
        att, mid = self.widths(a, x)
        p = h * w
        return sym.norm(2 * self.macs(a, x, y) + 2 * p * (2 * att + 2 * mid + c)
                        + 4 * p * 2 * mid + 4 * p * p + p * mid)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The q, k and v/gate 1x1 convs (GEMMs over P positions) and their
        norms, the sigmoid, the scores, the softmax, the weighted values, the
        gate's product, the projection and its norm."""
        c, h, w = x
        att, mid = self.widths(a, x)
        p = sym.norm(h * w)
        return (Cost("linear", gemm=(p, 2 * att + 2 * mid, c),
                     tensors=(c * att, c * att, 2 * c * mid)),
                Cost("batch_norm", elements=sym.norm(p * (2 * att + 2 * mid)),
                     tensors=(att, att, att, att, 2 * mid, 2 * mid)),
                Cost("sigmoid", elements=sym.norm(p * 2 * mid)),
                Cost("linear", gemm=(p, p, att)),
                Cost("softmax", elements=sym.norm(p * p)),
                Cost("linear", gemm=(p, mid, p)),
                Cost("mul", elements=sym.norm(p * mid)),
                Cost("linear", gemm=(p, c, mid), tensors=(mid * c,)),
                Cost("batch_norm", elements=sym.norm(p * c), tensors=(c, c)))

    def saved(self, a, x, y):
        # the input; q, k and v/gate before and after their norms; the
        # sigmoid's output; the attention's output; the product; proj's conv out
        c, h, w = x[0], x[1] if len(x) > 1 else 1, x[2] if len(x) > 2 else 1
        att, mid = self.widths(a, x)
        p = h * w
        return Saved(input=True, extra=((sym.norm(2 * p * (2 * att + 2 * mid)), None),
                                        (sym.norm(2 * p * mid), None), (sym.norm(p * mid), None),
                                        (sym.norm(p * mid), None), (sym.norm(p * c), None),
                                        (p, 4)))

    def build(self, a, x):
        from .iformer_torch import ModulationAttention as Module
        att, mid = self.widths(a, x)
        return Module(x[0], att, mid, a.eps)

    torch_modules = ("archcalc.layers.iformer_torch.ModulationAttention",
                     "timm.models.iformer.SHMA")

    def from_torch(self, call, m):
        """archcalc's and timm's SHMA (q, k, v_gate, proj: each c + bn), unwindowed."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "SHMA")
        if getattr(m, "window_size", 0):
            raise NoMapping(f"SHMA in windows of {m.window_size}")
        c = call.x[0]
        att, mid = m.q.c.out_channels, m.proj.c.in_channels
        eps = {float(m.q.bn.eps)}
        for part, cin, cout in ((m.q, c, att), (m.k, c, att), (m.v_gate, c, 2 * mid),
                                (m.proj, mid, c)):
            _check_conv_norm(part, cin, cout)
            eps.add(float(part.bn.eps))
        if len(eps) > 1 or type(m.gate_act).__name__ != "Sigmoid" or m.attn_drop.p:
            raise NoMapping("SHMA with norms of several eps, a gate other than a sigmoid, "
                            "or dropout")
        if abs(float(m.scale) * att ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"SHMA scaled by {m.scale}")
        found = {"attn": att if c < 2 or att != c // 2 else None,
                 "mid": mid if mid != c else None, "eps": eps.pop()}
        return row("shma", **{k: v for k, v in found.items()
                              if v is not None and v != self.args[k].default})


def _check_conv_norm(part, cin, cout):
    """timm's ConvNorm as the kind computes it: a 1x1 conv without a bias,
    then a BatchNorm2d with affine weights and running statistics."""
    from .from_torch import NoMapping
    conv, bn = part.c, part.bn
    if (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), conv.groups,
            conv.in_channels, conv.out_channels, conv.bias is None) != \
            ((1, 1), (1, 1), (0, 0), 1, cin, cout, True):
        raise NoMapping(f"SHMA with a conv other than 1x1 {cin} -> {cout} without a bias")
    if not (bn.affine and bn.track_running_stats) or bn.num_features != cout:
        raise NoMapping("SHMA with a batch norm without weights or running statistics")
