"""LowFormer's low-resolution attention (Nottebaum et al. 2025), as timm's
lowformer ConvAttention: on a C x H x W map, a depthwise k x k conv at
stride s and a batch norm (the map shrunk to h x w), a 1x1 conv to 3A
channels (A = heads*head_dim; per head, its q, k and v in turn), multi-head
attention over the h*w positions, then back up: a 1x1 conv A -> C (with a
bias) and a depthwise transposed conv, or (``fused``) one transposed conv
A -> C; the result cropped to H x W. Transposed kernel: 2s at stride s,
padding s//2 (3, stride 1, padding 1 where s = 1). One row: the heads read
interleaved channels of one conv's output."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register


@register
class LowResolutionAttention(Kind):
    name = "lowres_attention"
    torch_classes = ("LowResolutionAttention",)  # in lowformer_torch.py
    aliases = ("lowformer_attention",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("LowFormer's attention on a map shrunk by a strided depthwise conv, "
               "brought back by a transposed conv")
    flops_rule = ("2 x MACs + 2 per batch-normalized element (C*h*w) + 4 per score "
                  "(4*heads*(h*w)^2) + the biases; MACs = h*w*C*k^2 + h*w*C*3A + 2*(h*w)^2*A "
                  "+ the way back: h*w*A*C + h*w*C*t^2, or fused h*w*A*C*t^2 (t the "
                  "transposed kernel)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads"),
        "head_dim": Arg("int", min=1, doc="the width of a head (A = heads*head_dim)"),
        "stride": Arg("int", 4, min=1, doc="s: the depthwise conv's stride, the way back's"),
        "kernel": Arg("int", 7, min=1, doc="k: the depthwise conv's kernel (padding k//2)"),
        "fused": Arg("bool", False, doc="one transposed conv A -> C in place of the 1x1 "
                                        "conv and the depthwise transposed conv"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norm"),
    }
    arg_examples = {"heads": (1, 2), "head_dim": (1, 4), "stride": (1, 2), "kernel": (1, 3)}

    @staticmethod
    def transposed(a):
        """(kernel, padding) of the transposed conv."""
        return (3, 1) if a.stride == 1 else (2 * a.stride, a.stride // 2)

    def reduced(self, a, x):
        """h, w: the map the attention sees."""
        pad = a.kernel // 2
        return tuple(sym.norm((side + 2 * pad - a.kernel) // a.stride + 1) for side in x[1:])

    def output_shape(self, a, x):
        c = x[0]
        t, p = self.transposed(a)
        h, w = self.reduced(a, x)
        if any(isinstance(v, int) and v < 1 for v in (h, w)):
            raise SpecError(f"lowres_attention: a {x[1]} x {x[2]} map is too small for a "
                            f"{a.kernel} x {a.kernel} conv at stride {a.stride}")
        up = [sym.norm((v - 1) * a.stride - 2 * p + t) for v in (h, w)]
        if any(isinstance(u, int) and isinstance(v, int) and u < v for u, v in zip(up, x[1:])):
            raise SpecError(f"lowres_attention: the way back gives {up[0]} x {up[1]}, less than "
                            f"the input's {x[1]} x {x[2]} (the crop keeps the input's size)")
        return (c, x[1], x[2])

    def params(self, a, x):
        c, inner = x[0], a.heads * a.head_dim
        t, _ = self.transposed(a)
        back = inner * c * t * t + c if a.fused else inner * c + c + c * t * t + c
        return sym.norm(c * a.kernel * a.kernel + 2 * c + 3 * c * inner + back)

    def params_formula(self, a, x):
        c, inner = sym.plain(x[0]), a.heads * a.head_dim
        t, _ = self.transposed(a)
        back = f"({inner}*{c}*{t}*{t} + {c})" if a.fused else \
            f"({inner}*{c} + {c}) + ({c}*{t}*{t} + {c})"
        return f"{c}*{a.kernel}*{a.kernel} + 2*{c} + 3*{c}*{inner} + {back}"

    def buffers(self, a, x):
        return 2 * x[0]

    def macs(self, a, x, y):
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x)
        p = h * w
        t, _ = self.transposed(a)
        back = p * inner * c * t * t if a.fused else p * inner * c + p * c * t * t
        return sym.norm(p * c * a.kernel * a.kernel + p * c * 3 * inner + 2 * p * p * inner + back)

    def flops(self, a, x, y):
        c = x[0]
        h, w = self.reduced(a, x)
        p = h * w
        return sym.norm(2 * self.macs(a, x, y) + 2 * p * c + 4 * a.heads * p * p
                        + (c if a.fused else 2 * c) * x[1] * x[2])

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The depthwise conv and its norm, the 1x1 conv, the scores, the
        softmax, the weighted values, the way back."""
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x)
        p = sym.norm(h * w)
        t, _ = self.transposed(a)
        k, s = a.kernel, a.stride
        back = (Cost("conv", conv=(t, t, 1, 1, inner, c, x[1], x[2], 1), tensors=(inner * c * t * t, c)),) \
            if a.fused else (Cost("linear", gemm=(p, c, inner), tensors=(inner * c, c)),
                             Cost("conv", conv=(t, t, 1, 1, c, c, x[1], x[2], c),
                                  tensors=(c * t * t, c)))
        return (Cost("conv", conv=(k, k, s, s, c, c, h, w, c), tensors=(c * k * k,)),
                Cost("batch_norm", elements=sym.norm(p * c), tensors=(c, c)),
                Cost("linear", gemm=(p, 3 * inner, c), tensors=(3 * c * inner,)),
                Cost("linear", gemm=(p, p, inner)),
                Cost("softmax", elements=sym.norm(a.heads * p * p)),
                Cost("linear", gemm=(p, inner, p)), *back)

    def saved(self, a, x, y):
        # the input, the conv's and the norm's outputs, q, k, v, the heads'
        # output, the 1x1 conv's output (unfused), the softmax statistics
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x) if len(x) == 3 else (1, 1)
        p = h * w
        back = () if a.fused else ((sym.norm(p * c), None),)
        return Saved(input=True, extra=((sym.norm(2 * p * c), None), (sym.norm(3 * p * inner), None),
                                        (sym.norm(p * inner), None), *back,
                                        (sym.norm(a.heads * p), 4)))

    def build(self, a, x):
        from .lowformer_torch import LowResolutionAttention as Module
        return Module(x[0], a.heads, a.head_dim, a.stride, a.kernel, a.fused, a.eps)

    torch_modules = ("archcalc.layers.lowformer_torch.LowResolutionAttention",
                     "timm.models.lowformer.ConvAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's ConvAttention (conv_proj, pwise, o_proj, upsampling)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "ConvAttention")
        c, heads, hd, s = call.x[0], int(m.num_heads), int(m.head_dim), int(m.att_stride)
        inner = heads * hd
        conv, norm = m.conv_proj.conv, m.conv_proj.norm
        k = conv.kernel_size[0]
        if (tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), conv.groups,
                conv.in_channels, conv.out_channels, conv.bias is None) != \
                ((k, k), (s, s), (k // 2, k // 2), c, c, c, True) or \
                type(m.conv_proj.act).__name__ != "Identity":
            raise NoMapping("a ConvAttention whose conv_proj is not a depthwise k x k conv at "
                            "its stride, padding k//2, without a bias or an activation")
        if type(norm).__name__ != "BatchNorm2d" or not (norm.affine and norm.track_running_stats):
            raise NoMapping(f"a ConvAttention with a {type(norm).__name__}")
        pw = m.pwise
        if (pw.in_channels, pw.out_channels, tuple(pw.kernel_size), pw.groups, pw.bias is None) \
                != (c, 3 * inner, (1, 1), 1, True) or int(m.num_keys) != 3:
            raise NoMapping("a ConvAttention whose pwise is not a 1x1 conv to 3 x heads x head_dim")
        if abs(float(m.scale) * hd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"a ConvAttention scaled by {m.scale}")
        fused = type(m.o_proj).__name__ == "Identity"
        _check_way_back(m, c, inner, s, fused)
        found = {"heads": heads, "head_dim": hd, "stride": s, "kernel": k, "fused": fused,
                 "eps": float(norm.eps)}
        return row("lowres_attention", **{k: v for k, v in found.items()
                                          if k in ("heads", "head_dim") or
                                          v != self.args[k].default})


def _check_way_back(m, c, inner, s, fused):
    """o_proj (1x1 A -> C with a bias, or none where fused) and the
    transposed conv the kind computes (depthwise C -> C, or A -> C fused)."""
    from .from_torch import NoMapping
    t, p = (3, 1) if s == 1 else (2 * s, s // 2)
    up = m.upsampling
    cin, groups = (inner, 1) if fused else (c, c)
    if (type(up).__name__, up.in_channels, up.out_channels, tuple(up.kernel_size),
            tuple(up.stride), tuple(up.padding), tuple(up.output_padding), up.groups,
            up.bias is not None) != ("ConvTranspose2d", cin, c, (t, t), (s, s), (p, p), (0, 0),
                                     groups, True):
        raise NoMapping("a ConvAttention whose upsampling is not the transposed conv "
                        f"{cin} -> {c} of kernel {t}, stride {s}, padding {p}")
    if not fused:
        o = m.o_proj
        if (o.in_channels, o.out_channels, tuple(o.kernel_size), o.groups, o.bias is not None) \
                != (inner, c, (1, 1), 1, True):
            raise NoMapping("a ConvAttention whose o_proj is not a 1x1 conv with a bias")
