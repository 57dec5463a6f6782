"""Where a training iteration's GPU time goes: the CUDA kernels of each stage of one step, at
a given number of Gaussians, from the torch profiler.

    python bench/profile_step.py [--gaussians 50000] [--res 512] [--top 12] \
        [--precision fp32|tf32|mixed] [--fast_path auto|off]

Stages: deformation MLP, tri-plane sampling, decoders, rasterization, loss (each forward +
backward, eagerly: the kernels that the fast path's CUDA graphs replay). Prints each stage's
total CUDA time and its top kernels; complements bench/run.py, which times whole stages with
host overhead included.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_profile  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from scene.dataset_readers import Intrinsics  # noqa: E402
from scene.gaussian_model import FrameGaussians, GaussianHead, ModelConfig  # noqa: E402
from scene.rendering import render_view  # noqa: E402
from training.losses import TrainingLoss  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.execution import resolve_execution  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--gaussians", type=int, default=50_000, help="Gaussians of the model")
    p.add_argument("--res", type=int, default=512, help="image width and height")
    p.add_argument("--top", type=int, default=12, help="kernels listed per stage")
    p.add_argument("--device", default="cuda", help="torch device")
    p.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "mixed"),
                   help="as train.py")
    p.add_argument("--fast_path", default="auto", choices=("auto", "off"),
                   help="auto: the fused deformation layers")
    args = p.parse_args(argv)
    ex = resolve_execution(args.device, "auto", args.precision, args.fast_path)
    dev, backend = ex.device, ex.backend
    torch.manual_seed(0)
    m = GaussianHead(ModelConfig(exp_dim=46, radius=0.15), autocast_dtype=ex.autocast_dtype,
                     fused=ex.fused).to(dev)
    n = args.gaussians
    xyz = torch.randn(n, 3) * 0.05
    m.init_from_points(xyz.numpy())
    m.to(dev)
    m.active_sh_degree = 3
    intr = Intrinsics(args.res, args.res, 1.2 * args.res, 1.2 * args.res, args.res / 2,
                      args.res / 2)
    c2w = np.eye(4)
    c2w[2, 3] = 0.5  # OpenGL camera on the +z axis, looking down -z at the head
    cam = Camera(intr=intr, c2w_gl=c2w, exp=torch.rand(46))
    _, _, campos, exp = cam.tensors(dev)
    bg = torch.ones(3, device=dev)
    gt = torch.rand(3, args.res, args.res, device=dev)
    with torch.no_grad():
        g0 = m.derive(exp, campos)
    means = g0.means.detach()

    def deform():
        with m.autocast():
            out = m.deform(m.xyz.detach(), exp)
        sum(o.float().sum() for o in out).backward()

    def planes():
        coords = m.derivation_coords(means, m.derivations)
        m.triplane.plane_features(coords).sum().backward()

    feat = m.triplane.plane_features(m.derivation_coords(means, m.derivations)).detach()
    feat.requires_grad_(True)
    dirs = torch.nn.functional.normalize(means - campos, dim=-1)

    def decoders():  # as training runs them (aligned operands on the fast path)
        with m.autocast():
            opacity, _, sh = m.triplane.decode(feat, dirs)
        (opacity.float().sum() + sh.float().sum()).backward()

    leaves = {k: getattr(g0, k).detach().clone().requires_grad_(True)
              for k in ("means", "opacities", "sh", "quats", "scales")}
    g = FrameGaussians(**leaves)

    def raster():
        render_view(m, g, cam, bg, backend).image.sum().backward()

    img = torch.rand_like(gt, requires_grad=True)
    gt_u8 = (gt.permute(1, 2, 0) * 255).to(torch.uint8)
    loss_fn = TrainingLoss(0.2, 0.0, None, graphs=False)  # the default weights, no VGG term

    def loss():
        loss_fn(img, gt_u8)[0].backward()

    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"{n} Gaussians, {args.res}x{args.res}, {name}, rasterizer {backend}")
    for name, fn in [("deformation MLP", deform), ("tri-plane sampling", planes),
                     ("decoders", decoders), ("rasterization", raster), ("loss", loss)]:
        print()
        print_profile(f"{name} (fwd+bwd)", fn, dev, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
