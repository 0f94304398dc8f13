"""Channel slice: channels [start, end) of a map, as Res2Net (Gao et al. 2019)
and EdgeNeXt take the slices of a split one by one (slice i is added to the
previous branch's output before its own conv, so the slices are used apart,
not as the parallel branches of a `split` entry); DPN's dual path keeps
x[:, :n] and x[:, n:] of one conv's output. With `from` each slice reads the
tensor it cuts.

A view (x[:, start:end]): no parameters, no arithmetic, nothing allocated and
nothing kept for backward; the receptive field is the input's."""
from __future__ import annotations

from ..errors import SpecError
from .base import Arg, Cost, Kind, fmt_shape, register


@register
class ChannelSlice(Kind):
    name = "channel_slice"
    torch_classes = ("ChannelSlice",)  # in slice_torch.py
    primary = "channels"
    summary = ("channels [start, end) of a map (x[:, start:end]): one slice of a "
               "split used apart (Res2Net, EdgeNeXt, DPN); a view")
    flops_rule = "0 (a view)"
    inputs = "chw"
    view = True
    args = {"channels": Arg("pair", min=0, doc="[start, end): the channels kept")}
    arg_examples = {"channels": (lambda x: [0, x[0]], lambda x: [x[0] - 1, x[0]],
                                 lambda x: [0, max(1, x[0] // 2)])}

    def output_shape(self, a, x):
        start, end = a.channels
        c = x[0]
        if not (isinstance(start, int) and isinstance(end, int)):
            raise SpecError(f"channel_slice: channels must be numbers. "
                            f"Received: channels=[{start}, {end}]")
        if start >= end or (isinstance(c, int) and end > c):
            raise SpecError(f"channel_slice: channels [start, end) must satisfy "
                            f"start < end <= C of a {fmt_shape(x)} input. "
                            f"Received: channels=[{start}, {end}]")
        return (end - start, *x[1:])

    def cost(self, a, x, y):
        """A view: the call only."""
        return (Cost("view", backward=False),)

    def build(self, a, x):
        from .slice_torch import ChannelSlice as Module
        return Module(*a.channels)

    torch_modules = ("archcalc.layers.slice_torch.ChannelSlice",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "ChannelSlice")
        return row("channel_slice", channels=[int(m.start), int(m.end)])
