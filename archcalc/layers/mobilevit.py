"""MobileViT's blocks, as timm.models.mobilevit computes them: v1 (Mehta &
Rastegari 2022, ``mobilevit_block``: MobileVitBlock) and v2 (Mehta &
Rastegari 2022, separable self-attention, ``mobilevit_v2_block``:
MobileVitV2Block).

Both unfold the map into patches of ph x pw: P = ph*pw pixels per patch, N
patches (where the map is no multiple of the patch, timm resizes it first,
bilinear: v1 around the transformer and back, v2 at the block's input, whose
output keeps the resized map). v1 runs ViT blocks (multi-head attention, an
MLP, pre-norm) over P sequences of N tokens, each sequence one pixel of every
patch; v2 runs blocks of linear self-attention on [dim, P, N]: one query
channel, a softmax over the N patches, a context vector per pixel that gates
relu(value), and a 1x1-conv MLP, each after a GroupNorm of one group.

Why one row per block: timm's forward branches on the map's size (the resize),
so torch.fx cannot trace it and the importer keeps the module whole; its
parts are the row's (timm's submodule names: conv_kxk, conv_1x1, transformer,
norm, conv_proj, conv_fusion), so timm's state_dict loads into the built row.

MACs are FlopCounterMode's: the convolutions, the linear layers and the
attention's two products (v1); v2's context is elementwise (no MAC). The
resize (bilinear, 7 FLOPs per output element) has no MAC.
"""
from __future__ import annotations

from dataclasses import replace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .composite import part
from .resample import BILINEAR_PER_OUTPUT

ACTIVATIONS = ("silu", "relu")
TORCH_ACTIVATIONS = {"SiLU": "silu", "ReLU": "relu"}


def _conv(x, out, k, groups=1, bias=False):
    return part("conv", x, out=out, kernel=(k, k), padding=(k // 2, k // 2), groups=groups,
                bias=bias)


def _conv_norm_act(x, out, k, activation, groups=1):
    """timm's ConvNormAct: a conv without bias, a batch norm, the activation
    (none for v2's conv_proj)."""
    conv = _conv(x, out, k, groups)
    found = [(conv, 1), (part("batch_norm", conv.y), 1)]
    return found + ([(part(activation, conv.y), 1)] if activation else [])


def _scaled(c: Cost, times) -> Cost:
    """A part's primitive run ``times`` over per sample (v1's attention, once
    per pixel of a patch): a GEMM's rows, an op's elements."""
    if times == 1:
        return c
    if c.primitive == "linear":
        m, n, k = c.gemm
        return replace(c, gemm=(sym.norm(m * times), n, k))
    return replace(c, elements=sym.norm(c.elements * times))


class _Block(Kind):
    """What both blocks share: figures summed over their parts, each run
    ``times`` per sample (params counted once), plus ``extra``: the
    elementwise work no part holds, as (Cost, FLOPs)."""
    weighted = True
    autocast = "low"
    inputs = "chw"

    def parts(self, a, x) -> list:  # pragma: no cover - each kind overrides
        raise NotImplementedError

    def extra(self, a, x) -> list:  # pragma: no cover - each kind overrides
        raise NotImplementedError

    def geometry(self, a, x):
        """(H', W', P, N): the map resized to a multiple of the patch, the
        pixels of a patch, the patches."""
        _, h, w = x
        if not (isinstance(h, int) and isinstance(w, int)):
            raise SpecError(f"{self.name}: the map's size must be a number (its patches, and "
                            f"a resize where the patch does not divide it, follow from it). "
                            f"Received: {h} x {w}")
        ph, pw = a.patch
        hh, ww = sym.ceildiv(h, ph) * ph, sym.ceildiv(w, pw) * pw
        return hh, ww, ph * pw, (hh // ph) * (ww // pw)

    def out(self, a, x):
        return x[0] if a.out is None else a.out

    def hidden(self, a):
        return 2 * a.dim if a.hidden is None else a.hidden

    def check(self, a, x):
        if a.kernel % 2 == 0:
            raise SpecError(f"{self.name}: timm pads k // 2 on each side, which keeps the size "
                            f"for an odd kernel only. Received: kernel={a.kernel}")

    def params(self, a, x):
        return sym.norm(sum(p.kind.params(p.a, p.x) for p, _ in self.parts(a, x)))

    def buffers(self, a, x):
        return sym.norm(sum(p.kind.buffers(p.a, p.x) for p, _ in self.parts(a, x)))

    def macs(self, a, x, y):
        return sym.norm(sum(n * p.kind.macs(p.a, p.x, p.y) for p, n in self.parts(a, x)))

    def flops(self, a, x, y):
        return sym.norm(sum(n * p.kind.flops(p.a, p.x, p.y) for p, n in self.parts(a, x))
                        + sum(f for _, f in self.extra(a, x)))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        inner = sum(n * p.kind.backward_flops(p.a, p.x, p.y, needs_input_grad or i > 0)
                    for i, (p, n) in enumerate(self.parts(a, x)))
        return sym.norm(inner + sum(f for _, f in self.extra(a, x)))

    def cost(self, a, x, y):
        """The parts' own primitives (v1's attention over P*N tokens), then
        the work between them: adds, products, the resize, the copies of the
        unfold and the fold."""
        return (*(_scaled(c, n) for p, n in self.parts(a, x) for c in p.kind.cost(p.a, p.x, p.y)),
                *(c for c, _ in self.extra(a, x)))

    def saved(self, a, x, y):
        """What each part keeps (its input, its output, its extras), times its
        runs; the first part's input is the block's."""
        extra, per_batch = [], []
        for i, (p, n) in enumerate(self.parts(a, x)):
            s = p.kind.saved(p.a, p.x, p.y)
            if s.input and i:
                extra.append((sym.norm(n * sym.prod(p.x)), None))
            if s.output:
                extra.append((sym.norm(n * p.out()), None))
            extra.extend((sym.norm(n * e), b) for e, b in s.extra)
            per_batch.extend(s.per_batch)
        return Saved(input=True, extra=tuple(extra) + self.kept(a, x),
                     per_batch=tuple(per_batch))

    def kept(self, a, x) -> tuple:
        """What the work between the parts keeps for backward."""
        return ()

    def window(self, a, x):
        # attention (v1) or the context (v2) over every patch: the whole map
        return (x[1], x[2]), (1, 1)


COMMON_ARGS = {
    "dim": Arg("int", min=1, numeric=True, doc="the transformer's width (timm: transformer_dim)"),
    "depth": Arg("int", 2, min=1, numeric=True, doc="transformer blocks"),
    "hidden": Arg("int", None, min=1, numeric=True, doc="the MLPs' width (default 2*dim)"),
    "patch": Arg("pair", 2, min=1, numeric=True, doc="the patch's ph x pw (timm: patch_size)"),
    "kernel": Arg("int", 3, min=1, numeric=True, doc="conv_kxk's kernel (odd)"),
    "out": Arg("int", None, min=1, numeric=True, doc="output channels (default C)"),
    "activation": Arg("str", "silu", choices=ACTIVATIONS,
                      doc="the convs' and the MLPs' (timm: the model's act_layer)"),
}


@register
class MobileVitBlock(_Block):
    name = "mobilevit_block"
    torch_classes = ("MobileVitBlock",)  # in mobilevit_torch.py
    aliases = ("mobilevit",)
    primary = "dim"
    summary = ("MobileViT v1's block: conv kxk, 1x1 to dim, ViT blocks over the P pixels' "
               "sequences of N patches, 1x1 back, conv kxk of [input, output]")
    flops_rule = ("the parts' FLOPs (convs, batch norms, activations, layer norms, the "
                  "attention's 2 x MACs + 4 per score, the MLPs) + 2*dim per position and "
                  "block (the residual adds) + 7 per output of each resize; MACs = "
                  "H*W*(k*k*C*C/groups + C*dim + dim*out + k*k*(C + out)*out) + depth*(P*N*"
                  "(4*dim^2 + 2*dim*hidden) + 2*P*N^2*dim)")
    args = {
        **COMMON_ARGS,
        "num_heads": Arg("int", 4, min=1, numeric=True,
                         doc="attention heads; dim must divide by them (\"heads\" names a "
                             "spec structure)"),
        "groups": Arg("int", 1, min=1, numeric=True, doc="conv_kxk's groups"),
        "fusion": Arg("bool", True, doc="conv_fusion on the input concatenated with the "
                                        "output (timm: not no_fusion)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the layer norms"),
    }
    arg_examples = {"dim": (2, 4), "num_heads": (1, 2), "depth": (1, 2), "hidden": (None, 3),
                    "patch": (1, 2, [1, 2]), "kernel": (1, 3), "out": (None, 2),
                    "groups": (1, lambda x: x[0])}

    def check(self, a, x):
        super().check(a, x)
        if a.dim % a.num_heads:
            raise SpecError(f"mobilevit_block: dim {a.dim} does not divide into {a.num_heads} "
                            f"heads. Received: num_heads={a.num_heads}")
        if isinstance(x[0], int) and x[0] % a.groups:
            raise SpecError(f"mobilevit_block: groups={a.groups} must divide the channels "
                            f"{x[0]}")

    def output_shape(self, a, x):
        self.check(a, x)
        self.geometry(a, x)
        return (self.out(a, x), x[1], x[2])

    def parts(self, a, x):
        self.check(a, x)
        c, h, w = x
        hh, ww, p, n = self.geometry(a, x)
        d, o, hid, act = a.dim, self.out(a, x), self.hidden(a), a.activation
        tokens = (hh * ww, d)        # the P sequences' tokens, all together
        found = _conv_norm_act(x, c, a.kernel, act, a.groups) + [(_conv(x, d, 1), 1)]
        for _ in range(a.depth):
            found += [(part("layer_norm", tokens, eps=a.eps), 1),
                      (part("attention", (n, d), heads=a.num_heads, keys="qkv"), p),
                      (part("layer_norm", tokens, eps=a.eps), 1),
                      (part("fc", tokens, out=hid), 1), (part(act, (hh * ww, hid)), 1),
                      (part("fc", (hh * ww, hid), out=d), 1)]
        found.append((part("layer_norm", tokens, eps=a.eps), 1))
        found += _conv_norm_act((d, h, w), o, 1, act)
        if a.fusion:
            found += _conv_norm_act((c + o, h, w), o, a.kernel, act)
        return found

    def extra(self, a, x):
        c, h, w = x
        hh, ww, _, _ = self.geometry(a, x)
        t, d = hh * ww, a.dim
        found = [(Cost("copy", elements=t * d), 0)] * 4          # unfold, fold: two copies each
        found += [(Cost("add", elements=t * d), t * d)] * (2 * a.depth)
        if (hh, ww) != (h, w):
            found += [(Cost("copy", elements=t * d, scale=3.0), BILINEAR_PER_OUTPUT * t * d),
                      (Cost("copy", elements=h * w * d, scale=3.0),
                       BILINEAR_PER_OUTPUT * h * w * d)]
        if a.fusion:
            found.append((Cost("cat", elements=(c + self.out(a, x)) * h * w), 0))
        return found

    def macs_missed_by(self, a, x, y):
        _, _, p, n = self.geometry(a, x)
        return {"fvcore": (sym.norm(a.depth * p * 2 * n * n * a.dim),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the attention's two products, 2*P*N^2*dim per block)")}

    def params_formula(self, a, x):
        c, o, d, hid, k = x[0], self.out(a, x), a.dim, self.hidden(a), a.kernel
        layer = (f"2*{d} + ({d}*3*{d} + 3*{d}) + ({d}*{d} + {d}) + 2*{d} + "
                 f"({d}*{hid} + {hid}) + ({hid}*{d} + {d})")
        fusion = f" + ({k}*{k}*{c + o}*{o} + 2*{o})" if a.fusion else ""
        return (f"({k}*{k}*{c // a.groups}*{c} + 2*{c}) + {c}*{d} + {a.depth}*({layer}) + "
                f"2*{d} + ({d}*{o} + 2*{o}){fusion}")

    def build(self, a, x):
        from .mobilevit_torch import MobileVitBlock as Module
        return Module(x[0], a.dim, a.depth, a.num_heads, self.hidden(a), tuple(a.patch),
                      a.kernel, a.groups, self.out(a, x), a.fusion, _torch_act(a.activation),
                      a.eps)

    torch_modules = ("archcalc.layers.mobilevit_torch.MobileVitBlock",
                     "timm.models.mobilevit.MobileVitBlock")

    def from_torch(self, call, m):
        """archcalc's (its init_args) and timm's: conv_kxk, conv_1x1, ViT
        Blocks, norm, conv_proj, conv_fusion (or none)."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "MobileVitBlock")
        if hasattr(m, "init_args"):
            c, *rest = m.init_args
            found = dict(zip(("dim", "depth", "num_heads", "hidden", "patch", "kernel", "groups",
                              "out", "fusion", "activation", "eps"), rest))
            found["activation"] = TORCH_ACTIVATIONS[found["activation"]]
        else:
            c, found = call.x[0], _timm_v1(call, m)
        if c != call.x[0]:
            raise NoMapping(f"a MobileVitBlock of {c} channels on {call.x[0]}")
        return row("mobilevit_block", **_given(self, found, c))


@register
class MobileVitV2Block(_Block):
    name = "mobilevit_v2_block"
    torch_classes = ("MobileVitV2Block",)  # in mobilevit_torch.py
    aliases = ("mobilevitv2",)
    primary = "dim"
    summary = ("MobileViT v2's block: depthwise conv kxk, 1x1 to dim, separable (linear) "
               "self-attention and 1x1-conv MLP blocks on [dim, P, N], 1x1 conv + BN out")
    flops_rule = ("the parts' FLOPs (convs, batch norms, activations, group norms, the "
                  "softmax over N, relu(value)) + 5*dim per position and block (the context's "
                  "product and sum, its gate, the residual adds) + 7 per output of the "
                  "resize; MACs = H'*W'*(k*k*C*C/groups + C*dim + depth*(dim*(1 + 2*dim) + "
                  "dim^2 + 2*dim*hidden) + dim*out)")
    args = {
        **COMMON_ARGS,
        "groups": Arg("int", None, min=1, numeric=True,
                      doc="conv_kxk's groups (default C: depthwise)"),
        "eps": Arg("float", 1e-5, min=0.0, max=1.0, doc="of the group norms"),
    }
    arg_examples = {"dim": (1, 2, 4), "depth": (1, 2), "hidden": (None, 3),
                    "patch": (1, 2, [1, 2]), "kernel": (1, 3), "out": (None, 2),
                    "groups": (None, 1)}

    def groups(self, a, x):
        return x[0] if a.groups is None else a.groups

    def output_shape(self, a, x):
        self.check(a, x)
        if isinstance(x[0], int) and x[0] % self.groups(a, x):
            raise SpecError(f"mobilevit_v2_block: groups={a.groups} must divide the channels "
                            f"{x[0]}")
        hh, ww, _, _ = self.geometry(a, x)
        return (self.out(a, x), hh, ww)

    def parts(self, a, x):
        self.check(a, x)
        c = x[0]
        hh, ww, p, n = self.geometry(a, x)
        d, hid, act = a.dim, self.hidden(a), a.activation
        m = (d, p, n)      # [dim, P, N]: the 1x1 convs see a P x N map
        found = _conv_norm_act((c, hh, ww), c, a.kernel, act, self.groups(a, x))
        found.append((_conv((c, hh, ww), d, 1), 1))
        for _ in range(a.depth):
            found += [(part("group_norm", m, groups=1, eps=a.eps), 1),
                      (_conv(m, 1 + 2 * d, 1, bias=True), 1), (part("softmax", (p * n,)), 1),
                      (part("relu", m), 1), (_conv(m, d, 1, bias=True), 1),
                      (part("group_norm", m, groups=1, eps=a.eps), 1),
                      (_conv(m, hid, 1, bias=True), 1), (part(act, (hid, p, n)), 1),
                      (_conv((hid, p, n), d, 1, bias=True), 1)]
        found.append((part("group_norm", m, groups=1, eps=a.eps), 1))
        return found + _conv_norm_act((d, hh, ww), self.out(a, x), 1, None)

    def extra(self, a, x):
        c, h, w = x
        hh, ww, _, _ = self.geometry(a, x)
        t = hh * ww * a.dim
        # per block: key * scores, their sum over N, relu(value) * context, two adds
        found = [(Cost("copy", elements=t), 0)] * 2              # unfold, fold
        found += [(Cost("mul", elements=t), t), (Cost("add", elements=t), t),
                  (Cost("mul", elements=t), t), (Cost("add", elements=t), t),
                  (Cost("add", elements=t), t)] * a.depth
        if (hh, ww) != (h, w):
            found.append((Cost("copy", elements=c * hh * ww, scale=3.0),
                          BILINEAR_PER_OUTPUT * c * hh * ww))
        return found

    def kept(self, a, x):
        # per block: key * scores keeps the key, a view of qkv_proj's whole
        # output ((1 + 2*dim) x P x N); relu(value) * context keeps the context
        hh, ww, p, _ = self.geometry(a, x)
        return ((sym.norm((1 + 2 * a.dim) * hh * ww), None), (sym.norm(a.dim * p), None)) \
            * a.depth

    def params_formula(self, a, x):
        c, o, d, hid, k = x[0], self.out(a, x), a.dim, self.hidden(a), a.kernel
        layer = (f"2*{d} + ({d}*{1 + 2 * d} + {1 + 2 * d}) + ({d}*{d} + {d}) + 2*{d} + "
                 f"({d}*{hid} + {hid}) + ({hid}*{d} + {d})")
        return (f"({k}*{k}*{c // self.groups(a, x)}*{c} + 2*{c}) + {c}*{d} + "
                f"{a.depth}*({layer}) + 2*{d} + ({d}*{o} + 2*{o})")

    def build(self, a, x):
        from .mobilevit_torch import MobileVitV2Block as Module
        return Module(x[0], a.dim, a.depth, self.hidden(a), tuple(a.patch), a.kernel, a.groups,
                      self.out(a, x), _torch_act(a.activation), a.eps)

    torch_modules = ("archcalc.layers.mobilevit_torch.MobileVitV2Block",
                     "timm.models.mobilevit.MobileVitV2Block")

    def from_torch(self, call, m):
        """archcalc's (its init_args) and timm's: conv_kxk, conv_1x1,
        LinearTransformerBlocks, norm, conv_proj."""
        from .from_torch import NoMapping, require_chw, row
        require_chw(call, "MobileVitV2Block")
        if hasattr(m, "init_args"):
            c, *rest = m.init_args
            found = dict(zip(("dim", "depth", "hidden", "patch", "kernel", "groups", "out",
                              "activation", "eps"), rest))
            found["activation"] = TORCH_ACTIVATIONS[found["activation"]]
        else:
            c, found = call.x[0], _timm_v2(call, m)
        if c != call.x[0]:
            raise NoMapping(f"a MobileVitV2Block of {c} channels on {call.x[0]}")
        if found["groups"] == c:
            found["groups"] = None
        return row("mobilevit_v2_block", **_given(self, found, c))


def _torch_act(activation):
    return {v: k for k, v in TORCH_ACTIVATIONS.items()}[activation]


def _given(kind, found, c) -> dict:
    """The row's arguments: dim, and those that differ from the defaults."""
    from .from_torch import pair
    defaults = {k: arg.default for k, arg in kind.args.items()}
    defaults |= {"hidden": 2 * found["dim"], "out": c}
    if found["hidden"] is None:
        found["hidden"] = 2 * found["dim"]
    if found["out"] is None:
        found["out"] = c
    found["patch"] = pair(found["patch"])
    return {k: v for k, v in found.items() if k == "dim" or v != defaults[k]}


# ---------------------------------------------------------------- timm's modules, read


def _check(ok, what):
    from .from_torch import NoMapping
    if not ok:
        raise NoMapping(what)


def _act(module) -> str:
    name = type(module).__name__
    _check(name in TORCH_ACTIVATIONS and type(module).__module__.startswith("torch.nn"),
           f"a MobileViT block with a {name} activation (the kind's: SiLU or ReLU)")
    return TORCH_ACTIVATIONS[name]


def _zero(*drops) -> None:
    """Dropouts, DropPaths or identities that do nothing, in training too."""
    for drop in drops:
        p = getattr(drop, "p", getattr(drop, "drop_prob", 0.0))
        _check(type(drop).__name__ in ("Identity", "Dropout", "DropPath") and not p,
               f"a MobileViT block with a {type(drop).__name__} (p={p}): the kind has none")


def _conv_args(conv, cin, cout, k, groups=1, bias=False) -> None:
    _check(type(conv).__name__ == "Conv2d" and
           (conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
            tuple(conv.padding), tuple(conv.dilation), conv.groups, conv.bias is not None,
            conv.padding_mode) ==
           (cin, cout, (k, k), (1, 1), (k // 2, k // 2), (1, 1), groups, bias, "zeros"),
           f"a MobileViT conv {conv} (the kind's: {cin} -> {cout}, {k}x{k}, stride 1, "
           f"padding {k // 2}, groups {groups}, bias {bias})")


def _conv_norm_act_args(cna, cin, k, groups=1, act=True):
    """timm's ConvNormAct: a conv without bias, a BatchNormAct2d of torch's
    defaults holding the activation; returns (out, the activation's kind)."""
    from .split_attention import _norms
    conv, bn = cna.conv, cna.bn
    out = conv.out_channels
    _conv_args(conv, cin, out, k, groups)
    _norms(bn, holding_act=True)
    _zero(bn.drop)
    if not act:
        _check(type(bn.act).__name__ == "Identity", "a MobileViT v2 conv_proj with an activation")
        return out, None
    return out, _act(bn.act)


def _norm_eps(norm, d, layer=True) -> float:
    name = type(norm).__name__
    if layer:
        ok = name == "LayerNorm" and tuple(norm.normalized_shape) == (d,)
    else:
        ok = name in ("GroupNorm1", "GroupNorm") and (norm.num_groups, norm.num_channels) == (1, d)
    _check(ok and norm.elementwise_affine if layer else ok and norm.affine,
           f"a MobileViT norm {norm} (the kind's: a {'LayerNorm' if layer else 'GroupNorm1'} "
           f"over {d} with weight and bias)")
    _check(norm.bias is not None, f"a MobileViT norm without a bias: {norm}")
    return float(norm.eps)


def _linear(fc, cin, cout) -> None:
    _check(type(fc).__name__ == "Linear" and (fc.in_features, fc.out_features) == (cin, cout)
           and fc.bias is not None, f"a MobileViT linear layer {fc} (the kind's: {cin} -> "
                                    f"{cout} with a bias)")


def _v1_layer(blk, d, n):
    """One ViT Block: (heads, hidden, eps, activation)."""
    from types import SimpleNamespace

    from .tokens import _qkv_attention_args
    _check(type(blk).__name__ == "Block", f"a MobileViT v1 transformer of {type(blk).__name__}")
    eps = {_norm_eps(blk.norm1, d), _norm_eps(blk.norm2, d)}
    attn = _qkv_attention_args(SimpleNamespace(x=(n, d), args=(), kwargs={}), blk.attn)
    _check(set(attn) == {"heads", "keys"} and blk.attn.qkv.bias is not None,
           f"a MobileViT v1 attention other than timm's default ({attn})")
    for name in ("ls1", "ls2"):
        _check(type(getattr(blk, name)).__name__ == "Identity", "a layer scale")
    _zero(blk.drop_path1, blk.drop_path2)
    mlp = blk.mlp
    _check(type(mlp).__name__ == "Mlp" and type(mlp.norm).__name__ == "Identity",
           f"a MobileViT v1 MLP {type(mlp).__name__}")
    hidden = mlp.fc1.out_features
    _linear(mlp.fc1, d, hidden)
    _linear(mlp.fc2, hidden, d)
    _zero(mlp.drop1, mlp.drop2)
    _check(len(eps) == 1, "a MobileViT block whose norms differ in eps")
    return attn["heads"], hidden, eps.pop(), _act(mlp.act)


def _timm_v1(call, m) -> dict:
    """timm's MobileVitBlock read: what the kind cannot say is refused."""
    c, h, w = call.x
    kxk_out, act = _conv_norm_act_args(m.conv_kxk, c, m.conv_kxk.conv.kernel_size[0],
                                       m.conv_kxk.conv.groups)
    _check(kxk_out == c, "a MobileViT v1 conv_kxk that changes the channels")
    k, g = m.conv_kxk.conv.kernel_size[0], m.conv_kxk.conv.groups
    d = m.conv_1x1.out_channels
    _conv_args(m.conv_1x1, c, d, 1)
    ph, pw = (int(v) for v in m.patch_size)
    n = -(-h // ph) * -(-w // pw)
    layers = [_v1_layer(blk, d, n) for blk in m.transformer]
    _check(len(layers) > 0 and len(set(layers)) == 1, "MobileViT v1 blocks that differ")
    heads, hidden, eps, mlp_act = layers[0]
    _check(_norm_eps(m.norm, d) == eps, "a MobileViT block whose norms differ in eps")
    out, proj_act = _conv_norm_act_args(m.conv_proj, d, 1)
    acts = {act, mlp_act, proj_act}
    if m.conv_fusion is not None:
        fused, fusion_act = _conv_norm_act_args(m.conv_fusion, c + out, k)
        _check(fused == out, "a MobileViT v1 conv_fusion that changes the channels")
        acts.add(fusion_act)
    _check(len(acts) == 1, f"a MobileViT block of several activations {sorted(acts)}")
    return dict(dim=d, depth=len(layers), num_heads=heads, hidden=hidden, patch=[ph, pw],
                kernel=k, groups=g, out=out, fusion=m.conv_fusion is not None,
                activation=acts.pop(), eps=eps)


def _v2_layer(blk, d):
    """One LinearTransformerBlock: (hidden, eps, activation)."""
    _check(type(blk).__name__ == "LinearTransformerBlock",
           f"a MobileViT v2 transformer of {type(blk).__name__}")
    eps = {_norm_eps(blk.norm1, d, layer=False), _norm_eps(blk.norm2, d, layer=False)}
    attn, mlp = blk.attn, blk.mlp
    _check(type(attn).__name__ == "LinearSelfAttention", "a MobileViT v2 attention")
    _conv_args(attn.qkv_proj, d, 1 + 2 * d, 1, bias=True)
    _conv_args(attn.out_proj, d, d, 1, bias=True)
    _zero(attn.attn_drop, attn.out_drop, blk.drop_path1, blk.drop_path2)
    _check(type(mlp).__name__ == "ConvMlp" and type(mlp.norm).__name__ == "Identity",
           f"a MobileViT v2 MLP {type(mlp).__name__}")
    hidden = mlp.fc1.out_channels
    _conv_args(mlp.fc1, d, hidden, 1, bias=True)
    _conv_args(mlp.fc2, hidden, d, 1, bias=True)
    _zero(mlp.drop)
    _check(len(eps) == 1, "a MobileViT block whose norms differ in eps")
    return hidden, eps.pop(), _act(mlp.act)


def _timm_v2(call, m) -> dict:
    """timm's MobileVitV2Block read: what the kind cannot say is refused."""
    c = call.x[0]
    k, g = m.conv_kxk.conv.kernel_size[0], m.conv_kxk.conv.groups
    kxk_out, act = _conv_norm_act_args(m.conv_kxk, c, k, g)
    _check(kxk_out == c, "a MobileViT v2 conv_kxk that changes the channels")
    d = m.conv_1x1.out_channels
    _conv_args(m.conv_1x1, c, d, 1)
    layers = [_v2_layer(blk, d) for blk in m.transformer]
    _check(len(layers) > 0 and len(set(layers)) == 1, "MobileViT v2 blocks that differ")
    hidden, eps, mlp_act = layers[0]
    _check(_norm_eps(m.norm, d, layer=False) == eps, "a MobileViT block whose norms differ")
    out, _ = _conv_norm_act_args(m.conv_proj, d, 1, act=False)
    _check(act == mlp_act, f"a MobileViT block of several activations {act}, {mlp_act}")
    return dict(dim=d, depth=len(layers), hidden=hidden,
                patch=[int(v) for v in m.patch_size], kernel=k, groups=g, out=out,
                activation=act, eps=eps)
