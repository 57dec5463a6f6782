"""The ImageNet backbone weights of the perceptual loss and LPIPS: read from the torch hub cache,
downloaded there where missing, and done without (with one note) where no network answers.
Nothing here touches the network: every download is patched."""

from __future__ import annotations

import socket
import urllib.error
from pathlib import Path

import pytest
import torch

import train
import utils.loss_utils
import utils.weights
from scene.run_folder import read_cfg_args
from tests.helpers import write_tiny_dataset
from utils.loss_utils import make_perceptual_loss
from utils.metrics_utils import make_lpips
from utils.weights import DOWNLOAD_TIMEOUT_S, fetch_backbone

VGG_FILE = "vgg16-397923af.pth"
ALEX_FILE = "alexnet-owt-7be5be79.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch home with downloads allowed; its checkpoint folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GH_NO_DOWNLOAD", raising=False)
    ckpts = tmp_path / "torch" / "hub" / "checkpoints"
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return ckpts


@pytest.fixture
def offline(monkeypatch):
    """torch.hub's download fails as it does with no network; records each call with the socket
    timeout in force during it."""
    calls = []

    def no_network(url, **kw):
        calls.append((url, kw, socket.getdefaulttimeout()))
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return calls


def _fake_cache(ckpts: Path, name: str) -> dict:
    ckpts.mkdir(parents=True, exist_ok=True)
    state = {"features.0.weight": torch.arange(6.0).view(2, 3)}
    torch.save(state, ckpts / name)
    return state


def test_cached_weights_are_used_without_a_download(torch_home, offline):
    state = _fake_cache(torch_home, VGG_FILE)
    path, how = fetch_backbone("vgg16")
    assert path == str(torch_home / VGG_FILE) and how.startswith("cached at")
    assert torch.equal(torch.load(path, weights_only=True)["features.0.weight"],
                       state["features.0.weight"])
    assert offline == []


def test_the_perceptual_loss_loads_the_cached_file(torch_home, offline, monkeypatch):
    _fake_cache(torch_home, VGG_FILE)
    loaded = []

    class Recorder(torch.nn.Module):
        def __init__(self, weights_path):
            super().__init__()
            loaded.append(weights_path)

    monkeypatch.setattr(utils.loss_utils, "VGGPerceptualLoss", Recorder)
    vgg, note = make_perceptual_loss(0.01, torch.device("cpu"))
    assert isinstance(vgg, Recorder) and loaded == [str(torch_home / VGG_FILE)]
    assert note.startswith("on (cached at") and offline == []


def test_lpips_auto_takes_a_cached_alexnet_where_vgg_cannot_be_had(torch_home, offline,
                                                                   monkeypatch):
    lpips = pytest.importorskip("lpips")
    _fake_cache(torch_home, ALEX_FILE)
    nets = []
    monkeypatch.setattr(lpips, "LPIPS", lambda net, **kw: nets.append(net) or torch.nn.Identity())
    fn, note = make_lpips(torch.device("cpu"))
    assert fn is not None and note == "LPIPS (alex)" and nets == ["alex"]
    assert [Path(url).name for url, _, _ in offline] == [VGG_FILE]  # VGG was tried first


def test_a_missing_file_is_downloaded_through_torch_hub(torch_home, monkeypatch):
    calls = []

    def download(url, **kw):
        calls.append((url, kw))
        return _fake_cache(torch_home, Path(url).name)  # what torch.hub leaves in the cache

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", download)
    path, how = fetch_backbone("vgg16")
    assert path == str(torch_home / VGG_FILE) and how == f"downloaded to {path}"
    (url, kw), = calls
    assert url == f"https://download.pytorch.org/models/{VGG_FILE}"
    assert kw["progress"] and kw["check_hash"]
    assert fetch_backbone("vgg16")[1].startswith("cached at") and len(calls) == 1


def test_offline_the_download_gives_up_quickly_with_a_note(torch_home, offline):
    before = socket.getdefaulttimeout()
    path, how = fetch_backbone("vgg16")
    assert path is None and "failed" in how and "Name or service not known" in how
    (_, _, timeout), = offline
    assert timeout == DOWNLOAD_TIMEOUT_S  # a stalled connection is not waited on for ever
    assert socket.getdefaulttimeout() == before
    fn, note = make_lpips(torch.device("cpu"), "vgg")
    assert fn is None and note.startswith("LPIPS unavailable") and VGG_FILE in note
    assert "Name or service not known" in note


def test_no_download_env_var_turns_downloads_off(torch_home, offline, monkeypatch):
    monkeypatch.setenv("GH_NO_DOWNLOAD", "1")
    path, how = fetch_backbone("alexnet")
    assert path is None and "GH_NO_DOWNLOAD=1" in how and offline == []
    vgg, note = make_perceptual_loss(0.01, torch.device("cpu"))
    assert vgg is None and "GH_NO_DOWNLOAD=1" in note and offline == []


def test_training_offline_goes_on_without_the_vgg_term(torch_home, offline, tmp_path):
    data = write_tiny_dataset(tmp_path / "data", n=6, size=24)
    run = tmp_path / "run"
    trainer = train.train(["-s", str(data), "-m", str(run), "--iterations", "20",
                           "--lambda_vgg", "0.05", "--init_points", "300", "--test_frames", "1",
                           "--eval_frames", "1", "--quiet",
                           "--backend", "torch", "--device", "cpu", "--test_iterations", "-1",
                           "--save_iterations", "20"])
    assert trainer.vgg is None and trainer.last_iteration == 20
    assert trainer.vgg_note.startswith("off: VGG16 weights not found")
    assert "Name or service not known" in trainer.vgg_note
    assert "vgg" not in trainer.loss_fn.module.weights
    assert [Path(url).name for url, _, _ in offline][0] == VGG_FILE
    assert read_cfg_args(run)["perceptual_loss"] == trainer.vgg_note


def test_weights_module_names_torchvisions_files():
    assert utils.weights.backbone_file("vgg16") == VGG_FILE
    assert utils.weights.backbone_file("alexnet") == ALEX_FILE
