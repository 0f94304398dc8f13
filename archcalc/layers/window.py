"""What sliding-window kinds (conv, conv_table, conv_transpose, local and the
pools) share: their argument definitions, written once, and the size rules
of a window over a padded input. The arithmetic itself (output size, same
padding, tiling) is in base.py."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, same_padding, sliding_output, tiling_remarks

# -- the argument sets ---------------------------------------------------------
KERNEL = Arg("pair", min=1, doc="k or [kh, kw]")
STRIDE = Arg("pair", 1, min=1)
STRIDE_OF_KERNEL = Arg("pair", None, min=1, doc="defaults to the kernel, as in PyTorch")
PADDING = Arg("pair", 0, min=0)
PADDING_OR_SAME = Arg("padding", 0, doc="int, [ph, pw], 'same' or 'valid'")
DILATION = Arg("pair", 1, min=1)
CEIL_MODE = Arg("bool", False)

# a conv's window (kernel, stride from 1, padding that may be "same"), and a
# pool's (stride defaults to the kernel, numeric padding, ceil mode)
CONV_WINDOW = {"kernel": KERNEL, "stride": STRIDE, "padding": PADDING_OR_SAME}
POOL_WINDOW = {"kernel": KERNEL, "stride": STRIDE_OF_KERNEL, "padding": PADDING,
               "ceil_mode": CEIL_MODE}


# -- the size rules ------------------------------------------------------------
AXES = ("height", "width")


def padding_pairs(a, kernel, dilation):
    """Per axis (before, after) padding; 'same' may pad one more after (PyTorch)."""
    if a.padding == "valid":
        return ((0, 0), (0, 0))
    if a.padding == "same":
        out = []
        for f, d in zip(kernel, dilation):
            total = d * (f - 1)
            before = same_padding(f, d)
            out.append((before, sym.norm(total - before)))
        return tuple(out)
    return tuple((p, p) for p in a.padding)


def sliding_shape(kind: Kind, a, x, kernel, stride, dilation, ceil_mode=False):
    """Output H, W of a sliding window; raises when the kernel does not fit."""
    pads = padding_pairs(a, kernel, dilation)
    out = []
    for n, f, s, (pb, pa), d, axis in zip(x[1:], kernel, stride, pads, dilation, AXES):
        if pb == pa:
            o = sliding_output(n, f, s, pb, d, ceil_mode)
        else:  # asymmetric 'same' padding: stride is 1, the size is kept
            o = n
        fits = sym.known_positive(o)
        if fits is False:
            fe = d * (f - 1) + 1
            raise SpecError(
                f"kernel {sym.fmt_int(fe)} along {axis} is larger than the padded input "
                f"{sym.fmt_int(n + pb + pa)} ({sym.fmt_int(n)} + {sym.fmt_int(pb)} + "
                f"{sym.fmt_int(pa)} padding); the output would be {sym.fmt_int(o)}")
        out.append(o)
    return tuple(out)


def sliding_findings(a, x, kernel, stride, dilation):
    if a.padding == "same":  # keeps the size at stride 1: always tiles
        return []
    pads = (0, 0) if a.padding == "valid" else a.padding
    return tiling_remarks(x, kernel, stride, pads, dilation)


def effective_window(kernel, stride, dilation):
    return (tuple(d * (f - 1) + 1 for f, d in zip(kernel, dilation)), tuple(stride))


def torch_padding(a):
    """The padding for nn.Conv2d: numbers wherever 'same' pads symmetrically
    (odd kernels), so tracers that read the conv's padding (fvcore) count it;
    the string only where PyTorch must pad one more after (even kernels)."""
    if a.padding == "same" and hasattr(a, "kernel"):
        pairs = padding_pairs(a, a.kernel, getattr(a, "dilation", (1, 1)))
        if all(b == e for b, e in pairs):
            return tuple(b for b, _ in pairs)
    return a.padding if isinstance(a.padding, str) else tuple(a.padding)
