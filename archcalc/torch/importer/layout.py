"""Layout classification: a chain of reshapes (view/permute/transpose/flatten...)
run on an index tensor and recognized as what it does (nothing, flatten,
tokens, to_map, channel_shuffle, the first token or tokens, a channel slice)."""
from __future__ import annotations

import math

import torch
from torch import nn

from .dataflow import FlowNode, _spec_matches
from .mappers import NoMapping, row
from .probing import PROBE_BATCH, Probed, _TensorArg


_LAYOUT_MEMO: dict = {}


def _classify_layout(chain: list, x: FlowNode, found: Probed, modules) -> list:
    """What a chain of reshapes does (memoized: a network repeats its reshapes)."""
    try:
        key = (tuple(x.shape), tuple(x.torch_shape), tuple(
            (n.op, n.target if n.op != "call_module" else type(modules[n.target]),
             _hashable_args(found.args[n])) for n in chain))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _LAYOUT_MEMO:
        kinds = _LAYOUT_MEMO[key]
        if isinstance(kinds, NoMapping):
            raise NoMapping(str(kinds))
        return [(k, dict(a)) for k, a in kinds]
    try:
        kinds = _run_layout(chain, x, found, modules)
    except NoMapping as e:
        if key is not None:
            _LAYOUT_MEMO[key] = e
        raise
    if key is not None:
        _LAYOUT_MEMO[key] = kinds
    return [(k, dict(a)) for k, a in kinds]


def _patch_sides(s: tuple, t_out: tuple) -> list:
    """The patch sides p > 1 with (H/p)*(W/p) tokens of p*p*C: at most one
    (patches of 1 are the tokens' reading, `tokens`)."""
    c, h, w = s
    p = round((t_out[1] / c) ** 0.5) if t_out[1] % c == 0 else 0
    return [p] if p > 1 and p * p * c == t_out[1] and h % p == 0 and w % p == 0 and \
        (h // p) * (w // p) == t_out[0] else []


def _hashable_args(v):
    if isinstance(v, _TensorArg):
        return "<tensor>"
    if isinstance(v, (list, tuple)):
        return tuple(_hashable_args(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable_args(x)) for k, x in v.items()))
    if isinstance(v, (nn.Module, torch.Tensor)):
        raise TypeError("not a plain value")
    return v


def _run_layout(chain: list, x: FlowNode, found: Probed, modules) -> list:
    """What a chain of reshapes does, found by running it on an index tensor:
    nothing (a view the spec does not see), flatten, tokens, to_map,
    channel_shuffle or the first token; anything else has no kind."""
    t_in = x.torch_shape
    n_in = math.prod(t_in)
    idx = torch.arange(PROBE_BATCH * n_in).reshape(PROBE_BATCH, *t_in)
    t = idx
    for n in chain:
        args, kwargs = found.args[n]
        args = tuple(t if isinstance(a, _TensorArg) else a for a in args)
        if n.op == "call_module":
            t = modules[n.target](t)
        elif n.op == "call_method":
            t = getattr(args[0], n.target)(*args[1:], **kwargs)
        else:
            t = n.target(*args, **kwargs)
    if not isinstance(t, torch.Tensor) or t.dim() == 0 or t.shape[0] != PROBE_BATCH:
        raise NoMapping("a reshape across the batch")
    m = t[0].flatten()
    if not torch.equal(t[1].flatten(), m + n_in):
        raise NoMapping("a reshape that mixes the samples of a batch")
    t_out = tuple(int(d) for d in t.shape[1:])
    s = x.shape
    n_out = m.numel()
    ordered = n_out == n_in and torch.equal(m, torch.arange(n_in))
    if ordered:
        if _spec_matches(s, t_out) or tuple(s) == t_out:
            return []
        if len(s) == 3 and len(t_out) == 1:
            return row("flatten")
        # a 1 x 1 map to channels last and back (a LayerNorm2d after the pool)
        if len(s) == 3 and s[1] * s[2] == 1 and len(t_out) == 3 and t_out[-1] == s[0]:
            return row("tokens")
        if len(s) == 2 and s[0] == 1 and t_out in ((s[1], 1, 1), (s[1],)):
            return row("to_map", size=1) + (row("flatten") if len(t_out) == 1 else [])
        raise NoMapping(f"a reshape from {list(t_in)} to {list(t_out)}")
    if len(s) == 3 and len(t_out) == 3 and t_out[1:] == tuple(s[1:]) and t_out[0] < s[0] and \
            int(m[0]) % (s[1] * s[2]) == 0 and torch.equal(m, m[0] + torch.arange(n_out)):
        start = int(m[0]) // (s[1] * s[2])      # x[:, a:b]: DPN's dual path
        return row("channel_slice", channels=[start, start + t_out[0]])
    if n_out == n_in and len(s) == 3 and len(t_out) == 2:
        for patch in _patch_sides(s, t_out):      # NaFlexViT's batch_patchify
            c, h, w = s
            cut = torch.arange(n_in).reshape(c, h // patch, patch, w // patch, patch)
            for last, order in ((True, (1, 3, 2, 4, 0)), (False, (1, 3, 0, 2, 4))):
                if torch.equal(m, cut.permute(*order).flatten()):
                    return row("patchify", patch=patch,
                               **({} if last else {"channels_last": False}))
    if n_out == n_in and len(s) == 3:
        c, h, w = s
        if torch.equal(m, torch.arange(n_in).reshape(c, h * w).t().flatten()) and \
                t_out[-1] == c:
            return row("tokens")
        if t_out == tuple(s):
            per = m.reshape(c, h * w)
            perm = per[:, 0] // (h * w)
            if torch.equal(per, perm[:, None] * (h * w) + torch.arange(h * w)) and c > 1:
                step = int(perm[1]) if c > 1 else 0
                if step and c % step == 0:
                    g = c // step
                    if torch.equal(perm, torch.arange(c).reshape(g, c // g).t().flatten()):
                        return row("channel_shuffle", groups=g)
    if len(s) == 2:
        found = _tokens_layout(s, t_in, t_out, m, n_in, n_out)
        if found is not None:
            return found
    raise NoMapping(f"a reshape from {list(t_in)} to {list(t_out)} that no kind describes")


def _tokens_layout(s: tuple, t_in: tuple, t_out: tuple, m, n_in: int, n_out: int):
    """What a reshape of N x D tokens does (to_map, the first or the last
    tokens, one token, a transpose), or None."""
    nt, d = s
    if n_out == n_in and len(t_out) == 3 and t_out[0] == d and t_out[1] * t_out[2] == nt \
            and torch.equal(m, torch.arange(n_in).reshape(nt, d).t().flatten()):
        hw = (t_out[1], t_out[2])
        return row("to_map", size=None if hw[0] == hw[1] else list(hw))
    if len(t_out) == 3 and t_out[0] == d and 0 < t_out[1] * t_out[2] < nt and \
            torch.equal(m, torch.arange(n_in).reshape(nt, d)[nt - t_out[1] * t_out[2]:]
                        .t().flatten()):
        # x[:, k:].transpose(1, 2).reshape(B, D, H, W): PiT's patch tokens back to a map
        hw = (t_out[1], t_out[2])
        return row("skip_tokens", count=nt - hw[0] * hw[1]) + \
            row("to_map", size=None if hw[0] == hw[1] else list(hw))
    if t_out == (d,) and int(m[0]) % d == 0 and torch.equal(m, m[0] + torch.arange(d)):
        index = int(m[0]) // d       # x[:, 0]: the class token; x[:, 1]: DeiT's distillation
        return row("token_pool", mode="first", **({"index": index} if index else {}))
    if len(t_out) == 2 and t_out[1] == d and t_out[0] < nt and \
            torch.equal(m, torch.arange((nt - t_out[0]) * d, n_in)):
        return row("skip_tokens", count=nt - t_out[0])   # x[:, k:]: the prefix tokens left out
    if len(t_out) == 2 and t_out[1] == d and t_out[0] < nt and \
            torch.equal(m, torch.arange(t_out[0] * d)):
        count = t_out[0]          # x[:, :k]: the class token (XCiT's class attention)
        return row("first_tokens", **({"count": count} if count != 1 else {}))
    if len(t_in) == 2 and t_out == (d, nt) and \
            torch.equal(m, torch.arange(n_in).reshape(nt, d).t().flatten()):
        return row("transpose_tokens")      # the token-mixing MLP's x.transpose(1, 2)
    return None
