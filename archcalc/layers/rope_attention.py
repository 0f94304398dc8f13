"""Self-attention with a rotary position embedding (RoPE; Su et al. 2021, in
2-d as EVA-02, Fang et al. 2023, and DINOv3 use it): q and k of each head
rotated, pair by pair of channels, by angles that grow with the patch's row
and column, so that q.k depends on the patches' offset. timm's EvaAttention
and AttentionRope (EVA, EVA-02, the ROPE-ViTs, Perception Encoder, DINOv3):
a fused ``qkv`` projection (EVA's q and v biases, no key bias) or separate
q, k, v projections (grouped k and v heads), norms on q and k per head or on
the heads' output, the rotation skipping the first ``prefix`` tokens (class
and register tokens).

MACs (FlopCounterMode's on the meta device, which counts
F.scaled_dot_product_attention as its two products and no elementwise
product): q N*D*A, k and v N*D*2*Akv, scores and weighted values 2*N^2*A,
output projection N*A*D; A = heads*head_dim, Akv = kv_heads*head_dim. The
rotation's products (4 per element of q and k) are FLOPs, not MACs.
"""
from __future__ import annotations

from math import isqrt

from .. import sym
from ..errors import SpecError
from .base import Arg, Cost, Kind, Saved, register
from .tokens import SelfAttention

FP32 = 4
NORMS = ("none", "layer", "rms")


@register
class RopeAttention(Kind):
    name = "rope_attention"
    torch_classes = ("RopeAttention",)  # in rope_attention_torch.py
    aliases = ("rotary_attention", "eva_attention")
    primary = "heads"
    weighted = True
    autocast = "low"
    summary = ("multi-head self-attention over N x D tokens with a 2-d rotary position "
               "embedding on q and k (EVA-02, ROPE-ViT, DINOv3)")
    flops_rule = ("2 x MACs + 4 per attention score (4*heads*N^2) + 3 per rotated element of "
                  "q and k (two products and a sum) + 7 per normalized element; "
                  "MACs = N*D*(A + 2*Akv) + 2*N^2*A + N*A*D")
    inputs = "tokens"
    args = {
        "heads": Arg("int", min=1, doc="attention heads"),
        "head_dim": Arg("int", None, min=1, doc="width of a head; default D/heads"),
        "kv_heads": Arg("int", None, min=1,
                        doc="k and v heads (grouped-query attention, qkv = \"separate\"); "
                            "default heads"),
        "qkv": Arg("str", "fused", choices=("fused", "separate"),
                   doc="one qkv Linear, or q_proj, k_proj and v_proj"),
        "bias": Arg("str", "qv", choices=("qv", "qkv", "none"),
                    doc="biases of q, k, v: EVA's q and v (no key bias), all three, none"),
        "proj_bias": Arg("bool", True, doc="the output projection's bias"),
        "qk_norm": Arg("str", "none", choices=NORMS,
                       doc="a LayerNorm or RMS norm on each head's q and k"),
        "scale_norm": Arg("str", "none", choices=NORMS,
                          doc="a LayerNorm or RMS norm on the heads' output"),
        "eps": Arg("float", 1e-6, min=0.0, max=1.0, doc="of the norms"),
        "prefix": Arg("int", 1, min=0, doc="first tokens not rotated (class, registers)"),
        "rope": Arg("str", "index", choices=("index", "centered", "none"),
                    doc="index: integer positions, bands 1/T^(i/F) (timm's "
                        "RotaryEmbeddingCat); centered: positions in [-1, 1], angles "
                        "2*pi*x/T^(i/F) (RotaryEmbeddingDinoV3); none: no rotation"),
        "grid": Arg("pair", None, min=1,
                    doc="patches a side [H, W]: N - prefix = H*W; default a square"),
        "temperature": Arg("float", 10000.0, min=1.0, doc="T of the frequency bands"),
        "ref": Arg("pair", None, min=1,
                   doc="rope = index: positions rescaled to this grid (EVA's fine-tuning)"),
        "offset": Arg("float", 0.0, doc="added to the positions"),
        "xy": Arg("bool", False, doc="the width's coordinate first (meshgrid 'xy')"),
        "half": Arg("bool", False,
                    doc="rotate the two halves of a head (else neighbouring pairs)"),
        "dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the attention weights"),
        "proj_dropout": Arg("float", 0.0, min=0.0, max=1.0, doc="on the projection's output"),
    }
    arg_examples = {"prefix": (0, 1), "kv_heads": (None, 1), "head_dim": (None, 4, 8)}
    receptive_field = SelfAttention.receptive_field

    def dims(self, a, x):
        """(head width, A, Akv), checked."""
        d = x[1]
        if a.head_dim is None and isinstance(d, int) and d % a.heads:
            raise SpecError(f"rope_attention: the width {d} does not divide into {a.heads} "
                            f"heads. Received: heads={a.heads}")
        head = a.head_dim if a.head_dim is not None else sym.exact_div(d, a.heads)
        kv = a.kv_heads or a.heads
        if a.heads % kv or (kv != a.heads and a.qkv == "fused"):
            raise SpecError(f"rope_attention: {kv} k/v heads for {a.heads} heads (they must "
                            f"divide them, with qkv = \"separate\"). Received: kv_heads={kv}")
        if a.rope != "none" and isinstance(head, int) and head % 4:
            raise SpecError(f"rope_attention: a head of {head} does not rotate in 2-d (it "
                            f"must divide by 4). Received: heads={a.heads}")
        return head, sym.norm(a.heads * head), sym.norm(kv * head)

    def grid(self, a, x):
        """The rotated patches [H, W]: N - prefix of them."""
        n = x[0] - a.prefix
        if not isinstance(n, int):
            return a.grid
        if a.grid is None:
            side = isqrt(max(n, 0))
            if side * side != n or n == 0:
                raise SpecError(f"rope_attention: {n} rotated tokens are no square grid; "
                                f"give grid = [H, W]. Received: prefix={a.prefix}")
            return (side, side)
        if a.grid[0] * a.grid[1] != n:
            raise SpecError(f"rope_attention: a grid of {a.grid[0]} x {a.grid[1]} patches and "
                            f"{a.prefix} prefix tokens are not the {x[0]} tokens. "
                            f"Received: grid={list(a.grid)}")
        return a.grid

    def output_shape(self, a, x):
        self.dims(a, x)
        if a.rope != "none":
            self.grid(a, x)
        return x

    def _norms(self, a, head, inner):
        per = {"none": 0, "layer": 2, "rms": 1}
        return 2 * per[a.qk_norm] * head + per[a.scale_norm] * inner

    def params(self, a, x):
        d = x[1]
        head, inner, kv = self.dims(a, x)
        bias = {"none": 0, "qv": inner + kv, "qkv": inner + 2 * kv}[a.bias]
        return sym.norm(d * (inner + 2 * kv) + bias + inner * d + (d if a.proj_bias else 0)
                        + self._norms(a, head, inner))

    def params_formula(self, a, x):
        d = sym.plain(x[1])
        head, inner, kv = (sym.plain(v) for v in self.dims(a, x))
        qkv = f"{d}*({inner} + 2*{kv})" + {"none": "", "qv": f" + {inner} + {kv}",
                                           "qkv": f" + {inner} + 2*{kv}"}[a.bias]
        parts = [qkv, f"{inner}*{d}" + (f" + {d}" if a.proj_bias else "")]
        norms = self._norms(a, *self.dims(a, x)[:2])
        if norms:
            parts.append(f"{sym.plain(norms)} (norms)")
        return " + ".join(f"({p})" for p in parts)

    def buffers(self, a, x):
        head, inner, _ = self.dims(a, x)
        table = 2 * (x[0] - a.prefix) * head if a.rope != "none" else 0
        return sym.norm(table + (inner if a.qkv == "fused" and a.bias == "qv" else 0))

    def macs(self, a, x, y):
        n, d = x
        _, inner, kv = self.dims(a, x)
        return sym.norm(n * d * (inner + 2 * kv) + 2 * n * n * inner + n * inner * d)

    def macs_formula(self, a, x, y):
        n, d = (sym.plain(v) for v in x)
        _, inner, kv = (sym.plain(v) for v in self.dims(a, x))
        return f"{n}*{d}*({inner} + 2*{kv}) + 2*{n}^2*{inner} + {n}*{inner}*{d}"

    def flops(self, a, x, y):
        n = x[0]
        head, inner, kv = self.dims(a, x)
        rotated = (n - a.prefix) * (inner + kv) if a.rope != "none" else 0
        normalized = (n * (inner + kv) if a.qk_norm != "none" else 0) + \
            (n * inner if a.scale_norm != "none" else 0)
        return sym.norm(2 * self.macs(a, x, y) + 4 * a.heads * n * n + 3 * rotated
                        + 7 * normalized)

    def macs_missed_by(self, a, x, y):
        n, inner = x[0], self.dims(a, x)[1]
        return {"fvcore": (sym.norm(2 * n * n * inner),
                           "fvcore has no handler for aten::scaled_dot_product_attention "
                           "(the two attention matmuls, 2*N^2*A per layer)")}

    def backward_flops(self, a, x, y, needs_input_grad: bool = True):
        return sym.norm(2 * self.flops(a, x, y))

    def cost(self, a, x, y):
        """The q, k, v projections (a GEMM: N tokens, A + 2*Akv out, D in), the
        scores and the weighted sum (N x N x A each), the softmax over
        heads*N*N scores, the output projection (N, D, A)."""
        n, d = x
        _, inner, kv = self.dims(a, x)
        return (Cost("linear", gemm=(n, inner + 2 * kv, d), tensors=(d * (inner + 2 * kv),)),
                Cost("linear", gemm=(n, n, inner), backward=True),
                Cost("softmax", elements=sym.norm(a.heads * n * n)),
                Cost("linear", gemm=(n, inner, n)),
                Cost("linear", gemm=(n, d, inner),
                     tensors=(d * inner,) + ((d,) if a.proj_bias else ())))

    def saved(self, a, x, y):
        # the input (for the projections), q, k, v as projected (N*(A + 2Akv)),
        # q and k rotated (and normed) for the attention (N*(A + Akv)), k and v
        # repeated to every head where grouped (2*N*A), the attention output
        # before the projection (N*A) and the softmax statistics (fp32)
        n, d = x[0], x[-1]
        _, inner, kv = self.dims(a, x) if len(x) == 2 else (d, d, d)
        grouped = 2 * n * inner if kv != inner else 0
        extra = ((sym.norm(n * (inner + 2 * kv) + n * (inner + kv) + grouped + n * inner), None),
                 (sym.norm(a.heads * n), FP32))
        return Saved(input=True, extra=extra)

    def build(self, a, x):
        from .rope_attention_torch import RopeAttention as Module
        head = self.dims(a, x)[0]
        grid = self.grid(a, x) if a.rope != "none" else None
        return Module(x[1], a.heads, head, a.kv_heads, a.qkv, a.bias, a.proj_bias, a.qk_norm,
                      a.scale_norm, a.eps, a.prefix, a.rope, grid, a.temperature, a.ref,
                      a.offset, a.xy, a.half, a.dropout, a.proj_dropout)

    torch_modules = ("archcalc.layers.rope_attention_torch.RopeAttention",
                     "timm.models.eva.EvaAttention", "timm.layers.attention.AttentionRope")

    def from_torch(self, call, m):
        from .from_torch import NoMapping, row
        if len(call.x) != 2:
            raise NoMapping(f"attention on a {len(call.x)}-d input (it takes tokens)")
        if hasattr(m, "init_args"):           # archcalc's own module
            found = dict(zip(("heads", "head_dim", "kv_heads", "qkv", "bias", "proj_bias",
                              "qk_norm", "scale_norm", "eps", "prefix", "rope", "grid",
                              "temperature", "ref", "offset", "xy", "half", "dropout",
                              "proj_dropout"), m.init_args[1:]))
        else:
            found = {**_timm_args(call, m), **_rope_args(call, m)}
        defaults = {k: arg.default for k, arg in self.args.items()}
        return row("rope_attention", **{k: list(v) if isinstance(v, tuple) else v
                                        for k, v in found.items()
                                        if k == "heads" or v != defaults[k]})


def _classes(m) -> set:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(m).__mro__}


def _norm(norm, width, what):
    """("none" | "layer" | "rms", eps) of a q, k or output norm over ``width``."""
    from .from_torch import NoMapping
    classes = _classes(norm)
    if "torch.nn.modules.linear.Identity" in classes:
        return "none", None
    shape = tuple(getattr(norm, "normalized_shape", ()))
    if "torch.nn.modules.normalization.LayerNorm" in classes and shape == (width,) and \
            norm.elementwise_affine and norm.bias is not None:
        return "layer", float(norm.eps)
    if classes & {"timm.layers.norm.RmsNorm", "torch.nn.modules.normalization.RMSNorm"} and \
            shape == (width,) and getattr(norm, "weight", None) is not None and \
            norm.eps is not None:
        return "rms", float(norm.eps)
    raise NoMapping(f"attention with a {type(norm).__name__} as its {what} (the kind's is a "
                    f"LayerNorm or an RMS norm over {width} with its weight)")


def _rotary(m) -> bool:
    return any(c.startswith("timm.layers.pos_embed_sincos.RotaryEmbedding") for c in _classes(m))


def _timm_args(call, m) -> dict:
    """The projections, heads and norms of timm's EvaAttention or AttentionRope."""
    from .from_torch import NoMapping
    if call.arg("attention", 2, "attn_mask", None) is not None or \
            call.arg("attention", 3, "is_causal", False):
        raise NoMapping("attention with a mask or a causal flag")
    if getattr(m, "gate", None) is not None:
        raise NoMapping("a gated attention (a sigmoid gate on its output)")
    d, heads, head = call.x[1], int(m.num_heads), int(m.head_dim)
    kv = int(getattr(m, "num_kv_heads", heads))
    inner = heads * head
    if abs(float(m.scale) * head ** 0.5 - 1) > 1e-9:
        raise NoMapping(f"attention scaled by {m.scale}, not 1/sqrt(head_dim = {head})")
    if m.qkv is not None:
        layout, widths = "fused", [(m.qkv, 3 * inner)]
        bias = "qv" if getattr(m, "q_bias", None) is not None else \
            "qkv" if m.qkv.bias is not None else "none"
        if bias == "qv" and m.qkv.bias is not None:
            raise NoMapping("a fused qkv with both its own bias and q_bias, v_bias")
    else:
        layout = "separate"
        widths = [(m.q_proj, inner), (m.k_proj, kv * head), (m.v_proj, kv * head)]
        biases = tuple(p.bias is not None for p, _ in widths)
        bias = {(True, False, True): "qv", (True, True, True): "qkv",
                (False, False, False): "none"}.get(biases)
        if bias is None:
            raise NoMapping(f"q, k, v biases {biases} (the kind's: q and v, all, none)")
    if any(p.in_features != d or p.out_features != w for p, w in widths) or \
            m.proj.in_features != inner or m.proj.out_features != d:
        raise NoMapping(f"attention projections of other widths than tokens of {d} "
                        f"and {heads} heads of {head}")
    (qk, q_eps), (k_kind, k_eps) = _norm(m.q_norm, head, "q_norm"), _norm(m.k_norm, head, "k_norm")
    scale, s_eps = _norm(m.norm, inner, "norm")
    epsilons = {e for e in (q_eps, k_eps, s_eps) if e is not None}
    if qk != k_kind or len(epsilons) > 1:
        raise NoMapping(f"q_norm, k_norm and norm of different kinds or eps ({q_eps}, "
                        f"{k_eps}, {s_eps})")
    return {"heads": heads, "head_dim": None if inner == d else head,
            "kv_heads": None if kv == heads else kv, "qkv": layout, "bias": bias,
            "proj_bias": m.proj.bias is not None, "qk_norm": qk, "scale_norm": scale,
            "eps": epsilons.pop() if epsilons else 1e-6, "dropout": float(m.attn_drop.p),
            "proj_dropout": float(m.proj_drop.p)}


def _rope_args(call, m) -> dict:
    """The rotary table a timm attention is handed: its rope module's
    (RotaryEmbeddingCat: "index", RotaryEmbeddingDinoV3: "centered")."""
    from .from_torch import NoMapping
    table = call.arg("attention", 1, "rope", None)
    if table is None:
        return {"rope": "none"}
    got = call.source(table)
    if got is None:
        raise NoMapping("a rotary table not computed from one module's buffers alone")
    src, calls, learned = got
    if not _rotary(src):    # a table of traced constants (built at the input's size)
        found = [] if learned else [s for s in src.modules() if _rotary(s)]
        if len(found) != 1:
            raise NoMapping("a rotary table not computed by one rope module")
        src = found[0]
    classes, head = _classes(src), int(m.head_dim)
    if learned or any(True for _ in src.parameters()):
        raise NoMapping(f"a learned rotary table ({type(src).__name__}'s parameters)")
    if src.training and getattr(src, "aug_active", False):
        raise NoMapping("a rotary table with random coordinate augmentations (training)")
    if "timm.layers.pos_embed_sincos.RotaryEmbeddingCat" in classes and \
            not src.in_pixels and src.grid_type == "index":
        rope, ref = "index", src.ref_feat_shape
    elif "timm.layers.pos_embed_sincos.RotaryEmbeddingDinoV3" in classes and \
            src.min_period is None and src.max_period is None and \
            src.normalize_coords == "separate":
        rope, ref = "centered", None
    else:
        raise NoMapping(f"a rotary table of {type(src).__name__} in another configuration")
    grid = src.feat_shape
    if grid is None:    # built at the input's size: the grid the table was built on
        grids = [args[0] for target, args, _ in calls
                 if getattr(target, "__name__", "") == "_build_grid" and args]
        grid = grids[0] if len(grids) == 1 else None
    n = call.x[0] - int(m.num_prefix_tokens)
    if grid is None or len(grid) != 2 or int(grid[0]) * int(grid[1]) != n or \
            src.dim != head or bool(src.rotate_half) != bool(getattr(m, "rotate_half", False)):
        raise NoMapping(f"a rotary table of another grid ({grid}), width ({src.dim}) or "
                        f"layout than the {n} rotated tokens' heads of {head}")
    return {"rope": rope, "grid": [int(grid[0]), int(grid[1])],
            "temperature": float(src.temperature),
            "ref": None if ref is None else [int(ref[0]), int(ref[1])],
            "offset": float(src.grid_offset), "xy": src.grid_indexing == "xy",
            "half": bool(src.rotate_half), "prefix": int(m.num_prefix_tokens)}


__all__ = ["RopeAttention"]
