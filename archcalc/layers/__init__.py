"""Layer kinds. Importing this package registers every kind once."""
from .base import REGISTRY, Arg, Kind, Saved, kinds, lookup, register  # noqa: F401
from . import conv, pool, linear, norm, activation, resample, se, shuffle, tokens  # noqa: F401  (registration)
from . import multiply, reshape, spp, dropconnect  # noqa: F401  (registration: the lectures' later systems)
