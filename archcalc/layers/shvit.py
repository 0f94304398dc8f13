"""SHViT's single-head self-attention (Yun & Ro 2024), as timm's shvit SHSA,
on a C x H x W map: the first ``pdim`` channels (a partial slice) through a
group norm of one group, a 1x1 conv (no bias) + batch norm to q and k of
``qk_dim`` channels each and v of ``pdim``; one head over the N = H*W
positions, scores q^T k / sqrt(qk_dim), softmax, weighted values; the
result concatenated with the C - pdim untouched channels, then ReLU and a
1x1 conv (no bias) + batch norm over all C channels.

Why one row: the attention reads a slice of the channels and writes it
back beside the rest (split, attention, concat), which a chain of rows
cannot say. Its figures are its inner layers' (``composite.py``) plus the
attention's two products.

MACs (FlopCounterMode's): N*pdim*(2*qk_dim + pdim) (qkv) + N^2*(qk_dim +
pdim) (scores, weighted values) + N*C^2 (projection)."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, register, Kind
from .composite import Composite, part


@register
class ShvitAttention(Composite, Kind):
    name = "shvit_attention"
    aliases = ("shsa",)
    torch_classes = ("ShvitAttention",)  # in shvit_torch.py
    primary = "pdim"
    inputs = "chw"
    summary = ("SHViT's single-head attention on the first pdim channels of a map (group "
               "norm, 1x1 conv + BN to q, k, v), concatenated with the rest, ReLU, 1x1 "
               "conv + BN")
    flops_rule = ("the parts' FLOPs (group norm, the two 1x1 convs and batch norms, softmax, "
                  "ReLU) + 2*N^2*(qk_dim + pdim) (the two products) + N^2 (the scale); "
                  "MACs = N*pdim*(2*qk_dim + pdim) + N^2*(qk_dim + pdim) + N*C^2, N = H*W")
    args = {
        "pdim": Arg("int", min=1, numeric=True,
                    doc="the channels attended (the first pdim; the rest pass through)"),
        "qk_dim": Arg("int", 16, min=1, numeric=True, doc="q's and k's channels"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the group norm and batch norms"),
    }
    arg_examples = {"pdim": (1, lambda x: x[0]), "qk_dim": (1, 3)}

    def output_shape(self, a, x):
        if isinstance(x[0], int) and a.pdim > x[0]:
            raise SpecError(f"shvit_attention: pdim {a.pdim} exceeds the input's {x[0]} "
                            f"channels. Received: pdim={a.pdim}")
        return tuple(x)

    def parts(self, a, x):
        c, h, w = x
        n = sym.norm(h * w)
        sliced = (a.pdim, h, w)
        qkv = part("conv", sliced, out=2 * a.qk_dim + a.pdim, kernel=(1, 1), padding=(0, 0),
                   bias=False)
        proj = part("conv", x, out=c, kernel=(1, 1), padding=(0, 0), bias=False)
        return [part("group_norm", sliced, groups=1, eps=a.eps), qkv,
                part("batch_norm", qkv.y, eps=a.eps), part("softmax", (n, n)),
                part("relu", x), proj, part("batch_norm", proj.y, eps=a.eps)]

    def params_formula(self, a, x):
        c, p, w = sym.plain(x[0]), a.pdim, 2 * a.qk_dim + a.pdim
        return (f"2*{p} (pre_norm) + {p}*{w} + 2*{w} (qkv conv, norm) + {c}*{c} + 2*{c} "
                "(proj conv, norm)")

    @staticmethod
    def products(a, x):
        """The attention's MACs: scores N x N over qk_dim, values pdim x N over N."""
        n = sym.norm(x[1] * x[2])
        return sym.norm(n * n * (a.qk_dim + a.pdim))

    def between(self, a, x):
        n = sym.norm(x[1] * x[2])
        return (Cost("mul", elements=sym.norm(n * n)),)    # the scores' scale

    def macs(self, a, x, y):
        return sym.norm(super().macs(a, x, y) + self.products(a, x))

    def flops(self, a, x, y):
        return sym.norm(super().flops(a, x, y) + 2 * self.products(a, x))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        # each product's two input gradients: twice its forward
        return sym.norm(super().backward_flops(a, x, y, needs_input_grad)
                        + 4 * self.products(a, x))

    def cost(self, a, x, y):
        """The parts' primitives, the scores' and the values' products, the
        scale, the concat of the attended slice and the rest."""
        c, h, w = x
        n = sym.norm(h * w)
        return (*super().cost(a, x, y),
                Cost("linear", gemm=(n, n, a.qk_dim)),
                Cost("linear", gemm=(a.pdim, n, n)),
                Cost("cat", elements=sym.norm(c * n)))

    def kept_between(self, a, x):
        # the products' operands: q, k, v (the batch norm's output, not kept by it)
        positions = sym.prod(x[1:])
        return ((sym.norm((2 * a.qk_dim + a.pdim) * positions), None),)

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)     # every position attends to the whole map

    def build(self, a, x):
        from .shvit_torch import ShvitAttention as Module
        return Module(x[0], a.qk_dim, a.pdim, a.eps)

    torch_modules = ("archcalc.layers.shvit_torch.ShvitAttention", "timm.models.shvit.SHSA")

    def from_torch(self, call, m):
        """archcalc's and timm's SHSA (pre_norm, qkv.c/bn, proj.0 ReLU, proj.1.c/bn)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "SHSA")
        c = call.x[0]
        qk, p = int(m.qk_dim), int(m.pdim)
        if int(m.dim) != c or p > c:
            raise NoMapping(f"an SHSA of width {m.dim} (pdim {p}) on {c} channels")
        if abs(float(m.scale) * qk ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"an SHSA scaled by {m.scale}")
        norm = m.pre_norm
        if not isinstance(norm, _torch_group_norm()) or (norm.num_groups, norm.num_channels) \
                != (1, p) or not norm.affine:
            raise NoMapping(f"an SHSA whose pre_norm is not an affine group norm of one group "
                            f"over {p} channels ({type(norm).__name__})")
        eps = {float(norm.eps), _conv_norm(m.qkv, p, 2 * qk + p)}
        if len(m.proj) != 2 or type(m.proj[0]).__name__ != "ReLU":
            raise NoMapping("an SHSA whose projection is not ReLU then conv + BN")
        eps.add(_conv_norm(m.proj[1], c, c))
        if len(eps) != 1:
            raise NoMapping(f"an SHSA whose norms differ in eps ({sorted(eps)})")
        eps = eps.pop()
        return row("shvit_attention", pdim=p, qk_dim=qk, **({"eps": eps} if eps != 1e-5 else {}))


def _torch_group_norm():
    from torch import nn
    return nn.GroupNorm


def _conv_norm(seq, cin, cout) -> float:
    """timm's shvit Conv2dNorm as the kind computes it (a 1x1 conv without a
    bias, an affine batch norm with statistics): its eps."""
    from .from_torch import NoMapping
    conv, bn = getattr(seq, "c", None), getattr(seq, "bn", None)
    if type(conv).__name__ != "Conv2d" or (
            conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is None) != \
            (cin, cout, (1, 1), (1, 1), (0, 0), (1, 1), 1, True):
        raise NoMapping(f"an SHSA whose conv is not 1x1 {cin} -> {cout} without a bias")
    if type(bn).__name__ != "BatchNorm2d" or not (bn.affine and bn.track_running_stats) or \
            bn.momentum is None:
        raise NoMapping(f"an SHSA whose norm is not a batch norm ({type(bn).__name__})")
    return float(bn.eps)


__all__ = ["ShvitAttention"]
