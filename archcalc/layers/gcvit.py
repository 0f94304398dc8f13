"""GCViT's stage (Hatamizadeh et al. 2022, "Global Context Vision
Transformers"), as timm.models.gcvit's GlobalContextVitStage computes it, one
row on a C x H x W map:

- the downsample (all but the first stage): a layer norm over the channels,
  an MBConv block (x + 1x1 conv(SE(GELU(dwconv3x3(x))))), a 3x3 stride-2
  conv to 2C, a layer norm;
- the global query generator (FeatureBlock): ``levels`` MBConv blocks (one
  where levels = 0), each but where levels = 0 followed by a 3x3 stride-2
  max pool, to a map of one window (M x M positions);
- ``depth`` transformer blocks on the channels-last map: x + attention of
  norm1(x) within M x M windows with a relative position bias table, then
  x + MLP(norm2(x)) (layer scales where ``init`` is given); the odd blocks
  take their queries from the global query (the same M*M x C for each
  window of an image: keys and values only are projected), the even ones
  project their own;
- a layer norm where ``stage_norm`` (the last stage's).

Why one row: the blocks read two tensors (the map and the global query),
and timm folds the windows into the batch; no row reads two tensors but a
merge. MACs are FlopCounterMode's on the meta device divided by two: the
convs, the SE's two 1x1 convs on its pooled vector, the projections, the
attention's two products (the bias is a gather), the MLPs."""
from __future__ import annotations

from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, register
from .composite import Composite, Part, between, part
from .window_attention import WindowAttention


def se_width(c):
    """timm's SEModule width at rd_ratio 1/4: make_divisible(C/4, 8, round_limit=0)."""
    if not isinstance(c, int):
        raise SpecError("gcvit_stage: the SE width follows from the channels, which must be "
                        "a number")
    return max(8, int(c / 4 + 4) // 8 * 8)


class _GlobalWindowAttention(WindowAttention):
    """window_attention as GCViT's WindowAttentionGlobal (a part of the
    stage, not registered): with ``use_global`` the queries come from the
    global query, so the projection makes keys and values only (2C)."""

    def projections(self, a):
        return 2 if a.use_global else 3

    def params(self, a, x):
        d, k = x[1], self.projections(a)
        return sym.norm(k * d * d + (k * d if a.qkv_bias else 0) + d * d + d
                        + self.bias_params(a))

    def macs(self, a, x, y):
        n, d = x
        t = self.geometry(a, x)[2]
        return sym.norm((self.projections(a) + 1) * n * d * d + 2 * n * t * d)

    def cost(self, a, x, y):
        n, d, k = x[0], x[1], self.projections(a)
        qkv = Cost("linear", gemm=(n, k * d, d), tensors=(k * d * d,)
                   + ((k * d,) if a.qkv_bias else ()))
        return (qkv, *WindowAttention.cost(self, a, x, y)[1:])


_ATTENTION = _GlobalWindowAttention()


def mbconv(x):
    """timm's MbConvBlock at expand 1: depthwise 3x3, GELU, SE (mean, 1x1
    conv to the SE width, GELU, 1x1 conv back, sigmoid, times), 1x1 conv."""
    c = x[0]
    rd = se_width(c)
    return [part("conv", x, out=c, kernel=(3, 3), padding=(1, 1), groups=c, bias=False),
            part("gelu", x), part("global_avgpool", x),
            part("conv", (c, 1, 1), out=rd, kernel=(1, 1), bias=False), part("gelu", (rd, 1, 1)),
            part("conv", (rd, 1, 1), out=c, kernel=(1, 1), bias=False),
            part("sigmoid", (c, 1, 1)), part("conv", x, out=c, kernel=(1, 1), bias=False)]


@register
class GcvitStage(Composite, Kind):
    name = "gcvit_stage"
    torch_classes = ("GlobalContextStage",)  # in gcvit_torch.py
    aliases = ("global_context_vit_stage",)
    primary = "heads"      # (a spec table's "heads" key is a structure's)
    inputs = "chw"
    summary = ("GCViT's stage on a C x H x W map: downsample, the global query generator, "
               "window attention blocks (every second one with the global query), norm")
    flops_rule = ("the parts' FLOPs (convs, GELUs, SEs, pools, layer norms, the window "
                  "attentions with their bias, the MLPs, layer scales) + the SEs' products "
                  "and the MBConvs' and blocks' residual adds")
    args = {
        "depth": Arg("int", min=1, numeric=True, doc="transformer blocks"),
        "heads": Arg("int", min=1, numeric=True, doc="attention heads; the width must divide"),
        "window": Arg("pair", min=1, numeric=True,
                      doc="the window M; the map must divide into windows"),
        "levels": Arg("int", 0, min=0, numeric=True,
                      doc="the global query generator's stride-2 max pools (the map / 2^levels "
                          "must be one window)"),
        "downsample": Arg("bool", True, doc="first MBConv, 3x3 stride-2 conv to 2C, norms"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 3C)"),
        "qkv_bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "stage_norm": Arg("bool", False, doc="a layer norm at the end (the last stage's)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of every layer norm"),
        "init": Arg("float", None, min=0.0, doc="layer scales' initial value (none: none)"),
    }
    # the global query must come out one window: a window of the whole map
    # (halved by the downsample), no pool
    arg_examples = {"depth": (1, 2), "heads": (1,), "levels": (0,), "hidden": (None, 3),
                    "window": (lambda x: [x[1], x[2]],
                               lambda x: [(x[1] + 1) // 2, (x[2] + 1) // 2])}

    def geometry(self, a, x):
        """(C, H, W) the blocks see, and the global query's side per level."""
        c, h, w = x
        if a.downsample:
            c, h, w = 2 * c, sym.floordiv(h + 1, 2), sym.floordiv(w + 1, 2)
        if isinstance(c, int) and c % a.heads:
            raise SpecError(f"{self.name}: the width {c} does not divide into {a.heads} heads. "
                            f"Received: heads={a.heads}")
        sides = [(h, w)]
        for _ in range(a.levels):
            sides.append(tuple(sym.floordiv(s + 1, 2) for s in sides[-1]))
        for side, q, m, axis in zip((h, w), sides[-1], a.window, ("height", "width")):
            if isinstance(side, int) and (side % m or q != m):
                raise SpecError(f"{self.name}: the {axis} {side} must divide into windows of "
                                f"{m}, and {a.levels} stride-2 pools must take it to {m} "
                                f"(they give {q}). Received: window={list(a.window)}, "
                                f"levels={a.levels}")
        return (c, h, w), sides

    def attention(self, a, y, use_global):
        c, h, w = y
        args = SimpleNamespace(heads=a.heads, window=tuple(a.window), shift=(0, 0), size=(h, w),
                               qkv_bias=a.qkv_bias, proj_bias=True, roll_first=False,
                               attention_dropout=0.0, dropout=0.0, use_global=use_global)
        n = sym.norm(h * w)
        return Part(_ATTENTION, args, (n, c), (n, c))

    def parts(self, a, x):
        (c, h, w), sides = self.geometry(a, x)
        n, hidden = sym.norm(h * w), (a.hidden if a.hidden is not None else sym.norm(3 * c))
        parts = []
        if a.downsample:
            parts += [part("layer_norm", (x[1] * x[2], x[0]), eps=a.eps), *mbconv(x),
                      part("conv", x, out=c, kernel=(3, 3), stride=(2, 2), padding=(1, 1),
                           bias=False), part("layer_norm", (n, c), eps=a.eps)]
        for i, (sh, sw) in enumerate(sides[:-1] or sides):
            parts += mbconv((c, sh, sw))
            if a.levels:
                parts.append(part("maxpool", (c, sh, sw), kernel=(3, 3), stride=(2, 2),
                                  padding=(1, 1)))
        scale = [part("layer_scale", (n, c))] if a.init is not None else []
        for i in range(a.depth):
            parts += [part("layer_norm", (n, c), eps=a.eps), self.attention(a, (c, h, w), i % 2),
                      *scale, part("layer_norm", (n, c), eps=a.eps),
                      part("fc", (n, c), out=hidden), part("gelu", (n, hidden)),
                      part("fc", (n, hidden), out=c), *scale]
        return parts + ([part("layer_norm", (n, c), eps=a.eps)] if a.stage_norm else [])

    def output_shape(self, a, x):
        self.parts(a, x)
        return self.geometry(a, x)[0]

    def between(self, a, x):
        """Per MBConv its SE's product and residual add (2 per element), per
        block its two residual adds."""
        (c, h, w), sides = self.geometry(a, x)
        mb = 2 * sym.prod(x) if a.downsample else 0
        mb += sum(2 * c * sh * sw for sh, sw in (sides[:-1] or sides))
        return between(("add", mb + 2 * a.depth * c * h * w))

    def window(self, a, x):
        # the global query reads the whole map
        return (x[1], x[2]), (1, 1)

    def build(self, a, x):
        from .gcvit_torch import GlobalContextStage as Module
        (c, _, _), _ = self.geometry(a, x)
        hidden = a.hidden if a.hidden is not None else 3 * c
        return Module(x[0], c, a.depth, a.heads, tuple(a.window), a.levels, a.downsample,
                      hidden, a.qkv_bias, a.stage_norm, a.eps, a.init,
                      se_width(x[0]), se_width(c))

    torch_modules = ("archcalc.layers.gcvit_torch.GlobalContextStage",
                     "timm.models.gcvit.GlobalContextVitStage")

    def from_torch(self, call, m):
        """archcalc's and timm's GlobalContextVitStage, checked module by module."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "GCViT's stage")
        if hasattr(m, "init_args"):     # archcalc's own, as built
            return row("gcvit_stage", **_own_args(m.init_args))
        c_in = call.x[0]
        down = type(m.downsample).__name__ != "Identity"
        c = 2 * c_in if down else c_in
        eps = set()
        if down:
            eps |= _downsample(m.downsample, c_in, c)
        levels = _feature_block(m.global_block, c)
        if type(m.global_norm).__name__ != "Identity":
            raise NoMapping("a GCViT stage with a global norm (global_norm=True)")
        blocks = list(m.blocks)
        found = [_block(b, c, i) for i, b in enumerate(blocks)]
        if not found or any(f != found[0] for f in found):
            raise NoMapping("GCViT blocks that differ (heads, window, MLP, norms, scales)")
        (heads, window, hidden, qkv_bias, block_eps, init), = found[:1]
        eps.add(block_eps)
        stage_norm = type(m.norm).__name__ != "Identity"
        if stage_norm:
            eps.add(_layer_norm(m.norm, c))
        if len(eps) != 1:
            raise NoMapping("a GCViT stage whose layer norms' eps differ")
        args = dict(depth=len(blocks), heads=heads, window=window, levels=levels,
                    downsample=down, qkv_bias=qkv_bias, eps=eps.pop())
        if hidden != 3 * c:
            args["hidden"] = hidden
        if stage_norm:
            args["stage_norm"] = True
        if init is not None:
            args["init"] = init
        return row("gcvit_stage", **args)


def _own_args(init_args):
    (_, c, depth, heads, window, levels, down, hidden, qkv_bias, stage_norm, eps, init,
     _, _) = init_args
    args = dict(depth=depth, heads=heads, window=window[0] if window[0] == window[1]
                else list(window), levels=levels, downsample=down, qkv_bias=qkv_bias, eps=eps)
    if hidden != 3 * c:
        args["hidden"] = hidden
    if stage_norm:
        args["stage_norm"] = True
    if init is not None:
        args["init"] = init
    return args


def _layer_norm(norm, c):
    """The eps of a layer norm over C channels (timm's LayerNorm or LayerNorm2d)."""
    from .from_torch import NoMapping
    if "LayerNorm" not in type(norm).__name__ or tuple(norm.normalized_shape) != (c,) or \
            norm.weight is None or norm.bias is None:
        raise NoMapping(f"a GCViT norm other than a layer norm over {c} channels")
    return float(norm.eps)


def _conv(conv, cin, cout, k, stride, groups):
    from .from_torch import NoMapping
    pad = k // 2
    if (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is None,
            conv.padding_mode) != (cin, cout, (k, k), (stride, stride), (pad, pad), (1, 1),
                                   groups, True, "zeros"):
        raise NoMapping(f"a GCViT conv other than {cin} -> {cout}, {k}x{k}, stride {stride}, "
                        "no bias")


def _gelu(act):
    from .from_torch import NoMapping
    if type(act).__name__ != "GELU" or getattr(act, "approximate", "none") != "none":
        raise NoMapping(f"a GCViT activation {type(act).__name__} (GELU only)")


def _mbconv(mb, c):
    """timm's MbConvBlock at expand 1 with its SE (1/4, no biases, GELU, sigmoid)."""
    from .from_torch import NoMapping
    se = mb.se
    _conv(mb.conv_dw, c, c, 3, 1, c)
    _conv(mb.conv_pw, c, c, 1, 1, 1)
    _gelu(mb.act)
    _gelu(se.act)
    _conv(se.fc1, c, se_width(c), 1, 1, 1)
    _conv(se.fc2, se_width(c), c, 1, 1, 1)
    if type(se.gate).__name__ != "Sigmoid" or type(getattr(se, "bn", None)).__name__ not in (
            "Identity", "NoneType") or getattr(se, "add_maxpool", False):
        raise NoMapping("a GCViT SE other than 1x1 convs with GELU and a sigmoid gate")


def _downsample(d, c_in, c):
    from .from_torch import NoMapping
    if type(d.reduction).__name__ != "Conv2d":
        raise NoMapping("a GCViT downsample by pooling (reduction other than 'conv')")
    _mbconv(d.conv_block, c_in)
    _conv(d.reduction, c_in, c, 3, 2, 1)
    return {_layer_norm(d.norm1, c_in), _layer_norm(d.norm2, c)}


def _feature_block(fb, c):
    """The global query generator's levels: MBConvs each followed by a max pool."""
    from .from_torch import NoMapping
    layers = list(fb.blocks)
    convs = [m for m in layers if type(m).__name__ != "MaxPool2d"]
    pools = [m for m in layers if type(m).__name__ == "MaxPool2d"]
    if not convs or len(layers) != len(convs) + len(pools) or \
            any(type(p).__name__ != "MaxPool2d" for p in layers[1::2] if pools) or \
            (pools and len(pools) != len(convs)) or \
            any((_pair(p.kernel_size), _pair(p.stride), _pair(p.padding), _pair(p.dilation),
                 p.ceil_mode) != ((3, 3), (2, 2), (1, 1), (1, 1), False) for p in pools):
        raise NoMapping("a GCViT global query generator other than MBConvs each followed by "
                        "a 3x3 stride-2 max pool")
    for mb in convs:
        _mbconv(mb, c)
    return len(pools)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _block(b, c, i):
    """(heads, window, hidden, qkv_bias, eps, init) of a GlobalContextVitBlock."""
    from .from_torch import NoMapping
    from .maxxvit import _layer_scale
    attn, mlp = b.attn, b.mlp
    heads, window = int(attn.num_heads), tuple(int(v) for v in attn.window_size)
    rel = getattr(attn, "rel_pos", None)
    if bool(attn.use_global) != bool(i % 2) or c % heads or attn.head_dim * heads != c or \
            abs(float(attn.scale) * (c // heads) ** 0.5 - 1) > 1e-9 or \
            type(rel).__name__ != "RelPosBias" or getattr(rel, "prefix_tokens", 0) or \
            tuple(rel.relative_position_bias_table.shape) != \
            ((2 * window[0] - 1) * (2 * window[1] - 1), heads) or \
            tuple(int(v) for v in b.window_size) != window or \
            (attn.qkv.in_features, attn.qkv.out_features) != (c, (2 if i % 2 else 3) * c) or \
            (attn.proj.in_features, attn.proj.out_features) != (c, c) or attn.proj.bias is None \
            or attn.attn_drop.p or attn.proj_drop.p:
        raise NoMapping("a GCViT window attention other than timm's (global queries in the odd "
                        "blocks, a relative position bias table, no dropout)")
    for name in ("drop_path1", "drop_path2"):
        if getattr(getattr(b, name, None), "drop_prob", 0.0):
            raise NoMapping("stochastic depth (drop_path) in a GCViT block")
    _gelu(mlp.act)
    if type(getattr(mlp, "norm", None)).__name__ not in ("Identity", "NoneType") or \
            any(getattr(getattr(mlp, n, None), "p", 0.0) for n in ("drop1", "drop2")) or \
            mlp.fc1.in_features != c or mlp.fc2.out_features != c or \
            mlp.fc1.bias is None or mlp.fc2.bias is None:
        raise NoMapping("a GCViT MLP other than C -> hidden -> C with GELU and biases")
    inits = {_layer_scale(getattr(b, "ls1", None)), _layer_scale(getattr(b, "ls2", None))}
    if len(inits) != 1:
        raise NoMapping("a GCViT block with one layer scale")
    eps = {_layer_norm(b.norm1, c), _layer_norm(b.norm2, c)}
    if len(eps) != 1:
        raise NoMapping("a GCViT block whose norms' eps differ")
    return (heads, window[0] if window[0] == window[1] else list(window),
            int(mlp.fc1.out_features), attn.qkv.bias is not None, eps.pop(), inits.pop())


__all__ = ["GcvitStage", "se_width"]
