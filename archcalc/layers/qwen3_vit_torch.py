"""PyTorch module of the kind in ``qwen3_vit.py`` (imported only by its
``build``; ``archcalc export`` copies the class: only torch and nn), and the
importer's hook for timm's ``resample_pos_embed_grid``."""
from __future__ import annotations

from torch import nn


class TokenMerger(nn.Module):
    """Qwen-VL's patch merger with timm's Qwen3VitPatchMerger submodule names
    (norm, fc1, act, fc2), so its state_dict loads: a layer norm, each k x k
    block of the map's tokens concatenated (rows, columns, channels), fc1,
    a GELU, fc2 (an Identity without ``out``). It takes the B x N x D tokens
    of the ``grid`` map, or the B x H x W x D map itself."""

    def __init__(self, width, factor, grid, out=None, approximate="none", eps=1e-6):
        super().__init__()
        self.init_args = (width, factor, tuple(grid), out, approximate, eps)
        self.merge_size, self.grid = factor, tuple(int(v) for v in grid)
        hidden = factor * factor * width
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(hidden, hidden)
        self.act = nn.GELU(approximate=approximate)
        self.fc2 = nn.Linear(hidden, out) if out else nn.Identity()

    def extra_repr(self):
        return f"merge_size={self.merge_size}, grid={self.grid}"

    def forward(self, x):
        b, c = x.shape[0], x.shape[-1]
        (h, w), k = self.grid, self.merge_size
        x = self.norm(x).reshape(b, h // k, k, w // k, k, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b, (h // k) * (w // k), k * k * c)
        return self.fc2(self.act(self.fc1(x)))


def _resample_call(call):
    """timm's resample_pos_embed_grid on the data flow (never in timm: there
    it resamples the pos_embed parameter, computed from the model's state)."""
    from .from_torch import NoMapping
    raise NoMapping("resample_pos_embed_grid on the tokens (it resamples a position "
                    "embedding)")


def __getattr__(name):
    """FUNCTIONS (the importer's mappers, mappers.py) names timm's
    resample_pos_embed_grid, so fx keeps it one call (its test of the grid's
    size cannot be traced); looked up only when the importer asks, so
    building never imports timm."""
    if name != "FUNCTIONS":
        raise AttributeError(name)
    try:
        from timm.models.qwen3_vit import resample_pos_embed_grid
    except ImportError:
        return {}
    return {resample_pos_embed_grid: _resample_call}
