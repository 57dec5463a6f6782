"""A brute-force Gaussian renderer, independent of gaussian_renderer/torch_rasterizer.py, and
random scenes for testing the rasterizer against it (tests/test_torch_rasterizer.py).

It loops over the Gaussians in depth order and applies the per-pixel rules to every pixel at
once, deciding tile membership from each Gaussian's own tile rectangle; its gradients come from
plain autograd.
"""

from __future__ import annotations

import math

import torch


def reference_render(
    means,
    covars,
    opacities,
    colors,
    viewmat,
    K,
    width,
    height,
    background=None,
    *,
    near_plane=0.01,
    far_plane=1e10,
    eps2d=0.3,
    alpha_max=0.999,
    tile_size=16,
    radius_mode="gsplat",
):
    """Per-Gaussian projection, then per-pixel compositing; returns a dict."""
    dtype = means.dtype
    n, d = colors.shape
    fx, fy = float(K[0, 0]), float(K[1, 1])
    cx, cy = float(K[0, 2]), float(K[1, 2])
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    # Field-of-view limits of the clamped Jacobian, in units of x/z and y/z.
    x_hi = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    x_lo = -(cx / fx + 0.3 * (0.5 * width / fx))
    y_hi = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    y_lo = -(cy / fy + 0.3 * (0.5 * height / fy))
    tiles_x = math.ceil(width / tile_size)
    tiles_y = math.ceil(height / tile_size)

    means2d_rows, conic_rows = [], []
    radii = torch.zeros(n, 2, dtype=torch.int64)
    rects = {}  # gaussian -> (x0, x1, y0, y1) in tiles, max exclusive
    depth = {}
    for i in range(n):
        pc = rot @ means[i] + trans  # [3]
        x, y, z = pc[0], pc[1], pc[2]
        zero2 = torch.zeros(2, dtype=dtype)
        means2d_rows.append(zero2)
        conic_rows.append(torch.zeros(3, dtype=dtype))
        if not (near_plane <= z.detach().item() <= far_plane):
            continue
        upper = torch.triu(covars[i])
        sym = upper + torch.triu(covars[i], diagonal=1).T
        cov_cam = rot @ sym @ rot.T
        u = torch.clamp(x / z, x_lo, x_hi)
        v = torch.clamp(y / z, y_lo, y_hi)
        jac = torch.stack(
            [
                torch.stack([fx / z, torch.zeros_like(z), -fx * u / z]),
                torch.stack([torch.zeros_like(z), fy / z, -fy * v / z]),
            ]
        )
        cov2 = jac @ cov_cam @ jac.T + eps2d * torch.eye(2, dtype=dtype)
        det = (cov2[0, 0] * cov2[1, 1] - cov2[0, 1] * cov2[1, 0]).detach().item()
        if det <= 0:
            continue
        inv = torch.linalg.inv(cov2)
        m2 = torch.stack([fx * x / z + cx, fy * y / z + cy])
        mx, my = m2[0].detach().item(), m2[1].detach().item()
        a, c = cov2[0, 0].detach().item(), cov2[1, 1].detach().item()
        if radius_mode == "gsplat":
            op = opacities[i].detach().item()
            if op < 1.0 / 255.0:
                continue
            ext = min(3.33, math.sqrt(2.0 * math.log(op * 255.0)))
            rx, ry = math.ceil(ext * math.sqrt(a)), math.ceil(ext * math.sqrt(c))
            if rx <= 0 and ry <= 0:
                continue
            if mx + rx <= 0 or mx - rx >= width or my + ry <= 0 or my - ry >= height:
                continue
            x0 = min(max(math.floor((mx - rx) / tile_size), 0), tiles_x)
            x1 = min(max(math.ceil((mx + rx) / tile_size), 0), tiles_x)
            y0 = min(max(math.floor((my - ry) / tile_size), 0), tiles_y)
            y1 = min(max(math.ceil((my + ry) / tile_size), 0), tiles_y)
        else:
            mid = 0.5 * (a + c)
            lam = mid + math.sqrt(max(0.1, mid * mid - det))
            r = math.ceil(3.0 * math.sqrt(lam))
            rx = ry = r
            qx, qy = mx - 0.5, my - 0.5
            x0 = min(max(int((qx - r) / tile_size), 0), tiles_x)
            x1 = min(max(int((qx + r + tile_size - 1) / tile_size), 0), tiles_x)
            y0 = min(max(int((qy - r) / tile_size), 0), tiles_y)
            y1 = min(max(int((qy + r + tile_size - 1) / tile_size), 0), tiles_y)
            if (x1 - x0) * (y1 - y0) == 0:
                continue
        radii[i] = torch.tensor([rx, ry])
        means2d_rows[i] = m2
        conic_rows[i] = torch.stack([inv[0, 0], inv[0, 1], inv[1, 1]])
        rects[i] = (x0, x1, y0, y1)
        depth[i] = z.detach().item()

    means2d = torch.stack(means2d_rows) if n else torch.zeros(0, 2, dtype=dtype)
    if means2d.requires_grad:
        means2d.retain_grad()
    rows = torch.arange(height, dtype=dtype)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=dtype)[None, :].expand(height, width)
    tile_col = torch.arange(width)[None, :].expand(height, width) // tile_size
    tile_row = torch.arange(height)[:, None].expand(height, width) // tile_size

    T = torch.ones(height, width, dtype=dtype)
    done = torch.zeros(height, width, dtype=torch.bool)
    out = torch.zeros(height, width, d, dtype=dtype)
    for i in sorted(rects, key=lambda k: (depth[k], k)):
        x0, x1, y0, y1 = rects[i]
        in_tiles = (tile_col >= x0) & (tile_col < x1) & (tile_row >= y0) & (tile_row < y1)
        ddx = means2d[i, 0] - (cols + 0.5)
        ddy = means2d[i, 1] - (rows + 0.5)
        ca, cb, cc = conic_rows[i][0], conic_rows[i][1], conic_rows[i][2]
        sigma = 0.5 * (ca * ddx * ddx + cc * ddy * ddy) + cb * ddx * ddy
        alpha = torch.clamp(opacities[i] * torch.exp(-sigma), max=alpha_max)
        use = in_tiles & ~done & (sigma >= 0) & (alpha >= 1.0 / 255.0)
        next_T = T * (1.0 - alpha)
        stop = use & (next_T <= 1e-4)
        done = done | stop
        use = use & ~stop
        out = out + torch.where(use, alpha * T, torch.zeros_like(T))[..., None] * colors[i]
        T = torch.where(use, next_T, T)
    if background is not None:
        out = out + T[..., None] * background
    return {"colors": out, "alphas": (1.0 - T)[..., None], "means2d": means2d, "radii": radii}


# --------------------------------------------------------------------------- #
# Random scenes
# --------------------------------------------------------------------------- #


def rotation_matrix(q):
    q = q / q.norm()
    w, x, y, z = q
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)]),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)]),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]),
        ]
    )


def make_scene(n, d, width, height, seed, dtype=torch.float64):
    """Random Gaussians in front of an off-centre camera, a few culled on purpose."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    fx, fy = 1.1 * width, 0.9 * width
    cx, cy = 0.43 * width + 0.3, 0.56 * height - 0.2
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cam_rot = rotation_matrix(torch.randn(4, generator=g, dtype=torch.float64))
    cam_t = torch.randn(3, generator=g, dtype=torch.float64)
    viewmat = torch.eye(4, dtype=torch.float64)
    viewmat[:3, :3], viewmat[:3, 3] = cam_rot, cam_t

    z = 1.0 + 3.0 * rand(n)
    # Pixel positions spread a little past the image so some Gaussians are
    # partially or fully off-screen.
    u = (-0.25 + 1.5 * rand(n)) * width
    v = (-0.25 + 1.5 * rand(n)) * height
    # Behind the camera, before the near plane (0.01), and between 0.01 and the
    # 0.2 near plane used for "inria" mode.
    for i, depth in enumerate([-0.5, 0.005, 0.15][: max(1, n // 8)]):
        z[i] = depth
    # A stack of three opaque Gaussians at one spot, so the stop rule fires.
    stack = slice(n - 3, n) if n >= 8 else slice(0, 0)
    z[stack] = torch.tensor([1.5, 2.0, 2.5], dtype=torch.float64)
    u[stack], v[stack] = 0.5 * width + 0.2, 0.5 * height - 0.3
    pc = torch.stack([(u - cx) * z / fx, (v - cy) * z / fy, z], dim=-1)
    means = (pc - cam_t) @ cam_rot  # camera -> world
    # Screen sigmas of roughly 0.3..5 px (plus eps2d), anisotropic and rotated;
    # quaternions are deliberately not normalised before building rotations.
    scales = (0.3 + 4.7 * rand(n, 3)) * z.abs()[:, None] / fx
    covars = []
    for i in range(n):
        r = rotation_matrix(torch.randn(4, generator=g, dtype=torch.float64))
        covars.append(r @ torch.diag(scales[i] ** 2) @ r.T)
    covars = torch.stack(covars)
    opacities = rand(n)
    opacities[1::7] = 1.0  # opaque ones exercise the alpha cap and the stop rule
    opacities[2::11] = 0.002  # below 1/255: culled in gsplat mode
    opacities[stack] = 1.0
    colors = rand(n, d)
    background = rand(d)
    return {
        "means": means.to(dtype),
        "covars": covars.to(dtype),
        "opacities": opacities.to(dtype),
        "colors": colors.to(dtype),
        "viewmat": viewmat.to(dtype),
        "K": K.to(dtype),
        "background": background.to(dtype),
    }


def scene_leaves(scene):
    names = ["means", "covars", "opacities", "colors", "background"]
    return {k: scene[k].detach().clone().requires_grad_(True) for k in names}


def run_rasterizer(fn, scene, leaves, width, height, **kw):
    return fn(
        leaves["means"],
        leaves["covars"],
        leaves["opacities"],
        leaves["colors"],
        scene["viewmat"],
        scene["K"],
        width,
        height,
        leaves["background"],
        **kw,
    )


def image_grads(colors, alphas, leaves, seed):
    g = torch.Generator().manual_seed(seed)
    w_c = torch.randn(colors.shape, generator=g, dtype=torch.float64).to(colors.dtype)
    w_a = torch.randn(alphas.shape, generator=g, dtype=torch.float64).to(colors.dtype)
    loss = (colors * w_c).sum() + (alphas * w_a).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    return {k: (torch.zeros_like(leaves[k]) if gr is None else gr) for k, gr in zip(names, grads)}


def assert_grad_close(ours, ref, atol_scale=1e-8, rtol=1e-6):
    for k in ref:
        scale = max(ref[k].abs().max().item(), 1e-30)
        torch.testing.assert_close(ours[k], ref[k], atol=atol_scale * scale, rtol=rtol, msg=k)
