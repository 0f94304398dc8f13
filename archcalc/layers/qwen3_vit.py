"""Qwen-VL's patch merger (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; timm's
Qwen3VitPatchMerger, the projector of the Qwen3 ViTs' ``_enc`` and
``_merge`` variants): on the tokens of an H x W map, a layer norm, each
k x k block of neighbouring tokens concatenated into one token of k*k*D
(its rows, its columns, then the channels: a pixel unshuffle, row-major),
a Linear k*k*D -> k*k*D, a GELU and, where the projector has one, a Linear
to the language model's width ``out``: N x D -> (N/k^2) x out.

One row whose figures are its parts' (layer_norm, patchify, fc, gelu, fc),
with timm's submodule names (norm, fc1, act, fc2), so timm's state_dict
loads: the merge is a reshape of the map read channels last that no layout
row describes from the tokens.

MACs (FlopCounterMode's: the two Linears): N/k^2 * (k^2 D)^2 + N/k^2 *
k^2 D * out. The companion also makes timm's ``resample_pos_embed_grid`` one
call of the traced graph (fx cannot trace its test of the grid's size): the
Qwen3 ViT's learned position embedding, at its own grid, is then a
position_embedding row, and the encoder is no longer kept whole."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Kind, register
from .composite import Composite, part
from .window_attention import _square_or_pair, map_size


@register
class TokenMerger(Composite, Kind):
    name = "token_merger"
    torch_classes = ("TokenMerger",)  # in qwen3_vit_torch.py
    aliases = ("patch_merger",)
    primary = "factor"
    inputs = "tokens"
    summary = ("Qwen-VL's patch merger: layer norm, each k x k block of tokens concatenated "
               "(k*k*D), Linear k*k*D -> k*k*D, GELU, Linear -> out")
    flops_rule = ("the parts' FLOPs: the layer norm (N*D), the two Linears (2 x MACs and "
                  "their biases), the GELU on k*k*D per merged token; the merge is a copy; "
                  "MACs = N/k^2*(k^2*D)^2 + N/k^2*k^2*D*out")
    args = {
        "factor": Arg("int", min=1, numeric=True,
                      doc="k: each k x k block of neighbouring tokens becomes one token "
                          "(timm's merge_size); divides the map's sides"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
        "out": Arg("int", None, min=1, numeric=True,
                   doc="the last Linear's width (the language model's); default none: no "
                       "last Linear, the output is k*k*D wide"),
        "approximate": Arg("str", "none", choices=("none", "tanh"), doc="the GELU's"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="the layer norm's epsilon"),
    }
    arg_examples = {"factor": (1, 2), "out": (None, 3),
                    "size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1])}

    def grid(self, a, x):
        """(h, w), checked: k divides both."""
        h, w = map_size(self.name, a.size, x[0])
        for side, n in (("height", h), ("width", w)):
            if isinstance(n, int) and n % a.factor:
                raise SpecError(f"token_merger: factor={a.factor} must divide the map's {side}. "
                                f"Received: {side}={n}")
        return h, w

    def parts(self, a, x):
        n, d = x
        h, w = self.grid(a, x)
        hidden = sym.norm(a.factor * a.factor * d)
        norm = part("layer_norm", x, eps=a.eps)
        merged = part("patchify", (d, h, w), patch=a.factor)
        fc1 = part("fc", merged.y, out=hidden)
        parts = [norm, merged, fc1, part("gelu", fc1.y, approximate=a.approximate)]
        if a.out is not None:
            parts.append(part("fc", fc1.y, out=a.out))
        return parts

    def output_shape(self, a, x):
        return self.parts(a, x)[-1].y

    def between(self, a, x):
        return ()

    def window(self, a, x):
        return (a.factor, a.factor), (a.factor, a.factor)

    def params_formula(self, a, x):
        d, k = sym.plain(x[1]), a.factor
        hidden = f"{k}*{k}*{d}"
        fc2 = f" + ({hidden}*{a.out} + {a.out})" if a.out is not None else ""
        return f"2*{d} + ({hidden}*{hidden} + {hidden}){fc2}"

    def macs_formula(self, a, x, y):
        n, d, k = sym.plain(x[0]), sym.plain(x[1]), a.factor
        hidden = f"{k}*{k}*{d}"
        fc2 = f" + {n}/{k * k}*{hidden}*{a.out}" if a.out is not None else ""
        return f"{n}/{k * k}*({hidden})^2{fc2}"

    def size_arithmetic(self, a, x):
        h, w = self.grid(a, x)
        k = a.factor
        return [f"{sym.plain(h)}/{k} * {sym.plain(w)}/{k} = "
                f"{sym.fmt_int(self.output_shape(a, x)[0])} merged tokens of {k}*{k}*"
                f"{sym.plain(x[1])}"]

    def build(self, a, x):
        from .qwen3_vit_torch import TokenMerger as Module
        return Module(x[1], a.factor, self.grid(a, x), a.out, a.approximate, a.eps)

    torch_modules = ("archcalc.layers.qwen3_vit_torch.TokenMerger",
                     "timm.models.qwen3_vit.Qwen3VitPatchMerger")

    def from_torch(self, call, m):
        """archcalc's TokenMerger, or timm's Qwen3VitPatchMerger called on the
        B x H x W x D map (its grid: the measured input's)."""
        from .from_torch import NoMapping, row
        from .window_attention import _require_tokens
        _require_tokens(call, "a patch merger")
        if call.arg("merger", 1, "pre_logits", False):
            raise NoMapping("a patch merger's pre_logits (its output before the last Linear)")
        n, d = call.x
        if hasattr(m, "init_args"):
            h, w = m.grid
        else:
            shape = _probed_input(call)
            if len(shape) != 4 or shape[-1] != d or shape[1] * shape[2] != n:
                raise NoMapping(f"a patch merger on a {list(shape[1:])} input (it takes "
                                f"B x H x W x D)")
            h, w = int(shape[1]), int(shape[2])
        k = int(m.merge_size)
        hidden = k * k * d
        eps = _layer_norm_eps(m.norm, d)
        act = m.act
        if type(act).__name__ != "GELU" or act.approximate not in ("none", "tanh"):
            raise NoMapping(f"a patch merger with a {type(act).__name__} (the kind's: a GELU)")
        fc1, fc2 = m.fc1, m.fc2
        out = None
        if type(fc2).__name__ == "Linear":
            out = int(fc2.out_features)
            if fc2.in_features != hidden or fc2.bias is None:
                raise NoMapping(f"a patch merger whose fc2 is no Linear {hidden} -> out "
                                "with a bias")
        elif type(fc2).__name__ != "Identity":
            raise NoMapping(f"a patch merger with a {type(fc2).__name__} as its fc2")
        if type(fc1).__name__ != "Linear" or (fc1.in_features, fc1.out_features) != \
                (hidden, hidden) or fc1.bias is None:
            raise NoMapping(f"a patch merger whose fc1 is no Linear {hidden} -> {hidden} "
                            "with a bias")
        args = dict(factor=k, size=_square_or_pair(h, w), out=out,
                    approximate=act.approximate, eps=eps)
        return row("token_merger", **{key: v for key, v in args.items()
                                      if key == "factor" or v != self.args[key].default})


def _probed_input(call) -> tuple:
    """The shape PyTorch gave the call's input, batch included: timm's merger
    takes the map as B x H x W x D, a view of the tokens that the spec does
    not see (the flow's shape stays N x D)."""
    from ..torch.importer.probing import META_KEY
    node = getattr(call.args[0], "node", None) if call.args else None
    got = node.meta.get(META_KEY) if node is not None else None
    return tuple(int(v) for v in got[0]) if got and isinstance(got[0], tuple) else ()


def _layer_norm_eps(norm, d) -> float:
    """A LayerNorm over D with its weight and bias: its eps."""
    from .from_torch import NoMapping
    classes = {f"{c.__module__}.{c.__qualname__}" for c in type(norm).__mro__}
    if "torch.nn.modules.normalization.LayerNorm" not in classes or \
            tuple(norm.normalized_shape) != (d,) or not norm.elementwise_affine or \
            norm.bias is None:
        raise NoMapping(f"a patch merger with a {type(norm).__name__} as its norm (the kind's: "
                        f"a LayerNorm over {d} with its weight and bias)")
    return float(norm.eps)


__all__ = ["TokenMerger"]
