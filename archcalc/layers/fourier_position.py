"""XCiT's Fourier position encoding (El-Nouby et al. 2021; also EdgeNeXt's),
as timm's ``PositionalEncodingFourier``: for each of the H x W positions of
the tokens' grid, sines and cosines of its normalized row and column at
``hidden_dim`` frequencies (temperature^(2*floor(i/2)/hidden_dim)), 2 x
hidden_dim features, projected to the tokens' width D by a 1x1 conv (with a
bias) and added to the tokens. The grid is fixed: the conv's weights are the
only parameters, 2*hidden_dim*D + D.

MACs: the conv on the H*W positions, N*2*hidden_dim*D per sample. The module
built here computes the encoding per sample, as EdgeNeXt's does; XCiT's
computes it once and repeats it over the batch, so its MACs are these at
batch 1 (the import's reference) and once per forward pass at batch B."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register

FP32 = 4


@register
class FourierPositionEncoding(Kind):
    name = "fourier_position_encoding"
    torch_classes = ("FourierPositionEncoding",)  # in fourier_position_torch.py
    aliases = ("fourier_position",)
    primary = "hidden_dim"
    inputs = "tokens"
    summary = ("XCiT's position encoding added to N x D tokens: sines and cosines of each "
               "position of the H x W grid, projected to D by a 1x1 conv")
    flops_rule = ("2 x MACs + N*D (the conv's bias) + N*D (the addition); MACs = "
                  "N*2*hidden_dim*D (the grid's features are constants)")
    args = {
        "hidden_dim": Arg("int", 32, min=2, doc="frequencies per axis (even): 2*hidden_dim "
                                                "features per position"),
        "temperature": Arg("float", 10000.0, min=1.0, doc="the frequencies' base"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the tokens' grid, h*w = N; default the square sqrt(N)"),
    }
    arg_examples = {"hidden_dim": (2, 4, 8)}

    def grid(self, a, x):
        """(H, W) of the tokens' grid."""
        from .window_attention import map_size
        if a.hidden_dim % 2:
            raise SpecError(f"fourier_position_encoding: hidden_dim must be even (sines and "
                            f"cosines in pairs). Received: hidden_dim={a.hidden_dim}")
        return map_size(self.name, a.size, x[0])

    def output_shape(self, a, x):
        self.grid(a, x)
        return x

    def params(self, a, x):
        return sym.norm(2 * a.hidden_dim * x[1] + x[1])

    def params_formula(self, a, x):
        return f"(2*{a.hidden_dim})*{sym.plain(x[1])} + {sym.plain(x[1])}"

    def macs(self, a, x, y):
        return sym.norm(x[0] * 2 * a.hidden_dim * x[1])

    def macs_formula(self, a, x, y):
        return f"{sym.plain(x[0])}*(2*{a.hidden_dim})*{sym.plain(x[1])}"

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 2 * sym.prod(x))

    def cost(self, a, x, y):
        """The 1x1 conv on the grid's features, then the addition."""
        h, w = self.grid(a, x)
        d = x[1]
        return (Cost("conv", conv=(1, 1, 1, 1, 2 * a.hidden_dim, d, h, w, 1),
                     tensors=(sym.norm(2 * a.hidden_dim * d), d)),
                Cost("add", elements=sym.prod(x)))

    def saved(self, a, x, y):
        # the conv's input, the grid's features (fp32, one copy per sample)
        return Saved(extra=((sym.norm(2 * a.hidden_dim * x[0]), FP32),))

    def build(self, a, x):
        from .fourier_position_torch import FourierPositionEncoding as Module
        return Module(x[1], *self.grid(a, x), a.hidden_dim, a.temperature)

    # EdgeNeXt's and XCiT's are read where their encoding is added to the tokens
    # (the importer's graph builder); archcalc's own maps back here
    torch_modules = ("archcalc.layers.fourier_position_torch.FourierPositionEncoding",)

    def from_torch(self, call, m):
        return _row(m.hidden_dim, m.temperature, (m.height, m.width))

    @staticmethod
    def from_timm(m, tokens: tuple, size: tuple):
        """The row of timm's PositionalEncodingFourier (XCiT's, EdgeNeXt's) whose
        output is added to tokens of ``size`` = (H, W)."""
        from .from_torch import NoMapping
        conv = m.token_projection
        d = tokens[1]
        if (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                conv.groups, conv.bias is not None) != (2 * m.hidden_dim, d, (1, 1), (1, 1),
                                                         1, True):
            raise NoMapping("a Fourier position encoding whose projection is not a 1x1 conv "
                            f"{2 * m.hidden_dim} -> {d} with a bias")
        if abs(float(m.scale) - 2 * 3.141592653589793) > 1e-9 or \
                abs(float(getattr(m, "eps", 1e-6)) - 1e-6) > 1e-12:
            raise NoMapping("a Fourier position encoding of another scale or eps")
        return _row(m.hidden_dim, m.temperature, size)


def _row(hidden_dim, temperature, size):
    """The row, its arguments left out where they are the defaults."""
    from .from_torch import row
    h, w = size
    found = {"hidden_dim": int(hidden_dim), "temperature": float(temperature),
             "size": None if h == w else [h, w]}
    defaults = FourierPositionEncoding.args
    return row("fourier_position_encoding",
               **{k: v for k, v in found.items() if v != defaults[k].default})
