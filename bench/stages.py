"""The benchmark's per-stage split of one training iteration, with FLOP/byte floors."""

from __future__ import annotations

import torch

from bench.common import Timer
from scene.gaussian_model import FrameGaussians
from scene.rendering import render_view
from training.losses import TrainingLoss
from training.trainer import Trainer


def stage_split(t: Trainer, iteration: int, repeat: int = 20) -> dict:
    """Time each stage of one training iteration in isolation, with its FLOP/byte floor."""
    dev, m = t.device, t.model
    timer = Timer(dev)
    cam = t.scene.train_cameras[0]
    exp, campos = cam.exp.to(dev), cam.campos(dev)
    gt = t.scene.gt(cam, dev)
    n = m.num_gaussians
    out: dict[str, dict] = {}

    def deform_fb():
        with m.autocast():
            d = m.deform(m.xyz.detach(), exp)
        sum(x.float().sum() for x in d).backward()

    out["deformation MLP (fwd+bwd)"] = {"s": timer(deform_fb, repeat)}
    w = sum(p.numel() for p in m.deform.linear.parameters() if p.dim() == 2) + sum(
        h.weight.numel() for h in (m.deform.gaussian_warp, m.deform.gaussian_rotation,
                                    m.deform.gaussian_scaling))
    out["deformation MLP (fwd+bwd)"]["flop"] = 3 * 2 * n * w
    out["deformation MLP (fwd+bwd)"]["bytes"] = 2 * 4 * n * (m.deform.in_dim + 10)

    def decoders_fb():
        with torch.no_grad():
            means = m.xyz.detach()
        coords = m.derivation_coords(means, m.derivations)
        with m.autocast():
            o, _, sh = m.triplane(coords, torch.nn.functional.normalize(means - campos, dim=-1))
        (o.float().sum() + sh.float().sum()).backward()

    out["tri-plane + decoders (fwd+bwd)"] = {"s": timer(decoders_fb, repeat)}
    dec = sum(p.numel() for p in m.triplane.parameters() if p.dim() == 2)
    out["tri-plane + decoders (fwd+bwd)"]["flop"] = 3 * 2 * n * dec
    out["tri-plane + decoders (fwd+bwd)"]["bytes"] = 4 * n * (3 + 16 + 4 * 12 * 8 + 49)

    capture = cam.capture(dev)

    def networks_fb():
        m.zero_grad(set_to_none=True)  # a graphed forward refuses to accumulate gradients
        # as the training step runs it: the head's networks, the body and the shape penalties
        g, terms = t.frame_networks.frame(exp, campos, True, capture)
        (sum(getattr(g, k).sum() for k in ("means", "quats", "scales", "opacities", "sh"))
         + sum(terms.values(), torch.zeros((), device=dev))).backward()

    out["per-frame networks as trained (fwd+bwd)"] = {"s": timer(networks_fb, repeat)}

    with torch.no_grad():
        g = m.derive(exp, campos)
    leaves = {k: v.detach().requires_grad_(v.dtype.is_floating_point)
              for k, v in vars(g).items() if torch.is_tensor(v)}
    g2 = FrameGaussians(**{k: leaves.get(k) for k in ("means", "opacities", "sh", "quats",
                                                     "scales", "covars")})

    def raster_f():
        with torch.no_grad():
            render_view(m, g2, cam, t.background, t.backend)

    def raster_fb():
        r = render_view(m, g2, cam, t.background, t.backend)
        r.image.sum().backward()

    out["rasterization (fwd)"] = {"s": timer(raster_f, repeat)}
    out["rasterization (fwd+bwd)"] = {"s": timer(raster_fb, repeat)}
    hw = cam.width * cam.height
    out["rasterization (fwd+bwd)"]["bytes"] = 4 * (n * 59 + hw * 8)

    img = torch.rand_like(gt, requires_grad=True)
    gt_u8 = t.scene.images.images[cam.image_slot]
    # the alpha term, where the run has one: a rendered alpha and the frame's mask
    alpha_args = ((torch.rand_like(gt[:1], requires_grad=True),
                   t.scene.images.masks[cam.image_slot]) if t.use_alpha else (None, None))
    # the region term, where the run has one: the frame's eyes and mouth
    regions = t.scene.images.regions[cam.image_slot] if t.use_regions else None

    eager_loss = TrainingLoss(t.opt.lambda_dssim, t.opt.lambda_vgg, t.vgg, graphs=False,
                              lambda_alpha=t.opt.lambda_alpha if t.use_alpha else 0.0,
                              lambda_regions=t.opt.lambda_regions if t.use_regions else 0.0)

    def loss_fb():
        eager_loss(img, gt_u8, *alpha_args, regions)[0].backward()

    out["loss (fwd+bwd)"] = {"s": timer(loss_fb, repeat)}
    out["loss (fwd+bwd)"]["bytes"] = 4 * hw * 3 * 12

    def loss_trained_fb():
        t.loss_fn(img, gt_u8, *alpha_args, regions)[0].backward()

    out["loss as trained (fwd+bwd)"] = {"s": timer(loss_trained_fb, repeat)}

    def opt_step():
        for p in m.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for opt in t.optimizers:
            opt.step()

    n_params = sum(p.numel() for p in m.parameters())
    saved = {k: v.detach().clone() for k, v in m.state_dict().items()}
    out["optimizer step"] = {"s": timer(opt_step, repeat), "bytes": 4 * n_params * 7}
    m.load_state_dict(saved)

    out["data (frame to device)"] = {"s": timer(lambda: t.scene.gt(cam, dev), repeat),
                                     "bytes": hw * 3 * 5}
    return out


def floors(stages: dict, peak_flops: float, bandwidth: float) -> None:
    for v in stages.values():
        f = v.get("flop", 0) / peak_flops if peak_flops else 0.0
        b = v.get("bytes", 0) / bandwidth if bandwidth else 0.0
        v["floor_s"] = max(f, b)


def measure_ceilings(device: torch.device) -> tuple[float, float]:
    """Measured matrix-product rate (TF32) and copy bandwidth of the device."""
    timer = Timer(device)
    if device.type == "cuda":
        a = torch.randn(8192, 8192, device=device)
        b = torch.randn(8192, 8192, device=device)
        prev = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        s = timer(lambda: a @ b, 10)
        torch.backends.cuda.matmul.allow_tf32 = prev
        flops = 2 * 8192**3 / s
        x = torch.empty(2**28, device=device)
        s = timer(lambda: x.clone(), 10)
        bw = 2 * x.numel() * 4 / s
        return flops, bw
    a = torch.randn(1024, 1024)
    s = timer(lambda: a @ a, 5)
    x = torch.empty(2**25)
    return 2 * 1024**3 / s, 2 * x.numel() * 4 / timer(lambda: x.clone(), 5)


