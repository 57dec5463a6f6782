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
