"""The training step's static-shape parts as CUDA graphs.

An eager training iteration launches about 650 small kernels, and on an H100 the host needs
longer to launch them than the GPU needs to run them. Two parts of the iteration have shapes
that stay fixed for many iterations, so their forward and backward passes are captured once
(``torch.cuda.make_graphed_callables``) and then replayed with a single launch each:

- :class:`FrameNetworks`: deformation network, derivation rotations, tri-plane sampling and
  decoders, i.e. :meth:`GaussianHead.frame`. The number of Gaussians changes at every
  densification, so the per-Gaussian tensors are padded up to a multiple of ``bucket`` rows
  (padding rows are unit quaternions at the head's centre; their outputs are dropped, so they
  contribute nothing to any gradient). The graph is captured again only when the count grows
  past the capacity or shrinks by two buckets or more, when the deformation network is
  switched on, or when the precision (autocast dtype) changes.
- :class:`TrainingLoss`: L1, SSIM and the VGG term for one frame (fixed image size).

The rasterizer is not captured: gsplat sizes its tile lists on the host.

Without graphs (``--fast_path off``, or on the CPU) :class:`FrameNetworks` is plain
``model.derive`` (no padding) and :class:`TrainingLoss` the eager loss. With ``pad=True`` the
padded code runs eagerly, so the CPU tests check the graphed path's arithmetic against
``model.derive``; ``tests/cuda_graph_emulation.py`` reproduces the graphs' buffer semantics on
the CPU for whole training runs.

A graphed call returns views of the graph's static buffers, and the backward hands the
parameters views of static gradient buffers: each forward must be followed by its backward
and the gradients set to None (``zero_grad(set_to_none=True)``) before the next forward, as
:meth:`Trainer.step` does. :class:`FrameNetworks` refuses a call that would accumulate.
"""

from __future__ import annotations

import gc

import torch
from torch import nn

from scene.gaussian_model import FrameGaussians, GaussianHead
from utils.loss_utils import l1_loss, ssim

INPUTS = ("xyz", "rotation", "scaling", "derivations")  # + expression, camera position
OUTPUTS = ("means", "quats", "scales", "opacities", "sh")


class _FrameModule(nn.Module):
    """Padded per-Gaussian tensors + expression + camera -> the frame's Gaussian tensors.

    Its submodules are the model's networks; the model itself is held outside the module tree.
    """

    def __init__(self, model: GaussianHead, deform: bool):
        super().__init__()
        self.deform = model.deform
        self.triplane = model.triplane
        object.__setattr__(self, "_model", model)
        self.use_deform = deform

    def forward(self, xyz, rotation, scaling, derivations, exp, campos):
        g = self._model.frame(xyz, rotation, scaling, derivations,
                              exp if self.use_deform else None, campos)
        return tuple(getattr(g, k) for k in OUTPUTS)


def _prepare_capture(device: torch.device) -> None:
    """Make a new capture safe after an earlier graph was dropped.

    1. Destroy dropped graphs now (a graphed callable sits in a reference cycle, and torch no
       longer collects garbage when a capture starts): a graph destroyed by the garbage
       collector during the next capture releases its memory and cuBLAS state mid-capture.
    2. Give the stream that ``torch.cuda.graph`` captures on (shared by every capture) its
       cuBLAS / cuBLASLt workspaces outside any capture. Otherwise the first capture allocates
       them in its graph's private pool and torch keeps using that pointer for the stream:
       once that graph is freed, the next capture's matrix products use freed memory
       (CUBLAS_STATUS_EXECUTION_FAILED on an H100, torch 2.11; pytorch/pytorch#193402).
       Workspaces made here live in the ordinary allocator.
    """
    gc.collect()
    torch.cuda.synchronize(device)
    if torch.cuda.graph.default_capture_stream is None:
        torch.cuda.graph.default_capture_stream = torch.cuda.Stream(device)
    stream = torch.cuda.graph.default_capture_stream
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for dtype in (torch.float32, torch.bfloat16):
            a = torch.ones(64, 64, device=device, dtype=dtype)
            b = torch.ones(64, device=device, dtype=dtype)
            a @ a
            torch.addmm(b, a, a)
            torch._addmm_activation(b, a, a)
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)


def _functional(module: _FrameModule, names: list[str]):
    """``module`` as a function of its inputs and then its parameters (in ``names`` order).

    The graph is captured with fresh leaves that alias the parameters' memory, so no autograd
    node created outside the capture (an earlier iteration's graph still alive) takes part in
    it; at replay the real parameters are passed, their memory is the captured one, and their
    gradients come out of the graph's backward."""

    def fn(*args):
        params = dict(zip(names, args[len(INPUTS) + 2:]))
        return torch.func.functional_call(module, params, args[:len(INPUTS) + 2])

    return fn


class FrameNetworks:
    """``model.derive`` for training, optionally replayed from CUDA graphs (``graphs``);
    ``pad`` (default: as ``graphs``) pads the per-Gaussian tensors to ``bucket`` rows."""

    def __init__(self, model: GaussianHead, graphs: bool, bucket: int = 8192,
                 warmup: int = 3, pad: bool | None = None):
        if model.cfg.semantics != "fixed":
            raise ValueError("the graphed training step needs the fixed semantics")
        self.model = model
        self.graphs = graphs
        self.pad = graphs if pad is None else pad
        if graphs and not self.pad:
            raise ValueError("CUDA graphs need the padded tensors (pad=True)")
        self.bucket = bucket
        self.warmup = warmup
        self.captures = 0  # how many times a graph was captured (for the logs and tests)
        self._fn = None
        self._key: tuple | None = None
        self._pad: dict[str, torch.Tensor] = {}
        self._params: list[nn.Parameter] = []

    def capacity_for(self, n: int) -> int:
        return max(self.bucket, -(-n // self.bucket) * self.bucket)

    def _prepare(self, n: int, deform: bool, exp: torch.Tensor, campos: torch.Tensor) -> None:
        m = self.model
        cap = self._key[0] if self._key else 0
        # keep the bucket while the count stays inside it or shrinks by less than two buckets
        if self._fn is not None and self._key[1:] == (deform, m.autocast_dtype) and (
                n <= cap < n + 2 * self.bucket):
            return
        cap = self.capacity_for(n)
        dev = m.xyz.device
        rows = cap  # padding rows never exceed the capacity
        unit = torch.zeros(rows, 4, device=dev)
        unit[:, 0] = 1.0
        self._pad = {
            "xyz": m.center.expand(rows, 3).clone(),
            "rotation": unit,
            "scaling": torch.zeros(rows, 3, device=dev),
            "derivations": unit[:, None].expand(rows, m.cfg.num_derivations, 4).clone(),
        }
        module = _FrameModule(m, deform)
        named = list(module.named_parameters())
        self._params = [p for _, p in named]
        fn = _functional(module, [name for name, _ in named])
        self._fn = None  # drop the previous graph (and its memory) before a new capture
        if self.graphs:
            sample = [t.detach().clone().requires_grad_(True)
                      for t in self._padded(n, cap, detach=True)]
            sample += [exp.detach().clone(), campos.detach().clone()]
            sample += [p.detach().requires_grad_(p.requires_grad) for p in self._params]
            _prepare_capture(dev)
            fn = torch.cuda.make_graphed_callables(
                fn, tuple(sample), num_warmup_iters=self.warmup, allow_unused_input=True)
            self.captures += 1
        self._fn = fn
        self._key = (cap, deform, m.autocast_dtype)

    def _padded(self, n: int, cap: int, detach: bool = False) -> list[torch.Tensor]:
        out = []
        for name in INPUTS:
            p = getattr(self.model, name)
            p = p.detach() if detach else p
            out.append(torch.cat([p, self._pad[name][: cap - n]]) if cap > n else p)
        return out

    def __call__(self, exp: torch.Tensor, campos: torch.Tensor, deform: bool) -> FrameGaussians:
        if not self.pad:
            return self.model.derive(exp, campos, deform=deform)
        if self.graphs and any(p.grad is not None for p in self.model.parameters()):
            raise RuntimeError(
                "a CUDA-graphed forward while the model still holds gradients: the graph's "
                "backward would overwrite them instead of adding to them. Set the gradients "
                "to None (zero_grad(set_to_none=True)) after each backward, or train with "
                "--fast_path off.")
        n = self.model.num_gaussians
        self._prepare(n, deform, exp, campos)
        cap = self._key[0]
        outs = self._fn(*self._padded(n, cap), exp, campos, *self._params)
        return FrameGaussians(**{k: v[:n] for k, v in zip(OUTPUTS, outs)})


class _LossModule(nn.Module):
    """(rendered image [3, H, W], ground truth uint8 [H, W, 3]) -> (weighted total, the
    terms [l1, 1 - ssim(, vgg)] detached)."""

    def __init__(self, weights: dict[str, float], vgg: nn.Module | None):
        super().__init__()
        self.weights = weights
        object.__setattr__(self, "_vgg", vgg)  # frozen weights: not parameters of the graph

    def forward(self, image: torch.Tensor, gt_u8: torch.Tensor):
        gt = gt_u8.permute(2, 0, 1).float() / 255.0
        terms = [l1_loss(image, gt), 1.0 - ssim(image, gt)]
        if self._vgg is not None:
            terms.append(self._vgg(image, gt))
        total = sum(w * t for w, t in zip(self.weights.values(), terms))
        return total, torch.stack(terms).detach()


class TrainingLoss:
    """The photometric training loss, optionally replayed from a CUDA graph (one per image
    size)."""

    def __init__(self, lambda_dssim: float, lambda_vgg: float, vgg: nn.Module | None,
                 graphs: bool, warmup: int = 3):
        self.names = ["l1", "ssim"] + (["vgg"] if vgg is not None else [])
        weights = {"l1": 1.0 - lambda_dssim, "ssim": lambda_dssim}
        if vgg is not None:
            weights["vgg"] = lambda_vgg
        self.module = _LossModule(weights, vgg)
        self.graphs = graphs
        self.warmup = warmup
        self._fns: dict[tuple, object] = {}

    def __call__(self, image: torch.Tensor, gt_u8: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.graphs:
            key = tuple(image.shape)
            if key not in self._fns:
                _prepare_capture(image.device)
                sample = (image.detach().clone().requires_grad_(True), gt_u8.clone())
                self._fns[key] = torch.cuda.make_graphed_callables(
                    _LossModule(self.module.weights, self.module._vgg), sample,
                    num_warmup_iters=self.warmup)
            total, terms = self._fns[key](image, gt_u8)
        else:
            total, terms = self.module(image, gt_u8)
        out = dict(zip(self.names, terms.unbind()))
        out["total"] = total
        return total, out


class RenderNetworks:
    """The per-frame networks of a trained model for rendering: ``model.derive_batch`` without
    gradients, replayed from a CUDA graph when ``graphs`` (one capture per batch size and
    Gaussian count). An eager render of one frame at 100k Gaussians spends most of its time
    launching the networks' kernels; a replay is one launch.

    The graph reads the parameters' memory as it was at capture: the model must not be
    trained, densified or reloaded while this object is in use. The returned tensors are the
    graph's static outputs, overwritten by the next call: rasterize them before calling again.
    Without ``graphs`` this is ``model.derive_batch`` itself (the CPU, ``--fast_path off``).
    """

    def __init__(self, model: GaussianHead, graphs: bool, warmup: int = 2):
        if graphs and model.cfg.semantics != "fixed":
            raise ValueError("graphed rendering needs the fixed semantics")
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
            return m.derive_batch(exps, campos)
        key = (exps.shape[0], m.num_gaussians, m.autocast_dtype, m.fused,
               m.xyz.data_ptr())
        if key not in self._graphs:
            self._graphs.clear()  # one live graph: a new batch size or model replaces it
            dev = m.xyz.device
            static_in = (exps.detach().clone(), campos.detach().clone())
            side = torch.cuda.Stream(dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    m.derive_batch(*static_in)
            torch.cuda.current_stream(dev).wait_stream(side)
            _prepare_capture(dev)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = m.derive_batch(*static_in)
            self._graphs[key] = (graph, static_in, out)
            self.captures += 1
        graph, (e, c), out = self._graphs[key]
        e.copy_(exps)
        c.copy_(campos)
        graph.replay()
        return out

    def frame(self, exp: torch.Tensor, campos: torch.Tensor) -> FrameGaussians:
        """One frame: exp [E], campos [3] -> its Gaussians (views of the batch of one)."""
        g = self(exp[None], campos[None])
        return FrameGaussians(**{k: (None if v is None else v[0]) for k, v in vars(g).items()})
