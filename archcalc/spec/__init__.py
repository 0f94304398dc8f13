"""Specs: TOML files read into frozen Spec objects (see loader.py)."""
from .loader import Spec, load  # noqa: F401
