"""Pieces of the benchmark that can be checked without a GPU."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bench.host_time import _device_busy_s


def _event(start: float, end: float, device: bool = True, annotation: bool = False):
    return SimpleNamespace(
        time_range=SimpleNamespace(start=start, end=end), is_user_annotation=annotation,
        device_type=torch.autograd.DeviceType.CUDA if device else torch.autograd.DeviceType.CPU)


def test_device_busy_time_is_the_union_of_device_activity():
    """Overlapping kernels count once, host events and annotation spans (which include idle
    gaps) not at all; times are in microseconds."""
    events = [
        _event(0, 10), _event(5, 15),  # overlap: 0-15
        _event(20, 30), _event(22, 25),  # nested: 20-30
        _event(40, 41),
        _event(0, 100, device=False),  # a host event
        _event(0, 100, annotation=True),  # Optimizer.step#Adam.step on the GPU timeline
    ]
    prof = SimpleNamespace(events=lambda: events)
    assert abs(_device_busy_s(prof) - 26e-6) < 1e-12


def test_quality_summary_pairs_seeds_and_gives_a_t_interval():
    """bench/quality.py: per-path mean and std, and the seed-paired difference from the
    reference with a 95% Student-t interval (3 seeds: t = 4.303 with 2 degrees of freedom)."""
    from bench.quality import summarize

    s = summarize({"reference": [10.0, 11.0, 12.0], "mixed": [11.0, 13.0, 15.0]})
    assert s["reference"]["mean"] == 11.0 and abs(s["reference"]["std"] - 1.0) < 1e-12
    assert "diff_mean" not in s["reference"]
    m = s["mixed"]
    assert m["diff_mean"] == 2.0  # differences 1, 2, 3
    half = 4.302652729911275 * 1.0 / 3 ** 0.5
    assert abs(m["diff_ci95"][0] - (2.0 - half)) < 1e-9
    assert abs(m["diff_ci95"][1] - (2.0 + half)) < 1e-9
    one = summarize({"reference": [10.0], "default": [10.5]})
    assert one["default"]["diff_mean"] == 0.5 and one["default"]["diff_ci95"] is None
    assert one["default"]["std"] is None


def test_bench_run_end_to_end_on_the_cpu(tmp_path):
    """bench/run.py on a tiny set: the JSON has every section, and the host-time split of each
    measured count adds up to its wall time."""
    import json

    from bench.run import main
    from tools.make_synthetic import make_synthetic

    data = make_synthetic(tmp_path / "syn", frames=16, res=32, seed=1)
    out = tmp_path / "results"
    assert main(["--data", str(data), "--iterations", "6", "--test_frames", "4",
                 "--eval_frames", "2", "--grow_to", "10100", "--grow_iterations", "2",
                 "--host_iterations", "2", "--render_frames", "2", "--render_batch", "1",
                 "--out", str(out), "--tag", "t"]) == 0
    (path,) = out.glob("*_cpu_*_t.json")
    r = json.loads(path.read_text())
    assert r["iterations"] == 6 and r["grown"]["gaussians"] == 10100
    assert [h["gaussians"] for h in r["host_phases"]] == [r["gaussians_end"], 10100]
    for h in r["host_phases"]:
        for mode in ("as_run", "isolated"):
            parts = h[mode]["parts_ms_per_it"]
            assert {"networks forward", "rasterization forward", "loss forward", "backward",
                    "other"} <= set(parts)
            assert all(v >= 0 for v in parts.values())
            # the timed parts do not overlap: together they fit in the wall time
            timed = sum(v for k, v in parts.items() if k != "other")
            assert timed <= h[mode]["wall_ms_per_it"] * (1 + 1e-6), (timed, h[mode])
    assert r["test"]["psnr"] > 0 and r["render"]["latency_ms"] > 0


@pytest.mark.parametrize("term", ["off", "on"])
def test_fidelity_json_says_whether_the_vgg_term_was_on(tmp_path, monkeypatch, term):
    """bench/fidelity.py on a tiny set: its JSON records the objective (the VGG term on or off,
    and why) beside the metrics. "on" stands a small module in for VGG16 (no weights here)."""
    import json

    import training.trainer
    from bench.fidelity import main
    from tools.make_synthetic import make_synthetic

    if term == "on":
        class Stand_in(torch.nn.Module):
            def forward(self, pred, gt):
                return (pred - gt).abs().mean()

        monkeypatch.setattr(training.trainer, "make_perceptual_loss",
                            lambda weight, device: (Stand_in(), "on (a stand-in)"))
    data = make_synthetic(tmp_path / "syn", frames=12, res=24, seed=1)
    out = tmp_path / "results"
    assert main(["--data", str(data), "--minutes", "0", "--test_frames", "3",
                 "--train_every", "4", "--sheet_rows", "1", "--sheet_cell", "24",
                 "--out", str(out), "--tag", "t", "--", "--iterations", "4", "--backend",
                 "torch", "--device", "cpu", "--init_points", "300", "--body_points", "100"]) == 0
    (path,) = out.glob("*_fidelity_t.json")
    r = json.loads(path.read_text())
    assert r["vgg_term"] is (term == "on")
    if term == "on":
        assert r["perceptual_loss"] == "on (a stand-in)"
    else:
        assert r["perceptual_loss"].startswith("off: VGG16 weights not found")
        assert "GH_NO_DOWNLOAD=1" in r["perceptual_loss"]
    assert r["iterations"] == 4 and r["metrics"]["test"]["psnr"] > 0 and r["model_bytes"]


def test_viewer_frame_bench_times_the_viewers_path_at_each_page_size(tmp_path):
    """bench/viewer_frame.py on a briefly trained CPU run: one entry per page size and case,
    positive frame times, images of the page's size (checked inside), the JSON written."""
    import json

    import train
    from bench.viewer_frame import main, turned
    from tools.make_synthetic import make_synthetic

    data = make_synthetic(tmp_path / "syn", frames=12, res=32, seed=2)
    run = tmp_path / "run"
    train.train(["-s", str(data), "-m", str(run), "--eval", "--iterations", "4",
                 "--test_frames", "3", "--init_points", "300", "--body_points", "100",
                 "--device", "cpu", "--quiet", "--save_iterations", "4",
                 "--test_iterations", "4"])
    out = tmp_path / "results"
    assert main(["-m", str(run), "--sizes", "48x32", "40x40", "--frames", "3",
                 "--device", "cpu", "--out", str(out), "--tag", "t"]) == 0
    (path,) = out.glob("*_cpu_*_viewer_t.json")
    r = json.loads(path.read_text())
    assert set(r["sizes"]) == {"48x32", "40x40"} and r["gaussians"] > 0
    for case in r["sizes"].values():
        for key in ("orbit", "expression"):
            assert case[key]["frames"] == 3 and 0 < case[key]["median_ms"] <= case[key]["p90_ms"]
    # the orbit turns the camera about the vertical axis through the centre: distance kept
    c2w = np.eye(4)
    c2w[:3, 3] = [0.0, 0.0, 2.0]
    centre = np.array([0.0, 0.0, 0.5])
    t = turned(c2w, centre, math.radians(30.0))
    assert np.isclose(np.linalg.norm(t[:3, 3] - centre), 1.5)
    assert np.isclose(t[1, 3], 0.0) and np.isclose(t[0, 3], 0.75)
