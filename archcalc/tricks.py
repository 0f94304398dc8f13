"""The lectures' design tricks: each a folder of real specs in specs/tricks/
(archcalc/specs/tricks/ when installed),
compared symbolically in C (channels) and H, W, and numerically on request."""
from __future__ import annotations

import os
from dataclasses import dataclass

from . import bundled
from .errors import SpecError


@dataclass(frozen=True)
class Trick:
    name: str
    summary: str
    variants: tuple       # spec files in specs/tricks/NAME/, the baseline first
    lesson: str


TRICKS = {t.name: t for t in (
    Trick("5x5-vs-3x3", "one 5x5 conv vs two stacked 3x3 convs",
          ("one_5x5", "two_3x3"),
          "Two 3x3 see the same 5x5 field with 18/25 of the weights and an extra nonlinearity."),
    Trick("7x7-vs-3x3", "one 7x7 conv vs three stacked 3x3 convs (VGG)",
          ("one_7x7", "three_3x3"),
          "Three 3x3 see the same 7x7 field: 27C^2 instead of 49C^2 weights, 27WHC^2 instead of "
          "49WHC^2 multiplies, and 3 nonlinearities instead of 1."),
    Trick("3x3-vs-asym", "3x3 vs 1x3 followed by 3x1 (Inception-v3)",
          ("one_3x3", "1x3_3x1"), "Same 3x3 field for 6/9 = 2/3 of the cost."),
    Trick("nxn-vs-asym", "n x n vs 1 x n followed by n x 1, for any n",
          ("nxn", "1xn_nx1"), "n^2 weights per channel pair become 2n: the saving grows with n."),
    Trick("bottleneck", "1x1 bottleneck (C -> C/4 -> C/4 -> C) vs two 3x3 at C channels",
          ("two_3x3", "bottleneck"),
          "At C = 256 (ResNet's Figure 5): 69,632 weights instead of 1,179,648: 17/288."),
    Trick("inception-1x1", "the Inception module without and with its 1x1 reductions",
          ("naive", "reduced"),
          "The 1x1 reductions before the 3x3 and 5x5 convs cut the module's cost by more than half "
          "and its output from 416 to 256 channels."),
    Trick("grid-reduction", "35x35x320 -> 17x17x640: pool then conv, conv then pool, or both in parallel",
          ("conv_then_pool", "pool_then_conv", "parallel"),
          "Pooling first is cheap but a representational bottleneck; convolving first costs 4x; "
          "Figure 10's parallel strided conv and pool is cheaper than both without the bottleneck."),
    Trick("fc-vs-local-vs-conv", "the lecture's 32x32x3 input, 5x5 fields, 30 maps: fully connected, "
          "locally connected, convolutional", ("fc", "local", "conv"),
          "Unshared 5x5x3 fields over a 28x28x30 output: (28*28*30)*75 = 1,764,000 weights; the "
          "lecture's (32*32*30)*75 = 3 million uses the input size, not the output's. Sharing: "
          "30*75 = 2,250 weights + 30 biases."),
    Trick("fc-200x200", "a 200x200 image and about 40K hidden units: fully connected, locally "
          "connected, convolutional", ("fc", "local", "conv"),
          "1.6 billion weights (the lecture's ~2B), 4 million with 10x10 local fields, 10 thousand "
          "with 100 shared 10x10 filters."),
    Trick("stride-vs-pool", "a stride-2 conv vs a conv followed by a 2x2 max pool",
          ("conv_pool", "strided_conv"),
          "Same weights; the strided conv computes a quarter of the multiplies and skips the "
          "full-size activation map."),
)}


def lookup(name: str) -> Trick:
    if name not in TRICKS:
        import difflib
        close = difflib.get_close_matches(name, TRICKS, n=2)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise SpecError(f"unknown trick {name!r}{hint}; `archcalc trick --list` lists them")
    return TRICKS[name]


def spec_files(trick: Trick) -> list[str]:
    """The trick's spec files, from the shipped specs (package data when installed)."""
    return [os.path.join(bundled.root(), "tricks", trick.name, v + ".toml") for v in trick.variants]
