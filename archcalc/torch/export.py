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

from . import lecture_modules as lecture
from . import modules as custom
from .build import (ConcatBranches, PoolWithIndices, Residual, SpecModel, SpecSequential,
                    SplitBranches, UnpoolFromTape)

CUSTOM = (custom.PartialConv2d, custom.Subsample, custom.LocallyConnected2d,
          custom.SqueezeExcitation, custom.Maxout, custom.PadShortcut, custom.LayerNorm2d,
          custom.LayerScale, custom.StochasticDepth)
CUSTOM += (lecture.Multiply, lecture.Reshape, lecture.SpatialPyramidPool,  # issue 12's kinds
           lecture.DropConnectLinear)


def to_python(model: SpecModel, class_name: str | None = None, source: str = "") -> str:
    writer = _Writer()
    out = writer.sequence(model, "x", ())
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
    lines += [f"        self.{name} = {ctor}" for name, ctor in writer.attrs]
    lines += ["", "    def forward(self, x):"]
    lines += [f"        {line}" for line in writer.code]
    lines += [f"        return {out}", "", "",
              'if __name__ == "__main__":',
              f"    model = {class_name}()",
              "    print(sum(p.numel() for p in model.parameters()))", ""]
    return "\n".join(lines)


class _Writer:
    def __init__(self):
        self.attrs: list[tuple[str, str]] = []
        self.code: list[str] = []
        self.count = 0

    def var(self, hint="x"):
        self.count += 1
        return f"{hint}{self.count}"

    def attr(self, path, module) -> str:
        name = _identifier("_".join(path))
        self.attrs.append((name, constructor(module)))
        return name

    def node(self, name, module, x, path) -> str:
        path = (*path, name)
        if isinstance(module, SpecSequential):
            self.code.append(f"# {' > '.join(path)}")
            return self.sequence(module, x, path)
        if isinstance(module, ConcatBranches):
            self.code.append(f"# {' > '.join(path)}: {len(list(module.children()))} branches, "
                             "concatenated along channels")
            outs = [self.sequence(branch, x, (*path, bname))
                    for bname, branch in module.named_children()]
            y = self.var()
            self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
            return y
        if isinstance(module, SplitBranches):
            self.code.append(f"# {' > '.join(path)}: the channels split {module.sizes}, "
                             "one slice per branch, concatenated")
            parts = self.var("parts")
            self.code.append(f"{parts} = torch.split({x}, {module.sizes}, 1)")
            outs = [self.sequence(branch, f"{parts}[{i}]", (*path, bname))
                    for i, (bname, branch) in enumerate(module.named_children())]
            y = self.var()
            self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
            return y
        if isinstance(module, Residual):
            self.code.append(f"# {' > '.join(path)}: residual ({module.op})")
            y = x
            for bname in module.body_names:
                y = self.node(bname, getattr(module, bname), y, path)
            s = x if module.shortcut is None else self.node("shortcut", module.shortcut, x, path)
            out = self.var()
            merged = {"add": f"{y} + {s}", "mul": f"{s} * {y}",
                      "concat": f"torch.cat([{s}, {y}], 1)"}[module.op]
            if module.post is not None:
                post = self.attr((*path, "post"), module.post)
                merged = f"self.{post}({merged})"
            self.code.append(f"{out} = {merged}")
            return out
        if isinstance(module, PoolWithIndices):
            attr = self.attr(path, module.pool)
            y = self.var()
            self.code.append(f"{y}, indices_{_identifier(module.key)} = self.{attr}({x})")
            return y
        if isinstance(module, UnpoolFromTape):
            attr = self.attr(path, module.unpool)
            y = self.var()
            self.code.append(f"{y} = self.{attr}({x}, indices_{_identifier(module.key)}, "
                             f"output_size={tuple(module.size)[1:]})")
            return y
        attr = self.attr(path, module)
        y = self.var()
        self.code.append(f"{y} = self.{attr}({x})")
        return y

    def sequence(self, module, x, path) -> str:
        for name, child in module.named_children():
            x = self.node(name, child, x, path)
        return x


def constructor(module: nn.Module) -> str:
    """Source that rebuilds a module: torch.nn modules from their extra_repr,
    containers recursively, archcalc's own modules from their init arguments."""
    if isinstance(module, nn.Sequential):
        return "nn.Sequential(" + ", ".join(constructor(m) for m in module) + ")"
    if isinstance(module, CUSTOM):
        return f"{type(module).__name__}({', '.join(map(repr, module.init_args))})"
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
