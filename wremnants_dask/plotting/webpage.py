"""A static ``index.html`` per plot folder: thumbnails, logs, other outputs and the summary.

Only relative links to files inside the folder, so the folder can be copied to any web space.
Thumbnails are small PNGs in ``thumbs/`` (Pillow, which matplotlib depends on).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wremnants_dask.utils.atomic import atomic_path, atomic_write_text

THUMB_WIDTH = 360

_STYLE = """body{font-family:sans-serif;margin:1em 2em}
.grid{display:flex;flex-wrap:wrap;gap:1em}
.card{border:1px solid #ccc;padding:.5em;width:370px;font-size:90%}
.card img{width:360px;display:block}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}"""


def _href(name: str) -> str:
    return quote(name)


def thumbnail(png: Path) -> Path:
    """``thumbs/<name>`` beside ``png``, at most THUMB_WIDTH pixels wide (atomic)."""
    from PIL import Image

    out = png.parent / "thumbs" / png.name
    with Image.open(png) as im:
        im.thumbnail((THUMB_WIDTH, THUMB_WIDTH * 4))
        with atomic_path(out, suffix=".png") as tmp:
            im.save(tmp, format="PNG")
    return out


def summary_html(summary: dict[str, Any] | None) -> str:
    """The mass result with its uncertainty breakdown and the goodness of fit."""
    if not summary:
        return ""
    parts = []
    m = summary.get("mass")
    if m:
        parts.append(
            f"<h2>Result</h2><p><b>{html.escape(m['parameter'])}</b>: m = "
            f"{m['mass_mev']:.1f} &plusmn; {m['uncertainty_mev']:.1f} MeV (shift "
            f"{m['shift_mev']:+.1f} MeV from the reference {m['reference_mev']:.1f} MeV)</p>"
        )
        if m.get("impacts_mev"):
            rows = sorted(m["impacts_mev"].items(), key=lambda kv: -kv[1])
            body = "".join(f"<tr><td>{html.escape(g)}</td><td>{v:.2f}</td></tr>" for g, v in rows)
            body += f"<tr><td>statistical</td><td>{m.get('stat_mev', float('nan')):.2f}</td></tr>"
            body += f"<tr><th>total</th><th>{m['uncertainty_mev']:.2f}</th></tr>"
            parts.append(
                "<table id='breakdown'><tr><th>uncertainty group</th><th>impact (MeV)</th></tr>"
                f"{body}</table>"
            )
    g = summary.get("gof")
    if g:
        parts.append(
            f"<p id='gof'>Saturated goodness of fit: q = {g['q']:.1f}, ndf = {g['ndf']:.0f}, "
            f"p-value = {g['p_value']:.3f}</p>"
        )
    return "\n".join(parts)


def write_index(outdir: Path, *, title: str, summary: dict[str, Any] | None = None) -> Path:
    """Write ``outdir/index.html`` listing every PNG (thumbnail, full size, log) and the other
    outputs of the folder."""
    outdir = Path(outdir)
    cards = []
    for png in sorted(outdir.glob("*.png")):
        thumb = thumbnail(png)
        log = png.with_suffix(".log")
        loglink = f" &middot; <a href='{_href(log.name)}'>log</a>" if log.exists() else ""
        cards.append(
            f"<div class='card'><a href='{_href(png.name)}'><img loading='lazy' "
            f"src='thumbs/{_href(thumb.name)}' alt='{html.escape(png.stem)}'></a>"
            f"{html.escape(png.stem)}{loglink}</div>"
        )
    others = [
        p.name
        for p in sorted(outdir.iterdir())
        if p.is_file()
        and p.suffix in (".html", ".json", ".txt", ".csv")
        and p.name != "index.html"
        and not p.name.startswith(".")
    ]
    other = "".join(f"<li><a href='{_href(n)}'>{html.escape(n)}</a></li>" for n in others)
    subs = [p.name for p in sorted(outdir.iterdir()) if (p / "index.html").is_file()]
    other += "".join(
        f"<li><a href='{_href(n)}/index.html'>{html.escape(n)}/</a> (page)</li>" for n in subs
    )
    text = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{summary_html(summary)}"
        f"<h2>Plots ({len(cards)})</h2><div class='grid'>{''.join(cards)}</div>"
        f"<h2>Other outputs</h2><ul>{other}</ul></body></html>\n"
    )
    return atomic_write_text(outdir / "index.html", text)
