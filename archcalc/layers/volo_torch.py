"""VOLO's outlook attention as a module (archcalc/layers/volo.py).

``archcalc export --to python`` copies the class with ``inspect.getsource``:
it uses only ``torch``, ``nn`` and ``F``."""
from torch import nn
from torch.nn import functional as F


class OutlookAttention(nn.Module):
    """timm.models.volo.OutlookAttention's computation and weight names (v,
    attn, proj) on (B, N, D) tokens, its H x W map fixed at build: per head,
    a k^2 x k^2 attention (a Linear of the map pooled by the stride) over
    each unfolded k x k window of values, the windows folded back, proj."""

    def __init__(self, width, heads, size, kernel=3, padding=1, stride=1, bias=False,
                 dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, size, kernel, padding, stride, bias, dropout,
                          proj_dropout)
        self.num_heads, self.size = heads, tuple(size)
        self.kernel_size, self.padding, self.stride = kernel, padding, stride
        self.scale = (width // heads) ** -0.5
        self.v = nn.Linear(width, width, bias=bias)
        self.attn = nn.Linear(width, kernel ** 4 * heads)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.unfold = nn.Unfold(kernel_size=kernel, padding=padding, stride=stride)
        self.pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, size={self.size}"

    def forward(self, x):
        b, n, c = x.shape
        (h, w), k, heads = self.size, self.kernel_size, self.num_heads
        x = x.reshape(b, h, w, c)
        hp, wp = -(-h // self.stride), -(-w // self.stride)
        v = self.unfold(self.v(x).permute(0, 3, 1, 2))
        v = v.reshape(b, heads, c // heads, k * k, hp * wp).permute(0, 1, 4, 3, 2)
        attn = self.attn(self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        attn = attn.reshape(b, hp * wp, heads, k * k, k * k).permute(0, 2, 1, 3, 4)
        attn = self.attn_drop((attn * self.scale).softmax(dim=-1))
        x = (attn @ v).permute(0, 1, 4, 3, 2).reshape(b, c * k * k, hp * wp)
        x = F.fold(x, output_size=(h, w), kernel_size=k, padding=self.padding,
                   stride=self.stride)
        return self.proj_drop(self.proj(x.permute(0, 2, 3, 1))).reshape(b, n, c)
