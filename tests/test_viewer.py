"""viewer.py: the page's camera as ours, the expression sliders' PCA, the command line's errors,
and the viewer driven through a real browser (headless Chromium) on a freshly trained avatar."""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import train
import viewer
from gaussian_renderer import rasterize
from scene.cameras import Camera
from scene.live_view import fit_size, look_at_of, view_intrinsics, viser_to_c2w_gl
from tests.helpers import look_at_c2w
from tools.make_synthetic import make_synthetic
from utils.errors import CheckpointError, DatasetError
from utils.expression_space import ExpressionSpace, NamedSpace, slider_space
from utils.graphics_utils import GL_TO_CV

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _viser_pose(c2w_gl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A camera as viser reports it (rotation as wxyz, position; OpenCV axes), made with
    viser's own transforms."""
    from viser import transforms as tf

    c2w_cv = c2w_gl @ GL_TO_CV
    return tf.SO3.from_matrix(c2w_cv[:3, :3]).wxyz, c2w_cv[:3, 3]


# ----------------------------------------------------------------------------------------------
# the page's camera


@pytest.mark.parametrize("eye", [(0.0, 0.0, 0.6), (0.3, 0.2, 0.5), (-0.4, -0.1, -0.3)])
def test_a_viser_camera_becomes_the_same_camera_of_ours(eye):
    c2w = look_at_c2w(eye, target=(0.01, 0.02, 0.0))
    wxyz, pos = _viser_pose(c2w)
    got = viser_to_c2w_gl(wxyz, pos)
    np.testing.assert_allclose(got, c2w, atol=1e-9)
    intr = view_intrinsics(math.radians(40), 64, 48)
    cam = Camera(intr=intr, c2w_gl=got, exp=torch.zeros(3))
    np.testing.assert_allclose(cam.viewmat().numpy(), np.linalg.inv(c2w @ GL_TO_CV), atol=1e-5)
    # what the viewer sends to show it: looking from the position at the point given, up
    pos2, target, up = look_at_of(c2w, np.zeros(3))
    np.testing.assert_allclose(pos2, eye)
    forward = (target - pos2) / np.linalg.norm(target - pos2)
    np.testing.assert_allclose(forward, -c2w[:3, 2], atol=1e-9)
    np.testing.assert_allclose(up, c2w[:3, 1])


def test_a_known_pose_renders_the_head_centre_in_the_image_centre():
    # a Gaussian at the orbit centre, a camera that orbits it: the blob is centred, and one
    # above the centre (head frame +y) appears above it in the image
    centre = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.05, 0.0]])
    for eye in [(0.0, 0.0, 0.6), (0.35, 0.1, 0.45)]:
        wxyz, pos = _viser_pose(look_at_c2w(eye))
        c2w = viser_to_c2w_gl(wxyz, pos)
        w, h = 80, 60
        cam = Camera(intr=view_intrinsics(math.radians(35), w, h), c2w_gl=c2w,
                     exp=torch.zeros(1))
        ys, xs = [], []
        for k in range(2):
            out = rasterize(centre[k:k + 1], torch.tensor([[1.0, 0, 0, 0]]),
                            torch.full((1, 3), 0.01), torch.ones(1),
                            torch.ones(1, 3), cam.viewmat(), cam.K(), w, h, torch.zeros(3))
            a = out.alpha[0].numpy()
            yy, xx = np.mgrid[:h, :w]
            ys.append((a * (yy + 0.5)).sum() / a.sum())
            xs.append((a * (xx + 0.5)).sum() / a.sum())
        assert abs(xs[0] - w / 2) < 0.05 and abs(ys[0] - h / 2) < 0.05
        assert ys[1] < ys[0] - 2  # up in the head frame is up in the image


def test_render_sizes():
    assert fit_size(1000, 500, 256) == (256, 128)
    assert fit_size(300, 900, 256) == (85, 256)
    assert fit_size(200, 100, 256) == (200, 100)
    assert fit_size(1000, 500, None) == (1000, 500)
    intr = view_intrinsics(math.radians(90), 100, 50)
    assert intr.fy == pytest.approx(25.0) and intr.fx == intr.fy and intr.cx == 50


# ----------------------------------------------------------------------------------------------
# the expression sliders


def test_named_sliders_are_the_named_coefficients():
    """A dataset in a named space: one slider per coefficient that moves in the data, named
    in words, from 0 to 1, the slider's value the coefficient's weight; Neutral is the neutral
    code; the coefficients without a slider are kept as they are."""
    names = ["jawOpen", "mouthLeft", "mouthSmileLeft", "eyeBlinkRight", "browInnerUp",
             "cheekPuff"]
    rng = np.random.default_rng(0)
    exps = rng.uniform(0, 1, (50, 6))
    exps[:, 5] = 0.0  # cheekPuff never moves: no slider
    neutral = np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])
    space = slider_space(exps, names, neutral)
    assert isinstance(space, NamedSpace) and space.k == 5 and space.dim == 6
    assert space.labels == ["jaw open", "mouth left", "smile left", "blink right",
                            "brow inner up"]
    assert all(n in h for n, h in zip(names, space.hints))
    np.testing.assert_array_equal(space.low, 0.0)
    np.testing.assert_array_equal(space.high, 1.0)
    e = exps[3].copy()
    e[5] = 0.4  # a value outside the sliders stays in the residual
    c = space.project(e)
    np.testing.assert_allclose(c, e[:5])
    np.testing.assert_allclose(space.expression(c, space.residual(e)), e, atol=1e-6)
    c[0] = 0.9  # the jaw slider moves jawOpen only
    moved = space.expression(c, space.residual(e))
    np.testing.assert_allclose(moved - e, [0.9 - e[0], 0, 0, 0, 0, 0], atol=1e-6)
    coeffs, residual = space.neutral_state()
    np.testing.assert_allclose(space.expression(coeffs, residual), neutral, atol=1e-7)
    sample = space.sample(rng)
    assert sample.shape == (5,) and (sample >= 0).all() and (sample <= 1).all()
    assert isinstance(slider_space(exps), ExpressionSpace)  # no names: the PCA's axes


def test_sliders_map_to_expressions_through_the_data_pca():
    rng = np.random.default_rng(0)
    # 200 expressions of 12 values that vary mostly along 3 directions
    basis = np.linalg.qr(rng.normal(size=(12, 12)))[0][:, :3].T
    exps = (rng.normal(size=(200, 3)) * [3.0, 1.0, 0.5]) @ basis + 0.01 * rng.normal(
        size=(200, 12)) + 2.0
    space = ExpressionSpace.fit(exps)
    assert space.k == 3  # the noise directions explain less than 0.5% each
    np.testing.assert_allclose(space.components @ space.components.T, np.eye(3), atol=1e-5)
    coeffs = space.project(exps)
    recon = np.stack([space.expression(c) for c in coeffs])
    # the reconstruction error is what the 12 - 3 left-out axes hold
    _, s, _ = np.linalg.svd(exps - exps.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.sum((recon - exps) ** 2), np.sum(s[3:] ** 2), rtol=1e-3)
    # with the residual kept, a dataset frame is reproduced exactly
    for e in exps[:5]:
        np.testing.assert_allclose(space.expression(space.project(e), space.residual(e)), e,
                                   atol=1e-5)
    # slider ranges: the 2nd to 98th percentile of the data's coordinates
    inside = (coeffs >= space.low) & (coeffs <= space.high)
    assert np.all(np.abs(inside.mean(0) - 0.96) < 0.011)
    assert np.all(space.low < 0) and np.all(space.high > 0)
    assert space.std[0] > space.std[1] > space.std[2]
    # a random plausible expression stays inside the ranges; neutral is the mean
    for _ in range(20):
        c = space.sample(rng)
        assert np.all(c >= space.low) and np.all(c <= space.high)
    np.testing.assert_allclose(space.expression(np.zeros(3)), exps.mean(0), atol=1e-5)
    # moving one slider moves the expression along its axis only
    c = coeffs[0].copy()
    c[1] += 0.5
    delta = space.expression(c) - space.expression(coeffs[0])
    np.testing.assert_allclose(delta, 0.5 * space.components[1], atol=1e-5)


# ----------------------------------------------------------------------------------------------
# a trained avatar, the command line and the browser


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny avatar: 20 frames at 32 px, 60 iterations on the CPU (about 10 s)."""
    data = make_synthetic(tmp_path_factory.mktemp("data") / "syn", frames=20, res=32, seed=0,
                          novel_yaws=())
    out = tmp_path_factory.mktemp("runs") / "tiny"
    train.train(["-s", str(data), "-m", str(out), "--iterations", "60", "--warm_up", "10",
                 "--test_frames", "4", "--eval_frames", "4", "--init_points", "500",
                 "--body_points", "200", "--save_iterations", "60", "--test_iterations", "60",
                 "--seed", "0", "--device", "cpu", "--backend", "torch", "--quiet",
                 "--tensorboard", "false"])
    return out, data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line(run, tmp_path, capsys):
    out, data = run
    with pytest.raises(CheckpointError, match="cfg_args not found"):
        viewer.start(["-m", str(tmp_path / "missing"), "--device", "cpu"])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(out / "cfg_args", unfinished / "cfg_args")
    with pytest.raises(CheckpointError, match="holds no iteration_N"):
        viewer.start(["-m", str(unfinished), "--device", "cpu"])
    bad = tmp_path / "driving.json"
    bad.write_text('{"frames": [{"img_id": 0, "transform_matrix": '
                   '[[1,0,0,0],[0,1,0,0],[0,0,1,0.5],[0,0,0,1]], "exp_ori": [0.1, 0.2]}]}')
    with pytest.raises(DatasetError, match="--driving .* its expressions have 2 values, the "
                                           "avatar's 46"):
        viewer.start(["-m", str(out), "--driving", str(bad), "--device", "cpu"])
    # a port in use: the next free one, said so
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        v = viewer.start(["-m", str(out), "--port", str(port), "--device", "cpu"])
        try:
            printed = capsys.readouterr().out
            assert f"port {port} is in use; serving on port {v.server.get_port()}" in printed
            assert v.server.get_port() != port and "--port" in printed
        finally:
            v.stop()
    # another dataset's expressions on the timeline, with the dataset's held-out capture poses
    v = viewer.start(["-m", str(out), "--driving", str(data), "--port", str(_free_port()),
                      "--device", "cpu"])
    try:
        sets = v.avatar.sets
        assert list(sets) == ["train", "test", "driving"] and len(sets["driving"]) == 20
        np.testing.assert_array_equal(sets["driving"].captures[5], sets["test"].captures[1])
        v.avatar.select("driving", 7)
        np.testing.assert_allclose(v.avatar.expression, sets["train"].exps[7], atol=1e-5)
    finally:
        v.stop()


def _chromium() -> str | None:
    for name in (os.environ.get("GH_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    return None


def _wait(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _canvas_image(page, box) -> np.ndarray:
    png = page.screenshot(clip=box)
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR),
                        cv2.COLOR_BGR2RGB)


def test_the_viewer_in_a_real_browser(run, tmp_path):
    """Open the page in headless Chromium: the avatar appears from the dataset's camera, the
    camera orbits and resets, moving an expression slider in the page changes the image as the
    avatar's expression change does, and snapshot and export write their files."""
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium found (chromium, chromium-browser or $GH_CHROMIUM); "
                    "tools/setup.sh installs Debian's chromium where apt-get works")
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install -r "
                                     "requirements-dev.txt installs playwright")
    out, _ = run
    start = time.monotonic()
    v = viewer.start(["-m", str(out), "--port", str(_free_port()), "--device", "cpu"])
    a = v.avatar
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 700})
            page.goto(f"http://127.0.0.1:{v.server.get_port()}")
            _wait(lambda: v.renders >= 1, 60, "the first render")
            client = next(iter(v.server.get_clients().values()))

            def view() -> np.ndarray:
                return viser_to_c2w_gl(client.camera.wxyz, client.camera.position)

            # the page opens at the dataset's mean training camera
            _wait(lambda: np.abs(view() - a.mean_camera).max() < 1e-4, 20,
                  "the dataset's camera")
            v.loop.wait_idle(30)
            box = page.locator("canvas").first.bounding_box()
            # notifications (headless Chromium's software WebGL notice, the saved files) would
            # cover the canvas: hidden; the panel says the same
            page.add_style_tag(content='[class*="mantine-Notification"] {display: none !important}')
            page.get_by_role("button", name="Reset to the dataset's camera").wait_for()
            time.sleep(0.5)
            first = _canvas_image(page, box)
            # the avatar is in the middle of the view, on the (white) background
            h, w = first.shape[:2]
            middle = first[h // 4: 3 * h // 4, w // 4: 3 * w // 4].astype(float)
            assert np.mean(np.abs(middle - 255.0).sum(-1) > 60) > 0.3

            # orbit with the mouse, then back to the dataset's camera with the button
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 120, cy + 30, steps=8)
            page.mouse.up()
            _wait(lambda: np.abs(view() - a.mean_camera).max() > 0.05, 20, "the orbit")
            page.get_by_role("button", name="Reset to the dataset's camera").click()
            _wait(lambda: np.abs(view() - a.mean_camera).max() < 1e-4, 20, "the reset")
            v.loop.wait_idle(30)
            time.sleep(0.5)
            before = _canvas_image(page, box)
            assert np.abs(before.astype(float) - first).mean() < 2.0
            size = fit_size(client.camera.image_width, client.camera.image_height, v.max_size)
            intr = view_intrinsics(client.camera.fov, *size)
            expected_before, _ = a.render(view(), intr)

            # move the first expression slider to its maximum through the page
            renders = v.renders
            slider = page.get_by_role("slider").nth(1)  # 0: the timeline's frame
            slider.focus()
            page.keyboard.press("End")
            _wait(lambda: a.coeffs[0] == pytest.approx(a.space.high[0], rel=1e-4), 20,
                  "the slider's value on the server")
            _wait(lambda: v.renders > renders, 30, "a render after the slider moved")
            v.loop.wait_idle(30)
            time.sleep(0.5)
            after = _canvas_image(page, box)
            expected_after, _ = a.render(view(), intr)
            shot = tmp_path / "viewer_after_slider.png"
            cv2.imwrite(str(shot), cv2.cvtColor(after, cv2.COLOR_RGB2BGR))
            print(f"browser screenshot: {shot}")

            # the page's change is the avatar's change
            def small(img):
                return cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(float)

            seen = np.abs(small(after) - small(before)).sum(-1).ravel()
            want = np.abs(expected_after.astype(float) - expected_before).sum(-1).ravel()
            assert want.max() > 30, "the slider should change the avatar"
            corr = np.corrcoef(seen, want)[0, 1]
            print(f"correlation of the page's change with the avatar's: {corr:.3f}")
            assert corr > 0.6

            # play steps the timeline; head only hides the body
            page.get_by_role("button", name="Play").click()
            _wait(lambda: a.frame >= 2, 30, "the timeline to play")
            page.get_by_role("button", name="Pause").click()
            page.get_by_role("checkbox").first.click()
            _wait(lambda: a.head_only, 10, "head only")
            assert a.num_gaussians() == a.model.num_gaussians
            page.get_by_role("checkbox").first.click()
            _wait(lambda: not a.head_only, 10, "the body back")

            # snapshot and export write files next to the run and say where
            page.get_by_role("button", name="Snapshot (PNG)").click()
            _wait(lambda: list((out / "viewer").glob("snapshot_*.png")), 30, "the snapshot")
            page.get_by_role("button", name="Export Gaussians (.ply, .splat)").click()
            _wait(lambda: list((out / "viewer").glob("*.splat")), 30, "the export")
            page.locator("p", has_text="Exported").wait_for(timeout=10_000)
            snap = cv2.imread(str(next((out / "viewer").glob("snapshot_*.png"))))
            assert max(snap.shape[:2]) == 32  # the dataset's size
            page.screenshot(path=str(tmp_path / "viewer_page.png"))
            browser.close()
    finally:
        v.stop()
    print(f"browser test took {time.monotonic() - start:.1f} s")
