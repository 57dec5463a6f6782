"""Real spherical harmonics up to degree 3, in the convention of 3D Gaussian Splatting
(colour = SH(dir) + 0.5, clamped at 0; coefficient k of band l at index l**2 + k)."""

from __future__ import annotations

import torch

C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
C1 = 0.4886025119029199  # sqrt(3 / (4 pi))
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
      0.5462742152960396)
C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
      -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def sh_basis(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """Basis values for unit directions. dirs [..., 3] -> [..., (degree + 1) ** 2]"""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2.0 * zz - xx - yy), C2[3] * xz,
                C2[4] * (xx - yy)]
    if degree >= 3:
        out += [
            C3[0] * y * (3.0 * xx - yy),
            C3[1] * xy * z,
            C3[2] * y * (4.0 * zz - xx - yy),
            C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            C3[4] * x * (4.0 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def eval_sh_colors(degree: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """RGB from SH coefficients seen along (unnormalised) directions.

    sh [..., N, K, 3] with K >= (degree + 1) ** 2, dirs [..., N, 3] -> colours [..., N, 3], >= 0.
    """
    n_coef = (degree + 1) ** 2
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, dirs)  # [..., N, n_coef]
    rgb = (basis.unsqueeze(-1) * sh[..., :n_coef, :]).sum(dim=-2)
    return torch.clamp_min(rgb + 0.5, 0.0)
