"""Benches use the package's public API and run as ``python -m bench.<name>`` from the
repository root: no ``sys.path`` edits, and every bench module imports (a renamed module they
use fails here, not at the next measurement)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = sorted(p for p in (REPO / "bench").glob("*.py") if p.name != "__init__.py")


def _edits_sys_path(path: Path) -> list[int]:
    """Lines that touch ``sys.path`` (insert, append, assignment...)."""
    tree = ast.parse(path.read_text(), str(path))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    ]


def test_no_sys_path_edits_in_bench(tmp_path):
    assert BENCH, "no bench scripts found"
    bad = {p.name: _edits_sys_path(p) for p in BENCH if _edits_sys_path(p)}
    assert not bad, f"sys.path edits in bench/: {bad}"
    # the check itself sees an edit
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nsys.path.insert(0, 'x')\n")
    assert _edits_sys_path(probe) == [2]


def test_every_bench_module_imports():
    names = [f"bench.{p.stem}" for p in BENCH]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    out = subprocess.run(
        [sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
