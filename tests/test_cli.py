"""Command lines: boolean flags, the original release's options, saved configs read as data."""

from __future__ import annotations

import argparse

import pytest

import metrics
import render
import train
from arguments import pop_compat_options
from scene.run_folder import read_cfg_args, write_cfg_args
from utils.errors import CheckpointError


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> dict:
    return vars(parser.parse_args(argv))


@pytest.mark.parametrize("argv,expected", [
    (["--is_debug"], True),
    (["--is_debug", "true"], True),
    (["--is_debug", "false"], False),
    (["--is_debug", "False"], False),  # the release's type=bool made this True
    (["--is_debug", "0"], False),
    ([], None),  # not given: the default applies later
])
def test_boolean_flags_mean_what_they_say(argv, expected):
    args = _parse(train.build_parser(), argv)
    assert args.get("is_debug") == expected


def test_a_bad_boolean_is_refused(capsys):
    with pytest.raises(SystemExit) as err:
        train.build_parser().parse_args(["--eval", "maybe"])
    assert err.value.code == 2
    assert "expected true or false" in capsys.readouterr().err


@pytest.mark.parametrize("build", [train.build_parser, render.build_parser])
def test_prefixes_of_options_are_not_guessed(build):
    # with abbreviations allowed, the release's --mode would silently become --model_path
    with pytest.raises(SystemExit):
        build().parse_args(["-m", "run", "--model", "x"])


def test_the_release_options_are_accepted_with_a_note():
    args = _parse(render.build_parser(), ["-m", "run", "--mode", "render", "--warm_up", "3000",
                                          "--data_device", "cuda", "--load2gpu_on_the_fly"])
    notes = pop_compat_options(args)
    assert len(notes) == 4 and all("no effect" in n for n in notes)
    assert not any(k.startswith("compat_") for k in args)
    args = _parse(train.build_parser(), ["-s", "d", "--images", "images", "--debug", "false"])
    assert len(pop_compat_options(args)) == 2


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "(default: 20000)" in out and "(default: -1)" in out


def test_metrics_parser_knows_lpips_backbones():
    with pytest.raises(SystemExit):
        metrics.main(["-m", "x", "--lpips_net", "resnet"])


def test_cfg_args_round_trip_and_are_never_evaluated(tmp_path):
    write_cfg_args(tmp_path, {"source_path": "/data/x", "eval": True, "resolution": -1,
                              "test_iterations": [1, 2]})
    cfg = read_cfg_args(tmp_path)
    assert cfg["source_path"] == "/data/x" and cfg["eval"] is True
    assert cfg["images"] == "images" and cfg["test_iterations"] == [1, 2]
    marker = tmp_path / "pwned"
    (tmp_path / "cfg_args").write_text(
        f"Namespace(source_path=__import__('os').system('touch {marker}'))")
    with pytest.raises(CheckpointError, match="not a readable cfg_args"):
        read_cfg_args(tmp_path)
    assert not marker.exists()


def test_lpips_without_cached_weights_says_what_is_missing(tmp_path, monkeypatch):
    import torch

    from utils.metrics_utils import make_lpips

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    fn, note = make_lpips(torch.device("cpu"))
    assert fn is None
    assert "vgg16-397923af.pth or alexnet-owt-7be5be79.pth" in note and str(tmp_path) in note
    fn, note = make_lpips(torch.device("cpu"), "alex")
    assert fn is None and "vgg16" not in note
