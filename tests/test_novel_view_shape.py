"""What keeps turned views whole: the body's surface fitted to its silhouette, the body
Gaussians held on it, the penalty on Gaussians that reach along the line of sight, the visual
hull that prunes head Gaussians, and the split of a dataset by head yaw."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from scene import Scene
from scene.body_model import BodyGaussians
from scene.body_shape import fit_body_surface
from scene.gaussian_model import GaussianHead, ModelConfig
from scene.run_folder import load_model, save_model, write_meta
from scene.yaw_split import frame_yaws, plan_yaw_split, write_yaw_split
from tests.helpers import look_at_c2w
from tools import make_synthetic as ms
from training.densification import Densifier, DensifyConfig
from training.regularizers import VisualHull, radial_normal_penalty, view_extent_penalty
from utils.errors import DatasetError
from utils.graphics_utils import quat_to_rotmat


def _synthetic_body(res: int = 96):
    """The synthetic world's neck and torso silhouette [res, res] from its fixed camera, and
    the true depth along the camera's axis of the torso at every pixel (inf off it)."""
    world = ms.build_world(res, seed=0)
    frame = ms.render_frame(world, {}, np.eye(4))
    neck = frame.label == ms.LABEL_NECK
    region = neck | (frame.label == ms.LABEL_TORSO)
    ss = ms.SS
    t = world.static_t[ss // 2::ss, ss // 2::ss]
    ray_z = -world.rays[2, ss // 2::ss, ss // 2::ss]
    return world, region, neck, t * ray_z


def test_fitted_surface_lies_near_the_synthetic_torso():
    """The surface fitted to the synthetic body's silhouette (the head 0.55 away, half a head
    width 0.09) lies on average within 2 cm of the true torso's front (whose half-depth is
    0.1), in every row nearer the camera inside than at the sides;
    the shoulders' top lies further back than the chest below it."""
    world, region, neck, true_depth = _synthetic_body()
    surf = fit_body_surface(region, world.fx, world.fy, world.cx, world.cy,
                            head_depth=ms.CAMERA_EYE[2], head_half_width=0.09, grid=world.res,
                            neck=neck)
    torso = np.isfinite(true_depth) & region & ~neck
    rows = np.flatnonzero(torso.any(1))
    err = []
    for r in rows[len(rows) // 3:]:
        cols = np.flatnonzero(torso[r])
        err.append(np.abs(surf.depth[r, cols] - true_depth[r, cols]))
        row = surf.depth[r, cols]
        assert row.min() < row[0] - 0.01 and row.min() < row[-1] - 0.01
    assert np.mean(np.concatenate(err)) < 0.02
    shoulder = np.flatnonzero(torso[:, 25])
    assert surf.depth[shoulder[0], 25] > surf.depth[shoulder[-1], 25] + 0.02


def test_ray_ellipse_depth_on_an_axis_aligned_circle():
    """A round neck of radius 0.05 centred 0.6 away on the axis: the central ray meets it at
    0.55, a ray past its side misses it (the centre's depth)."""
    region = np.zeros((41, 41), bool)
    f = 100.0
    half_px = 0.05 / 0.6 * f  # the neck's half-width in pixels at its centre's depth
    region[:, int(round(20.5 - half_px)):int(round(20.5 + half_px))] = True
    surf = fit_body_surface(region, f, f, 20.5, 20.5, head_depth=0.6, head_half_width=0.1,
                            offset=0.0, grid=41)
    assert surf.depth[20, 20] == pytest.approx(0.55, abs=0.003)
    assert surf.depth[20, 0] == pytest.approx(0.6)
    assert surf.depth[20, 14] > surf.depth[20, 17] > surf.depth[20, 20]


def _surface_body(n: int = 40) -> BodyGaussians:
    world, region, neck, _ = _synthetic_body(48)
    surf = fit_body_surface(region, world.fx, world.fy, world.cx, world.cy, 0.55, 0.09,
                            neck=neck)
    b = BodyGaussians(shape="surface")
    rng = np.random.default_rng(0)
    ys, xs = np.nonzero(region)
    k = rng.integers(0, len(ys), n)
    d = 0.55
    pts = np.stack([(xs[k] - world.cx) / world.fx * d, -(ys[k] - world.cy) / world.fy * d,
                    np.full(n, -d)], 1)
    poses = np.stack([look_at_c2w([0.1 * np.sin(a), 0.0, 0.55]) for a in (-1, 0, 1)])
    b.init_from_points(pts, rng.random((n, 3)), poses, length=0.1, surface=surf, ref_depth=d)
    return b


def test_body_gaussians_stay_on_the_surface_and_keep_their_image_position():
    """Whatever the position parameters become (training, densification), a body Gaussian lies
    on the surface (its front, or its back by the third parameter), on the ray through the image
    point its (x, y) names; gradients reach (x, y), not the depth; the thin axis of a new
    Gaussian is the surface's normal."""
    b = _surface_body()
    with torch.no_grad():
        b.xyz[:, :2] += 0.01 * torch.randn(b.num_gaussians, 2)
        b.xyz[:, 2] = -5.0  # the side, clamped to [0, 1]: the front
    with torch.no_grad():
        b.follow.zero_()
    means = b.frames(torch.eye(4)[None])["means"][0]  # camera frame = head frame here
    depth = -means[:, 2]
    torch.testing.assert_close(depth, b.surface_depth(b.xyz[:, :2]))
    torch.testing.assert_close(means[:, :2] / depth[:, None], b.xyz[:, :2] / b.ref_depth)
    means.sum().backward()
    assert b.xyz.grad[:, :2].abs().sum() > 0 and b.xyz.grad[:, 2].abs().sum() == 0
    # on the back (side 1 and beyond): the ray's exit from the volume, behind the front
    with torch.no_grad():
        b.xyz[:, 2] = 7.0
    back = -b.frames(torch.eye(4)[None])["means"][0][:, 2]
    torch.testing.assert_close(back, b.surface_depth(b.xyz[:, :2], torch.ones(len(back))))
    assert (back >= depth - 1e-6).all() and (back > depth + 0.02).float().mean() > 0.7

    fresh = _surface_body()
    thin = quat_to_rotmat(fresh.rotation)[:, :, 2]  # the local z axis, the smallest scale
    normals = fresh.surface_normals(fresh.xyz[:, :2])
    assert (torch.abs((thin * normals).sum(-1)) > 0.999).all()
    assert (fresh.scaling[:, 2] < fresh.scaling[:, 0]).all()


def test_model_with_a_surface_body_round_trips(tmp_path):
    cfg = ModelConfig(exp_dim=5, radius=0.2, body=True, body_shape="surface")
    m = GaussianHead(cfg)
    m.init_from_points(np.random.default_rng(0).normal(scale=0.05, size=(30, 3)))
    m.body = _surface_body()
    write_meta(tmp_path, m)
    save_model(tmp_path, m, 10, torch.zeros(3))
    loaded, _ = load_model(tmp_path, 10)
    assert loaded.body.shape == "surface"
    pose = torch.tensor(look_at_c2w([0.05, 0.0, 0.55]), dtype=torch.float32)[None]
    torch.testing.assert_close(loaded.body.frames(pose)["means"], m.body.frames(pose)["means"])
    meta = json.loads((tmp_path / "model_meta.json").read_text())
    assert meta["model"]["body_shape"] == "surface"


def test_view_extent_penalty_spares_discs_facing_the_eye():
    eye = torch.tensor([0.0, 0.0, 1.0])
    means = torch.zeros(3, 3)
    rot = torch.tensor([[1.0, 0, 0, 0]] * 3)  # identity: local axes = world axes
    log_s = torch.log(torch.tensor([[1.0, 1.0, 0.1],    # disc facing the eye (normal z)
                                    [0.1, 0.1, 1.0],    # needle pointing at the eye
                                    [1.0, 0.1, 1.0]]))  # sheet edge-on
    each = [view_extent_penalty(means[i:i + 1], rot[i:i + 1], log_s[i:i + 1], eye, 1.0).item()
            for i in range(3)]
    assert each[0] == 0.0
    assert each[1] == pytest.approx(np.log(1.0 / 0.1), rel=1e-4)
    assert each[2] == pytest.approx(0.5 * np.log(1.0 / ((1.0 + 0.01) / 2)), rel=1e-4)
    # turned by 90 degrees about y, the disc is edge-on and the needle across the view
    rot90 = torch.tensor([[np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]] * 3,
                         dtype=torch.float32)
    turned = view_extent_penalty(means[:2], rot90[:2], log_s[:2], eye, 1.0)
    assert turned.item() == pytest.approx(0.5 * 0.5 * np.log(1.0 / ((1.0 + 0.01) / 2)),
                                          rel=1e-4)


def test_radial_normal_penalty_wants_flat_gaussians_facing_away_from_the_centre():
    """--lambda_radial_normal: 0 for a disc whose normal points away from the centre, its
    flatness for one whose normal lies across that direction (a disc at the outline facing
    the camera), 0 for spheres; only the rotations get a gradient."""
    centre = torch.zeros(3)
    means = torch.tensor([[0.1, 0.0, 0.0]] * 3)  # on the head's side, the camera along +z
    log_s = torch.log(torch.tensor([[0.1, 1.0, 1.0],    # disc, normal x: facing outwards
                                    [1.0, 1.0, 0.1],    # disc, normal z: facing the camera
                                    [1.0, 1.0, 1.0]]))  # sphere
    rot = torch.tensor([[1.0, 0, 0, 0]] * 3)
    each = [radial_normal_penalty(means[i:i + 1], rot[i:i + 1], log_s[i:i + 1], centre).item()
            for i in range(3)]
    assert each[0] == pytest.approx(0.0, abs=1e-6)
    assert each[1] == pytest.approx(1.0 - 0.1, rel=1e-5)
    assert each[2] == pytest.approx(0.0, abs=1e-6)
    scales = log_s.clone().requires_grad_(True)
    xyz = means.clone().requires_grad_(True)
    tilted = torch.tensor([[0.999, 0.0, 0.04, 0.0]] * 3, requires_grad=True)
    radial_normal_penalty(xyz, tilted, scales, centre).backward()
    assert tilted.grad[1].abs().sum() > 0.1 and scales.grad is None and xyz.grad is None
    # the facing disc turned 90 degrees about y faces outwards: no penalty
    rot90 = torch.tensor([[np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0]])
    assert radial_normal_penalty(means[1:2], rot90, log_s[1:2], centre).item() == pytest.approx(
        0.0, abs=1e-6)


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "data"
    ms.make_synthetic(root, frames=40, res=48, seed=0, novel_yaws=())
    return root


def test_visual_hull_holds_the_head_and_not_the_space_beside_it(synthetic_dataset):
    """Points of the synthetic head are inside its hull; points beside it and above it are
    not; densification prunes Gaussians outside it and keeps the rest."""
    scene = Scene(synthetic_dataset, test_frames=8, eval_frames=8)
    hull = VisualHull.build(scene, head_only=True, device=torch.device("cpu"))
    assert hull is not None
    inside = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.05, 0.05], [0.05, 0.0, 0.0]])
    outside = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.3, 0.0], [-0.25, 0.1, 0.0]])
    assert hull.inside(inside).all() and not hull.inside(outside).any()

    m = GaussianHead(ModelConfig(exp_dim=scene.exp_dim, radius=0.2))
    m.init_from_points(torch.cat([inside, outside]).numpy())
    d = Densifier(DensifyConfig(start=0, interval=1), m.num_gaussians, torch.device("cpu"),
                  keep=hull.inside)
    d.max_opacity = torch.ones(m.num_gaussians)
    d.densify_and_prune(m, [], extent=1.0, iteration=1)
    torch.testing.assert_close(m.xyz.detach(), inside)


def test_head_shell_start_lies_in_the_volumes_outer_layer(synthetic_dataset):
    """--head_shell: the initial head points fill the outer layer of the volume the default
    start fills (the same extent, the sides and back included), and none its core."""
    scene = Scene(synthetic_dataset, test_frames=8, eval_frames=8)
    fill, note = scene.initial_points(3000, 0, head_only=True)
    shell, shell_note = scene.initial_points(3000, 0, head_only=True, shell=0.15)
    assert shell.shape == fill.shape == (3000, 3)
    assert "inside" in note and "outer layer" in shell_note
    middle = fill.mean(0)
    r_fill = np.linalg.norm(fill - middle, axis=1)
    r_shell = np.linalg.norm(shell - middle, axis=1)
    # the same volume: the shell reaches as far as the fill, not beyond it
    np.testing.assert_allclose(np.percentile(r_shell, 99), np.percentile(r_fill, 99), rtol=0.1)
    assert np.ptp(shell, axis=0).max() < 1.1 * np.ptp(fill, axis=0).max()
    # no core: a uniform fill has an eighth of its points within half its size, a shell none
    core = 0.5 * np.percentile(r_fill, 95)
    assert (r_fill < core).mean() > 0.05 and (r_shell < core).mean() < 0.01
    # every side: the points' directions from the middle cover the sphere about evenly
    d = (shell - middle) / r_shell[:, None]
    assert np.abs(d.mean(0)).max() < 0.15
    for axis in range(3):
        assert (d[:, axis] > 0.7).mean() > 0.05 and (d[:, axis] < -0.7).mean() > 0.05


def test_yaw_split_holds_out_the_turned_frames(synthetic_dataset, tmp_path):
    """The frames turned past the limit are held out last, after the last test frames within
    it; train.py reads the split dataset with --test_frames = held_out."""
    meta = json.loads((synthetic_dataset / "transforms.json").read_text())
    c2w = np.array([f["transform_matrix"] for f in meta["frames"]])
    yaws = frame_yaws(c2w)
    limit = float(np.quantile(np.abs(yaws - np.median(yaws)), 0.7))
    split = write_yaw_split(synthetic_dataset, tmp_path / "split", limit, test_frames=4)
    d = np.abs(yaws - np.median(yaws))
    ids = [f["img_id"] for f in meta["frames"]]
    assert split.turned == [i for i, y in zip(ids, d) if y > limit] and split.turned
    assert split.test == [i for i, y in zip(ids, d) if y <= limit][-4:]
    scene = Scene(tmp_path / "split", test_frames=split.held_out, eval_frames=split.held_out)
    assert [c.img_id for c in scene.test_cameras] == split.test + split.turned
    assert sorted(c.img_id for c in scene.train_cameras) == sorted(split.train)
    auto = plan_yaw_split(ids, c2w, None, test_frames=4)
    assert len(auto.turned) == pytest.approx(0.15 * len(ids), abs=1)
    with pytest.raises(DatasetError, match="yaw split"):
        plan_yaw_split(ids, c2w, 0.0, test_frames=len(ids))


def test_frame_yaws_follow_the_camera_about_the_head():
    c2w = np.stack([look_at_c2w([0.5 * np.sin(np.radians(a)), 0.0, 0.5 * np.cos(np.radians(a))])
                    for a in (-20.0, 0.0, 35.0)])
    np.testing.assert_allclose(frame_yaws(c2w), [-20.0, 0.0, 35.0], atol=1e-9)


def test_novel_view_orbit_spans_the_range_asked(synthetic_dataset, monkeypatch, tmp_path):
    """render.py --novel_view_range R: the orbit's cameras turn from +R to -R degrees about
    the head's vertical axis (the default NOVEL_VIEW_RANGE)."""
    from scene import render_sets

    seen = {}
    monkeypatch.setattr(render_sets, "render_cameras",
                        lambda model, cams, *a, **k: seen.setdefault("cams", cams))
    scene = Scene(synthetic_dataset, test_frames=8, eval_frames=8)
    for yaw_range in (render_sets.NOVEL_VIEW_RANGE, 40.0):
        model = SimpleNamespace(deforms_at=lambda iteration: True)
        render_sets.render_novel_view(model, scene, tmp_path, 0, "torch", torch.device("cpu"),
                                      n_frames=5, yaw_range=yaw_range)
        yaws = frame_yaws(np.stack([c.c2w_gl for c in seen.pop("cams")]))
        np.testing.assert_allclose(yaws[0], yaw_range, atol=1e-6)
        assert yaws.min() > -yaw_range - 1e-6 and np.all(np.diff(yaws) < 0)


def test_body_continues_past_the_frames_cut_with_a_margin(synthetic_dataset):
    """With --body_margin the synthetic torso, which the frame cuts at the bottom, gets points
    (at a lower density) and a surface beyond the frame there; without a margin everything
    stays inside the frame."""
    scene = Scene(synthetic_dataset, test_frames=8, eval_frames=8)
    head, _ = scene.initial_points(2000, 0, head_only=True)
    intr = scene.info.intrinsics
    out = {}
    for margin in (0.0, 0.25):
        start = scene.body_points(head, 3000, 0, "surface", margin=margin)
        p = start.xyz[:, :2] / -start.xyz[:, 2:]  # normalised image coordinates
        u = p[:, 0] * intr.fx + intr.cx
        v = -p[:, 1] * intr.fy + intr.cy
        out[margin] = (u, v, start.surface.box)
    u, v, box = out[0.0]
    assert u.min() >= 0 and u.max() <= intr.width and v.max() <= intr.height
    u, v, box = out[0.25]
    beyond = (u < 0) | (u > intr.width) | (v > intr.height)
    assert 0.05 < beyond.mean() < 0.4  # a quarter of the density beyond the frame
    assert v.max() > 1.15 * intr.height and v.min() > 0  # not above the frame
    # the surface's grid covers the margin: left/right beyond the image, bottom below it
    assert box[0] < -intr.cx / intr.fx - 0.2 * intr.width / intr.fx
    assert box[3] < -(intr.height - intr.cy) / intr.fy - 0.2 * intr.height / intr.fy
    # beyond the frame's bottom the points lie on the torso, in the columns it fills
    below = v > intr.height
    assert np.ptp(u[below]) > 0.7 * intr.width


def test_back_of_the_body_is_behind_its_front_and_old_models_load_without_it():
    """Points started on the back of the volume lie behind the front at their
    image point; a surface body saved before the back existed loads with the back on its front
    (so it renders as it did)."""
    world, region, neck, _ = _synthetic_body(48)
    surf = fit_body_surface(region, world.fx, world.fy, world.cx, world.cy, 0.55, 0.09,
                            neck=neck)
    assert surf.back is not None and (surf.back >= surf.depth).all()
    b = BodyGaussians(shape="surface")
    ys, xs = np.nonzero(region)
    k = np.random.default_rng(1).integers(0, len(ys), 50)
    pts = np.stack([(xs[k] - world.cx) / world.fx * 0.55, -(ys[k] - world.cy) / world.fy * 0.55,
                    np.full(50, -0.55)], 1)
    back = np.arange(50) % 2 == 1
    poses = np.stack([look_at_c2w([0.0, 0.0, 0.55])] * 2)
    b.init_from_points(pts, np.full((50, 3), 0.5), poses, length=0.1, surface=surf,
                       ref_depth=0.55, back=back, back_opacity=0.5)
    assert torch.equal(b.xyz[:, 2] > 0.5, torch.from_numpy(back))
    torch.testing.assert_close(torch.sigmoid(b.opacity[back]), torch.full((25,), 0.5))
    # the discs lie in the front's tangent plane, and in its mirror image (about the image
    # plane) on the back: the back of a rounded volume leans the other way
    thin = quat_to_rotmat(b.rotation)[:, :, 2]
    normals = b.surface_normals(b.xyz[:, :2]).detach()
    normals[back, 2] *= -1
    assert (torch.abs((thin * normals).sum(-1)) > 0.999).all()
    torch.testing.assert_close(b.rotation.norm(dim=-1), torch.ones(50))  # no degenerate ones
    sd = b.state_dict()
    del sd["surface_back"]
    old = BodyGaussians(num_points=50, shape="surface")
    old.load_state_dict(sd)
    torch.testing.assert_close(old.surface_back, old.surface)
