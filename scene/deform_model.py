"""The expression-conditioned deformation network.

Input: a positional encoding of the canonical position (``multires`` octaves of sin/cos plus
the position itself) and the raw expression vector. ``depth`` ReLU layers of ``width`` with a
skip connection that re-injects the input after layer ``depth // 2``; three linear heads give
the offsets of position (3), rotation (4) and scale (3). Parameter names match the original
code's ``deform.pth``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PositionalEncoding(nn.Module):
    """x -> [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)]."""

    def __init__(self, in_dim: int, num_freqs: int):
        super().__init__()
        self.in_dim = in_dim
        self.register_buffer("freqs", 2.0 ** torch.arange(num_freqs, dtype=torch.float32),
                             persistent=False)

    @property
    def out_dim(self) -> int:
        return self.in_dim * (1 + 2 * len(self.freqs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.unsqueeze(-2) * self.freqs.unsqueeze(-1)  # [..., F, D]
        sincos = torch.stack([torch.sin(xf), torch.cos(xf)], dim=-2)  # [..., F, 2, D]
        return torch.cat([x, sincos.flatten(-3)], dim=-1)


class _LinearReLU(torch.autograd.Function):
    """relu(x W^T + b) in the compute dtype ``dtype``, with the bias and the ReLU applied in the
    matrix product's epilogue (cuBLASLt on CUDA) and the bias gradient as a matrix product
    (a column sum of the [N, width] gradient is several times slower on GPUs)."""

    @staticmethod
    def forward(ctx, x, weight, bias, dtype):
        xd, wd = x.to(dtype), weight.to(dtype)
        y = torch._addmm_activation(bias.to(dtype), xd, wd.t())
        ctx.save_for_backward(xd, wd, y)
        ctx.dtypes = (x.dtype, weight.dtype, bias.dtype)
        return y

    @staticmethod
    def backward(ctx, grad):
        xd, wd, y = ctx.saved_tensors
        x_dtype, w_dtype, b_dtype = ctx.dtypes
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g = torch.ops.aten.threshold_backward(grad.to(y.dtype), y, 0)
        gx = (g @ wd).to(x_dtype) if need_x else None
        gw = (g.t() @ xd).to(w_dtype) if need_w else None
        gb = None
        if need_b:
            ones = torch.ones(1, g.shape[0], dtype=g.dtype, device=g.device)
            gb = (ones @ g).view(-1).to(b_dtype)
        return gx, gw, gb, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


class DeformNetwork(nn.Module):
    """(canonical xyz [N, 3], expression [N, E] or [E]) -> (d_xyz [N, 3], d_rot [N, 4],
    d_scale [N, 3]), and with ``residuals`` also (d_opacity [N, 1], d_color [N, 3]): an
    expression-dependent change of the opacity's logit and of the colour's DC band. The
    residual heads start at zero.

    ``fused`` (a run-time switch of the fast path, not part of the weights): each hidden layer
    is one :class:`_LinearReLU` and the heads are one matrix product; the same function.
    """

    def __init__(self, exp_dim: int, depth: int = 8, width: int = 256, multires: int = 10,
                 fused: bool = False, residuals: bool = False):
        super().__init__()
        self.exp_dim = exp_dim
        self.embed = PositionalEncoding(3, multires)
        self.in_dim = self.embed.out_dim + exp_dim
        self.skips = (depth // 2,)
        layers = [nn.Linear(self.in_dim, width)]
        for i in range(depth - 1):
            # layer i + 1 follows layer i; after a skip layer it also sees the input again
            layers.append(nn.Linear(width + (self.in_dim if i in self.skips else 0), width))
        self.linear = nn.ModuleList(layers)
        self.gaussian_warp = nn.Linear(width, 3)
        self.gaussian_rotation = nn.Linear(width, 4)
        self.gaussian_scaling = nn.Linear(width, 3)
        self.residuals = residuals
        if residuals:
            self.gaussian_opacity = nn.Linear(width, 1)
            self.gaussian_color = nn.Linear(width, 3)
            for head in (self.gaussian_opacity, self.gaussian_color):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.fused = fused

    @torch.no_grad()
    def start_as_identity(self) -> None:
        """Zero the heads of the position, rotation and scale offsets: the network starts as
        the identity (the canonical Gaussians unmoved) instead of a random offset of every
        Gaussian when it is switched on after the warm-up."""
        for head in (self.gaussian_warp, self.gaussian_rotation, self.gaussian_scaling):
            head.weight.zero_()
            head.bias.zero_()

    def _heads(self) -> tuple[nn.Linear, ...]:
        heads = (self.gaussian_warp, self.gaussian_rotation, self.gaussian_scaling)
        if self.residuals:
            heads += (self.gaussian_opacity, self.gaussian_color)
        return heads

    def forward(self, xyz: torch.Tensor, exp: torch.Tensor):
        if exp.dim() == 1:
            exp = exp.unsqueeze(0).expand(xyz.shape[0], -1)
        inp = torch.cat([self.embed(xyz), exp.to(xyz.dtype)], dim=-1)
        if self.fused:
            return self._forward_fused(inp)
        h = inp
        for i, layer in enumerate(self.linear):
            h = torch.relu(layer(h))
            if i in self.skips:
                h = torch.cat([inp, h], dim=-1)
        return tuple(head(h) for head in self._heads())

    def _forward_fused(self, inp: torch.Tensor):
        """The same function with tensor-core friendly shapes: the input (and the skip layer's
        input columns) zero-padded to a multiple of 8 columns and the heads as one product
        of 16 rows, so every operand row is 16-byte aligned in bf16 (an unaligned row stride,
        as 109 or 365 columns, sends cuBLAS to slow align-1 kernels)."""
        dtype = _compute_dtype(inp)
        pad = -self.in_dim % 8
        inp = F.pad(inp.to(dtype), (0, pad))
        h = inp
        for i, layer in enumerate(self.linear):
            w = layer.weight
            if i == 0:
                w = F.pad(w, (0, pad))
            elif i - 1 in self.skips:  # columns: [input, previous layer]
                w = torch.cat([w[:, :self.in_dim], w.new_zeros(w.shape[0], pad),
                               w[:, self.in_dim:]], dim=1)
            h = _LinearReLU.apply(h, w, layer.bias, dtype)
            if i in self.skips:
                h = torch.cat([inp, h], dim=-1)
        heads = self._heads()
        rows = sum(m.weight.shape[0] for m in heads)
        w = F.pad(torch.cat([m.weight for m in heads]), (0, 0, 0, 16 - rows))
        b = F.pad(torch.cat([m.bias for m in heads]), (0, 16 - rows))
        out = F.linear(h, w.to(dtype), b.to(dtype))
        return tuple(out.split([m.weight.shape[0] for m in heads] + [16 - rows], dim=1)[:-1])
