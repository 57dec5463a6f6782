"""The training step's static-shape parts as CUDA graphs.

An eager training iteration launches about 650 small kernels, and on an H100 the host needs
longer to launch them than the GPU needs to run them. Two parts of the iteration have shapes
that stay fixed for many iterations, so their forward and backward passes are captured once
(``torch.cuda.make_graphed_callables``) and then replayed with a single launch each:

- :class:`FrameNetworks`: deformation network, derivation rotations, tri-plane sampling and
  decoders, i.e. :meth:`GaussianHead.frames` for one frame; in training
  (:meth:`FrameNetworks.frame`) also the body's Gaussians for the frame
  (:meth:`scene.body_model.BodyGaussians.frames`) and the shape penalties of the canonical
  Gaussians (:class:`training.regularizers.ShapeTerms`), which run eagerly would launch some
  1200 small operations per step, more host time than the GPU needs for the whole step. The
  numbers of Gaussians change at every densification, so the head's and the body's per-Gaussian
  tensors are each padded up to a multiple of ``bucket`` rows (padding rows are unit quaternions
  at the head's centre, or at the middle of the body's front; their outputs are dropped and the
  penalties weigh them 0, so they contribute nothing to any gradient). The graph is
  captured again only when a count grows past its capacity or shrinks by two buckets or more,
  when the deformation network is switched on, or when the precision (autocast dtype) changes.
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
from training.regularizers import ShapeTerms
from utils.cuda_graph_utils import prepare_capture

INPUTS = ("xyz", "rotation", "scaling", "derivations")  # + expression, camera position
OUTPUTS = ("means", "quats", "scales", "opacities", "sh")
# the body's per-Gaussian parameters, padded like the head's and passed in their place
BODY_INPUTS = ("xyz", "rotation", "scaling", "color", "opacity")


class _FrameModule(nn.Module):
    """Padded per-Gaussian tensors + expression + camera -> the frame's Gaussian tensors; with
    ``rest`` also the capture camera's pose and the rows' weights as inputs, and (with a
    ``body``) the body's Gaussian tensors and (with ``shape``) the weighted shape penalties as
    outputs.

    Its submodules are the model's networks and the body, whose per-Gaussian parameters are
    replaced by their padded copies at every call; the model itself is held outside the module
    tree.
    """

    def __init__(self, model: GaussianHead, deform: bool, rest: bool = False,
                 body: bool = False, shape: ShapeTerms | None = None):
        super().__init__()
        self.deform = model.deform
        self.triplane = model.triplane
        if body:
            self.body = model.body
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_shape", shape)
        self.use_deform = deform
        self.rest = rest

    def forward(self, xyz, rotation, scaling, derivations, exp, campos, *rest):
        tensors = {"xyz": xyz, "rotation": rotation, "scaling": scaling,
                   "derivations": derivations}
        g = self._model.frames(exp[None] if self.use_deform else None, campos[None], tensors)
        out = tuple(getattr(g, k)[0] for k in OUTPUTS)
        if not self.rest:
            return out
        capture, head_w, body_w = rest
        body = getattr(self, "body", None)
        if body is not None:
            b = body.frames(capture[None])
            out += tuple(b[k][0] for k in OUTPUTS)
        if self._shape is not None:
            terms = self._shape.weighted(tensors, body, campos, head_w, body_w,
                                         means=g.means[0] if self.use_deform else None)
            out += (torch.stack(list(terms.values())),)
        return out


def _functional(module: _FrameModule, names: list[str]):
    """``module`` as a function of its inputs (with the body's padded per-Gaussian tensors
    after them) and then its parameters (in ``names`` order).

    The graph is captured with fresh leaves that alias the parameters' memory, so no autograd
    node created outside the capture (an earlier iteration's graph still alive) takes part in
    it; at replay the real parameters are passed, their memory is the captured one, and their
    gradients come out of the graph's backward."""
    n_in = len(INPUTS) + 2 + (3 if module.rest else 0)
    n_body = len(BODY_INPUTS) if hasattr(module, "body") else 0

    def fn(*args):
        params = dict(zip(names, args[n_in + n_body:]))
        params |= {f"body.{k}": v for k, v in zip(BODY_INPUTS, args[n_in:n_in + n_body])}
        return torch.func.functional_call(module, params, args[:n_in])

    return fn


class FrameNetworks:
    """``model.derive`` for training, optionally replayed from CUDA graphs (``graphs``);
    ``pad`` (default: as ``graphs``) pads the per-Gaussian tensors to ``bucket`` rows.

    :meth:`frame` is the whole per-frame part of a training step: the head's Gaussians joined
    by the body's, and the weighted shape penalties of ``shape`` (one graph for all of it)."""

    def __init__(self, model: GaussianHead, graphs: bool, bucket: int = 8192,
                 warmup: int = 3, pad: bool | None = None, shape: ShapeTerms | None = None):
        self.model = model
        self.graphs = graphs
        self.pad = graphs if pad is None else pad
        if graphs and not self.pad:
            raise ValueError("CUDA graphs need the padded tensors (pad=True)")
        self.bucket = bucket
        self.warmup = warmup
        self.shape = shape if shape is not None and shape.active else None
        self.captures = 0  # how many times a graph was captured (for the logs and tests)
        self._fn = None
        self._key: tuple | None = None
        self._pad: dict[str, torch.Tensor] = {}
        self._body_pad: dict[str, torch.Tensor] = {}
        self._params: list[nn.Parameter] = []
        self._weights: dict[tuple, torch.Tensor] = {}

    def capacity_for(self, n: int) -> int:
        return max(self.bucket, -(-n // self.bucket) * self.bucket)

    def _keep(self, n: int, cap: int) -> bool:
        """Whether a capacity still fits n rows: the count stays inside it or has shrunk by
        less than two buckets."""
        return n <= cap < n + 2 * self.bucket

    def _prepare(self, n: int, m: int | None, deform: bool, exp: torch.Tensor,
                 campos: torch.Tensor, capture: torch.Tensor | None) -> None:
        """Build (and with graphs capture) the function for n head rows and, with a capture
        camera, m body rows (None: no body)."""
        model = self.model
        rest = capture is not None
        if self._fn is not None and self._key[2:] == (deform, model.autocast_dtype, rest) and (
                self._keep(n, self._key[0])) and (m is None) == (self._key[1] is None) and (
                m is None or self._keep(m, self._key[1])):
            return
        cap = self.capacity_for(n)
        body_cap = None if m is None else self.capacity_for(m)
        dev = model.xyz.device
        unit = torch.zeros(cap, 4, device=dev)
        unit[:, 0] = 1.0
        self._pad = {
            "xyz": model.center.expand(cap, 3).clone(),
            "rotation": unit,
            "scaling": torch.zeros(cap, 3, device=dev),
            "derivations": unit[:, None].expand(cap, model.cfg.num_derivations, 4).clone(),
        }
        if m is not None:
            b_unit = torch.zeros(body_cap, 4, device=dev)
            b_unit[:, 0] = 1.0
            # at the middle of the image on the body's front (outputs dropped, weight 0)
            self._body_pad = {"xyz": torch.zeros(body_cap, 3, device=dev), "rotation": b_unit,
                              "scaling": torch.zeros(body_cap, 3, device=dev),
                              "color": torch.zeros(body_cap, 3, device=dev),
                              "opacity": torch.zeros(body_cap, device=dev)}
        module = _FrameModule(model, deform, rest, body=m is not None,
                              shape=self.shape if rest else None)
        skip = {f"body.{k}" for k in BODY_INPUTS}
        named = [(k, p) for k, p in module.named_parameters() if k not in skip]
        self._params = [p for _, p in named]
        fn = _functional(module, [name for name, _ in named])
        self._fn = None  # drop the previous graph (and its memory) before a new capture
        if self.graphs:
            sample = [t.detach().clone().requires_grad_(True)
                      for t in self._padded(n, cap, detach=True)]
            sample += [exp.detach().clone(), campos.detach().clone()]
            if rest:
                sample += [capture.detach().clone(), self._row_weights(n, cap).clone(),
                           self._row_weights(m or 0, body_cap or 1).clone()]
            if m is not None:
                sample += [t.detach().clone().requires_grad_(True)
                           for t in self._body_padded(m, body_cap, detach=True)]
            sample += [p.detach().requires_grad_(p.requires_grad) for p in self._params]
            prepare_capture(dev)
            fn = torch.cuda.make_graphed_callables(
                fn, tuple(sample), num_warmup_iters=self.warmup, allow_unused_input=True)
            self.captures += 1
        self._fn = fn
        self._key = (cap, body_cap, deform, model.autocast_dtype, rest)

    def _padded(self, n: int, cap: int, detach: bool = False) -> list[torch.Tensor]:
        out = []
        for name in INPUTS:
            p = getattr(self.model, name)
            p = p.detach() if detach else p
            out.append(torch.cat([p, self._pad[name][: cap - n]]) if cap > n else p)
        return out

    def _body_padded(self, m: int, cap: int, detach: bool = False) -> list[torch.Tensor]:
        out = []
        for name in BODY_INPUTS:
            p = getattr(self.model.body, name)
            p = p.detach() if detach else p
            out.append(torch.cat([p, self._body_pad[name][: cap - m]]) if cap > m else p)
        return out

    def _row_weights(self, n: int, cap: int) -> torch.Tensor:
        """[cap]: 1/n for the n real rows, 0 for the padding (a mean over the real rows as a
        weighted sum); kept while the count stays."""
        key = (n, cap)
        if key not in self._weights:
            if len(self._weights) >= 4:  # the head's and the body's, before and after a change
                self._weights.pop(next(iter(self._weights)))
            w = torch.zeros(cap, device=self.model.xyz.device)
            w[:n] = 1.0 / max(n, 1)
            self._weights[key] = w
        return self._weights[key]

    def _check_gradients(self) -> None:
        if self.graphs and any(p.grad is not None for p in self.model.parameters()):
            raise RuntimeError(
                "a CUDA-graphed forward while the model still holds gradients: the graph's "
                "backward would overwrite them instead of adding to them. Set the gradients "
                "to None (zero_grad(set_to_none=True)) after each backward, or train with "
                "--fast_path off.")

    def __call__(self, exp: torch.Tensor, campos: torch.Tensor, deform: bool) -> FrameGaussians:
        """The head's Gaussians of one frame (``model.derive``)."""
        if not self.pad:
            return self.model.derive(exp if deform else None, campos)
        self._check_gradients()
        n = self.model.num_gaussians
        self._prepare(n, None, deform, exp, campos, None)
        cap = self._key[0]
        outs = self._fn(*self._padded(n, cap), exp, campos, *self._params)
        return FrameGaussians(**{k: v[:n] for k, v in zip(OUTPUTS, outs)})

    def frame(self, exp: torch.Tensor, campos: torch.Tensor, deform: bool,
              capture: torch.Tensor) -> tuple[FrameGaussians, dict[str, torch.Tensor]]:
        """The Gaussians of one training frame, the head's first and then the body's
        (``model.with_body(model.derive(...), capture)``), and the shape penalties of the
        model's canonical Gaussians by name (weighted; none without ``shape``). ``capture``
        [4, 4]: the frame's capture camera-to-head matrix."""
        model = self.model
        if not self.pad:
            head = model.derive(exp if deform else None, campos)
            g = model.with_body(head, capture)
            return g, ({} if self.shape is None else
                       self.shape(model, campos, head.means if deform else None))
        self._check_gradients()
        n = model.num_gaussians
        m = None if model.body is None else model.body.num_gaussians
        self._prepare(n, m, deform, exp, campos, capture)
        cap, body_cap = self._key[:2]
        args = [*self._padded(n, cap), exp, campos, capture, self._row_weights(n, cap),
                self._row_weights(m or 0, body_cap or 1)]
        if m is not None:
            args += self._body_padded(m, body_cap)
        outs = self._fn(*args, *self._params)
        head = [v[:n] for v in outs[:len(OUTPUTS)]]
        if m is not None:  # the body's rows after the head's, as model.with_body joins them
            body = outs[len(OUTPUTS):2 * len(OUTPUTS)]
            head = [torch.cat([h, b[:m]]) for h, b in zip(head, body)]
        g = FrameGaussians(**dict(zip(OUTPUTS, head)))
        terms = {}
        if self.shape is not None:
            terms = dict(zip(self.shape.names(), outs[-1].unbind()))
        return g, terms
