"""Differentiable tile-based 3D Gaussian rasterizer written in plain PyTorch.

This is the CPU backend of the renderer. It reproduces the image formation of
gsplat 1.5.3's ``gsplat.rasterization(..., rasterize_mode="classic", packed=False)``
for one pinhole camera, so that the GPU backend (gsplat) and this backend agree:

1. Projection (vectorised over all Gaussians): world -> camera (OpenCV axes),
   near/far culling, EWA splatting with the perspective Jacobian whose x/z and
   y/z are clamped to a slightly enlarged field of view, a constant low-pass
   ``eps2d`` added to the diagonal of the 2D covariance, the conic (its inverse).
2. Screen extent: an integer radius per axis (``radius_mode="gsplat"``,
   opacity aware) or one square radius from the largest eigenvalue
   (``radius_mode="inria"``, the original 3D Gaussian Splatting rasterizer),
   and from it the rectangle of image tiles a Gaussian may touch.
3. Per pixel, front-to-back alpha compositing of the Gaussians listed for the
   pixel's tile, sorted by camera depth, with the same skip rule
   (``sigma < 0`` or ``alpha < 1/255``) and the same exclusive stop rule
   (the Gaussian that would drive the transmittance to ``<= 1e-4`` and all
   later ones are left out).

Discrete decisions (culling, radii, tile lists, the sort, the skip and stop
rules) are constants for autograd, as in gsplat. The compositing step is a
custom ``torch.autograd.Function`` with a hand-written backward that re-evaluates
one chunk of tiles at a time, so memory stays bounded by ``memory_budget_mb``
in both passes instead of growing with the image.

All computation happens on the device and in the floating dtype of ``means``;
nothing here is CPU specific, so it also runs on CUDA tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = ["RasterOutput", "RadiusMode", "rasterize_gaussians"]

RadiusMode = Literal["gsplat", "inria"]

# A Gaussian is ignored at a pixel where its alpha is below this (1/255).
ALPHA_THRESHOLD = 1.0 / 255.0
# A pixel is finished once its transmittance would fall to this or below.
TRANSMITTANCE_STOP = 1e-4
# gsplat caps the opacity-aware extent of a Gaussian at this many sigmas.
MAX_EXTEND = 3.33
# Estimated number of live [tiles, pixels, K]-sized temporaries in the backward
# pass of one chunk (the forward needs fewer); used to size chunks.
_LIVE_TEMPORARIES = 14
# Default chunk budget on CPU: on a 2-core machine 64 MB chunks ran about twice
# as fast as 512 MB ones (bench/torch_rasterizer_cpu.py).
_DEFAULT_BUDGET_CPU_MB = 64


@dataclass
class RasterOutput:
    """What :func:`rasterize_gaussians` returns.

    Attributes:
        colors: ``[H, W, D]`` composited colours, background included.
        alphas: ``[H, W, 1]`` accumulated opacity, ``1 - final transmittance``.
        means2d: ``[N, 2]`` projected centres in pixels (x right, y down), part of
            the autograd graph: call ``means2d.retain_grad()`` before ``backward``
            to read ``d loss / d means2d`` (zero for culled Gaussians, whose entry
            is also zero).
        radii: ``[N, 2]`` int32 screen radii in pixels (x, y); ``0`` for culled
            Gaussians. In ``"inria"`` mode both entries hold the square radius.
        depths: ``[N]`` camera-space z of every Gaussian (culled ones too).
    """

    colors: Tensor
    alphas: Tensor
    means2d: Tensor
    radii: Tensor
    depths: Tensor


@dataclass
class _TilePlan:
    """Constant bookkeeping of the compositing step (no autograd).

    ``chunks`` holds pairs ``(tile_ids [T], gauss_ids [T, K])``: ``gauss_ids[i]``
    lists, front to back, the Gaussians touching tile ``tile_ids[i]``, padded
    with the index ``N`` of an invisible dummy Gaussian.
    """

    width: int
    height: int
    tile_size: int
    tiles_x: int
    tiles_y: int
    alpha_max: float
    chunks: list[tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------- #
# Projection
# --------------------------------------------------------------------------- #


def _symmetric_from_upper(covars: Tensor) -> Tensor:
    """``[N, 3, 3] -> [N, 3, 3]`` symmetric matrix built from the upper triangle.

    gsplat only reads the upper triangle of the covariances it is given, so the
    lower triangle receives no gradient there; doing the same keeps both the
    values and the gradients of the two backends identical.
    """
    rows = [0, 0, 0, 1, 1, 2]
    cols = [0, 1, 2, 1, 2, 2]
    upper = covars[:, rows, cols]  # [N, 6]
    full = [0, 1, 2, 1, 3, 4, 2, 4, 5]
    return upper[:, full].reshape(-1, 3, 3)


def _project(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmat: Tensor,  # [4, 4]
    intrinsics: tuple[float, float, float, float],
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
    eps2d: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """EWA projection of every Gaussian.

    Returns ``(means2d [N, 2], cov2d [N, 3] as (a, b, c) with eps2d added,
    conics [N, 3] as (A, B, C), depths [N], projectable [N] bool)``. Entries
    that are not projectable (outside the depth range or with a non-positive
    2D determinant) hold finite placeholders with no gradient, so that culled
    Gaussians cannot poison the backward pass with NaNs.
    """
    fx, fy, cx, cy = intrinsics
    rot = viewmat[:3, :3]  # [3, 3]
    trans = viewmat[:3, 3]  # [3]
    means_c = means @ rot.transpose(0, 1) + trans  # [N, 3]
    x, y, z = means_c.unbind(-1)  # [N] each

    with torch.no_grad():
        in_range = (z >= near_plane) & (z <= far_plane)  # [N]
    # Placeholders keep culled entries finite (and gradient free).
    z_s = torch.where(in_range, z, torch.ones_like(z))
    x_s = torch.where(in_range, x, torch.zeros_like(x))
    y_s = torch.where(in_range, y, torch.zeros_like(y))

    # The Jacobian is evaluated at a point clamped to 1.3x the field of view so
    # that Gaussians far outside the image do not blow up into huge splats.
    tan_fovx = 0.5 * width / fx
    tan_fovy = 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z_s
    rz2 = rz * rz
    tx = z_s * torch.clamp(x_s * rz, min=-lim_x_neg, max=lim_x_pos)
    ty = z_s * torch.clamp(y_s * rz, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(rz)
    jac = torch.stack(
        [fx * rz, zero, -fx * tx * rz2, zero, fy * rz, -fy * ty * rz2], dim=-1
    ).reshape(-1, 2, 3)  # [N, 2, 3]

    cov_w = _symmetric_from_upper(covars)  # [N, 3, 3]
    cov_c = rot @ cov_w @ rot.transpose(0, 1)  # [N, 3, 3]
    cov2d = jac @ cov_c @ jac.transpose(1, 2)  # [N, 2, 2]
    a = cov2d[:, 0, 0] + eps2d
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + eps2d
    det = a * c - b * b  # [N]
    with torch.no_grad():
        projectable = in_range & (det > 0)
    det_s = torch.where(projectable, det, torch.ones_like(det))
    conics = torch.stack([c / det_s, -b / det_s, a / det_s], dim=-1)  # [N, 3]
    means2d = torch.stack([fx * x_s * rz + cx, fy * y_s * rz + cy], dim=-1)  # [N, 2]
    cov2d_abc = torch.stack([a, b, c], dim=-1)  # [N, 3]
    return means2d, cov2d_abc, conics, z, projectable


@torch.no_grad()
def _screen_extent(
    means2d: Tensor,  # [N, 2]
    cov2d: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    projectable: Tensor,  # [N] bool
    width: int,
    height: int,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    radius_mode: RadiusMode,
) -> tuple[Tensor, Tensor, Tensor]:
    """Radii and tile rectangles (non-differentiable decisions).

    Returns ``(visible [N] bool, radii [N, 2] int32, rect [N, 4] int64)`` where
    ``rect`` is ``(x_min, x_max, y_min, y_max)`` in tiles, min inclusive and max
    exclusive, empty for Gaussians that touch no tile.
    """
    a, c = cov2d[:, 0], cov2d[:, 2]
    mx, my = means2d[:, 0], means2d[:, 1]
    ts = float(tile_size)
    if radius_mode == "gsplat":
        # Opacity-aware extent: beyond `extend` sigmas alpha is below 1/255.
        opaque_enough = opacities >= ALPHA_THRESHOLD
        ratio = torch.where(opaque_enough, opacities / ALPHA_THRESHOLD, torch.ones_like(a))
        extend = torch.sqrt(2.0 * torch.log(ratio)).clamp(max=MAX_EXTEND)
        rad_x = torch.ceil(extend * torch.sqrt(a))
        rad_y = torch.ceil(extend * torch.sqrt(c))
        # NaN radii (indefinite covariances) compare False and end up culled.
        has_size = (rad_x > 0) | (rad_y > 0)
        on_image = (
            (mx + rad_x > 0) & (mx - rad_x < width) & (my + rad_y > 0) & (my - rad_y < height)
        )
        visible = projectable & opaque_enough & has_size & on_image
        rad_x = torch.where(visible, rad_x, torch.zeros_like(rad_x))
        rad_y = torch.where(visible, rad_y, torch.zeros_like(rad_y))
        # Tile range in tile units; a Gaussian with a zero radius on one axis
        # gets an empty range, like gsplat's intersection step.
        tile_x, tile_y = mx / ts, my / ts
        x_min = torch.floor(tile_x - rad_x / ts).clamp(0, tiles_x)
        x_max = torch.ceil(tile_x + rad_x / ts).clamp(0, tiles_x)
        y_min = torch.floor(tile_y - rad_y / ts).clamp(0, tiles_y)
        y_max = torch.ceil(tile_y + rad_y / ts).clamp(0, tiles_y)
        touches = visible & (rad_x > 0) & (rad_y > 0)
    elif radius_mode == "inria":
        det = a * c - cov2d[:, 1] ** 2
        mid = 0.5 * (a + c)
        lam_max = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
        radius = torch.ceil(3.0 * torch.sqrt(lam_max))
        ok = projectable & torch.isfinite(radius) & (radius > 0)
        radius = torch.where(ok, radius, torch.zeros_like(radius))
        # The original rasterizer works with pixel centres at integer
        # coordinates and truncates toward zero (C casts).
        px, py = mx - 0.5, my - 0.5
        x_min = torch.trunc((px - radius) / ts).clamp(0, tiles_x)
        x_max = torch.trunc((px + radius + ts - 1.0) / ts).clamp(0, tiles_x)
        y_min = torch.trunc((py - radius) / ts).clamp(0, tiles_y)
        y_max = torch.trunc((py + radius + ts - 1.0) / ts).clamp(0, tiles_y)
        touches = ok & (x_max > x_min) & (y_max > y_min)
        visible = touches
        rad_x = rad_y = torch.where(visible, radius, torch.zeros_like(radius))
    else:
        raise ValueError(f"unknown radius_mode {radius_mode!r}")

    rect = torch.stack([x_min, x_max, y_min, y_max], dim=-1)
    rect = torch.where(touches[:, None], rect, torch.zeros_like(rect)).long()  # [N, 4]
    radii = torch.stack([rad_x, rad_y], dim=-1).to(torch.int32)  # [N, 2]
    return visible, radii, rect


# --------------------------------------------------------------------------- #
# Tile lists
# --------------------------------------------------------------------------- #


@torch.no_grad()
def _build_plan(
    rect: Tensor,  # [N, 4]
    depths: Tensor,  # [N]
    width: int,
    height: int,
    tile_size: int,
    tiles_x: int,
    tiles_y: int,
    alpha_max: float,
    itemsize: int,
    memory_budget_mb: float,
) -> _TilePlan:
    """Sorts (tile, Gaussian) pairs and groups tiles into memory-bounded chunks."""
    n = rect.shape[0]
    device = rect.device
    n_x = rect[:, 1] - rect[:, 0]  # [N]
    n_y = rect[:, 3] - rect[:, 2]  # [N]
    counts_g = n_x * n_y  # [N] tiles per Gaussian (0 when culled)
    # Gaussians front to back; ties keep index order (gsplat's stable radix sort).
    order = torch.argsort(depths.detach(), stable=True)
    order = order[counts_g[order] > 0]
    cnt = counts_g[order]  # [V]
    total = int(cnt.sum().item()) if cnt.numel() else 0
    chunks: list[tuple[Tensor, Tensor]] = []
    plan = _TilePlan(width, height, tile_size, tiles_x, tiles_y, alpha_max, chunks)
    if total == 0:
        return plan

    # Expand each Gaussian into the tiles of its rectangle (row-major).
    gauss = torch.repeat_interleave(order, cnt, output_size=total)  # [M]
    first = torch.cumsum(cnt, 0) - cnt  # [V]
    local = torch.arange(total, device=device) - torch.repeat_interleave(
        first, cnt, output_size=total
    )  # [M] index inside the rectangle
    nx_rep = n_x[gauss]
    tile_col = rect[gauss, 0] + local % nx_rep
    tile_row = rect[gauss, 2] + torch.div(local, nx_rep, rounding_mode="floor")
    tile = tile_row * tiles_x + tile_col  # [M]
    # A stable sort by tile keeps the depth order inside every tile.
    tile, perm = torch.sort(tile, stable=True)
    gauss = gauss[perm]  # [M]

    n_tiles = tiles_x * tiles_y
    per_tile = torch.bincount(tile, minlength=n_tiles)  # [n_tiles]
    start = torch.cumsum(per_tile, 0) - per_tile  # [n_tiles]
    busy = torch.argsort(per_tile, descending=True, stable=True)
    busy = busy[per_tile[busy] > 0]
    busy_counts = per_tile[busy].tolist()

    # Chunk sizing: tiles are visited from the busiest down so padding to the
    # first (largest) list of a chunk wastes little; a chunk also ends when the
    # lists shrink below half of its first one.
    pixels = tile_size * tile_size
    budget_pairs = max(1, int(memory_budget_mb * 2**20 / (_LIVE_TEMPORARIES * itemsize * pixels)))
    i = 0
    while i < len(busy_counts):
        k_max = busy_counts[i]
        limit = max(1, budget_pairs // k_max)
        j = i + 1
        while j < len(busy_counts) and j - i < limit and 2 * busy_counts[j] >= k_max:
            j += 1
        tile_ids = busy[i:j]  # [T]
        slot = torch.arange(k_max, device=device)  # [K]
        idx = start[tile_ids, None] + slot  # [T, K]
        filled = slot < per_tile[tile_ids, None]  # [T, K]
        gids = torch.where(filled, gauss[idx.clamp(max=total - 1)], torch.full_like(idx, n))
        chunks.append((tile_ids, gids))
        i = j
    return plan


# --------------------------------------------------------------------------- #
# Compositing
# --------------------------------------------------------------------------- #


def _tiles_to_image(tiles: Tensor, plan: _TilePlan) -> Tensor:
    """``[n_tiles, ts*ts, D] -> [H, W, D]``."""
    ts, d = plan.tile_size, tiles.shape[-1]
    img = tiles.reshape(plan.tiles_y, plan.tiles_x, ts, ts, d).permute(0, 2, 1, 3, 4)
    img = img.reshape(plan.tiles_y * ts, plan.tiles_x * ts, d)
    return img[: plan.height, : plan.width]


def _image_to_tiles(img: Tensor, plan: _TilePlan) -> Tensor:
    """``[H, W, D] -> [n_tiles, ts*ts, D]``, zero outside the image."""
    ts, d = plan.tile_size, img.shape[-1]
    full = img.new_zeros(plan.tiles_y * ts, plan.tiles_x * ts, d)
    full[: plan.height, : plan.width] = img
    full = full.reshape(plan.tiles_y, ts, plan.tiles_x, ts, d).permute(0, 2, 1, 3, 4)
    return full.reshape(plan.tiles_y * plan.tiles_x, ts * ts, d)


def _pixel_centres(tile_ids: Tensor, plan: _TilePlan, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Pixel centres ``(px [T, P, 1], py [T, P, 1])`` of the given tiles."""
    ts = plan.tile_size
    local = torch.arange(ts * ts, device=tile_ids.device)  # [P]
    col = (tile_ids % plan.tiles_x)[:, None] * ts + local % ts  # [T, P]
    row = torch.div(tile_ids, plan.tiles_x, rounding_mode="floor")[:, None] * ts + local // ts
    return (col.to(dtype) + 0.5)[..., None], (row.to(dtype) + 0.5)[..., None]


@dataclass
class _ChunkState:
    """Per (tile, pixel, Gaussian slot) quantities of one chunk, all ``[T, P, K]``."""

    dx: Tensor
    dy: Tensor
    vis: Tensor  # exp(-sigma)
    raw: Tensor  # opacity * vis, before the alpha_max cap
    alpha: Tensor  # alpha used for compositing: 0 where skipped or after the stop
    trans: Tensor  # inclusive transmittance, valid where alpha > 0
    final_trans: Tensor  # [T, P] transmittance after the last composited Gaussian


def _evaluate_chunk(
    means2d: Tensor,  # [N + 1, 2]
    conics: Tensor,  # [N + 1, 3]
    opacities: Tensor,  # [N + 1]
    tile_ids: Tensor,  # [T]
    gids: Tensor,  # [T, K]
    plan: _TilePlan,
) -> _ChunkState:
    """Alphas and transmittances of one chunk (no autograd: called in no_grad)."""
    px, py = _pixel_centres(tile_ids, plan, means2d.dtype)  # [T, P, 1]
    mean = means2d[gids]  # [T, K, 2]
    conic = conics[gids]  # [T, K, 3]
    dx = mean[:, None, :, 0] - px  # [T, P, K]
    dy = mean[:, None, :, 1] - py  # [T, P, K]
    half_a = (0.5 * conic[..., 0])[:, None, :]  # [T, 1, K]
    b = conic[..., 1][:, None, :]
    half_c = (0.5 * conic[..., 2])[:, None, :]
    # sigma = 0.5 * (A dx^2 + C dy^2) + B dx dy
    sigma = torch.addcmul(half_a * dx, b, dy).mul_(dx).addcmul_(half_c * dy, dy)
    vis = torch.exp(-sigma)
    raw = vis * opacities[gids][:, None, :]
    alpha = raw.clamp(max=plan.alpha_max)
    alpha.masked_fill_((sigma < 0) | (alpha < ALPHA_THRESHOLD), 0.0)
    del sigma
    # 1 - alpha >= 1 - alpha_max > 0, so a running product is safe; the stop
    # rule then is a prefix mask along K, because transmittance only decreases.
    trans = torch.cumprod(1.0 - alpha, dim=-1)  # [T, P, K]
    live = trans > TRANSMITTANCE_STOP
    alpha.mul_(live)
    n_live = live.sum(-1, keepdim=True)  # [T, P, 1]
    last = torch.gather(trans, -1, (n_live - 1).clamp(min=0)).squeeze(-1)  # [T, P]
    final_trans = torch.where(n_live.squeeze(-1) > 0, last, torch.ones_like(last))
    return _ChunkState(dx, dy, vis, raw, alpha, trans, final_trans)


def _exclusive_trans(state: _ChunkState) -> Tensor:
    """Transmittance in front of every slot, ``[T, P, K]`` (valid where alpha > 0)."""
    front = torch.ones_like(state.trans)
    front[..., 1:] = state.trans[..., :-1]
    return front


def _with_dummy(x: Tensor) -> Tensor:
    """Appends the invisible padding Gaussian (index N, all zeros) along dim 0."""
    return torch.cat([x, x.new_zeros((1,) + tuple(x.shape[1:]))], dim=0)


class _Composite(torch.autograd.Function):
    """Front-to-back compositing over tiles; returns (colour sum, transmittance)."""

    @staticmethod
    def forward(ctx, means2d, conics, opacities, colors, plan: _TilePlan):
        n_tiles = plan.tiles_x * plan.tiles_y
        pixels = plan.tile_size**2
        d = colors.shape[-1]
        accum = colors.new_zeros(n_tiles, pixels, d)  # [n_tiles, P, D]
        final_trans = colors.new_ones(n_tiles, pixels)  # [n_tiles, P]
        with torch.no_grad():
            m2d, con, opa, col = (_with_dummy(t) for t in (means2d, conics, opacities, colors))
            for tile_ids, gids in plan.chunks:
                state = _evaluate_chunk(m2d, con, opa, tile_ids, gids, plan)
                weight = state.alpha  # becomes alpha * T_before in place
                weight[..., 1:].mul_(state.trans[..., :-1])
                accum[tile_ids] = torch.bmm(weight, col[gids])  # [T, P, D]
                final_trans[tile_ids] = state.final_trans
                del state, weight
        ctx.save_for_backward(means2d, conics, opacities, colors, final_trans)
        ctx.plan = plan
        return _tiles_to_image(accum, plan), _tiles_to_image(final_trans[..., None], plan)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_accum, grad_trans):
        means2d, conics, opacities, colors, final_trans = ctx.saved_tensors
        plan: _TilePlan = ctx.plan
        n = means2d.shape[0]
        d = colors.shape[-1]
        g_col_img = _image_to_tiles(grad_accum, plan)  # [n_tiles, P, D]
        g_trans_img = _image_to_tiles(grad_trans, plan)[..., 0]  # [n_tiles, P]
        v_means2d = means2d.new_zeros(n + 1, 2)
        v_conics = conics.new_zeros(n + 1, 3)
        v_opac = opacities.new_zeros(n + 1)
        v_colors = colors.new_zeros(n + 1, d)
        m2d, con, opa, col = (_with_dummy(t) for t in (means2d, conics, opacities, colors))
        for tile_ids, gids in plan.chunks:
            s = _evaluate_chunk(m2d, con, opa, tile_ids, gids, plan)
            flat = gids.reshape(-1)
            g_col = g_col_img[tile_ids]  # [T, P, D]
            c_k = col[gids]  # [T, K, D]
            t_front = _exclusive_trans(s)  # [T, P, K]
            weight = s.alpha * t_front  # [T, P, K]
            v_colors.index_add_(0, flat, torch.bmm(weight.transpose(1, 2), g_col).reshape(-1, d))
            # d loss / d alpha_k = T_k <g, c_k> - (sum_{j>k} w_j <g, c_j>
            #                      + T_final * d loss / d T_final) / (1 - alpha_k)
            g_dot_c = torch.bmm(g_col, c_k.transpose(1, 2))  # [T, P, K]
            behind = weight.mul_(g_dot_c)  # w_k <g, c_k>
            behind = behind.sum(-1, keepdim=True) - behind.cumsum(-1)  # sum over j > k
            behind += (final_trans[tile_ids] * g_trans_img[tile_ids])[..., None]
            v_alpha = t_front.mul_(g_dot_c).sub_(behind.div_(1.0 - s.alpha))
            del behind, g_dot_c, t_front
            # Only composited slots below the alpha_max cap depend on the inputs.
            v_alpha.masked_fill_((s.alpha <= 0) | (s.raw > plan.alpha_max), 0.0)
            v_opac.index_add_(0, flat, (v_alpha * s.vis).sum(1).reshape(-1))
            v_sigma = v_alpha.mul_(s.raw).neg_()  # d raw / d sigma = -raw
            u = v_sigma * s.dx  # v_sigma dx
            w = v_sigma.mul_(s.dy)  # v_sigma dy (reuses v_sigma's storage)
            sum_u, sum_w = u.sum(1), w.sum(1)  # [T, K]
            conic = con[gids]  # [T, K, 3]
            v_con = torch.stack(
                [0.5 * (u * s.dx).sum(1), (u * s.dy).sum(1), 0.5 * (w * s.dy).sum(1)], dim=-1
            )  # [T, K, 3]
            v_mean = torch.stack(
                [
                    conic[..., 0] * sum_u + conic[..., 1] * sum_w,
                    conic[..., 1] * sum_u + conic[..., 2] * sum_w,
                ],
                dim=-1,
            )  # [T, K, 2]
            v_conics.index_add_(0, flat, v_con.reshape(-1, 3))
            v_means2d.index_add_(0, flat, v_mean.reshape(-1, 2))
            del s, u, w, v_alpha, v_sigma
        return v_means2d[:n], v_conics[:n], v_opac[:n], v_colors[:n], None


# --------------------------------------------------------------------------- #
# Public entry point
# --------------------------------------------------------------------------- #


def rasterize_gaussians(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [N, D]
    viewmat: Tensor,  # [4, 4]
    K: Tensor,  # [3, 3]
    width: int,
    height: int,
    background: Tensor | None = None,  # [D]
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    alpha_max: float = 0.999,
    tile_size: int = 16,
    radius_mode: RadiusMode = "gsplat",
    memory_budget_mb: float | None = None,
) -> RasterOutput:
    """Renders 3D Gaussians seen by one pinhole camera, differentiably.

    Args:
        means: ``[N, 3]`` world-space centres.
        covars: ``[N, 3, 3]`` world-space covariances (symmetric PSD; only the
            upper triangle is read, as in gsplat).
        opacities: ``[N]`` opacities in ``[0, 1]``.
        colors: ``[N, D]`` post-activation features, any ``D >= 1``.
        viewmat: ``[4, 4]`` world-to-camera matrix, OpenCV axes (x right,
            y down, z forward).
        K: ``[3, 3]`` pinhole intrinsics in pixels; pixel (row i, col j) has
            its centre at ``(j + 0.5, i + 0.5)``. Skew is ignored.
        width, height: image size in pixels.
        background: optional ``[D]`` colour behind the Gaussians.
        near_plane, far_plane: Gaussians whose camera z is outside are culled.
        eps2d: low-pass variance added to the 2D covariance diagonal.
        alpha_max: per-Gaussian alpha cap (gsplat 0.999; the original 3DGS 0.99).
        tile_size: tile edge in pixels; a Gaussian only reaches the pixels of
            the tiles its screen rectangle touches.
        radius_mode: ``"gsplat"`` (opacity-aware per-axis radius) or
            ``"inria"`` (square 3-sigma radius of the original rasterizer).
        memory_budget_mb: rough bound on the temporaries of one chunk of
            tiles (a single very crowded tile may exceed it). ``None`` picks
            64 MB on CPU, where chunks that stay small are also the fastest
            (fewer page faults, better cache use), and 1024 MB elsewhere.

    Returns:
        :class:`RasterOutput` with ``colors [H, W, D]``, ``alphas [H, W, 1]``,
        ``means2d [N, 2]``, ``radii [N, 2]`` (int32) and ``depths [N]``.
        Gradients flow to ``means``, ``covars``, ``opacities``, ``colors``,
        ``background`` (and, through the projection, ``viewmat``).
    """
    n = means.shape[0]
    if means.shape != (n, 3) or covars.shape != (n, 3, 3) or opacities.shape != (n,):
        raise ValueError(
            f"bad shapes: means {tuple(means.shape)}, covars {tuple(covars.shape)}, "
            f"opacities {tuple(opacities.shape)}"
        )
    if colors.dim() != 2 or colors.shape[0] != n or colors.shape[1] < 1:
        raise ValueError(f"colors must be [N, D] with D >= 1, got {tuple(colors.shape)}")
    if viewmat.shape != (4, 4) or K.shape != (3, 3):
        raise ValueError(f"viewmat must be [4, 4] and K [3, 3], got {viewmat.shape}, {K.shape}")
    if width <= 0 or height <= 0 or tile_size <= 0:
        raise ValueError("width, height and tile_size must be positive")
    if not 0.0 < alpha_max <= 1.0:
        raise ValueError(f"alpha_max must be in (0, 1], got {alpha_max}")
    if radius_mode not in ("gsplat", "inria"):
        raise ValueError(f"unknown radius_mode {radius_mode!r}")
    d = colors.shape[1]
    if background is not None and background.shape != (d,):
        raise ValueError(f"background must be [{d}], got {tuple(background.shape)}")
    if not means.is_floating_point():
        raise TypeError("means must be a floating point tensor")

    dtype = means.dtype
    covars, opacities, colors = covars.to(dtype), opacities.to(dtype), colors.to(dtype)
    viewmat = viewmat.to(dtype)
    kk = K.detach().to(torch.float64).cpu()
    intrinsics = (float(kk[0, 0]), float(kk[1, 1]), float(kk[0, 2]), float(kk[1, 2]))
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)

    means2d_all, cov2d, conics_all, depths, projectable = _project(
        means, covars, viewmat, intrinsics, width, height, near_plane, far_plane, eps2d
    )
    visible, radii, rect = _screen_extent(
        means2d_all.detach(),
        cov2d.detach(),
        opacities.detach(),
        projectable,
        width,
        height,
        tile_size,
        tiles_x,
        tiles_y,
        radius_mode,
    )
    # Culled Gaussians report zeros (as gsplat does) and get zero gradients.
    means2d = torch.where(visible[:, None], means2d_all, torch.zeros_like(means2d_all))
    conics = torch.where(visible[:, None], conics_all, torch.zeros_like(conics_all))

    if memory_budget_mb is None:
        memory_budget_mb = _DEFAULT_BUDGET_CPU_MB if means.device.type == "cpu" else 1024
    plan = _build_plan(
        rect,
        depths.detach(),
        width,
        height,
        tile_size,
        tiles_x,
        tiles_y,
        float(alpha_max),
        torch.finfo(dtype).bits // 8,
        memory_budget_mb,
    )
    accum, trans = _Composite.apply(means2d, conics, opacities, colors, plan)
    out_colors = accum if background is None else accum + trans * background.to(dtype)
    return RasterOutput(
        colors=out_colors,
        alphas=1.0 - trans,
        means2d=means2d,
        radii=radii,
        depths=depths,
    )
