"""PyTorch module of the kind in ``global_context.py``.

Imported only by the kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class into the exported file with ``inspect.getsource``: it uses only
``torch``, ``nn`` and ``F``. Its submodules are timm's GlobalContext's
(conv_attn; mlp_scale and mlp_add, each fc1, norm, act, drop, fc2), so
timm's state_dict loads strictly."""
from __future__ import annotations

from torch import nn
from torch.nn import functional as F


class GlobalContext(nn.Module):
    """GCNet's block (timm's GlobalContext): the context of the map
    (softmax-weighted positions, or the mean), x * sigmoid(mlp_scale(context))
    and/or x + mlp_add(context); each MLP a 1x1 conv, a LayerNorm over the
    channels, ReLU or SiLU, a 1x1 conv."""

    def __init__(self, channels, reduced, attention=True, scale=True, add=False, eps=1e-6,
                 activation="relu"):
        super().__init__()
        self.init_args = (channels, reduced, attention, scale, add, eps, activation)

        def mlp():
            return nn.ModuleDict({"fc1": nn.Conv2d(channels, reduced, 1),
                                  "norm": nn.LayerNorm(reduced, eps=eps),
                                  "act": nn.SiLU() if activation == "silu" else nn.ReLU(),
                                  "drop": nn.Dropout(0.0),
                                  "fc2": nn.Conv2d(reduced, channels, 1)})
        self.conv_attn = nn.Conv2d(channels, 1, 1) if attention else None
        self.mlp_add = mlp() if add else None
        self.mlp_scale = mlp() if scale else None
        self.gate = nn.Sigmoid()

    @staticmethod
    def run_mlp(mlp, x):
        x = mlp["fc1"](x)
        x = mlp["norm"](x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)   # over the channels
        return mlp["fc2"](mlp["drop"](mlp["act"](x)))

    def forward(self, x):
        b, c, h, w = x.shape
        if self.conv_attn is not None:
            attn = F.softmax(self.conv_attn(x).reshape(b, 1, h * w), dim=-1).unsqueeze(3)
            context = (x.reshape(b, c, h * w).unsqueeze(1) @ attn).view(b, c, 1, 1)
        else:
            context = x.mean(dim=(2, 3), keepdim=True)
        if self.mlp_scale is not None:
            x = x * self.gate(self.run_mlp(self.mlp_scale, context))
        if self.mlp_add is not None:
            x = x + self.run_mlp(self.mlp_add, context)
        return x
