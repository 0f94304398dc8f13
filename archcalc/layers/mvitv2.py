"""MViTv2's pooling attention (Li et al. 2022, "MViTv2: Improved Multiscale
Vision Transformers for Classification and Detection"), as timm's mvitv2
MultiScaleAttention: one row on the N = H x W tokens of a map (plus a class
token first where ``cls``), the map's size passed beside them (a chain of
rows cannot say it).

A qkv Linear D -> 3O (O = ``out``, heads of hd = O/heads); q, k and v each
pooled on the map, per head (the class token left out of the pool and put
back first): ``pool = "conv"``, a depthwise kh x kw conv of hd channels
(padding k//2, no bias) then a LayerNorm over hd on every token; or a max or
an average pool of the same window (no norm). q is pooled by ``kernel_q`` at
``stride_q`` to hq x wq, k and v by ``kernel_kv`` at ``stride_kv`` to hk x
wk (a side s -> (s + 2*(k//2) - k) // stride + 1); a 1 x 1 window at stride 1
is no pool (timm's). The scores q k^T / sqrt(hd) get the decomposed relative
position bias (``rel_pos``: for each query of the map, q . rel_pos_h[i - j]
along the height and q . rel_pos_w along the width, two tables of
2*max(hq, hk) - 1 and 2*max(wq, wk) - 1 rows of hd, indexed as timm's
cal_rel_pos_type); softmax; the weighted values plus the pooled q
(``residual_pooling``); a proj Linear O -> O. Output: Nq x O, Nq = hq*wq
(+1).

MACs (FlopCounterMode's): 3*N*D*O (qkv) + O*hq*wq*kq (q's conv, kq its
window's size) + 2*O*hk*wk*kkv (k's and v's) + 2*Nq*Nk*O (scores, weighted
values) + hq*wq*O*(hk + wk) (the two einsums of the position bias) +
Nq*O^2 (proj); the norms, pools, adds and softmax count nothing."""
from __future__ import annotations

from types import SimpleNamespace

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .pool import pool_cost
from .tokens import SelfAttention

FP32 = 4
POOLS = ("conv", "max", "avg")


@register
class MultiScaleAttention(Kind):
    name = "multiscale_attention"
    torch_classes = ("MultiScaleAttention",)  # in mvitv2_torch.py
    aliases = ("pooling_attention", "mvit_attention")
    primary = "heads"
    weighted = True
    autocast = "low"
    inputs = "tokens"
    summary = ("MViTv2's pooling attention on the H*W tokens of a map (and a class token): "
               "q, k and v pooled on the map per head (a depthwise conv and a LayerNorm, or "
               "a max or avg pool), a decomposed relative position bias, q added back")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*Nq*Nk) + 2 per position-biased "
                  "score + 7 per normalized element (conv pools) or the pools' own + the "
                  "pooled q's add (Nq*O) + the biases; MACs = 3*N*D*O + O*hq*wq*kq + "
                  "2*O*hk*wk*kkv + 2*Nq*Nk*O + hq*wq*O*(hk + wk) + Nq*O^2")
    args = {
        "heads": Arg("int", min=1, doc="attention heads; out must divide by it"),
        "size": Arg("pair", min=1, doc="the tokens' map, H x W (N = H*W, +1 with cls)"),
        "out": Arg("int", None, min=1, doc="O, the qkv's and proj's width (default D)"),
        "cls": Arg("bool", False, doc="the first token is a class token, never pooled"),
        "pool": Arg("str", "conv", choices=POOLS,
                    doc="how q, k, v are pooled: a depthwise conv and a LayerNorm, or a "
                        "max or average pool"),
        "kernel_q": Arg("pair", 3, min=1, doc="q's pooling window (padding k//2)"),
        "stride_q": Arg("pair", 1, min=1, doc="q's pooling stride"),
        "kernel_kv": Arg("pair", 3, min=1, doc="k's and v's pooling window (padding k//2)"),
        "stride_kv": Arg("pair", 1, min=1, doc="k's and v's pooling stride"),
        "bias": Arg("bool", True, doc="the qkv Linear's bias"),
        "rel_pos": Arg("bool", True, doc="the decomposed relative position bias (timm: "
                                         "rel_pos_type 'spatial')"),
        "residual_pooling": Arg("bool", True, doc="the pooled q added to the heads' output"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the LayerNorms (conv pools)"),
    }
    arg_examples = {"heads": (1, 2), "out": (None, 4, 8), "cls": (False, True),
                    "pool": POOLS, "stride_q": (1, 2), "stride_kv": (1, 2),
                    "kernel_q": (1, 3), "size": (lambda x: [1, x[0]], lambda x: [x[0], 1],
                                                 lambda x: [2, x[0] // 2] if x[0] % 2 == 0
                                                 else [x[0], 1])}
    receptive_field = SelfAttention.receptive_field

    @staticmethod
    def pools(kernel, stride) -> bool:
        """timm skips a 1 x 1 window at stride 1."""
        return tuple(kernel) != (1, 1) or tuple(stride) != (1, 1)

    def plan(self, a, x):
        """The figures every method reads: n, d, o, hd, the cls token (0 or 1),
        the pooled maps (q: hq x wq, k and v: hk x wk), nq, nk, whether q and
        k/v are pooled, the tables' rows."""
        n, d = x[0], x[-1]
        o = a.out if a.out is not None else d
        first = int(a.cls)

        def pooled(kernel, stride):
            if not self.pools(kernel, stride):
                return tuple(a.size)
            return tuple(sym.norm(sym.floordiv(s + 2 * (k // 2) - k, st) + 1)
                         for s, k, st in zip(a.size, kernel, stride))
        (hq, wq), (hk, wk) = pooled(a.kernel_q, a.stride_q), pooled(a.kernel_kv, a.stride_kv)
        return SimpleNamespace(
            n=n, d=d, o=o, hd=sym.norm(o // a.heads) if isinstance(o, int) else
            sym.exact_div(o, a.heads), first=first, hq=hq, wq=wq, hk=hk, wk=wk,
            nq=sym.norm(hq * wq + first), nk=sym.norm(hk * wk + first),
            pq=self.pools(a.kernel_q, a.stride_q), pkv=self.pools(a.kernel_kv, a.stride_kv),
            rows_h=sym.norm(2 * sym.smax(hq, hk) - 1), rows_w=sym.norm(2 * sym.smax(wq, wk) - 1))

    def output_shape(self, a, x):
        n, o = x[0], (a.out if a.out is not None else x[-1])
        h, w = a.size
        first = int(a.cls)
        if isinstance(n, int) and isinstance(h, int) and isinstance(w, int) and \
                n != h * w + first:
            raise SpecError(f"multiscale_attention: a map of {h} x {w} is {h * w} tokens"
                            f"{' and a class token' if first else ''}, but there are {n}. "
                            f"Received: size={list(a.size)}, cls={a.cls}")
        if isinstance(o, int) and o % a.heads:
            raise SpecError(f"multiscale_attention: the width {o} does not divide into "
                            f"{a.heads} heads. Received: heads={a.heads}")
        p = self.plan(a, x)
        for what, sides in (("q", (p.hq, p.wq)), ("k and v", (p.hk, p.wk))):
            if any(isinstance(s, int) and s < 1 for s in sides):
                raise SpecError(f"multiscale_attention: pooling {what} leaves no token of the "
                                f"{h} x {w} map. Received: size={list(a.size)}")
        return (p.nq, o)

    def size_arithmetic(self, a, x):
        p = self.plan(a, x)
        return [f"q pooled to {sym.plain(p.hq)} x {sym.plain(p.wq)}, k and v to "
                f"{sym.plain(p.hk)} x {sym.plain(p.wk)}"
                + (" (and the class token)" if a.cls else "")]

    def params(self, a, x):
        p = self.plan(a, x)
        d, o, hd = p.d, p.o, p.hd
        total = 3 * d * o + (3 * o if a.bias else 0) + o * o + o
        if a.pool == "conv":
            kq, kkv = a.kernel_q[0] * a.kernel_q[1], a.kernel_kv[0] * a.kernel_kv[1]
            total += (hd * kq + 2 * hd if p.pq else 0) + (2 * (hd * kkv + 2 * hd) if p.pkv else 0)
        if a.rel_pos:
            total += (p.rows_h + p.rows_w) * hd
        return sym.norm(total)

    def params_formula(self, a, x):
        p = self.plan(a, x)
        d, o, hd = (sym.plain(v) for v in (p.d, p.o, p.hd))
        parts = [f"3*({d}*{o}{' + ' + o if a.bias else ''}) (qkv)", f"({o}*{o} + {o}) (proj)"]
        if a.pool == "conv":
            for what, on, k in (("q", p.pq, a.kernel_q), ("k, v", p.pkv, a.kernel_kv)):
                if on:
                    times = "2*" if what != "q" else ""
                    parts.append(f"{times}({hd}*{k[0]}*{k[1]} + 2*{hd}) ({what}'s pool, norm)")
        if a.rel_pos:
            parts.append(f"({sym.plain(p.rows_h)} + {sym.plain(p.rows_w)})*{hd} (rel_pos)")
        return " + ".join(parts)

    def macs(self, a, x, y):
        p = self.plan(a, x)
        n, d, o = p.n, p.d, p.o
        total = 3 * n * d * o + 2 * p.nq * p.nk * o + p.nq * o * o
        if a.pool == "conv":
            if p.pq:
                total += o * p.hq * p.wq * a.kernel_q[0] * a.kernel_q[1]
            if p.pkv:
                total += 2 * o * p.hk * p.wk * a.kernel_kv[0] * a.kernel_kv[1]
        if a.rel_pos:
            total += p.hq * p.wq * o * (p.hk + p.wk)
        return sym.norm(total)

    def macs_formula(self, a, x, y):
        p = self.plan(a, x)
        n, d, o, nq, nk = (sym.plain(v) for v in (p.n, p.d, p.o, p.nq, p.nk))
        parts = [f"3*{n}*{d}*{o}"]
        if a.pool == "conv":
            if p.pq:
                parts.append(f"{o}*{sym.plain(p.hq * p.wq)}*{a.kernel_q[0] * a.kernel_q[1]}")
            if p.pkv:
                parts.append(f"2*{o}*{sym.plain(p.hk * p.wk)}*"
                             f"{a.kernel_kv[0] * a.kernel_kv[1]}")
        parts.append(f"2*{nq}*{nk}*{o}")
        if a.rel_pos:
            parts.append(f"{sym.plain(p.hq * p.wq)}*{o}*({sym.plain(p.hk + p.wk)})")
        parts.append(f"{nq}*{o}^2")
        return " + ".join(parts)

    def pooled_flops(self, a, p):
        """The norms (7 per element) after conv pools, or the max / avg pools'
        own (kh*kw - 1 comparisons, kh*kw per average)."""
        total = 0
        for on, k, h, w, count in ((p.pq, a.kernel_q, p.hq, p.wq, 1),
                                   (p.pkv, a.kernel_kv, p.hk, p.wk, 2)):
            if not on:
                continue
            if a.pool == "conv":
                total += count * 7 * (h * w + p.first) * p.o
            else:
                per = k[0] * k[1] - (1 if a.pool == "max" else 0)
                total += count * h * w * p.o * per
        return total

    def flops(self, a, x, y):
        p = self.plan(a, x)
        scores = a.heads * p.nq * p.nk
        biases = 3 * p.n * p.o * int(a.bias) + p.nq * p.o
        rel = 2 * a.heads * p.hq * p.wq * p.hk * p.wk if a.rel_pos else 0
        added = p.nq * p.o if a.residual_pooling else 0
        return sym.norm(2 * self.macs(a, x, y) + 4 * scores + rel + added + biases
                        + self.pooled_flops(a, p))

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def pool_costs(self, a, p):
        """Each pool (per head: a depthwise conv of hd channels, heads times)
        and its norm, or the max / avg pool."""
        hd, costs = p.hd, []
        for on, k, s, h, w, count in ((p.pq, a.kernel_q, a.stride_q, p.hq, p.wq, 1),
                                      (p.pkv, a.kernel_kv, a.stride_kv, p.hk, p.wk, 2)):
            for _ in range(count if on else 0):
                if a.pool == "conv":
                    costs += [Cost("conv", conv=(k[0], k[1], s[0], s[1], hd, hd, h, w, hd),
                                   scale=a.heads, tensors=(hd * k[0] * k[1],)),
                              Cost("layer_norm", elements=sym.norm((h * w + p.first) * p.o),
                                   tensors=(hd, hd))]
                else:
                    size = tuple(a.size)
                    costs.append(pool_cost(a.pool + "pool", SimpleNamespace(), (p.o, *size),
                                           (p.o, h, w), k, s))
        return costs

    def cost(self, a, x, y):
        """The qkv GEMM, the pools, the scores, the position bias's two GEMMs,
        the softmax, the weighted values, the pooled q's add, the projection."""
        p = self.plan(a, x)
        n, d, o, nq, nk = p.n, p.d, p.o, p.nq, p.nk
        bias = (3 * o,) if a.bias else ()
        rel = (Cost("linear", gemm=(sym.norm(p.hq * p.wq), sym.norm(p.hk + p.wk), o)),
               Cost("add", elements=sym.norm(2 * a.heads * p.hq * p.wq * p.hk * p.wk))) \
            if a.rel_pos else ()
        added = (Cost("add", elements=sym.norm(nq * o)),) if a.residual_pooling else ()
        return (Cost("linear", gemm=(n, 3 * o, d), tensors=(3 * d * o,) + bias),
                *self.pool_costs(a, p),
                Cost("linear", gemm=(nq, nk, o)), *rel,
                Cost("softmax", elements=sym.norm(a.heads * nq * nk)),
                Cost("linear", gemm=(nq, o, nk)), *added,
                Cost("linear", gemm=(nq, o, o), tensors=(o * o, o)))

    def saved(self, a, x, y):
        # the input (qkv's), q, k, v before and after their pools (and norms),
        # the scores (softmax's output, read by the weighted values), the
        # heads' output (proj's); the position bias's einsums keep q
        n, d = x[0], x[-1]   # (the merge's in-place test probes with a dummy shape)
        if len(x) != 2:
            return Saved(input=True, extra=((sym.norm(4 * n * d), None),))
        p = self.plan(a, x)
        o, nq, nk = p.o, p.nq, p.nk
        pooled = (nq * o if p.pq else 0) + (2 * nk * o if p.pkv else 0)
        normed = pooled if a.pool == "conv" else 0
        return Saved(input=True, extra=((sym.norm(3 * n * o), None),
                                        (sym.norm(pooled + normed), None),
                                        (sym.norm(a.heads * nq * nk), None),
                                        (sym.norm(nq * o), None),
                                        (sym.norm(a.heads * nq), FP32)))

    def build(self, a, x):
        from .mvitv2_torch import MultiScaleAttention as Module
        p = self.plan(a, x)
        return Module(p.d, p.o, a.heads, tuple(a.size), a.cls, a.pool, tuple(a.kernel_q),
                      tuple(a.stride_q), tuple(a.kernel_kv), tuple(a.stride_kv), a.bias,
                      a.rel_pos, a.residual_pooling, a.eps)

    torch_modules = ("archcalc.layers.mvitv2_torch.MultiScaleAttention",
                     "timm.models.mvitv2.MultiScaleAttention")

    def from_torch(self, call, m):
        """archcalc's and timm's MultiScaleAttention (qkv, pool_q/k/v,
        norm_q/k/v, rel_pos_h/w, proj); timm's is called with the tokens and
        their map's size, archcalc's holds it. timm's MultiScaleAttentionPoolFirst
        (no model of timm's builds it) is another class: not mapped."""
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"MViT attention on a {len(call.x)}-d input (it takes tokens)")
        size = getattr(m, "map_size", None) or call.arg("MViT attention", 1, "feat_size")
        if not (isinstance(size, (tuple, list)) and len(size) == 2 and
                all(isinstance(v, int) and v > 0 for v in size)):
            raise NoMapping(f"MViT attention with a map size of {size!r}")
        n, d = call.x
        cls, heads, o = bool(m.has_cls_token), int(m.num_heads), int(m.dim_out)
        if n != size[0] * size[1] + int(cls):
            raise NoMapping(f"MViT attention on {n} tokens, called with a {size[0]} x {size[1]} "
                            f"map{' and a class token' if cls else ''}")
        hd = int(m.head_dim)
        if heads * hd != o or abs(float(m.scale) * hd ** 0.5 - 1) > 1e-9:
            raise NoMapping(f"MViT attention of {heads} heads of {hd} on a width of {o}, "
                            f"scaled by {m.scale}")
        bias = m.qkv.bias is not None
        for lin, i, out, what in ((m.qkv, d, 3 * o, "qkv"), (m.proj, o, o, "proj")):
            if type(lin).__name__ != "Linear" or (lin.in_features, lin.out_features) != (i, out) \
                    or (what == "proj" and lin.bias is None):
                raise NoMapping(f"MViT attention's {what}: not a Linear {i} -> {out}"
                                + (" with a bias" if what == "proj" else ""))
        if m.mode not in POOLS:
            raise NoMapping(f"MViT attention pooled by mode {m.mode!r} (the kind: "
                            f"{', '.join(POOLS)})")
        (kq, sq, eq), (kk, sk, ek) = (self.read_pool(m, w, hd) for w in ("q", "k"))
        if self.read_pool(m, "v", hd) != (kk, sk, ek):
            raise NoMapping("MViT attention whose k and v are pooled differently")
        eps = {e for e in (eq, ek) if e is not None}
        if len(eps) > 1:
            raise NoMapping(f"MViT attention whose norms differ in eps ({sorted(eps)})")
        found = {"heads": heads, "size": [int(size[0]), int(size[1])], "cls": cls,
                 "out": o if o != d else None, "pool": m.mode, "kernel_q": kq, "stride_q": sq,
                 "kernel_kv": kk, "stride_kv": sk, "bias": bias,
                 "rel_pos": self.read_rel_pos(m), "residual_pooling": bool(m.residual_pooling),
                 "eps": eps.pop() if eps else self.args["eps"].default}
        found = {k: v for k, v in found.items() if k in ("heads", "size")
                 or v != self.args[k].default}
        self.check_tables(m, found, call.x)
        return row("multiscale_attention", **found)

    @staticmethod
    def read_pool(m, which, hd):
        """(kernel, stride, eps or None) of q's, k's or v's pool, as the spec
        writes them (a 1 x 1 window at stride 1: no pool)."""
        from .from_torch import NoMapping, pair
        pool, norm = getattr(m, "pool_" + which), getattr(m, "norm_" + which)
        if pool is None:
            if norm is not None:
                raise NoMapping(f"MViT attention with norm_{which} but no pool_{which}")
            return 1, 1, None
        kernel = tuple(pool.kernel_size) if isinstance(pool.kernel_size, (tuple, list)) \
            else (pool.kernel_size,) * 2
        stride = tuple(pool.stride) if isinstance(pool.stride, (tuple, list)) \
            else (pool.stride,) * 2
        padding = tuple(pool.padding) if isinstance(pool.padding, (tuple, list)) \
            else (pool.padding,) * 2
        if padding != (kernel[0] // 2, kernel[1] // 2):
            raise NoMapping(f"MViT attention's pool_{which}: padding {list(padding)} where the "
                            f"kind pads k//2")
        expected = {"conv": "Conv2d", "max": "MaxPool2d", "avg": "AvgPool2d"}[m.mode]
        if type(pool).__name__ != expected:
            raise NoMapping(f"MViT attention's pool_{which}: a {type(pool).__name__}, not the "
                            f"{expected} of mode {m.mode!r}")
        if m.mode == "conv":
            if (pool.in_channels, pool.out_channels, pool.groups) != (hd, hd, hd) or \
                    pool.bias is not None or tuple(pool.dilation) != (1, 1) or \
                    pool.padding_mode != "zeros":
                raise NoMapping(f"MViT attention's pool_{which}: not a depthwise conv of the "
                                f"{hd} channels of a head, without a bias")
            layer_norm = any(c.__name__ == "LayerNorm" and c.__module__.startswith("torch.nn")
                             for c in type(norm).__mro__)
            if not (layer_norm and
                    tuple(norm.normalized_shape) == (hd,) and norm.elementwise_affine and
                    norm.bias is not None):
                raise NoMapping(f"MViT attention's norm_{which}: a {type(norm).__name__}, "
                                f"not a LayerNorm of {hd} with weight and bias")
            return pair(kernel), pair(stride), float(norm.eps)
        extra = pool.ceil_mode or (m.mode == "max" and (
            pool.return_indices or pool.dilation not in (1, (1, 1)))) or \
            (m.mode == "avg" and (not pool.count_include_pad or pool.divisor_override))
        if extra or norm is not None:
            raise NoMapping(f"MViT attention's pool_{which}: a {m.mode} pool with options "
                            "the kind lacks (ceil_mode, dilation, a norm after it, ...)")
        return pair(kernel), pair(stride), None

    @staticmethod
    def read_rel_pos(m) -> bool:
        """timm's rel_pos_type 'spatial' (or archcalc's rel_pos): the tables."""
        if hasattr(m, "rel_pos_type"):
            return m.rel_pos_type == "spatial"
        return bool(m.rel_pos)

    def check_tables(self, m, found, x):
        """timm sizes its tables from the map it was built for: they must be
        the kind's (2*max(hq, hk) - 1 rows along each axis)."""
        from .from_torch import NoMapping
        if not found.get("rel_pos", True):
            return
        a = self.read_args(found, {})
        p = self.plan(a, tuple(x))
        for name, rows in (("rel_pos_h", p.rows_h), ("rel_pos_w", p.rows_w)):
            shape = tuple(getattr(m, name).shape)
            if shape != (rows, p.hd):
                raise NoMapping(f"MViT attention's {name} of {list(shape)}, where pooling "
                                f"q to {p.hq} x {p.wq} and k to {p.hk} x {p.wk} reads "
                                f"{[rows, p.hd]}")
