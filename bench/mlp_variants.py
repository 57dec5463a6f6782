"""The deformation MLP's forward + backward at a given number of Gaussians, per implementation
and precision: eager (nn.Linear + ReLU), fused (:class:`scene.deform_model._LinearReLU`: bias
and ReLU in the matrix product's epilogue, bias gradient as a matrix product, one head
product) and torch.compile of the eager network (``compiled``).

    python bench/mlp_variants.py [--gaussians 100000] [--variants eager,fused,compiled]

Prints, per variant, the median milliseconds of forward + backward and of forward alone (no
gradients, as rendering runs it) over 20 runs, the largest relative difference of the
outputs and gradients from the fp32 eager network, and, for torch.compile, the compile time.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scene.deform_model import DeformNetwork  # noqa: E402
from utils.cli import make_parser  # noqa: E402


def _time(fn, device: torch.device, repeat: int = 20) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--gaussians", type=int, default=100_000,
                   help="Gaussians (rows of the MLP's input)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="torch device")
    p.add_argument("--variants", default="eager,fused",
                   help="comma list of eager, fused, compiled (torch.compile of eager)")
    p.add_argument("--precisions", default="fp32,tf32,bf16",
                   help="comma list of fp32, tf32, bf16")
    p.add_argument("--profile", type=int, default=0, metavar="TOP",
                   help="also list each variant's TOP most expensive kernels (fwd+bwd)")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    torch.manual_seed(0)
    net = DeformNetwork(46).to(dev)
    xyz = torch.randn(args.gaussians, 3, device=dev) * 0.1
    exp = torch.rand(46, device=dev)
    cot = None

    def run(model, precision: str, grad: bool):
        torch.backends.cuda.matmul.allow_tf32 = precision in ("tf32", "bf16")
        ctx = (torch.autocast(dev.type, dtype=torch.bfloat16, cache_enabled=False)
               if precision == "bf16" else contextlib.nullcontext())
        if not grad:
            with torch.no_grad(), ctx:
                return model(xyz, exp), None
        net.zero_grad(set_to_none=True)
        with ctx:
            out = model(xyz, exp)
        loss = sum((o.float() * c).sum() for o, c in zip(out, cot))
        loss.backward()
        return out, {n: q.grad for n, q in net.named_parameters()}

    net.fused = False
    ref_out, _ = run(net, "fp32", False)
    cot = [torch.randn_like(o) for o in ref_out]
    ref_out, ref_grad = run(net, "fp32", True)
    ref_out = [o.detach().clone() for o in ref_out]
    ref_grad = {k: v.clone() for k, v in ref_grad.items()}

    known = {"eager": (False, None), "fused": (True, None), "compiled": (False, "default")}
    variants = [(v, *known[v]) for v in args.variants.split(",")]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    print(f"deformation MLP, {args.gaussians} Gaussians, {name}, torch {torch.__version__}")
    for label, fused, mode in variants:
        for precision in args.precisions.split(","):
            net.fused = fused
            model = net
            extra = ""
            if mode is not None:
                torch._dynamo.reset()
                model = torch.compile(net, mode=mode, dynamic=False)
                t0 = time.perf_counter()
                run(model, precision, True)
                run(model, precision, False)
                extra = f", compile {time.perf_counter() - t0:.0f} s"
            out, grad = run(model, precision, True)
            err = max(float((o.detach().float() - r).norm() / r.norm())
                      for o, r in zip(out, ref_out))
            gerr = max(float((grad[k] - r).norm() / r.norm().clamp_min(1e-20))
                       for k, r in ref_grad.items())
            fb = _time(lambda m=model, pr=precision: run(m, pr, True), dev)
            fw = _time(lambda m=model, pr=precision: run(m, pr, False), dev)
            print(f"  {label:8s} {precision:4s}  fwd+bwd {fb:7.3f} ms  fwd {fw:7.3f} ms  "
                  f"rel. error out {err:.1e} grad {gerr:.1e}{extra}")
            if args.profile:
                from bench.common import print_profile

                print_profile("kernels (fwd+bwd)", lambda m=model, pr=precision: run(m, pr, True),
                              dev, args.profile, indent="    ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
