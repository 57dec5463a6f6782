"""The eye and mouth term of the loss (--lambda_regions): its arithmetic, its gradient only
inside the regions, and a training run that loads the region maps (or says it cannot)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from tests.helpers import write_tiny_dataset
from training.losses import TrainingLoss
from utils.loss_utils import l1_loss, ssim
from utils.regions import encode_regions


def test_region_term_is_the_l1_inside_the_regions():
    torch.manual_seed(0)
    img = torch.rand(3, 16, 20, requires_grad=True)
    gt_u8 = (torch.rand(16, 20, 3) * 255).to(torch.uint8)
    inside = torch.zeros(16, 20, dtype=torch.uint8)
    inside[4:8, 5:15] = 1
    total, terms = TrainingLoss(0.2, 0.0, None, graphs=False, lambda_regions=2.0)(
        img, gt_u8, None, None, inside)
    gt = gt_u8.permute(2, 0, 1).float() / 255
    region = (img - gt)[:, 4:8, 5:15].abs().mean()
    torch.testing.assert_close(terms["regions"], region.detach())
    torch.testing.assert_close(total, 0.8 * l1_loss(img, gt) + 0.2 * (1 - ssim(img, gt))
                               + 2.0 * region)
    # with the alpha term too, the arguments keep their order
    alpha = torch.rand(1, 16, 20, requires_grad=True)
    mask_u8 = (torch.rand(16, 20) * 255).to(torch.uint8)
    _, both = TrainingLoss(0.2, 0.0, None, graphs=False, lambda_alpha=0.3, lambda_regions=2.0)(
        img, gt_u8, alpha, mask_u8, inside)
    assert set(both) == {"l1", "ssim", "alpha", "regions", "total"}
    torch.testing.assert_close(both["regions"], region.detach())
    # the term's gradient reaches only the region's pixels
    with_r = TrainingLoss(0.2, 0.0, None, graphs=False, lambda_regions=1.0)
    without = TrainingLoss(0.2, 0.0, None, graphs=False)
    (g1,) = torch.autograd.grad(with_r(img, gt_u8, None, None, inside)[0], img)
    (g0,) = torch.autograd.grad(without(img, gt_u8)[0], img)
    g = g1 - g0
    assert g[:, 4:8, 5:15].abs().min() > 0
    g[:, 4:8, 5:15] = 0
    assert g.abs().max() < 1e-9
    # a frame without eyes or mouth adds nothing
    _, none = with_r(img, gt_u8, None, None, torch.zeros_like(inside))
    assert none["regions"] == 0


def _with_regions(data, n):
    (data / "regions").mkdir()
    for i in range(n):
        eyes = np.zeros((24, 24), bool)
        eyes[8:10, 6:18] = True
        mouth = np.zeros((24, 24), bool)
        mouth[15:17, 9:15] = True
        cv2.imwrite(str(data / "regions" / f"{i}.png"), encode_regions({"eyes": eyes,
                                                                        "mouth": mouth}))


def test_training_loads_the_regions_and_logs_the_term(tmp_path):
    import train

    data = write_tiny_dataset(tmp_path / "d", n=8, size=24)
    _with_regions(data, 8)
    common = ["--eval", "--iterations", "6", "--test_frames", "2", "--init_points", "300",
              "--body", "false", "--device", "cpu", "--quiet", "--test_iterations", "6",
              "--save_iterations", "6"]
    trainer = train.train(["-s", str(data), "-m", str(tmp_path / "run"), "--lambda_regions",
                           "1.0", *common])
    assert trainer.use_regions and "regions" in trainer.loss_fn.names
    r = trainer.scene.images.regions
    assert r.shape == (8, 24, 24) and r.dtype == torch.uint8
    assert int(r[0].sum()) == 2 * 12 + 2 * 6
    # without region maps: the term is off, with one line in the log
    bare = write_tiny_dataset(tmp_path / "bare", n=8, size=24)
    trainer = train.train(["-s", str(bare), "-m", str(tmp_path / "run2"), "--lambda_regions",
                           "1.0", *common])
    assert not trainer.use_regions and "regions" not in trainer.loss_fn.names
