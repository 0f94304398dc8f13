"""Kept for code that imports archcalc's modules from here (the importer,
older exported code, user scripts): each class now lives beside its kind,
in ``archcalc/layers/<family>_torch.py``."""
from ..layers.multiply_torch import Multiply  # noqa: F401
from ..layers.reshape_torch import Reshape  # noqa: F401
from ..layers.spp_torch import SpatialPyramidPool  # noqa: F401
from ..layers.dropconnect_torch import DropConnectLinear  # noqa: F401
from ..layers.roi_torch import RoIPool  # noqa: F401
from ..layers.boxes_torch import L2Norm, PerAnchor  # noqa: F401
from ..layers.transform_torch import AffineSampler  # noqa: F401
