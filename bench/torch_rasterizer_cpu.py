"""Timing and memory of the pure-PyTorch rasterizer on a head-like scene.

Not a test. Renders a synthetic "head" (Gaussians on and just under an
ellipsoid about 200 px tall, screen sigmas of 1-12 px, mostly opaque) and
prints forward time, backward time and the process's peak resident memory.

    .venv/bin/python bench/torch_rasterizer_cpu.py [--size 256] [--n 20000]
"""

from __future__ import annotations

import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaussian_renderer.torch_rasterizer import rasterize_gaussians  # noqa: E402
from utils.cli import make_parser  # noqa: E402


def head_scene(
    n: int, size: int, seed: int = 0, device: str = "cpu", max_sigma_px: float = 12.0
) -> dict:
    """A camera at the origin looking down +z at an ellipsoidal head 0.6 m away."""
    g = torch.Generator().manual_seed(seed)
    focal = 550.0 * size / 256.0
    K = torch.tensor([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
    viewmat = torch.eye(4)
    centre = torch.tensor([0.0, 0.0, 0.6])
    axes = torch.tensor([0.085, 0.11, 0.095])
    dirs = torch.randn(n, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    depth_in = 1.0 - 0.15 * torch.rand(n, 1, generator=g)  # on or just under the surface
    means = centre + dirs * axes * depth_in
    # Screen sigmas log-uniform in [1, max_sigma_px] px, flattened along one axis.
    px_sigma = torch.exp(math.log(max_sigma_px) * torch.rand(n, 1, generator=g))
    scales = px_sigma * 0.6 / focal * torch.tensor([1.0, 0.8, 0.3])
    scales = scales * (0.7 + 0.6 * torch.rand(n, 3, generator=g))
    q = torch.randn(n, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(n, 3, 3)
    covars = rot @ torch.diag_embed(scales**2) @ rot.transpose(1, 2)
    opacities = torch.sigmoid(1.0 + 2.0 * torch.randn(n, generator=g))
    colors = torch.rand(n, 3, generator=g)
    scene = {
        "means": means,
        "covars": covars,
        "opacities": opacities,
        "colors": colors,
        "viewmat": viewmat,
        "K": K,
        "background": torch.ones(3),
    }
    return {k: v.to(device) for k, v in scene.items()}


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--size", type=int, default=256, help="image width = height")
    parser.add_argument("--n", type=int, default=20000, help="number of Gaussians")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs (after one warm-up run)")
    parser.add_argument("--budget-mb", type=float, default=None,
                        help="the rasterizer's memory budget in MB (default: the renderer's)")
    parser.add_argument("--radius-mode", default="gsplat", choices=["gsplat", "inria"],
                        help="how a Gaussian's screen radius is cut off")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--max-sigma-px", type=float, default=12.0, help="largest screen sigma")
    args = parser.parse_args()

    scene = head_scene(args.n, args.size, device=args.device, max_sigma_px=args.max_sigma_px)
    leaves = ["means", "covars", "opacities", "colors", "background"]
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    print(f"image {args.size}x{args.size}, {args.n} Gaussians, budget {args.budget_mb} MB")

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    fwd_times, bwd_times = [], []
    for rep in range(args.repeats + 1):  # the first run is a warm-up
        params = {k: scene[k].clone().requires_grad_(True) for k in leaves}
        sync()
        t0 = time.perf_counter()
        out = rasterize_gaussians(
            params["means"],
            params["covars"],
            params["opacities"],
            params["colors"],
            scene["viewmat"],
            scene["K"],
            args.size,
            args.size,
            params["background"],
            radius_mode=args.radius_mode,
            memory_budget_mb=args.budget_mb,
        )
        sync()
        t1 = time.perf_counter()
        loss = (out.colors - 0.5).square().mean() + out.alphas.mean()
        loss.backward()
        sync()
        t2 = time.perf_counter()
        if rep > 0:
            fwd_times.append(t1 - t0)
            bwd_times.append(t2 - t1)
        if rep == 0:
            visible = int((out.radii[:, 0] > 0).sum())
            mean_radius = out.radii[out.radii[:, 0] > 0].float().mean()
            print(
                f"visible {visible}/{args.n}, mean radius {mean_radius:.1f} px, "
                f"image alpha mean {out.alphas.mean():.3f}"
            )

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"forward  {min(fwd_times):.3f} s (mean {sum(fwd_times) / len(fwd_times):.3f} s)")
    print(f"backward {min(bwd_times):.3f} s (mean {sum(bwd_times) / len(bwd_times):.3f} s)")
    print(f"total    {min(fwd_times) + min(bwd_times):.3f} s")
    print(f"peak RSS {peak_mb:.0f} MB (whole process, torch included)")


if __name__ == "__main__":
    main()
