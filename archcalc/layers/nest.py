"""NesT's level (Zhang et al. 2021, "Nested Hierarchical Transformer"), as
timm.models.nest's NestLevel, one row on a C x H x W map:

- the block aggregation (all but the first level, ``out`` given): timm's
  ConvPool, a 3x3 conv C -> out (padding 1, bias), a layer norm over the
  channels, a 3x3 stride-2 max pool (padding 1 on each side, or TF's same
  padding, 1 at the bottom and right, ``pool_same``): H and W must be even;
- blockify: the map cut into b x b blocks (``block_size``), T = H*W/b^2
  blocks of N = b^2 tokens each, a learned position embedding per block and
  token (1 x T x N x C);
- ``depth`` transformer layers on each block's tokens: x + attention of
  norm1(x) within the block (qkv, softmax per head, proj), then
  x + MLP(norm2(x)) (C -> hidden, GELU, hidden -> C);
- deblockify: the blocks read back as a map (timm reads the grid's side as
  sqrt(T): the map must be square).

Why one row: timm's deblockify computes the grid's side with
int(math.sqrt(T)) from the tensor's shape (fx cannot trace it: timm marks it
not traceable for its own feature extraction), and the layers run on a
B x T x N x C tensor that no spec shape holds; the level is the smallest
part whose input and output are maps.

MACs (FlopCounterMode's, the conv and the matrix products): the conv
H*W*C*out*9, per layer 4*T*N*C^2 (qkv, proj) + 2*T*N^2*C (scores, values)
+ 2*T*N*C*hidden (the MLP); the norms, the pool, the softmax and the adds
are FLOPs, not MACs."""
from __future__ import annotations

from math import isqrt
from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .composite import Composite, Part, between, part
from .tokens import SelfAttention

FP32 = 4


class _BlockAttention(SelfAttention):
    """timm's NesT Attention as a part (not registered): attention over the
    N x D tokens in groups of ``a.group`` consecutive tokens (one block each),
    the projections on all N; its params are ``attention``'s (keys = qkv)."""

    def macs(self, a, x, y):
        n, d = x
        return sym.norm(4 * n * d * d + 2 * n * a.group * d)

    def flops(self, a, x, y):
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * x[0] * a.group)

    def saved(self, a, x, y):
        n, d = x[0], x[-1]
        return Saved(input=True, extra=((sym.norm(3 * n * d), None), (sym.norm(n * d), None),
                                        (sym.norm(a.heads * n), FP32)))

    def cost(self, a, x, y):
        n, d = x
        bias = (3 * d,) if a.bias else ()
        return (Cost("linear", gemm=(n, 3 * d, d), tensors=(3 * d * d,) + bias),
                Cost("linear", gemm=(n, a.group, d)),
                Cost("softmax", elements=sym.norm(a.heads * n * a.group)),
                Cost("linear", gemm=(n, d, a.group)),
                Cost("linear", gemm=(n, d, d), tensors=(d * d, d)))


_ATTENTION = _BlockAttention()


@register
class NestLevel(Composite, Kind):
    name = "nest_level"
    torch_classes = ("NestLevel",)  # in nest_torch.py
    primary = "depth"
    inputs = "chw"
    summary = ("NesT's level on a C x H x W map: ConvPool (3x3 conv, norm, 3x3 stride-2 max "
               "pool), b x b blocks with a position embedding, transformer layers attending "
               "within each block")
    flops_rule = ("the parts' FLOPs (the conv, layer norms, max pool, the position "
                  "embedding's add, per layer the blocks' attention (4 per score), the MLP "
                  "and its GELU) + the layers' residual adds; MACs = 9*H*W*C*out (the conv) "
                  "+ depth*(4*T*N*D^2 + 2*T*N^2*D + 2*T*N*D*hidden)")
    args = {
        "depth": Arg("int", min=1, numeric=True, doc="transformer layers"),
        "num_heads": Arg("int", min=1, numeric=True, doc="attention heads; the width must "
                                                         "divide by it"),
        "block_size": Arg("int", min=1, numeric=True,
                          doc="b: a block's side; the (pooled) map must divide into b x b "
                              "blocks, as many across as down"),
        "out": Arg("int", None, min=1, numeric=True,
                   doc="the ConvPool's width (timm's embed_dim past the first level); "
                       "none: no ConvPool, the width is the input's"),
        "hidden": Arg("int", None, min=1, numeric=True, doc="the MLP's width (default 4D)"),
        "qkv_bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of every layer norm"),
        "pool_same": Arg("bool", False,
                         doc="the ConvPool's max pool padded TF-style (timm's pad_type "
                             "'same', MaxPool2dSame): one -inf row and column at the bottom "
                             "and right, not one on each side"),
        "drop_first": Arg("float", 0.0, min=0.0, max=1.0,
                          doc="stochastic depth of the first layer's two residual branches "
                              "(per sample, training only)"),
        "drop_last": Arg("float", None, min=0.0, max=1.0,
                         doc="the last layer's; the layers between on the line from "
                             "drop_first (timm's linear schedule); default drop_first"),
    }
    arg_examples = {"depth": (1, 2), "num_heads": (1,), "block_size": (1,),
                    "out": (None, 2), "hidden": (None, 3)}

    def geometry(self, a, x):
        """(D, h, w) the layers see, T blocks, N tokens per block."""
        c, h, w = x
        if a.pool_same and a.out is None:
            raise SpecError(f"{self.name}: pool_same pads the ConvPool's max pool; a level "
                            "without one (no out) has none. Received: pool_same=true")
        if a.out is not None:
            for side, axis in ((h, "height"), (w, "width")):
                if isinstance(side, int) and side % 2:
                    raise SpecError(f"{self.name}: the ConvPool needs an even {axis} "
                                    f"(timm asserts it). Received: a {side} {axis}")
            c, h, w = a.out, sym.floordiv(h, 2), sym.floordiv(w, 2)
        if isinstance(c, int) and c % a.num_heads:
            raise SpecError(f"{self.name}: the width {c} does not divide into {a.num_heads} "
                            f"heads. Received: num_heads={a.num_heads}")
        b = a.block_size
        if isinstance(h, int) and isinstance(w, int):
            if h % b or w % b:
                raise SpecError(f"{self.name}: a {h} x {w} map does not divide into "
                                f"{b} x {b} blocks. Received: block_size={b}")
            t = (h // b) * (w // b)
            if isqrt(t) ** 2 != t or h != w:
                raise SpecError(f"{self.name}: timm reads the blocks back as a square "
                                f"grid; a {h} x {w} map is not square")
        return (c, h, w), sym.norm(sym.floordiv(h, b) * sym.floordiv(w, b)), b * b

    def output_shape(self, a, x):
        return self.geometry(a, x)[0]

    def hidden(self, a, c):
        return a.hidden if a.hidden is not None else sym.norm(4 * c)

    def parts(self, a, x):
        (c, h, w), t, n = self.geometry(a, x)
        tokens, hid = sym.norm(h * w), self.hidden(a, c)
        parts = []
        if a.out is not None:
            full = (a.out, x[1], x[2])
            parts += [part("conv", x, out=a.out, kernel=(3, 3), padding=(1, 1)),
                      part("layer_norm", (sym.norm(x[1] * x[2]), a.out), eps=a.eps),
                      part("maxpool", full, kernel=(3, 3), stride=(2, 2), padding=(1, 1))]
        parts.append(part("position_embedding", (tokens, c)))
        attn = SimpleNamespace(**{**vars(part("attention", (n, c), heads=a.num_heads).a),
                                  "keys": "qkv", "bias": a.qkv_bias, "proj_bias": True,
                                  "group": n})
        for _ in range(a.depth):
            parts += [part("layer_norm", (tokens, c), eps=a.eps),
                      Part(_ATTENTION, attn, (tokens, c), (tokens, c)),
                      part("layer_norm", (tokens, c), eps=a.eps),
                      part("fc", (tokens, c), out=hid), part("gelu", (tokens, hid)),
                      part("fc", (tokens, hid), out=c)]
        return parts

    def between(self, a, x):
        """Per layer its two residual adds."""
        (c, h, w), _, _ = self.geometry(a, x)
        return between(("add", 2 * a.depth * c * h * w))

    def cost(self, a, x, y):
        """The parts' primitives, the adds, and the two layout copies (the map
        to blocks, the blocks back to a map)."""
        n = sym.prod(self.geometry(a, x)[0])
        drops = tuple(Cost("mul", elements=n, train_only=True)
                      for p in self.drop_rates(a) if p for _ in range(2))
        return (*Composite.cost(self, a, x, y), Cost("copy", elements=n),
                Cost("copy", elements=n), *drops)

    @staticmethod
    def drop_rates(a) -> list:
        """Each layer's stochastic depth: from drop_first to drop_last, linearly."""
        last = a.drop_first if a.drop_last is None else a.drop_last
        steps = max(a.depth - 1, 1)
        return [a.drop_first + (last - a.drop_first) * i / steps for i in range(a.depth)]

    def window(self, a, x):
        # a block (after the pool's stride) sees b x b positions; the pool and
        # conv before it add theirs
        b = a.block_size
        if a.out is None:
            return (b, b), (1, 1)
        return (2 * b + 3, 2 * b + 3), (2, 2)

    def build(self, a, x):
        from .nest_torch import NestLevel as Module
        (c, h, w), t, n = self.geometry(a, x)
        return Module(x[0], c, a.depth, a.num_heads, a.block_size, t, n, self.hidden(a, c),
                      a.out is not None, a.qkv_bias, a.eps, self.drop_rates(a), a.pool_same)

    torch_modules = ("archcalc.layers.nest_torch.NestLevel", "timm.models.nest.NestLevel")

    def from_torch(self, call, m):
        """archcalc's and timm's NestLevel, checked module by module."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "NesT's level")
        if hasattr(m, "init_args"):     # archcalc's own, as built
            (_, c, depth, heads, b, _, _, hid, pooled, qkv_bias, eps, drops, same) = m.init_args
            return row("nest_level", **_args(depth, heads, b, c if pooled else None, hid, c,
                                             qkv_bias, eps, drops, same))
        c_in = call.x[0]
        pooled = type(m.pool).__name__ != "Identity"
        eps = set()
        c, same = _conv_pool(m.pool, c_in, eps) if pooled else (c_in, False)
        b = int(m.block_size)
        layers = list(m.transformer_encoder)
        found = {_layer(layer, c, eps) for layer in layers}
        drops = [_drop(layer) for layer in layers]
        if len(found) != 1 or len(eps) != 1:
            raise NoMapping("NesT layers that differ (heads, MLP, biases, norms' eps)")
        (heads, hid, qkv_bias), = found
        _, h, w = call.x
        h, w = (h // 2, w // 2) if pooled else (h, w)
        if tuple(m.pos_embed.shape) != (1, (h // b) * (w // b), b * b, c):
            raise NoMapping(f"a NesT position embedding of {list(m.pos_embed.shape)} for "
                            f"{b} x {b} blocks of a {h} x {w} map")
        return row("nest_level", **_args(len(layers), heads, b, c if pooled else None, hid, c,
                                         qkv_bias, eps.pop(), drops, same))


def _drop(layer):
    """A layer's stochastic depth: its two DropPaths' (the same) or none."""
    from .from_torch import NoMapping
    probs = {float(getattr(getattr(layer, name, None), "drop_prob", 0.0))
             for name in ("drop_path1", "drop_path2")}
    if len(probs) != 1:
        raise NoMapping("a NesT layer whose two branches' stochastic depth differ")
    return probs.pop()


def _args(depth, heads, b, out, hid, c, qkv_bias, eps, drops, same):
    """The row's arguments; the layers' stochastic depth must lie on a line
    (timm's schedule, float32: within 1e-6)."""
    from .from_torch import NoMapping
    steps = max(depth - 1, 1)
    if any(abs(drops[0] + (drops[-1] - drops[0]) * i / steps - p) > 1e-6
           for i, p in enumerate(drops)):
        raise NoMapping(f"NesT layers whose stochastic depth is not linear ({drops})")
    args = dict(depth=depth, num_heads=heads, block_size=b)
    if out is not None:
        args["out"] = out
    if hid != 4 * c:
        args["hidden"] = hid
    if not qkv_bias:
        args["qkv_bias"] = False
    if eps != 1e-6:
        args["eps"] = eps
    if same:
        args["pool_same"] = True
    if drops[0]:
        args["drop_first"] = drops[0]
    if drops[-1] != drops[0]:
        args["drop_last"] = drops[-1]
    return args


def _layer_norm(norm, c, eps):
    from .from_torch import NoMapping
    if "LayerNorm" not in type(norm).__name__ or tuple(norm.normalized_shape) != (c,) or \
            norm.weight is None or norm.bias is None:
        raise NoMapping(f"a NesT norm other than a layer norm over {c} channels")
    eps.add(float(norm.eps))


def _conv_pool(pool, c_in, eps):
    """(out, pool_same) of timm's ConvPool: 3x3 conv (padding 1, bias), layer
    norm, 3x3 stride-2 max pool (padding 1, or MaxPool2dSame: pad_type 'same')."""
    from .from_torch import NoMapping
    conv, mp = pool.conv, pool.pool
    c = conv.out_channels

    def two(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if type(conv).__name__ != "Conv2d" or (
            conv.in_channels, tuple(conv.kernel_size), tuple(conv.stride), two(conv.padding),
            tuple(conv.dilation), conv.groups, conv.bias is None, conv.padding_mode) != (
            c_in, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, "zeros"):
        raise NoMapping("a NesT ConvPool conv other than 3x3, padding 1, with a bias")
    same = type(mp).__name__ == "MaxPool2dSame"
    if type(mp).__name__ not in ("MaxPool2d", "MaxPool2dSame") or (
            two(mp.kernel_size), two(mp.stride), two(mp.padding), two(mp.dilation),
            mp.ceil_mode) != ((3, 3), (2, 2), (0, 0) if same else (1, 1), (1, 1), False):
        raise NoMapping("a NesT ConvPool pool other than a 3x3 stride-2 max pool, padding 1 "
                        "or TF's same")
    _layer_norm(pool.norm, c, eps)
    return c, same


def _layer(layer, c, eps):
    """(heads, hidden, qkv_bias) of a NesT TransformerLayer."""
    from .from_torch import NoMapping
    attn, mlp = layer.attn, layer.mlp
    heads = int(attn.num_heads)
    if c % heads or abs(float(attn.scale) * (c // heads) ** 0.5 - 1) > 1e-9 or \
            (attn.qkv.in_features, attn.qkv.out_features) != (c, 3 * c) or \
            (attn.proj.in_features, attn.proj.out_features) != (c, c) or \
            attn.proj.bias is None or attn.attn_drop.p or attn.proj_drop.p:
        raise NoMapping("a NesT attention other than C -> 3C qkv, C/heads per head, "
                        "no dropout")
    act = mlp.act
    if type(act).__name__ != "GELU" or getattr(act, "approximate", "none") != "none" or \
            type(getattr(mlp, "norm", None)).__name__ not in ("Identity", "NoneType") or \
            any(getattr(getattr(mlp, n, None), "p", 0.0) for n in ("drop1", "drop2")) or \
            type(mlp.fc1).__name__ != "Linear" or mlp.fc1.in_features != c or \
            mlp.fc2.out_features != c or mlp.fc1.bias is None or mlp.fc2.bias is None:
        raise NoMapping("a NesT MLP other than C -> hidden -> C Linears with GELU")
    _layer_norm(layer.norm1, c, eps)
    _layer_norm(layer.norm2, c, eps)
    return heads, int(mlp.fc1.out_features), attn.qkv.bias is not None


__all__ = ["NestLevel"]
