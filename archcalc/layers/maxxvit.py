"""timm's MaxViT (Tu et al. 2022) and CoAtNet (Dai et al. 2021) attention, as
timm.models.maxxvit computes it: ``map_attention`` (Attention2d: multi-head
self-attention over every position of a C x H x W map, 1x1 conv projections,
CoAtNet's transformer blocks) and ``partition_transformer``
(PartitionAttentionCl and ParallelPartitionAttention: MaxViT's block or grid
attention and its MLP on a channels-last map).

Why the partition transformer is one row: timm folds the windows into the
batch (B*windows x P x P x C) between its norm and its projection, which no
row can say (a row keeps the batch); torchvision's MaxViT, whose partitions
keep it, imports as rows of window_partition, partition_attention and
window_departition instead.

The relative position bias (``rel_pos``), over the window the attention sees
(the whole map for map_attention, a P x P partition otherwise):

- "bias": timm's RelPosBias, a (2h-1)(2w-1) x heads table gathered per pair
  of positions (no MAC);
- "mlp": timm's RelPosMlp ('cr' mode), an MLP 2 -> hidden -> heads (ReLU) of
  the log-spaced relative coordinates, then gathered;
- "bias_tf": timm's RelPosBiasTf, a heads x (2h-1) x (2w-1) table reindexed by
  two einsums with one-hot lookups;
- "none".

MACs are FlopCounterMode's on the meta device divided by two: the
projections, scaled_dot_product_attention as its two products (scores and
weighted values), the MLP. The "mlp" and "bias_tf" biases are computed once
per forward pass, whatever the batch: the MACs here count them per sample,
exact at batch 1 (the import's reference); at batch B FlopCounterMode counts
them once where B x MACs counts them B times.
"""
from __future__ import annotations

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .window_attention import _square_or_pair, map_size

REL_POS = ("none", "bias", "mlp", "bias_tf")
_TIMM_REL_POS = {"RelPosBias": "bias", "RelPosMlp": "mlp", "RelPosBiasTf": "bias_tf"}
INT64 = 8
SDPA_MISSED = ("fvcore has no handler for aten::scaled_dot_product_attention (the two "
               "attention matmuls, 2*N*T*A per attention, T the positions each attends to)")


def rel_pos_params(kind, heads, window, hidden):
    """Parameters of a relative position bias over an h x w window."""
    h, w = window
    if kind in ("bias", "bias_tf"):
        return (2 * h - 1) * (2 * w - 1) * heads
    if kind == "mlp":
        return 3 * hidden + hidden * heads + heads
    return 0


def rel_pos_buffers(kind, window):
    """Its (non-persistent) buffers: the gather index, the log coordinates, the lookups."""
    h, w = window
    if kind == "bias":
        return (h * w) ** 2
    if kind == "mlp":
        return (h * w) ** 2 + 2 * (2 * h - 1) * (2 * w - 1)
    if kind == "bias_tf":
        return h * h * (2 * h - 1) + w * w * (2 * w - 1)
    return 0


def rel_pos_macs(kind, heads, window, hidden):
    """MACs of making the bias (once per forward pass): the MLP on (2h-1)(2w-1)
    coordinates, or the two one-hot einsums."""
    h, w = window
    table = (2 * h - 1) * (2 * w - 1)
    if kind == "mlp":
        return table * (2 * hidden + hidden * heads)
    if kind == "bias_tf":
        return heads * h * h * table + heads * h * h * w * w * (2 * w - 1)
    return 0


REL_POS_ARGS = {
    "rel_pos": Arg("str", "bias", choices=REL_POS,
                   doc="the relative position bias: timm's RelPosBias (bias), RelPosMlp (mlp), "
                       "RelPosBiasTf (bias_tf) or none"),
    "rel_hidden": Arg("int", 512, min=1, doc="rel_pos = mlp: its hidden width"),
    "head_first": Arg("bool", True, doc="qkv channels as [head][q, k, v] (else [q, k, v][head])"),
    "bias": Arg("bool", True, doc="the qkv and output projections' biases"),
    "attention_dropout": Arg("float", 0.0, min=0.0, max=1.0),
    "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the output projection's output"),
}


def _heads_of(kind, heads, width):
    if isinstance(width, int) and width % heads:
        raise SpecError(f"{kind}: the attention width {width} does not divide into {heads} "
                        f"heads. Received: heads={heads}")
    return width // heads


def _timm_rel_pos(attn):
    """(rel_pos, window, hidden) of timm's or archcalc's attention module."""
    from .from_torch import NoMapping
    rel = attn.rel_pos
    own = getattr(attn, "rel_pos_type", None)
    if rel is None:
        return "none", None, 512
    kind = own or _TIMM_REL_POS.get(type(rel).__name__)
    if kind is None:
        raise NoMapping(f"a relative position {type(rel).__name__}")
    if getattr(rel, "prefix_tokens", 0) or (kind == "mlp" and own is None and (
            rel.mode != "cr" or rel.bias_gain is not None)):
        raise NoMapping("a relative position MLP other than timm's 'cr' mode without prefix tokens")
    window = tuple(int(v) for v in (attn.window_size if own else rel.window_size))
    hidden = int(rel.mlp.fc1.out_features) if kind == "mlp" else 512
    if kind == "mlp" and (type(rel.mlp.act).__name__ != "ReLU" or rel.mlp.fc1.in_features != 2):
        raise NoMapping("a relative position MLP other than 2 -> hidden -> heads with ReLU")
    return kind, window, hidden


def _attention_args(attn, width):
    """The arguments of timm's (or archcalc's) attention module shared by the two kinds."""
    from .from_torch import NoMapping
    heads, dh = int(attn.num_heads), int(attn.dim_head)
    if heads * dh != width or (attn.qkv.bias is None) != (attn.proj.bias is None):
        raise NoMapping(f"attention of {heads} x {dh} with projections other than "
                        f"{width} wide, both with or both without biases")
    rel, window, hidden = _timm_rel_pos(attn)
    args = {"heads": heads, "rel_pos": rel, "head_first": bool(attn.head_first),
            "bias": attn.qkv.bias is not None, "attention_dropout": float(attn.attn_drop.p),
            "dropout": float(attn.proj_drop.p)}
    if rel == "mlp":
        args["rel_hidden"] = hidden
    return args, window


def _require_tokens(call, what):
    from .from_torch import NoMapping
    if len(call.x) != 2:
        raise NoMapping(f"{what} on a {len(call.x)}-d input (it takes tokens)")


def _layer_scale(ls):
    """A layer scale's init: its gamma's value where it holds one (not on the
    meta device), else timm's 1e-6; None where there is none."""
    gamma = getattr(ls, "gamma", None)
    if gamma is None:
        return None
    gamma = gamma.detach()
    if gamma.device.type != "meta" and gamma.numel() and bool((gamma == gamma.flatten()[0]).all()):
        return float(f"{float(gamma.flatten()[0]):.7g}")
    return 1e-6


def _width(layer, side):
    """A Linear's or a 1x1 Conv2d's input or output width."""
    return int(getattr(layer, f"{side}_features", None) or getattr(layer, f"{side}_channels"))


def _dropout(mlp):
    """The one dropout of timm's Mlp (drop1, drop2) or ConvMlp (drop); refused where two differ."""
    from .from_torch import NoMapping
    ps = {float(getattr(getattr(mlp, name, None), "p", 0.0))
          for name in ("drop", "drop1", "drop2") if hasattr(mlp, name)}
    if len(ps) > 1:
        raise NoMapping("a partition block MLP with two different dropouts")
    return ps.pop() if ps else 0.0


def _block_args(m, c):
    """The norms, MLP and layer scales of a partition block (timm's or archcalc's)."""
    from .from_torch import NoMapping
    norms = (m.norm1, m.norm2)
    if any(not hasattr(nm, "normalized_shape") or tuple(nm.normalized_shape) != (c,)
           or getattr(nm, "weight", None) is None or getattr(nm, "bias", None) is None
           or "LayerNorm" not in type(nm).__name__
           for nm in norms) or norms[0].eps != norms[1].eps:
        raise NoMapping("partition block norms other than two layer norms of the tokens' width")
    for name in ("drop_path1", "drop_path2"):
        if getattr(getattr(m, name, None), "drop_prob", 0.0):
            raise NoMapping("stochastic depth (drop_path) in a partition block")
    mlp = m.mlp
    act = mlp.act
    approximate = getattr(act, "approximate", None)
    if approximate is None:
        approximate = {"GELU": "none", "GELUTanh": "tanh"}.get(type(act).__name__)
    if approximate not in ("none", "tanh") or "GELU" not in type(act).__name__ or \
            getattr(mlp, "norm", None) is not None and type(mlp.norm).__name__ != "Identity" \
            or _width(mlp.fc1, "in") != c or _width(mlp.fc2, "out") != c or \
            mlp.fc1.bias is None or mlp.fc2.bias is None or \
            any(tuple(getattr(fc, "kernel_size", (1, 1))) != (1, 1) for fc in (mlp.fc1, mlp.fc2)):
        raise NoMapping("a partition block MLP other than C -> hidden -> C with GELU")
    inits = {_layer_scale(getattr(m, "ls1", None)), _layer_scale(getattr(m, "ls2", None))}
    if len(inits) != 1:
        raise NoMapping("a partition block with one layer scale")
    init, = inits
    args = {"eps": float(m.norm1.eps)}
    if _width(mlp.fc1, "out") != 4 * c:
        args["hidden"] = _width(mlp.fc1, "out")
    if approximate == "tanh":
        args["act"] = "gelu_tanh"
    if init is not None:
        args["init"] = init
    return args


@register
class MapAttention(Kind):
    """Multi-head self-attention over all H*W positions of a map (timm's
    Attention2d, CoAtNet's transformer blocks): a 1x1 conv to q, k and v
    (A = heads*head_dim channels each), softmax(q k^T / sqrt(head_dim) +
    relative position bias) v per head, a 1x1 conv to ``out``. A is ``out``
    (``expand_first``) or C. The bias spans the whole map (its window is
    H x W). Receptive field: the whole map."""
    name = "map_attention"
    torch_classes = ("MaxxAttention",)   # in maxxvit_torch.py
    aliases = ("attention2d",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "chw"
    summary = ("multi-head self-attention over every position of a C x H x W map: 1x1 conv "
               "projections, a relative position bias over the map (timm's Attention2d)")
    flops_rule = ("2 x MACs + 5 per attention score (scale, bias add, softmax's exp, sum, "
                  "divide); MACs = N*C*3A + 2*N^2*A + N*A*out (N = H*W) + the bias's making "
                  "(rel_pos mlp, bias_tf)")
    args = {"heads": Arg("int", min=1, numeric=True, doc="attention heads; A must divide by it"),
            "out": Arg("int", None, min=1, numeric=True, doc="output channels (default C)"),
            "expand_first": Arg("bool", True, doc="the attention width A is out (else C)"),
            **REL_POS_ARGS}
    # rel_pos mlp and bias_tf make their bias once per forward (see the module's
    # docstring): tests/test_import_maxxvit.py compares them at batch 1 and 2
    arg_examples = {"heads": (1, 2), "rel_pos": ("none", "bias")}

    def widths(self, a, x):
        """(A, out, head_dim) (output_shape checks that A divides into the heads)."""
        out = a.out if a.out is not None else x[0]
        width = out if a.expand_first else x[0]
        return width, out, width // a.heads

    def output_shape(self, a, x):
        width, out, _ = self.widths(a, x)
        _heads_of(self.name, a.heads, width)
        return (out, x[1], x[2])

    def params(self, a, x):
        width, out, _ = self.widths(a, x)
        c = x[0]
        bias = 3 * width + out if a.bias else 0
        return sym.norm(c * 3 * width + width * out + bias
                        + rel_pos_params(a.rel_pos, a.heads, (x[1], x[2]), a.rel_hidden))

    def buffers(self, a, x):
        return rel_pos_buffers(a.rel_pos, (x[1], x[2]))

    def macs(self, a, x, y):
        width, out, _ = self.widths(a, x)
        c, h, w = x
        n = h * w
        return sym.norm(n * c * 3 * width + 2 * n * n * width + n * width * out
                        + rel_pos_macs(a.rel_pos, a.heads, (h, w), a.rel_hidden))

    def flops(self, a, x, y):
        n = x[1] * x[2]
        return sym.norm(2 * self.macs(a, x, y) + 5 * a.heads * n * n)

    def macs_missed_by(self, a, x, y):
        n = x[1] * x[2]
        return {"fvcore": (sym.norm(2 * n * n * self.widths(a, x)[0]), SDPA_MISSED)}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        return (x[1], x[2]), (1, 1)

    def saved(self, a, x, y):
        # the input (the qkv conv's), the contiguous q, k and v, the attention
        # weights per head and pair, the heads' output (the projection's input)
        width, _, _ = self.widths(a, x)
        n = x[1] * x[2]
        return Saved(input=True, extra=((3 * n * width, None), (a.heads * n * n, None),
                                        (n * width, None)))

    def cost(self, a, x, y):
        """The qkv GEMM, the scores and weighted values, the softmax, the projection."""
        width, out, _ = self.widths(a, x)
        c, h, w = x
        n = h * w
        return (Cost("linear", gemm=(n, 3 * width, c), tensors=(3 * width * c,)),
                Cost("linear", gemm=(n, n, width)),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, width, n)),
                Cost("linear", gemm=(n, out, width), tensors=(out * width,)))

    def build(self, a, x):
        from .maxxvit_torch import MaxxAttention as Module
        width, out, dh = self.widths(a, x)
        return Module(x[0], out, a.heads, dh, a.bias, a.head_first, a.rel_pos, (x[1], x[2]),
                      a.rel_hidden, a.attention_dropout, a.dropout, nchw=True)

    torch_modules = ("archcalc.layers.maxxvit_torch.MaxxAttention",
                     "timm.models.maxxvit.Attention2d")

    def from_torch(self, call, m):
        """timm's Attention2d (or archcalc's MaxxAttention on a map): its
        bias must span the map it is called on."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "Attention2d")
        if not getattr(m, "nchw", True):
            raise NoMapping("channels-last attention on a map")
        c, h, w = call.x
        for conv in (m.qkv, m.proj):
            if tuple(conv.kernel_size) != (1, 1) or tuple(conv.stride) != (1, 1) or \
                    conv.groups != 1 or tuple(conv.padding) != (0, 0):
                raise NoMapping("Attention2d projections other than 1x1 convs")
        width, out = m.qkv.out_channels // 3, m.proj.out_channels
        args, window = _attention_args(m, width)
        if window is not None and window != (h, w):
            raise NoMapping(f"a relative position bias over {window}, called on a {h} x {w} map")
        if width == out:
            expand_first = True
        elif width == c:
            expand_first = False
        else:
            raise NoMapping(f"an attention width {width} that is neither C ({c}) nor out ({out})")
        extra = {} if out == c else {"out": out}
        extra |= {} if expand_first else {"expand_first": False}
        return row("map_attention", **args, **extra)


@register
class PartitionTransformer(Kind):
    """MaxViT's block or grid attention with its MLP, on tokens of an h x w map
    (timm's PartitionAttentionCl): x + ls1(attention within each partition of
    norm1(x)), then x + ls2(MLP(norm2(x))). ``partition`` "block": P x P
    windows; "grid": a P x P grid of positions h/P and w/P apart; "parallel"
    (ParallelPartitionAttention): both, each projecting to C/2, concatenated.
    Attention width C, heads of C/heads; layer norms with ``eps``, an MLP
    C -> hidden -> C with GELU (``act``), layer scales where ``init`` is given.
    On a C x H x W map (timm's PartitionAttention2d, MaxxVit's use_nchw_attn):
    the same block, its norms over the channels, its projections and MLP 1x1
    convs (the same params and MACs), block or grid.
    Receptive field: a window for "block", the whole map otherwise."""
    name = "partition_transformer"
    torch_classes = ("MaxxAttention", "PartitionTransformer")   # in maxxvit_torch.py
    aliases = ("maxvit_partition",)
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"      # or a C x H x W map (PartitionAttention2d): see check_input
    summary = ("MaxViT's block or grid partition attention and its MLP, each pre-norm and "
               "residual, on the tokens of an h x w map (timm's PartitionAttentionCl)")
    flops_rule = ("2 x MACs + 5 per attention score + 8 per MLP hidden element (GELU) + 10 "
                  "per token and channel (two layer norms) + 2 per token and channel (the "
                  "residual adds); MACs = per attention N*C*3C + 2*N*P^2*C + N*C*C' (C' = C, "
                  "or C/2 for each of parallel's two) + 2*N*C*hidden + the bias's making")
    args = {"heads": Arg("int", min=1, numeric=True, doc="attention heads; C must divide by it"),
            "window": Arg("pair", min=1, numeric=True, doc="P: the partition's side"),
            "partition": Arg("str", "block", choices=("block", "grid", "parallel")),
            "size": Arg("pair", None, min=1, numeric=True,
                        doc="[h, w] of the map, h*w = N; default: the square sqrt(N) x sqrt(N)"),
            "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4C)"),
            "act": Arg("str", "gelu", choices=("gelu", "gelu_tanh")),
            "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the layer norms"),
            "init": Arg("float", None, min=0.0, doc="layer scales' initial value (none: none)"),
            **REL_POS_ARGS}
    # rel_pos mlp and bias_tf make their bias once per forward (see the module's
    # docstring): tests/test_import_maxxvit.py compares them at batch 1 and 2
    arg_examples = {"heads": (1, 2), "rel_pos": ("none", "bias"), "window": (1, 2, [1, 2]),
                    "size": (lambda x: [1, x[0]],
                             lambda x: [2, x[0] // 2] if x[0] % 2 == 0 else [x[0], 1])}

    def check_input(self, x):
        """Tokens (timm's channels-last blocks), or a C x H x W map (its
        PartitionAttention2d); the registry's draws are tokens, and
        tests/test_import_maxxvit.py builds the map's form against timm's."""
        if len(x) != 3:
            super().check_input(x)

    @staticmethod
    def points(x):
        """(N, C) of tokens or of a C x H x W map (PartitionAttention2d's layout)."""
        return (x[1] * x[2], x[0]) if len(x) == 3 else (x[0], x[-1])

    def geometry(self, a, x):
        """(h, w), the partition's positions T, the attentions' (count, output width)."""
        if len(x) == 3:
            c, h, w = x
            if a.size is not None or a.partition == "parallel":
                raise SpecError(f"{self.name}: on a map, the map is the size and the partition "
                                f"is block or grid. Received: size={a.size}, "
                                f"partition={a.partition!r}")
        elif len(x) == 2:
            c, (h, w) = x[1], map_size(self.name, a.size, x[0])
        else:
            raise SpecError(f"{self.name}: takes tokens or a C x H x W map, not {list(x)}")
        ph, pw = a.window
        for side, p, axis in ((h, ph, "height"), (w, pw, "width")):
            if isinstance(side, int) and side % p:
                raise SpecError(f"{self.name}: the {axis} {side} does not divide into "
                                f"partitions of {p}. Received: window={list(a.window)}")
        _heads_of(self.name, a.heads, c)
        if a.partition == "parallel":
            if isinstance(c, int) and c % 2:
                raise SpecError(f"{self.name}: parallel partitions concatenate two halves; "
                                f"the width {c} is odd")
            return (h, w), ph * pw, (2, c // 2)
        return (h, w), ph * pw, (1, c)

    def output_shape(self, a, x):
        self.geometry(a, x)
        return x

    def hidden(self, a, x):
        return a.hidden if a.hidden is not None else 4 * self.points(x)[1]

    def params(self, a, x):
        c, hid = self.points(x)[1], self.hidden(a, x)
        _, _, (count, out) = self.geometry(a, x)
        attn = 3 * c * c + c * out + ((3 * c + out) if a.bias else 0) \
            + rel_pos_params(a.rel_pos, a.heads, a.window, a.rel_hidden)
        return sym.norm(count * attn + 4 * c + 2 * c * hid + hid + c
                        + (2 * c if a.init is not None else 0))

    def buffers(self, a, x):
        return sym.norm(self.geometry(a, x)[2][0] * rel_pos_buffers(a.rel_pos, a.window))

    def macs(self, a, x, y):
        n, c = self.points(x)
        _, t, (count, out) = self.geometry(a, x)
        attn = n * c * 3 * c + 2 * n * t * c + n * c * out \
            + rel_pos_macs(a.rel_pos, a.heads, a.window, a.rel_hidden)
        return sym.norm(count * attn + 2 * n * c * self.hidden(a, x))

    def flops(self, a, x, y):
        n, c = self.points(x)
        _, t, (count, _) = self.geometry(a, x)
        return sym.norm(2 * self.macs(a, x, y) + 5 * count * a.heads * n * t
                        + 8 * n * self.hidden(a, x) + 12 * n * c)

    def macs_missed_by(self, a, x, y):
        n, c = self.points(x)
        _, t, (count, _) = self.geometry(a, x)
        return {"fvcore": (sym.norm(count * 2 * n * t * c), SDPA_MISSED)}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def window(self, a, x):
        (h, w), _, _ = self.geometry(a, x)
        return (tuple(a.window) if a.partition == "block" else (h, w)), (1, 1)

    def saved(self, a, x, y):
        # per attention: its input (the partitioned copy), q, k and v, the
        # weights per head and pair, the heads' output; the norms' inputs and
        # outputs; the MLP's input, hidden (before and after GELU)
        n, c = self.points(x)   # (the engine may ask with a placeholder shape)
        t, count = a.window[0] * a.window[1], 2 if a.partition == "parallel" else 1
        hid = a.hidden if a.hidden is not None else 4 * c
        per_attn = ((n * c, None), (3 * n * c, None), (a.heads * n * t, None), (n * c, None))
        return Saved(input=True, extra=tuple((sym.norm(e), s) for e, s in per_attn) * count
                     + ((n * c, None), (n * c, None), (n * hid, None), (n * hid, None)))

    def cost(self, a, x, y):
        """Per attention: the qkv GEMM, the scores and weighted values, the
        softmax, the projection; the MLP's two GEMMs and the layer norms."""
        n, c = self.points(x)
        _, t, (count, out) = self.geometry(a, x)
        hid = self.hidden(a, x)
        attn = (Cost("linear", gemm=(n, 3 * c, c), tensors=(3 * c * c,)),
                Cost("linear", gemm=(n, t, c)),
                Cost("softmax", elements=sym.norm(a.heads * n * t)),
                Cost("linear", gemm=(n, c, t)),
                Cost("linear", gemm=(n, out, c), tensors=(out * c,)))
        return (Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c)), *attn * count,
                Cost("layer_norm", elements=sym.norm(n * c), tensors=(c, c)),
                Cost("linear", gemm=(n, hid, c), tensors=(hid * c,)),
                Cost("linear", gemm=(n, c, hid), tensors=(hid * c,)))

    def build(self, a, x):
        from .maxxvit_torch import PartitionTransformer as Module
        (h, w), _, _ = self.geometry(a, x)
        c = self.points(x)[1]
        return Module(c, a.partition, tuple(a.window), h, w, a.heads, c // a.heads,
                      a.head_first, a.bias, a.rel_pos, a.rel_hidden, self.hidden(a, x),
                      "tanh" if a.act == "gelu_tanh" else "none", a.eps, a.init,
                      a.attention_dropout, a.dropout, nchw=len(x) == 3)

    torch_modules = ("archcalc.layers.maxxvit_torch.PartitionTransformer",
                     "timm.models.maxxvit.PartitionAttentionCl",
                     "timm.models.maxxvit.ParallelPartitionAttention",
                     "timm.models.maxxvit.PartitionAttention2d")

    def from_torch(self, call, m):
        """timm's PartitionAttentionCl or ParallelPartitionAttention (on B x H x W
        x C), PartitionAttention2d (on B x C x H x W), or archcalc's
        PartitionTransformer (on tokens or a map)."""
        from .from_torch import NoMapping, row
        nchw = len(call.x) == 3
        if not nchw:
            _require_tokens(call, "a partition transformer")
            own = getattr(m, "map_size", None)
            if own is None and len(call.x_torch) != 3:
                raise NoMapping(f"partition attention on a {list(call.x_torch)} input "
                                "(it takes B x H x W x C)")
            h, w = (int(v) for v in (own or call.x_torch[:2]))
        n, c = self.points(call.x)
        parallel = hasattr(m, "attn_block")
        attns = (m.attn_block, m.attn_grid) if parallel else (m.attn,)
        out = c // 2 if parallel else c
        found = [_attention_args(attn, c) for attn in attns]
        if any(f != found[0] for f in found) or any(
                _width(attn.proj, "out") != out or getattr(attn, "nchw", nchw) != nchw
                or (type(attn.qkv).__name__ == "Conv2d") != nchw for attn in attns):
            raise NoMapping("partition attentions that differ, project to other than "
                            f"{out} channels, or compute in another layout than the block")
        args, window = found[0]
        if _dropout(m.mlp) != args["dropout"]:
            raise NoMapping("a partition block whose MLP dropout is not its projection's")
        window = window or tuple(int(v) for v in m.partition_size)
        if window != tuple(int(v) for v in m.partition_size):
            raise NoMapping(f"a relative position bias over {window}, partitions of "
                            f"{tuple(m.partition_size)}")
        if parallel:
            partition = "parallel"
        elif hasattr(m, "partition_block"):     # timm's
            partition = "block" if m.partition_block else "grid"
        else:
            partition = m.partition
        args = dict(args, window=list(window) if window[0] != window[1] else window[0],
                    partition=partition)
        if not nchw:
            args["size"] = _square_or_pair(h, w)
        return row("partition_transformer", **args, **_block_args(m, c))


__all__ = ["MapAttention", "PartitionTransformer", "rel_pos_params", "rel_pos_buffers",
           "rel_pos_macs", "REL_POS"]
