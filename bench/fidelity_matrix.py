"""Compare training variants on several datasets and seeds: bench/fidelity.py runs side by side
on one GPU, then one table of their metrics (mean and spread over seeds).

    python bench/fidelity_matrix.py --data syn=data/syn real=data/real \
        --variants "default=" "paper=--appearance deformed --body false" \
        --seeds 0 1 --minutes 5 --parallel 4 [--test_frames syn=100 real=115] \
        [--yaw_split real=auto] [--common "--iterations 10000"]

Each run is ``bench/fidelity.py --data D --seed S --tag <dataset>_<variant>_s<S>`` with the
variant's options after ``--``; its JSON lands in ``--out``. Runs that share the GPU slow each
other: the table gives each run's iterations and training seconds, so a comparison at equal
iterations (``--common "--iterations N"``, ``--minutes 0``) is the fair one.
"""

from __future__ import annotations

import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.cli import make_parser  # noqa: E402

COLUMNS = [("test", None), ("train", None), ("turned", None), ("novel", None),
           ("novel", "±15"), ("novel", "±30"), ("novel", "head"), ("novel", "neck"),
           ("novel", "torso"), ("test", "torso"), ("test", "mouth"), ("test", "eyes")]


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"--{what}: expected NAME=VALUE, got {item!r}")
        out[name] = value
    return out


def _value(metrics: dict, set_name: str, sub: str | None) -> float | None:
    m = metrics.get(set_name)
    if m is None:
        return None
    if sub is None:
        return m["psnr"]
    if sub.startswith("±"):  # the mean over both signs of a yaw
        vals = [m.get("yaw", {}).get(f"{sign}{sub[1:]}", {}).get("psnr") for sign in "+-"]
        vals = [v for v in vals if v is not None]
        return statistics.fmean(vals) if vals else None
    group = m.get("yaw", {}) if sub.startswith(("+", "-")) else m.get("regions", {})
    return group.get(sub, {}).get("psnr")


def table(results: list[dict]) -> str:
    """Markdown: one row per dataset and variant, PSNR mean (and spread over seeds)."""
    rows = {}
    for r in results:
        rows.setdefault((r["dataset"], r["variant"]), []).append(r)
    head = ["dataset", "variant", "seeds", "iterations", "train s"] + [
        f"{s}{'/' + sub if sub else ''}" for s, sub in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (data, variant), runs in sorted(rows.items()):
        cells = [data, variant, str(len(runs)),
                 "/".join(str(r["iterations"]) for r in runs),
                 "/".join(f"{r['train_seconds']:.0f}" for r in runs)]
        for set_name, sub in COLUMNS:
            vals = [v for r in runs if (v := _value(r["metrics"], set_name, sub)) is not None]
            if not vals:
                cells.append("-")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.2f}")
            else:
                cells.append(f"{statistics.fmean(vals):.2f} ({min(vals):.2f}-{max(vals):.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = make_parser(__doc__)
    p.add_argument("--data", nargs="+", required=True, help="NAME=DIR ...")
    p.add_argument("--variants", nargs="+", default=["default="],
                   help="NAME=OPTIONS ... (train.py options of each variant)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of every variant")
    p.add_argument("--minutes", type=float, default=5.0, help="as bench/fidelity.py")
    p.add_argument("--test_frames", nargs="*", default=[], help="NAME=N per dataset")
    p.add_argument("--yaw_split", nargs="*", default=[],
                   help="NAME=DEG|auto per dataset: bench/fidelity.py's --yaw_split")
    p.add_argument("--common", default="", help="train.py options of every run")
    p.add_argument("--fidelity_args", default="",
                   help="bench/fidelity.py options of every run (e.g. \"--sheet_cell 160\")")
    p.add_argument("--parallel", type=int, default=4, help="runs at a time")
    p.add_argument("--out", default=str(REPO / "bench" / "results"),
                   help="results folder (the runs' JSON and the table)")
    args = p.parse_args(argv)
    data, variants = _pairs(args.data, "data"), _pairs(args.variants, "variants")
    test_frames = _pairs(args.test_frames, "test_frames")
    yaw_split = _pairs(args.yaw_split, "yaw_split")
    out = Path(args.out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    jobs = []
    for dname, droot in data.items():
        for vname, vopts in variants.items():
            for seed in args.seeds:
                tag = f"{dname}_{vname}_s{seed}"
                cmd = [sys.executable, str(REPO / "bench" / "fidelity.py"), "--data", droot,
                       "--seed", str(seed), "--minutes", str(args.minutes), "--tag", tag,
                       "--out", str(out)]
                if dname in test_frames:
                    cmd += ["--test_frames", test_frames[dname]]
                if dname in yaw_split:
                    cmd += ["--yaw_split", yaw_split[dname]]
                cmd += shlex.split(args.fidelity_args)
                cmd += ["--", *shlex.split(args.common), *shlex.split(vopts)]
                jobs.append((dname, vname, seed, tag, cmd))
    running: list[tuple] = []
    results, failed = [], []
    t0 = time.time()
    while jobs or running:
        while jobs and len(running) < args.parallel:
            dname, vname, seed, tag, cmd = jobs.pop(0)
            log = open(logs / f"{tag}.log", "w")  # noqa: SIM115 (closed when the run ends)
            running.append((dname, vname, seed, tag, subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO), log))
        time.sleep(2)
        for job in list(running):
            dname, vname, seed, tag, proc, log = job
            if proc.poll() is None:
                continue
            running.remove(job)
            log.close()
            found = sorted(out.glob(f"*_fidelity_{tag}.json"))
            if proc.returncode != 0 or not found:
                failed.append(tag)
                print(f"[{time.time() - t0:.0f} s] {tag}: failed (log {logs / tag}.log)")
                continue
            r = json.loads(found[-1].read_text())
            results.append({"dataset": dname, "variant": vname, "seed": seed, **r})
            print(f"[{time.time() - t0:.0f} s] {tag}: test {r['metrics']['test']['psnr']:.2f} "
                  f"dB, {r['iterations']} iterations", flush=True)
    print(table(results))
    if failed:
        print("failed: " + ", ".join(failed))
    (out / "matrix.md").write_text(table(results) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
