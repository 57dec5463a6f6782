"""metrics.py and utils/metrics_utils.py: region metrics, yaw groups, set discovery, errors,
on tiny images whose answers are known."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest
import torch

import metrics
from utils import set_metrics
from utils.errors import OptionError
from utils.loss_utils import ssim
from utils.metrics_utils import MIN_REGION_PIXELS, region_metrics, ssim_map
from utils.regions import encode_regions

H = W = 48
ERR = 20  # grey levels added to the torso of a wrong render


def _masks(h: int = H, w: int = W) -> dict[str, np.ndarray]:
    """Head in the top rows, torso in the bottom rows (more than an SSIM window apart), a
    mouth inside the head and eyes too small to be scored."""
    rows = np.arange(h)[:, None] * np.ones((1, w), int)
    cols = np.ones((h, 1), int) * np.arange(w)[None, :]
    head = rows < 16
    mouth = head & (rows >= 10) & (rows < 14) & (cols >= 20) & (cols < 28)
    eyes = head & (rows == 4) & (cols >= 10) & (cols < 10 + MIN_REGION_PIXELS - 1)
    return {"head": head, "torso": rows >= 32, "mouth": mouth, "eyes": eyes}


def _gt(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(50, 200, (H, W, 3), dtype=np.uint8)


def _with_torso_error(gt: np.ndarray) -> np.ndarray:
    pred = gt.copy()
    pred[_masks()["torso"]] += ERR
    return pred


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def _psnr(err_levels: float, fraction: float = 1.0) -> float:
    return -10 * math.log10((err_levels / 255) ** 2 * fraction)


# ----------------------------------------------------------------------------- metrics_utils


def test_ssim_map_mean_is_the_training_ssim():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 20, 24, generator=g), torch.rand(3, 20, 24, generator=g)
    m = ssim_map(a, b)
    assert m.shape == (20, 24)
    assert float(m.mean()) == pytest.approx(float(ssim(a, b)), abs=1e-6)


def test_error_only_in_the_torso():
    gt = _gt()
    pred, gt_t = _t(_with_torso_error(gt)), _t(gt)
    masks = {k: torch.from_numpy(v) for k, v in _masks().items()}
    out = region_metrics(pred, gt_t, masks)
    assert set(out) == {"head", "torso", "mouth"}  # the eyes have too few pixels
    for name in ("head", "mouth"):
        assert out[name]["psnr"] == pytest.approx(120.0)  # identical pixels: the cap
        assert out[name]["l1"] == 0.0
        assert out[name]["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert out["torso"]["psnr"] == pytest.approx(_psnr(ERR), abs=1e-4)
    assert out["torso"]["l1"] == pytest.approx(ERR / 255, abs=1e-6)
    assert out["torso"]["ssim"] < 0.99


def test_region_lpips_averages_the_spatial_map():
    def fake_lpips(pred, gt, spatial=False):
        d = (pred - gt).abs().mean(0) * torch.linspace(0, 2, pred.shape[2])
        return d if spatial else d.mean()

    gt = _gt()
    masks = {k: torch.from_numpy(v) for k, v in _masks().items()}
    out = region_metrics(_t(_with_torso_error(gt)), _t(gt), masks, fake_lpips)
    # Within the torso the weights 0..2 across the columns average to 1.
    assert out["torso"]["lpips"] == pytest.approx(ERR / 255, abs=1e-5)
    assert out["head"]["lpips"] == 0.0


# ----------------------------------------------------------------------------- metrics.py


def _write_set(d, frames: list[tuple[np.ndarray, np.ndarray]], regions: bool = True,
               frames_json: list | None = None) -> None:
    """<d>/{renders,gt,[regions]}/{k:05d}.png and frames.json from (render, gt) RGB pairs."""
    for sub in ("renders", "gt") + (("regions",) if regions else ()):
        (d / sub).mkdir(parents=True)
    labels = encode_regions(_masks())
    for k, (pred, gt) in enumerate(frames):
        cv2.imwrite(str(d / "renders" / f"{k:05d}.png"), pred[..., ::-1])
        cv2.imwrite(str(d / "gt" / f"{k:05d}.png"), gt[..., ::-1])
        if regions:
            cv2.imwrite(str(d / "regions" / f"{k:05d}.png"), labels)
    if frames_json is not None:
        (d / "frames.json").write_text(json.dumps(frames_json))


@pytest.fixture
def no_lpips(tmp_path, monkeypatch):
    """An empty torch cache: no LPIPS weights, whatever this machine holds."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))


def _novel_run(root):
    """A run with a test set (no regions, no frames.json), a novel set of 4 views (+15 right,
    -15 wrong in the torso) and an orbit video set without ground truth."""
    gt = _gt(1)
    wrong = (_with_torso_error(gt), gt)
    right = (gt, gt)
    _write_set(root / "test" / "ours_7", [right, wrong], regions=False)
    yaws = [15, -15, 15.0, -15]
    entries = [{"file": f"{k:05d}.png", "img_id": k, "yaw_deg": y} for k, y in enumerate(yaws)]
    _write_set(root / "novel" / "ours_7", [right, wrong, right, wrong], frames_json=entries)
    (root / "novel_view" / "ours_7" / "renders").mkdir(parents=True)
    return root


def test_cli_regions_and_yaw_groups(tmp_path, no_lpips, capsys):
    run = _novel_run(tmp_path / "run")
    assert metrics.main(["-m", str(run), "--quiet", "--device", "cpu"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert set(res) == {"test/ours_7", "novel/ours_7", "_lpips", "_regions_note"}
    assert res["_lpips"]["available"] is False
    assert res["_lpips"]["note"].startswith("LPIPS unavailable")
    assert "GH_NO_DOWNLOAD=1" in res["_lpips"]["note"]
    test = res["test/ours_7"]
    assert test["frames"] == 2 and "regions" not in test and "yaw" not in test
    assert test["psnr"] == pytest.approx((120 + _psnr(ERR, 1 / 3)) / 2, abs=1e-3)

    novel = res["novel/ours_7"]
    assert novel["frames"] == 4
    assert set(novel["regions"]) == {"head", "torso", "mouth"}
    assert novel["regions"]["head"] == pytest.approx(
        {"psnr": 120.0, "ssim": 1.0, "l1": 0.0, "frames": 4}, abs=1e-6)
    assert novel["regions"]["torso"]["psnr"] == pytest.approx((120 + _psnr(ERR)) / 2, abs=1e-3)
    assert list(novel["yaw"]) == ["-15", "+15"]
    plus, minus = novel["yaw"]["+15"], novel["yaw"]["-15"]
    assert plus["frames"] == minus["frames"] == 2
    assert plus["psnr"] == pytest.approx(120.0)
    assert minus["psnr"] == pytest.approx(_psnr(ERR, 1 / 3), abs=1e-3)
    assert minus["regions"]["torso"]["psnr"] == pytest.approx(_psnr(ERR), abs=1e-3)
    assert minus["regions"]["head"]["psnr"] == pytest.approx(120.0)
    assert plus["regions"]["torso"]["frames"] == 2

    views = json.loads((run / "per_view.json").read_text())["novel/ours_7"]
    assert views["00001.png"]["yaw_deg"] == -15 and views["00001.png"]["img_id"] == 1
    assert views["00001.png"]["regions"]["torso"]["l1"] == pytest.approx(ERR / 255, abs=1e-6)
    assert "eyes" not in views["00001.png"]["regions"]
    assert "yaw -15 (2 frames)" in capsys.readouterr().out

    # --sets restricts; the old layout of a set entry is kept.
    assert metrics.main(["-m", str(run), "--quiet", "--device", "cpu", "--sets", "test"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert set(res) == {"test/ours_7", "_lpips"}
    assert set(res["test/ours_7"]) == {"psnr", "ssim", "l1", "frames"}


def test_results_say_lpips_ran(tmp_path, monkeypatch):
    def fake_lpips(pred, gt, spatial=False):
        d = (pred - gt).abs().mean(0)
        return d if spatial else d.mean()

    monkeypatch.setattr(metrics, "make_lpips", lambda device, net: (fake_lpips, "LPIPS (vgg)"))
    run = _novel_run(tmp_path / "run")
    assert metrics.main(["-m", str(run), "--quiet", "--device", "cpu", "--sets", "test"]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["_lpips"] == {"available": True, "note": "LPIPS (vgg)"}
    assert set(res["test/ours_7"]) == {"psnr", "ssim", "l1", "lpips", "frames"}
    assert res["test/ours_7"]["lpips"] == pytest.approx(ERR / 255 / 3 / 2, abs=1e-5)


def test_find_sets_needs_renders_and_gt(tmp_path):
    run = _novel_run(tmp_path / "run")
    (run / "point_cloud" / "iteration_7").mkdir(parents=True)
    assert metrics.find_sets(run) == ["novel", "test"]
    assert set_metrics.yaw_key(15) == "+15" and set_metrics.yaw_key(-30.0) == "-30"
    assert set_metrics.yaw_key(7.5) == "+7.5"


@pytest.mark.parametrize(
    ("frames_json", "message"),
    [
        ("[{", "is not readable JSON"),
        ('{"file": "00000.png"}', "must be a list"),
        ('[{"file": "00000.png"}]', "has no entry for 00001.png"),
        ('[{"file": "00000.png"}, {"file": "00001.png"}, {"file": "00009.png"}]',
         "lists 00009.png, which renders/ lacks"),
        ('[{"file": "00000.png", "yaw_deg": "left"}, {"file": "00001.png"}]',
         "yaw_deg 'left', not a number"),
    ],
)
def test_bad_frames_json_is_named(tmp_path, no_lpips, frames_json, message):
    d = tmp_path / "run" / "novel" / "ours_1"
    _write_set(d, [(_gt(), _gt())] * 2)
    (d / "frames.json").write_text(frames_json)
    with pytest.raises(OptionError, match=message) as err:
        metrics.main(["-m", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    assert str(d / "frames.json") in str(err.value) and "Fix:" in str(err.value)


def test_missing_or_mis_sized_region_map_is_named(tmp_path, no_lpips):
    d = tmp_path / "run" / "test" / "ours_1"
    _write_set(d, [(_gt(), _gt())] * 2)
    (d / "regions" / "00001.png").unlink()
    with pytest.raises(OptionError, match=r"00001.png is missing .*Fix: render the set again"):
        metrics.main(["-m", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    cv2.imwrite(str(d / "regions" / "00001.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(OptionError, match="is 8x8, its render 48x48"):
        metrics.main(["-m", str(tmp_path / "run"), "--quiet", "--device", "cpu"])


def test_no_rendered_set(tmp_path, no_lpips):
    (tmp_path / "run" / "test" / "ours_1" / "renders").mkdir(parents=True)
    with pytest.raises(OptionError, match=r"no rendered set .*Fix: run render.py"):
        metrics.main(["-m", str(tmp_path / "run"), "--quiet", "--device", "cpu"])
    with pytest.raises(OptionError, match="is not a folder"):
        metrics.main(["-m", str(tmp_path / "nothing"), "--quiet", "--device", "cpu"])
