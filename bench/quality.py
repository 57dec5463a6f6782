"""Do the training paths reach the same quality? Test PSNR over several seeds per path, with
the mean difference from the fp32 eager reference and its 95% confidence interval.

    python bench/quality.py --data DIR [--seeds 0,1,2,3] [--paths reference,default,mixed] \
        [--iterations 3000] [--out bench/results] [-- extra train.py flags]

Paths: ``reference`` (fp32, ``--fast_path off``), ``default`` (the default: fp32, fast path),
``mixed``, ``tf32`` (``--precision NAME`` on the fast path). Every run is a full
``train.py --eval`` run of ``--iterations`` iterations, evaluated once at the end on the
held-out frames. One run's test PSNR moves by up to about 2 dB from run to run on the GPU
(atomic sums in the backward passes), so telling 0.2 dB apart takes many seeds: the interval
printed says how far the evidence goes. The differences are paired by seed (same initial
points, camera order and densification draws).

Writes ``<date>_<device>_<commit>_quality.json`` to ``--out`` and prints one markdown line per
path. Runs on a CUDA GPU; also runs, slowly, on the CPU (there every path is the reference
loop with fp32 arithmetic, so it only exercises the script).
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import commit, device_name, split_extra  # noqa: E402
from training.launch import train  # noqa: E402
from utils.cli import make_parser  # noqa: E402
from utils.io_utils import atomic_write_json  # noqa: E402

PATHS = {
    "reference": ["--precision", "fp32", "--fast_path", "off"],
    "default": ["--precision", "fp32", "--fast_path", "auto"],
    "mixed": ["--precision", "mixed", "--fast_path", "auto"],
    "tf32": ["--precision", "tf32", "--fast_path", "auto"],
}


def t_quantile_975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def summarize(psnr: dict[str, list[float]], reference: str = "reference") -> dict:
    """Per path: mean, sample standard deviation, and (paired by seed) the mean difference from
    ``reference`` with its 95% confidence interval (None where fewer than two seeds)."""
    out = {}
    ref = psnr.get(reference)
    for name, values in psnr.items():
        row = {"psnr": values, "mean": statistics.fmean(values),
               "std": statistics.stdev(values) if len(values) > 1 else None}
        if ref is not None and name != reference:
            diffs = [a - b for a, b in zip(values, ref)]
            row["diff_mean"] = statistics.fmean(diffs)
            if len(diffs) > 1:
                half = (t_quantile_975(len(diffs) - 1) * statistics.stdev(diffs)
                        / math.sqrt(len(diffs)))
                row["diff_ci95"] = [row["diff_mean"] - half, row["diff_mean"] + half]
            else:
                row["diff_ci95"] = None
        out[name] = row
    return out


def _write(args, extra: list[str], device, seeds: list[int], psnr: dict[str, list[float]]
           ) -> dict:
    """Write the JSON for the seeds every path has finished; return their summary."""
    done = min(len(v) for v in psnr.values())
    summary = summarize({k: v[:done] for k, v in psnr.items()})
    result = {
        "date": datetime.date.today().isoformat(), "device": device_name(device),
        "commit": commit(), "data": str(args.data), "iterations": args.iterations,
        "seeds": seeds[:done], "extra_flags": extra, "paths": summary,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{result['date']}_{device.type}_{result['commit']}_quality.json",
                      result)
    return summary


def main(argv: list[str] | None = None) -> int:
    argv, extra = split_extra(argv)
    p = make_parser(__doc__)
    p.add_argument("--data", required=True, help="dataset folder (transforms.json layout)")
    p.add_argument("--seeds", default="0,1,2,3", help="comma list of seeds")
    p.add_argument("--paths", default="reference,default,mixed",
                   help="comma list of " + ", ".join(PATHS))
    p.add_argument("--iterations", type=int, default=3000, help="iterations of every run")
    p.add_argument("--test_frames", type=int, default=50,
                   help="the last N frames are held out and scored")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda or cuda:N")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder")
    args = p.parse_args(argv)
    paths = args.paths.split(",")
    unknown = [x for x in paths if x not in PATHS]
    if unknown:
        p.error(f"unknown path(s) {unknown}; choose from {', '.join(PATHS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    psnr: dict[str, list[float]] = {name: [] for name in paths}
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            for name in paths:
                run = Path(tmp) / f"{name}_{seed}"
                t = train([
                    "-s", args.data, "-m", str(run), "--eval", "--quiet",
                    "--iterations", str(args.iterations),
                    "--test_iterations", str(args.iterations),
                    "--save_iterations", str(args.iterations),
                    "--test_frames", str(args.test_frames), "--device", args.device,
                    "--seed", str(seed), "--tensorboard", "false", *PATHS[name], *extra])
                device = t.device
                last = json.loads((run / "eval_log.json").read_text())[-1]
                psnr[name].append(float(last["psnr"]))
                print(f"seed {seed} {name}: test PSNR {psnr[name][-1]:.3f} dB", flush=True)
            # after every seed, the seeds complete so far: a run stopped early keeps them
            summary = _write(args, extra, device, seeds, psnr)
    print("\n| path | test PSNR, mean ± std (dB) | minus reference, mean [95% CI] |")
    print("|---|---|---|")
    for name, row in summary.items():
        std = f" ± {row['std']:.2f}" if row["std"] is not None else ""
        if "diff_mean" in row:
            ci = row["diff_ci95"]
            diff = f"{row['diff_mean']:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "")
        else:
            diff = "-"
        print(f"| {name} | {row['mean']:.2f}{std} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
