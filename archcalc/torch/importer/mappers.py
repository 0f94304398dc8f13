"""The mapping registries: leaf modules by type, functions and methods by target,
each mapper turning one call into the rows (kind, arguments) of the spec."""
from __future__ import annotations

import importlib
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from ...errors import SpecError
from ...layers.base import REQUIRED
from ...layers.from_torch import NoMapping, pair, require_chw, row, rows
from .probing import META_KEY, _TensorArg


# --------------------------------------------------------------------------
# the mapping registries: leaf modules by type, functions and methods by target


@dataclass
class Call:
    """One call to map: a leaf module's or a function's, with what was measured."""
    node: fx.Node
    module: nn.Module | None
    args: tuple                  # concrete, tensors as _TensorArg
    kwargs: dict
    x: tuple                     # the spec shape of the (first) tensor input, per sample
    x_torch: tuple               # its PyTorch shape, per sample
    y_torch: tuple | None        # the output's PyTorch shape, per sample
    state: dict = field(default_factory=dict)   # fx node -> the module's tensor it reads
    # fx node -> the names of the parameters and buffers a tensor argument
    # computed from the model's state alone reads
    held: dict = field(default_factory=dict)

    def source(self, value):
        """(module, calls, learned) for an argument computed from one module's
        tensors alone (the rotary table a ViT hands every block: its rope
        module, or the model for a table of traced constants), the calls it
        is computed from ((target, args, kwargs) as probed, the input's shape
        read included), and whether it reads a learned parameter; else None."""
        node = getattr(value, "node", None)
        got = self.held.get(node)
        owners = {name.rpartition(".")[0] for name in got} if got else set()
        if len(owners) != 1:
            return None
        gm = self.node.graph.owning_module
        learned = any(isinstance(_dotted(gm, name), nn.Parameter) for name in got)
        owner, root = owners.pop(), gm.meta.get("model", gm)   # fx keeps only the leaves
        return (root.get_submodule(owner) if owner else root), _computed_by(node), learned

    def parameter(self, value):
        """The module's own tensor an argument is (F.conv2d(x, self.weight)),
        else None (a computed tensor, a number)."""
        return self.state.get(getattr(value, "node", None))

    def learned(self, value) -> bool:
        """The argument is one of the module's learned parameters, not a buffer
        (a blur's fixed filter): only those are a layer's params."""
        return isinstance(self.parameter(value), nn.Parameter)

    def arg(self, names, index, name, default=REQUIRED):
        """Argument ``name`` (position ``index`` in the call), as called."""
        if name in self.kwargs:
            return self.kwargs[name]
        if index < len(self.args):
            return self.args[index]
        if default is REQUIRED:
            raise NoMapping(f"{names} without its {name}")
        return default


def _dotted(obj, name):
    for part in name.split("."):
        obj = getattr(obj, part, None)
    return obj


def _computed_by(node) -> list:
    """(target, args, kwargs), as probed, of every call a tensor is computed
    from, in the graph's order."""
    seen, stack = set(), [node]
    while stack:
        n = stack.pop()
        if n not in seen and n.op != "placeholder":
            seen.add(n)
            stack.extend(n.all_input_nodes)
    return [(n.target, *n.meta[META_KEY][1]) for n in node.graph.nodes
            if n in seen and n.op.startswith("call_") and META_KEY in n.meta]


def _single_output(out):
    """A dict, tuple or list of one tensor (torchvision's segmentation models
    return {"out": x}) is that tensor; several outputs are refused by name."""
    if isinstance(out, dict) and len(out) == 1:
        return next(iter(out.values()))
    if isinstance(out, (tuple, list)) and len(out) == 1:
        return out[0]
    if isinstance(out, dict) and len(out) > 1:
        raise SpecError(f"the model's forward returns {len(out)} outputs "
                        f"({', '.join(map(str, out))}); import needs one tensor (a "
                        "dict of several is not yet written as heads)")
    return out


MODULE_MAPPERS: dict = {}
FUNCTION_MAPPERS: dict = {}
METHOD_MAPPERS: dict = {}


def maps(*types):
    def register(fn):
        for t in types:
            MODULE_MAPPERS[t] = fn
        return fn
    return register


def maps_call(*targets, methods=()):
    def register(fn):
        for t in targets:
            FUNCTION_MAPPERS[t] = fn
        for m in methods:
            METHOD_MAPPERS[m] = fn
        return fn
    return register


def _mapper_for(m: nn.Module):
    """A module's mapper: by its exact type, or by the first mapped base class
    whose forward it keeps (a subclass with its own forward is traced through)."""
    cls = type(m)
    if cls in MODULE_MAPPERS:
        return MODULE_MAPPERS[cls]
    for base in cls.__mro__[1:]:
        if base in MODULE_MAPPERS:
            return MODULE_MAPPERS[base] if cls.forward is base.forward else None
    return None


def _register_kinds():
    """The kinds' own from_torch hooks (archcalc/layers/*), by the torch classes
    each names in torch_modules; mappers registered after these override them."""
    from ...layers import kinds
    for kind in kinds().values():
        for dotted in vars(type(kind)).get("torch_modules", ()):   # its own, not a base's
            where, _, name = dotted.rpartition(".")
            try:
                module = importlib.import_module(where)
            except ImportError:     # torchvision's classes, where the vision extra is missing
                continue
            MODULE_MAPPERS[getattr(module, name)] = kind.from_torch
        for dotted, owner in vars(type(kind)).get("torch_methods", {}).items():
            where, _, name = dotted.rpartition(".")
            where, _, cls = where.rpartition(".")
            try:
                module = importlib.import_module(where)
            except ImportError:
                continue
            METHOD_LEAVES[getattr(module, cls)] = (name, owner, kind.from_torch_method)
    _register_companions()


METHOD_LEAVES: dict = {}    # a module class -> (its method, the child holding its state, mapper)


def method_call(module, method, *args):
    """A module's method as one call (a kind's ``torch_methods``: Swin's block's
    shifted-window attention, ``_attn``), run as the module runs it; on meta
    stand-ins of its state where the input is on the meta device."""
    fn = getattr(type(module), method)
    state = dict(list(module.named_parameters()) + list(module.named_buffers()))
    if not (args and getattr(args[0], "is_meta", False)) or \
            all(t.is_meta for t in state.values()):
        return fn(module, *args)
    from torch.nn.utils.stateless import _reparametrize_module
    meta = {k: torch.empty_like(t, device="meta") for k, t in state.items()}
    with _reparametrize_module(module, meta):
        return fn(module, *args)


def map_method_call(c: "Call"):
    """The rows of a method called as one leaf: its kind's from_torch_method,
    and the path of the child module whose state those rows hold."""
    module, method = c.args[0], c.args[1]
    name, owner, mapper = METHOD_LEAVES[type(module)]
    if name != method:
        raise NoMapping(f"{type(module).__name__}.{method}")
    return mapper(c, module), owner


FUNCTION_MAPPERS[method_call] = lambda c: map_method_call(c)[0]


def _register_companions():
    """The functional hooks beside the kinds: each companion module
    (archcalc/layers/<family>_torch.py) may map calls by target (FUNCTIONS)
    and Tensor methods by name (METHODS) to its kinds."""
    import pkgutil
    from ... import layers
    for info in pkgutil.iter_modules(layers.__path__):
        if info.name.endswith("_torch"):
            companion = importlib.import_module(f"{layers.__name__}.{info.name}")
            FUNCTION_MAPPERS.update(getattr(companion, "FUNCTIONS", {}))
            METHOD_MAPPERS.update(getattr(companion, "METHODS", {}))


_register_kinds()


@maps(nn.Identity)
def _identity(c, m):
    return []


@dataclass
class PoolIndices:
    """A max pool that also gives its indices (for a max unpool): its row, and
    where the indices go: the call's second output (values, indices), or
    archcalc's own tape (PoolWithIndices: (id of the tape, its key))."""
    rows: list
    tape: tuple | None = None


@dataclass
class Unpool:
    """A max unpool: its row (its `of` set by the builder, from the pool whose
    indices it reads), those indices (a _TensorArg, or a tape's (id, key)) and
    the output_size it was called with."""
    rows: list
    indices: object
    output_size: object = None


@maps(nn.MaxPool2d)
def _maxpool(c, m: nn.MaxPool2d):
    require_chw(c, "MaxPool2d")
    rows = row("maxpool", kernel=pair(m.kernel_size), stride=pair(m.stride or m.kernel_size),
               padding=pair(m.padding), dilation=pair(m.dilation), ceil_mode=m.ceil_mode)
    return PoolIndices(rows) if m.return_indices else rows


def _unpool_row(kernel, stride, padding):
    return row("max_unpool", kernel=pair(kernel), stride=pair(stride or kernel),
               padding=pair(padding))


@maps(nn.MaxUnpool2d)
def _max_unpool(c, m: nn.MaxUnpool2d):
    require_chw(c, "MaxUnpool2d")
    return Unpool(_unpool_row(m.kernel_size, m.stride, m.padding),
                  c.arg("MaxUnpool2d", 1, "indices"),
                  c.arg("MaxUnpool2d", 2, "output_size", None))


@maps(nn.MultiheadAttention)
def _attention(c, m: nn.MultiheadAttention):
    if len(c.x) != 2:
        raise NoMapping("MultiheadAttention on an input that is not tokens")
    tensors = [a for a in list(c.args[:3]) + [c.kwargs.get(k) for k in ("query", "key", "value")]
               if isinstance(a, _TensorArg)]
    if len({t.node for t in tensors}) != 1:
        raise NoMapping("MultiheadAttention with different query, key and value "
                         "(archcalc's attention is self-attention)")
    extra = {k: v for k, v in c.kwargs.items() if k not in ("query", "key", "value",
                                                              "need_weights")}
    if len(c.args) > 3 or any(v is not None for v in extra.values()):
        raise NoMapping("MultiheadAttention with a mask or other arguments")
    if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None or \
            m.add_zero_attn:
        raise NoMapping("MultiheadAttention other than batch_first self-attention")
    return row("attention", heads=m.num_heads, bias=m.in_proj_bias is not None,
               dropout=float(m.dropout))


@maps(nn.Flatten, nn.Unflatten)     # nn.ChannelShuffle: the kind's own from_torch
def _layout_module(c, m):
    return LAYOUT


LAYOUT = object()   # a reshape: evaluated on an index tensor (see _classify_layout)


def _register_own():
    """archcalc's own modules that only the importer reads (a compiled spec's
    max pool whose indices an unpool reads): they map back to its rows."""
    from ..build import PoolWithIndices, UnpoolFromTape

    @maps(PoolWithIndices)
    def _own_pool_indices(c, m):     # a compiled spec's max pool that an unpool names
        found = _maxpool(c, m.pool)
        return PoolIndices(found.rows if isinstance(found, PoolIndices) else found,
                           (id(m.tape), m.key))

    @maps(UnpoolFromTape)
    def _own_unpool(c, m):
        u = m.unpool
        return Unpool(_unpool_row(u.kernel_size, u.stride, u.padding), (id(m.tape), m.key),
                      m.size)


def _constant(t: torch.Tensor, default):
    """A tensor's one value when every element holds it (an init), else the default."""
    if t.device.type == "meta" or t.numel() == 0:
        return default
    with torch.no_grad():
        first = float(t.flatten()[0])
        same = bool((t == first).all())
    return float(f"{first:.7g}") if same else default   # float32's digits, not double's


# -- functions and methods ---------------------------------------------------


def _fn(kind, **fixed):
    return lambda c: row(kind, **fixed)


def _fn_inplace(kind):
    """F.relu(x, inplace=False) and its kin: in place only when the call says so
    (PyTorch's default is off; a row's own default may be on, as torchvision's)."""
    return lambda c: row(kind, inplace=bool(c.arg(kind, 1, "inplace", False)))


# torch.relu and x.relu() return a new tensor, torch.relu_ and x.relu_() write in place
for _target, _inplace in ((torch.relu, False), (torch.relu_, True), (F.relu_, True)):
    FUNCTION_MAPPERS[_target] = _fn("relu", inplace=_inplace)
FUNCTION_MAPPERS[F.relu] = _fn_inplace("relu")
for _name, _kind in (("relu", "relu"), ("relu_", "relu"), ("sigmoid", "sigmoid"),
                     ("sigmoid_", "sigmoid"), ("tanh", "tanh"), ("tanh_", "tanh")):
    METHOD_MAPPERS[_name] = _fn(_kind, **({"inplace": _name == "relu_"} if _kind == "relu"
                                          else {}))
for _target, _kind in ((F.relu6, "relu6"), (F.silu, "silu"), (F.hardswish, "hardswish"),
                       (F.hardsigmoid, "hardsigmoid"), (F.mish, "mish")):
    FUNCTION_MAPPERS[_target] = _fn_inplace(_kind)
for _target, _kind in ((torch.sigmoid, "sigmoid"), (F.sigmoid, "sigmoid"), (torch.tanh, "tanh"),
                       (F.tanh, "tanh")):
    FUNCTION_MAPPERS[_target] = _fn(_kind)
# torch.export's in-place overloads (export_trace keeps them as aten calls)
for _op, _kind in ((torch.ops.aten.silu_.default, "silu"),
                   (torch.ops.aten.hardswish_.default, "hardswish"),
                   (torch.ops.aten.hardsigmoid_.default, "hardsigmoid")):
    FUNCTION_MAPPERS[_op] = _fn(_kind, inplace=True)


@maps_call(F.gelu, methods=())
def _f_gelu(c):
    return row("gelu", approximate=c.arg("gelu", 1, "approximate", "none"))


@maps_call(F.leaky_relu)
def _f_leaky(c):
    return row("leaky_relu", negative_slope=float(c.arg("leaky_relu", 1, "negative_slope", 0.01)))


@maps_call(F.elu)
def _f_elu(c):
    return row("elu", alpha=float(c.arg("elu", 1, "alpha", 1.0)))


@maps_call(F.hardtanh)
def _f_hardtanh(c):
    low, high = c.arg("hardtanh", 1, "min_val", -1.0), c.arg("hardtanh", 2, "max_val", 1.0)
    if (low, high) != (0.0, 6.0):
        raise NoMapping(f"hardtanh({low}, {high})")
    return row("relu6")


@maps_call(F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices)
def _f_maxpool(c):
    name = "max_pool2d"
    require_chw(c, name)
    kernel = c.arg(name, 1, "kernel_size")
    stride = c.arg(name, 2, "stride", None) or kernel
    rows = row("maxpool", kernel=pair(kernel), stride=pair(stride),
               padding=pair(c.arg(name, 3, "padding", 0)),
               dilation=pair(c.arg(name, 4, "dilation", 1)),
               ceil_mode=bool(c.arg(name, 5, "ceil_mode", False)))
    # F.max_pool2d(..., return_indices=True) is traced as max_pool2d_with_indices
    if c.node.target is F.max_pool2d_with_indices or c.arg(name, 6, "return_indices", False):
        return PoolIndices(rows)
    return rows


@maps_call(F.max_unpool2d)
def _f_max_unpool(c):
    name = "max_unpool2d"
    require_chw(c, name)
    return Unpool(_unpool_row(c.arg(name, 2, "kernel_size"), c.arg(name, 3, "stride", None),
                              c.arg(name, 4, "padding", 0)),
                  c.arg(name, 1, "indices"), c.arg(name, 5, "output_size", None))


UNPOOLS = (_max_unpool, _f_max_unpool)    # the mappers of calls that read a pool's indices


@maps_call(F.avg_pool2d, torch._C._nn.avg_pool2d)
def _f_avgpool(c):
    name = "avg_pool2d"
    require_chw(c, name)
    kernel = c.arg(name, 1, "kernel_size")
    stride = c.arg(name, 2, "stride", None) or kernel
    return row("avgpool", kernel=pair(kernel), stride=pair(stride),
               padding=pair(c.arg(name, 3, "padding", 0)),
               ceil_mode=bool(c.arg(name, 4, "ceil_mode", False)),
               count_include_pad=bool(c.arg(name, 5, "count_include_pad", True)),
               divisor_override=c.arg(name, 6, "divisor_override", None))


@maps_call(torch.mean, methods=("mean",))
def _f_mean(c):
    dims = c.arg("mean", 1, "dim", None)
    keep = c.arg("mean", 2, "keepdim", False)
    given = dims if isinstance(dims, (list, tuple)) else [dims]
    if len(c.x) == 2 and len(c.x_torch) == 2 and dims is not None and not keep and \
            [d % 3 for d in given] == [1]:
        return row("token_pool", mode="mean")      # ResMLP's mean of the tokens
    if len(c.x) == 2 and len(c.x_torch) == 3 and dims is not None and not keep and \
            sorted(d % 4 for d in given) == [1, 2]:
        return row("token_pool", mode="mean")      # a channels-last map's (timm's NHWC head)
    dims = tuple(sorted(d % 4 for d in given)) if dims is not None else None
    if len(c.x) != 3 or dims != (2, 3):
        raise NoMapping(f"mean over {dims} of a {list(c.x_torch)} input")
    return row("global_avgpool") + ([] if keep else row("flatten"))


LAYOUT_FUNCTIONS = {torch.flatten, torch.reshape, torch.permute, torch.transpose,
                    torch.squeeze, torch.unsqueeze, torch.channel_shuffle,
                    torch.nn.functional.channel_shuffle, operator.getitem}
LAYOUT_METHODS = {"flatten", "view", "reshape", "permute", "transpose", "contiguous", "squeeze",
                  "unsqueeze", "view_as", "reshape_as", "__getitem__"}
# reshapes that stay aten calls in torch.export's graph (x[:, 0], x[..., 1:])
LAYOUT_FUNCTIONS |= {torch.ops.aten.select.int, torch.ops.aten.slice.Tensor,
                     torch.ops.aten.unflatten.int, torch.ops.aten.t.default,
                     torch.ops.aten.narrow.default}
for _target in LAYOUT_FUNCTIONS:
    FUNCTION_MAPPERS[_target] = lambda c: LAYOUT
for _name in LAYOUT_METHODS:
    METHOD_MAPPERS[_name] = lambda c: LAYOUT
for _name in ("clone", "detach"):
    METHOD_MAPPERS[_name] = lambda c: []
FUNCTION_MAPPERS[torch.clone] = lambda c: []


@maps_call(methods=("to", "float"))
def _f_cast(c):
    """x.to(dtype) or x.float(): the same values in another dtype (or on
    another device), no arithmetic archcalc counts; refused where it copies
    into another layout (memory_format)."""
    if c.kwargs.get("memory_format") is not None:
        raise NoMapping("to() with a memory_format")
    return []


@maps_call(operator.truediv, torch.div, torch.true_divide, methods=("div", "true_divide"))
def _f_divide(c):
    """x / a number: a multiply by its reciprocal (the same count: one
    operation per element); a division by a tensor has no kind."""
    divisor = c.arg("div", 1, "other")
    if not isinstance(c.args[0], _TensorArg) or isinstance(divisor, bool) or \
            not isinstance(divisor, (int, float)) or divisor == 0 or \
            c.kwargs.get("rounding_mode") is not None:
        raise NoMapping("a division other than a tensor by a non-zero number")
    return row("multiply", by=1.0 / float(divisor), inplace=False)

ADD = (operator.add, operator.iadd, torch.add)
MUL = (operator.mul, operator.imul, torch.mul)
SUB = (operator.sub, operator.isub, torch.sub, torch.subtract)
CAT = (torch.cat, torch.concat, torch.concatenate)
SPLIT = (torch.chunk, torch.split, torch.tensor_split)


_register_own()
