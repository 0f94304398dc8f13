"""EfficientFormer's attention (Li et al. 2022, timm's efficientformer
Attention, the last stage's token mixer): on the N = h*w tokens of a fixed
grid, one linear layer with a bias gives each head's q and k (key_dim each)
and v (val_dim), interleaved per head as in LeViT; scores q k^T /
sqrt(key_dim) plus a learned bias per head and |dy|, |dx| offset
(``attention_biases``, heads x h*w, gathered by a fixed index); softmax;
weighted values; a linear projection with a bias back to D. No norm, no
activation (LeViT's linear form has both: ``levit_attention``).

MACs (FlopCounterMode's): qkv N*D*heads*(2*key_dim + val_dim), scores and
weighted values heads*N^2*(key_dim + val_dim), projection N*heads*val_dim*D."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class EfficientFormerAttention(Kind):
    name = "efficientformer_attention"
    torch_classes = ("EfficientFormerAttention",)  # in efficientformer_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("EfficientFormer's attention on the N x D tokens of a fixed grid: one "
               "linear for q, k, v, a learned bias per head and offset, a projection")
    flops_rule = ("2 x MACs + 5 per score (scale, bias, exp, sum, divide: 5*heads*N^2) + "
                  "the biases (N*heads*(2*key_dim + val_dim) + N*D); MACs = "
                  "N*D*heads*(2*key_dim + val_dim) + heads*N^2*(key_dim + val_dim) + "
                  "N*heads*val_dim*D")
    args = {
        "heads": Arg("int", min=1, doc="attention heads"),
        "key_dim": Arg("int", min=1, doc="q's and k's width per head"),
        "val_dim": Arg("int", min=1, doc="v's width per head"),
        "grid": Arg("pair", min=1, numeric=True,
                    doc="the tokens' [h, w] grid (h*w = N): the biases' offsets"),
    }
    arg_examples = {"heads": (1, 2), "key_dim": (1, 4), "val_dim": (2, 4),
                    "grid": (lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def output_shape(self, a, x):
        h, w = a.grid
        if isinstance(x[0], int) and h * w != x[0]:
            raise SpecError(f"efficientformer_attention: a {h} x {w} grid has {h * w} "
                            f"positions, but there are {x[0]} tokens. Received: grid={[h, w]}")
        return x

    def params(self, a, x):
        d, h, kd, vd = x[1], a.heads, a.key_dim, a.val_dim
        width = h * (2 * kd + vd)
        return sym.norm(d * width + width + h * vd * d + d + h * a.grid[0] * a.grid[1])

    def params_formula(self, a, x):
        d, h, kd, vd = sym.plain(x[1]), a.heads, a.key_dim, a.val_dim
        width = h * (2 * kd + vd)
        return (f"({d}*{width} + {width}) (qkv) + ({h * vd}*{d} + {d}) (projection) + "
                f"{h}*{a.grid[0]}*{a.grid[1]} (attention biases)")

    def macs(self, a, x, y):
        n, d = x
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        return sym.norm(n * d * h * (2 * kd + vd) + h * n * n * (kd + vd) + n * h * vd * d)

    def flops(self, a, x, y):
        n, d = x
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        return sym.norm(2 * self.macs(a, x, y) + 5 * h * n * n + n * h * (2 * kd + vd) + n * d)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """qkv, the scores (with the gathered biases), the softmax, the
        weighted values, the projection."""
        n, d = x
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        p = sym.norm(a.grid[0] * a.grid[1])
        return (Cost("linear", gemm=(n, h * (2 * kd + vd), d), tensors=(d * h * (2 * kd + vd),)),
                Cost("linear", gemm=(h * n, n, kd), tensors=(h * p,)),
                Cost("softmax", elements=sym.norm(h * n * n)),
                Cost("linear", gemm=(h * n, vd, n)),
                Cost("linear", gemm=(n, d, h * vd), tensors=(h * vd * d,)))

    def saved(self, a, x, y):
        # the input, qkv's output, the scores' softmax output, the weighted
        # values (the projection's input)
        n = x[0]
        h, kd, vd = a.heads, a.key_dim, a.val_dim
        return Saved(input=True, extra=((sym.norm(n * h * (2 * kd + vd)), None),
                                        (sym.norm(h * n * n), None),
                                        (sym.norm(n * h * vd), None)))

    def build(self, a, x):
        from .efficientformer_torch import EfficientFormerAttention as Module
        return Module(x[1], a.heads, a.key_dim, a.val_dim, tuple(a.grid))

    torch_modules = ("archcalc.layers.efficientformer_torch.EfficientFormerAttention",
                     "timm.models.efficientformer.Attention")

    def from_torch(self, call, m):
        """archcalc's and timm's efficientformer Attention on the tokens of
        its grid."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"EfficientFormer attention on a {len(call.x)}-d input")
        n, d = call.x
        h, kd = int(m.num_heads), int(m.key_dim)
        vd = int(m.val_dim)
        grid = _grid(m)
        if grid[0] * grid[1] != n:
            raise NoMapping(f"EfficientFormer attention of a {grid} grid on {n} tokens")
        if abs(float(m.scale) * kd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"EfficientFormer attention scaled by {m.scale}")
        qkv, proj = m.qkv, m.proj
        if (qkv.in_features, qkv.out_features, qkv.bias is not None) != \
                (d, h * (2 * kd + vd), True) or \
                (proj.in_features, proj.out_features, proj.bias is not None) != \
                (h * vd, d, True):
            raise NoMapping(f"EfficientFormer attention whose linears are not {d} -> "
                            f"{h * (2 * kd + vd)} and {h * vd} -> {d}, with biases")
        return row("efficientformer_attention", heads=h, key_dim=kd, val_dim=vd, grid=grid)


def _grid(m):
    """The [h, w] grid the biases were made for (timm keeps no resolution):
    the factors of their h*w positions whose offsets the index holds; on the
    meta device, whose buffers hold no values, the square."""
    from .from_torch import NoMapping
    from .efficientformer_torch import EfficientFormerAttention
    import torch
    p = int(m.attention_biases.shape[1])
    idxs = m.attention_bias_idxs
    if tuple(idxs.shape) != (p, p):
        raise NoMapping(f"EfficientFormer attention whose bias index is {tuple(idxs.shape)} "
                        f"for {p} positions")
    if idxs.device.type == "meta":
        side = round(p ** 0.5)
        if side * side != p:
            raise NoMapping(f"EfficientFormer attention of {p} positions on the meta device "
                            "(its grid is not a square: import on the CPU)")
        return [side, side]
    for h in range(1, p + 1):
        if p % h == 0 and torch.equal(idxs.cpu(),
                                                 EfficientFormerAttention.bias_index((h, p // h))):
            return [h, p // h]
    raise NoMapping("EfficientFormer attention whose bias index is not the |dy|, |dx| "
                    "offsets of a grid")


__all__ = ["EfficientFormerAttention"]
