"""The training step's static-shape parts as CUDA graphs.

An eager training iteration launches about 650 small kernels, and on an H100 the host needs
longer to launch them than the GPU needs to run them. Two parts of the iteration have shapes
that stay fixed for many iterations, so their forward and backward passes are captured once
(``torch.cuda.make_graphed_callables``) and then replayed with a single launch each:

- :class:`FrameNetworks`: deformation network, derivation rotations, tri-plane sampling and
  decoders, i.e. :meth:`GaussianHead.frames` for one frame. The number of Gaussians changes at every
  densification, so the per-Gaussian tensors are padded up to a multiple of ``bucket`` rows
  (padding rows are unit quaternions at the head's centre; their outputs are dropped, so they
  contribute nothing to any gradient). The graph is captured again only when the count grows
  past the capacity or shrinks by two buckets or more, when the deformation network is
  switched on, or when the precision (autocast dtype) changes.
- the loss (:class:`training.losses.TrainingLoss`): L1, SSIM and the VGG term for one frame.

The rasterizer is not captured: gsplat sizes its tile lists on the host.

Without graphs (``--fast_path off``, or on the CPU) :class:`FrameNetworks` is plain
``model.derive`` (no padding) and :class:`TrainingLoss` the eager loss. With ``pad=True`` the
padded code runs eagerly, so the CPU tests check the graphed path's arithmetic against
``model.derive``; ``tests/cuda_graph_emulation.py`` reproduces the graphs' buffer behaviour on
the CPU for whole training runs.

A graphed call returns views of the graph's static buffers, and the backward hands the
parameters views of static gradient buffers: each forward must be followed by its backward
and the gradients set to None (``zero_grad(set_to_none=True)``) before the next forward, as
:meth:`Trainer.step` does. :class:`FrameNetworks` refuses a call that would accumulate.
"""

from __future__ import annotations

import torch
from torch import nn

from scene.gaussian_model import FrameGaussians, GaussianHead
from utils.cuda_graph_utils import prepare_capture

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
        tensors = {"xyz": xyz, "rotation": rotation, "scaling": scaling,
                   "derivations": derivations}
        g = self._model.frames(exp[None] if self.use_deform else None, campos[None], tensors)
        return tuple(getattr(g, k)[0] for k in OUTPUTS)


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
            prepare_capture(dev)
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
            return self.model.derive(exp if deform else None, campos)
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
