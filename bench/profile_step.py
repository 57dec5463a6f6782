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

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gaussian_renderer import render, resolve_backend  # noqa: E402
from scene.cameras import Camera  # noqa: E402
from scene.dataset_readers import Intrinsics  # noqa: E402
from scene.gaussian_model import GaussianHead, ModelConfig  # noqa: E402
from utils.general_utils import configure_precision  # noqa: E402
from utils.loss_utils import l1_loss, ssim  # noqa: E402


def profile(fn, device: torch.device, repeat: int = 10):
    """(total ms per call, [(kernel, ms per call, launches per call)]) of ``fn``'s device work
    (on the CPU: its operators' own CPU time)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    with prof(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as p:
        for _ in range(repeat):
            fn()
        sync()

    def own(e) -> float:
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    events = [e for e in p.key_averages() if own(e) > 0]
    total = sum(own(e) for e in events) / repeat / 1000
    top = sorted(events, key=own, reverse=True)
    return total, [(e.key[:90], own(e) / repeat / 1000, e.count // repeat) for e in top]


def print_profile(title: str, fn, device: torch.device, top: int, indent: str = "") -> None:
    """Profile ``fn`` and print its total device time and its ``top`` kernels."""
    total, kernels = profile(fn, device)
    print(f"{indent}{title}: {total:.3f} ms of {device.type} work per call")
    for key, ms, count in kernels[:top]:
        print(f"{indent}  {ms:8.3f} ms  x{count:<3d} {key}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--gaussians", type=int, default=50_000)
    p.add_argument("--res", type=int, default=512)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="fp32", choices=("fp32", "tf32", "mixed"))
    p.add_argument("--fast_path", default="auto", choices=("auto", "off"),
                   help="auto: the fused deformation layers")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    backend = resolve_backend("auto", dev)
    torch.manual_seed(0)
    m = GaussianHead(ModelConfig(exp_dim=46, radius=0.15)).to(dev)
    m.autocast_dtype = configure_precision(args.precision, dev)
    m.fused = args.fast_path == "auto"
    n = args.gaussians
    xyz = torch.randn(n, 3) * 0.05
    m.init_from_points(xyz.numpy())
    m.to(dev)
    m.active_sh_degree = 3
    intr = Intrinsics(args.res, args.res, 1.2 * args.res, 1.2 * args.res, args.res / 2,
                      args.res / 2)
    c2w = np.eye(4)
    c2w[2, 3] = 0.5  # OpenGL camera on the +z axis, looking down -z at the head
    cam = Camera(uid=0, intr=intr, c2w_gl=c2w, exp=torch.rand(46))
    _, _, campos, exp = cam.tensors(dev)
    bg = torch.ones(3, device=dev)
    gt = torch.rand(3, args.res, args.res, device=dev)
    with torch.no_grad():
        g0 = m.derive(exp, campos)
    means = g0.means.detach()

    def deform():
        with m._autocast():
            out = m.deform(m.xyz.detach(), exp)
        sum(o.float().sum() for o in out).backward()

    def planes():
        coords = m.derivation_coords(means)
        m.triplane.plane_features(coords).sum().backward()

    feat = m.triplane.plane_features(m.derivation_coords(means)).detach().requires_grad_(True)
    dirs = torch.nn.functional.normalize(means - campos, dim=-1)

    def decoders():  # as training runs them (aligned operands on the fast path)
        with m._autocast():
            opacity, _, sh = m.triplane.decode(feat, dirs)
        (opacity.float().sum() + sh.float().sum()).backward()

    leaves = {k: getattr(g0, k).detach().clone().requires_grad_(True)
              for k in ("means", "opacities", "sh", "quats", "scales")}
    from scene.gaussian_model import FrameGaussians

    g = FrameGaussians(**leaves)

    def raster():
        render(g, cam, bg, m.cfg, 3, backend).image.sum().backward()

    img = torch.rand_like(gt, requires_grad=True)

    def loss():
        (0.8 * l1_loss(img, gt) + 0.2 * (1 - ssim(img, gt))).backward()

    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"{n} Gaussians, {args.res}x{args.res}, {name}, rasterizer {backend}")
    for name, fn in [("deformation MLP", deform), ("tri-plane sampling", planes),
                     ("decoders", decoders), ("rasterization", raster), ("loss", loss)]:
        print()
        print_profile(f"{name} (fwd+bwd)", fn, dev, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
