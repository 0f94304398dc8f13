"""The spatial transformer's grid generator and bilinear sampler (Jaderberg,
Simonyan, Zisserman, Kavukcuoglu 2015): the sampler row of a ``transform``
structure, whose body is the localisation net regressing the 6 parameters
theta of an affine map from its input:

    {name = "st", transform = [ ...localisation net ending in 6 features... ],
     size = [H', W']}

For each output position (x_t, y_t) of the H' x W' grid (coordinates in
[-1, 1]) the grid generator computes the source point
(x_s, y_s) = A_theta (x_t, y_t, 1); the sampler reads the input U there with
the bilinear kernel, V_c = sum_nm U_nm^c max(0, 1 - |x_s - m|) max(0, 1 - |y_s - n|):
4 neighbours, the same point for every channel. PyTorch: F.affine_grid then
F.grid_sample (bilinear, zeros padding). The builder initialises the
localisation net's last layer to the identity (weights 0, bias
[1, 0, 0, 0, 1, 0]), as Jaderberg et al. do.

No parameters of its own (the localisation net's rows hold them), no MACs
(neither a conv nor a matmul of the model's features; the grid's 2x3 by 3
products are counted as FLOPs). FLOPs rule, per sample:
- grid generator: 8 per output position (2 coordinates, each 2 multiplies
  and 2 adds: theta_i1*x + theta_i2*y + theta_i3);
- sampler: 8 per output position for the bilinear weights (2 fractions, 2
  complements, 4 products) and 7 per output element (4 weighted neighbours:
  4 multiplies and 3 adds);
  in all 16*H'*W' + 7*C*H'*W'.
What autograd keeps: the input U and the sampling grid (H'W' x 2) for
grid_sample; affine_grid keeps nothing (its backward rebuilds the base grid
from the size), as measured by `check`.
"""
from __future__ import annotations

from .. import sym
from .base import Arg, Cost, Kind, Saved, register


@register
class AffineSampler(Kind):
    name = "affine_sampler"
    needs_context = "its theta comes from the localisation net beside it"
    not_mapped_back = ("its module takes theta as a second input, which the localisation net "
                       "beside it makes: only a transform structure holds the two, and the "
                       "importer recovers no transform structure from a traced graph")
    torch_classes = ('AffineSampler',)  # in transform_torch.py
    aliases = ("bilinear_sampler", "grid_sample")
    structural = True      # only as the sampler row of a `transform` structure
    inputs = "chw"
    summary = ("the spatial transformer's affine grid + bilinear sampler (the row of a "
               "transform structure): C x H x W -> C x H' x W'")
    flops_rule = ("16 per output position (grid: 8; bilinear weights: 8) + 7 per output "
                  "element (4 weighted neighbours): 16*H'*W' + 7*C*H'*W'")
    args = {
        "size": Arg("size", ["none", "none"], min=1,
                    doc="output [H', W'] (\"none\" keeps the input's)"),
        "align_corners": Arg("bool", False),
    }

    def output_shape(self, a, x):
        h, w = (x[1] if a.size[0] is None else a.size[0]), (x[2] if a.size[1] is None else a.size[1])
        return (x[0], h, w)

    def flops(self, a, x, y):
        positions = sym.norm(y[1] * y[2])
        return sym.norm(16 * positions + 7 * y[0] * positions)

    def window(self, a, x):
        # theta may point anywhere on the input: the window is the whole map
        return (x[1], x[2]), (1, 1)

    def receptive_field(self, a, x, rf, jump):
        return ((sym.norm(rf[0] + (x[1] - 1) * jump[0]), sym.norm(rf[1] + (x[2] - 1) * jump[1])),
                jump)

    def saved(self, a, x, y):
        positions = sym.norm(y[1] * y[2])
        return Saved(input=True, extra=((sym.norm(2 * positions), None),))

    def cost(self, a, x, y):
        """No calibrated table for grid_sample: rated as copies of what it
        touches, the grid (2 per output position) and 4 neighbours read per
        output element (an approximation; bilinear gathers run slower than
        streaming copies)."""
        positions = sym.norm(y[1] * y[2])
        return (Cost("copy", elements=sym.norm(2 * positions)),
                Cost("copy", elements=sym.norm(y[0] * positions), scale=4.0))

    def size_arithmetic(self, a, x):
        y = self.output_shape(a, x)
        return [f"theta (6) maps each of the {sym.plain(y[1])} x {sym.plain(y[2])} output "
                f"positions to a source point; {sym.plain(y[0])} channels sampled there"]

    def build(self, a, x):
        from .transform_torch import AffineSampler as Module
        y = self.output_shape(a, x)
        return Module((int(y[1]), int(y[2])), a.align_corners)
