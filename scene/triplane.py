"""Tri-plane features and the opacity / colour decoders.

Each Gaussian's position is rotated by each of its K derivations; every rotated copy samples
the three planes (xy, xz, yz) bilinearly, the three samples are multiplied, and the K results
are concatenated into one feature vector. Small MLPs decode it into an opacity, geometry
features and (with the view direction) spherical-harmonics colour coefficients.

Derivation k samples its own channel slice ``k*C/K:(k+1)*C/K`` of each plane; the coordinates
come normalised to the head's bounding sphere, so the whole plane is used. Parameter names
match the original code's ``trip.pth``.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

PLANE_AXES = ((0, 1), (0, 2), (1, 2))  # xy, xz, yz: sample coords (u, v) = (p[a], p[b])


class _MLP(nn.Module):
    """Bias-free linear layers with an activation between them (none after the last)."""

    def __init__(self, dims: list[int], act: Literal["sigmoid", "relu", "none"]):
        super().__init__()
        self.net = nn.ModuleList(
            nn.Linear(a, b, bias=False) for a, b in zip(dims[:-1], dims[1:])
        )
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.net):
            x = layer(x)
            if i < len(self.net) - 1:
                if self.act == "sigmoid":
                    x = torch.sigmoid(x)
                elif self.act == "relu":
                    x = torch.relu(x)
        return x


class TriPlaneDecoder(nn.Module):
    """(rotated positions, view directions) -> (opacity [N], SH coefficients [N, (d+1)^2, 3])."""

    colour_activation: Literal["relu", "none"] = "relu"  # between the colour MLP's layers

    def __init__(self, sh_degree: int = 3, num_derivations: int = 4, resolution: int = 64,
                 channels: int = 32, levels: int = 1,
                 init_range: tuple[float, float] = (0.1, 0.5), fused: bool = False):
        super().__init__()
        if channels % num_derivations:
            raise ValueError(f"channels ({channels}) must be divisible by the number of "
                             f"derivations ({num_derivations})")
        self.num_derivations = num_derivations
        self.channels = channels
        self.sh_degree = sh_degree
        self.tri_plane = nn.ModuleList()
        for level in range(levels):
            res = resolution * 2**level
            planes = nn.ParameterList(
                nn.Parameter(torch.empty(1, channels, res, res).uniform_(*init_range))
                for _ in PLANE_AXES
            )
            self.tri_plane.append(planes)
        feat_dim = channels  # K slices of C/K channels, concatenated
        geo_dim = channels
        hidden = 64
        n_coef = (sh_degree + 1) ** 2
        sh_dim = 3 * n_coef
        self.opacity_net = _MLP([feat_dim, hidden, hidden, 1 + geo_dim], act="sigmoid")
        self.shs_net = _MLP([geo_dim + 3, hidden, sh_dim], act=self.colour_activation)
        self.shs_dc_net = nn.Linear(sh_dim, 3)
        self.shs_rest_net = nn.Linear(sh_dim, sh_dim - 3)
        # run-time switch of the fast path (not part of the weights): the same decoders with
        # padded, 16-byte aligned operands and one product for both SH heads
        self.fused = fused

    def plane_features(self, coords: torch.Tensor) -> torch.Tensor:
        """Sample the planes. coords [K, N, 3] (already rotated/normalised) -> [N, C]"""
        k, n, _ = coords.shape
        c_k = self.channels // k
        total = 0.0
        # One grid_sample call per level for all planes and derivations: batch = 3 planes x K.
        # (slices and stacks, not index lists: an index list's backward is a slow scatter)
        axis = coords.unbind(-1)
        grids = torch.stack([torch.stack([axis[a], axis[b]], dim=-1)
                             for a, b in PLANE_AXES])  # [3, K, N, 2]
        # grid_sample's CPU kernels index memory with NaN coordinates (a crash, not a NaN
        # result); a diverged run must reach the trainer's clear message instead
        grids = torch.nan_to_num(grids, nan=0.0)
        for planes in self.tri_plane:
            samp = self._sample(torch.cat(list(planes), dim=0), grids)  # [3, K, C/K, N]
            # the product of the three planes' samples [K, C/K, N] (levels are summed,
            # as the original code does); written out because prod's backward syncs with the host
            total = total + samp[0] * samp[1] * samp[2]
        return total.permute(2, 0, 1).reshape(n, k * c_k)

    def _sample(self, planes: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
        """Derivation k's samples of channel slice k: planes [3, C, R, R], grids [3, K, N, 2]
        -> [3, K, C/K, N]."""
        _, k, n, _ = grids.shape
        r = planes.shape[-1]
        feats = planes.reshape(3 * k, self.channels // k, r, r)
        samp = F.grid_sample(feats, grids.reshape(3 * k, n, 1, 2), mode="bilinear",
                             padding_mode="border", align_corners=True)
        return samp.reshape(3, k, self.channels // k, n)

    def forward(self, coords: torch.Tensor, dirs: torch.Tensor,
                opacity_offset: torch.Tensor | None = None):
        """coords [K, N, 3], unit view directions dirs [N, 3] ->
        opacity [N], geometry features [N, C], SH [N, (d+1)^2, 3]. ``opacity_offset`` [N] is
        added to the opacity's logit."""
        return self.decode(self.plane_features(coords), dirs, opacity_offset)

    def decode(self, feat: torch.Tensor, dirs: torch.Tensor,
               opacity_offset: torch.Tensor | None = None):
        """The decoders alone: features [N, C], unit view directions [N, 3] -> opacity [N],
        geometry features [N, C], SH [N, (d+1)^2, 3]."""
        if self.fused:
            return self._decode_aligned(feat, dirs, opacity_offset)
        out = self.opacity_net(feat)
        logit = out[:, 0] if opacity_offset is None else out[:, 0] + opacity_offset
        opacity = torch.sigmoid(logit)
        geo = out[:, 1:]
        h = self.shs_net(torch.cat([geo, dirs], dim=-1))
        dc = self.shs_dc_net(h).view(-1, 1, 3)
        rest = self.shs_rest_net(h).view(-1, (self.sh_degree + 1) ** 2 - 1, 3)
        return opacity, geo, torch.cat([dc, rest], dim=1)

    def _decode_aligned(self, feat: torch.Tensor, dirs: torch.Tensor,
                        opacity_offset: torch.Tensor | None = None):
        """:meth:`decode` with every matrix operand's row a
        multiple of 8 values: the geometry output padded from 1 + C to a multiple of 8 rows, the
        colour MLP's input ([geometry, direction], C + 3 columns) zero-padded likewise, and the
        DC and rest heads as one product. Odd widths (33, 35, 3, 45) send cuBLAS to slow
        unaligned kernels in bf16."""
        layers = self.opacity_net.net
        h = feat
        for layer in layers[:-1]:
            h = torch.sigmoid(layer(h))
        w = layers[-1].weight  # [1 + C, hidden]
        out = F.linear(h, F.pad(w, (0, 0, 0, -w.shape[0] % 8)))
        logit = out[:, 0] if opacity_offset is None else out[:, 0] + opacity_offset
        opacity = torch.sigmoid(logit)
        geo = out[:, 1:w.shape[0]]
        first, second = self.shs_net.net
        x = torch.cat([geo, dirs.to(geo.dtype)], dim=-1)
        pad = -x.shape[1] % 8
        h = torch.relu(F.linear(F.pad(x, (0, pad)), F.pad(first.weight, (0, pad))))
        h = second(h)
        heads = F.linear(h, torch.cat([self.shs_dc_net.weight, self.shs_rest_net.weight]),
                         torch.cat([self.shs_dc_net.bias, self.shs_rest_net.bias]))
        return opacity, geo, heads.view(-1, (self.sh_degree + 1) ** 2, 3)
