"""Shared pytest configuration: GPU tests skip cleanly on machines without CUDA; nothing is
downloaded (the VGG / AlexNet weights are used only where the torch cache already holds them;
a test that covers the download patches it and lifts this)."""

import os

import pytest
import torch

os.environ["GH_NO_DOWNLOAD"] = "1"  # also for the scripts the tests start as subprocesses


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
