"""The package layout is the pipeline: no stage imports a later one (checked on the source).

Every ``import``/``from`` of a ``wremnants_dask`` module anywhere in a module (including the lazy
imports inside functions) is mapped to its stage; a module may import its own stage or earlier
ones. The top-level command shims and ``cli/`` come last and may import anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

#: Stage order: data flows from lower to higher rank.
STAGES = {
    "utils": 0,
    "synth": 1,
    "inputs": 2,
    "engine": 3,
    "corrections": 3,
    "processors": 4,
    "histograms": 5,
    "fitinput": 5.5,
    "fitsetup": 6,
    "fitting": 7,
    "efficiency": 7,
    "plotting": 8,
    "cli": 9,
}
#: The fit-input format (what the fit setup writes and the fitter reads) lives in ``fitting/``
#: but is the contract between the two stages: it ranks before the fit setup and may import
#: nothing of the fitter.
FIT_INPUT_FORMAT = {"fitinput", "fitinput_writer", "symmetrize"}
#: Where each stage's source lives in the repository.
FOLDERS = {
    "processors": REPO / "processors",
    "corrections": REPO / "corrections",
    "fitting": REPO / "fitting",
    **{
        s: REPO / "wremnants_dask" / s
        for s in STAGES
        if s not in ("processors", "corrections", "fitting", "fitinput")
    },
}


def stage_of_module(name: str) -> str | None:
    """Stage of an absolute module name ``wremnants_dask.<stage>...`` (None: not staged)."""
    parts = name.split(".")
    if parts[0] != "wremnants_dask" or len(parts) < 2:
        return None
    if parts[1] == "fitting" and len(parts) > 2 and parts[2] in FIT_INPUT_FORMAT:
        return "fitinput"
    return parts[1] if parts[1] in STAGES else None


def imported_modules(path: Path, package: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (relative ones resolved)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base == "wremnants_dask":  # from wremnants_dask import <module>
                out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def layering_violations() -> list[str]:
    bad = []
    for stage, folder in FOLDERS.items():
        for path in sorted(folder.glob("*.py")):
            module = f"wremnants_dask.{stage}.{path.stem}"
            own = stage_of_module(module) or stage
            for line, mod in imported_modules(path, module):
                target = stage_of_module(mod)
                if target is not None and STAGES[target] > STAGES[own]:
                    rel = path.relative_to(REPO)
                    bad.append(f"{rel}:{line} ({own}) imports {mod} ({target})")
    return bad


def test_no_stage_imports_a_later_one() -> None:
    assert layering_violations() == []


def test_the_check_sees_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An engine module importing the fit setup (a later stage) must be reported."""
    engine = tmp_path / "wremnants_dask" / "engine"
    engine.mkdir(parents=True)
    (engine / "bad.py").write_text(
        "def f():\n    from wremnants_dask.fitsetup import setup\n    return setup\n"
    )
    (engine / "good.py").write_text("from ..inputs import files\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "FOLDERS", {"engine": engine})
    found = layering_violations()
    assert [v.split(" (")[0] for v in found if "engine/" in v] == ["wremnants_dask/engine/bad.py:2"]


def test_every_stage_folder_exists() -> None:
    missing = [s for s, f in FOLDERS.items() if not (f / "__init__.py").exists()]
    assert missing == []


COMMANDS = (
    "histmaker",
    "generate",
    "datasets",
    "setup_fit",
    "fit",
    "plot",
    "tnp",
    "mucalib",
    "recoil",
    "bosonpt",
)


def test_top_level_modules_are_only_command_shims() -> None:
    """``wremnants_dask/*.py`` holds the ``python -m`` entry points and nothing else."""
    top = {p.stem for p in (REPO / "wremnants_dask").glob("*.py")} - {"__init__"}
    assert top == set(COMMANDS)
    for name in COMMANDS:
        text = (REPO / "wremnants_dask" / f"{name}.py").read_text()
        assert len(text.splitlines()) <= 12, name
        assert "import main" in text and '__name__ == "__main__"' in text, name


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_answers_help(command: str) -> None:
    import subprocess

    run = subprocess.run(
        [sys.executable, "-m", f"wremnants_dask.{command}", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "usage:" in run.stdout
