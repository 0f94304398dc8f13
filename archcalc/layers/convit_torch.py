"""ConViT's gated positional self-attention as a module (archcalc/layers/convit.py)."""
import torch
from torch import nn


class GatedPositionalAttention(nn.Module):
    """timm.models.convit.GPSA's computation and weight names (qk, v, proj,
    pos_proj, gating_param): on N = S*S patch tokens, each head mixes the
    softmax of q k^T / sqrt(D/h) and the softmax of pos_proj(dx, dy, dx^2 +
    dy^2) by sigmoid(gate), renormalizes and weights v; proj after."""

    def __init__(self, width, heads, bias=False, dropout=0.0, proj_dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, bias, dropout, proj_dropout)
        self.num_heads = heads
        self.scale = (width // heads) ** -0.5
        self.qk = nn.Linear(width, width * 2, bias=bias)
        self.v = nn.Linear(width, width, bias=bias)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(width, width)
        self.pos_proj = nn.Linear(3, heads)
        self.proj_drop = nn.Dropout(proj_dropout)
        self.gating_param = nn.Parameter(torch.ones(heads))

    def extra_repr(self):
        return f"num_heads={self.num_heads}"

    def positions(self, n):
        """(1, N, N, 3): each pair of patches' dx, dy and dx^2 + dy^2."""
        side = int(n ** 0.5)
        weight = self.qk.weight
        ind = torch.arange(side, dtype=torch.float32).view(1, -1) - \
            torch.arange(side, dtype=torch.float32).view(-1, 1)
        indx = ind.repeat(side, side)
        indy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
        rel = torch.stack([indx, indy, indx ** 2 + indy ** 2], -1).unsqueeze(0)
        return rel.to(device=weight.device, dtype=weight.dtype)

    def forward(self, x):
        b, n, c = x.shape
        h = self.num_heads
        qk = self.qk(x).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        pos = self.pos_proj(self.positions(n).expand(b, -1, -1, -1)).permute(0, 3, 1, 2)
        patch = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        gate = torch.sigmoid(self.gating_param.view(1, -1, 1, 1))
        attn = (1.0 - gate) * patch + gate * pos.softmax(dim=-1)
        attn = self.attn_drop(attn / attn.sum(dim=-1).unsqueeze(-1))
        v = self.v(x).reshape(b, n, h, c // h).permute(0, 2, 1, 3)
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, c)))
