"""Export a compiled spec: a readable, runnable PyTorch source file, or ONNX.

The Python file is written from the compiled module tree: one attribute per
table row (named by its spec path), and a forward written out line by line,
branches and shortcuts included, so a student sees the code their table
describes. It needs only torch; modules PyTorch lacks are copied in.
"""
from __future__ import annotations

import inspect
import keyword
import re

from torch import nn

from ..errors import SpecError
from . import modules as custom
from .build import (ConcatBranches, PoolWithIndices, Residual, SpecModel, SpecSequential,
                    SplitBranches, UnpoolFromTape)

CUSTOM = (custom.PartialConv2d, custom.Subsample, custom.LocallyConnected2d,
          custom.SqueezeExcitation, custom.Maxout, custom.PadShortcut, custom.LayerNorm2d,
          custom.LayerScale, custom.StochasticDepth, custom.MapToTokens, custom.ClassToken,
          custom.PositionEmbedding, custom.SelfAttention, custom.TokenPool,
          custom.TokensToMap)
CONTAINERS = (SpecSequential, ConcatBranches, SplitBranches, Residual)


def to_python(model: SpecModel, class_name: str | None = None, source: str = "") -> str:
    """The model as a source file whose module tree, and so whose state_dict
    keys, are the compiled model's (``layer1.0.conv1.weight``): nested
    containers are nn.ModuleDict, the forward is written out step by step."""
    writer = _Writer()
    out = writer.level(model, "x", ())
    class_name = class_name or _identifier(model.spec_name, capital=True)
    used = {type(m) for m in model.modules() if isinstance(m, CUSTOM)}
    lines = [f'"""{model.spec_name}, exported by archcalc' + (f" from {source}" if source else "")
             + '.\n\nRun it: python this_file.py (builds the model, prints its parameter count).\n"""',
             "import torch", "from torch import nn", "from torch.nn import functional as F", ""]
    for cls in CUSTOM:
        if cls in used:
            lines += ["", inspect.getsource(cls).rstrip(), ""]
    lines += ["", f"class {class_name}(nn.Module):", "    def __init__(self):",
              "        super().__init__()"]
    for name, node in writer.tree.items():
        text = _tree_source(node, 2)
        if _attribute(name):
            lines.append(f"        self.{name} = {text}")
        else:
            lines.append(f"        self.add_module({name!r}, {text})")
    for path, step in writer.params:
        owner = _access("self", path[:-1])
        lines.append(f"        {owner}.register_parameter({path[-1]!r}, "
                     f"nn.Parameter({_param_init(step)}))")
    lines += ["", "    def forward(self, x):"]
    lines += [f"        {line}" for line in writer.code]
    lines += [f"        return {out}", "", "",
              'if __name__ == "__main__":',
              f"    model = {class_name}()",
              "    print(sum(p.numel() for p in model.parameters()))", ""]
    return "\n".join(lines)


class _Writer:
    def __init__(self):
        self.tree: dict = {}          # name -> module, or a dict (a ModuleDict) of them
        self.params: list = []        # (path, step) of flat parameters
        self.code: list[str] = []
        self.count = 0

    def var(self, hint="x"):
        self.count += 1
        return f"{hint}{self.count}"

    def attr(self, path, module) -> str:
        """Place a module at its path in the tree; the expression that reaches it."""
        node = self.tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # a bug: a leaf above another module
                raise TypeError(f"cannot export: {'.'.join(path)} sits below a module")
        node[path[-1]] = module
        return _access("self", path)

    def steps(self, owner, steps, x, path) -> str:
        """Code for a level's steps; ``path``: the owner's module path."""
        if steps is None:
            steps = [("module", name) for name, _ in owner.named_children()]
        for step in steps:
            kind, name = step[0], step[1]
            if kind == "module":
                x = self.node(name, owner._modules[name], x, path)
            elif kind == "structure":
                x = self.structure(name, owner._modules[name], x, path, owner)
            else:
                x = self.param(step, x, (*path, name))
        return x

    def level(self, module, x, path) -> str:
        return self.steps(module, getattr(module, "_steps", None), x, path)

    def node(self, name, module, x, path) -> str:
        full = (*path, name)
        if isinstance(module, SpecSequential):
            self.code.append(f"# {' > '.join(full)}")
            return self.level(module, x, full)
        if isinstance(module, (ConcatBranches, SplitBranches, Residual)):
            return self.structure(name, module, x, full, None)
        if isinstance(module, PoolWithIndices):
            ref = self.attr(full, module.pool)
            y = self.var()
            self.code.append(f"{y}, indices_{_identifier(module.key)} = {ref}({x})")
            return y
        if isinstance(module, UnpoolFromTape):
            ref = self.attr(full, module.unpool)
            y = self.var()
            self.code.append(f"{y} = {ref}({x}, indices_{_identifier(module.key)}, "
                             f"output_size={tuple(module.size)[1:]})")
            return y
        ref = self.attr(full, module)
        y = self.var()
        self.code.append(f"{y} = {ref}({x})")
        return y

    def structure(self, name, module, x, path, owner) -> str:
        """A concat, split or merge. ``owner`` None: the module holds its parts and
        ``path`` is its own; else its parts sit on ``owner`` at ``path``."""
        holder = module if owner is None else owner
        where = " > ".join(path if owner is None else (*path, name)) or name
        if isinstance(module, (ConcatBranches, SplitBranches)):
            branches = module._branches or [[("module", n)] for n, _ in holder.named_children()]
            if isinstance(module, SplitBranches):
                self.code.append(f"# {where}: the channels split {module.sizes}, "
                                 "one slice per branch, concatenated")
                parts = self.var("parts")
                self.code.append(f"{parts} = torch.split({x}, {module.sizes}, 1)")
                inputs = [f"{parts}[{i}]" for i in range(len(branches))]
            else:
                self.code.append(f"# {where}: {len(branches)} branches, "
                                 "concatenated along channels")
                inputs = [x] * len(branches)
            outs = [self.steps(holder, steps, xi, path) for steps, xi in zip(branches, inputs)]
            y = self.var()
            self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
            return y
        self.code.append(f"# {where}: residual ({module.op})")
        y = self.steps(holder, module._body, x, path)
        s = x if module._shortcut is None else self.steps(holder, module._shortcut, x, path)
        out = self.var()
        merged = {"add": f"{y} + {s}", "mul": f"{s} * {y}",
                  "concat": f"torch.cat([{s}, {y}], 1)"}[module.op]
        if module.post is not None:
            post = self.attr((*path, "post") if owner is None else (*path, name, "post"),
                             module.post)
            merged = f"{post}({merged})"
        self.code.append(f"{out} = {merged}")
        return out

    def param(self, step, x, path) -> str:
        """A flat parameter (torchvision's class_token, pos_embedding, layer_scale)."""
        self.params.append((path, step))
        node = self.tree
        for part in path[:-1]:       # the block that holds it exists in the tree
            node = node.setdefault(part, {})
        p = _param_access(path)
        template = step[2]
        y = self.var()
        if isinstance(template, custom.ClassToken):
            self.code.append(f"{y} = torch.cat([{p}.expand({x}.shape[0], -1, -1), {x}], 1)")
        elif isinstance(template, custom.PositionEmbedding):
            self.code.append(f"{y} = {x} + {p}")
        elif isinstance(template, custom.LayerScale):
            self.code.append(f"{y} = {p} * {x}")
        else:  # a bug: graph.FLAT_KINDS and this list go together
            raise TypeError(f"cannot export a flat {type(template).__name__}")
        return y


def _attribute(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and not hasattr(nn.Module, name)


def _access(root: str, path) -> str:
    """self.layer1["0"]["conv1"]: attributes at the top, ModuleDict keys below;
    a parameter (the last part, after a ModuleDict) by attribute."""
    if not path:
        return root
    first, rest = path[0], path[1:]
    text = f"{root}.{first}" if _attribute(first) else f"getattr({root}, {first!r})"
    for part in rest:
        text += f"[{part!r}]"
    return text


def _param_access(path) -> str:
    owner = _access("self", path[:-1])
    name = path[-1]
    return f"{owner}.{name}" if _attribute(name) else f"getattr({owner}, {name!r})"


def _tree_source(node, indent: int) -> str:
    if not isinstance(node, dict):
        return constructor(node)
    pad = "    " * (indent + 1)
    items = [f"{pad}{key!r}: {_tree_source(value, indent + 1)}," for key, value in node.items()]
    return "nn.ModuleDict({\n" + "\n".join(items) + "\n" + "    " * indent + "})"


def _param_init(step) -> str:
    template, key = step[2], step[3]
    param = getattr(template, key)
    shape = tuple(param.shape)
    if isinstance(template, custom.LayerScale):
        return f"torch.full({shape}, {float(template.init_args[1])!r})"
    if isinstance(template, custom.PositionEmbedding):
        return f"torch.empty({shape}).normal_(std=0.02)"
    return f"torch.zeros({shape})"


def constructor(module: nn.Module) -> str:
    """Source that rebuilds a module: torch.nn modules from their extra_repr,
    containers recursively, archcalc's own modules from their init arguments."""
    if isinstance(module, nn.Sequential):
        return "nn.Sequential(" + ", ".join(constructor(m) for m in module) + ")"
    if isinstance(module, CUSTOM):
        args = getattr(module, "init_args", ())
        return f"{type(module).__name__}({', '.join(map(repr, args))})"
    if getattr(module, "export_refusal", None):
        raise SpecError(module.export_refusal)
    if type(module).__module__.startswith("torch.nn"):
        args = module.extra_repr()
        if isinstance(module, nn.MaxPool2d) and module.return_indices:
            args += ", return_indices=True"
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
            # extra_repr writes padding_mode=reflect, unquoted
            args = args.replace(f"padding_mode={module.padding_mode}",
                                f"padding_mode={module.padding_mode!r}")
        return f"nn.{type(module).__name__}({args})"
    raise TypeError(f"cannot export a {type(module).__name__}")  # a bug: every kind exports


def _identifier(text: str, capital=False) -> str:
    name = re.sub(r"\W+", "_", text).strip("_") or "layer"
    if capital:
        name = "".join(part[:1].upper() + part[1:] for part in name.split("_")) or "Model"
    if name[0].isdigit():
        name = ("M" if capital else "l") + name
    return name + "_" if keyword.iskeyword(name) else name


def to_onnx(model: SpecModel, input_shape, path: str) -> None:
    import torch

    from ..errors import require
    require("onnx", "onnx", "archcalc export --to onnx")
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, *input_shape),), path,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
