"""Command lines: boolean flags, the original release's options, saved configs read as data."""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from pathlib import Path

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


# Every script with a command line: its parser comes from build_parser() where it has one, else
# from main() stopped at parse_args.
SCRIPTS = ["train", "render", "metrics", "viewer", "tools.export", "tools.preprocess",
           "tools.make_synthetic", "bench.run", "bench.quality", "bench.fidelity",
           "bench.fidelity_matrix", "bench.mlp_variants", "bench.profile_step",
           "bench.torch_rasterizer_cpu", "bench.viewer_frame", "bench.reenactment",
           "bench.drive_real", "bench.unseen_sim"]
REPO = Path(__file__).resolve().parents[1]


class _Parsed(Exception):
    def __init__(self, parser):
        self.parser = parser


def _script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    module = importlib.import_module(name)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def stop(self, args=None, namespace=None):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop)
    with pytest.raises(_Parsed) as caught:
        module.main(*([[]] if inspect.signature(module.main).parameters else []))
    return caught.value.parser


def _entries(help_text: str) -> list[str]:
    """The help of each argument: from a line indented by two spaces to the next one."""
    out: list[str] = []
    for line in help_text.splitlines():
        if re.match(r"  \S", line):
            out.append(line)
        elif line.startswith("   ") and out:
            out[-1] += " " + line.strip()
    return out


def test_every_script_with_a_command_line_is_checked():
    found = {str(p.relative_to(REPO).with_suffix("")).replace("/", ".")
             for pattern in ("*.py", "tools/*.py", "bench/*.py") for p in REPO.glob(pattern)
             if re.search(r"ArgumentParser\(|make_parser\(|build_parser", p.read_text())}
    assert found == set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_reads_cleanly(name, monkeypatch):
    parser = _script_parser(name, monkeypatch)
    description = parser.description
    assert description and description[-1] in ".):", description  # not cut mid-sentence
    assert "\n" not in description.strip()
    text = parser.format_help()
    entries = _entries(text)
    assert len(entries) > 2
    for entry in entries:
        assert entry.count("(default") <= 1, entry
        assert "(default: None)" not in entry and "==SUPPRESS==" not in entry, entry
        assert "(default: )" not in entry, entry


def test_defaults_are_added_only_where_help_does_not_say_one():
    from utils.cli import make_parser

    p = make_parser("A tool.\n\nMore text,\nnot in the description.")
    p.add_argument("--a", type=int, default=3, help="with a default")
    p.add_argument("--b", default=None, help="no default")
    p.add_argument("--c", default=2, help="said (default: two)")
    p.add_argument("--d", default=False, type=bool, help="a boolean, 100%% sure")
    p.add_argument("--e", action="store_true", help="a switch")
    p.add_argument("--f", nargs="+", type=int, default=[1, 2], help="a list")
    p.add_argument("--g", default="5%", help="opens the default browser")
    text = " ".join(p.format_help().split())
    assert p.description == "A tool."
    assert "with a default (default: 3)" in text and "no default --c" in text
    assert "said (default: two) --d" in text and "100% sure (default: false)" in text
    assert "a switch --f" in text and "a list (default: 1 2)" in text
    assert "opens the default browser (default: 5%)" in text
