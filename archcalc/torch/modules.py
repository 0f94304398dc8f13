"""Modules PyTorch lacks: LeNet-5's partially connected conv and LeCun's
trainable subsampling. Their parameter counts equal the engine's."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PartialConv2d(nn.Module):
    """Output map i is a conv over the input maps ``connections[i]`` only.

    One weight tensor per output map holds exactly its links, so
    ``sum(p.numel())`` is the partial count (LeNet-5's C3: 1,516), not the
    full one a masked dense weight would report.
    """

    def __init__(self, connections, kernel, stride=(1, 1), padding=(0, 0), bias=True):
        super().__init__()
        self.init_args = ([list(c) for c in connections], kernel, stride, padding, bias)
        self.connections = [list(c) for c in connections]
        self.stride, self.padding = stride, padding
        for i, maps in enumerate(self.connections):
            self.register_buffer(f"index{i}", torch.tensor(maps), persistent=False)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(1, len(maps), *kernel)) for maps in self.connections)
        self.bias = nn.Parameter(torch.empty(len(self.connections))) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        for w in self.weights:
            nn.init.kaiming_uniform_(w, a=5 ** 0.5)
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
        if self.bias is not None:
            bound = 1 / fan_in ** 0.5
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        maps = [F.conv2d(x.index_select(1, getattr(self, f"index{i}")), w,
                         stride=self.stride, padding=self.padding)
                for i, w in enumerate(self.weights)]
        out = torch.cat(maps, 1)
        return out if self.bias is None else out + self.bias.view(1, -1, 1, 1)

    def extra_repr(self):
        return f"connections={self.connections}"


class Subsample(nn.Module):
    """LeCun 1998's S-layers: average pool, then a learned scale and bias per map."""

    def __init__(self, channels, kernel, stride, padding=(0, 0)):
        super().__init__()
        self.init_args = (channels, kernel, stride, padding)
        self.pool = nn.AvgPool2d(kernel, stride, padding)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return self.pool(x) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class LocallyConnected2d(nn.Module):
    """A conv whose weights differ at every output position (no sharing)."""

    def __init__(self, in_channels, out_channels, out_size, kernel, stride=(1, 1),
                 padding=(0, 0), bias=True):
        super().__init__()
        self.init_args = (in_channels, out_channels, out_size, kernel, stride, padding, bias)
        self.kernel, self.stride, self.padding, self.out_size = kernel, stride, padding, out_size
        positions = out_size[0] * out_size[1]
        fan_in = in_channels * kernel[0] * kernel[1]
        self.weight = nn.Parameter(torch.empty(positions, fan_in, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels, *out_size)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x):
        cols = F.unfold(x, self.kernel, stride=self.stride, padding=self.padding)  # N, fan_in, L
        out = torch.einsum("nfl,lfo->nol", cols, self.weight)
        out = out.reshape(x.shape[0], -1, *self.out_size)
        return out if self.bias is None else out + self.bias


class SqueezeExcitation(nn.Module):
    def __init__(self, channels, hidden):
        super().__init__()
        self.init_args = (channels, hidden)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * gate[:, :, None, None]


class Maxout(nn.Module):
    def __init__(self, pieces):
        super().__init__()
        self.init_args = (pieces,)
        self.pieces = pieces

    def forward(self, x):
        n, c = x.shape[:2]
        return x.view(n, c // self.pieces, self.pieces, *x.shape[2:]).max(2).values


class PadShortcut(nn.Module):
    """ResNet option A: subsample by the stride, zero-pad the extra channels."""

    def __init__(self, extra_channels, stride):
        super().__init__()
        self.init_args = (extra_channels, stride)
        self.extra, self.stride = extra_channels, stride

    def forward(self, x):
        x = x[:, :, ::self.stride[0], ::self.stride[1]]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class MapToTokens(nn.Module):
    """(B, C, H, W) -> (B, H*W, C), as torchvision's ViT reads its patch map."""

    def forward(self, x):
        return x.flatten(2).permute(0, 2, 1)


class ClassToken(nn.Module):
    """A learned token before the others (torchvision: ``class_token``, 1 x 1 x D)."""

    def __init__(self, width):
        super().__init__()
        self.init_args = (width,)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))

    def forward(self, x):
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)


class PositionEmbedding(nn.Module):
    """x + a learned (1, N, D) embedding (torchvision: ``pos_embedding``, N(0, 0.02))."""

    def __init__(self, tokens, width):
        super().__init__()
        self.init_args = (tokens, width)
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, width).normal_(std=0.02))

    def forward(self, x):
        return x + self.pos_embedding


class SelfAttention(nn.Module):
    """Multi-head self-attention as torchvision's encoder block calls it:
    nn.MultiheadAttention(batch_first=True)(x, x, x, need_weights=False)."""

    def __init__(self, width, heads, bias=True, dropout=0.0):
        super().__init__()
        self.init_args = (width, heads, bias, dropout)
        self.self_attention = nn.MultiheadAttention(width, heads, dropout=dropout, bias=bias,
                                                    batch_first=True)

    def forward(self, x):
        y, _ = self.self_attention(x, x, x, need_weights=False)
        return y


class TokenPool(nn.Module):
    """(B, N, D) -> (B, D): the first (class) token, or the mean of all."""

    def __init__(self, mode="first"):
        super().__init__()
        self.init_args = (mode,)
        self.mode = mode

    def forward(self, x):
        return x[:, 0] if self.mode == "first" else x.mean(dim=1)
