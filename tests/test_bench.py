"""Pieces of the benchmark that can be checked without a GPU."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from bench.run import _device_busy_s


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
