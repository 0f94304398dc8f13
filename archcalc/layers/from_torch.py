"""What a kind's ``from_torch`` hook needs to map a PyTorch module back to its
rows, without importing torch: the hook reads the module's attributes only.

A kind that maps back names the torch classes it reads in ``torch_modules``
(dotted paths, e.g. ``"torch.nn.Conv2d"``) and defines
``from_torch(self, call, module) -> [(kind, args), ...]``; ``call`` carries
what the import measured (``call.x``: the input's spec shape per sample,
``call.args``/``call.kwargs``: the call's arguments). The importer
(archcalc.torch.importer.mappers) finds the hooks through the registry.
"""
from __future__ import annotations


class NoMapping(Exception):
    """This call has no faithful kind (the reason says what differs)."""


def rows(*items):
    return [(kind, args) for kind, args in items]


def row(kind, **args):
    return [(kind, args)]


def pair(v):
    """A torch size argument (int or 1- or 2-tuple) as the spec writes it."""
    if isinstance(v, (list, tuple)):
        if len(v) == 1:
            return int(v[0])
        if len(v) != 2:
            raise NoMapping(f"a {len(v)}-d size")
        a, b = int(v[0]), int(v[1])
        return a if a == b else [a, b]
    return int(v)


def padding(v):
    """A torch padding: "same"/"valid" as given, sizes as pair() writes them."""
    if isinstance(v, str):
        return v
    return pair(v)


def require_chw(call, what: str):
    """The kind acts on a C x H x W map: another input has no mapping."""
    if len(call.x) != 3:
        raise NoMapping(f"{what} on a {len(call.x)}-d input")


def reads_state(mapper):
    """Marks a functional mapper whose call may read a module's parameters or
    buffers (F.batch_norm(x, self.running_mean, ..., self.weight, self.bias)):
    the importer makes the call that module's one stateful row, named by the
    module's path so the spec's names are its state_dict keys."""
    mapper.reads_state = True
    return mapper


def given(value) -> bool:
    """An optional tensor argument was passed (a weight, a bias)."""
    return value is not None


def require_learned(call, what: str, *values):
    """Each given tensor is one of the module's learned parameters: a fixed
    buffer (a blur pool's filter as a conv's weight) is not what the kind
    counts as its params."""
    for value in values:
        if given(value) and not call.learned(value):
            raise NoMapping(f"{what} with a fixed tensor (a buffer) where the kind learns "
                            "a parameter")
