"""End to end on CPU: train on a tiny synthetic head, resume, render (test set, novel view,
cross-reenactment), and compute metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train
from scene.dataset_images import load_images
from scene.dataset_readers import read_dataset
from tools.make_synthetic import make_synthetic

REPO = Path(__file__).resolve().parents[1]
ITERS = 300
# the phases fixed (the paper's lengths), so that a run cut at 150 iterations and resumed to
# 300 follows the same schedule as one of 300 (phases left at -1 scale with --iterations);
# no pruning at the end (the run cut at 150 would have been pruned there)
COMMON = ["--test_frames", "8", "--eval_frames", "8", "--warm_up", "150", "--init_points",
          "2000", "--body_points", "500", "--densify_from_iter", "50",
          "--densification_interval", "50", "--densify_until_iter", "15000",
          "--position_lr_max_steps", "30000", "--deform_lr_max_steps", "80000",
          "--triplane_lr_max_step", "80000", "--quater_lr_max_step", "80000",
          "--opacity_reset_interval", "3000", "--unseen_prune", "0",
          "--seed", "3", "--quiet", "--backend", "torch", "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("data") / "syn", frames=40, res=64, seed=1)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    trainer = train.train(["-s", str(dataset), "-m", str(out), "--eval", "--iterations",
                           str(ITERS), "--test_iterations", "150", str(ITERS),
                           "--save_iterations", "150", str(ITERS), *COMMON])
    return out, trainer


def test_training_lowers_the_loss_and_beats_a_constant_image(run, dataset):
    out, trainer = run
    losses = [v for _, v in trainer.loss_log]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3])
    log = json.loads((out / "eval_log.json").read_text())
    assert [e["iteration"] for e in log] == [150, ITERS]
    psnr = log[-1]["psnr"]
    # the best constant image for the held-out frames: their mean colour
    info = read_dataset(dataset, test_frames=8, eval_frames=8)
    gt = load_images(info, info.test_ids).astype(np.float64) / 255.0
    const = gt.reshape(-1, 3).mean(0)
    baseline = -10 * np.log10(np.mean((gt - const) ** 2))
    print(f"test PSNR after {ITERS} iterations: {psnr:.2f} dB; constant colour: "
          f"{baseline:.2f} dB")
    assert psnr >= baseline + 3.0


def test_run_folder_has_the_release_layout(run):
    out, trainer = run
    for rel in ["cfg_args", "cameras.json", "input.ply", "model_meta.json", "checkpoint.pt",
                f"point_cloud/iteration_{ITERS}/point_cloud.ply",
                f"deform/iteration_{ITERS}/deform.pth", f"trip/iteration_{ITERS}/trip.pth",
                f"tilted/iteration_{ITERS}/tilted.pth", "point_cloud/iteration_150"]:
        assert (out / rel).exists(), rel
    from scene.run_folder import read_cfg_args

    cfg = read_cfg_args(out)
    assert cfg["eval"] is True and cfg["test_frames"] == 8 and cfg["white_background"] is True
    assert Path(cfg["source_path"]).is_absolute() and cfg["images"] == "images"
    assert not list(out.rglob("*.tmp*"))  # no temporary files left behind
    tau = torch.load(out / f"tilted/iteration_{ITERS}/tilted.pth", weights_only=True)["tau"]
    assert tau.shape == (trainer.model.num_gaussians, 4, 4)
    torch.testing.assert_close(tau.norm(dim=-1), torch.ones(tau.shape[:2]))


def test_resume_reaches_the_same_result(run, dataset, tmp_path):
    out, trainer = run
    part = tmp_path / "part"
    first = train.train(["-s", str(dataset), "-m", str(part), "--eval", "--iterations", "150",
                         "--test_iterations", "150", "--save_iterations", "150", *COMMON])
    assert first.model.num_gaussians > 0
    resumed = train.train(["-m", str(part), "--resume", "--iterations", str(ITERS),
                           "--test_iterations", "150", str(ITERS), "--save_iterations",
                           str(ITERS), "--quiet"])
    assert resumed.start_iteration == 151
    assert resumed.model.num_gaussians == trainer.model.num_gaussians
    full = json.loads((out / "eval_log.json").read_text())[-1]
    again = json.loads((part / "eval_log.json").read_text())[-1]
    assert again["iteration"] == ITERS
    assert abs(again["psnr"] - full["psnr"]) < 0.1


def test_checkpoint_records_its_version_and_newer_ones_are_refused(run, tmp_path):
    """checkpoint.pt carries its version and the model's derivation_coords ("rotate" for a new
    run); a checkpoint from a newer version is refused with a clear message, not resumed with
    settings this version would drop."""
    from scene.run_folder import CHECKPOINT, FORMAT_VERSION, read_checkpoint
    from utils.errors import CheckpointError

    out, _ = run
    ckpt = read_checkpoint(out)
    assert ckpt["version"] == FORMAT_VERSION == 3
    assert ckpt["model_config"]["derivation_coords"] == "rotate"
    ckpt["version"] = FORMAT_VERSION + 1
    torch.save(ckpt, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match="newer version"):
        read_checkpoint(tmp_path)


def test_existing_run_is_not_overwritten(run, dataset):
    out, _ = run
    r = subprocess.run([sys.executable, "train.py", "-s", str(dataset), "-m", str(out),
                        "--iterations", "5", *COMMON], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--resume" in r.stderr


def _render(args, cwd=REPO):
    r = subprocess.run([sys.executable, "render.py", *args], cwd=cwd, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return r


def test_render_test_set_novel_view_and_metrics(run, tmp_path):
    out, trainer = run
    rendered = tmp_path / "r"
    shutil.copytree(out, rendered)
    _render(["-m", str(rendered), "--skip_train", "--novel_view", "--novel_view_frames", "6",
             "--quiet", "--device", "cpu"])
    d = rendered / "test" / f"ours_{ITERS}"
    assert len(list((d / "renders").glob("*.png"))) == 8
    assert len(list((d / "gt").glob("*.png"))) == 8
    assert len(list((d / "depth").glob("*.png"))) == 8
    for video in [d / "test.mp4", d / "test_gt_render.mp4",
                  rendered / "novel_view" / f"ours_{ITERS}" / "novel_view.mp4"]:
        assert video.is_file() and video.stat().st_size > 1000, video
    assert len(list((rendered / "novel_view" / f"ours_{ITERS}" / "renders").glob("*.png"))) == 6
    r = subprocess.run([sys.executable, "metrics.py", "-m", str(rendered), "--quiet",
                        "--device", "cpu"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads((rendered / "results.json").read_text())[f"test/ours_{ITERS}"]
    per_view = json.loads((rendered / "per_view.json").read_text())[f"test/ours_{ITERS}"]
    assert len(per_view) == 8 and res["frames"] == 8
    train_psnr = json.loads((out / "eval_log.json").read_text())[-1]["psnr"]
    assert abs(res["psnr"] - train_psnr) < 0.3  # the same frames, through 8-bit PNGs
    assert {"psnr", "ssim", "l1"} <= res.keys()


def test_cross_reenactment(run, tmp_path):
    out, _ = run
    other = make_synthetic(tmp_path / "other", frames=5, res=32, seed=7)
    _render(["-m", str(out), "-o", str(tmp_path / "r"), "--skip_train", "--skip_test",
             "--driving", str(other), "--quiet", "--device", "cpu"])
    d = tmp_path / "r" / "driving_other" / f"ours_{ITERS}"
    assert len(list((d / "renders").glob("*.png"))) == 5 and (d / "driving_other.mp4").is_file()
    _render(["-m", str(out), "-o", str(tmp_path / "r2"), "--skip_train", "--skip_test",
             "--driving", str(other / "transforms.json"), "--driving_pose", "--quiet",
             "--device", "cpu", "--no_video", "--max_frames", "3"])
    d = tmp_path / "r2" / "driving_other_pose" / f"ours_{ITERS}"
    assert len(list((d / "renders").glob("*.png"))) == 3  # --max_frames limits them too
    # named expressions cannot drive an avatar of unnamed ones: said before anything is written
    named = tmp_path / "named"
    shutil.copytree(other, named)
    meta = json.loads((named / "transforms.json").read_text())
    meta["exp_names"] = [f"c{k}" for k in range(len(meta["frames"][0]["exp_ori"]))]
    (named / "transforms.json").write_text(json.dumps(meta))
    r = subprocess.run([sys.executable, "render.py", "-m", str(out), "-o", str(tmp_path / "r4"),
                        "--driving", str(named)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "one is named, the other is not" in r.stderr
    assert "Fix:" in r.stderr and not (tmp_path / "r4").exists()
    # a driving expression of another length is a clear error
    bad = make_synthetic(tmp_path / "bad", frames=3, res=32, seed=2, exp_dim=10)
    r = subprocess.run([sys.executable, "render.py", "-m", str(out), "-o", str(tmp_path / "r3"),
                        "--skip_train", "--skip_test", "--driving", str(bad)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "10 values" in r.stderr and "46" in r.stderr


def test_ctrl_c_saves_a_consistent_checkpoint_and_resume_matches(run, dataset, tmp_path,
                                                                 monkeypatch):
    """Ctrl-C lands inside an iteration; the run finishes that iteration, checkpoints it, and
    --resume then reaches exactly what the uninterrupted run reached."""
    out, trainer = run
    from training.trainer import Trainer

    step = Trainer.step

    def step_with_ctrl_c(self, iteration, position=None):
        if iteration == 40:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-iteration
        return step(self, iteration, position)

    part = tmp_path / "interrupted"
    args = ["-s", str(dataset), "-m", str(part), "--eval", "--iterations", str(ITERS),
            "--test_iterations", "150", str(ITERS), "--save_iterations", "150", str(ITERS),
            *COMMON]
    monkeypatch.setattr(Trainer, "step", step_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train.train(args)
    monkeypatch.setattr(Trainer, "step", step)
    ckpt = torch.load(part / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["iteration"] == 40
    resumed = train.train(["-m", str(part), "--resume", "--quiet"])
    assert resumed.start_iteration == 41
    assert resumed.model.num_gaussians == trainer.model.num_gaussians
    torch.testing.assert_close(resumed.model.xyz.detach(), trainer.model.xyz.detach())
    full = json.loads((out / "eval_log.json").read_text())
    again = json.loads((part / "eval_log.json").read_text())
    assert [e["psnr"] for e in again] == pytest.approx([e["psnr"] for e in full], abs=1e-4)


def test_non_finite_loss_stops_with_a_clear_message(dataset, tmp_path):
    out = tmp_path / "nan"
    r = subprocess.run([sys.executable, "train.py", "-s", str(dataset), "-m", str(out),
                        "--iterations", "20", "--lambda_dssim", "nan", *COMMON],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert "non-finite by iteration 1" in r.stderr and "Traceback" not in r.stderr


def test_short_run_is_evaluated_and_rendered_without_untrained_deformation(dataset, tmp_path):
    out = tmp_path / "short"
    t = train.train(["-s", str(dataset), "-m", str(out), "--eval", "--iterations", "30",
                     *COMMON])  # --warm_up 150 in COMMON: the deformation is never trained
    log = json.loads((out / "eval_log.json").read_text())
    # halfway (the default) and the last iteration, which is always evaluated
    assert [e["iteration"] for e in log] == [15, 30]
    assert not t.model.deforms_at(30) and t.model.deforms_at(150)
    r = _render(["-m", str(out), "--skip_train", "--quiet", "--no_video", "--device", "cpu"])
    assert "rendering the canonical head" in r.stdout


def test_without_m_a_fresh_run_folder_is_made_under_output(dataset, tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "train.py"), "-s", str(dataset),
                        "--iterations", "2", *COMMON], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    runs = list((tmp_path / "output").iterdir())
    assert len(runs) == 1 and (runs[0] / "point_cloud" / "iteration_2").is_dir()


def test_schedule_clock_fits_the_schedule_to_a_time_budget():
    """Without a limit the schedule's position is the iteration; with one it is the share of
    the budget spent times --iterations wherever that runs ahead of the iterations."""
    from training.run_control import ScheduleClock

    free = ScheduleClock(1000)
    assert free.position(10, 1e9) == 10 and not free.spent(1e9)
    budget = ScheduleClock(1000, time_limit=60.0)
    assert budget.position(10, 30.0) == 500.0  # half the budget spent: half the schedule
    assert budget.position(700, 30.0) == 700.0  # the iterations ahead of the clock
    assert budget.position(10, 90.0) == 1000.0 and budget.spent(60.0)


def test_time_budget_runs_every_phase_compressed(dataset, tmp_path):
    """A budget far too short for --iterations: the run still switches on the deformation
    (at 5 % of the schedule) and ends at the schedule's end when the budget is spent, saved
    and evaluated there, with model_meta.json saying where the deformation started."""
    out = tmp_path / "budget"
    opts = [o for o in COMMON if o not in ("--warm_up", "150")]
    trainer = train.train(["-s", str(dataset), "-m", str(out), "--eval", "--iterations",
                           "1000000", "--time_limit", "0.25", *opts])
    last = trainer.last_iteration
    assert 2 < last < 1_000_000
    meta = json.loads((out / "model_meta.json").read_text())
    assert 0 < meta["model"]["deform_from"] < last
    assert trainer.model.deforms_at(last)
    assert [e["iteration"] for e in json.loads((out / "eval_log.json").read_text())] == [last]
    assert (out / "point_cloud" / f"iteration_{last}" / "point_cloud.ply").is_file()
