"""GPU checks (run on a CUDA machine; skipped elsewhere): the gsplat backend against the
torch backend on a trained model, and the fast training paths (CUDA graphs, TF32, bf16)
against the fp32 eager reference. The release fixture through gsplat is in test_model.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from scene.gaussian_model import FrameGaussians
from scene.rendering import render_view
from tools.make_synthetic import make_synthetic
from training.launch import train

pytestmark = pytest.mark.gpu
COMMON = ["--test_frames", "10", "--eval_frames", "10", "--warm_up", "300", "--quiet",
          "--densify_from_iter", "100", "--densification_interval", "100", "--seed", "0"]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a.float() - b.float()) ** 2).mean().clamp_min(1e-20)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(tmp_path_factory.mktemp("gpu") / "syn", frames=80, res=128, seed=4)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_runs") / "run"
    t = train(["-s", str(data), "-m", str(out), "--eval", "--iterations", "1000",
                     "--test_iterations", "1000", "--save_iterations", "1000", "--backend",
                     "gsplat", *COMMON])
    return t


def test_backends_agree_on_a_trained_model(trained):
    t = trained
    m, dev = t.model, t.device
    worst_psnr, worst_cos = 1e9, {}
    for cam in t.scene.test_cameras[:5]:
        with torch.no_grad():
            g = m.derive(*reversed(cam.tensors(dev)[2:]))  # fp32: the default precision
        outs = {}
        for backend in ("gsplat", "torch"):
            leaves = {k: getattr(g, k).detach().clone().requires_grad_(True)
                      for k in ("means", "opacities", "sh", "quats", "scales")}
            out = render_view(m, FrameGaussians(**leaves), cam, t.background, backend)
            torch.manual_seed(0)
            cot = torch.randn_like(out.image)
            (out.image * cot).sum().backward()
            outs[backend] = (out.image.detach(), {k: v.grad for k, v in leaves.items()})
        p = _psnr(outs["gsplat"][0], outs["torch"][0])
        worst_psnr = min(worst_psnr, p)
        for k in outs["gsplat"][1]:
            a, b = outs["gsplat"][1][k].flatten(), outs["torch"][1][k].flatten()
            c = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
            worst_cos[k] = min(worst_cos.get(k, 1.0), c)
    print(f"\ngsplat vs torch on a trained model ({m.num_gaussians} Gaussians): image PSNR "
          f">= {worst_psnr:.2f} dB; gradient cosine: "
          + ", ".join(f"{k} {v:.4f}" for k, v in worst_cos.items()))
    assert worst_psnr >= 40.0
    assert all(v >= 0.99 for v in worst_cos.values()), worst_cos


PATHS = {
    "reference": ["--precision", "fp32", "--fast_path", "off"],
    "fast fp32": ["--precision", "fp32", "--fast_path", "auto"],
    "fast mixed": ["--precision", "mixed", "--fast_path", "auto"],
}


# how far below the fp32 eager reference each path's two-seed mean may fall
MARGIN_DB = {"fast fp32": 0.5, "fast mixed": 1.0}


def test_fast_paths_train_as_well_as_the_reference(data, tmp_path):
    """A guard against a fast path that trains clearly worse: over two seeds, the mean test
    PSNR of the default fast path (CUDA graphs, fp32) is within 0.5 dB of the fp32 eager
    reference's, and that of the opt-in mixed precision within 1.0 dB. Short runs are noisy
    (the rasterizer's gradient sums are not deterministic; one seed spread over 15.5-17.5 dB
    across paths on 2026-11-25). Mixed precision's two-seed mean ran +0.16, -0.32 and
    -0.63 dB from the reference's in three runs of this test (2026-11-25): it is not shown to
    keep quality, which is why it is not the default. The graphs' arithmetic is checked by
    test_fast_path.py::test_cuda_graphs_match_the_eager_path."""
    res: dict[str, list[float]] = {k: [] for k in PATHS}
    common = list(COMMON)
    i = common.index("--seed")
    for seed in ("0", "1"):
        common[i + 1] = seed
        for name, flags in PATHS.items():
            out = tmp_path / f"{name.replace(' ', '_')}_{seed}"
            train(["-s", str(data), "-m", str(out), "--eval", "--iterations", "1000",
                         "--test_iterations", "1000", "--save_iterations", "1000",
                         "--backend", "gsplat", *flags, *common])
            res[name].append(json.loads((out / "eval_log.json").read_text())[-1]["psnr"])
    means = {k: float(np.mean(v)) for k, v in res.items()}
    print("\ntest PSNR after 1000 iterations (seeds 0, 1): " + "; ".join(
        f"{k} {[round(x, 3) for x in res[k]]} mean {means[k]:.3f} dB" for k in res))
    for k, margin in MARGIN_DB.items():
        assert means[k] >= means["reference"] - margin, k
