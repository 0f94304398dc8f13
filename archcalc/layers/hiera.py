"""Hiera (Ryali et al. 2023), as timm's ``hiera.py``: the unroll of the patch
tokens (``hiera_unroll``), the block on unrolled tokens (``hiera_block``:
mask unit attention with q pooling), and the absolute-window position
embedding of the abswin models and of HieraDet (Bolya et al. 2023, "Window
Attention is Bugged"): a learned grid resized to the tokens' grid
(``position_grid``) plus a learned window tiled over it (``position_window``).

Why one row per HieraBlock: its shortcut is a max over stride groups of the
unrolled tokens and its attention pools q the same way inside mask units
(views no layout kind describes), so the block is the kind, with timm's
submodule names (its state_dict loads strictly).

MACs (FlopCounterMode's: the linears and F.scaled_dot_product_attention's two
products; max and mean count none): on N tokens in, M = N/q out, T keys per
query (N/units), shortcut N*C*C' (proj) + qkv 3*N*C*C' + 2*M*T*C' + proj
M*C'^2 + MLP 2*M*C'*hidden."""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .composite import mlp_costs
from .window_attention import _require_tokens, _square_or_pair, map_size

FP32 = 4
SDPA_MISSED = ("fvcore has no handler for aten::scaled_dot_product_attention (the two "
               "attention matmuls, 2*M*T*C')")


def _divides(kind, what, n, by):
    if isinstance(n, int) and n % by:
        raise SpecError(f"{kind}: {what} {n} does not divide by {by}")


@register
class HieraUnroll(Kind):
    """timm's Hiera ``Unroll``: the h x w grid of patch tokens (row-major)
    reordered ``steps`` times by ``stride`` (Sy, Sx): each step moves the
    position within an Sy x Sx group outermost, so after it the tokens of a
    group lie N/(Sy*Sx) apart and a max over view(B, Sy*Sx, -1, C) is a max
    pool; after several steps whole windows are contiguous. A permutation (a
    copy per step), no arithmetic."""
    name = "hiera_unroll"
    torch_classes = ("HieraUnroll",)  # in hiera_torch.py
    summary = ("Hiera's unroll: the h x w grid of tokens reordered so that stride groups "
               "(and, after several steps, windows) are contiguous; a fixed permutation")
    flops_rule = "0 (a permutation: one copy of the tokens per step)"
    inputs = "tokens"
    args = {
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the tokens' grid, h*w = N; default the square"),
        "stride": Arg("pair", 2, min=1, numeric=True, doc="[Sy, Sx]: one step's group"),
        "steps": Arg("int", 3, min=0, numeric=True,
                     doc="how many times (timm: one per q-pooled stage, the stages less one)"),
    }
    arg_examples = {"size": (None, lambda x: [1, x[0]], lambda x: [x[0], 1]),
                    "stride": (1, 2, [1, 2]), "steps": (0, 1, 2)}

    def grid(self, a, x):
        h, w = map_size(self.name, a.size, x[0])
        for side, s, axis in ((h, a.stride[0], "height"), (w, a.stride[1], "width")):
            _divides(self.name, f"the grid's {axis}", side, s ** a.steps)
        return h, w

    def output_shape(self, a, x):
        self.grid(a, x)
        return x

    def shares_storage(self, a):
        return a.steps == 0

    def cost(self, a, x, y):
        if a.steps == 0:
            return (Cost("view"),)
        return (Cost("copy", elements=sym.prod(x), scale=float(a.steps)),)

    def build(self, a, x):
        from .hiera_torch import HieraUnroll as Module
        return Module(list(self.grid(a, x)), [tuple(a.stride)] * a.steps)

    torch_modules = ("archcalc.layers.hiera_torch.HieraUnroll", "timm.models.hiera.Unroll")

    def from_torch(self, call, m):
        """timm's Unroll (or archcalc's): its grid, one stride repeated."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "an Unroll")
        size = [int(v) for v in m.size]
        strides = {tuple(int(v) for v in s) for s in m.schedule}
        if len(size) != 2 or len(strides) > 1 or any(len(s) != 2 for s in strides) or \
                call.x[0] != size[0] * size[1]:
            raise NoMapping(f"an Unroll of a {size} grid by {sorted(strides)} on "
                            f"{call.x[0]} tokens")
        stride = strides.pop() if strides else (2, 2)
        found = {"size": _square_or_pair(*size), "steps": len(m.schedule),
                 "stride": stride[0] if stride[0] == stride[1] else list(stride)}
        return row("hiera_unroll", **{k: v for k, v in found.items()
                                      if v is not None and v != self.args[k].default})


@register
class HieraBlock(Kind):
    """timm's HieraBlock on N unrolled tokens of width C: a layer norm; where
    the width grows to C', the shortcut projected (``expand = "proj"``: a
    linear C -> C', then the max over q stride groups of N/q tokens) or the
    groups' max and mean side by side (``"pool"``, C' = 2C); mask unit
    attention (qkv C -> 3C', q max-pooled over the groups, softmax(q k^T /
    sqrt(d)) v per head within each of N/(q*window) mask units, or over all
    tokens; proj C' -> C'), an optional layer scale, added to the shortcut;
    then x + MLP (layer norm, C' -> hidden, GELU, hidden -> C'). Stochastic
    depth (``drop_prob``) on both residual branches."""
    name = "hiera_block"
    torch_classes = ("HieraBlock",)  # in hiera_torch.py
    primary = "num_heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("Hiera's block on unrolled tokens: mask unit (or global) attention with q "
               "max-pooled over stride groups, the shortcut pooled alike; an MLP")
    flops_rule = ("2 x MACs + 7 per normalized element (N*C, M*C') + the biases (3*N*C' "
                  "qkv, N*C' proj, M*C' out, M*hidden + M*C' MLP) + (q - 1) per pooled "
                  "element (the shortcut's max, q's; the mean's q) + 4 per attention score "
                  "(heads*M*T) + 5 per MLP hidden element (GELU) + M*C' per layer scale + "
                  "2*M*C' (the residual adds); MACs = N*C*C' (proj) + 3*N*C*C' + 2*M*T*C' + "
                  "M*C'^2 + 2*M*C'*hidden, M = N/q tokens out, T = N/units keys")
    args = {
        "num_heads": Arg("int", min=1, numeric=True, doc="attention heads; C' divides by it"),
        "out": Arg("int", None, min=1, numeric=True, doc="C': the output width (default C)"),
        "q_stride": Arg("int", 1, min=1, numeric=True,
                        doc="q: tokens per pooled group (flattened, 4 for 2 x 2)"),
        "mask_unit": Arg("bool", False, doc="attention within mask units (else over all "
                                            "tokens)"),
        "window": Arg("int", 0, min=0, numeric=True,
                      doc="mask_unit: the tokens of a mask unit after pooling (flattened)"),
        "expand": Arg("str", "proj", choices=("proj", "pool"),
                      doc="where C' > C: the shortcut a linear then the max, or max and "
                          "mean concatenated (C' = 2C)"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C')"),
        "gamma": Arg("float", None, doc="the layer scales' initial gamma (none: no layer "
                                        "scale)"),
        "drop_prob": Arg("float", 0.0, min=0.0, max=1.0,
                         doc="stochastic depth of both residual branches (per sample)"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the layer norms"),
    }
    arg_examples = {"num_heads": (1, 2), "out": (None, lambda x: 2 * x[1]),
                    "q_stride": (1, 2), "window": (0, 1, 2), "hidden": (None, 3),
                    "gamma": (None, 0.1)}

    def geometry(self, a, x):
        """(C', M tokens out, units, T keys per query, proj: the shortcut's linear)."""
        n, c = x
        co = a.out if a.out is not None else c
        expand = co != c
        if isinstance(co, int) and co % a.num_heads:
            raise SpecError(f"{self.name}: the width {co} does not divide into {a.num_heads} "
                            f"heads. Received: num_heads={a.num_heads}")
        if a.q_stride > 1 and not expand:
            raise SpecError(f"{self.name}: q_stride pools the tokens only where the width "
                            f"grows (out); here the shortcut keeps all {n}")
        if expand and a.expand == "pool" and isinstance(c, int) and co != 2 * c:
            raise SpecError(f"{self.name}: expand = \"pool\" doubles the width: out must be "
                            f"{2 * c}. Received: out={co}")
        _divides(self.name, "the token count", n, a.q_stride)
        units = 1
        if a.mask_unit:
            if a.window < 1:
                raise SpecError(f"{self.name}: mask_unit needs window, the mask unit's tokens")
            _divides(self.name, "the token count", n, a.q_stride * a.window)
            units = sym.floordiv(n, a.q_stride * a.window)
        return co, sym.floordiv(n, a.q_stride), units, sym.floordiv(n, units), \
            expand and a.expand == "proj"

    def output_shape(self, a, x):
        co, m, _, _, _ = self.geometry(a, x)
        return (m, co)

    def size_arithmetic(self, a, x):
        co, m, units, t, _ = self.geometry(a, x)
        where = f"within {sym.plain(units)} mask units" if a.mask_unit else "over all tokens"
        return [f"{sym.plain(x[0])}/{a.q_stride} = {sym.plain(m)} tokens out, each query "
                f"attending {sym.plain(t)} keys {where}"]

    def hidden(self, a, co):
        return a.hidden if a.hidden is not None else 4 * co

    def params(self, a, x):
        c = x[1]
        co, _, _, _, proj = self.geometry(a, x)
        hid = self.hidden(a, co)
        return sym.norm(2 * c + (c * co + co if proj else 0) + 3 * c * co + 3 * co
                        + co * co + co + 2 * co + 2 * co * hid + hid + co
                        + (2 * co if a.gamma is not None else 0))

    def params_formula(self, a, x):
        c = sym.plain(x[1])
        co, _, _, _, proj = self.geometry(a, x)
        hid, co = sym.plain(self.hidden(a, co)), sym.plain(co)
        return (f"2*{c} + " + (f"({c}*{co} + {co}) (proj) + " if proj else "")
                + f"({c}*3*{co} + 3*{co}) + ({co}*{co} + {co}) (attention) + 2*{co} + "
                f"({co}*{hid} + {hid}) + ({hid}*{co} + {co}) (MLP)"
                + (f" + 2*{co} (layer scales)" if a.gamma is not None else ""))

    def macs(self, a, x, y):
        n, c = x
        co, m, _, t, proj = self.geometry(a, x)
        return sym.norm((n * c * co if proj else 0) + 3 * n * c * co + 2 * m * t * co
                        + m * co * co + 2 * m * co * self.hidden(a, co))

    def macs_missed_by(self, a, x, y):
        co, m, _, t, _ = self.geometry(a, x)
        return {"fvcore": (sym.norm(2 * m * t * co), SDPA_MISSED)}

    def flops(self, a, x, y):
        n, c = x
        co, m, _, t, proj = self.geometry(a, x)
        hid, q = self.hidden(a, co), a.q_stride
        if co == c:
            shortcut = 0
        elif proj:
            shortcut = n * co + (q - 1) * m * co
        else:
            shortcut = (q - 1) * m * c + q * m * c
        scales = 2 * m * co if a.gamma is not None else 0
        return sym.norm(2 * self.macs(a, x, y) + 7 * n * c + shortcut + 3 * n * co
                        + (q - 1) * m * co + 4 * a.num_heads * m * t + m * co + 7 * m * co
                        + m * hid + 5 * m * hid + m * co + scales + 2 * m * co)

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The norm, the shortcut (GEMM and max, or max, mean and cat), the qkv
        GEMM and q's max, the scores, softmax and weighted values, the
        projection, the residual; the MLP's norm, GEMMs and GELU, the residual."""
        n, c = x
        co, m, _, t, proj = self.geometry(a, x)
        hid = self.hidden(a, co)
        out = [Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c))]
        if proj:
            out += [Cost("linear", gemm=(n, co, c), tensors=(c * co, co)),
                    Cost("maxpool2s2", elements=sym.norm(n * co))]
        elif co != c:
            out += [Cost("maxpool2s2", elements=sym.norm(n * c)),
                    Cost("add", elements=sym.norm(n * c)),
                    Cost("cat", elements=sym.norm(m * co))]
        out += [Cost("linear", gemm=(n, 3 * co, c), tensors=(3 * c * co, 3 * co)),
                Cost("copy", elements=sym.norm(3 * n * co)),
                Cost("maxpool2s2", elements=sym.norm(n * co)),
                Cost("linear", gemm=(m, t, co)),
                Cost("softmax", elements=sym.norm(a.num_heads * m * t)),
                Cost("linear", gemm=(m, co, t)),
                Cost("linear", gemm=(m, co, co), tensors=(co * co, co))]
        return (*out, *block_tail_costs(m, co, hid, a.gamma))

    def saved(self, a, x, y):
        # the norm's statistics and output, the shortcut's projection, q, k, v,
        # pooled q, the scores per head, the heads' output; the MLP's norm input,
        # statistics and output, hidden before and after GELU
        n, c = x[0], x[-1]
        try:
            co, m, _, t, _ = self.geometry(a, (n, c))
        except SpecError:       # the engine may ask with a placeholder shape
            co, m, t = c, n, n
        hid = self.hidden(a, co)
        return Saved(input=True, extra=tuple((sym.norm(e), s) for e, s in (
            (2 * n, FP32), (n * c, None), (n * co, None), (3 * n * co, None), (m * co, None),
            (a.num_heads * m * t, None), (m * co, None), (m * co, None), (2 * m, FP32),
            (m * co, None), (m * hid, None), (m * hid, None))))

    def build(self, a, x):
        from .hiera_torch import HieraBlock as Module
        co, _, _, _, _ = self.geometry(a, x)
        return Module(x[1], co, a.num_heads, a.q_stride, a.window if a.mask_unit else 0,
                      a.mask_unit, a.expand == "proj", self.hidden(a, co), a.gamma,
                      a.drop_prob, a.eps)

    torch_modules = ("archcalc.layers.hiera_torch.HieraBlock", "timm.models.hiera.HieraBlock")

    def from_torch(self, call, m):
        """timm's HieraBlock (or archcalc's) on B x N x C unrolled tokens."""
        from .from_torch import NoMapping, row
        _require_tokens(call, "a HieraBlock")
        n, c = call.x
        at = m.attn
        co, heads, q = int(m.dim_out), int(at.heads), int(at.q_stride)
        if int(m.dim) != c or int(at.dim_out) != co or int(at.head_dim) * heads != co or \
                bool(m.do_expand) != (co != c) or \
                (getattr(at, "scale", None) is not None and
                 abs(float(at.scale) * int(at.head_dim) ** 0.5 - 1) > 1e-9):
            raise NoMapping(f"a HieraBlock of width {m.dim} -> {co} with {heads} heads "
                            f"on {n} x {c} tokens")
        check_linear(at.qkv, c, 3 * co, "HieraBlock")
        check_linear(at.proj, co, co, "HieraBlock")
        if m.proj is not None:
            check_linear(m.proj, c, co, "HieraBlock")
        eps = layer_norm_eps(m.norm1, c, "HieraBlock")
        if layer_norm_eps(m.norm2, co, "HieraBlock") != eps:
            raise NoMapping("a HieraBlock whose two layer norms differ")
        hidden = check_mlp(m.mlp, co, "HieraBlock")
        found = {"num_heads": heads, "out": co if co != c else None, "q_stride": q,
                 "mask_unit": bool(at.use_mask_unit_attn),
                 "window": int(at.window_size) if at.use_mask_unit_attn else 0,
                 "expand": "proj" if m.proj is not None or co == c else "pool",
                 "hidden": hidden if hidden != 4 * co else None,
                 "gamma": layer_scales(m.ls1, m.ls2, co, "HieraBlock"),
                 "drop_prob": drop_prob(m, "HieraBlock"), "eps": eps}
        return row("hiera_block", **{k: v for k, v in found.items()
                                     if k == "num_heads" or v != self.args[k].default})


# -- the checks a block's from_torch shares (HieraDet's too) ---------------------


def block_tail_costs(m, co, hid, gamma) -> tuple:
    """A Hiera (or HieraDet) block after its attention's projection: the
    layer scale (where gamma is given) and the residual add, then the MLP's,
    on m tokens of co."""
    ls = (Cost("mul", elements=sym.norm(m * co), tensors=(co,)),) if gamma is not None else ()
    return (*ls, Cost("add", elements=sym.norm(m * co)), *mlp_costs(m, co, hid),
            *ls, Cost("add", elements=sym.norm(m * co)))


def check_linear(fc, cin, cout, what):
    from .from_torch import NoMapping
    if type(fc).__name__ != "Linear" or (fc.in_features, fc.out_features) != (cin, cout) or \
            fc.bias is None:
        raise NoMapping(f"a {what} whose linear is not {cin} -> {cout} with a bias")


def layer_norm_eps(norm, c, what) -> float:
    from .from_torch import NoMapping
    if type(norm).__name__ != "LayerNorm" or tuple(norm.normalized_shape) != (c,) or \
            not norm.elementwise_affine or norm.bias is None:
        raise NoMapping(f"a {what} norm other than a layer norm over {c} "
                        f"({type(norm).__name__})")
    return float(norm.eps)


def check_mlp(mlp, c, what) -> int:
    """timm's Mlp (or archcalc's): fc1, exact GELU, fc2; no dropout, no norm."""
    from .from_torch import NoMapping
    hidden = int(mlp.fc1.out_features)
    check_linear(mlp.fc1, c, hidden, what)
    check_linear(mlp.fc2, hidden, c, what)
    act = mlp.act
    extra = [getattr(mlp, k, None) for k in ("drop1", "norm", "drop2")]
    if type(act).__name__ != "GELU" or getattr(act, "approximate", "none") != "none" or any(
            e is not None and type(e).__name__ != "Identity" and
            not (type(e).__name__ == "Dropout" and e.p == 0) for e in extra):
        raise NoMapping(f"a {what} MLP other than fc1, GELU, fc2 (no dropout)")
    return hidden


def layer_scales(ls1, ls2, c, what):
    """Both branches' layer scale (timm's LayerScale, gamma over C) or neither:
    the initial gamma (1e-5 where the weights are not at hand), or None."""
    from .from_torch import NoMapping
    kinds = {type(ls).__name__ for ls in (ls1, ls2)}
    if kinds <= {"Identity", "NoneType"}:
        return None
    if any(getattr(ls, "gamma", None) is None or tuple(ls.gamma.shape) != (c,) or
           getattr(ls, "inplace", False) for ls in (ls1, ls2)):
        raise NoMapping(f"a {what} with a layer scale on one branch only, or another scale")
    gamma = ls1.gamma
    return float(f"{float(gamma.detach().flatten()[0]):.7g}") \
        if gamma.device.type != "meta" else 1e-5


def drop_prob(m, what) -> float:
    """archcalc's own (drop_prob), or timm's two DropPath (Identity: 0), one p."""
    from .from_torch import NoMapping
    own = getattr(m, "drop_prob", None)
    if own is not None and not hasattr(m, "drop_path1"):
        return float(own)
    found = set()
    for module in (m.drop_path1, m.drop_path2):
        name = type(module).__name__
        if name == "Identity":
            found.add(0.0)
        elif name == "DropPath" and getattr(module, "scale_by_keep", True):
            found.add(float(module.drop_prob))
        else:
            raise NoMapping(f"a {what} residual through {name}")
    if len(found) != 1:
        raise NoMapping(f"a {what} whose two residual branches drop otherwise")
    return found.pop()


# -- the absolute-window position embedding -------------------------------------


class _PositionPart(Kind):
    """What position_grid and position_window share: a learned 1 x C x a x b
    tensor made an h x w grid and added to N = h*w tokens of width C, one
    addition per element; the resize or the tiling is once per forward pass
    (not per sample) and FlopCounterMode counts no MACs for it."""
    flat = True
    inputs = "tokens"
    flops_rule = ("one addition per element (N*C); the resize or tiling is not counted "
                  "(once per forward pass, not per sample)")

    def stored(self, a):  # pragma: no cover - each kind overrides
        raise NotImplementedError

    def output_shape(self, a, x):
        self.grid(a, x)
        return x

    def grid(self, a, x):
        return map_size(self.name, a.size, x[0])

    def params(self, a, x):
        gh, gw = self.stored(a)
        return sym.norm(x[1] * gh * gw)

    def params_formula(self, a, x):
        gh, gw = self.stored(a)
        return f"{sym.plain(x[1])}*{gh}*{gw}"

    def flops(self, a, x, y):
        return sym.prod(y)

    def cost(self, a, x, y):
        return (Cost("add", elements=sym.prod(x), tensors=(self.params(a, x),)),)


@register
class PositionGrid(_PositionPart):
    """A learned 1 x C x gh x gw grid of position embeddings (timm's Hiera
    abswin and HieraDet ``pos_embed``), resized to the tokens' h x w grid
    (bicubic, optionally antialiased) and added, read row-major as the tokens
    are. With ``position_window`` after it: the absolute-window position
    embedding (the two are added in turn)."""
    name = "position_grid"
    torch_classes = ("PositionGrid",)  # in hiera_torch.py
    summary = ("a learned C x gh x gw grid of position embeddings resized (bicubic) to the "
               "tokens' grid and added (Hiera abswin, HieraDet)")
    args = {
        "grid": Arg("pair", min=1, numeric=True, doc="[gh, gw]: the grid as stored"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the tokens' grid, h*w = N; default the square"),
        "antialias": Arg("bool", False, doc="F.interpolate's antialias (Hiera's: true)"),
    }
    arg_examples = {"grid": (1, 2, [1, 3]), "size": (None, lambda x: [1, x[0]])}

    def stored(self, a):
        return a.grid

    def build(self, a, x):
        from .hiera_torch import PositionGrid as Module
        return Module(x[1], tuple(a.grid), self.grid(a, x), a.antialias)

    torch_modules = ("archcalc.layers.hiera_torch.PositionGrid",)   # from_torch reads it

    def from_torch(self, call, m):
        from .from_torch import row
        width, grid, size, antialias = m.init_args
        return row("position_grid", grid=_square_or_pair(*grid) or grid[0],
                   **({"size": list(size)} if size[0] != size[1] else {}),
                   **({"antialias": True} if antialias else {}))


@register
class PositionWindow(_PositionPart):
    """A learned 1 x C x wh x ww window of position embeddings (timm's Hiera
    abswin ``pos_embed_win``, HieraDet's ``pos_embed_window``) tiled over the
    tokens' h x w grid (h/wh x w/ww times) and added, read row-major."""
    name = "position_window"
    torch_classes = ("PositionWindow",)  # in hiera_torch.py
    summary = ("a learned C x wh x ww window of position embeddings tiled over the tokens' "
               "grid and added (Hiera abswin, HieraDet)")
    args = {
        "window": Arg("pair", min=1, numeric=True, doc="[wh, ww]: the window as stored"),
        "size": Arg("pair", None, min=1, numeric=True,
                    doc="[h, w] of the tokens' grid, h*w = N; default the square"),
    }
    arg_examples = {"window": (1, 2), "size": (None, lambda x: [1, x[0]])}

    def stored(self, a):
        return a.window

    def grid(self, a, x):
        h, w = map_size(self.name, a.size, x[0])
        _divides(self.name, "the grid's height", h, a.window[0])
        _divides(self.name, "the grid's width", w, a.window[1])
        return h, w

    def build(self, a, x):
        from .hiera_torch import PositionWindow as Module
        return Module(x[1], tuple(a.window), self.grid(a, x))

    torch_modules = ("archcalc.layers.hiera_torch.PositionWindow",)   # from_torch reads it

    def from_torch(self, call, m):
        from .from_torch import row
        width, window, size = m.init_args
        return row("position_window", window=_square_or_pair(*window) or window[0],
                   **({"size": list(size)} if size[0] != size[1] else {}))
