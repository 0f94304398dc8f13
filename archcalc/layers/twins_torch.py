"""Twins-SVT's locally-grouped attention as a module (archcalc/layers/twins.py).

``archcalc export --to python`` copies the class with ``inspect.getsource``:
it uses only ``torch``, ``nn`` and ``F``."""
from torch import nn
from torch.nn import functional as F


class LocallyGroupedAttention(nn.Module):
    """timm.models.twins.LocallyGroupedAttn's computation and weight names
    (qkv, proj), its map size fixed at build: the map zero-padded to
    multiples of ``ws``, self-attention within each ws x ws window, the
    padding cropped, proj."""

    def __init__(self, width, heads, size, ws, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, size, ws, dropout, proj_dropout)
        self.num_heads, self.size, self.ws = heads, tuple(size), ws
        self.scale = (width // heads) ** -0.5
        self.qkv = nn.Linear(width, width * 3)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, size={self.size}, ws={self.ws}"

    def forward(self, x):
        b, n, c = x.shape
        (h, w), ws, heads = self.size, self.ws, self.num_heads
        x = x.view(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        gh, gw = hp // ws, wp // ws
        x = x.reshape(b, gh, ws, gw, ws, c).transpose(2, 3)
        qkv = self.qkv(x).reshape(b, gh * gw, ws * ws, 3, heads, c // heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p
                                           if self.training else 0.0)
        x = x.transpose(2, 3).reshape(b, gh, gw, ws, ws, c)
        x = x.transpose(2, 3).reshape(b, hp, wp, c)[:, :h, :w, :].reshape(b, n, c)
        return self.proj_drop(self.proj(x))
