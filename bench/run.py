"""Benchmark: training speed, rendering speed, memory and quality on any dataset.

    python bench/run.py --data DIR [--minutes M | --iterations N]

Trains with the default configuration (the release's schedule) and reports, as JSON under
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

import argparse
import datetime
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from arguments import ModelParams, OptimizationParams, PipelineParams  # noqa: E402
from gaussian_renderer import render  # noqa: E402
from scene.trainer import Trainer  # noqa: E402
from utils.io_utils import atomic_write_json  # noqa: E402
from utils.loss_utils import l1_loss, ssim  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    """Wall-clock timing of a region, synchronising the device before and after."""

    def __init__(self, device: torch.device):
        self.device = device

    def __call__(self, fn, repeat: int = 20, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        _sync(self.device)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            _sync(self.device)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def commit() -> str:
    """The checkout's short commit (+dirty), or $GH_COMMIT where the tree is no git checkout."""
    if os.environ.get("GH_COMMIT"):
        return os.environ["GH_COMMIT"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


# ---------------------------------------------------------------------------------- training


def train_phase(t: Trainer, iterations: int | None, minutes: float | None, window: int = 100
                ) -> dict:
    """Train, timing windows of ``window`` iterations. Returns the window rates."""
    dev = t.device
    deadline = time.perf_counter() + 60 * minutes if minutes else None
    last = iterations or t.opt.iterations
    windows = []
    _sync(dev)
    t0 = time.perf_counter()
    it = 0
    for it in range(1, last + 1):
        t.step(it)
        if it % window == 0:
            _sync(dev)
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
    from scene.densification import remap_gaussians

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
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for it in range(start + 20, start + 20 + iterations):
        t.step(it)
    _sync(dev)
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


# ---------------------------------------------------------------------------------- stages


def stage_split(t: Trainer, iteration: int, repeat: int = 20) -> dict:
    """Time each stage of one training iteration in isolation, with its FLOP/byte floor."""
    dev, m = t.device, t.model
    timer = Timer(dev)
    cam = t.scene.train_cameras[0]
    exp, campos = cam.exp.to(dev), cam.campos(dev)
    gt = t.scene.gt(cam, dev)
    n = m.num_gaussians
    out: dict[str, dict] = {}

    def deform_fb():
        with m._autocast():
            d = m.deform(m.xyz.detach(), exp)
        sum(x.float().sum() for x in d).backward()

    out["deformation MLP (fwd+bwd)"] = {"s": timer(deform_fb, repeat)}
    w = sum(p.numel() for p in m.deform.linear.parameters() if p.dim() == 2) + sum(
        h.weight.numel() for h in (m.deform.gaussian_warp, m.deform.gaussian_rotation,
                                    m.deform.gaussian_scaling))
    out["deformation MLP (fwd+bwd)"]["flop"] = 3 * 2 * n * w
    out["deformation MLP (fwd+bwd)"]["bytes"] = 2 * 4 * n * (m.deform.in_dim + 10)

    def decoders_fb():
        with torch.no_grad():
            means = m.xyz.detach()
        coords = m.derivation_coords(means)
        with m._autocast():
            o, _, sh = m.triplane(coords, torch.nn.functional.normalize(means - campos, dim=-1))
        (o.float().sum() + sh.float().sum()).backward()

    out["tri-plane + decoders (fwd+bwd)"] = {"s": timer(decoders_fb, repeat)}
    dec = sum(p.numel() for p in m.triplane.parameters() if p.dim() == 2)
    out["tri-plane + decoders (fwd+bwd)"]["flop"] = 3 * 2 * n * dec
    out["tri-plane + decoders (fwd+bwd)"]["bytes"] = 4 * n * (3 + 16 + 4 * 12 * 8 + 49)

    def networks_fb():
        m.zero_grad(set_to_none=True)  # a graphed forward refuses to accumulate gradients
        g = t.frame_networks(exp, campos, deform=True)
        sum(getattr(g, k).sum() for k in ("means", "quats", "scales", "opacities", "sh")
            ).backward()

    out["per-frame networks as trained (fwd+bwd)"] = {"s": timer(networks_fb, repeat)}

    with torch.no_grad():
        g = m.derive(exp, campos, deform=True)
    leaves = {k: v.detach().requires_grad_(v.dtype.is_floating_point)
              for k, v in vars(g).items() if torch.is_tensor(v)}
    from scene.gaussian_model import FrameGaussians

    g2 = FrameGaussians(**{k: leaves.get(k) for k in ("means", "opacities", "sh", "quats",
                                                     "scales", "covars")})

    def raster_f():
        with torch.no_grad():
            render(g2, cam, t.background, m.cfg, m.active_sh_degree, t.backend)

    def raster_fb():
        r = render(g2, cam, t.background, m.cfg, m.active_sh_degree, t.backend)
        r.image.sum().backward()

    out["rasterization (fwd)"] = {"s": timer(raster_f, repeat)}
    out["rasterization (fwd+bwd)"] = {"s": timer(raster_fb, repeat)}
    hw = cam.width * cam.height
    out["rasterization (fwd+bwd)"]["bytes"] = 4 * (n * 59 + hw * 8)

    img = torch.rand_like(gt, requires_grad=True)

    def loss_fb():
        loss = 0.8 * l1_loss(img, gt) + 0.2 * (1 - ssim(img, gt))
        loss.backward()

    out["loss (fwd+bwd)"] = {"s": timer(loss_fb, repeat)}
    out["loss (fwd+bwd)"]["bytes"] = 4 * hw * 3 * 12
    gt_u8 = t.scene.images.images[cam.image_slot]

    def loss_trained_fb():
        t.loss_fn(img, gt_u8)[0].backward()

    out["loss as trained (fwd+bwd)"] = {"s": timer(loss_trained_fb, repeat)}

    def opt_step():
        for p in m.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for opt in t.optimizers:
            opt.step()

    n_params = sum(p.numel() for p in m.parameters())
    saved = {k: v.detach().clone() for k, v in m.state_dict().items()}
    out["optimizer step"] = {"s": timer(opt_step, repeat), "bytes": 4 * n_params * 7}
    m.load_state_dict(saved)

    out["data (frame to device)"] = {"s": timer(lambda: t.scene.gt(cam, dev), repeat),
                                     "bytes": hw * 3 * 5}
    return out


def floors(stages: dict, peak_flops: float, bandwidth: float) -> None:
    for v in stages.values():
        f = v.get("flop", 0) / peak_flops if peak_flops else 0.0
        b = v.get("bytes", 0) / bandwidth if bandwidth else 0.0
        v["floor_s"] = max(f, b)


def measure_ceilings(device: torch.device) -> tuple[float, float]:
    """Measured matrix-product rate (TF32) and copy bandwidth of the device."""
    timer = Timer(device)
    if device.type == "cuda":
        a = torch.randn(8192, 8192, device=device)
        b = torch.randn(8192, 8192, device=device)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        s = timer(lambda: a @ b, 10)
        torch.backends.cuda.matmul.allow_tf32 = prev
        flops = 2 * 8192**3 / s
        x = torch.empty(2**28, device=device)
        s = timer(lambda: x.clone(), 10)
        bw = 2 * x.numel() * 4 / s
        return flops, bw
    a = torch.randn(1024, 1024)
    s = timer(lambda: a @ a, 5)
    x = torch.empty(2**25)
    return 2 * 1024**3 / s, 2 * x.numel() * 4 / timer(lambda: x.clone(), 5)


# ---------------------------------------------------------------------------------- rendering


@torch.no_grad()
def render_speed(t: Trainer, frames: int, batch: int) -> dict:
    """Frames/s of deformation + decoders + rasterization for dataset cameras, no I/O; on the
    fast path the networks replay CUDA graphs, as render.py runs them."""
    from gaussian_renderer import render_batch
    from scene.cuda_graphs import RenderNetworks

    dev, m = t.device, t.model
    nets = RenderNetworks(m, graphs=t.graphs) if t.graphs else None
    cams = (t.scene.test_cameras or t.scene.train_cameras)
    if batch > 1:  # whole batches only: a smaller last batch would be captured anew
        frames = max(batch, frames // batch * batch)
    cams = [cams[i % len(cams)] for i in range(frames)]

    def one(c):
        if nets is not None:
            g = nets.frame(c.exp.to(dev), c.campos(dev))
        else:
            g = m.derive(c.exp.to(dev), c.campos(dev), deform=True)
        return render(g, c, t.background, m.cfg, m.active_sh_degree, t.backend).image

    for c in cams[:5]:
        one(c)
    _sync(dev)
    lat = []
    for c in cams:
        t0 = time.perf_counter()
        one(c)
        _sync(dev)
        lat.append(time.perf_counter() - t0)
    res = {"latency_ms": 1000 * statistics.median(lat), "frames": len(cams)}
    if batch > 1:
        render_batch(m, cams[:batch], t.background, t.backend, nets)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        done = 0
        while done < frames:
            render_batch(m, cams[done:done + batch], t.background, t.backend, nets)
            done += batch
        _sync(dev)
        res["throughput_fps"] = done / (time.perf_counter() - t0)
        res["batch"] = batch
    else:
        res["throughput_fps"] = 1000.0 / res["latency_ms"]
        res["batch"] = 1
    return res


def _device_busy_s(prof) -> float:
    """Seconds in which at least one kernel, copy or fill ran: the union of the device
    activities' intervals (a plain sum would count concurrent work twice). The device-side
    spans of ``record_function`` ranges (the optimizers open some) are left out: they run
    from their first to their last kernel, idle gaps included."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                   if e.device_type == torch.autograd.DeviceType.CUDA
                   and not getattr(e, "is_user_annotation", False))
    busy, end = 0.0, float("-inf")
    for a, b in spans:
        if b <= end:
            continue
        busy += b - max(a, end)
        end = b
    return busy / 1e6


def host_syncs(t: Trainer, start: int, n: int = 10) -> dict:
    """Where Python code of the training loop makes the host wait for the GPU: torch's sync
    debug mode over ``n`` iterations, as {source line: synchronizations per iteration}. A
    synchronisation inside a C++ extension (gsplat reads its tile-list size there) warns on
    stderr, not here: :func:`outside_gpu` counts the CUDA synchronisation calls themselves."""
    import warnings
    from collections import Counter

    counts: Counter = Counter()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for it in range(start, start + n):
                t.step(it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    _sync(t.device)
    for w in caught:
        if "synchroniz" in str(w.message):
            counts[f"{Path(w.filename).parent.name}/{Path(w.filename).name}:{w.lineno}"] += 1
    return {k: v / n for k, v in counts.most_common()}


SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy",
              "cudaEventSynchronize")


def outside_gpu(t: Trainer, start: int, n: int = 20) -> dict:
    """Wall time vs GPU busy time of ``n`` training iterations (torch profiler)."""
    if t.device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    _sync(t.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for it in range(start, start + n):
            t.step(it)
        _sync(t.device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    busy = _device_busy_s(prof)
    # where the host time goes: the operators with the most self CPU time, and kernel counts
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:25]
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel",
                                                       "cudaLaunchKernelExC"))
    return {"wall_ms_per_it": 1000 * wall / n, "gpu_busy_ms_per_it": 1000 * busy / n,
            "outside_gpu_ms_per_it": 1000 * max(0.0, wall - busy) / n,
            "kernel_launches_per_it": launches / n,
            "sync_calls_per_it": {e.key: e.count / n for e in events if e.key in SYNC_CALLS},
            "sync_wait_ms_per_it": sum(e.self_cpu_time_total for e in events
                                       if e.key in SYNC_CALLS) / 1000 / n,
            "python_syncs_per_it": host_syncs(t, start + n),
            "top_host_ops_ms_per_it": {e.key: round(e.self_cpu_time_total / 1000 / n, 3)
                                       for e in top}}


def host_phases(t: Trainer, start: int, n: int = 50) -> dict:
    """Host wall time of ``n`` training iterations by part of :meth:`Trainer.step`, in ms per
    iteration, measured twice:

    - ``as_run``: nothing added; a part that waits for the GPU includes the wait (gsplat reads
      its tile-list size in the rasterization forward, so that part absorbs the GPU time
      queued before it);
    - ``isolated``: the device is synchronised before each part, so a part's time is its own
      host cost (launches, Python) plus the GPU time of the syncs inside it.

    ``other`` is the wall time not inside any timed part (the step's own Python, the camera,
    the non-finite check, copying the loss terms)."""
    from collections import defaultdict

    dev = t.device
    opt_names = [f"optimizer step ({opt.param_groups[0]['name']}...)" for opt in t.optimizers]
    targets = [(t, "_set_learning_rates", "learning rates"),
               (t, "frame_networks", "networks forward"),
               (t, "_render", "rasterization forward"),
               (t, "loss_fn", "loss forward"),
               (t.densifier, "observe", "densification statistics")]
    targets += [(opt, "step", name) for opt, name in zip(t.optimizers, opt_names)]
    targets += [(opt, "zero_grad", "zero_grad") for opt in t.optimizers]

    def measure(isolated: bool) -> dict:
        acc: dict[str, float] = defaultdict(float)

        def timed(name, fn):
            def wrapper(*args, **kwargs):
                if isolated:
                    _sync(dev)
                t0 = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    acc[name] += time.perf_counter() - t0
            return wrapper

        saved = []
        backward = torch.Tensor.backward
        try:
            for obj, attr, name in targets:
                saved.append((obj, attr, attr in vars(obj), getattr(obj, attr)))
                setattr(obj, attr, timed(name, getattr(obj, attr)))
            torch.Tensor.backward = timed("backward", backward)
            _sync(dev)
            t0 = time.perf_counter()
            for it in range(start, start + n):
                t.step(it)
            _sync(dev)
            wall = time.perf_counter() - t0
        finally:
            torch.Tensor.backward = backward
            for obj, attr, own, orig in saved:
                if own:
                    setattr(obj, attr, orig)
                else:
                    delattr(obj, attr)
        parts = {k: 1000 * v / n for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}
        parts["other"] = max(0.0, 1000 * wall / n - sum(parts.values()))
        return {"wall_ms_per_it": 1000 * wall / n, "parts_ms_per_it": parts}

    first = measure(isolated=False)
    return {"gaussians": t.model.num_gaussians, "iterations": n, "as_run": first,
            "isolated": measure(isolated=True)}


def print_host_phases(h: dict) -> None:
    print(f"  host time per iteration at {h['gaussians']} Gaussians (ms; as run | isolated):")
    a, b = h["as_run"], h["isolated"]
    for k in a["parts_ms_per_it"]:
        print(f"    {k:40s} {a['parts_ms_per_it'][k]:7.3f} | {b['parts_ms_per_it'].get(k, 0):7.3f}")
    print(f"    {'wall':40s} {a['wall_ms_per_it']:7.3f} | {b['wall_ms_per_it']:7.3f}")


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data", required=True, help="dataset folder (transforms.json layout)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--minutes", type=float, help="train for this long (wall clock)")
    g.add_argument("--iterations", type=int, help="train this many iterations")
    p.add_argument("--test_frames", type=int, default=50, help="held-out frames")
    p.add_argument("--eval_frames", type=int, default=50, help="test frames evaluated")
    p.add_argument("--render_frames", type=int, default=200, help="frames for render speed")
    p.add_argument("--render_batch", type=int, default=8, help="frames per batched render")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto")
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
    p.add_argument("--seed", type=int, default=0)
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
        _sync(dev)
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
