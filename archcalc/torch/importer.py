"""Import a PyTorch model as a spec: `archcalc import MODULE:FACTORY`.

The model is traced with torch.fx (symbolic trace: known modules stay
leaves, the rest is traced through) and run once on the meta device to
measure every tensor's shape (a forward fx cannot trace, one that loops or
branches on a shape, is exported with torch.export instead and its graph
regrouped into the same calls: archcalc.torch.export_trace). Each call is
mapped to a kind through one of two registries (leaf modules by type,
functions and methods by target); reshapes are evaluated on an index tensor
and recognized as what they do (flatten, tokens, to_map, channel_shuffle, a
token pick), whatever chain of view/permute/transpose writes them. An
operation with no mapping is never counted as zero: the import fails naming
each one with its module path and count, or keeps it as an `opaque` row with
`allow_opaque`.

The dataflow graph is folded back into the spec's structures: a fork and
the node where its paths meet become a residual (add), a gate (mul), a concat
or a dense merge (DenseNet's running concatenation), a split/cat pair
becomes a split; a max pool's indices are followed into the max unpools that
read them (each unpool's `of` names the pool's row). Rows are named and
nested by the module paths, so the spec's built model has the original's
state_dict keys; rows of stateless modules (a ReLU called three times) get
unique names of their own. The writer (archcalc.spec.writer) then folds
repeated structure into blocks.

Importing runs the user's Python (the module they name); the spec it writes
never runs anything.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import inspect
import math
import operator
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn
from torch.nn import functional as F

from ..errors import SpecError
from ..graph import NAME, RESERVED
from ..layers import lookup
from ..layers.activation import ACTIVATIONS
from ..layers.base import REQUIRED


class ImportFailure(Exception):
    """The user's own code raised (exit status 1, one line naming the factory)."""


class Unsupported(Exception):
    """Operations the import cannot map, each with its module path and count
    (exit status 1: the model is fine, archcalc lacks kinds for it)."""

    def __init__(self, found: dict, what: str):
        self.found = found
        by_op: dict = {}
        for (op, path), count in found.items():
            by_op.setdefault(op, []).append((path or "the model's forward", count))
        parts = []
        for op, places in sorted(by_op.items(), key=lambda kv: -sum(c for _, c in kv[1])):
            calls = sum(c for _, c in places)
            where = ", ".join(f"{p}" + (f" (x{c})" if c > 1 else "") for p, c in places[:3])
            more = f" and {len(places) - 3} more" if len(places) > 3 else ""
            parts.append(f"{op}: {calls} call{'s' if calls > 1 else ''}, at {where}{more}")
        shown = "; ".join(parts[:8]) + (f"; and {len(parts) - 8} more" if len(parts) > 8 else "")
        total = sum(found.values())
        super().__init__(f"{what}: {total} operation(s) have no archcalc kind: {shown}. "
                         "--allow-opaque keeps them as opaque rows (shape and params "
                         "measured, MACs unknown)")


# --------------------------------------------------------------------------
# the target: MODULE:FACTORY or path/to/file.py:Factory


def load_target(target: str, kwargs_text: str | None = None):
    """(the nn.Module, its label): import the module, call the factory with
    the JSON keyword arguments. Bad input raises SpecError (exit 2); the
    user's code raising raises ImportFailure (exit 1)."""
    if not isinstance(target, str) or ":" not in target:
        raise SpecError(f"the model is MODULE:FACTORY (torchvision.models:resnet50) or "
                        f"FILE.py:NAME. Received: {target!r}")
    where, _, attr = target.rpartition(":")
    if not where or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise SpecError(f"the model is MODULE:FACTORY, FACTORY a Python name. "
                        f"Received: {target!r}")
    kwargs = parse_kwargs(kwargs_text)
    module = _import(where, target)
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            names = [n for n in dir(factory) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise SpecError(f"{where} has no {part!r}{hint}")
        factory = getattr(factory, part)
    if isinstance(factory, nn.Module):
        if kwargs:
            raise SpecError(f"{target} is a module instance, not a factory: "
                            "it takes no --kwargs")
        return factory, target
    if not callable(factory):
        raise SpecError(f"{target} is a {type(factory).__name__}, not a factory or an "
                        "nn.Module class")
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        raise SpecError(f"{target} does not take these --kwargs: {e}") from None
    except ValueError:
        pass  # no signature to check (a builtin): let the call tell
    try:
        with _quiet_warnings():
            model = factory(**kwargs)
    except TypeError as e:
        if kwargs and re.search(r"unexpected keyword argument|got multiple values", str(e)):
            raise SpecError(f"{target} does not take these --kwargs: {_first_line(e)}") \
                from None
        raise ImportFailure(f"{target}({_kwargs_text(kwargs)}) raised "
                            f"TypeError: {_first_line(e)}") from None
    except Exception as e:  # the user's code: one line naming the factory
        raise ImportFailure(f"{target}({_kwargs_text(kwargs)}) raised "
                            f"{type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise SpecError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    return model, target


def parse_kwargs(text: str | None) -> dict:
    if text is None or not text.strip():
        return {}
    from ..inputs import parse_json   # bounded: size, depth, digits, finite numbers
    try:
        value = parse_json(text, "--kwargs")
    except SpecError as e:
        if "ARCHCALC_" in e.message:   # a limit's message says how to raise it
            raise
        raise SpecError(f"--kwargs takes a JSON object such as '{{\"num_classes\": 10}}'; "
                        f"{e.message.removeprefix('--kwargs: ')}") from None
    if not isinstance(value, dict):
        raise SpecError(f"--kwargs takes a JSON object such as '{{\"num_classes\": 10}}'. "
                        f"Received a JSON {type(value).__name__}")
    bad = [k for k in value if not k.isidentifier()]
    if bad:
        raise SpecError(f"--kwargs: {bad[0][:40]!r} is not a keyword argument name")
    return value


def _import(where: str, target: str):
    if where.endswith(".py") or os.sep in where or "/" in where:
        from .. import limits
        from ..inputs import check_input_file   # a regular file of bounded size
        check_input_file(where, "a Python file", limits.MAX_SOURCE_BYTES)
        name = "archcalc_import_" + re.sub(r"\W", "_", os.path.splitext(
            os.path.basename(where))[0])
        spec = importlib.util.spec_from_file_location(name, where)
        if spec is None or spec.loader is None:
            raise SpecError(f"{where} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        folder = os.path.dirname(os.path.abspath(where))
        sys.path.insert(0, folder)   # its own imports, as `python FILE` would find them
        try:
            sys.modules[name] = module
            with _quiet_warnings():
                spec.loader.exec_module(module)
        except SyntaxError as e:
            raise SpecError(f"{where}: invalid Python (line {e.lineno}): {e.msg}") from None
        except Exception as e:
            raise ImportFailure(f"running {where} raised {type(e).__name__}: "
                                f"{_first_line(e)}") from None
        finally:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        return module
    if not all(p.isidentifier() for p in where.split(".")):
        raise SpecError(f"{where!r} is not a module name (a.b.c) or a .py file")
    try:
        with _quiet_warnings():
            return importlib.import_module(where)
    except ModuleNotFoundError as e:
        if e.name and (where == e.name or where.startswith(e.name + ".")):
            raise SpecError(f"no module named {e.name!r} (in {target})") from None
        raise ImportFailure(f"importing {where} raised ModuleNotFoundError: "
                            f"{_first_line(e)}") from None
    except Exception as e:
        raise ImportFailure(f"importing {where} raised {type(e).__name__}: "
                            f"{_first_line(e)}") from None


@contextlib.contextmanager
def _quiet_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 200 else line[:197] + "..."


def _kwargs_text(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


@contextlib.contextmanager
def empty_weights():
    """Build modules with their parameters and buffers on the meta device: no
    memory, no initialization time (the figures need only the shapes). For
    factories that compute nothing from their weights at construction."""
    register_parameter = nn.Module.register_parameter
    register_buffer = nn.Module.register_buffer

    def parameter(self, name, param):
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register_parameter(self, name, param)

    def buffer(self, name, tensor, persistent=True):
        if tensor is not None and tensor.device.type != "meta":
            tensor = tensor.to("meta")
        register_buffer(self, name, tensor, persistent=persistent)

    nn.Module.register_parameter = parameter
    nn.Module.register_buffer = buffer
    try:
        yield
    finally:
        nn.Module.register_parameter = register_parameter
        nn.Module.register_buffer = register_buffer


# --------------------------------------------------------------------------
# tracing: torch.fx with the mapped modules as leaves, each node tagged with
# the module whose forward made it


class _Tracer(fx.Tracer):
    def __init__(self, opaque=()):
        super().__init__()
        self.opaque = set(opaque)     # module paths kept whole (as opaque rows)
        self._paths = [""]

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self.opaque or _mapper_for(m) is not None:
            return True
        if isinstance(m, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
            return False
        # torch.nn's own modules without a mapping stay leaves: reported by type
        return type(m).__module__.startswith(("torch.nn", "torch.ao.nn"))

    def call_module(self, m, forward, args, kwargs):
        self._paths.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._paths.pop()

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["scope"] = target if kind == "call_module" else self._paths[-1]
        return node


def trace(model: nn.Module, opaque=()) -> fx.GraphModule:
    """torch.fx's symbolic trace, the mapped modules as leaves."""
    tracer = _Tracer(opaque)
    try:
        with _quiet_warnings():
            graph = tracer.trace(model)
    except Exception as e:  # noqa: BLE001 - fx's reasons are varied; one line each
        raise TraceFailure(f"{type(e).__name__}: {_first_line(e)}") from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


class TraceFailure(Exception):
    pass


class _Tracing:
    """The model's graph at each try of the import: torch.fx's symbolic trace,
    or, where fx cannot trace the forward, torch.export's graph rewritten to
    fx's form (archcalc.torch.export_trace), exported once and regrouped for
    each set of modules kept whole."""

    def __init__(self, module: nn.Module, input_shape: tuple, label: str):
        self.module, self.input_shape, self.label = module, input_shape, label
        self.fx_error: str | None = None      # why fx could not trace it
        self.exported = None

    @property
    def tracer(self) -> str:
        return "torch.fx" if self.fx_error is None else "torch.export"

    def graph(self, opaque=()) -> fx.GraphModule:
        from . import export_trace
        if self.fx_error is None:
            try:
                return trace(self.module, opaque)
            except TraceFailure as e:
                self.fx_error = str(e)
        if self.exported is None:
            try:
                self.exported = export_trace.Exported(self.module, self.input_shape,
                                                      PROBE_BATCH)
            except export_trace.ExportFailure as e:
                raise SpecError(f"torch.fx cannot trace {self.label} ({self.fx_error}), nor "
                                f"can torch.export ({e})") from None
        is_leaf = _Tracer(opaque).is_leaf_module
        try:
            with _quiet_warnings():
                return export_trace.to_fx(self.exported, is_leaf)
        except export_trace.ExportFailure as e:
            raise SpecError(f"torch.fx cannot trace {self.label} ({self.fx_error}); "
                            f"torch.export's graph of it cannot be read: {e}") from None


@dataclass
class Probed:
    """What one run on concrete (meta) tensors measured at each node."""
    values: dict = field(default_factory=dict)     # node -> tensor shape, or the value
    args: dict = field(default_factory=dict)       # node -> (args, kwargs) with tensors marked


class _TensorArg:
    """Stands for a tensor argument in the recorded arguments of a node."""

    def __init__(self, node):
        self.node = node

    def __repr__(self):
        return f"<tensor {self.node.name}>"


def _meta_like(t):
    return torch.empty_like(t, device="meta") if isinstance(t, torch.Tensor) else t


class _Probe(fx.Interpreter):
    def __init__(self, gm, meta: bool):
        super().__init__(gm, garbage_collect_values=True)
        self.meta = meta
        self.found = Probed()

    def run_node(self, n):
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        self.found.args[n] = (_mark(n.args, args), _mark(n.kwargs, kwargs))
        out = super().run_node(n)
        self.found.values[n] = _describe(out)
        return out

    def call_module(self, target, args, kwargs):
        module = self.fetch_attr(target)
        if not self.meta:
            return module(*args, **kwargs)
        state = {k: _meta_like(v) for k, v in
                 list(module.named_parameters()) + list(module.named_buffers())}
        return torch.func.functional_call(module, state, tuple(args), kwargs)

    def get_attr(self, target, args, kwargs):
        value = super().get_attr(target, args, kwargs)
        return _meta_like(value) if self.meta else value


def _mark(template, concrete):
    """The concrete arguments, each tensor replaced by a _TensorArg naming its node."""
    if isinstance(template, fx.Node):
        return _TensorArg(template) if isinstance(concrete, torch.Tensor) else concrete
    if isinstance(template, (list, tuple)):
        return type(template)(_mark(t, c) for t, c in zip(template, concrete))
    if isinstance(template, dict):
        return {k: _mark(template[k], concrete[k]) for k in template}
    return concrete


class Shape(tuple):
    """A tensor's shape, as probed (batch included)."""


def _describe(out):
    if isinstance(out, torch.Tensor):
        return Shape(out.shape)
    if isinstance(out, (list, tuple)) and not isinstance(out, torch.Size):
        return type(out)(_describe(o) for o in out) if type(out) in (list, tuple) \
            else tuple(_describe(o) for o in out)
    return out


PROBE_BATCH = 2


def probe(gm: fx.GraphModule, input_shape, meta: bool = True) -> Probed:
    device = "meta" if meta else "cpu"
    x = torch.zeros((PROBE_BATCH, *input_shape), device=device)
    runner = _Probe(gm, meta)
    with torch.no_grad(), _quiet_warnings():
        runner.run(x)
    return runner.found


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

    def arg(self, names, index, name, default=REQUIRED):
        """Argument ``name`` (position ``index`` in the call), as called."""
        if name in self.kwargs:
            return self.kwargs[name]
        if index < len(self.args):
            return self.args[index]
        if default is REQUIRED:
            raise _NoMapping(f"{names} without its {name}")
        return default


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


class _NoMapping(Exception):
    """This call has no faithful kind (the reason says what differs)."""


def rows(*items):
    return [(kind, args) for kind, args in items]


def row(kind, **args):
    return [(kind, args)]


def _pair(v):
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return int(v[0])
        if len(v) != 2:
            raise _NoMapping(f"a {len(v)}-d size")
        a, b = int(v[0]), int(v[1])
        return a if a == b else [a, b]
    return int(v)


def _padding(v):
    if isinstance(v, str):
        return v
    return _pair(v)


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


def _input_chw(c: Call, what: str):
    if len(c.x) != 3:
        raise _NoMapping(f"{what} on a {len(c.x)}-d input")


@maps(nn.Conv2d)
def _conv(c: Call, m: nn.Conv2d):
    _input_chw(c, "Conv2d")
    args = dict(out=m.out_channels, kernel=_pair(m.kernel_size), stride=_pair(m.stride),
                padding=_padding(m.padding), dilation=_pair(m.dilation), bias=m.bias is not None,
                padding_mode=m.padding_mode)
    if m.groups > 1 and m.groups == m.in_channels:
        args["depthwise"] = True
    else:
        args["groups"] = m.groups
    return row("conv", **args)


@maps(nn.ConvTranspose2d)
def _conv_transpose(c: Call, m: nn.ConvTranspose2d):
    _input_chw(c, "ConvTranspose2d")
    if m.padding_mode != "zeros":
        raise _NoMapping(f"ConvTranspose2d with padding_mode={m.padding_mode!r}")
    if c.args[1:] or c.kwargs:
        raise _NoMapping("ConvTranspose2d called with an output_size")
    return row("conv_transpose", out=m.out_channels, kernel=_pair(m.kernel_size),
               stride=_pair(m.stride), padding=_pair(m.padding),
               output_padding=_pair(m.output_padding), dilation=_pair(m.dilation),
               groups=m.groups, bias=m.bias is not None)


@maps(nn.Linear)
def _linear(c: Call, m: nn.Linear):
    if len(c.x) == 3:   # nn.Linear on a map acts on its last dimension, fc flattens
        raise _NoMapping("Linear on a C x H x W map (it acts on the last dimension)")
    return row("fc", out=m.out_features, bias=m.bias is not None)


@maps(nn.BatchNorm2d, nn.BatchNorm1d)
def _batch_norm(c: Call, m):
    if not m.track_running_stats or m.momentum is None:
        raise _NoMapping("BatchNorm without running statistics")
    if isinstance(m, nn.BatchNorm1d) and len(c.x) != 1:
        raise _NoMapping("BatchNorm1d over a sequence")
    return row("batch_norm", affine=m.affine, eps=float(m.eps), momentum=float(m.momentum))


def _act(kind, **args):
    """An activation module; nn.ReLU() is not in place (PyTorch's default), so
    its row says so where the kind's own default is in place."""
    def mapper(c, m):
        if isinstance(getattr(m, "inplace", None), bool):
            return row(kind, inplace=m.inplace, **args)
        return row(kind, **args)
    return mapper


for _cls, _kind in ((nn.ReLU, "relu"), (nn.ReLU6, "relu6"), (nn.Hardswish, "hardswish"),
                    (nn.Hardsigmoid, "hardsigmoid"), (nn.SiLU, "silu"), (nn.Sigmoid, "sigmoid"),
                    (nn.Tanh, "tanh"), (nn.Mish, "mish")):
    MODULE_MAPPERS[_cls] = _act(_kind)


@maps(nn.GELU)
def _gelu(c, m):
    return row("gelu", approximate=m.approximate)


@maps(nn.LeakyReLU)
def _leaky(c, m):
    return row("leaky_relu", negative_slope=float(m.negative_slope))


@maps(nn.ELU)
def _elu(c, m):
    return row("elu", alpha=float(m.alpha))


@maps(nn.Softplus)
def _softplus(c, m):
    if m.threshold != 20:
        raise _NoMapping(f"Softplus with threshold={m.threshold}")
    return row("softplus", beta=float(m.beta))


@maps(nn.PReLU)
def _prelu(c, m):
    n = m.num_parameters
    if n != 1 and (len(c.x) == 0 or n != c.x[0]):
        raise _NoMapping(f"PReLU with {n} parameters")
    return row("prelu", per_channel=n != 1)


@maps(nn.Softmax)
def _softmax(c, m):
    return _softmax_dim(c, m.dim)


def _softmax_dim(c, dim):
    if not ((len(c.x) == 1 and dim in (1, -1)) or (len(c.x) == 3 and dim in (1, -3))):
        raise _NoMapping(f"softmax over dim {dim} of a {list(c.x_torch)} input "
                         "(archcalc's is over the channels or the features)")
    return row("softmax")


@maps(nn.Dropout)
def _dropout(c, m):
    return row("dropout", p=float(m.p))


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
    _input_chw(c, "MaxPool2d")
    rows = row("maxpool", kernel=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
               padding=_pair(m.padding), dilation=_pair(m.dilation), ceil_mode=m.ceil_mode)
    return PoolIndices(rows) if m.return_indices else rows


def _unpool_row(kernel, stride, padding):
    return row("max_unpool", kernel=_pair(kernel), stride=_pair(stride or kernel),
               padding=_pair(padding))


@maps(nn.MaxUnpool2d)
def _max_unpool(c, m: nn.MaxUnpool2d):
    _input_chw(c, "MaxUnpool2d")
    return Unpool(_unpool_row(m.kernel_size, m.stride, m.padding),
                  c.arg("MaxUnpool2d", 1, "indices"),
                  c.arg("MaxUnpool2d", 2, "output_size", None))


@maps(nn.AvgPool2d)
def _avgpool(c, m: nn.AvgPool2d):
    _input_chw(c, "AvgPool2d")
    return row("avgpool", kernel=_pair(m.kernel_size), stride=_pair(m.stride or m.kernel_size),
               padding=_pair(m.padding), ceil_mode=m.ceil_mode,
               count_include_pad=m.count_include_pad, divisor_override=m.divisor_override)


def _adaptive(kind, c, size):
    _input_chw(c, "an adaptive pool")
    size = size if isinstance(size, (list, tuple)) else (size, size)
    if len(size) != 2:
        raise _NoMapping(f"an adaptive pool to a {len(size)}-d size")
    if kind == "adaptive_avgpool" and tuple(size) == (1, 1):
        return row("global_avgpool")
    return row(kind, size=_pair(["none" if s is None else s for s in size])
               if None in size else _pair(size))


@maps(nn.AdaptiveAvgPool2d)
def _adaptive_avg(c, m):
    return _adaptive("adaptive_avgpool", c, m.output_size)


@maps(nn.AdaptiveMaxPool2d)
def _adaptive_max(c, m):
    if m.return_indices:
        raise _NoMapping("AdaptiveMaxPool2d with return_indices")
    return _adaptive("adaptive_maxpool", c, m.output_size)


@maps(nn.LPPool2d)
def _lp_pool(c, m):
    return row("lp_pool", kernel=_pair(m.kernel_size), norm_type=float(m.norm_type),
               stride=_pair(m.stride or m.kernel_size), ceil_mode=m.ceil_mode)


@maps(nn.LocalResponseNorm)
def _lrn(c, m):
    return row("lrn", size=m.size, alpha=float(m.alpha), beta=float(m.beta), k=float(m.k))


@maps(nn.LayerNorm)
def _layer_norm(c, m: nn.LayerNorm):
    shape = tuple(m.normalized_shape)
    width = c.x[-1] if len(c.x) == 2 else (c.x[0] if len(c.x) == 1 else None)
    if len(shape) != 1 or width is None or shape[0] != width or c.x_torch[-1] != width:
        raise _NoMapping(f"LayerNorm over {list(shape)} of a {list(c.x_torch)} input "
                         "(archcalc's normalizes each token's or vector's last dimension)")
    return row("layer_norm", affine=m.elementwise_affine,
               bias=m.elementwise_affine and m.bias is not None, eps=float(m.eps))


@maps(nn.GroupNorm)
def _group_norm(c, m):
    return row("group_norm", groups=m.num_groups, affine=m.affine, eps=float(m.eps))


@maps(nn.InstanceNorm2d)
def _instance_norm(c, m):
    return row("instance_norm", affine=m.affine, track_running_stats=m.track_running_stats,
               eps=float(m.eps), momentum=float(m.momentum or 0.1))


@maps(nn.Upsample)
def _upsample(c, m):
    return _upsample_args(c, m.size, m.scale_factor, m.mode, m.align_corners)


def _upsample_args(c, size, scale, mode, align_corners):
    _input_chw(c, "upsampling")
    if mode not in ("nearest", "bilinear"):
        raise _NoMapping(f"upsampling mode {mode!r}")
    args = {"mode": mode}
    if mode == "bilinear":
        args["align_corners"] = bool(align_corners)
    if scale is not None:
        scales = scale if isinstance(scale, (list, tuple)) else (scale, scale)
        if any(float(s) != int(s) for s in scales):
            raise _NoMapping(f"upsampling by {scale}")
        args["scale"] = _pair([int(s) for s in scales])
    else:
        args["size"] = _pair(size)
    return row("upsample", **args)


@maps(nn.MultiheadAttention)
def _attention(c, m: nn.MultiheadAttention):
    if len(c.x) != 2:
        raise _NoMapping("MultiheadAttention on an input that is not tokens")
    tensors = [a for a in list(c.args[:3]) + [c.kwargs.get(k) for k in ("query", "key", "value")]
               if isinstance(a, _TensorArg)]
    if len({t.node for t in tensors}) != 1:
        raise _NoMapping("MultiheadAttention with different query, key and value "
                         "(archcalc's attention is self-attention)")
    extra = {k: v for k, v in c.kwargs.items() if k not in ("query", "key", "value",
                                                              "need_weights")}
    if len(c.args) > 3 or any(v is not None for v in extra.values()):
        raise _NoMapping("MultiheadAttention with a mask or other arguments")
    if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None or \
            m.add_zero_attn:
        raise _NoMapping("MultiheadAttention other than batch_first self-attention")
    return row("attention", heads=m.num_heads, bias=m.in_proj_bias is not None,
               dropout=float(m.dropout))


@maps(nn.ChannelShuffle, nn.Flatten, nn.Unflatten)
def _layout_module(c, m):
    return LAYOUT


LAYOUT = object()   # a reshape: evaluated on an index tensor (see _classify_layout)


def _register_torchvision():
    """torchvision's building blocks, where torchvision is installed."""
    try:
        from torchvision.ops import StochasticDepth, misc
    except ImportError:  # pragma: no cover - the vision extra is missing
        return

    @maps(misc.SqueezeExcitation)
    def _tv_se(c, m):
        return _se(c, m, m.fc1.out_channels, m.activation, m.scale_activation)

    @maps(StochasticDepth)
    def _tv_drop_path(c, m):
        return row("drop_path", p=float(m.p), mode=m.mode)

    try:
        from torchvision.models.convnext import LayerNorm2d
    except ImportError:  # pragma: no cover
        return

    @maps(LayerNorm2d)
    def _tv_layer_norm2d(c, m):
        _input_chw(c, "LayerNorm2d")
        return row("layer_norm", affine=m.elementwise_affine,
                   bias=m.elementwise_affine and m.bias is not None, eps=float(m.eps))


ACTIVATION_KINDS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.SiLU: "silu",
                    nn.Hardswish: "hardswish", nn.GELU: "gelu", nn.Mish: "mish",
                    nn.LeakyReLU: "leaky_relu", nn.ELU: "elu", nn.Tanh: "tanh",
                    nn.Sigmoid: "sigmoid", nn.Hardsigmoid: "hardsigmoid",
                    nn.Softplus: "softplus"}


def _se(c, m, squeeze, activation, gate):
    _input_chw(c, "squeeze-and-excitation")
    act = ACTIVATION_KINDS.get(type(activation))
    gate_kind = ACTIVATION_KINDS.get(type(gate))
    if act is None or gate_kind not in ("sigmoid", "hardsigmoid"):
        raise _NoMapping(f"squeeze-and-excitation with {type(activation).__name__} and "
                         f"{type(gate).__name__}")
    if m.fc1.bias is None or m.fc2.bias is None:
        raise _NoMapping("squeeze-and-excitation without biases")
    return row("se", squeeze=squeeze, activation=act, gate=gate_kind)


def _register_own():
    """archcalc's own modules: a compiled spec imports back into its rows."""
    from . import modules as own

    @maps(own.SqueezeExcitation)
    def _own_se(c, m):
        return _se(c, m, m.fc1.out_channels, m.activation, m.scale_activation)

    @maps(own.LayerNorm2d)
    def _own_ln2d(c, m):
        _input_chw(c, "LayerNorm2d")
        return row("layer_norm", affine=m.elementwise_affine,
                   bias=m.elementwise_affine and m.bias is not None, eps=float(m.eps))

    @maps(own.StochasticDepth)
    def _own_drop_path(c, m):
        return row("drop_path", p=float(m.p), mode=m.mode)

    @maps(own.LayerScale)
    def _own_layer_scale(c, m):
        return row("layer_scale", init=_constant(m.gamma, 1e-6))

    @maps(own.SelfAttention)
    def _own_attention(c, m):
        return row("attention", heads=m.num_heads, bias=m.in_proj_bias is not None,
                   dropout=float(m.dropout))

    MODULE_MAPPERS[own.MapToTokens] = lambda c, m: row("tokens")
    MODULE_MAPPERS[own.ClassToken] = lambda c, m: row("class_token")
    MODULE_MAPPERS[own.PositionEmbedding] = lambda c, m: row("position_embedding")
    MODULE_MAPPERS[own.TokenPool] = lambda c, m: row("token_pool", mode=m.mode)
    MODULE_MAPPERS[own.Maxout] = lambda c, m: row("maxout", pieces=m.pieces)

    @maps(own.TokensToMap)
    def _own_to_map(c, m):
        return row("to_map", size=_pair((m.height, m.width)))

    from .build import PoolWithIndices, UnpoolFromTape

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

    @maps(own.PadShortcut)
    def _own_pad(c, m):
        return row("pad_shortcut", out=c.x[0] + m.extra, stride=_pair(m.stride))

    @maps(own.Subsample)
    def _own_subsample(c, m):
        pool = m.pool
        return row("subsample", kernel=_pair(pool.kernel_size), stride=_pair(pool.stride),
                   padding=_pair(pool.padding))

    @maps(own.PartialConv2d)
    def _own_partial(c, m):
        connections, kernel, stride, padding, bias = m.init_args
        return row("conv_table", connections=[list(x) for x in connections],
                   kernel=_pair(kernel), stride=_pair(stride), padding=_padding(padding),
                   bias=bias)

    @maps(own.LocallyConnected2d)
    def _own_local(c, m):
        _, out, _, kernel, stride, padding, bias = m.init_args
        return row("local", out=out, kernel=_pair(kernel), stride=_pair(stride),
                   padding=_pair(padding), bias=bias)

    from . import lecture_modules as lecture

    @maps(lecture.Multiply)
    def _own_multiply(c, m):
        return row("multiply", by=float(m.by), inplace=bool(m.inplace))

    @maps(lecture.Reshape)
    def _own_reshape(c, m):
        return row("reshape", shape=list(m.shape))

    @maps(lecture.SpatialPyramidPool)
    def _own_spp(c, m):
        _input_chw(c, "SpatialPyramidPool")
        return row("spp", levels=list(m.levels), mode=m.mode)

    @maps(lecture.DropConnectLinear)
    def _own_dropconnect(c, m):
        if len(c.x) == 3:
            raise _NoMapping("DropConnectLinear on a C x H x W map")
        return row("dropconnect", out=m.out_features, bias=m.bias is not None, p=float(m.p))


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
        raise _NoMapping(f"hardtanh({low}, {high})")
    return row("relu6")


@maps_call(F.softmax, torch.softmax, methods=("softmax",))
def _f_softmax(c):
    return _softmax_dim(c, c.arg("softmax", 1, "dim", None))


@maps_call(F.dropout, torch.dropout)
def _f_dropout(c):
    return row("dropout", p=float(c.arg("dropout", 1, "p", 0.5)))


@maps_call(F.adaptive_avg_pool2d)
def _f_adaptive_avg(c):
    return _adaptive("adaptive_avgpool", c, c.arg("adaptive_avg_pool2d", 1, "output_size"))


@maps_call(F.adaptive_max_pool2d)
def _f_adaptive_max(c):
    if c.arg("adaptive_max_pool2d", 2, "return_indices", False):
        raise _NoMapping("adaptive_max_pool2d with return_indices")
    return _adaptive("adaptive_maxpool", c, c.arg("adaptive_max_pool2d", 1, "output_size"))


@maps_call(F.max_pool2d, torch.max_pool2d, F.max_pool2d_with_indices)
def _f_maxpool(c):
    name = "max_pool2d"
    _input_chw(c, name)
    kernel = c.arg(name, 1, "kernel_size")
    stride = c.arg(name, 2, "stride", None) or kernel
    rows = row("maxpool", kernel=_pair(kernel), stride=_pair(stride),
               padding=_pair(c.arg(name, 3, "padding", 0)),
               dilation=_pair(c.arg(name, 4, "dilation", 1)),
               ceil_mode=bool(c.arg(name, 5, "ceil_mode", False)))
    # F.max_pool2d(..., return_indices=True) is traced as max_pool2d_with_indices
    if c.node.target is F.max_pool2d_with_indices or c.arg(name, 6, "return_indices", False):
        return PoolIndices(rows)
    return rows


@maps_call(F.max_unpool2d)
def _f_max_unpool(c):
    name = "max_unpool2d"
    _input_chw(c, name)
    return Unpool(_unpool_row(c.arg(name, 2, "kernel_size"), c.arg(name, 3, "stride", None),
                              c.arg(name, 4, "padding", 0)),
                  c.arg(name, 1, "indices"), c.arg(name, 5, "output_size", None))


UNPOOLS = (_max_unpool, _f_max_unpool)    # the mappers of calls that read a pool's indices


@maps_call(F.avg_pool2d, torch._C._nn.avg_pool2d)
def _f_avgpool(c):
    name = "avg_pool2d"
    _input_chw(c, name)
    kernel = c.arg(name, 1, "kernel_size")
    stride = c.arg(name, 2, "stride", None) or kernel
    return row("avgpool", kernel=_pair(kernel), stride=_pair(stride),
               padding=_pair(c.arg(name, 3, "padding", 0)),
               ceil_mode=bool(c.arg(name, 4, "ceil_mode", False)),
               count_include_pad=bool(c.arg(name, 5, "count_include_pad", True)),
               divisor_override=c.arg(name, 6, "divisor_override", None))


@maps_call(F.interpolate)
def _f_interpolate(c):
    name = "interpolate"
    if c.arg(name, 5, "recompute_scale_factor", None) or c.arg(name, 6, "antialias", False):
        raise _NoMapping("interpolate with recompute_scale_factor or antialias")
    return _upsample_args(c, c.arg(name, 1, "size", None), c.arg(name, 2, "scale_factor", None),
                          c.arg(name, 3, "mode", "nearest"), c.arg(name, 4, "align_corners", None))


@maps_call(torch.mean, methods=("mean",))
def _f_mean(c):
    dims = c.arg("mean", 1, "dim", None)
    keep = c.arg("mean", 2, "keepdim", False)
    dims = tuple(sorted(d % 4 for d in (dims if isinstance(dims, (list, tuple)) else [dims]))) \
        if dims is not None else None
    if len(c.x) != 3 or dims != (2, 3):
        raise _NoMapping(f"mean over {dims} of a {list(c.x_torch)} input")
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

ADD = (operator.add, operator.iadd, torch.add)
MUL = (operator.mul, operator.imul, torch.mul)
CAT = (torch.cat, torch.concat, torch.concatenate)
SPLIT = (torch.chunk, torch.split, torch.tensor_split)



# --------------------------------------------------------------------------
# the graph of tensor values, each node one row, a merge, a concat or a split


@dataclass
class Node:
    index: int
    op: str                        # input | row | add | mul | cat | split | slice
    inputs: list
    shape: tuple                   # the spec's shape per sample
    torch_shape: tuple             # PyTorch's, per sample
    rows: list = field(default_factory=list)    # row: [(kind, args)], in order
    path: tuple = ()               # the module path (a leaf's, or the caller's scope)
    stateful: bool = False         # holds parameters or buffers: named by its path
    name: str = ""                 # a name for a stateless row
    flat: bool = False             # a flat parameter row
    scoped: bool = False           # path is the calling module's (a function), not its own
    sizes: tuple = ()              # split: channels per slice
    slot: int = 0                  # slice: which
    what: str = ""                 # what it came from (errors, opaque rows)
    of: int | None = None          # a max unpool: the index of the max pool it reads

    def __hash__(self):
        return self.index


@dataclass
class Param:
    target: str
    tensor: torch.Tensor


@dataclass
class Expanded:
    """param.expand(batch, -1, -1): a class token on its way to a cat."""
    param: Param


@dataclass
class _Pooled:
    """The (values, indices) pair of a max pool's row: items 0 and 1 only."""
    pool: Node


@dataclass
class _Indices:
    """A max pool's indices: only a max unpool reads them (its `of`)."""
    pool: Node


def _where(node: Node) -> str:
    return ".".join(node.path) or "the model's forward"


def _tensor(v) -> bool:
    return isinstance(v, Shape)


def _per_sample(shape) -> tuple:
    return tuple(int(d) for d in shape[1:])


def _spec_matches(spec: tuple, torch_shape: tuple) -> bool:
    """The spec's shape describes PyTorch's: equal, or tokens (N, D) for a
    channels-last (H, W, D) tensor (same elements in the same order)."""
    if tuple(spec) == tuple(torch_shape):
        return True
    return (len(spec) == 2 and len(torch_shape) >= 2 and torch_shape[-1] == spec[1]
            and math.prod(torch_shape) == math.prod(spec))


def _path(text: str) -> tuple:
    return tuple(text.split(".")) if text else ()


def _describe_target(n: fx.Node, module=None) -> str:
    if n.op == "call_module":
        cls = type(module)
        return f"{cls.__module__}.{cls.__qualname__}"
    if n.op == "call_method":
        return f"Tensor.{n.target}"
    target = n.target
    if isinstance(target, torch._ops.OpOverload):    # an aten call (torch.export's graph)
        return f"torch.ops.{target}"
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", str(target))
    if mod in ("_operator", "operator"):
        mod = "operator"
    return f"{mod}.{name}" if mod else name


_PENDING = "pending"   # a reshape whose chain ends later
_POISON = "unsupported"  # what an unmapped op computed


class _GraphBuilder:
    """fx graph + probe -> Nodes of tensor values, rows mapped to kinds."""

    def __init__(self, gm: fx.GraphModule, found: Probed, input_shape: tuple,
                 allow_opaque: bool, opaque=()):
        self.gm = gm
        self.opaque = set(opaque)
        self.widen: set = set()            # scopes to keep whole on the next try
        self.found = found
        self.allow_opaque = allow_opaque
        self.input_shape = tuple(input_shape)
        self.nodes: list[Node] = []
        self.value: dict = {}             # fx node -> Node | Param | Expanded | None
        self.unsupported: dict = {}       # (op, path) -> count
        self.opaque_vars: list = []
        self.stateful_calls: dict = {}    # module path -> times called
        self.output = None
        self.used_state: set = set()      # module paths and parameter targets used
        self.modules = dict(gm.named_modules())
        self.taped: dict = {}             # (id of an IndexTape, key) -> its max pool's Node

    # -- entry ------------------------------------------------------------
    def run(self):
        chains = self._layout_chains()
        for n in self.gm.graph.nodes:
            try:
                self._visit(n, chains)
            except _NoMapping as e:
                self._unsupported(n, str(e))
        if self.unsupported:
            return
        shared = {p: k for p, k in self.stateful_calls.items() if k > 1}
        if shared:
            raise SpecError("a spec holds one set of weights per layer; these modules are "
                            "called more than once (shared weights): "
                            + ", ".join(f"{p} (x{k})" for p, k in sorted(shared.items())))

    def _visit(self, n: fx.Node, chains):
        v = self.found.values.get(n)
        if n.op == "placeholder":
            if not self.nodes and _tensor(v):
                self._add(Node(0, "input", [], self.input_shape, _per_sample(v),
                               name="input"), n)
            elif _tensor(v):
                raise SpecError(f"the model's forward takes more than one tensor "
                                f"({n.name}); import needs one input")
            else:
                self.value[n] = None
            return
        if n.op == "get_attr":
            obj = self._attr(n.target)
            self.value[n] = Param(n.target, obj) if isinstance(obj, torch.Tensor) else None
            return
        if n.op == "output":
            if self.unsupported:
                return
            out = _single_output(n.args[0])
            got = self.value.get(out) if isinstance(out, fx.Node) else None
            if isinstance(got, (_Pooled, _Indices)):
                raise SpecError(f"the model's forward returns the indices of the max pool at "
                                f"{_where(got.pool)}; import needs one tensor")
            if not isinstance(got, Node):
                raise SpecError("the model's forward must return one tensor; it returns "
                                f"{type(self.found.values.get(out, out)).__name__}")
            self.output = got
            return
        inputs = [self.value.get(a) for a in n.all_input_nodes]
        if any(x is _POISON for x in inputs):
            # downstream of an unsupported op: its own failures are not reported
            # again, but an op that has no mapping at all is
            if not self._has_mapper(n):
                self._unsupported(n, "")
            self.value[n] = _POISON
            return
        held = [x for x in inputs if isinstance(x, (_Pooled, _Indices))]
        if held and self._read_indices(n, held):
            return
        tensors = [x for x in inputs if isinstance(x, Node)]
        if not tensors and not any(isinstance(x, (Param, Expanded)) or x is _PENDING
                                   for x in inputs):
            self.value[n] = None      # shape arithmetic, asserts: no tensor work
            return
        if not (_tensor(v) or (isinstance(v, (tuple, list)) and any(map(_tensor, v)))):
            if n.op == "call_module":   # a leaf whose output is not a tensor
                raise _NoMapping(f"returns a {type(v).__name__}")
            self.value[n] = None      # x.size(), x.dim(): metadata
            return
        if n in chains and chains[n] is not n:
            self.value[n] = _PENDING
            return
        if n in chains:
            return self._layout(n, chains)
        if n.op == "call_module":
            return self._module(n)
        return self._function(n, tensors, inputs)

    # -- helpers ----------------------------------------------------------
    def _has_mapper(self, n: fx.Node) -> bool:
        if n.op == "call_module":
            return _mapper_for(self.modules[n.target]) is not None
        if n.op == "call_method":
            return n.target in METHOD_MAPPERS or n.target in (
                "add", "add_", "mul", "mul_", "chunk", "split", "tensor_split", "expand",
                "size", "dim")
        if n.op == "call_function":
            return n.target in FUNCTION_MAPPERS or n.target in ADD + MUL + CAT + SPLIT or \
                not _tensor_valued(self.found.values.get(n))
        return True

    def _read_indices(self, n: fx.Node, held: list) -> bool:
        """A node that reads a max pool's (values, indices) pair or its indices:
        an item of the pair (True: done), or a max unpool (False: mapped as
        one); anything else cannot follow the indices."""
        pool = held[0].pool
        if isinstance(held[0], _Pooled) and len(n.all_input_nodes) == 1 and \
                n.op == "call_function" and n.target is operator.getitem and \
                n.args[1] in (-2, -1, 0, 1):
            self.value[n] = pool if n.args[1] % 2 == 0 else _Indices(pool)
            return True
        if all(isinstance(h, _Indices) for h in held):
            if n.op == "call_module":
                mapper = _mapper_for(self.modules[n.target])
            else:
                mapper = FUNCTION_MAPPERS.get(n.target) if n.op == "call_function" else None
            if mapper in UNPOOLS:
                return False
        raise _NoMapping(f"reads the indices of the max pool at {_where(pool)}; only a max "
                         "unpool (MaxUnpool2d, max_unpool2d) may use them")

    def _attr(self, target):
        obj = self.gm
        for part in target.split("."):
            obj = getattr(obj, part)
        return obj

    def _add(self, node: Node, fx_node) -> Node:
        node.index = len(self.nodes)
        self.nodes.append(node)
        self.value[fx_node] = node
        return node

    def _unsupported(self, n: fx.Node, reason: str):
        module = self.modules.get(n.target) if n.op == "call_module" else None
        what = _describe_target(n, module)
        path = n.target if n.op == "call_module" else n.meta.get("scope", "")
        if self.allow_opaque:
            try:
                return self._opaque(n, what, path)
            except _NoMapping as e:
                reason = str(e)
                scope = n.meta.get("scope", "")
                if n.op == "call_module":       # the module that calls this one
                    scope = scope.rpartition(".")[0]
                if scope and scope not in self.opaque:
                    self.widen.add(scope)
        key = (f"{what} ({reason})" if reason else what, path)
        self.unsupported[key] = self.unsupported.get(key, 0) + 1
        self.value[n] = _POISON

    def _input_of(self, n: fx.Node) -> Node:
        for a in n.all_input_nodes:
            got = self.value.get(a)
            if isinstance(got, Node):
                return got
        raise _NoMapping("computes on parameters or buffers, not on the input")

    def _call(self, n: fx.Node, x: Node, module=None) -> Call:
        args, kwargs = self.found.args[n]
        y = self.found.values.get(n)
        return Call(n, module, args, kwargs, x.shape, x.torch_shape,
                    _per_sample(y) if _tensor(y) else None)

    def _row(self, n: fx.Node, x: Node, kinds: list, *, path=None, stateful=False,
             name="", flat=False, what="", out=None) -> Node | None:
        """A row (or several, e.g. a mean: pool then flatten) from x; checks that
        the kinds give PyTorch's shape (``out``'s where the call gives several)."""
        y_torch = self.found.values.get(n) if out is None else out
        y_torch = _per_sample(y_torch) if _tensor(y_torch) else None
        if not kinds:                   # an identity (nn.Identity, clone)
            self.value[n] = x
            return x
        shape = x.shape
        for kind, args in kinds:
            shape = _kind_shape(kind, args, shape)
        if y_torch is not None and not _spec_matches(shape, y_torch):
            raise _NoMapping(f"mapped to {'+'.join(k for k, _ in kinds)}, but PyTorch gives "
                             f"{list(y_torch)} where the kind gives {list(shape)}")
        scope = n.target if n.op == "call_module" else n.meta.get("scope", "")
        node = Node(0, "row", [x.index], tuple(shape), y_torch or tuple(shape), list(kinds),
                    _path(scope) if path is None else path, stateful, name, flat,
                    what=what, scoped=n.op != "call_module" and not flat)
        return self._add(node, n)

    # -- leaf modules -----------------------------------------------------
    def _module(self, n: fx.Node):
        module = self.modules[n.target]
        mapper = _mapper_for(module)
        if mapper is None:
            raise _NoMapping("")
        x = self._input_of(n)
        found = mapper(self._call(n, x, module), module)
        if found is LAYOUT:
            return self._layout(n, {n: n})
        stateful = bool(list(module.parameters())) or bool(list(module.buffers()))
        if stateful:
            self.stateful_calls[n.target] = self.stateful_calls.get(n.target, 0) + 1
            self.used_state.add(n.target)
        path = _path(n.target)
        how = dict(path=path, stateful=stateful, name=path[-1] if path else "",
                   what=_describe_target(n, module))
        if isinstance(found, PoolIndices):
            return self._pool_indices(n, x, found, how)
        if isinstance(found, Unpool):
            return self._unpool(n, x, found, how)
        self._row(n, x, found, **how)

    # -- max pool indices -----------------------------------------------------
    def _pool_indices(self, n: fx.Node, x: Node, found: PoolIndices, how: dict):
        """A max pool that gives its indices: its row is the values' (they flow on)."""
        v = self.found.values.get(n)
        pair = not _tensor(v)     # (values, indices); a tensor on a tape
        node = self._row(n, x, found.rows, out=v[0] if pair else v, **how)
        if found.tape is not None:
            self.taped[found.tape] = node
        if pair:
            self.value[n] = _Pooled(node)

    def _unpool(self, n: fx.Node, x: Node, found: Unpool, how: dict):
        """A max unpool: `of` is the max pool whose indices it reads, which it
        must undo (its input the pool's output, its output the pool's input)."""
        if isinstance(found.indices, _TensorArg):
            held = self.value.get(found.indices.node)
            pool = held.pool if isinstance(held, _Indices) else None
        else:
            pool = self.taped.get(found.indices)
        if pool is None:
            raise _NoMapping("max unpool of indices that no max pool of the model gave")
        pool_in = self.nodes[pool.inputs[0]].shape

        def undo(what, hw):
            """The unpool must give the pool's input size, as archcalc's does."""
            if tuple(hw) != tuple(pool_in[1:]):
                raise _NoMapping(f"max unpool to {what}{'x'.join(map(str, hw))}, but the max "
                                 f"pool at {_where(pool)} pooled "
                                 f"{'x'.join(map(str, pool_in[1:]))}; archcalc's max_unpool "
                                 "gives its pool's input size")
        if found.output_size is not None:
            undo("output_size ", [int(d) for d in list(found.output_size)[-2:]])
        if tuple(x.shape) != tuple(pool.shape):
            raise _NoMapping(f"max unpool of a {list(x.shape)} input with the indices of the "
                             f"{list(pool.shape)} output of the max pool at {_where(pool)}")
        seen, todo = set(), [x.index]
        while todo and pool.index not in seen:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.nodes[i].inputs)
        if pool.index not in seen:
            raise _NoMapping(f"max unpool on a path that does not go through the max pool at "
                             f"{_where(pool)}, whose indices it reads")
        (kind, args), = found.rows
        args["of"] = _where(pool)      # a stand-in: the emitter writes the pool's row path
        undo("", _kind_shape(kind, args, x.shape)[1:])
        node = self._row(n, x, found.rows, **how)
        node.of = pool.index

    # -- functions and methods ----------------------------------------------
    def _function(self, n: fx.Node, tensors: list, inputs: list):
        target = n.target
        method = n.op == "call_method"
        args, kwargs = self.found.args[n]
        fname = target if method else getattr(target, "__name__", str(target))
        if (not method and target in ADD) or (method and target in ("add", "add_")):
            return self._binary(n, "add", inputs)
        if (not method and target in MUL) or (method and target in ("mul", "mul_")):
            return self._binary(n, "mul", inputs)
        if not method and target in CAT:
            return self._cat(n, args, kwargs)
        if (not method and target in SPLIT) or (method and target in ("chunk", "split",
                                                                      "tensor_split")):
            return self._split(n)
        if method and target == "expand" and isinstance(inputs[0], Param):
            self.value[n] = Expanded(inputs[0])
            return
        if not method and target is operator.getitem:
            source = self.value.get(n.args[0])
            if isinstance(source, Node) and source.op == "split":
                index = n.args[1]
                y = _per_sample(self.found.values[n])
                node = Node(0, "slice", [source.index], y, y, slot=int(index),
                            path=source.path)
                return self._add(node, n)
            if isinstance(source, Node) and isinstance(self.found.values.get(n.args[0]),
                                                       (tuple, list)):
                if n.args[1] == 0:      # (output, weights) of an attention: the output
                    self.value[n] = source
                    return
                raise _NoMapping(f"item {n.args[1]} of a module's outputs")
        if any(isinstance(i, (Param, Expanded)) for i in inputs):
            raise _NoMapping("computes on the module's parameters outside a layer")
        x = tensors[0]
        if len({t.index for t in tensors}) > 1:
            raise _NoMapping("combines several tensors")
        table = METHOD_MAPPERS if method else FUNCTION_MAPPERS
        mapper = table.get(target)
        if mapper is None:
            raise _NoMapping("")
        found = mapper(self._call(n, x))
        if found is LAYOUT:
            return self._layout(n, {n: n})
        if isinstance(found, (PoolIndices, Unpool)):
            how = dict(name=_op_name(fname, found.rows), what=_describe_target(n))
            return (self._pool_indices if isinstance(found, PoolIndices) else self._unpool)(
                n, x, found, how)
        self._row(n, x, found, name=_op_name(fname, found), what=_describe_target(n))

    def _binary(self, n, op, inputs):
        a, b = (self.value.get(x) if isinstance(x, fx.Node) else x for x in n.args[:2])
        if isinstance(a, Node) and isinstance(b, Node):
            if a.shape != b.shape and not (op == "mul" and _gate(a.shape, b.shape)):
                raise _NoMapping(f"{op} of {list(a.torch_shape)} and {list(b.torch_shape)}")
            if n.kwargs.get("alpha", 1) != 1:
                raise _NoMapping("add with alpha")
            y = _per_sample(self.found.values[n])
            shape = a.shape if len(a.shape) == len(y) and math.prod(a.shape) == math.prod(y) \
                else b.shape
            node = Node(0, op, [a.index, b.index], shape, y, path=_path(n.meta.get("scope")),
                        name=op)
            return self._add(node, n)
        param, x = (a, b) if isinstance(a, Param) else (b, a)
        if isinstance(param, Param) and isinstance(x, Node):
            shape = tuple(param.tensor.shape)
            self.used_state.add(param.target)
            path = _path(param.target)
            if op == "add" and len(x.shape) == 2 and shape == (1, *x.shape):
                return self._row(n, x, row("position_embedding"), path=path, stateful=True,
                                 name=path[-1], flat=True, what="a position embedding")
            if op == "mul" and len(x.shape) == 3 and shape == (x.shape[0], 1, 1):
                init = _constant(param.tensor, 1e-6)
                return self._row(n, x, row("layer_scale", init=init), path=path,
                                 stateful=True, name=path[-1], flat=True,
                                 what="a layer scale")
            raise _NoMapping(f"{op} of the input and a parameter of shape {list(shape)}")
        raise _NoMapping(f"{op} of a tensor and a constant")

    def _cat(self, n, args, kwargs):
        parts = list(n.args[0]) if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        values = [self.value.get(p) for p in parts]
        y = _per_sample(self.found.values[n])
        if len(values) == 2 and isinstance(values[0], Expanded) and isinstance(values[1], Node) \
                and len(values[1].shape) == 2 and dim in (1, -2):
            param = values[0].param
            self.used_state.add(param.target)
            path = _path(param.target)
            return self._row(n, values[1], row("class_token"), path=path, stateful=True,
                             name=path[-1], flat=True, what="a class token")
        if not all(isinstance(v, Node) for v in values):
            raise _NoMapping("cat of something other than tensors")
        if any(len(v.shape) != 3 for v in values) or dim not in (1, -3):
            raise _NoMapping(f"cat along dim {dim} (archcalc concatenates channels)")
        if len(values) == 1:
            self.value[n] = values[0]
            return
        node = Node(0, "cat", [v.index for v in values], y, y, path=_path(n.meta.get("scope")),
                    name="concat")
        return self._add(node, n)

    def _split(self, n):
        x = self._input_of(n)
        outs = self.found.values[n]
        if len(x.shape) != 3 or not all(_tensor(o) for o in outs):
            raise _NoMapping("a split of something other than a map")
        shapes = [_per_sample(o) for o in outs]
        if any(s[1:] != x.shape[1:] for s in shapes) or sum(s[0] for s in shapes) != x.shape[0]:
            raise _NoMapping("a split along another dimension than the channels")
        node = Node(0, "split", [x.index], x.shape, x.torch_shape,
                    sizes=tuple(s[0] for s in shapes), path=_path(n.meta.get("scope")),
                    name="split")
        return self._add(node, n)

    # -- reshapes -----------------------------------------------------------
    def _layout_chains(self) -> dict:
        """Consecutive reshapes (view, permute, transpose, ...) as one chain:
        node -> the chain's last node (itself for the last)."""
        layout = {n for n in self.gm.graph.nodes if self._is_layout(n)}
        follows = {}
        for n in self.gm.graph.nodes:
            if n not in layout:
                continue
            consumers = [u for u in n.users if _tensor_valued(self.found.values.get(u))]
            if len(consumers) == 1 and consumers[0] in layout and \
                    consumers[0].all_input_nodes and consumers[0].all_input_nodes[0] is n:
                follows[n] = consumers[0]
        chains = {}
        for n in layout:
            tail = n
            while tail in follows:
                tail = follows[tail]
            chains[n] = tail
        return chains

    def _is_layout(self, n: fx.Node) -> bool:
        if not _tensor(self.found.values.get(n)) or not n.all_input_nodes:
            return False
        first = n.all_input_nodes[0]
        if not _tensor(self.found.values.get(first)):
            return False
        if n.op == "call_function":
            return n.target in LAYOUT_FUNCTIONS
        if n.op == "call_method":
            return n.target in LAYOUT_METHODS
        if n.op == "call_module":
            module = self.modules.get(n.target)
            return _mapper_for(module) is _layout_module if module is not None else False
        return False

    def _layout(self, tail: fx.Node, chains):
        chain = [n for n in self.gm.graph.nodes if chains.get(n) is tail]
        head = chain[0]
        x = self.value.get(head.all_input_nodes[0])
        if x is _POISON:
            for n in chain:
                self.value[n] = _POISON
            return
        if not isinstance(x, Node):
            raise _NoMapping("computes on the module's parameters or buffers, not on its input")
        kinds = _classify_layout(chain, x, self.found, self.modules)
        if tail.op == "call_module" and len(chain) == 1:   # nn.Flatten: named as the module
            path = _path(tail.target)
            self._row(tail, x, kinds, path=path, name=path[-1] if path else "",
                      what="a reshape")
        else:
            self._row(tail, x, kinds, path=_path(tail.meta.get("scope", "")),
                      name=kinds[0][0] if kinds else "", what="a reshape")
        for n in chain[:-1]:
            self.value[n] = None

    # -- opaque rows ----------------------------------------------------------
    def _opaque(self, n: fx.Node, what: str, path: str):
        y = self.found.values.get(n)
        if not _tensor(y):
            raise _NoMapping("its output is not one tensor")
        x = self._input_of(n)
        if len({id(v) for v in (self.value.get(a) for a in n.all_input_nodes)
                if isinstance(v, Node)}) > 1:
            raise _NoMapping("it combines several tensors")
        y = _per_sample(y)
        module = self.modules.get(n.target) if n.op == "call_module" else None
        params = sum(p.numel() for p in module.parameters()) if module is not None else 0
        buffers = sum(b.numel() for b in module.buffers()) if module is not None else 0
        stateful = bool(params or buffers)
        spath = _path(path)
        if n.op == "call_module":
            row_name = spath[-1] if spath else n.name
        else:     # a function: named after it, in the module that calls it
            row_name = _clean_name(getattr(n.target, "__name__", str(n.target))).strip("_")
        var = re.sub(r"\W", "_", "_".join(spath if n.op == "call_module" else
                                           (*spath, row_name))).strip("_") + "_macs"
        if not var[0].isalpha():
            var = "m" + var
        base, k = var, 1
        while var in self.opaque_vars:
            k += 1
            var = f"{base}{k}"
        self.opaque_vars.append(var)
        if stateful:
            self.used_state.add(n.target)
            self.stateful_calls[n.target] = self.stateful_calls.get(n.target, 0) + 1
        if len(x.shape) == 2 and len(y) >= 2:
            shape = (math.prod(y[:-1]), y[-1])      # tokens stay tokens
        else:
            shape = tuple(y) if len(y) in (1, 2, 3) else None
        if shape is None:
            raise _NoMapping(f"a {len(y)}-d output")
        node = Node(0, "row", [x.index], shape, y,
                    [("opaque", {"op": what, "output": list(shape), "params": params,
                                 "buffers": buffers, "macs": var})],
                    spath, stateful, row_name or "opaque", what=what,
                    scoped=n.op != "call_module")
        self._add(node, n)


def _tensor_valued(v) -> bool:
    return _tensor(v) or (isinstance(v, (tuple, list)) and any(map(_tensor, v)))


def _gate(a, b) -> bool:
    """x * g with g of C x 1 x 1 (squeeze-and-excitation style)."""
    return len(a) == 3 and len(b) == 3 and a[0] == b[0] and (a[1:] == (1, 1) or b[1:] == (1, 1))


def _op_name(fname: str, kinds) -> str:
    base = kinds[0][0] if kinds else re.sub(r"\W+", "_", str(fname)).strip("_") or "op"
    return base


def _kind_shape(kind: str, args: dict, x: tuple) -> tuple:
    k = lookup(kind)
    try:
        a = k.read_args(_spec_args(args), {})
        k.check_input(x)
        return tuple(k.output_shape(a, x))
    except SpecError as e:
        raise _NoMapping(f"{kind}: {e.message}") from None


def _spec_args(args: dict) -> dict:
    return {k: v for k, v in args.items() if v is not None}


_LAYOUT_MEMO: dict = {}


def _classify_layout(chain: list, x: Node, found: Probed, modules) -> list:
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
        if isinstance(kinds, _NoMapping):
            raise _NoMapping(str(kinds))
        return [(k, dict(a)) for k, a in kinds]
    try:
        kinds = _run_layout(chain, x, found, modules)
    except _NoMapping as e:
        if key is not None:
            _LAYOUT_MEMO[key] = e
        raise
    if key is not None:
        _LAYOUT_MEMO[key] = kinds
    return [(k, dict(a)) for k, a in kinds]


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


def _run_layout(chain: list, x: Node, found: Probed, modules) -> list:
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
        raise _NoMapping("a reshape across the batch")
    m = t[0].flatten()
    if not torch.equal(t[1].flatten(), m + n_in):
        raise _NoMapping("a reshape that mixes the samples of a batch")
    t_out = tuple(int(d) for d in t.shape[1:])
    s = x.shape
    n_out = m.numel()
    ordered = n_out == n_in and torch.equal(m, torch.arange(n_in))
    if ordered:
        if _spec_matches(s, t_out) or tuple(s) == t_out:
            return []
        if len(s) == 3 and len(t_out) == 1:
            return row("flatten")
        raise _NoMapping(f"a reshape from {list(t_in)} to {list(t_out)}")
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
        nt, d = s
        if n_out == n_in and len(t_out) == 3 and t_out[0] == d and t_out[1] * t_out[2] == nt \
                and torch.equal(m, torch.arange(n_in).reshape(nt, d).t().flatten()):
            hw = (t_out[1], t_out[2])
            return row("to_map", size=None if hw[0] == hw[1] else list(hw))
        if t_out == (d,) and torch.equal(m, torch.arange(d)):
            return row("token_pool", mode="first")
    raise _NoMapping(f"a reshape from {list(t_in)} to {list(t_out)} that no kind describes")


_register_torchvision()
_register_own()


# --------------------------------------------------------------------------
# structure: the dataflow folded into sequences, merges, concats and splits


def _normalize_cats(nodes: list, output: Node) -> None:
    """cat is associative: a cat whose inputs begin with the inputs of an
    earlier cat takes that cat instead (DenseNet's running concatenation:
    cat(x0, f1, f2) = cat(cat(x0, f1), f2))."""
    atoms: dict[int, tuple] = {}
    for n in nodes:
        if n.op != "cat":
            continue
        flat = tuple(a for i in n.inputs for a in atoms.get(i, (i,)))
        atoms[n.index] = flat
        best = None
        for other, seq in atoms.items():
            if other != n.index and 1 < len(seq) < len(flat) and flat[:len(seq)] == seq \
                    and other < n.index and (best is None or len(seq) > len(atoms[best])):
                best = other
        if best is not None:
            n.inputs = [best, *flat[len(atoms[best]):]]


@dataclass
class MergeItem:
    op: str                  # add | mul
    branches: list           # two item lists ([] for the identity)
    node: Node
    post: str | None = None  # the activation after the add


@dataclass
class CatItem:
    branches: list
    node: Node


@dataclass
class SplitItem:
    branches: list
    sizes: tuple
    node: Node


class _Recover:
    def __init__(self, nodes: list, output: Node):
        self.nodes = nodes
        self.output = output
        self.anc = []
        for n in nodes:
            mask = 1 << n.index
            for i in n.inputs:
                mask |= self.anc[i]
            self.anc.append(mask)
        self.users: dict[int, list] = {n.index: [] for n in nodes}
        for n in nodes:
            for i in dict.fromkeys(n.inputs):
                self.users[i].append(n.index)
        self.seen: set = set()

    def inside(self, n: int, cur: int, stop: int) -> bool:
        return bool((self.anc[n] >> cur) & 1) and bool((self.anc[stop] >> n) & 1)

    def run(self) -> list:
        return self.seq(0, self.output.index)

    def fail(self, n: int, what: str):
        node = self.nodes[n]
        where = ".".join(node.path) or "the model's forward"
        raise SpecError(f"cannot fold the dataflow at {where} into spec structures: {what}")

    def seq(self, cur: int, stop: int) -> list:
        items = []
        while cur != stop:
            consumers = [u for u in self.users[cur] if self.inside(u, cur, stop)]
            if not consumers:
                self.fail(cur, "a path ends before the output")
            if len(consumers) == 1 and self.nodes[consumers[0]].op == "row":
                u = consumers[0]
                self.visit(u)
                items.append(self.nodes[u])
                cur = u
                continue
            if len(consumers) == 1 and self.nodes[consumers[0]].op == "split":
                item, cur = self.split(consumers[0], stop)
                items.append(item)
                continue
            join = self.join(cur, stop)
            items.append(self.structure(cur, join))
            cur = join
        return items

    def visit(self, n: int):
        if n in self.seen:
            self.fail(n, "two paths share a layer")
        self.seen.add(n)

    def join(self, cur: int, stop: int) -> int:
        """The first node every path from ``cur`` goes through."""
        pending = {cur: sum(1 for u in self.users[cur] if self.inside(u, cur, stop))}
        live = {cur}
        for u in range(cur + 1, stop + 1):
            if not self.inside(u, cur, stop):
                continue
            for i in dict.fromkeys(self.nodes[u].inputs):
                if i not in live:
                    if not self.inside(i, cur, stop):
                        self.fail(u, "a layer reads a tensor from before the fork")
                    continue
                pending[i] -= 1
                if pending[i] == 0:
                    live.discard(i)
            pending[u] = sum(1 for w in self.users[u] if self.inside(w, cur, stop))
            live.add(u)
            if live == {u} and u != cur:
                return u
        self.fail(cur, "its paths never meet")

    def structure(self, cur: int, join: int):
        node = self.nodes[join]
        self.visit(join)
        if node.op in ("add", "mul"):
            a, b = node.inputs
            if a == b:
                self.fail(join, f"{node.op} of a tensor with itself")
            return MergeItem(node.op, [[] if i == cur else self.seq(cur, i) for i in (a, b)],
                             node)
        if node.op == "cat":
            if len(set(node.inputs)) != len(node.inputs):
                self.fail(join, "a concat of one tensor twice")
            return CatItem([[] if i == cur else self.seq(cur, i) for i in node.inputs], node)
        self.fail(join, f"the paths meet at a {node.rows[0][0] if node.rows else node.op} "
                        "that takes one input")

    def split(self, s: int, stop: int):
        node = self.nodes[s]
        self.visit(s)
        slices = {self.nodes[u].slot: u for u in self.users[s] if self.inside(u, s, stop)}
        if sorted(slices) != list(range(len(node.sizes))):
            self.fail(s, "a split whose slices are not all used")
        join = self.join(s, stop)
        cat = self.nodes[join]
        if cat.op != "cat" or len(cat.inputs) != len(slices):
            self.fail(s, "a split whose slices are not concatenated again")
        self.visit(join)
        branches = []
        for slot, i in enumerate(cat.inputs):
            start = slices[slot]
            if not self.inside(i, start, join) and i != start:
                self.fail(s, "a split whose slices are concatenated in another order")
            self.visit(start)
            branches.append([] if i == start else self.seq(start, i))
        return SplitItem(branches, node.sizes, cat), join


# --------------------------------------------------------------------------
# emission: items -> spec entries, nested and named by the module paths


class _Name:
    """A stateless row's name, chosen when its level is complete (stateful
    names are fixed; these avoid them)."""

    def __init__(self, preferred: str):
        self.preferred = preferred
        self.value = None


class _Level:
    def __init__(self, path: tuple):
        self.path = path
        self.fixed: set = set()
        self.deferred: list = []

    def fix(self, name: str, what: str):
        if name in self.fixed:
            where = ".".join((*self.path, name))
            raise SpecError(f"{where}: two layers of this level would share the name {name!r}")
        self.fixed.add(name)
        return name

    def defer(self, preferred: str) -> _Name:
        name = _Name(preferred)
        self.deferred.append(name)
        return name

    def resolve(self):
        used = set(self.fixed)
        for name in self.deferred:
            base = _clean_name(name.preferred)
            candidate, k = base, 0
            while candidate in used or candidate in RESERVED:
                k += 1
                candidate = f"{base}_{k}"
            used.add(candidate)
            name.value = candidate


def _clean_name(text: str) -> str:
    text = re.sub(r"\W+", "_", str(text)).strip("_")[:56] or "op"
    if not re.match(r"[A-Za-z0-9]", text):
        text = "op" + text
    return text


def _check_module_name(name: str, path: tuple) -> str:
    if not NAME.fullmatch(name) or name in RESERVED:
        raise SpecError(f"{'.'.join(path) or name}: the module name {name!r} cannot name a "
                        "spec row (letters, digits and _; not a torch.nn.Module attribute), "
                        "so the spec could not keep its state_dict keys")
    return name


def _stateful_paths(items) -> list:
    out = []
    for item in items:
        if isinstance(item, Node):
            if item.stateful:
                out.append(item.path)
        else:
            for branch in item.branches:
                out.extend(_stateful_paths(branch))
    return out


def _scopes(items) -> list:
    out = []
    for item in items:
        if isinstance(item, Node):
            out.append(item.path)
        else:
            for branch in item.branches:
                out.extend(_scopes(branch))
    return out


def _home(item, prefix: tuple):
    """The child level of ``prefix`` an item belongs to: (name, firm?), or
    (None, firm) for this level itself."""
    paths = _stateful_paths([item])
    n = len(prefix)
    if paths:
        for p in paths:
            if p[:n] != prefix or len(p) == n:
                raise SpecError(f"{'.'.join(p)}: a layer called from outside its module's "
                                f"level ({'.'.join(prefix) or 'the model'}); the spec cannot "
                                "keep its name")
        firsts = {p[n] for p in paths}
        if not isinstance(item, Node):
            # a structure whose stateless rows live elsewhere (a concat of a max
            # pool in b1 and a conv in b2) belongs to the level above both
            firsts |= {p[n] if len(p) > n else None for p in _levels([item]) if p[:n] == prefix}
        if len(firsts) == 1 and all(len(p) > n + 1 for p in paths):
            if _skip_called_here(item, prefix, next(iter(firsts))):
                return None, True
            return firsts.pop(), True
        return None, True
    scopes = [p for p in _levels([item]) if p[:n] == prefix and len(p) > n]
    firsts = {p[n] for p in scopes}
    if len(firsts) == 1 and scopes:
        return firsts.pop(), False
    return None, False


def _skip_called_here(item, prefix: tuple, child: str) -> bool:
    """y + skip(y) added in this level's forward: the add belongs here, with
    `skip` as its shortcut (not a residual block named skip)."""
    return isinstance(item, MergeItem) and item.op == "add" and not all(item.branches) \
        and _is_shortcut_name(child) and tuple(_levels([item.node])[0]) == tuple(prefix)


def _levels(items) -> list:
    """The module level each row of items was called in: a function's scope,
    a module's parent."""
    out = []
    for item in items:
        if isinstance(item, Node):
            out.append(item.path if item.scoped else item.path[:-1])
        else:
            for branch in item.branches:
                out.extend(_levels(branch))
    return out


class _Ref:
    """A max unpool's `of`: the path of its max pool's row, once names are chosen."""

    def __init__(self, rows: dict, pool: int):
        self.rows, self.pool = rows, pool

    @property
    def value(self) -> str:
        prefix, name = self.rows[self.pool]
        return ".".join((*prefix, name.value if isinstance(name, _Name) else name))


class _Emitter:
    def __init__(self, bn_default: dict):
        self.bn_default = bn_default
        self.rows: dict = {}      # node index -> (level path, its row's name or _Name)

    def named(self, node: Node, prefix: tuple, name, entry: dict) -> dict:
        """Note where a row sits; a max unpool's `of` names its pool's row."""
        self.rows[node.index] = (prefix, name)
        if node.of is not None:
            if node.of not in self.rows:
                raise SpecError(f"{'.'.join(node.path) or 'the model'}: a max unpool before "
                                "the max pool whose indices it reads")
            entry["of"] = _Ref(self.rows, node.of)
        return entry

    def level(self, items, prefix: tuple) -> list:
        level = _Level(prefix)
        entries = self.items(items, prefix, level)
        level.resolve()
        return _fuse_posts(entries)

    def items(self, items, prefix, level: _Level) -> list:
        items = _attach_posts(items, prefix)
        homes = [_home(item, prefix) for item in items]
        # a stateless item joins the level of a firm neighbour it belongs to
        resolved = []
        for i, (home, firm) in enumerate(homes):
            if home is not None and not firm:
                before = next((h for h, f in reversed(homes[:i]) if f), None)
                after = next((h for h, f in homes[i + 1:] if f), None)
                if home not in (before, after):
                    home = None
            resolved.append(home)
        groups = []
        for item, home in zip(items, resolved):
            if home is not None and groups and groups[-1][0] == home:
                groups[-1][1].append(item)
            else:
                groups.append((home, [item]))
        # one level per name: stateless items between two groups of a level join it
        merged = []
        for home, group in groups:
            if home is not None:
                back = next((k for k in range(len(merged) - 1, -1, -1)
                             if merged[k][0] == home), None)
                if back is not None:
                    between = merged[back + 1:]
                    if any(_stateful_paths(g) for _, g in between):
                        where = ".".join((*prefix, home))
                        raise SpecError(f"{where} is called in two places with other layers "
                                        "in between; a spec level is one place")
                    for _, g in between:
                        merged[back][1].extend(g)
                    merged[back][1].extend(group)
                    del merged[back + 1:]
                    continue
            merged.append((home, list(group)))
        entries = []
        for home, group in merged:
            if home is None:
                for item in group:
                    entries.append(self.item(item, prefix, level))
                continue
            inner = (*prefix, home)
            if len(group) == 1 and isinstance(group[0], Node) and not group[0].stateful \
                    and len(group[0].rows) == 1 and NAME.fullmatch(home):
                # a stateless module computed in its own forward (a Permute): one row
                # named after it
                level.fix(home, "row")
                entries.append(self.named(group[0], prefix, home,
                                          {"name": home, **_entry(*group[0].rows[0])}))
                continue
            name = level.fix(_check_module_name(home, (*prefix, home)), "level")
            if len(group) == 1 and not isinstance(group[0], Node) and \
                    inner not in _stateful_paths(group) and _home(group[0], inner)[0] is None:
                sub = _Level(inner)
                sub.fix(_structure_row(group[0]), "merge")   # the structure's own row
                entry = self.structure(group[0], inner, sub, name=name, flat=False)
                sub.resolve()
                entry = _fuse_posts([entry])[0]
            else:
                entry = {"name": name, "layers": self.level(group, inner)}
            entries.append(entry)
        return entries

    def item(self, item, prefix, level: _Level) -> dict:
        if isinstance(item, Node):
            return self.row(item, prefix, level)
        return self.structure(item, prefix, level, name=None, flat=True)

    def row(self, node: Node, prefix, level: _Level) -> dict:
        if node.stateful:
            name = level.fix(_check_module_name(node.path[-1], node.path), "row")
        else:
            rel = node.path[len(prefix):] if node.path[:len(prefix)] == prefix else ()
            preferred = rel[0] if len(rel) == 1 and node.op == "row" and \
                node.name == rel[0] else (node.name or node.rows[0][0])
            name = level.defer(preferred)
        entries = [_entry(kind, args) for kind, args in node.rows]
        if len(entries) > 1:   # one call, several rows (a mean: pool, then flatten)
            first = {"name": name, **entries[0]}
            rest = [{"name": level.defer(f"{node.rows[0][0]}_{kind}"), **e}
                    for e, (kind, _) in zip(entries[1:], node.rows[1:])]
            return {"_rows": [first, *rest]}
        entry = self.named(node, prefix, name, {"name": name, **entries[0]})
        if node.flat:
            entry["flat"] = True
        return entry

    def structure(self, item, prefix, level: _Level, name, flat: bool) -> dict:
        """A merge, concat or split. flat: its parts sit in ``level`` (the
        enclosing one) and ``name`` is its merge row's; else ``level`` is its
        own, named ``name``."""
        if isinstance(item, MergeItem):
            entry = self.merge(item, prefix, level, flat)
            if item.post:
                entry = {"activation": item.post, **entry}
        elif isinstance(item, CatItem):
            entry = self.concat(item, prefix, level)
        else:
            entry = self.concat(item, prefix, level, sizes=item.sizes)
        if flat:
            entry = {"name": level.defer(_structure_name(item)), "flat": True, **entry}
        else:
            entry = {"name": name, **entry}
        return entry

    def merge(self, item: MergeItem, prefix, level: _Level, flat: bool) -> dict:
        a, b = item.branches
        if item.op == "mul":
            if a and b:
                raise SpecError(f"{'.'.join(item.node.path) or 'the model'}: a product of two "
                                "computed tensors; archcalc's gate is x * body(x)")
            return {"scale": self.items(a or b, prefix, level)}
        if not a or not b:
            body = a or b
            named = self._shortcut_level(body, prefix)
            if _is_shortcut_name(named):
                # y + skip(y): the module says it is the shortcut; the body is y itself
                level.fix(_check_module_name(named, (*prefix, named)), "shortcut")
                entry = {"residual": [], "shortcut": self.level(body, (*prefix, named))}
                if named != "shortcut":
                    entry["shortcut_name"] = named
                return entry
            entry = {"residual": self.items(body, prefix, level)}
            if flat:
                entry["shortcut"] = "identity"
            return entry
        options = [(body, short) for body, short in ((a, b), (b, a))
                   if self._shortcut_level(short, prefix) is not None]
        if not options:
            raise SpecError(f"{'.'.join(item.node.path) or 'the model'}: both paths of an add "
                            "have layers directly in this module; a spec's shortcut is a "
                            "module of its own (e.g. downsample)")
        # the path whose module is named as a shortcut (skip, downsample) is the
        # shortcut; else the shorter one
        named = [o for o in options if _is_shortcut_name(self._shortcut_level(o[1], prefix))]
        body, short = min(named or options, key=lambda o: _count(o[1]))
        name = self._shortcut_level(short, prefix)
        level.fix(_check_module_name(name, (*prefix, name)), "shortcut")
        entry = {"residual": self.items(body, prefix, level)}
        if _is_projection(short, (*prefix, name)):
            entry["shortcut"] = "auto"
        elif len(short) == 1 and isinstance(short[0], Node) and len(short[0].rows) == 1 and \
                short[0].rows[0][0] == "pad_shortcut":
            entry["shortcut"] = "pad"      # option A: what 'pad' builds, from the shapes
        else:
            entry["shortcut"] = self.level(short, (*prefix, name))
        if name != "shortcut":
            entry["shortcut_name"] = name
        if entry["shortcut"] == "auto" and not flat:
            del entry["shortcut"]
        return entry

    @staticmethod
    def _shortcut_level(items, prefix):
        """The child level of ``prefix`` that holds all of items' layers (stateless
        ones by the level they were called in, or the module they are)."""
        paths = _stateful_paths(items)
        n = len(prefix)
        if paths:
            firsts = {p[n] for p in paths if p[:n] == prefix and len(p) > n + 1}
            if len(firsts) == 1 and all(len(p) > n + 1 for p in paths):
                return firsts.pop()
            return None
        if len(items) == 1 and isinstance(items[0], Node) and not items[0].scoped and \
                len(items[0].path) == n + 1 and items[0].path[:n] == prefix:
            return items[0].path[n]        # a stateless module of its own (PadShortcut)
        levels = _levels(items)
        firsts = {p[n] for p in levels if p[:n] == prefix and len(p) > n}
        if items and len(firsts) == 1 and all(p[:n] == prefix and len(p) > n for p in levels):
            return firsts.pop()
        return None

    def concat(self, item, prefix, level: _Level, sizes=None) -> dict:
        if sizes is None and len(item.branches) == 2 and not item.branches[0] \
                and item.branches[1]:
            return {"dense": self.items(item.branches[1], prefix, level)}
        branches = []
        for i, branch in enumerate(item.branches, 1):
            name = self._shortcut_level(branch, prefix)
            if not branch:
                level.fix(f"b{i}", "branch")
                branches.append([])
            elif name is not None and not any(p[:len(prefix) + 1] == (*prefix, name) and
                                               len(p) == len(prefix) + 1
                                               for p in _stateful_paths(branch)):
                level.fix(_check_module_name(name, (*prefix, name)), "branch")
                branches.append({"name": name, "layers": self.level(branch, (*prefix, name))})
            elif not _stateful_paths(branch):
                level.fix(f"b{i}", "branch")
                branches.append(self.level(branch, (*prefix, f"b{i}")))
            else:
                branches.append({"flat": True, "layers": self.items(branch, prefix, level)})
        key = "concat" if sizes is None else "split"
        entry = {key: branches}
        if sizes is not None and len(set(sizes)) != 1:
            entry["sizes"] = list(sizes)
        return entry


def _attach_posts(items, prefix) -> list:
    """A residual and the activation after it (of the same module) as one
    item: the activation becomes the merge's `activation`."""
    out = []
    for item in items:
        prev = out[-1] if out else None
        if isinstance(prev, MergeItem) and prev.op == "add" and prev.post is None and \
                isinstance(item, Node) and not item.stateful and len(item.rows) == 1 and \
                item.rows[0][0] in ACTIVATIONS and _plain(_entry(*item.rows[0]),
                                                          item.rows[0][0]) and \
                _home(item, prefix)[0] == _home(prev, prefix)[0]:
            prev.post = item.rows[0][0]
            continue
        out.append(item)
    return out


def _structure_row(item) -> str:
    """The name graph.py gives the merge row of a structure with a level of its own."""
    if isinstance(item, MergeItem):
        return "scale" if item.op == "mul" else "add"
    if isinstance(item, CatItem) and len(item.branches) == 2 and not item.branches[0]:
        return "concat"    # dense
    return "concat"


def _structure_name(item) -> str:
    if isinstance(item, MergeItem):
        return item.op
    return "concat"


SHORTCUT_NAMES = re.compile(r"(skip|shortcut|short_cut|downsample|proj|projection)"
                            r"(_\w+|\d+)?", re.I)


def _is_shortcut_name(name) -> bool:
    """A module named as a shortcut: skip, shortcut, downsample, proj (and
    skip_1, skip_connection, ...)."""
    return isinstance(name, str) and SHORTCUT_NAMES.fullmatch(name) is not None


def _count(items) -> int:
    total = 0
    for item in items:
        total += 1 if isinstance(item, Node) else sum(_count(b) for b in item.branches)
    return total


def _is_projection(items, prefix) -> bool:
    """The shortcut 'auto' builds: 1x1 conv without bias (strided), batch norm
    with PyTorch's defaults, as modules 0 and 1 of the shortcut's level."""
    if len(items) != 2 or not all(isinstance(i, Node) and i.op == "row" and len(i.rows) == 1
                                  for i in items):
        return False
    (k1, a1), (k2, a2) = items[0].rows[0], items[1].rows[0]
    if items[0].path != (*prefix, "0") or items[1].path != (*prefix, "1"):
        return False
    if k1 != "conv" or k2 != "batch_norm":
        return False
    conv_ok = a1.get("kernel") == 1 and not a1.get("bias", True) and \
        a1.get("padding", 0) in (0, "valid") and a1.get("dilation", 1) == 1 and \
        a1.get("groups", 1) == 1 and not a1.get("depthwise") and \
        a1.get("padding_mode", "zeros") == "zeros" and isinstance(a1.get("stride", 1), int)
    bn_ok = a2.get("affine", True) and a2.get("eps", 1e-5) == 1e-5 and \
        a2.get("momentum", 0.1) == 0.1
    return conv_ok and bn_ok


def _entry(kind: str, args: dict) -> dict:
    """A row table: {kind = primary, other non-default arguments}."""
    k = lookup(kind)
    out = {}
    for key, value in args.items():
        if value is None or key not in k.args:
            continue
        default = k.args[key].default
        if default is not REQUIRED and default is not None and _same(value, default):
            continue
        if kind in ("maxpool", "avgpool", "lp_pool", "max_unpool") and key == "stride" and \
                _same(value, args.get("kernel")):
            continue
        out[key] = value
    primary = k.primary
    if primary and primary in out:
        return {kind: out.pop(primary), **out}
    return {kind: True, **out}


def _same(a, b) -> bool:
    norm = (lambda v: [v, v] if isinstance(v, int) and not isinstance(v, bool) else v)
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return norm(a) == norm(b)


def _flatten_rows(entries: list) -> list:
    out = []
    for e in entries:
        out.extend(e["_rows"] if "_rows" in e else [e])
    return out


def _fuse_posts(entries: list) -> list:
    """A residual followed by an activation of the same level: the activation
    after the add (torchvision's `out = relu(out + identity)`)."""
    entries = _flatten_rows(entries)
    out = []
    for e in entries:
        prev = out[-1] if out else None
        kind = _row_kind(e)
        if prev is not None and any(k in prev for k in ("residual", "dense")) and \
                "activation" not in prev and kind in ACTIVATIONS and _plain(e, kind) and \
                not e.get("flat"):
            prev["activation"] = kind
            continue
        out.append(e)
    return out


def _row_kind(e: dict):
    for key in e:
        if key not in ("name", "flat", "_rows") and key in _KIND_NAMES():
            return key
    return None


_KINDS_CACHE: list = []


def _KIND_NAMES():
    if not _KINDS_CACHE:
        from ..layers import REGISTRY
        _KINDS_CACHE.append(set(REGISTRY))
    return _KINDS_CACHE[0]


def _plain(e: dict, kind: str) -> bool:
    """An activation row with its kind's default arguments (in place aside)."""
    return all(k in ("name", kind, "inplace") for k in e) and e[kind] is True


def _fuse_levels(entries: list, fused: dict) -> list:
    """_fuse_level on every named level, innermost first (names resolved).
    ``fused``: [defaults.KIND] of the fusable kinds (_fused_defaults)."""
    out = []
    for e in entries:
        if isinstance(e, list):
            out.append(_fuse_levels(e, fused))
            continue
        if not isinstance(e, dict):
            out.append(e)
            continue
        for k in ("layers", "residual", "scale", "dense", "shortcut"):
            if isinstance(e.get(k), list):
                e[k] = _fuse_levels(e[k], fused)
        for k in ("concat", "split"):
            if isinstance(e.get(k), list):
                e[k] = [dict(b, layers=_fuse_levels(b["layers"], fused))
                        if isinstance(b, dict) else _fuse_levels(b, fused)
                        for b in e[k]]
        if "layers" in e and isinstance(e.get("name"), str) and not e.get("flat"):
            e = _fuse_level(e, fused)
        out.append(e)
    return out


def _fuse_level(entry: dict, defaults: dict) -> dict:
    """torchvision's Conv2dNormActivation (conv, norm, activation as modules
    0, 1, 2 of one level) as one row with batch_norm and activation: it builds
    the same nn.Sequential. The norm and the activation fuse when their
    arguments are the [defaults.KIND] fused rows read."""
    layers = entry["layers"]
    if not 2 <= len(layers) <= 3 or [e.get("name") for e in layers] != \
            [str(i) for i in range(len(layers))]:
        return entry
    first, rest = layers[0], layers[1:]
    kind = _row_kind(first)
    if len(layers) == 2 and kind == "flatten" and _row_kind(rest[0]) in ("fc", "dropconnect") \
            and set(first) == {"name", "flatten"}:
        # fc (dropconnect) on a C x H x W map builds nn.Sequential(Flatten, Linear): the
        # same modules
        return {"name": entry["name"], **{k: v for k, v in rest[0].items() if k != "name"}}
    if kind is None or not lookup(kind).weighted or first.get("flat"):
        return entry     # only weighted rows (conv, fc, conv_table, ...) fuse
    fused = {k: v for k, v in first.items() if k != "name"}
    if rest and _row_kind(rest[0]) == "batch_norm":
        bn = {k: v for k, v in rest[0].items() if k not in ("name", "batch_norm")}
        if bn != defaults.get("batch_norm", {}):
            return entry
        fused["batch_norm"] = True
        rest = rest[1:]
    if rest:
        act = _row_kind(rest[0])
        # an nn.ReLU() that is not in place stays a row: fused, it would work in place
        if act not in ACTIVATIONS or len(rest) > 1 or "inplace" in rest[0] or \
                _activation_args(rest[0], act) != defaults.get(act, {}):
            return entry
        fused["activation"] = act
    if len(fused) == len(first) - 1:
        return entry
    return {"name": entry["name"], **fused}


def _activation_args(e: dict, kind: str) -> dict:
    """An activation row's arguments beyond its kind (in place aside)."""
    args = {k: v for k, v in e.items() if k not in ("name", kind, "inplace")}
    if e[kind] is not True:    # a primary argument's value
        args[kind] = e[kind]
    return args


# --------------------------------------------------------------------------
# the import


@dataclass
class Imported:
    text: str                     # the spec's TOML
    name: str
    params: int                   # the module's parameters the forward uses
    unused: dict                  # module path -> parameters the forward never reaches
    opaque: list                  # variables of the opaque rows' MACs
    tracer: str = "torch.fx"      # or "torch.export", where fx cannot trace the forward
    fx_error: str | None = None   # why fx could not


def from_module(module: nn.Module, input=(3, 224, 224), *, name: str | None = None,
                source: str | None = None, allow_opaque: bool = False):
    """The spec of a PyTorch module: ``archcalc.from_module(model, input=(3, 224, 224))``."""
    from ..spec.loader import loads
    done = import_module(module, input, name=name, source=source, allow_opaque=allow_opaque)
    return loads(done.text, file=f"<import {done.name}>")


def import_module(module: nn.Module, input=(3, 224, 224), *, name: str | None = None,
                  source: str | None = None, allow_opaque: bool = False,
                  label: str | None = None) -> Imported:
    from ..spec import writer
    if not isinstance(module, nn.Module):
        raise SpecError(f"from_module takes a torch.nn.Module. Received: "
                        f"{type(module).__name__}")
    input_shape = _input_shape(input)
    label = label or type(module).__name__
    name = name or label.rpartition(":")[2] or type(module).__name__
    training = module.training
    module.eval()
    try:
        opaque: set = set()
        tracing = _Tracing(module, input_shape, label)
        for _ in range(8):
            gm = tracing.graph(opaque)
            found = _probe_or_fail(gm, input_shape, label, module)
            builder = _GraphBuilder(gm, found, input_shape, allow_opaque, opaque)
            builder.run()
            # an op that cannot be a row of its own (it computes on parameters, or
            # on several tensors): its module is kept whole, as one opaque row
            wider = {p for p in builder.widen if p not in opaque}
            if not allow_opaque or not wider:
                break
            opaque |= wider
    finally:
        module.train(training)
    if builder.unsupported:
        raise Unsupported(builder.unsupported, f"cannot import {label}")
    nodes, output = builder.nodes, builder.output
    _normalize_cats(nodes, output)
    recover = _Recover(nodes, output)
    items = recover.run()
    reached = {nodes[i] for i in recover.seen}
    fused = _fused_defaults(reached)
    bn_default = fused.get("batch_norm", {})
    classes = {tuple(p.split(".")) if p else (): type(m).__name__
               for p, m in module.named_modules()}
    entries = _fuse_levels(_resolve_names(_Emitter(bn_default).level(items, ())), fused)
    _annotate_classes(entries, (), classes)
    params, unused = _parameters(module, reached)
    notes = [f"Imported by archcalc from {label} at input {'x'.join(map(str, input_shape))}: "
             f"every row is a call of the module's forward, named by its module path "
             f"(its state_dict keys)."]
    if tracing.fx_error is not None:
        notes.append(f"Traced with torch.export at that input, since torch.fx cannot trace "
                     f"the forward ({tracing.fx_error}): what the forward decides from "
                     "shapes is fixed to that input's.")
    if unused:
        total = sum(unused.values())
        notes.append(f"Left out: {', '.join(unused)} ({total:,} params) are not used by the "
                     "forward at inference (e.g. auxiliary classifiers used in training).")
    if builder.opaque_vars:
        notes.append(f"Incomplete: {len(builder.opaque_vars)} opaque row(s) without a kind; "
                     "their MACs are the unbound variable(s) "
                     f"{', '.join(builder.opaque_vars)}.")
    header = {"name": name, "input": list(input_shape),
              "source": source or f"{label}, imported by archcalc", "notes": notes}
    text = writer.write(header, entries, {v: "?" for v in builder.opaque_vars},
                        fused=fused)
    return Imported(text, name, params, unused, list(builder.opaque_vars), tracing.tracer,
                    tracing.fx_error)


def _input_shape(input) -> tuple:
    if isinstance(input, str):
        from ..graph import parse_shape
        input = parse_shape(input)
    if isinstance(input, int):
        input = (input,)
    shape = tuple(input)
    if not shape or len(shape) not in (1, 3) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise SpecError(f"input takes (C, H, W) or (F,) with positive sizes. "
                        f"Received: {input!r}")
    return shape


def _probe_or_fail(gm, input_shape, label, module) -> Probed:
    shape = "x".join(map(str, (PROBE_BATCH, *input_shape)))
    try:
        return probe(gm, input_shape, meta=True)
    except Exception as meta_error:  # noqa: BLE001 - retried on real tensors
        on_meta = any(p.device.type == "meta" for p in module.parameters())
        if on_meta:
            raise ImportFailure(f"running {label} on a {shape} input raised "
                                f"{type(meta_error).__name__}: {_first_line(meta_error)}") \
                from None
    try:
        return probe(gm, input_shape, meta=False)
    except Exception as e:  # noqa: BLE001 - the user's forward
        raise ImportFailure(f"running {label} on a {shape} input raised "
                            f"{type(e).__name__}: {_first_line(e)}") from None


def _fused_defaults(nodes) -> dict:
    """Per fusable kind (batch norm, the activations), the arguments most of
    its rows share: a row's fused batch norm and activation read them from
    [defaults.KIND] (a channel-wise PReLU after every conv: per_channel)."""
    seen: dict = {}
    for n in nodes:
        for kind, args in n.rows:
            if kind == "batch_norm" or kind in ACTIVATIONS:
                entry = _entry(kind, args)
                entry.pop("inplace", None)
                seen.setdefault(kind, Counter())[tuple(sorted(entry.items()))] += 1
    out = {}
    for kind, counts in seen.items():
        common = dict(counts.most_common(1)[0][0])
        common.pop(kind, None)
        if common or kind == "batch_norm":
            out[kind] = common
    return out


def _parameters(module: nn.Module, reached) -> tuple:
    """(parameters the spec holds, {module path: parameters left out})."""
    used = set()
    for n in reached:
        if n.stateful:
            used.add(".".join(n.path))
    total, unused = 0, {}
    for pname, p in module.named_parameters():
        owner = pname.rpartition(".")[0]
        if pname in used or any(owner == u or owner.startswith(u + ".") for u in used):
            total += p.numel()
        else:
            top = _top_unused(pname, used)
            unused[top] = unused.get(top, 0) + p.numel()
    return total, unused


def _top_unused(pname: str, used: set) -> str:
    parts = pname.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if not any(u == prefix or u.startswith(prefix + ".") for u in used):
            return prefix
    return pname


def _resolve_names(v):
    if isinstance(v, (_Name, _Ref)):
        return v.value
    if isinstance(v, dict):
        return {k: _resolve_names(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_resolve_names(x) for x in v]
    return v


def _annotate_classes(entries, prefix, classes):
    """Each named level's module class (the writer names blocks after it)."""
    for e in entries:
        if not isinstance(e, dict):
            if isinstance(e, list):
                _annotate_classes(e, prefix, classes)
            continue
        name = e.get("name")
        flat = e.get("flat")
        inner = prefix if flat or not isinstance(name, str) else (*prefix, name)
        if not flat and isinstance(name, str) and inner in classes:
            e["_class"] = classes[inner]
        for k in ("layers", "residual", "scale", "dense"):
            if isinstance(e.get(k), list):
                _annotate_classes(e[k], inner if k == "layers" or True else prefix, classes)
        for k in ("concat", "split"):
            for b in e.get(k, []) or []:
                if isinstance(b, dict):
                    bn = b.get("name")
                    sub = (*inner, bn) if bn else inner
                    if bn and sub in classes:
                        b["_class"] = classes[sub]
                    _annotate_classes(b.get("layers", []), sub, classes)
                elif isinstance(b, list):
                    _annotate_classes(b, inner, classes)
        short = e.get("shortcut")
        if isinstance(short, list):
            _annotate_classes(short, (*inner, e.get("shortcut_name", "shortcut")), classes)
