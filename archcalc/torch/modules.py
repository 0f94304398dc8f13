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
    """torchvision.ops.SqueezeExcitation: the same submodules under the same names
    (avgpool, fc1, fc2 as 1x1 convs, activation, scale_activation), so a
    torchvision state dict loads into it. ``activation`` and ``gate`` name
    activations (relu, silu, hardsigmoid, ...)."""

    TORCH_NAMES = {"relu": "ReLU", "relu6": "ReLU6", "silu": "SiLU", "hardswish": "Hardswish",
                   "gelu": "GELU", "mish": "Mish", "leaky_relu": "LeakyReLU", "elu": "ELU",
                   "tanh": "Tanh", "sigmoid": "Sigmoid", "hardsigmoid": "Hardsigmoid",
                   "softplus": "Softplus"}

    def __init__(self, channels, squeeze, activation="relu", gate="sigmoid"):
        super().__init__()
        self.init_args = (channels, squeeze, activation, gate)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.activation = getattr(nn, self.TORCH_NAMES[activation])()
        self.scale_activation = getattr(nn, self.TORCH_NAMES[gate])()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


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

    init_args = ()

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


class SelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention as torchvision's encoder block calls it:
    nn.MultiheadAttention(batch_first=True)(x, x, x, need_weights=False). The
    module is the nn.MultiheadAttention itself, so its state_dict keys are
    torchvision's (``self_attention.in_proj_weight``)."""

    def __init__(self, width, heads, bias=True, dropout=0.0):
        super().__init__(width, heads, dropout=dropout, bias=bias, batch_first=True)
        self.init_args = (width, heads, bias, dropout)

    def forward(self, x):
        y, _ = super().forward(x, x, x, need_weights=False)
        return y


class TokensToMap(nn.Module):
    """(B, H*W, D) -> (B, D, H, W): tokens read back as a map (views), as
    ConvNeXt's permute back to channels first."""

    def __init__(self, height, width):
        super().__init__()
        self.init_args = (height, width)
        self.height, self.width = height, width

    def forward(self, x):
        return x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], self.height, self.width)


class TokenPool(nn.Module):
    """(B, N, D) -> (B, D): the first (class) token, or the mean of all."""

    def __init__(self, mode="first"):
        super().__init__()
        self.init_args = (mode,)
        self.mode = mode

    def forward(self, x):
        return x[:, 0] if self.mode == "first" else x.mean(dim=1)


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: layer norm over the channels at each
    position (permute to N, H, W, C; normalize; permute back)."""

    def __init__(self, channels, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__(channels, eps=eps, elementwise_affine=elementwise_affine, bias=bias)
        self.init_args = (channels, eps, elementwise_affine, bias)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class LayerScale(nn.Module):
    """ConvNeXt's layer scale: x times a learned per-channel gamma."""

    def __init__(self, channels, init=1e-6, rank=3):
        super().__init__()
        self.init_args = (channels, init, rank)
        shape = (channels, 1, 1) if rank == 3 else (channels,)
        self.gamma = nn.Parameter(torch.full(shape, float(init)))

    def forward(self, x):
        return self.gamma * x


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth(p, mode): identity at inference or at
    p = 0; in training, zero each sample ("row") or the whole batch ("batch")
    with probability p and scale the survivors by 1 / (1 - p)."""

    def __init__(self, p, mode="row"):
        super().__init__()
        self.init_args = (p, mode)
        self.p, self.mode = p, mode

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        survival = 1.0 - self.p
        size = [x.shape[0]] + [1] * (x.ndim - 1) if self.mode == "row" else [1] * x.ndim
        noise = torch.empty(size, dtype=x.dtype, device=x.device).bernoulli_(survival)
        if survival > 0.0:
            noise.div_(survival)
        return x * noise

    def extra_repr(self):
        return f"p={self.p}, mode={self.mode}"
