"""Benchmark: training speed, rendering speed, memory and quality on any dataset.

    python bench/run.py --data DIR [--minutes M | --iterations N]

Trains with the default configuration and reports, as JSON under
``bench/results/`` and one markdown table row:

- device, date, commit;
- steady-state training iterations/s (median over 100-iteration windows after warm-up) and the
  number of Gaussians at the end;
- rendering frames/s (deformation + decoders + rasterization, no I/O) at the dataset's
  resolution: one-frame latency and batched throughput, median over at least 200 frames;
- peak GPU memory during training (at the grown count when ``--grow_to`` is given);
- test PSNR / SSIM / L1 at the end;
- with ``--grow_to N`` (default 100k): the model is then grown to N Gaussians (copies of its
  own) and training iterations/s, the stages, peak memory and rendering are measured there;
- time per iteration split into stages (deformation MLP, tri-plane + decoders, rasterization
  forward + backward, loss, optimizer, densification, data), each with its FLOP and byte floor,
  and the time spent outside the GPU (Python, launches, host syncs).

Runs on a CUDA GPU; also runs, slowly, on the CPU.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arguments import ModelParams, OptimizationParams, PipelineParams  # noqa: E402
from bench.common import commit, device_name, sync  # noqa: E402
from bench.host_time import host_phases, outside_gpu, print_host_phases  # noqa: E402
from bench.stages import floors, measure_ceilings, stage_split  # noqa: E402
from scene.rendering import (  # noqa: E402
    RenderNetworks,
    colour_viewpoint,
    render_batch,
    render_view,
)
from training.densification import remap_gaussians  # noqa: E402
from training.trainer import Trainer  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.io_utils import atomic_write_json  # noqa: E402

# ---------------------------------------------------------------------------------- training


def train_phase(t: Trainer, iterations: int | None, minutes: float | None, window: int = 100
                ) -> dict:
    """Train, timing windows of ``window`` iterations. Returns the window rates."""
    dev = t.device
    deadline = time.perf_counter() + 60 * minutes if minutes else None
    last = iterations or t.opt.iterations
    windows = []
    sync(dev)
    t0 = time.perf_counter()
    it = 0
    for it in range(1, last + 1):
        t.step(it)
        if it % window == 0:
            sync(dev)
            now = time.perf_counter()
            windows.append({"end": it, "its": window / (now - t0),
                            "gaussians": t.model.num_gaussians})
            t0 = now
            if deadline and now > deadline:
                break
    return {"iterations": it, "windows": windows}


def grow_phase(t: Trainer, target: int, iterations: int, seed: int = 0) -> dict:
    """Grow the model to ``target`` Gaussians (copies of random ones, jittered by a tenth of
    their scale, optimizer moments zeroed, as densification's clones) and time ``iterations``
    training iterations there, with densification over. Returns the rate and peak memory."""
    dev, m = t.device, t.model
    n = m.num_gaussians
    if target > n:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        extra = torch.randint(0, n, (target - n,), generator=gen).to(dev)
        index = torch.cat([torch.arange(n, device=dev), extra])
        with torch.no_grad():
            xyz = m.xyz.detach()[index].clone()
            xyz[n:] += 0.1 * torch.exp(m.scaling.detach()[extra]) * torch.randn_like(xyz[n:])
        fresh = torch.zeros(len(index), dtype=torch.bool, device=dev)
        fresh[n:] = True
        remap_gaussians(m, t.optimizers, index, {"xyz": xyz}, fresh)
        t.densifier.reset(target, dev)
    start = max(t.opt.densify_until_iter, t.opt.warm_up) + 1
    for it in range(start, start + 20):  # capture and warm up at the new count
        t.step(it)
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for it in range(start + 20, start + 20 + iterations):
        t.step(it)
    sync(dev)
    rate = iterations / (time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
    return {"gaussians": m.num_gaussians, "iterations": iterations, "its": rate,
            "peak_gpu_mem_gib": peak, "next_iteration": start + 20 + iterations}


def steady_rate(windows: list[dict], warm_frac: float = 0.3) -> float:
    """Median rate over the windows after the first ``warm_frac`` of them."""
    if not windows:
        return float("nan")
    skip = min(len(windows) - 1, max(1, int(len(windows) * warm_frac)))
    return statistics.median(w["its"] for w in windows[skip:])


# ---------------------------------------------------------------------------------- rendering


@torch.no_grad()
def render_speed(t: Trainer, frames: int, batch: int) -> dict:
    """Frames/s of deformation + decoders + rasterization for dataset cameras, no I/O; on the
    fast path the networks replay CUDA graphs, as render.py runs them."""
    dev, m = t.device, t.model
    nets = RenderNetworks(m, graphs=True) if t.execution.graphs else None
    cams = (t.scene.test_cameras or t.scene.train_cameras)
    if batch > 1:  # whole batches only: a smaller last batch would be captured anew
        frames = max(batch, frames // batch * batch)
    cams = [cams[i % len(cams)] for i in range(frames)]

    def one(c):
        if nets is not None:
            g = nets.frame(c.exp.to(dev), colour_viewpoint(m, c, dev))
        else:
            g = m.derive(c.exp.to(dev), colour_viewpoint(m, c, dev))
        return render_view(m, g, c, t.background, t.backend).image

    for c in cams[:5]:
        one(c)
    sync(dev)
    lat = []
    for c in cams:
        t0 = time.perf_counter()
        one(c)
        sync(dev)
        lat.append(time.perf_counter() - t0)
    res = {"latency_ms": 1000 * statistics.median(lat), "frames": len(cams)}
    if batch > 1:
        render_batch(m, cams[:batch], t.background, t.backend, nets)  # warm-up
        sync(dev)
        t0 = time.perf_counter()
        done = 0
        while done < frames:
            render_batch(m, cams[done:done + batch], t.background, t.backend, nets)
            done += batch
        sync(dev)
        res["throughput_fps"] = done / (time.perf_counter() - t0)
        res["batch"] = batch
    else:
        res["throughput_fps"] = 1000.0 / res["latency_ms"]
        res["batch"] = 1
    return res


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--data", required=True, help="dataset folder (transforms.json layout)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, help="train for this long (wall clock)")
    g.add_argument("--iterations", type=int, help="train this many iterations")
    p.add_argument("--test_frames", type=int, default=50, help="held-out frames")
    p.add_argument("--eval_frames", type=int, default=50, help="test frames evaluated")
    p.add_argument("--render_frames", type=int, default=200, help="frames for render speed")
    p.add_argument("--render_batch", type=int, default=8, help="frames per batched render")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N")
    p.add_argument("--backend", default="auto", help="rasterizer: auto, gsplat or torch")
    p.add_argument("--reference", action="store_true",
                   help="the reference path: --precision fp32 --fast_path off")
    p.add_argument("--precision", default=None, choices=("fp32", "tf32", "mixed"),
                   help="as train.py (default: train.py's default)")
    p.add_argument("--fast_path", default=None, choices=("auto", "off"),
                   help="as train.py (default: train.py's default)")
    p.add_argument("--grow_to", type=int, default=100_000,
                   help="after training, grow the model to this many Gaussians and time "
                        "training, rendering and the stages there (0: skip)")
    p.add_argument("--grow_iterations", type=int, default=300,
                   help="iterations timed at the grown count")
    p.add_argument("--host_iterations", type=int, default=50,
                   help="iterations per host-time split (run twice: as run and isolated)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the run")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    p.add_argument("--tag", default="", help="label added to the results file name")
    args = p.parse_args(argv)
    if args.minutes is None and args.iterations is None:
        args.iterations = 30_000

    with tempfile.TemporaryDirectory() as tmp:
        data = ModelParams(source_path=args.data, model_path=str(Path(tmp) / "run"), eval=True,
                           test_frames=args.test_frames, eval_frames=args.eval_frames)
        opt = OptimizationParams(iterations=args.iterations or 10**9)
        pipe = PipelineParams(backend=args.backend, device=args.device)
        if args.reference:
            pipe.precision, pipe.fast_path = "fp32", "off"
        pipe.precision = args.precision or pipe.precision
        pipe.fast_path = args.fast_path or pipe.fast_path
        t = Trainer(data, opt, pipe, test_iterations=[], save_iterations=[], quiet=True,
                    seed=args.seed, log=lambda *a: None)
        dev = t.device
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        with torch.no_grad():  # compile the rasterizer's kernels before the clock starts
            t.render_camera(t.scene.train_cameras[0], 0)
        sync(dev)
        tr = train_phase(t, args.iterations, args.minutes)
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
        last = tr["iterations"]
        n_trained = t.model.num_gaussians
        metrics = t.evaluate(last) if t.scene.test_cameras else {}
        # after the evaluation: these iterations train on
        host = [host_phases(t, last + 1, args.host_iterations)]
        grown = grow_phase(t, args.grow_to, args.grow_iterations, args.seed) if (
            args.grow_to) else None
        nxt = last + 1 + 2 * args.host_iterations
        if grown:
            nxt = grown["next_iteration"]
            host.append(host_phases(t, nxt, args.host_iterations))
            nxt += 2 * args.host_iterations
        outside = outside_gpu(t, nxt)
        stages = stage_split(t, last)
        flops, bw = measure_ceilings(dev)
        floors(stages, flops, bw)
        rs = render_speed(t, args.render_frames, args.render_batch)

    rate = steady_rate(tr["windows"])
    n_end = n_trained
    # one iteration: the stages as trained (graphed networks and loss), not their eager parts
    total_stage = sum(v["s"] for k, v in stages.items() if k in (
        "per-frame networks as trained (fwd+bwd)", "rasterization (fwd+bwd)",
        "loss as trained (fwd+bwd)", "optimizer step", "data (frame to device)"))
    result = {
        "date": datetime.date.today().isoformat(), "device": device_name(dev),
        "commit": commit(), "data": str(args.data), "torch": torch.__version__,
        "backend": t.backend,
        "path": f"precision {pipe.precision}, fast_path {pipe.fast_path}"
                + (" (reference)" if (pipe.precision, pipe.fast_path) == ("fp32", "off")
                   else ""),
        "seed": args.seed, "perceptual_loss": t.vgg_note,
        "resolution": f"{t.scene.info.intrinsics.width}x{t.scene.info.intrinsics.height}",
        "train_frames": len(t.scene.train_cameras), "iterations": last,
        "train_its_steady": rate, "gaussians_end": n_end, "windows": tr["windows"],
        "peak_gpu_mem_gib": peak, "test": metrics, "grown": grown,
        "render_gaussians": t.model.num_gaussians, "render": rs,
        "stages_ms": {k: {kk: (vv * 1000 if kk in ("s", "floor_s") else vv)
                          for kk, vv in v.items()} for k, v in stages.items()},
        "stage_sum_ms": 1000 * total_stage, "outside_gpu": outside, "host_phases": host,
        "ceilings": {"matmul_tflops": flops / 1e12, "copy_gbps": bw / 1e9},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{result['date']}_{dev.type}_{result['commit']}{('_' + args.tag) if args.tag else ''}"
    atomic_write_json(out / f"{name}.json", result)
    gr = grown or {}
    peak_shown = gr.get("peak_gpu_mem_gib", peak)
    row = (f"| {result['date']} | {result['device']} | {result['commit']} | {result['path']} | "
           f"{result['resolution']} | {last} | {rate:.1f} it/s at {n_end} | "
           + (f"{gr['its']:.1f} it/s at {gr['gaussians']} | " if gr else "- | ")
           + f"{rs['latency_ms']:.2f} ms | {rs['throughput_fps']:.0f} fps (batch {rs['batch']}) "
           f"at {result['render_gaussians']} | "
           f"{'-' if peak_shown is None else f'{peak_shown:.2f} GiB'} | "
           + (" / ".join(f"{metrics[k]:.3f}" for k in ("psnr", "ssim", "l1")) if metrics
              else "-") + " |")
    print(json.dumps({k: v for k, v in result.items() if k != "windows"}, indent=2))
    print("\n| date | device | commit | path | res | iters | train (steady) | train (grown) "
          "| render latency | render throughput | peak mem | PSNR / SSIM / L1 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print(row)
    for k, v in stages.items():
        print(f"  {k:34s} {1000 * v['s']:8.3f} ms   floor {1000 * v['floor_s']:7.3f} ms")
    if outside:
        print(f"  under the profiler: {outside['wall_ms_per_it']:.2f} ms per iteration, GPU busy "
              f"{outside['gpu_busy_ms_per_it']:.2f} ms; CUDA sync calls per iteration: "
              + (", ".join(f"{k} x{v:g}" for k, v in outside["sync_calls_per_it"].items())
                 or "none")
              + f" ({outside['sync_wait_ms_per_it']:.2f} ms waiting); from Python: "
              + (", ".join(f"{k} x{v:g}" for k, v in outside["python_syncs_per_it"].items())
                 or "none"))
    for h in host:
        print_host_phases(h)
    if not math.isfinite(rate):
        print("warning: fewer than one timing window; train longer for a rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
