"""The dataflow graph the import builds: one FlowNode per tensor value (a row, a
merge, a concat, a split), and the small helpers that read probed shapes."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.fx as fx

from ...errors import SpecError
from ...layers import lookup
from .mappers import NoMapping, rows
from .probing import ProbedShape


# --------------------------------------------------------------------------
# the graph of tensor values, each node one row, a merge, a concat or a split


@dataclass
class FlowNode:
    """One tensor value of the dataflow graph (fx.Node is a call): a row, a
    merge, a concat, a split or one of its slices, or the input."""
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
    tensor: torch.Tensor      # as the forward sees it (a view of the stored one)
    stored: tuple | None = None     # the shape the state_dict holds, where a view differs


@dataclass
class Expanded:
    """param.expand(batch, -1, -1): a class token on its way to a cat."""
    param: Param


@dataclass
class _Pooled:
    """The (values, indices) pair of a max pool's row: items 0 and 1 only."""
    pool: FlowNode


@dataclass
class _Indices:
    """A max pool's indices: only a max unpool reads them (its `of`)."""
    pool: FlowNode


def _where(node: FlowNode) -> str:
    return ".".join(node.path) or "the model's forward"


def _tensor(v) -> bool:
    return isinstance(v, ProbedShape)


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


def _tensor_valued(v) -> bool:
    return _tensor(v) or (isinstance(v, (tuple, list)) and any(map(_tensor, v)))


def _kind_shape(kind: str, args: dict, x: tuple) -> tuple:
    k = lookup(kind)
    try:
        a = k.read_args(_spec_args(args), {})
        k.check_input(x)
        return tuple(k.output_shape(a, x))
    except SpecError as e:
        raise NoMapping(f"{kind}: {e.message}") from None


def _spec_args(args: dict) -> dict:
    return {k: v for k, v in args.items() if v is not None}


@dataclass(frozen=True)
class _Derived:
    """A tensor computed from the module's parameters and buffers alone (a
    position embedding resampled, a relative position bias, a rotary table): no
    row of its own; the first opaque row that reads it holds its parameters
    and its measured work."""
    reads: tuple        # parameter and buffer names
    nodes: tuple        # the fx calls that compute it, in order
