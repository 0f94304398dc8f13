"""Device profiles that ship with archcalc (package data): what `archcalc
calibrate` measured on the machines the developers ran it on. `archcalc
predict --profile NAME` finds one by its name (the file name without
``.json``); a path to a JSON file is read as it is."""
from __future__ import annotations

import os
from importlib.resources import files


def root() -> str:
    return str(files("archcalc") / "profiles")


def names() -> list[str]:
    """The shipped profiles, e.g. 'cpu-xeon-2t'."""
    try:
        return sorted(f[:-5] for f in os.listdir(root()) if f.endswith(".json"))
    except OSError:  # pragma: no cover - a broken install
        return []


def resolve(name_or_path: str) -> str:
    """``name_or_path`` when it is a file; else the shipped profile it names."""
    if os.path.exists(name_or_path):
        return name_or_path
    name = name_or_path[:-5] if name_or_path.endswith(".json") else name_or_path
    if "/" not in name and "\\" not in name and name in names():
        return os.path.join(root(), name + ".json")
    return name_or_path


def default(device: str = "cpu") -> str | None:
    """The shipped profile for this kind of device when there is exactly one."""
    found = [n for n in names() if n.startswith(device + "-")]
    return found[0] if len(found) == 1 else None
