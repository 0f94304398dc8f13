"""PyTorch module of the kind in ``fourier_position.py``.

Imported only by the kind's ``build`` (and ``module_classes``), so the
analysis never imports torch. ``archcalc export --to python`` copies the
class into the exported file with ``inspect.getsource``: it uses only
``torch``, ``nn`` and the builtins. Its weights are timm's
``PositionalEncodingFourier``'s (``token_projection``), so timm's state_dict
loads strictly."""
from __future__ import annotations

import torch
from torch import nn


class FourierPositionEncoding(nn.Module):
    """x + the projected Fourier features of the (height x width) grid:
    (B, N, D) -> (B, N, D), as timm's PositionalEncodingFourier computes them
    (rows and columns normalized to (0, 2*pi], sin and cos interleaved,
    the rows' features first), per sample."""

    def __init__(self, width, height, grid_width, hidden_dim=32, temperature=10000.0):
        super().__init__()
        self.init_args = (width, height, grid_width, hidden_dim, temperature)
        self.height, self.width = height, grid_width
        self.hidden_dim, self.temperature = hidden_dim, temperature
        self.scale = 2 * 3.141592653589793
        self.eps = 1e-6
        self.token_projection = nn.Conv2d(2 * hidden_dim, width, kernel_size=1)

    def extra_repr(self):
        return f"grid={self.height}x{self.width}, hidden_dim={self.hidden_dim}"

    def features(self, batch, device):
        """(batch, 2*hidden_dim, H, W): the constant features of every position."""
        h, w = self.height, self.width
        ones = torch.ones(batch, h, w, device=device)
        y = ones.cumsum(1)
        x = ones.cumsum(2)
        y = y / (y[:, -1:, :] + self.eps) * self.scale
        x = x / (x[:, :, -1:] + self.eps) * self.scale
        dim_t = torch.arange(self.hidden_dim, device=device).to(torch.float32)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor")
                                     / self.hidden_dim)
        pos_x = x[:, :, :, None] / dim_t
        pos_y = y[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()),
                            dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()),
                            dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def forward(self, x):
        pos = self.token_projection(self.features(x.shape[0], x.device).to(x.dtype))
        return x + pos.flatten(2).transpose(1, 2)
