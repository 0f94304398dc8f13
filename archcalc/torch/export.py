"""Export a compiled spec: a readable, runnable PyTorch source file, or ONNX.

The Python file is written from the compiled module tree, so its module tree
and state_dict keys are the compiled model's (``layer1.0.conv1.weight``;
nested levels are nn.ModuleDict), and a forward written out line by line,
branches and shortcuts included, so a student sees the code their table
describes. It needs only torch; modules PyTorch lacks are copied in.

A spec is untrusted input, and the exported file is code someone will run, so
no spec string reaches it as code: the model's own attributes (the top level)
and every local and class name become identifiers only through a strict ASCII
sanitizer (unique, never a keyword, a builtin, torch's names or an nn.Module
attribute; digits-only names, an nn.Sequential's, stay as they are, written
as literals); names below the top level are ModuleDict keys written as
literals, so the state_dict keys are the model's; every other string (the model's name, its source and
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

from ..errors import SpecError, path_text
from ..layers import kinds
from .build import SpecModel, child

# archcalc's own modules (what torch.nn lacks), copied into a file that uses
# them: every kind's, from the registry, each once
CUSTOM = tuple(dict.fromkeys(cls for kind in kinds().values() for cls in kind.module_classes()))
# names the generated module defines or uses at its top level
MODULE_NAMES = {"torch", "nn", "F", "model", *(c.__name__ for c in CUSTOM)}
# attributes an nn.Module has (a layer attribute named `forward` or `training` would shadow it)
MODULE_ATTRIBUTES = set(dir(nn.Module)) | {"training"}
# keys an nn.ModuleDict cannot hold (its own methods: add_module refuses them)
DICT_ATTRIBUTES = set(dir(nn.ModuleDict)) | {"training"}


def to_python(model: SpecModel, class_name: str | None = None, source: str = "",
              cite: str = "", notes: str = "") -> str:
    """The model as a Python file whose module tree, and so whose state_dict
    keys, are the compiled model's. ``source``: the spec's file name; ``cite``
    and ``notes``: the spec's source and notes, quoted in the docstring."""
    writer = _Writer()
    out = writer.level(model, "x", ())
    if model.value_outputs:   # [model] outputs: a dict of the named values
        out = "{" + ", ".join(f"{ascii(name)}: {writer.kept[key]}"
                              for name, key in model.value_outputs) + "}"
    elif model.output_names:  # a spec with heads: a dict of its outputs, by name
        outputs = {**writer.outputs, "output": out}
        out = "{" + ", ".join(f"{ascii(name)}: {outputs[name]}"
                              for name in model.output_names) + "}"
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
    for name, node in writer.tree.items():
        text = _tree_source(node, 2)
        if _attribute(name):
            lines.append(f"        self.{name} = {text}")
        else:
            lines.append(f"        self.add_module({literal(name)}, {text})")
    for path, step in writer.params:
        owner = _access("self", path[:-1])
        lines.append(f"        {owner}.register_parameter({literal(path[-1])}, "
                     f"nn.Parameter({_param_init(step)}))")
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
        self.tree: dict = {}          # name -> module, or a dict (a ModuleDict) of them
        self.params: list = []        # (path, step) of flat parameters
        self.code: list[str] = []
        self.count = 0
        self.indices = _Names()       # locals holding max-pool indices
        self.names = _Names()         # the model's own attributes (the top level)
        self.outputs: dict[str, str] = {}   # output name -> the local holding it
        self.kept: dict[str, str] = {}      # a general graph: tape key -> the local holding it

    def top(self, name: str) -> str:
        """The top-level attribute for a name: itself when digits only (written
        as a literal), else a sanitized, unique identifier."""
        if name.isascii() and name.isdigit():
            return name
        return self.names(name)

    def var(self, hint="x"):
        self.count += 1
        return f"{hint}{self.count}"

    def attr(self, path, module) -> str:
        """Place a module at its path in the tree; the expression that reaches it."""
        path = (self.top(path[0]), *path[1:])
        node = self.tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):  # a bug: a leaf above another module
                raise TypeError(f"cannot export: {path_text(path)} sits below a module")
        node[path[-1]] = module
        return _access("self", path)

    def comment(self, path, what=""):
        self.code.append("# " + _comment(path_text(path) + what))

    def steps(self, owner, steps, x, path) -> str:
        """Code for a level's steps; ``path``: the owner's module path."""
        if steps is None:
            steps = [("module", name) for name, _ in owner.named_children()]
        for step in steps:
            kind, name = step[0], step[1]
            # a dotted name ("convs.0"): a container's member, placed at its path
            *outer, last = name.split(".") if isinstance(name, str) else [name]
            if kind == "module":
                x = self.node(last, child(owner, name), x, (*path, *outer))
            elif kind == "structure":
                x = self.structure(name, child(owner, name), x, path, owner)
            elif kind == "keep":      # a value a later `from` reads: its local stays
                self.kept[step[2]] = x
            elif kind == "read":
                self.code.append("# " + _comment(f"from {step[2]}"))
                x = self.kept[step[2]]
            elif kind == "join":
                x = self.join(last, child(owner, name), [self.kept[k] for k, _ in step[3]],
                              (*path, *outer))
            else:
                x = self.param(step, x, (*path, name))
        return x

    def join(self, name, module, xs: list, path) -> str:
        """A merge entry: its named inputs added, multiplied or concatenated,
        then its fused ops (the module's ``post``)."""
        full = (*path, name)
        self.comment(full, f": merge ({module.op}) of {len(xs)} named outputs")
        merged = f"torch.cat([{', '.join(xs)}], 1)" if module.op == "concat" else \
            {"add": " + ", "sub": " - "}.get(module.op, " * ").join(xs)
        if module.post is not None:
            merged = f"{self.attr((*full, 'post'), module.post)}({merged})"
        y = self.var()
        self.code.append(f"{y} = {merged}")
        return y

    def level(self, module, x, path) -> str:
        return self.steps(module, getattr(module, "_steps", None), x, path)

    def node(self, name, module, x, path) -> str:
        """Code for one child: the method its class names (build.py's
        ``export_as``); any other module is a leaf called on the tensor."""
        write = getattr(self, "node_" + getattr(type(module), "export_as", "leaf"))
        return write(module, x, (*path, name))

    def node_transformer(self, module, x, full) -> str:
        self.comment(full, ": a spatial transformer (localisation net -> theta; "
                           "affine grid and bilinear sampler)")
        theta = self.level(module.loc, x, (*full, "loc"))
        ref = self.attr((*full, "sampler"), module.sampler)
        y = self.var()
        self.code.append(f"{y} = {ref}({x}, {theta})")
        return y

    def node_head(self, module, x, full) -> str:
        self.comment(full, ": a head (reads this tensor; the next layer reads it too)"
                     if not module.leaf else f": the output {module.key!r}")
        y = self.level(module, x, full)
        if module.leaf:
            self.outputs[module.key] = y
        return x

    def node_sequence(self, module, x, full) -> str:
        self.comment(full)
        return self.level(module, x, full)

    def node_concat(self, module, x, full) -> str:   # a named level holding its parts
        return self.structure(full[-1], module, x, full, None)

    node_split = node_residual = node_concat

    def node_pool_with_indices(self, module, x, full) -> str:
        ref = self.attr(full, module.pool)
        y = self.var()
        self.code.append(f"{y}, indices_{self.indices(module.key)} = {ref}({x})")
        return y

    def node_unpool_from_tape(self, module, x, full) -> str:
        ref = self.attr(full, module.unpool)
        y = self.var()
        size = literal(tuple(int(d) for d in module.size)[1:])
        self.code.append(f"{y} = {ref}({x}, indices_{self.indices(module.key)}, "
                         f"output_size={size})")
        return y

    def node_leaf(self, module, x, full) -> str:
        ref = self.attr(full, module)
        y = self.var()
        self.code.append(f"{y} = {ref}({x})")
        return y

    def structure(self, name, module, x, path, owner) -> str:
        """A concat, split or merge. ``owner`` None: the module holds its parts and
        ``path`` is its own; else its parts sit on ``owner`` at ``path``."""
        write = getattr(self, "structure_" + type(module).export_as)
        return write(name, module, x, path, owner)

    def structure_concat(self, name, module, x, path, owner) -> str:
        holder = module if owner is None else owner
        where = path if owner is None else (*path, name)
        branches = module._branches or [[("module", n)] for n, _ in holder.named_children()]
        self.comment(where, f": {len(branches)} branches, concatenated along channels")
        return self.concatenated(holder, branches, [x] * len(branches), path)

    def structure_split(self, name, module, x, path, owner) -> str:
        holder = module if owner is None else owner
        where = path if owner is None else (*path, name)
        branches = module._branches or [[("module", n)] for n, _ in holder.named_children()]
        sizes = literal([int(c) for c in module.sizes])
        self.comment(where, f": the channels split {sizes}, one slice per branch, concatenated")
        parts = self.var("parts")
        self.code.append(f"{parts} = torch.split({x}, {sizes}, 1)")
        return self.concatenated(holder, branches, [f"{parts}[{i}]" for i in range(len(branches))],
                                 path)

    def concatenated(self, holder, branches, inputs, path) -> str:
        outs = [self.steps(holder, steps, xi, path) for steps, xi in zip(branches, inputs)]
        y = self.var()
        self.code.append(f"{y} = torch.cat([{', '.join(outs)}], 1)")
        return y

    def structure_residual(self, name, module, x, path, owner) -> str:
        holder = module if owner is None else owner
        where = path if owner is None else (*path, name)
        self.comment(where, f": residual ({module.op})")
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
        path = (self.top(path[0]), *path[1:])
        self.params.append((path, step))
        node = self.tree
        for part in path[:-1]:       # the block that holds it exists in the tree
            node = node.setdefault(part, {})
        p = _access("self", path, parameter=True)
        template = step[2]
        y = self.var()
        if not hasattr(template, "flat_forward"):   # a bug: a kind with flat = True says how
            raise TypeError(f"cannot export a flat {type(template).__name__}")
        self.code.append(f"{y} = {template.flat_forward(p, x)}")
        return y


def _attribute(name: str) -> bool:
    """A name written as an attribute (self.name): a plain ASCII identifier that
    is no keyword and no attribute of nn.Module."""
    return (re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None
            and not keyword.iskeyword(name) and not keyword.issoftkeyword(name)
            and name not in MODULE_ATTRIBUTES)


def _access(root: str, path, parameter: bool = False) -> str:
    """self.layer1["0"]["conv1"]: attributes at the top, ModuleDict keys below
    (string literals); a parameter, the last part, by getattr on its module."""
    if parameter:
        owner = _access(root, path[:-1])
        name = path[-1]
        return f"{owner}.{name}" if _attribute(name) else f"getattr({owner}, {literal(name)})"
    if not path:
        return root
    first, rest = path[0], path[1:]
    text = f"{root}.{first}" if _attribute(first) else f"getattr({root}, {literal(first)})"
    for part in rest:
        text += f"[{literal(part)}]"
    return text


def _tree_source(node, indent: int) -> str:
    if not isinstance(node, dict):
        return constructor(node)
    clash = sorted(k for k in node if k in DICT_ATTRIBUTES)
    if clash:
        raise SpecError(f"cannot export: a layer named {clash[0]!r} would shadow a method of "
                        "nn.ModuleDict in the exported file; rename the layer")
    pad = "    " * (indent + 1)
    items = [f"{pad}{literal(key)}: {_tree_source(value, indent + 1)},"
             for key, value in node.items()]
    return "nn.ModuleDict({\n" + "\n".join(items) + "\n" + "    " * indent + "})"


def _param_init(step) -> str:
    template, key = step[2], step[3]
    param = getattr(template, key)
    shape = literal(tuple(int(d) for d in param.shape))
    return template.flat_init(shape, literal)


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
