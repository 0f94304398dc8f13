"""CondConv's inverted residual (Yang et al. 2019, CondConv; timm's
CondConvResidual, the efficientnet_cc models): a routing vector of E experts
per sample (global average pool, a linear layer, sigmoid) mixes each of the
block's three convolutions from E expert kernels (the sample's kernel = the
routing weights times the experts); then as MobileNetV2's block: a 1x1 (or
exp_kernel) expansion to ``expand`` channels, batch norm and activation, a
depthwise k x k conv at the stride, batch norm and activation, an optional
squeeze-and-excitation, a 1x1 projection to ``out``, batch norm; the input
added where the shape allows. One row: its three convs read the routing
vector beside their input, which a chain of rows cannot say.

MACs (FlopCounterMode's, per sample): the routing's linear C*E, each conv's
kernel mixing E*(its weight count) and the conv itself, the SE's two 1x1
convs. TensorFlow's "same" padding (the tf_ models) pads each conv for its
input."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register
from .composite import Composite, between, part
from .pad import same_padding

ACTIVATIONS = ("relu", "silu")
TORCH_ACTIVATIONS = {"ReLU": "relu", "SiLU": "silu"}


@register
class CondConvBlock(Composite, Kind):
    name = "cond_conv_block"
    torch_classes = ("CondConvBlock",)  # in cond_conv_torch.py
    aliases = ("cond_conv_residual",)
    primary = "out"
    summary = ("CondConv's inverted residual: per-sample kernels mixed from E experts "
               "(routing: pool, linear, sigmoid) for its expansion, depthwise and "
               "projection convs, batch norms, SE, the skip")
    flops_rule = ("the parts' FLOPs (routing linear and sigmoid, the three convs, batch "
                  "norms, activations, SE) + 2*E*(weights) per conv (the kernel mixing) + "
                  "C*H*W (the routing's pool) + out*Ho*Wo (the skip's add, where added); "
                  "MACs: the parts' + E*(weights) per conv")
    inputs = "chw"
    args = {
        "out": Arg("int", None, min=1, numeric=True, doc="output channels (default C)"),
        "experts": Arg("int", 4, min=1, doc="expert kernels per conv (timm: num_experts)"),
        "expand": Arg("int", None, min=1, numeric=True,
                      doc="the expansion's channels (default C)"),
        "kernel": Arg("int", 3, min=1, doc="the depthwise conv's kernel"),
        "stride": Arg("int", 1, min=1, doc="the depthwise conv's"),
        "exp_kernel": Arg("int", 1, min=1, doc="the expansion conv's kernel"),
        "pw_kernel": Arg("int", 1, min=1, doc="the projection conv's kernel"),
        "squeeze": Arg("int", None, min=1, doc="the SE's channels (none: no SE)"),
        "activation": Arg("str", "silu", choices=ACTIVATIONS),
        "same": Arg("bool", False, doc="TensorFlow's 'same' padding (timm's tf_ models) "
                                       "rather than k // 2"),
        "skip": Arg("bool", True, doc="add the input where stride 1 and out = C"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the batch norms"),
    }
    arg_examples = {"out": (None, 4), "expand": (None, 6), "kernel": (1, 3), "stride": (1, 2),
                    "experts": (1, 3), "squeeze": (None, 2), "exp_kernel": (1, 3)}

    @staticmethod
    def widths(a, x):
        c = x[0]
        return c, (c if a.expand is None else a.expand), (c if a.out is None else a.out)

    def convs(self, a, x):
        """Each conv's parts: [pad] conv, as (parts, weights of one expert)."""
        c, mid, out = self.widths(a, x)
        out_convs = []
        shape = tuple(x)
        for cin, cout, k, s, groups in ((c, mid, a.exp_kernel, 1, 1),
                                        (mid, mid, a.kernel, a.stride, mid),
                                        (mid, out, a.pw_kernel, 1, 1)):
            parts = []
            if a.same and not (s == 1 and (k - 1) % 2 == 0):
                if not all(isinstance(d, int) for d in shape[1:]):
                    raise SpecError("cond_conv_block: TensorFlow's same padding at a stride "
                                    "needs the map's size as numbers")
                (top, bottom), (left, right) = (same_padding(d, k, s, 1) for d in shape[1:])
                pad = part("pad", shape, height=(top, bottom), width=(left, right))
                parts.append(pad)
                shape, padding = pad.y, (0, 0)
            else:
                padding = ((s - 1) + (k - 1)) // 2 if not a.same else (k - 1) // 2
                padding = (padding, padding)
            conv = part("conv", shape, out=cout, kernel=(k, k), stride=(s, s), padding=padding,
                        groups=groups, bias=False)
            parts.append(conv)
            shape = conv.y
            out_convs.append((parts, sym.norm(cout * sym.exact_div(cin, groups) * k * k)))
        return out_convs

    def parts(self, a, x):
        c, mid, out = self.widths(a, x)
        (pw, _), (dw, _), (pwl, _) = self.convs(a, x)
        routing = part("fc", (c,), out=a.experts)
        parts = [routing, part("sigmoid", routing.y), *pw]
        y = pw[-1].y
        parts += [part("batch_norm", y, eps=a.eps), part(a.activation, y), *dw]
        y = dw[-1].y
        parts += [part("batch_norm", y, eps=a.eps), part(a.activation, y)]
        if a.squeeze is not None:
            parts.append(part("se", y, squeeze=a.squeeze, activation=a.activation,
                              gate="sigmoid"))
        parts += [*pwl, part("batch_norm", pwl[-1].y, eps=a.eps)]
        return parts

    def skipped(self, a, x, y) -> bool:
        return a.skip and a.stride == 1 and tuple(y) == tuple(x)

    def output_shape(self, a, x):
        return self.parts(a, x)[-1].y

    def mixing(self, a, x):
        """One expert's weights per conv: the mixing's MACs are E times them."""
        return sym.norm(sum(w for _, w in self.convs(a, x)))

    def params(self, a, x):
        return sym.norm(super().params(a, x) + (a.experts - 1) * self.mixing(a, x))

    def macs(self, a, x, y):
        return sym.norm(super().macs(a, x, y) + a.experts * self.mixing(a, x))

    def flops(self, a, x, y):
        return sym.norm(super().flops(a, x, y) + 2 * a.experts * self.mixing(a, x))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(super().backward_flops(a, x, y, needs_input_grad)
                        + 4 * a.experts * self.mixing(a, x))

    def between(self, a, x):
        y = self.parts(a, x)[-1].y
        return between(("global_avgpool", sym.prod(x)),
                       *((("add", sym.prod(y)),) if self.skipped(a, x, y) else ()))

    def cost(self, a, x, y):
        """The parts' primitives, then each conv's kernel mixing (a GEMM of the
        routing vector and the experts, the E - 1 other experts' weights)."""
        mixing = tuple(Cost("linear", gemm=(1, w, a.experts), tensors=((a.experts - 1) * w,))
                       for _, w in self.convs(a, x))
        return (*super().cost(a, x, y), *mixing)

    def build(self, a, x):
        from .cond_conv_torch import CondConvBlock as Module
        c, mid, out = self.widths(a, x)
        return Module(c, out, mid, a.experts, a.kernel, a.stride, a.exp_kernel, a.pw_kernel,
                      a.squeeze, {"relu": "ReLU", "silu": "SiLU"}[a.activation], a.same,
                      self.skipped(a, x, self.output_shape(a, x)), a.eps)

    torch_modules = ("archcalc.layers.cond_conv_torch.CondConvBlock",
                     "timm.models._efficientnet_blocks.CondConvResidual")

    def from_torch(self, call, m):
        """archcalc's and timm's CondConvResidual (the same submodule names)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "CondConvResidual")
        c = call.x[0]
        if type(m).__module__.startswith("archcalc."):    # archcalc's own: its arguments
            (channels, out, mid, experts, kernel, stride, exp_kernel, pw_kernel, squeeze,
             activation, same, skip, eps) = m.init_args
            if channels != c:
                raise NoMapping(f"CondConvBlock of {channels} channels on {c}")
            args = dict(out=out, experts=experts, expand=mid, kernel=kernel, stride=stride,
                        exp_kernel=exp_kernel, pw_kernel=pw_kernel, squeeze=squeeze,
                        activation=TORCH_ACTIVATIONS[activation], same=same,
                        skip=skip or not (stride == 1 and out == c), eps=eps)
            defaults = {k: arg.default for k, arg in self.args.items()}
            defaults.update(out=c, expand=c)
            return row("cond_conv_block", **{k: v for k, v in args.items()
                                              if k == "out" or v != defaults[k]})
        pw, dw, pwl = m.conv_pw, m.conv_dw, m.conv_pwl
        mid, out, experts = pw.out_channels, pwl.out_channels, int(m.num_experts)
        # timm pads 'same' statically where it can ((k - 1) // 2 at stride 1),
        # dynamically elsewhere: one dynamic conv says the block's padding
        same = any(bool(conv.dynamic_padding) for conv in (pw, dw, pwl))
        for conv in (pw, dw, pwl):
            k, s = conv.kernel_size[0], conv.stride[0]
            p = (k - 1) // 2 if same else ((s - 1) + (k - 1)) // 2
            if not conv.dynamic_padding and tuple(conv.padding) != (p, p):
                raise NoMapping(f"a CondConvResidual whose convs pad {tuple(conv.padding)}")
        act = {TORCH_ACTIVATIONS.get(type(bn.act).__name__) for bn in (m.bn1, m.bn2)}
        if len(act) != 1 or None in act or type(m.bn3.act).__name__ != "Identity":
            raise NoMapping("a CondConvResidual whose norms' activations differ")
        if len({float(bn.eps) for bn in (m.bn1, m.bn2, m.bn3)}) != 1 or any(
                type(bn.drop).__name__ != "Identity" or not bn.affine
                for bn in (m.bn1, m.bn2, m.bn3)):
            raise NoMapping("a CondConvResidual whose batch norms differ")
        shapes_ok = pw.in_channels == c and dw.groups == mid == dw.in_channels == \
            dw.out_channels == pwl.in_channels and pw.groups == pwl.groups == 1 and \
            all(conv.bias is None and tuple(conv.dilation) == (1, 1) and
                conv.kernel_size[0] == conv.kernel_size[1] and conv.stride[0] == conv.stride[1]
                and int(conv.num_experts) == experts for conv in (pw, dw, pwl)) and \
            tuple(pw.stride) == tuple(pwl.stride) == (1, 1)
        if not shapes_ok or type(m.drop_path).__name__ != "Identity" or \
                type(getattr(m, "aa", None)).__name__ not in ("Identity", "NoneType"):
            raise NoMapping("a CondConvResidual with dilation, biases, groups, drop path or "
                            "anti-aliasing")
        squeeze = _squeeze(m.se, mid, act)
        args = dict(out=out, experts=experts, expand=mid, kernel=dw.kernel_size[0],
                    stride=dw.stride[0], exp_kernel=pw.kernel_size[0],
                    pw_kernel=pwl.kernel_size[0], squeeze=squeeze, activation=act.pop(),
                    same=same, skip=bool(m.has_skip) or not (dw.stride[0] == 1 and
                                                                    out == c),
                    eps=float(m.bn1.eps))
        defaults = {k: arg.default for k, arg in self.args.items()}
        defaults.update(out=c, expand=c)
        return row("cond_conv_block", **{k: v for k, v in args.items()
                                          if k == "out" or v != defaults[k]})


def _squeeze(se, mid, act) -> int | None:
    """The SE's channels, or None for no SE; timm's SqueezeExcite with the
    block's activation and a sigmoid gate only."""
    from .from_torch import NoMapping
    if type(se).__name__ == "Identity":
        return None
    if type(se).__name__ != "SqueezeExcite" or type(se.gate).__name__ != "Sigmoid" or \
            TORCH_ACTIVATIONS.get(type(se.act1).__name__) not in act or \
            se.conv_reduce.in_channels != mid or se.conv_reduce.bias is None or \
            se.conv_expand.bias is None:
        raise NoMapping(f"a CondConvResidual with a {type(se).__name__} that is not SE")
    return int(se.conv_reduce.out_channels)


__all__ = ["CondConvBlock"]
