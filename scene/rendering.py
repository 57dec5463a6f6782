"""From a model and cameras to images: the model's Gaussians through the renderer boundary.

:func:`render_view` renders one frame's Gaussians from one camera (training, evaluation,
single frames); :func:`render_batch` renders several frames at once; :class:`RenderNetworks`
replays a trained model's per-frame networks from a CUDA graph.
"""

from __future__ import annotations

import torch

from gaussian_renderer import RenderOutput, rasterize
from scene.cameras import Camera
from scene.gaussian_model import FrameGaussians, GaussianHead
from utils.cuda_graph_utils import prepare_capture


def colour_viewpoint(model: GaussianHead, camera: Camera, device: torch.device | str
                     ) -> torch.Tensor:
    """The point [3] the colour's view directions start from: the camera's centre, or with
    ``colour_view="capture"`` the centre of the camera that captured the frame (for a dataset
    frame the same; for a novel view the source frame's camera, where its light was)."""
    if model.cfg.colour_view == "capture":
        return camera.capture(device)[:3, 3]
    return camera.campos(device)


def render_view(model: GaussianHead, g: FrameGaussians, camera: Camera,
                background: torch.Tensor, backend: str) -> RenderOutput:
    """Rasterize one frame's Gaussians ``g`` (from ``model``, whose conventions apply) as seen
    by ``camera``, onto ``background`` [3]."""
    viewmat, K, campos, _ = camera.tensors(g.means.device, model.centred_principal_point)
    if model.cfg.colour_view == "capture":
        campos = colour_viewpoint(model, camera, g.means.device)
    elif backend != "gsplat":
        campos = None  # the inverse of the view matrix, as the torch backend has computed it
    return rasterize(
        g.means, g.quats, g.scales, g.opacities, g.sh, viewmat, K, camera.width, camera.height,
        background, covars=g.covars, sh_degree=model.active_sh_degree, campos=campos,
        backend=backend, **model.raster_options)


@torch.no_grad()
def render_batch(model: GaussianHead, cameras: list[Camera], background: torch.Tensor,
                 backend: str, networks: RenderNetworks | None = None) -> torch.Tensor:
    """Render several frames (expression + camera each) of one model. -> [B, 3, H, W]

    With gsplat all frames go through the networks (``networks`` where given) and the
    rasterizer in one call each; the torch backend rasterizes them one by one.
    """
    device = model.xyz.device
    tens = [c.tensors(device, model.centred_principal_point) for c in cameras]
    exps = torch.stack([t[3] for t in tens])
    campos = torch.stack([colour_viewpoint(model, c, device) for c in cameras])
    g = networks(exps, campos) if networks is not None else model.frames(exps, campos)
    g = model.with_body(g, torch.stack([c.capture(device) for c in cameras]))
    out = rasterize(
        g.means, g.quats, g.scales, g.opacities, g.sh, torch.stack([t[0] for t in tens]),
        torch.stack([t[1] for t in tens]), cameras[0].width, cameras[0].height,
        background.expand(len(cameras), 3), covars=g.covars, sh_degree=model.active_sh_degree,
        campos=campos if backend == "gsplat" or model.cfg.colour_view == "capture" else None,
        backend=backend, with_depth=False,
        **model.raster_options)
    return out.image


class RenderNetworks:
    """The per-frame networks of a trained model for rendering: ``model.frames`` without
    gradients, replayed from a CUDA graph when ``graphs`` (one capture per batch size and
    Gaussian count). An eager render of one frame at 100k Gaussians spends most of its time
    launching the networks' kernels; a replay is one launch.

    The graph reads the parameters' memory as it was at capture: the model must not be
    trained, densified or reloaded while this object is in use. The returned tensors are the
    graph's static outputs, overwritten by the next call: rasterize them before calling again.
    Without ``graphs`` this is ``model.frames`` itself.
    """

    def __init__(self, model: GaussianHead, graphs: bool, warmup: int = 2):
        self.model = model
        self.graphs = graphs
        self.warmup = warmup
        self.captures = 0
        self._graphs: dict[tuple, tuple] = {}

    @torch.no_grad()
    def __call__(self, exps: torch.Tensor, campos: torch.Tensor) -> FrameGaussians:
        """exps [B, E], campos [B, 3] -> Gaussians of B frames (tensors with a leading B)."""
        m = self.model
        if not self.graphs:
            return m.frames(exps, campos)
        key = (exps.shape[0], m.num_gaussians, m.autocast_dtype, m.fused, m.xyz.data_ptr())
        if key not in self._graphs:
            self._graphs.clear()  # one live graph: a new batch size or model replaces it
            dev = m.xyz.device
            static_in = (exps.detach().clone(), campos.detach().clone())
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    m.frames(*static_in)
            torch.cuda.current_stream(dev).wait_stream(side)
            prepare_capture(dev)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = m.frames(*static_in)
            self._graphs[key] = (graph, static_in, out)
            self.captures += 1
        graph, (e, c), out = self._graphs[key]
        e.copy_(exps)
        c.copy_(campos)
        graph.replay()
        return out

    def frame(self, exp: torch.Tensor, campos: torch.Tensor) -> FrameGaussians:
        """One frame: exp [E], campos [3] -> its Gaussians (views of the batch of one)."""
        return self(exp[None], campos[None])[0]
