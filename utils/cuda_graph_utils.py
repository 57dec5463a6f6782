"""CUDA graph capture helpers shared by training (graphed networks and loss) and rendering."""

from __future__ import annotations

import gc

import torch


def prepare_capture(device: torch.device) -> None:
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
