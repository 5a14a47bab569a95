"""Interactive pulls and impacts of every parameter (plotly), searchable by name.

One self-contained folder: the page loads ``plotly.min.js`` written beside it (relative link),
holds all values at full precision in its data, and a search box redraws the figure with the
parameters whose names match (a regular expression).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.utils.atomic import atomic_write_text

PLOTLY_JS = "plotly.min.js"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script src="{js}"></script>
<style>body{{font-family:sans-serif;margin:1em}} #q{{width:30em}}</style></head>
<body><h1>{title}</h1>
<p>{n} parameters. Search (regular expression):
<input id="q" type="search" placeholder="e.g. pdf|muon_eff"> <span id="count"></span></p>
<div id="plot"></div>
<script id="data" type="application/json">{data}</script>
<script>
const D = JSON.parse(document.getElementById('data').textContent);
function draw(re) {{
  const idx = D.names.map((n, i) => i).filter(i => re.test(D.names[i]));
  const pick = a => idx.map(i => a[i]);
  const names = pick(D.names);
  const traces = [
    {{type: 'scatter', mode: 'markers', name: 'pull', x: pick(D.pull), y: names,
      error_x: {{type: 'data', array: pick(D.constraint)}}, xaxis: 'x', yaxis: 'y',
      hovertemplate: '%{{y}}: pull %{{x:.6g}} +- %{{error_x.array:.6g}}<extra></extra>'}},
  ];
  for (const [k, poi] of D.pois.entries()) {{
    traces.push({{type: 'bar', orientation: 'h', name: 'impact on ' + poi, x: pick(D.impacts[k]),
      y: names, xaxis: 'x2', yaxis: 'y', hovertemplate: '%{{y}}: %{{x:.6g}}<extra></extra>'}});
  }}
  const layout = {{height: Math.max(400, 18 * names.length + 150), showlegend: true,
    legend: {{orientation: 'h', y: 1, yanchor: 'bottom', x: 1, xanchor: 'right'}},
    grid: {{rows: 1, columns: 2}}, margin: {{l: 220}},
    xaxis: {{title: 'pull (constraint as error bar)', domain: [0, 0.48], side: 'top'}},
    xaxis2: {{title: 'impact (POIs on themselves left out)', domain: [0.52, 1], side: 'top'}},
    yaxis: {{type: 'category', range: [names.length - 0.5, -0.5], automargin: true}}}};
  Plotly.react('plot', traces, layout);
  document.getElementById('count').textContent = names.length + ' shown';
}}
document.getElementById('q').addEventListener('input', e => {{
  let re; try {{ re = new RegExp(e.target.value, 'i'); }} catch (err) {{ return; }}
  draw(re);
}});
draw(/.*/);
</script></body></html>
"""


def write_pulls_impacts(outdir: Path, f: Any, names: list[str], p: np.ndarray) -> str:
    """Write ``pulls_impacts.html`` (and plotly.min.js once); returns the page's name."""
    import plotly.offline

    impacts: list[list[float]] = []
    pois: list[str] = []
    if "impacts" in f:
        pois = json.loads(f["impacts"].attrs["pois"])
        # a POI's impact on itself is its own error: left out, it would set the scale
        impacts = [
            [None if n in pois else float(v) for n, v in zip(names, row)]
            for row in f["impacts/impacts"][()]
        ]
    data = {
        "names": names,
        "pull": [None if not np.isfinite(v) else float(v) for v in p["pull"]],
        "constraint": [None if not np.isfinite(v) else float(v) for v in p["constraint"]],
        "pois": pois,
        "impacts": impacts,
    }
    js = outdir / PLOTLY_JS
    if not js.exists():
        atomic_write_text(js, plotly.offline.get_plotlyjs())
    text = _PAGE.format(
        title="Pulls and impacts (interactive)",
        js=PLOTLY_JS,
        n=len(names),
        data=json.dumps(data).replace("</", "<\\/"),
    )
    atomic_write_text(outdir / "pulls_impacts.html", text)
    return "pulls_impacts.html"
