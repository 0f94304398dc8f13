"""Compile a spec's graph into a torch.nn.Module.

Module names follow the spec's paths (``inception_3a.b2.3x3_reduce``,
``layer1.basic1.conv1``), so every table row has a module to hook. A named
block whose body is one concat or merge becomes that module itself; a row with
fused ops (conv + batch norm + relu) becomes an ``nn.Sequential``.

Memory choices follow torchvision: ReLU runs in place, except where its input
is shared (the first op of a branch or residual body, or the model input).
"""
from __future__ import annotations

import torch
from torch import nn

from ..analysis import analyze
from ..errors import SpecError, path_text, split_path
from ..graph import (Concat, Layer, Merge, Model, Sequence, Split, build_graph, in_place,
                     shortcut_ops, split_sizes, walk)
from ..spec.loader import Spec

INITS = ("default", "he", "xavier")


class SpecSequential(nn.Module):
    """Children run in order (named by the spec, which nn.Sequential allows too,
    but a named class reads better in a printed model)."""

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


class ConcatBranches(nn.Module):
    def forward(self, x):
        return torch.cat([branch(x) for branch in self.children()], 1)


class SplitBranches(nn.Module):
    """Branch i runs on the i-th slice of the input's channels (a view, as
    ShuffleNetV2's x.chunk(2, dim=1)); the outputs are concatenated. A branch
    with no layers passes its slice on."""

    def __init__(self, sizes):
        super().__init__()
        self.sizes = list(sizes)

    def forward(self, x):
        parts = torch.split(x, self.sizes, 1)
        return torch.cat([branch(part) for branch, part in zip(self.children(), parts)], 1)

    def extra_repr(self):
        return f"sizes={self.sizes}"


class Residual(nn.Module):
    """body(x) merged with shortcut(x): add (in place, as torchvision), multiply
    (a gate), or concat (DenseNet); then the fused ops (the post-add ReLU)."""

    def __init__(self, body: list, shortcut, post, op: str, add_in_place: bool = False):
        super().__init__()
        self.add_in_place = add_in_place
        self.body_names = []
        for name, module in body:
            self.add_module(name, module)
            self.body_names.append(name)
        self.shortcut = shortcut
        self.post = post
        self.op = op

    def forward(self, x):
        y = x
        for name in self.body_names:
            y = getattr(self, name)(y)
        s = x if self.shortcut is None else self.shortcut(x)
        if self.op == "add":
            # in place where the body's last output is fresh and kept by nobody
            # (torchvision's `out += identity`); a plain add otherwise
            y = y.add_(s) if self.add_in_place and y is not x and y is not s else y + s
        elif self.op == "mul":
            y = s * y
        else:
            y = torch.cat([s, y], 1)
        return y if self.post is None else self.post(y)


class IndexTape:
    """Max-pool indices kept for the max unpools that name the pool."""

    def __init__(self):
        self.indices = {}


class PoolWithIndices(nn.Module):
    def __init__(self, pool: nn.MaxPool2d, tape: IndexTape, key: str):
        super().__init__()
        pool.return_indices = True
        self.pool, self.tape, self.key = pool, tape, key

    def forward(self, x):
        y, idx = self.pool(x)
        self.tape.indices[self.key] = idx
        return y


class UnpoolFromTape(nn.Module):
    def __init__(self, unpool: nn.MaxUnpool2d, tape: IndexTape, key: str, size):
        super().__init__()
        self.unpool, self.tape, self.key, self.size = unpool, tape, key, size

    def forward(self, x):
        return self.unpool(x, self.tape.indices[self.key],
                           output_size=(x.shape[0], *self.size))


class SpecModel(nn.Module):
    """The compiled model: ``rows`` maps each table row (its path) to the name
    of the module whose output is that row's output."""

    def __init__(self, body: nn.Module, rows: dict, name: str):
        super().__init__()
        for child_name, child in body.named_children():
            self.add_module(child_name, child)
        self.rows = rows
        self.spec_name = name

    def forward(self, x):
        for module in self.children():
            x = module(x)
        return x


def build_model(spec: Spec | Model, *, init: str | None = None, variables=None,
                input=None) -> SpecModel:
    """A torch module for a spec; every figure of ``analyze`` can be measured on it."""
    model = spec if isinstance(spec, Model) else build_graph(spec, variables=variables,
                                                            input=input)
    report = analyze(model)  # validates shapes first: bad specs fail here, with context
    if report.symbolic:
        raise SpecError(f"cannot build a model with unbound variables "
                        f"({', '.join(report.free_symbols)}); "
                        "bind them with --set NAME=VALUE", file=model.file)
    init = init or model.extra.get("init", "default")
    if init not in INITS:
        raise SpecError(f"init takes one of {', '.join(INITS)}. Received: init={init!r}",
                        file=model.file)
    builder = _Builder(model, init, report)
    body, _ = builder.sequence(model.body, model.input, shared=True)
    return SpecModel(body, builder.rows, model.name)


class _Builder:
    def __init__(self, model: Model, init: str, report):
        self.model = model
        # whether an earlier op keeps the current tensor for backward (then no
        # op may overwrite it in place); the engine decides alike
        self.input_saved = False
        self.init = init
        self.rows: dict[str, str] = {}        # row path "a.b.add" -> its module "a.b"
        self.tape = IndexTape()
        self.unpooled = {path_text(split_path(op.args.of)) for layer in walk(model.body)
                         for op in layer.ops if op.kind.name == "max_unpool"}
        self.pool_inputs: dict[str, tuple] = {}

    # each returns (module, output shape)
    def sequence(self, seq: Sequence, x, shared: bool, path=()) -> tuple:
        module = SpecSequential()
        for item in seq.items:
            child, x, name = self.node(item, x, shared, path)
            _add(module, name, child)
            shared = False
        return module, x

    def node(self, node, x, shared, path):
        if isinstance(node, Layer):
            module, y = self.layer(node.name, node.ops, x, shared, (*path, node.name))
            return module, y, node.name
        if isinstance(node, Sequence):
            inner = (*path, node.name) if node.name else path
            if len(node.items) == 1 and isinstance(node.items[0], (Concat, Split, Merge)):
                module, y = self.structure(node.items[0], x, inner)
            else:
                module, y = self.sequence(node, x, shared, inner)
            self.rows.setdefault(path_text(inner), path_text(inner))
            return module, y, node.name
        if isinstance(node, (Concat, Split, Merge)):
            module, y = self.structure(node, x, path)
            return module, y, node.name
        raise TypeError(f"unknown graph node {type(node).__name__}")

    def structure(self, node, x, path):
        if isinstance(node, Concat):
            module = ConcatBranches()
            outs = []
            entry = self.input_saved
            for branch in node.branches:
                self.input_saved = entry
                child, y = self.sequence(branch, x, shared=True, path=(*path, branch.name))
                _add(module, branch.name, child)
                outs.append(y)
            y = (sum(o[0] for o in outs), *outs[0][1:])
            self.rows[path_text((*path, node.name))] = path_text(path)
            self.input_saved = False
            return module, y
        if isinstance(node, Split):
            sizes = split_sizes(node, x)
            module = SplitBranches(sizes)
            outs = []
            entry = self.input_saved
            for branch, c in zip(node.branches, sizes):
                self.input_saved = entry
                child, y = self.sequence(branch, (c, *x[1:]), shared=True,
                                         path=(*path, branch.name))
                _add(module, branch.name, child)
                outs.append(y)
            y = (sum(o[0] for o in outs), *outs[0][1:])
            self.rows[path_text((*path, node.name))] = path_text(path)
            self.input_saved = False
            return module, y
        body, y = [], x
        shared = True
        entry = self.input_saved
        for item in node.body.items:
            child, y, name = self.node(item, y, shared, path)
            body.append((name, child))
            shared = False
        self.input_saved = entry
        if isinstance(node.shortcut, Sequence):
            shortcut, _ = self.sequence(node.shortcut, x, shared=True,
                                        path=(*path, "shortcut"))
        else:
            ops = shortcut_ops(node, x, y)
            shortcut = None if ops is None else \
                self.layer("shortcut", ops, x, True, (*path, "shortcut"))[0]
        out = (x[0] + y[0], *y[1:]) if node.op == "concat" else (x if node.op == "mul" else y)
        post = None
        if node.post:
            post = nn.Sequential(*(op.kind.build(op.args, out) for op in node.post))
        module = Residual(body, shortcut, post, node.op, node.adds_in_place)
        self.rows[path_text((*path, node.name))] = path_text(path)
        self.input_saved = bool(node.post) and node.post[-1].kind.saved(
            node.post[-1].args, out, out).output
        return module, out

    def layer(self, name, ops, x, shared, path):
        modules = []
        for i, op in enumerate(ops):
            module = op.kind.build(op.args, x)
            ran_in_place = in_place(op, shared and i == 0, self.input_saved)
            if hasattr(module, "inplace") and not ran_in_place:
                module.inplace = False  # its input is read elsewhere, or kept for backward
            y = op.kind.output_shape(op.args, x)
            kept = op.kind.saved(op.args, x, y).output
            self.input_saved = kept or (self.input_saved and ran_in_place)
            module = self.wire_indices(op, module, x, path)
            self.initialize(module)
            modules.append(module)
            x = op.kind.output_shape(op.args, x)
        self.rows[path_text(path)] = path_text(path)
        return (modules[0] if len(modules) == 1 else nn.Sequential(*modules)), x

    def wire_indices(self, op, module, x, path):
        """A max pool that an unpool names (by its name or path) keeps its
        indices on the tape; the unpool reads them back."""
        if op.kind.name == "maxpool":
            key = next((k for k in (path[-1], path_text(path)) if k in self.unpooled), None)
            if key is not None:
                self.pool_inputs[key] = x
                return PoolWithIndices(module, self.tape, key)
        if op.kind.name == "max_unpool":
            ref = path_text(split_path(op.args.of))
            return UnpoolFromTape(module, self.tape, ref, self.pool_inputs[ref])
        return module

    def initialize(self, module):
        if self.init == "default":
            return
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                if self.init == "he":   # He et al. 2015: N(0, 2 / fan_in)
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                else:                   # Glorot & Bengio 2010: U(+-sqrt(6 / (fan_in + fan_out)))
                    nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def _add(parent: nn.Module, name: str, child: nn.Module):
    if "." in name or not name:
        raise SpecError(f"layer name {name!r} cannot name a torch module (no dots, not empty)")
    if name in parent._modules:  # add_module would silently replace the first one
        raise SpecError(f"two layers at the same level are named {name!r}; rename one")
    if hasattr(parent, name):
        raise SpecError(f"layer name {name!r} is taken by torch's nn.Module (an attribute or "
                        "method of every module); rename the layer")
    parent.add_module(name, child)
