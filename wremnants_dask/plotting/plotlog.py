"""Every plot is written with a ``.log`` beside it: how it was made and what it shows.

The log holds the command, the time, the git hash and diff of the code that drew it, the yields
of the plotted processes with their uncertainties, and the provenance chain of the input file
(each stage's command back to the histmaker), so a plot found on a web page can be remade.
Both files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.utils.atomic import atomic_path, atomic_write_text
from wremnants_dask.utils.provenance import make_metadata

#: Image formats written for every plot (the page shows the PNG).
FORMATS = (".png",)


def metadata_chain(meta: Mapping[str, Any] | None) -> Iterator[Mapping[str, Any]]:
    """The provenance records of a file and its inputs, newest first (depth first).

    Stages nest their inputs' records under ``inputs`` (``inputs_metadata`` in older files)."""
    if not meta:
        return
    yield meta
    for sub in meta.get("inputs") or meta.get("inputs_metadata") or []:
        yield from metadata_chain(sub)


def yields_table(rows: Sequence[tuple[str, float, float]], unit: str = "events") -> str:
    """A fixed-width table of (name, yield, uncertainty) rows."""
    if not rows:
        return "(no yields)\n"
    w = max(12, *(len(r[0]) for r in rows))
    out = [f"{'process':<{w}s} {'yield':>14s} {'uncertainty':>14s}   ({unit})"]
    for name, val, err in rows:
        out.append(f"{name:<{w}s} {val:14.6g} {err:14.6g}")
    return "\n".join(out) + "\n"


def hist_yields(hists: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(name, sum, sqrt(sum of variances)) of each histogram (statistical uncertainty only)."""
    rows = []
    for name, h in hists.items():
        v = np.asarray(h.values(flow=False), float)
        var = h.variances(flow=False)
        err = float(np.sqrt(np.sum(var))) if var is not None else float(np.sqrt(abs(v.sum())))
        rows.append((name, float(v.sum()), err))
    return rows


def log_text(
    what: str,
    *,
    input_file: str | Path | None,
    input_metadata: Mapping[str, Any] | None,
    yields: str = "",
    notes: Sequence[str] = (),
) -> str:
    """The text of a plot's log (see the module docstring)."""
    here = _code_state()
    git = here["git"]
    lines = [
        f"plot: {what}",
        f"command: {here['command']}",
        f"cwd: {here['cwd']}",
        f"time: {_dt.datetime.now(_dt.timezone.utc).isoformat()}",
        f"git: {git['hash']} ({'dirty' if git['dirty'] else 'clean'})",
        f"input: {input_file}",
    ]
    lines += [f"note: {n}" for n in notes]
    lines += ["", "== yields", yields or "(none: this plot shows no process yields)\n"]
    lines.append("== input provenance chain (newest first)")
    for k, m in enumerate(metadata_chain(input_metadata)):
        g = m.get("git") or {}
        lines.append(
            f"[{k}] stage={m.get('stage')} time={m.get('time')} git={g.get('hash')}"
            f"{' (dirty)' if g.get('dirty') else ''}"
        )
        lines.append(f"    command: {m.get('command')}")
        lines.append(f"    cwd: {m.get('cwd')}  inputs: {m.get('input_files')}")
    lines += ["", "== git diff of the plotting code's tree", git["diff"] or "(none)", ""]
    lines += ["== input metadata (JSON)", json.dumps(input_metadata, indent=1, default=str), ""]
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def _code_state() -> dict[str, Any]:
    """Command, git hash and diff of this process (read once: one git call per run)."""
    return make_metadata(stage="plot")


def save_plot(fig: Any, path: str | Path, log: str) -> Path:
    """Write ``fig`` to ``path`` (and the other FORMATS) and ``log`` to ``path`` + ``.log``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        for suffix in {path.suffix, *FORMATS}:
            target = path.with_suffix(suffix)
            with atomic_path(target, suffix=suffix) as tmp:
                fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    atomic_write_text(log_path(path), log)
    return path


def log_path(plot: str | Path) -> Path:
    """Where the log of ``plot`` lives (``name.png.log`` is avoided: ``name.log``)."""
    plot = Path(plot)
    return plot.with_suffix(".log")
