"""Rows for values computed from the weights alone and added to the tokens
(position embeddings stored in another layout or for another grid, XCiT's
Fourier encoding), and tokens read back from a concatenation (CaiT's class
token): each taken only after its computation is replayed and compared.
A mixin of the graph builder (graph_builder._GraphBuilder)."""
from __future__ import annotations

import math

import torch
import torch.fx as fx

from .dataflow import (Expanded, FlowNode, Param, _Derived, _Indices, _PENDING, _POISON, _Pooled,
                       _kind_shape, _path, _tensor, _tensor_valued)
from .mappers import LAYOUT_FUNCTIONS, LAYOUT_METHODS, NoMapping, row
from .measuring import measure
from .probing import PROBE_BATCH, ProbedShape


class _DerivedRows:
    """The builder's methods for these rows (it gives self.value, self.found,
    self.gm, self.modules, self.nodes, self.used_state, self.stateful_calls and
    _row)."""

    def _position_encoding(self, n: fx.Node, x: FlowNode, derived: "_Derived"):
        """tokens + pos_embed(B, H, W).reshape(B, -1, N).permute(0, 2, 1): a
        position encoding computed from its module's weights alone (XCiT's and
        EdgeNeXt's PositionalEncodingFourier) added to the tokens, one row that
        holds the module's weights. The layout after the module must read its
        D x H x W map as the tokens do (flatten, transpose): replayed on an
        index map to be sure."""
        from ...layers.fourier_position import FourierPositionEncoding
        learned = self._learned_position(n, x, derived)
        if learned is not None:
            return learned
        windowed = self._window_position(n, x, derived)
        if windowed is not None:
            return windowed
        paths = [r.split(".")[:-1] for r in derived.reads]
        common = paths[0] if paths else []
        for p in paths[1:]:
            k = 0
            while k < min(len(common), len(p)) and common[k] == p[k]:
                k += 1
            common = common[:k]
        # the module that owns them all: the innermost encoding around their
        # parameters, as built (fx keeps only the leaves)
        built = dict(self.gm.meta["model"].named_modules()) if "model" in self.gm.meta \
            else self.modules
        owner = next((".".join(common[:k]) for k in range(len(common), 0, -1)
                      if type(built.get(".".join(common[:k]))).__name__ ==
                      "PositionalEncodingFourier"), None)
        module = built.get(owner) if owner else None
        if module is None or not type(module).__module__.startswith("timm."):
            raise NoMapping("add of the tokens and a tensor computed from "
                            f"{', '.join(derived.reads) or 'constants'} alone")
        # its last call inside it (a leaf: the module itself; traced: its projection)
        inside = [d for d in derived.nodes if (d.target if d.op == "call_module" else
                                               d.meta.get("scope", "")) in
                  (owner, f"{owner}.token_projection")]
        if not inside or any(d.op == "call_module" and d.target == owner for d in inside[:-1]):
            raise NoMapping(f"add of the tokens and {owner} computed more than once")
        call = inside[-1]
        after = list(derived.nodes)[list(derived.nodes).index(call) + 1:]
        out = self.found.values.get(call)
        if not _tensor(out) or len(out) != 4 or int(out[1]) != x.shape[1] or \
                int(out[2]) * int(out[3]) != x.shape[0]:
            raise NoMapping(f"{owner} gives {list(out) if _tensor(out) else out}, "
                            f"not D x H x W of tokens {list(x.shape)}")
        index = torch.arange(math.prod(out)).reshape(tuple(out))
        replayed = self._replay(after, call, index)
        if replayed is None or not torch.equal(replayed, index.flatten(2).transpose(1, 2)):
            raise NoMapping(f"{owner}'s map read as tokens in another order")
        self.used_state.update(derived.reads)
        self.used_state.add(owner)
        self.stateful_calls[owner] = self.stateful_calls.get(owner, 0) + 1
        path = _path(owner)
        return self._row(n, x, FourierPositionEncoding.from_timm(
            module, x.shape, tuple(out[2:])), path=path, stateful=True,
            name=path[-1], what="a Fourier position encoding")

    def _learned_position(self, n: fx.Node, x: FlowNode, derived: "_Derived"):
        """tokens + pos_embed read in another shape (NaFlexViT's 1 x H x W x D,
        reshaped) or interpolated from another grid: a position_embedding row
        that keeps the stored shape. Its computation is replayed on random
        values and must equal the kind's module's (the first of the
        interpolations that does); None where none does."""
        from ...layers.tokens_torch import PositionEmbedding
        if len(derived.reads) != 1 or not derived.nodes or len(x.shape) != 2:
            return None
        first = derived.nodes[0]
        start = next((a for a in first.all_input_nodes
                      if isinstance(self.value.get(a), Param)), None)
        param = self.value.get(start)
        if param is None or param.target != derived.reads[0] or "model" not in self.gm.meta:
            return None
        try:
            original = self.gm.meta["model"].get_parameter(param.target)
        except AttributeError:
            return None
        # the computation may start from a view of the parameter (permuted): replayed
        # from the parameter itself
        chain = []
        while start.op != "get_attr":
            inputs = start.all_input_nodes
            if start.op not in ("call_method", "call_function") or not inputs or \
                    (start.target not in LAYOUT_METHODS and start.target not in LAYOUT_FUNCTIONS):
                return None
            chain.insert(0, start)
            start = inputs[0]
        stored = tuple(int(d) for d in original.shape)
        if start.target != param.target or len(stored) < 2:
            return None
        p = torch.randn(stored, generator=torch.Generator().manual_seed(0))
        got = self._replay(chain + list(derived.nodes), start, p, layout_only=False)
        if got is not None and len(x.torch_shape) == 3 and \
                tuple(got.shape) == (1, *x.torch_shape):
            got = got.reshape(1, *x.shape)   # added to a channels-last map (SAM's ViT)
        if got is None or tuple(got.shape) != (1, *x.shape):
            return None
        grid = self._grid_of(derived, x)
        options = [(dict(stored=list(stored[1:])) if stored != (1, *x.shape) else {}, None)]
        if grid is not None and len(stored) == 4 and stored[-1] == x.shape[1]:
            for mode in ("bicubic", "bilinear", "nearest"):
                for antialias in (False, True):
                    for corners in ((False,) if mode == "nearest" else (False, True)):
                        args = dict(stored=list(stored[1:]), resample=mode,
                                    **({"size": list(grid)} if grid[0] != grid[1] else {}),
                                    **({"antialias": True} if antialias else {}),
                                    **({"align_corners": True} if corners else {}))
                        options.append((args, (mode, grid, antialias, corners)))
        for args, resample in options:
            if resample is None and math.prod(stored) != math.prod(x.shape):
                continue
            try:
                module = PositionEmbedding(*x.shape, stored=stored[1:], resample=resample)
                want = module.embedding(p, got.dtype)
            except (RuntimeError, ValueError, NotImplementedError):
                continue
            if want.shape == got.shape and torch.allclose(want, got, atol=1e-5, rtol=1e-5):
                self.used_state.add(param.target)
                path = _path(param.target)
                return self._row(n, x, row("position_embedding", **args), path=path,
                                 stateful=True, name=path[-1], flat=True,
                                 what="a position embedding")
        return None

    def _window_position(self, n: fx.Node, x: FlowNode, derived: "_Derived"):
        """tokens + (resize(pos_embed) + pos_embed_win.tile(...)) read as the
        tokens: Hiera abswin's and HieraDet's absolute-window position
        embedding, two flat rows (position_grid, position_window), each holding
        its parameter. Replayed on random values, it must equal the kinds'
        modules (bicubic, with or without antialias); None where none does."""
        from ...layers.hiera_torch import PositionGrid
        if len(derived.reads) != 2 or len(x.shape) != 2 or "model" not in self.gm.meta:
            return None
        starts = {a: self.value[a] for d in derived.nodes for a in d.all_input_nodes
                  if isinstance(self.value.get(a), Param)}
        c, gen = x.shape[1], torch.Generator().manual_seed(0)
        # the grid: a 1 x C x h x w value made (the sum), h*w = N (each is tried)
        grids = list(dict.fromkeys((int(v[2]), int(v[3])) for v in map(
            self.found.values.get, derived.nodes) if _tensor(v) and len(v) == 4 and
            int(v[1]) == c and int(v[2]) * int(v[3]) == x.shape[0]))
        if sorted(p.target for p in starts.values()) != sorted(derived.reads) or not grids:
            return None
        values = {}
        for a, p in starts.items():
            stored = tuple(int(d) for d in self.gm.meta["model"].get_parameter(p.target).shape)
            if len(stored) != 4 or stored[:2] != (1, c) or tuple(p.tensor.shape) != stored:
                return None
            values[a] = torch.randn(stored, generator=gen)
        first = next(iter(starts))
        got = self._replay(list(derived.nodes), first, values[first], layout_only=False,
                           more=values)
        if got is None or got.numel() != math.prod(x.shape) or got.shape[-1] != c:
            return None
        got = got.reshape(1, *x.shape)
        for grid in grids:
            for (ga, gp), (wa, wp) in (list(starts.items()), list(starts.items())[::-1]):
                win = tuple(values[wa].shape[2:])
                if grid[0] % win[0] or grid[1] % win[1]:
                    continue
                tiled = values[wa].tile((grid[0] // win[0], grid[1] // win[1]))
                for antialias in (False, True):
                    module = PositionGrid(c, tuple(values[ga].shape[2:]), grid, antialias)
                    want = (module.embedding(values[ga]) + tiled).flatten(2).transpose(1, 2)
                    if torch.allclose(want, got, atol=1e-5, rtol=1e-5):
                        return self._window_rows(n, x, (gp, wp), grid, antialias)
        return None

    def _window_rows(self, n: fx.Node, x: FlowNode, params, grid, antialias):
        """The grid's row, then the window's, each flat, named by its parameter."""
        size = {"size": list(grid)} if grid[0] != grid[1] else {}
        for p, kinds in zip(params, (
                row("position_grid", grid=_pair(params[0].tensor.shape[2:]), **size,
                    **({"antialias": True} if antialias else {})),
                row("position_window", window=_pair(params[1].tensor.shape[2:]), **size))):
            self.used_state.add(p.target)
            path = _path(p.target)
            x = self._row(n, x, kinds, path=path, stateful=True, name=path[-1], flat=True,
                          what="a position embedding")
        return x

    def _grid_of(self, derived: "_Derived", x: FlowNode):
        """(H, W) the tokens' grid: the last 4-d value the computation makes
        with H*W = N (the interpolation's output), else the square."""
        for d in reversed(derived.nodes):
            v = self.found.values.get(d)
            if _tensor(v) and len(v) == 4 and int(v[2]) * int(v[3]) == x.shape[0]:
                return int(v[2]), int(v[3])
        side = math.isqrt(x.shape[0])
        return (side, side) if side * side == x.shape[0] else None

    def _replay(self, nodes: list, start: fx.Node, value, layout_only: bool = True,
                more: dict | None = None):
        """The calls ``nodes`` replayed on ``value`` in place of ``start``'s
        output (and ``more``'s values in place of theirs; layout_only: reshape,
        view, permute, transpose, flatten alone); None where one is another
        call, a module, or reads another tensor."""
        values = {start: value, **(more or {})}
        for d in nodes:
            if d.op not in ("call_method", "call_function") or (
                    layout_only and d.target not in LAYOUT_METHODS and
                    d.target not in LAYOUT_FUNCTIONS):
                return None
            def resolve(v):
                if isinstance(v, fx.Node):
                    return values[v] if v in values else self.found.values.get(v)
                if isinstance(v, (tuple, list)):
                    return type(v)(resolve(i) for i in v)
                return v
            args = [resolve(v) for v in d.args]
            kwargs = {k: resolve(v) for k, v in d.kwargs.items()}
            leaves = list(_leaves(args)) + list(_leaves(list(kwargs.values())))
            if any(isinstance(v, ProbedShape) for v in leaves) or \
                    not any(isinstance(v, torch.Tensor) for v in leaves):
                return None     # reads a tensor computed outside (or none it replays)
            try:
                values[d] = getattr(args[0], d.target)(*args[1:], **kwargs) \
                    if d.op == "call_method" else d.target(*args, **kwargs)
            except (RuntimeError, TypeError, ValueError, NotImplementedError):
                return None
            if not isinstance(values[d], torch.Tensor):
                return None
        return values[nodes[-1]] if nodes else value

    def _first_tokens(self, n: fx.Node, tokens: FlowNode, count: int) -> FlowNode:
        kinds = row("first_tokens", **({"count": count} if count != 1 else {}))
        shape = _kind_shape(*kinds[0], tokens.shape)
        node = FlowNode(len(self.nodes), "row", [tokens.index], shape, shape, kinds,
                        _path(n.meta.get("scope")), name="first_tokens",
                        what="the class token read back", scoped=True)
        self.nodes.append(node)
        return node

    def _class_tokens(self, n, params, x):
        """cat([cls.expand(...), reg.expand(...), x], 1): a class_token row per
        parameter, the last one first (reg before x, then cls before both)."""
        for i, param in enumerate(reversed(params)):
            self.used_state.add(param.target)
            path = _path(param.target)
            count = int(param.tensor.shape[-2])
            last = i == len(params) - 1
            out = None if last else torch.empty(PROBE_BATCH, x.shape[0] + count, x.shape[1],
                                                 device="meta")
            x = self._row(n, x, row("class_token", **({"count": count} if count > 1 else {})),
                          path=path, stateful=True, name=path[-1], flat=True,
                          what="a class token", out=out)
        first = params[0]   # the first token reads back as x[:, :count] (a view)
        self.placed_tokens.setdefault(first.target, (x, int(first.tensor.shape[-2])))
        return x

    def _derived_work(self, d: fx.Node) -> int:
        """MACs per sample of a call on parameters alone. A table made per
        sample (EdgeNeXt's position encoding takes x's batch size) has the
        probe's batch in dimension 0: its work is divided by it."""
        macs = measure(self.gm, d, self.found, set()).macs
        y = self.found.values.get(d)
        return macs // PROBE_BATCH if _tensor(y) and len(y) and y[0] == PROBE_BATCH else macs

    def _derived(self, n: fx.Node):
        """A call on parameters, buffers and constants alone (a position
        embedding resampled, a rotary table): a _Derived, or None."""
        inputs = [self.value.get(a) for a in n.all_input_nodes]
        if not _tensor_valued(self.found.values.get(n)) or any(
                isinstance(x, (FlowNode, _Pooled, _Indices)) or x is _POISON or x is _PENDING
                for x in inputs):   # a max pool's indices come from the input
            return None
        reads, nodes = [], [n]
        module = self.modules.get(n.target) if n.op == "call_module" else None
        if module is not None:
            reads += [f"{n.target}.{k}" for k, _ in
                      list(module.named_parameters()) + list(module.named_buffers())]
        for x in inputs:
            x = x.param if isinstance(x, Expanded) else x
            if isinstance(x, Param):
                reads.append(x.target)
            elif isinstance(x, _Derived):
                reads += x.reads
                nodes[:0] = x.nodes
        return _Derived(tuple(dict.fromkeys(reads)), tuple(dict.fromkeys(nodes)))


def _pair(shape):
    h, w = (int(d) for d in shape)
    return h if h == w else [h, w]


def _leaves(values):
    """The values in nested lists and tuples (torch.cat's list of tensors)."""
    for v in values:
        if isinstance(v, (list, tuple)) and not isinstance(v, ProbedShape):
            yield from _leaves(v)
        else:
            yield v
