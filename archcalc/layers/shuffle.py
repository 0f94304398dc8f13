"""Channel shuffle (ShuffleNet): interleave the channels of `groups` groups, so
the next grouped conv (or the next split) mixes them. A reshape, a transpose
and a copy: no parameters, no arithmetic, nothing kept for backward."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register


@register
class ChannelShuffle(Kind):
    name = "channel_shuffle"
    aliases = ("shuffle",)
    primary = "groups"
    summary = "channel shuffle: C = groups x k channels -> k x groups (ShuffleNet)"
    flops_rule = "0 (a copy)"
    inputs = "chw"
    args = {"groups": Arg("int", 2, min=1, numeric=True)}

    def output_shape(self, a, x):
        c = x[0]
        if isinstance(c, int) and c % a.groups:
            raise SpecError(f"groups={a.groups} must divide the channels. "
                            f"Received: channels={c}")
        return x

    def cost(self, a, x, y):
        """A view to (groups, k, H, W), a transpose, and the copy that makes it
        contiguous: a copy of the map (its backward the inverse copy)."""
        return (Cost("copy", elements=sym.prod(y)),)

    def build(self, a, x):
        from torch import nn
        return nn.ChannelShuffle(a.groups)

    torch_modules = ("torch.nn.ChannelShuffle",)   # from_torch reads them

    def from_torch(self, call, m):
        from .from_torch import require_chw, row
        require_chw(call, "ChannelShuffle")
        return row("channel_shuffle", groups=int(m.groups))
