"""Smooth depth in views the camera never saw: a prior on the head's 3D shape.

A monocular clip shows the head from a few tens of degrees of yaw. Within that range many
arrangements of Gaussians give the same images; most of them fall apart from a camera turned
further: the outline of the head made of discs at the depth of its centre (from the front they
draw the outline; from the side a flat rim), cheeks made of layers that leave holes between
them, the inside of the mouth seen through the cheek. Each of these shows, in a turned view, as
depth that jumps from pixel to pixel inside the head's silhouette, where a real head's surface
is smooth.

:class:`VirtualViews` renders the frame's head Gaussians (not the body: its depth is a fitted
proxy, and the chin over the neck is a true edge) from the training camera orbited about the
head's vertical axis by a random yaw, at a reduced size, and penalises the expected depth's
second differences along rows and columns where the pixels are covered (a robust L1 in head
radii, weighted by the pixels' alpha): a slanted plane costs nothing, a step or a spike does.
Nothing is known of the colours in that view, so nothing else is asked of it. The idea is that
of RegNeRF's depth smoothness in unobserved views (Niemeyer et al., CVPR 2022), here for
Gaussians; the implementation is our own.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from gaussian_renderer import RenderOutput
from scene.cameras import Camera
from scene.gaussian_model import FrameGaussians
from scene.rendering import render_view
from utils.errors import OptionError

CHARBONNIER_EPS = 1e-3  # in head radii: below this a depth kink costs quadratically


def depth_roughness(depth: torch.Tensor, alpha: torch.Tensor, unit: float,
                    min_alpha: float = 0.5) -> torch.Tensor:
    """Mean robust size of the second differences of depth [1, H, W] (expected depth) along
    rows and columns, in units of ``unit``, over the runs of three pixels that all have alpha
    [1, H, W] above ``min_alpha`` (weighted by the product of their alphas, which takes no
    gradient: the term does not make the head thinner to escape it). A plane at any slant
    costs nothing; steps, spikes and holes in the surface do. 0 where no run qualifies."""
    d = depth[0] / unit
    a = alpha[0].detach()
    a = torch.where(a > min_alpha, a, torch.zeros_like(a))
    total = depth.new_zeros(())
    weight = depth.new_zeros(())
    for dd, w in ((d[:, 2:] - 2 * d[:, 1:-1] + d[:, :-2], a[:, 2:] * a[:, 1:-1] * a[:, :-2]),
                  (d[2:, :] - 2 * d[1:-1, :] + d[:-2, :], a[2:, :] * a[1:-1, :] * a[:-2, :])):
        step = torch.sqrt(dd * dd + CHARBONNIER_EPS ** 2) - CHARBONNIER_EPS
        total = total + (w * step).sum()
        weight = weight + w.sum()
    return total / weight.clamp_min(1.0)


class VirtualViews:
    """Random turned cameras for a training frame and the depth-smoothness term of a render
    from them.

    ``max_yaw``: degrees; the yaw is drawn uniformly from [max_yaw / 3, max_yaw] with a random
    sign (the capture direction itself is already constrained by the images). ``scale``: the
    size of the virtual image as a fraction of the training image's. ``centre`` [3] and
    ``radius``: the head's (the orbit's pivot and the depth unit)."""

    def __init__(self, max_yaw: float, scale: float, centre: np.ndarray, radius: float,
                 seed: int = 0):
        if not (0 < max_yaw < 90):
            raise ValueError(f"the virtual views' largest yaw must be in (0, 90) degrees, got "
                             f"{max_yaw}")
        if not (0 < scale <= 1):
            raise ValueError(f"the virtual views' scale must be in (0, 1], got {scale}")
        self.max_yaw, self.scale = float(max_yaw), float(scale)
        self.centre = np.asarray(centre, dtype=np.float64).reshape(3)
        self.radius = float(radius)
        self.rng = np.random.default_rng(seed + 7919)

    @classmethod
    def from_options(cls, opt, cfg, seed: int) -> VirtualViews | None:
        """From the training options (``lambda_virtual_depth``, ``virtual_yaw``,
        ``virtual_scale``, ``virtual_every``) and the model's config (its head centre and
        radius); None where the term is off. Bad values raise :class:`OptionError`."""
        if opt.lambda_virtual_depth <= 0:
            return None
        if opt.virtual_every < 1:
            raise OptionError(f"--virtual_every must be >= 1, got {opt.virtual_every}.")
        try:
            return cls(opt.virtual_yaw, opt.virtual_scale,
                       np.asarray(cfg.center, dtype=np.float64), cfg.radius, seed)
        except ValueError as e:
            raise OptionError(f"{e}. Fix: pass --virtual_yaw in (0, 90) and --virtual_scale in "
                              "(0, 1].") from None

    def yaw(self) -> float:
        """A random yaw in degrees."""
        lo = self.max_yaw / 3
        return float(self.rng.choice((-1.0, 1.0)) * self.rng.uniform(lo, self.max_yaw))

    def camera(self, cam: Camera, yaw_deg: float | None = None) -> Camera:
        """``cam`` orbited by ``yaw_deg`` (default: random) about the vertical axis through
        the head's centre, at the reduced size; the capture camera (where the colour's light
        and the body are) stays ``cam``'s."""
        yaw = math.radians(self.yaw() if yaw_deg is None else yaw_deg)
        c, s = math.cos(yaw), math.sin(yaw)
        turn = np.eye(4)
        turn[:3, :3] = [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
        turn[:3, 3] = self.centre - turn[:3, :3] @ self.centre
        w = max(8, round(cam.width * self.scale))
        h = max(8, round(cam.height * self.scale))
        return Camera(intr=cam.intr.scaled(w, h), c2w_gl=turn @ cam.c2w_gl, exp=cam.exp,
                      capture_c2w=cam.c2w_gl if cam.capture_c2w is None else cam.capture_c2w)

    def loss(self, out: RenderOutput) -> torch.Tensor:
        """The depth roughness of a virtual view's render (head radii)."""
        return depth_roughness(out.depth, out.alpha, self.radius)

    def term(self, model, g: FrameGaussians, n_head: int, cam: Camera,
             background: torch.Tensor, backend: str) -> torch.Tensor:
        """The depth roughness of the frame's head Gaussians (the first ``n_head`` rows of
        ``g``, the frame's joined Gaussians of ``model``) seen from a turned ``cam``."""
        head = FrameGaussians(**{k: None if v is None else v[:n_head] for k, v in vars(g).items()})
        return self.loss(render_view(model, head, self.camera(cam), background, backend))
