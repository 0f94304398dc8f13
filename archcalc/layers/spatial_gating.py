"""The spatial gating unit (Liu et al. 2021, gMLP), as timm's
SpatialGatingUnit: N x D tokens split in two halves u and v along D; v
normalized (a layer norm), then mixed across the tokens by a learned N x N
projection (with a bias, per feature), and u multiplied by it: N x D/2. One
row: the product of two halves of one tensor, one of them mixed across the
tokens, which a chain of rows cannot say."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, register
from .composite import Composite, between, part


@register
class SpatialGating(Composite, Kind):
    name = "spatial_gating"
    torch_classes = ("SpatialGatingUnit",)  # in spatial_gating_torch.py
    aliases = ("sgu",)
    summary = ("gMLP's spatial gating unit: u * proj_tokens(norm(v)), u and v the halves of "
               "each token's D (N x D -> N x D/2)")
    flops_rule = "the parts' FLOPs (the layer norm, the N x N projection) + N*D/2 (the gate)"
    inputs = "tokens"
    args = {"eps": Arg("float", 1e-5, min=0.0, doc="the layer norm's eps")}

    def parts(self, a, x):
        n, d = x
        if isinstance(d, int) and d % 2:
            raise SpecError(f"spatial_gating: the width must be even (two halves). "
                            f"Received: D={d}")
        half = sym.floordiv(d, 2)
        norm = part("layer_norm", (n, half), eps=a.eps)
        return [norm, part("fc", (half, n), out=n)]

    def output_shape(self, a, x):
        return self.parts(a, x)[0].y

    def between(self, a, x):
        return between(("mul", sym.prod(self.output_shape(a, x))))

    def kept_between(self, a, x):
        n = sym.prod(self.output_shape(a, x))
        return ((n, None), (n, None))   # the gate keeps u and the projected v

    def window(self, a, x):
        return (1, 1), (1, 1)

    def build(self, a, x):
        from .spatial_gating_torch import SpatialGatingUnit as Module
        return Module(x[1], x[0], a.eps)

    torch_modules = ("archcalc.layers.spatial_gating_torch.SpatialGatingUnit",
                     "timm.models.mlp_mixer.SpatialGatingUnit")

    def from_torch(self, call, m):
        """archcalc's and timm's (norm, proj)."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"a SpatialGatingUnit on a {len(call.x)}-d input")
        n, d = call.x
        norm = m.norm
        if type(norm).__name__ != "LayerNorm" or tuple(norm.normalized_shape) != (d // 2,) or \
                not norm.elementwise_affine or norm.bias is None:
            raise NoMapping(f"a SpatialGatingUnit normalized by {type(norm).__name__}")
        if (m.proj.in_features, m.proj.out_features) != (n, n) or m.proj.bias is None:
            raise NoMapping(f"a SpatialGatingUnit projecting {m.proj.in_features} tokens "
                            f"of {n}")
        return row("spatial_gating", eps=float(norm.eps))
