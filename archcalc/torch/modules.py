"""Kept for code that imports archcalc's modules from here (the importer,
older exported code, user scripts): each class now lives beside its kind,
in ``archcalc/layers/<family>_torch.py``."""
from ..layers.conv_torch import PartialConv2d, LocallyConnected2d  # noqa: F401
from ..layers.pool_torch import Subsample, PadShortcut  # noqa: F401
from ..layers.se_torch import SqueezeExcitation  # noqa: F401
from ..layers.activation_torch import Maxout, StochasticDepth  # noqa: F401
from ..layers.tokens_torch import (ClassToken, MapToTokens, PositionEmbedding,  # noqa: F401
                                   SelfAttention, TokenPool, TokensToMap)
from ..layers.norm_torch import LayerNorm2d, LayerScale  # noqa: F401
