"""Naming and levels: rows named and nested by their module paths (so the built
model has the original's state_dict keys); stateless rows get unique names."""
from __future__ import annotations

import re

from ...errors import SpecError
from ...graph import NAME, RESERVED
from .dataflow import FlowNode
from .structure import MERGE_OPS, MergeItem, Wired


# --------------------------------------------------------------------------
# emission: items -> spec entries, nested and named by the module paths


class _Name:
    """A stateless row's name, chosen when its level is complete (stateful
    names are fixed; these avoid them)."""

    def __init__(self, preferred: str):
        self.preferred = preferred
        self.value = None


class _Level:
    def __init__(self, path: tuple, avoid=frozenset()):
        self.path = path
        self.avoid = avoid          # names a deferred name keeps clear of (an outer level's)
        self.fixed: dict = {}       # name -> what fixed it (a row, a level, ...)
        self.deferred: list = []

    def fix(self, name: str, what: str):
        if name in self.fixed:
            where = ".".join((*self.path, name))
            if what == self.fixed[name] == "level":   # Res2Net's convs in each split branch
                raise SpecError(f"{where} is called in several places (its members between "
                                "other modules' calls); a spec level is one place")
            raise SpecError(f"{where}: two layers of this level would share the name {name!r}")
        self.fixed[name] = what
        return name

    def defer(self, preferred: str) -> _Name:
        name = _Name(preferred)
        self.deferred.append(name)
        return name

    def names(self) -> frozenset:
        """The names this level holds so far (a deferred one by its preferred form)."""
        return frozenset(self.fixed) | {_clean_name(n.preferred) for n in self.deferred}

    def resolve(self):
        used = set(self.fixed) | set(self.avoid)
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
        if isinstance(item, FlowNode):
            if item.stateful:
                out.append(item.path)
        else:
            for branch in item.branches:
                out.extend(_stateful_paths(branch))
    return out


def _home(item, prefix: tuple):
    """The child level of ``prefix`` an item belongs to: (name, firm?), or
    (None, firm) for this level itself."""
    if isinstance(item, Wired):
        item = item.item
    paths = _stateful_paths([item])
    n = len(prefix)
    if paths:
        for p in paths:
            if p[:n] != prefix or len(p) == n:
                raise SpecError(f"{'.'.join(p)}: a layer called from outside its module's "
                                f"level ({'.'.join(prefix) or 'the model'}); the spec cannot "
                                "keep its name")
        firsts = {p[n] for p in paths}
        if not isinstance(item, FlowNode):
            # a structure whose stateless rows live elsewhere (a concat of a max
            # pool in b1 and a conv in b2) belongs to the level above both
            firsts |= {p[n] if len(p) > n else None for p in _levels([item]) if p[:n] == prefix}
        if len(firsts) == 1 and all(len(p) > n + 1 for p in paths):
            if _skip_called_here(item, prefix, next(iter(firsts))):
                return None, True
            return firsts.pop(), True
        return None, True
    # a merge node of a graph: its path is the scope that computes it
    scoped = [item.path] if isinstance(item, FlowNode) and item.op in MERGE_OPS else \
        _levels([item])
    scopes = [p for p in scoped if p[:n] == prefix and len(p) > n]
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
        if isinstance(item, FlowNode):
            out.append(item.path if item.scoped else item.path[:-1])
        else:
            for branch in item.branches:
                out.extend(_levels(branch))
    return out


SHORTCUT_NAMES = re.compile(r"(skip|shortcut|short_cut|downsample|proj|projection)"
                            r"(_\w+|\d+)?", re.I)


def _is_shortcut_name(name) -> bool:
    """A module named as a shortcut: skip, shortcut, downsample, proj (and
    skip_1, skip_connection, ...)."""
    return isinstance(name, str) and SHORTCUT_NAMES.fullmatch(name) is not None
