"""The code's shape: packages import only packages below them, scripts never import scripts,
the original release's math lives in one module, and files stay readable in length."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# lowest first: a package may import itself and the ones listed before it
LAYERS = ["utils", "arguments", "gaussian_renderer", "scene", "training"]
OTHER_PACKAGES = {"preprocessing": {"utils", "preprocessing"}}
SCRIPTS = ["train.py", "render.py", "metrics.py", "viewer.py", *sorted(
    str(p.relative_to(REPO)) for p in (REPO / "tools").glob("*.py"))]
SCRIPT_MODULES = {s[:-3].replace("/", ".") for s in SCRIPTS} | {
    f"bench.{p.stem}" for p in (REPO / "bench").glob("*.py")
    if "__main__" in p.read_text()}
LONG_FILES_ALLOWED = {"gaussian_renderer/torch_rasterizer.py", "tools/make_synthetic.py"}


def _imports(path: Path) -> set[str]:
    """Top-level names of the project's modules that ``path`` imports (anywhere in it)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def _python_files(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("package", LAYERS + list(OTHER_PACKAGES))
def test_packages_import_only_packages_below_them(package):
    allowed = OTHER_PACKAGES.get(package) or set(LAYERS[:LAYERS.index(package) + 1])
    project = set(LAYERS) | set(OTHER_PACKAGES) | {"bench", "tools", "tests", "train",
                                                   "render", "metrics"}
    bad = []
    for path in _python_files(package):
        for mod in _imports(path):
            top = mod.split(".")[0]
            if top in project and top not in allowed:
                bad.append(f"{path.relative_to(REPO)} imports {mod}")
    assert not bad, "\n".join(bad)


def test_scripts_do_not_import_scripts():
    bad = []
    for script in SCRIPTS + [str(p.relative_to(REPO)) for p in _python_files("bench")]:
        for mod in _imports(REPO / script):
            if mod in SCRIPT_MODULES or mod.split(".")[0] in ("train", "render", "metrics",
                                                                 "viewer"):
                bad.append(f"{script} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_original_release_math_has_one_home():
    """Only scene/release.py (the math) and scene/run_folder.py (the loader that picks it)
    speak of the release or of math modes."""
    pattern = re.compile(r"semantics|release")
    hits = []
    for folder in ("scene", "training", "gaussian_renderer"):
        for path in _python_files(folder):
            rel = str(path.relative_to(REPO))
            if rel in ("scene/release.py", "scene/run_folder.py"):
                continue
            for i, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_no_source_file_is_over_450_lines():
    long = []
    for folder in LAYERS + list(OTHER_PACKAGES) + ["bench", "tools", "tests"]:
        for path in _python_files(folder):
            rel = str(path.relative_to(REPO))
            n = len(path.read_text().splitlines())
            if n > 450 and rel not in LONG_FILES_ALLOWED:
                long.append(f"{rel}: {n} lines")
    for script in ("train.py", "render.py", "metrics.py", "viewer.py"):
        n = len((REPO / script).read_text().splitlines())
        if n > 450:
            long.append(f"{script}: {n} lines")
    assert not long, "\n".join(long)
