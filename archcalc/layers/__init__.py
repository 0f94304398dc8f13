"""Layer kinds. Importing this package registers every kind once."""
from .base import REGISTRY, Arg, Kind, Saved, kinds, lookup, register  # noqa: F401
from . import conv, pool, linear, norm, activation, resample, se, shuffle, tokens, opaque  # noqa: F401,E501  (registration)
from . import multiply, reshape, spp, dropconnect  # noqa: F401  (registration: the lectures' later systems)
from . import roi  # noqa: F401  (registration: detection's second stage)
from . import boxes  # noqa: F401  (registration: single-shot detectors)
from . import transform  # noqa: F401  (registration: spatial transformers)
