"""render.py writes frames on a background thread: in order, every frame, and an error in
the writer stops the render with that error and leaves no partial video."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
import torch

from scene import render_sets
from scene.cameras import Camera
from scene.dataset_readers import Intrinsics
from scene.gaussian_model import GaussianHead, ModelConfig
from tests.helpers import look_at_c2w


def test_ordered_writer_keeps_order_and_bounds_the_queue():
    done: list[int] = []
    w = render_sets._OrderedWriter(pending=3)

    def job(i):
        time.sleep(random.random() * 0.005)
        done.append(i)

    for i in range(40):
        w.submit(job, i)
        assert len(w._futures) <= 3
    w.close()
    assert done == list(range(40))


def test_ordered_writer_raises_the_writer_error():
    w = render_sets._OrderedWriter(pending=2)

    def job(i):
        if i == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            w.submit(job, i)
        w.close()
    w.abort()


def test_ordered_writer_runs_in_the_background():
    """submit() returns while earlier frames are still being written."""
    import threading

    release = threading.Event()
    w = render_sets._OrderedWriter(pending=4)
    w.submit(release.wait, 5.0)
    t0 = time.perf_counter()
    w.submit(lambda: None)
    assert time.perf_counter() - t0 < 1.0  # the first job still blocks the writer thread
    release.set()
    w.close()


def _scene(n_frames=6):
    torch.manual_seed(0)
    m = GaussianHead(ModelConfig(exp_dim=4, radius=0.2))
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(200, 3)))
    m.eval()
    intr = Intrinsics(24, 24, 35.0, 35.0, 12.0, 12.0)
    cams = [Camera(intr, look_at_c2w([0.05 * i, 0.0, 0.5]), torch.rand(4))
            for i in range(n_frames)]
    return m, cams


def test_render_cameras_writes_every_frame(tmp_path):
    m, cams = _scene()
    out = render_sets.render_cameras(m, cams, tmp_path / "r", "test", torch.ones(3), "torch",
                                torch.device("cpu"), gt_fn=lambda c: np.zeros((24, 24, 3)),
                                quiet=True)
    for sub in ("renders", "depth", "gt"):
        assert sorted(p.name for p in (out / sub).iterdir()) == [
            f"{i:05d}.png" for i in range(len(cams))]
    assert (out / "test.mp4").stat().st_size > 0
    assert (out / "test_gt_render.mp4").stat().st_size > 0


def test_render_cameras_stops_on_a_write_error(tmp_path, monkeypatch):
    m, cams = _scene(10)
    real = render_sets.write_png
    calls = []

    def failing(path, image):
        calls.append(path)
        if len(calls) == 7:
            raise OSError("No space left on device")
        real(path, image)

    monkeypatch.setattr(render_sets, "write_png", failing)
    with pytest.raises(OSError, match="No space left"):
        render_sets.render_cameras(m, cams, tmp_path / "r", "test", torch.ones(3), "torch",
                              torch.device("cpu"), quiet=True)
    # nothing is written after the failing file, and no half-written video is left behind
    assert len(calls) == 7
    assert not (tmp_path / "r" / "test.mp4").exists()
    assert not any(p.suffix == ".mp4" for p in (tmp_path / "r").iterdir())
