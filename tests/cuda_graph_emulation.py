"""A CPU stand-in for ``torch.cuda.make_graphed_callables`` with the same buffer behaviour, so
that CPU tests can run the fast path's graphed code through whole training runs.

What a real graphed callable does, and this one too: the call copies its inputs into static
input tensors (unless they already share their memory), computes from those, and returns
detached views of static output tensors that the next call overwrites; the backward copies
the incoming gradients into static tensors and returns detached views of static gradient
tensors, also overwritten by the next backward. Only the CUDA kernels are missing: the
computation runs eagerly, so the arithmetic is the eager path's.

What it does not reproduce: a real graph freezes the Python-side state of its capture (module
flags, autocast, which code path ran) and replays the same kernels, while this one runs the
Python again at every call, so a stale capture (a missing reason to capture again) goes
unnoticed here; the warm-up runs; the checks of the real function (autocast cache, hooks,
buffers that need gradients); a second backward of one forward (an error here).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_leaves, tree_unflatten


def make_graphed_callables(fn, sample_args, num_warmup_iters: int = 3,
                           allow_unused_input: bool = False, **_):
    params = tuple(fn.parameters()) if isinstance(fn, nn.Module) else ()
    surface = tuple(sample_args) + params
    n_user = len(sample_args)
    outs, spec = tree_flatten(fn(*sample_args))
    needs_grad = [o.requires_grad for o in outs]
    static_out = [o.detach().clone() for o in outs]
    static_grad_out = [torch.empty_like(o) if r else None for o, r in zip(outs, needs_grad)]
    static_grad_in = [torch.empty_like(i) if i.requires_grad else None for i in surface]
    last: dict[str, list[torch.Tensor]] = {}

    class Graphed(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            for i in range(n_user):
                if surface[i].data_ptr() != inputs[i].data_ptr():
                    surface[i].copy_(inputs[i])
            with torch.enable_grad():
                out = tree_leaves(fn(*sample_args))
            last["out"] = out
            for s, o in zip(static_out, out):
                s.copy_(o.detach())
            return tuple(s.detach() for s in static_out)

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, *grads):
            for s, g in zip(static_grad_out, grads):
                if s is not None and s.data_ptr() != g.data_ptr():
                    s.copy_(g)
            wanted = [i for i in surface if i.requires_grad]
            got = iter(torch.autograd.grad(
                [o for o, r in zip(last["out"], needs_grad) if r], wanted,
                [s for s in static_grad_out if s is not None],
                allow_unused=allow_unused_input))
            res = []
            for buf, i in zip(static_grad_in, surface):
                g = next(got) if i.requires_grad else None
                if g is None:
                    res.append(None)
                else:
                    buf.copy_(g)
                    res.append(buf.detach())
            return tuple(res)

    def call(*args):
        return tree_unflatten(list(Graphed.apply(*args, *params)), spec)

    return call
