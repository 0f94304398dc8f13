"""The specs that ship with archcalc: the lectures' nets and the tricks.

In a clone they live in the top-level specs/ folder; an installed archcalc
carries the same files as package data in archcalc/specs/ (pyproject.toml
maps one onto the other), found here with importlib.resources. A spec path
that does not exist (``specs/vgg16.toml`` outside a clone, or just
``vgg16``) falls back to the shipped spec of that name.
"""
from __future__ import annotations

import os
from importlib.resources import files

_CLONE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "specs")


def root() -> str:
    """The folder of the shipped specs: the installed package's, else the clone's."""
    inside = files("archcalc") / "specs"
    if inside.is_dir():
        return str(inside)
    return _CLONE


def resolve(path: str) -> str:
    """``path`` when it exists; else the shipped spec it names; else ``path``
    unchanged (the loader then says 'no such file')."""
    if not path or os.path.exists(path):
        return path
    name = path.replace("\\", "/")
    if name.startswith("./"):
        name = name[2:]
    if name.startswith("specs/"):
        name = name[len("specs/"):]
    if not name.endswith(".toml"):
        name += ".toml"
    if name.startswith("/") or ".." in name.split("/"):
        return path
    candidate = os.path.join(root(), *name.split("/"))
    return candidate if os.path.isfile(candidate) else path


def names() -> list[str]:
    """The shipped model specs (not the libraries or tricks), e.g. 'vgg16'."""
    return sorted(f[:-5] for f in os.listdir(root()) if f.endswith(".toml"))
