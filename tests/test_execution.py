"""Run-time settings: the options resolve to one Execution; processes that would compile
gsplat at the same time take turns."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from utils.errors import OptionError
from utils.execution import resolve_execution

REPO = Path(__file__).resolve().parents[1]

HOLDER = """
import sys, time
from pathlib import Path
from utils.execution import exclusive
log = Path(sys.argv[2])
release = Path(sys.argv[4])
with exclusive(Path(sys.argv[1]), lambda: log.open("a").write(sys.argv[3] + " waited\\n")):
    log.open("a").write(sys.argv[3] + " in\\n")
    while not release.exists():  # hold the lock until the test says
        time.sleep(0.02)
    log.open("a").write(sys.argv[3] + " out\\n")
"""


def test_a_second_process_waits_for_the_lock(tmp_path):
    """Two processes: the second waits (and says so once) until the first leaves."""
    lock, log, release = tmp_path / "build.lock", tmp_path / "log.txt", tmp_path / "release"

    def start(name):
        return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(log), name,
                                 str(release)], cwd=REPO)

    def wait_for(text):
        deadline = time.time() + 60
        while not (log.is_file() and text in log.read_text()):
            assert time.time() < deadline, f"never logged {text!r}"
            time.sleep(0.05)

    first = start("first")
    wait_for("first in")
    second = start("second")
    wait_for("second waited")
    release.touch()
    assert first.wait(30) == 0 and second.wait(30) == 0
    lines = log.read_text().splitlines()
    assert lines == ["first in", "second waited", "first out",
                     "second in", "second out"], lines


def test_cpu_execution_and_bad_options():
    ex = resolve_execution("cpu", "auto", "mixed", "auto")
    assert ex.device == torch.device("cpu") and ex.backend == "torch"
    # the CPU always computes in fp32, without the CUDA fast path
    assert ex.autocast_dtype is None and not (ex.fused or ex.graphs or ex.fast_optimizers)
    with pytest.raises(OptionError, match="--backend gsplat needs a CUDA device"):
        resolve_execution("cpu", "gsplat")
    with pytest.raises(OptionError, match="--precision"):
        resolve_execution("cpu", "torch", "fp16")
