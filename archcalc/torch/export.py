"""Export a compiled spec: a readable, runnable PyTorch source file, or ONNX.

The Python file is written from the compiled module tree: one attribute per
table row (named by its spec path), and a forward written out line by line,
branches and shortcuts included, so a student sees the code their table
describes. It needs only torch; modules PyTorch lacks are copied in.

A spec is untrusted input, and the exported file is code someone will run, so
no spec string reaches it as code: names become identifiers only through a
strict ASCII sanitizer (unique, never a keyword, a builtin, torch's names or an
nn.Module attribute); every other string (the model's name, its source and
notes, the spec's file name) is a literal written by ``ascii()`` (``repr()``
with non-ASCII escaped), or a comment of printable ASCII; module arguments are
parsed back from PyTorch's repr and re-emitted as literals. The result is
checked with ``ast`` before it is returned.
"""
from __future__ import annotations

import ast
import builtins
import inspect
import keyword
import math
import re

from torch import nn

from . import lecture_modules as lecture
from . import modules as custom
from ..errors import path_text
from .build import (ConcatBranches, PoolWithIndices, Residual, SpecModel, SpecSequential,
                    SplitBranches, UnpoolFromTape)

CUSTOM = (custom.PartialConv2d, custom.Subsample, custom.LocallyConnected2d,
          custom.SqueezeExcitation, custom.Maxout, custom.PadShortcut, custom.LayerNorm2d,
          custom.LayerScale, custom.StochasticDepth, custom.MapToTokens, custom.ClassToken,
          custom.PositionEmbedding, custom.SelfAttention, custom.TokenPool)
CUSTOM += (lecture.Multiply, lecture.Reshape, lecture.SpatialPyramidPool,  # issue 12's kinds
           lecture.DropConnectLinear)
# names the generated module defines or uses at its top level
MODULE_NAMES = {"torch", "nn", "F", "model", *(c.__name__ for c in CUSTOM)}
# attributes an nn.Module has (a layer attribute named `forward` or `training` would shadow it)
MODULE_ATTRIBUTES = set(dir(nn.Module)) | {"training"}


def to_python(model: SpecModel, class_name: str | None = None, source: str = "",
              cite: str = "", notes: str = "") -> str:
    """The model as a Python file. ``source``: the spec's file name; ``cite``
    and ``notes``: the spec's source and notes, quoted in the docstring."""
    writer = _Writer()
    out = writer.sequence(model, "x", ())
    class_name = _class_name(class_name or model.spec_name)
    used = {type(m) for m in model.modules() if isinstance(m, CUSTOM)}
    doc = f"{model.spec_name}, exported by archcalc" + (f" from {source}" if source else "") + "."
    if cite:
        doc += f"\n\nSource: {cite}"
    if notes:
        doc += f"\n\nNotes: {notes}"
    doc += "\n\nRun it: python this_file.py (builds the model, prints its parameter count).\n"
    lines = [_docstring(doc),
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
    text = "\n".join(lines)
    _verify(text, class_name, [c.__name__ for c in CUSTOM if c in used])
    return text


def _verify(text: str, class_name: str, customs: list) -> None:
    """The file's top level is exactly: the docstring, the three imports, the
    copied modules, the model class and the __main__ block. A failure is a bug
    in this module, never something a spec can cause."""
    tree = ast.parse(text)
    body = tree.body
    expected = 1 + 3 + len(customs) + 1 + 1
    ok = (len(body) == expected
          and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
          and isinstance(body[0].value.value, str)
          and [ast.unparse(n) for n in body[1:4]] == [
              "import torch", "from torch import nn", "from torch.nn import functional as F"]
          and [n.name for n in body[4:-1] if isinstance(n, ast.ClassDef)] == [*customs, class_name]
          and isinstance(body[-1], ast.If)
          and ast.unparse(body[-1].test) == "__name__ == '__main__'")
    if not ok:  # pragma: no cover - a bug
        raise AssertionError("the exported file does not have the expected structure")


class _Names:
    """Unique identifiers made from spec strings."""

    def __init__(self, reserved=()):
        self.taken = set(reserved)
        self.given: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        if text in self.given:
            return self.given[text]
        base = identifier(text)
        name, n = base, 1
        while name in self.taken or name in MODULE_ATTRIBUTES:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        self.given[text] = name
        return name


def identifier(text: str, capital: bool = False) -> str:
    """An ASCII identifier from any text: letters, digits and underscores only,
    starting with a letter, never a keyword (soft ones included)."""
    name = re.sub(r"[^0-9A-Za-z]+", "_", str(text)).strip("_")
    if capital:
        name = "".join(part[:1].upper() + part[1:] for part in name.split("_"))
    if not name:
        name = "Model" if capital else "layer"
    if not name[0].isalpha():
        name = ("M" if capital else "l") + name
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        name += "_"
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name), name
    return name


def _class_name(text: str) -> str:
    name = identifier(text, capital=True)
    if name in MODULE_NAMES or hasattr(builtins, name):
        name += "Model"
    return name


def _comment(text: str) -> str:
    """Comment text: as it is when printable ASCII, else its escaped literal."""
    return text if all(" " <= c <= "~" for c in text) else ascii(text)


def _docstring(text: str) -> str:
    """A triple-quoted docstring when the text is plain (printable ASCII, no
    quotes or backslashes), else a literal written by ascii()."""
    plain = all(" " <= c <= "~" or c == "\n" for c in text) and not set('"\\') & set(text)
    return f'"""{text}"""' if plain else ascii(text)


class _Writer:
    def __init__(self):
        self.attrs: list[tuple[str, str]] = []
        self.code: list[str] = []
        self.count = 0
        self.names = _Names()           # attributes of self
        self.indices = _Names()         # locals holding max-pool indices

    def var(self, hint="x"):
        self.count += 1
        return f"{hint}{self.count}"

    def attr(self, path, module) -> str:
        name = self.names("_".join(path))
        self.attrs.append((name, constructor(module)))
        return name

    def comment(self, path, what=""):
        self.code.append("# " + _comment(path_text(path) + what))

    def node(self, name, module, x, path) -> str:
        path = (*path, name)
        if isinstance(module, SpecSequential):
            self.comment(path)
            return self.sequence(module, x, path)
        if isinstance(module, ConcatBranches):
            self.comment(path, f": {len(list(module.children()))} branches, "
                               "concatenated along channels")
            outs = [self.sequence(branch, x, (*path, bname))
                    for bname, branch in module.named_children()]
            y = self.var()
            self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
            return y
        if isinstance(module, SplitBranches):
            self.code.append(f"# {path_text(path)}: the channels split {module.sizes}, "
                             "one slice per branch, concatenated")
            parts = self.var("parts")
            self.code.append(f"{parts} = torch.split({x}, {module.sizes}, 1)")
            outs = [self.sequence(branch, f"{parts}[{i}]", (*path, bname))
                    for i, (bname, branch) in enumerate(module.named_children())]
            y = self.var()
            self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
            return y
        if isinstance(module, Residual):
            self.comment(path, f": residual ({module.op})")
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
            self.code.append(f"{y}, indices_{self.indices(module.key)} = self.{attr}({x})")
            return y
        if isinstance(module, UnpoolFromTape):
            attr = self.attr(path, module.unpool)
            y = self.var()
            size = literal(tuple(int(d) for d in module.size)[1:])
            self.code.append(f"{y} = self.{attr}({x}, indices_{self.indices(module.key)}, "
                             f"output_size={size})")
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
    """Source that rebuilds a module: torch.nn modules from their extra_repr
    (parsed, and every argument re-emitted as a literal), containers
    recursively, archcalc's own modules from their init arguments."""
    if isinstance(module, nn.Sequential):
        return "nn.Sequential(" + ", ".join(constructor(m) for m in module) + ")"
    if isinstance(module, CUSTOM):
        return f"{type(module).__name__}({', '.join(map(literal, module.init_args))})"
    cls = type(module)
    if cls.__module__.startswith("torch.nn") and getattr(nn, cls.__name__, None) is cls:
        args, kwargs = _parse_arguments(module.extra_repr(), cls.__name__)
        if isinstance(module, nn.MaxPool2d) and module.return_indices:
            kwargs["return_indices"] = True
        text = [literal(a) for a in args] + [f"{k}={literal(v)}" for k, v in kwargs.items()]
        return f"nn.{cls.__name__}({', '.join(text)})"
    raise TypeError(f"cannot export a {cls.__name__}")  # a bug: every kind exports


def _parse_arguments(text: str, what: str):
    """PyTorch's extra_repr as (args, kwargs) of plain values. Bare names are
    strings it printed without quotes (padding=same) or inf / nan."""
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise TypeError(f"cannot export {what}: unreadable arguments {text!r}") from None
    if not isinstance(call, ast.Call):  # pragma: no cover - a bug
        raise TypeError(f"cannot export {what}: {text!r}")
    args = [_value(a, what) for a in call.args]
    kwargs = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise TypeError(f"cannot export {what}: {text!r}")
        kwargs[kw.arg] = _value(kw.value, what)
    return args, kwargs


def _value(node, what):
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool,
                                                                  type(None))):
        return node.value
    if isinstance(node, ast.Name):
        return {"inf": math.inf, "nan": math.nan}.get(node.id, node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, what)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_value(e, what) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    raise TypeError(f"cannot export {what}: argument {ast.unparse(node)!r} is not a plain value")


def literal(value) -> str:
    """Python source for a plain value: numbers, strings (ascii()), tuples, lists."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return repr(int(value))
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({ascii(repr(value))})"
    if isinstance(value, str):
        return ascii(value)
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    raise TypeError(f"cannot export the value {type(value).__name__}")  # a bug


def to_onnx(model: SpecModel, input_shape, path: str) -> None:
    import torch

    from ..errors import require
    require("onnx", "onnx", "archcalc export --to onnx")
    model.eval()
    torch.onnx.export(model, (torch.zeros(1, *input_shape),), path,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
