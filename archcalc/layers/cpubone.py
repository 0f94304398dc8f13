"""CPUBone's attention (Nottebaum et al. 2026), as timm's cpubone
ConvAttention: LowFormer's low-resolution attention (``lowformer.py``) with
CPUBone's two changes. On a C x H x W map, a depthwise k x k conv at stride
s and a batch norm shrink the map to h x w = ceil(H/s) x ceil(W/s); a 1x1
conv to 3A channels (A = heads*head_dim; per head its q, k and v in turn);
multi-head attention over the h*w positions; then back up, cropped to H x W:

- ``upsampling = "transpose"``: a 1x1 conv A -> C (with a bias) and a
  depthwise transposed conv, or (``fused``) one transposed conv A -> C;
  kernel 2s at stride s, padding s//2 (3, stride 1, padding 1 where s = 1);
- ``upsampling = "nearest"``: a 1x1 conv A -> C (with a bias; timm's
  ``upsampling.0`` where ``fused``, else ``o_proj``) and a nearest upsample
  by s (none where s = 1).

``kernel = 2`` is CPUBone's small kernel: the map is first padded on the
right and bottom to a multiple of s (where s > 1), and the 2 x 2 conv pads
one row and column on the top and left (where s != 2). Else the kernel is
odd, padding k//2.

MACs (FlopCounterMode's): h*w*C*k^2 (depthwise) + h*w*C*3A (1x1) +
2*(h*w)^2*A (scores, weighted values) + the way back: h*w*A*C + h*w*C*t^2
(transpose), h*w*A*C*t^2 (transpose, fused), h*w*A*C (nearest); the
upsample, pads and crop are copies."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4
UPSAMPLES = ("transpose", "nearest")
SDPA_MISSED = ("fvcore has no handler for aten::scaled_dot_product_attention (the two "
               "attention matmuls, 2*(h*w)^2*A)")


@register
class CPUBoneAttention(Kind):
    name = "cpubone_attention"
    torch_classes = ("CPUBoneAttention",)  # in cpubone_torch.py
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("CPUBone's attention on a map shrunk by a strided depthwise conv (a 2 x 2 "
               "small kernel or an odd one), brought back by a transposed conv or a 1x1 "
               "conv and a nearest upsample")
    flops_rule = ("2 x MACs + 2 per batch-normalized element (C*h*w) + 4 per score "
                  "(4*heads*(h*w)^2) + the biases; MACs = h*w*C*k^2 + h*w*C*3A + 2*(h*w)^2*A "
                  "+ the way back: h*w*A*C + h*w*C*t^2 (transpose), h*w*A*C*t^2 (fused), "
                  "h*w*A*C (nearest)")
    args = {
        "heads": Arg("int", min=1, doc="attention heads"),
        "head_dim": Arg("int", min=1, doc="the width of a head (A = heads*head_dim)"),
        "stride": Arg("int", 4, min=1, doc="s: the depthwise conv's stride, the way back's"),
        "kernel": Arg("int", 7, min=1, doc="k: the depthwise conv's kernel: odd (padding "
                                           "k//2) or 2 (CPUBone's small kernel)"),
        "fused": Arg("bool", False, doc="the 1x1 conv A -> C folded into the way back "
                                        "(timm: fuse_out_proj)"),
        "upsampling": Arg("str", "transpose", choices=UPSAMPLES,
                        doc="the way back: a transposed conv, or a nearest upsample"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norm"),
    }
    arg_examples = {"heads": (1, 2), "head_dim": (1, 4), "stride": (1, 2, 3),
                    "kernel": (1, 2, 3)}

    @staticmethod
    def transposed(a):
        """(kernel, padding) of the transposed conv."""
        return (3, 1) if a.stride == 1 else (2 * a.stride, a.stride // 2)

    @staticmethod
    def reduced(a, x):
        """h, w: the map the attention sees (each ceil(side / s) for every kernel)."""
        if a.kernel != 2 and a.kernel % 2 == 0:
            raise SpecError(f"cpubone_attention: kernel must be odd or 2. Received: "
                            f"kernel={a.kernel}")
        return tuple(sym.ceildiv(side, a.stride) for side in x[1:])

    def padded(self, a, x):
        """The conv's input sides where the small kernel pads the map, else None:
        the multiple of s (s > 1), plus one row and column (s != 2)."""
        if a.kernel != 2:
            return None
        h, w = self.reduced(a, x)
        if a.stride == 2 and all(isinstance(v, int) and v % 2 == 0 for v in x[1:]):
            return None     # a map of even sides is neither padded nor copied
        sides = [sym.norm(v * a.stride) for v in (h, w)] if a.stride > 1 else list(x[1:])
        return tuple(sym.norm(v + (a.stride != 2)) for v in sides)

    def way_back(self, a, x):
        """The uncropped output's sides."""
        h, w = self.reduced(a, x)
        if a.upsampling == "nearest":
            return tuple(sym.norm(v * a.stride) for v in (h, w))
        t, p = self.transposed(a)
        return tuple(sym.norm((v - 1) * a.stride - 2 * p + t) for v in (h, w))

    def output_shape(self, a, x):
        self.reduced(a, x)
        return tuple(x)

    def size_arithmetic(self, a, x):
        h, w = self.reduced(a, x)
        return [f"ceil({sym.plain(x[1])}/{a.stride}) x ceil({sym.plain(x[2])}/{a.stride}) = "
                f"{sym.fmt_int(h)} x {sym.fmt_int(w)} positions attended, cropped back to "
                f"{sym.plain(x[1])} x {sym.plain(x[2])}"]

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)

    def back_params(self, a, c, inner):
        t, _ = self.transposed(a)
        if a.upsampling == "nearest":
            return inner * c + c
        return inner * c * t * t + c if a.fused else inner * c + c + c * t * t + c

    def params(self, a, x):
        c, inner = x[0], a.heads * a.head_dim
        return sym.norm(c * a.kernel * a.kernel + 2 * c + 3 * c * inner
                        + self.back_params(a, c, inner))

    def params_formula(self, a, x):
        c, inner = sym.plain(x[0]), a.heads * a.head_dim
        t, _ = self.transposed(a)
        back = f"({inner}*{c} + {c})" if a.upsampling == "nearest" else \
            f"({inner}*{c}*{t}*{t} + {c})" if a.fused else \
            f"({inner}*{c} + {c}) + ({c}*{t}*{t} + {c})"
        return f"{c}*{a.kernel}*{a.kernel} + 2*{c} + 3*{c}*{inner} + {back}"

    def buffers(self, a, x):
        return 2 * x[0]

    def macs(self, a, x, y):
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x)
        p = h * w
        t, _ = self.transposed(a)
        back = p * inner * c if a.upsampling == "nearest" else \
            p * inner * c * t * t if a.fused else p * inner * c + p * c * t * t
        return sym.norm(p * c * a.kernel * a.kernel + p * c * 3 * inner + 2 * p * p * inner + back)

    def macs_missed_by(self, a, x, y):
        h, w = self.reduced(a, x)
        return {"fvcore": (sym.norm(2 * (h * w) ** 2 * a.heads * a.head_dim), SDPA_MISSED)}

    def flops(self, a, x, y):
        c = x[0]
        h, w = self.reduced(a, x)
        p = h * w
        ho, wo = self.way_back(a, x)
        # biases: the 1x1 conv's on h x w, the transposed conv's on its output
        biases = p * c if a.upsampling == "nearest" else \
            c * ho * wo + (0 if a.fused else p * c)
        return sym.norm(2 * self.macs(a, x, y) + 2 * p * c + 4 * a.heads * p * p + biases)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The small kernel's pads, the depthwise conv and its norm, the 1x1
        conv, the scores, the softmax, the weighted values, the way back."""
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x)
        p = sym.norm(h * w)
        k, s = a.kernel, a.stride
        padded = self.padded(a, x)
        pads = (Cost("copy", elements=sym.norm(c * padded[0] * padded[1])),) if padded else ()
        return (*pads,
                Cost("conv", conv=(k, k, s, s, c, c, h, w, c), tensors=(c * k * k,)),
                Cost("batch_norm", elements=sym.norm(p * c), tensors=(c, c)),
                Cost("linear", gemm=(p, 3 * inner, c), tensors=(3 * c * inner,)),
                Cost("linear", gemm=(p, p, inner)),
                Cost("softmax", elements=sym.norm(a.heads * p * p)),
                Cost("linear", gemm=(p, inner, p)), *self.back_cost(a, x))

    def back_cost(self, a, x):
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x)
        p = sym.norm(h * w)
        t, _ = self.transposed(a)
        one = Cost("linear", gemm=(p, c, inner), tensors=(inner * c, c))
        if a.upsampling == "nearest":
            ho, wo = self.way_back(a, x)
            return (one, Cost("copy", elements=sym.norm(c * ho * wo))) if a.stride > 1 else (one,)
        if a.fused:
            return (Cost("conv", conv=(t, t, 1, 1, inner, c, x[1], x[2], 1),
                         tensors=(inner * c * t * t, c)),)
        return (one, Cost("conv", conv=(t, t, 1, 1, c, c, x[1], x[2], c), tensors=(c * t * t, c)))

    def saved(self, a, x, y):
        # the input (or the small kernel's padded copy, the conv's input), the
        # conv's and the norm's outputs, q, k, v, the heads' output, the 1x1
        # conv's output (the depthwise transposed conv's input), the softmax
        # statistics; a nearest upsample keeps nothing
        c, inner = x[0], a.heads * a.head_dim
        h, w = self.reduced(a, x) if len(x) == 3 else (1, 1)
        p = h * w
        padded = self.padded(a, x) if len(x) == 3 else None
        pads = ((sym.norm(c * padded[0] * padded[1]), None),) if padded else ()
        back = ((sym.norm(p * c), None),) if a.upsampling == "transpose" and not a.fused else ()
        return Saved(input=not pads, extra=(*pads, (sym.norm(2 * p * c), None),
                                        (sym.norm(3 * p * inner), None),
                                        (sym.norm(p * inner), None), *back,
                                        (sym.norm(a.heads * p), FP32)))

    def build(self, a, x):
        from .cpubone_torch import CPUBoneAttention as Module
        self.reduced(a, x)
        return Module(x[0], a.heads, a.head_dim, a.stride, a.kernel, a.fused, a.upsampling, a.eps)

    torch_modules = ("archcalc.layers.cpubone_torch.CPUBoneAttention",
                     "timm.models.cpubone.ConvAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's CPUBone ConvAttention (conv_proj, pwise,
        o_proj, upsampling)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "ConvAttention")
        c, heads, hd, s = call.x[0], int(m.num_heads), int(m.head_dim), int(m.att_stride)
        inner = heads * hd
        k = _check_conv_proj(m, c, s)
        pw = m.pwise
        if (pw.in_channels, pw.out_channels, tuple(pw.kernel_size), pw.groups, pw.bias is None) \
                != (c, 3 * inner, (1, 1), 1, True) or int(m.num_keys) != 3 or \
                int(m.o_proj_inpdim) != inner:
            raise NoMapping("a ConvAttention whose pwise is not a 1x1 conv to 3 x heads x head_dim")
        if abs(float(m.scale) * hd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"a ConvAttention scaled by {m.scale}")
        fused = type(m.o_proj).__name__ == "Identity"
        upsample = _check_way_back(m, c, inner, s, fused)
        found = {"heads": heads, "head_dim": hd, "stride": s, "kernel": k, "fused": fused,
                 "upsampling": upsample, "eps": float(m.conv_proj.norm.eps)}
        return row("cpubone_attention", **{k: v for k, v in found.items()
                                           if k in ("heads", "head_dim") or
                                           v != self.args[k].default})


def _is_conv(m, cin, cout, kernel, stride, padding, groups, bias):
    return type(m).__name__ == "Conv2d" and \
        (m.in_channels, m.out_channels, tuple(m.kernel_size), tuple(m.stride), tuple(m.padding),
         tuple(m.dilation), m.groups, m.bias is not None, m.padding_mode) == \
        (cin, cout, (kernel, kernel), (stride, stride), (padding, padding), (1, 1), groups,
         bias, "zeros")


def _check_conv_proj(m, c, s):
    """conv_proj: a depthwise k x k conv at the stride without a bias (k odd,
    padding k//2; or the small 2 x 2 kernel, after a (1, 0, 1, 0) zero pad
    where s != 2), a batch norm, no activation. Returns k."""
    from .from_torch import NoMapping
    proj = m.conv_proj
    conv, pad = proj.conv, None
    if type(conv).__name__ == "Sequential" and len(conv) == 2:
        pad, conv = conv[0], conv[1]
    k = conv.kernel_size[0] if type(conv).__name__ == "Conv2d" else 0
    small = bool(m.small_kernels)
    if small != (k == 2):
        raise NoMapping("a ConvAttention whose small_kernels and 2 x 2 conv do not go together")
    want_pad = k == 2 and s != 2
    if not _is_conv(conv, c, c, k, s, 0 if k == 2 else k // 2, c, False) or \
            (k != 2 and k % 2 == 0) or (pad is not None) != want_pad or \
            (pad is not None and (type(pad).__name__ != "ZeroPad2d" or
                                  tuple(pad.padding) != (1, 0, 1, 0))) or \
            type(proj.act).__name__ not in ("NoneType", "Identity"):
        raise NoMapping("a ConvAttention whose conv_proj is not a depthwise conv at its stride "
                        "(k odd, padding k//2, or the small 2 x 2 kernel), without a bias or "
                        "an activation")
    norm = proj.norm
    if type(norm).__name__ != "BatchNorm2d" or not (norm.affine and norm.track_running_stats):
        raise NoMapping(f"a ConvAttention with a {type(norm).__name__}")
    return k


def _check_way_back(m, c, inner, s, fused):
    """o_proj (1x1 A -> C with a bias, or none where fused) and the way back
    the kind computes: the transposed conv (depthwise C -> C, or A -> C
    fused), or [the fused 1x1 conv,] a nearest upsample by s (Identity at
    s = 1). Returns the upsample's mode."""
    from .from_torch import NoMapping
    up = m.upsampling
    if not fused and not _is_conv(m.o_proj, inner, c, 1, 1, 0, 1, True):
        raise NoMapping("a ConvAttention whose o_proj is not a 1x1 conv with a bias")
    if type(up).__name__ == "Sequential":
        items = list(up)
        if fused and (not items or not _is_conv(items.pop(0), inner, c, 1, 1, 0, 1, True)):
            raise NoMapping("a ConvAttention whose fused upsampling does not open with a 1x1 "
                            "conv with a bias")
        last = items[0] if len(items) == 1 else None
        name = type(last).__name__
        if not (name == "Identity" and s == 1 or name == "Upsample" and last.mode == "nearest"
                and last.size is None and last.scale_factor == float(s) and s > 1
                and not last.recompute_scale_factor):
            raise NoMapping(f"a ConvAttention whose upsampling is not a nearest upsample by {s}")
        return "nearest"
    t, p = (3, 1) if s == 1 else (2 * s, s // 2)
    cin, groups = (inner, 1) if fused else (c, c)
    if (type(up).__name__, up.in_channels, up.out_channels, tuple(up.kernel_size),
            tuple(up.stride), tuple(up.padding), tuple(up.output_padding), tuple(up.dilation),
            up.groups, up.bias is not None) != ("ConvTranspose2d", cin, c, (t, t), (s, s), (p, p),
                                                (0, 0), (1, 1), groups, True):
        raise NoMapping("a ConvAttention whose upsampling is not the transposed conv "
                        f"{cin} -> {c} of kernel {t}, stride {s}, padding {p}")
    return "transpose"
