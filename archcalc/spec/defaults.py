"""[defaults.KIND] padding, fitted to each layer's kernel.

A default padding is written for the common kernel: VGG's `kernel = 3,
padding = 1`. A 1x1 conv that inherited it would pad every side by one and
grow its map (28 -> 30), at ~15% more MACs, and nothing would say so. The
rule: an inherited padding never pads more than its kernel reaches. Along
each axis it is at most D(F - 1) // 2, the padding that keeps the size at
stride 1 ("same"), so a default can keep a map's size or shrink it, never
grow it. A padding written on the layer itself is used as written (and a
layer that grows its map is a warning unless it says `grows = true`).

`padding = "same"` as a default fits every kernel by construction; on a
strided layer with an odd (dilated) kernel it becomes the symmetric number
D(F - 1) / 2 that PyTorch needs (nn.Conv2d refuses the string there), which
gives ceil(N / S), TensorFlow's "same" size.
"""
from __future__ import annotations

import functools



@functools.lru_cache(maxsize=None)  # asked once per layer: the registry is read once
def sliding_kinds() -> tuple:
    """The kinds whose padding pads a sliding window's input (``pads_input``;
    a transposed conv's and an unpool's padding crops the output instead:
    they are left alone). Read from the registry when first asked: the
    layers import this package's expressions, so not at import time."""
    from ..layers import kinds
    return tuple(name for name, kind in kinds().items() if kind.pads_input)


def __getattr__(name):  # SLIDING_KINDS, for the modules that import it by name
    if name == "SLIDING_KINDS":
        return sliding_kinds()
    raise AttributeError(name)


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def _ints(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def reach(kernel, dilation=1) -> tuple | None:
    """Per axis the largest padding that does not grow the map: D(F - 1) // 2;
    None where the kernel is not known as numbers."""
    kernel, dilation = _pair(kernel), _pair(dilation)
    if not _ints(*kernel, *dilation):
        return None
    return tuple(d * (f - 1) // 2 for f, d in zip(kernel, dilation))


def fitted_padding(padding, kernel, dilation=1, stride=1):
    """The padding a layer inherits from [defaults.KIND] ``padding``: numbers
    capped per axis at the kernel's reach; "same" turned into numbers on a
    strided layer with an odd kernel. Unchanged where anything is symbolic."""
    most = reach(kernel, dilation)
    if most is None:
        return padding
    if padding == "same":
        stride = _pair(stride if stride is not None else kernel)
        odd = all(d * (f - 1) % 2 == 0 for f, d in zip(_pair(kernel), _pair(dilation)))
        strided = not _ints(*stride) or any(s != 1 for s in stride)
        return most if strided and odd else padding
    if isinstance(padding, str):
        return padding   # "valid" pads nothing
    pads = _pair(padding)
    if not _ints(*pads):
        return padding
    fitted = tuple(min(p, m) for p, m in zip(pads, most))
    return fitted if fitted != pads else padding


def fit_inherited_padding(kind_name: str, args) -> None:
    """Fit the padding a layer took from [defaults.KIND] to its kernel, in
    place on its read arguments (a SimpleNamespace)."""
    if kind_name not in sliding_kinds() or getattr(args, "kernel", None) is None:
        return
    stride = getattr(args, "stride", 1)
    args.padding = fitted_padding(args.padding, args.kernel, getattr(args, "dilation", 1),
                                  args.kernel if stride is None else stride)
