"""``python -m wremnants_dask.plot`` on a small fit and a small histmaker-like file: every plot
and its log are written, the bands agree with the fitter's own yield errors and with finite
differences of the model, bad requests fail with one clear line, and the results page works
in a real browser (Debian's chromium, headless; skipped only where it is not installed)."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from wremnants_dask.cli.plot import main
from wremnants_dask.fitting import write_fit_input
from wremnants_dask.fitting.cli import main as fit_main
from wremnants_dask.fitting.output import read_hist
from wremnants_dask.fitting.synthmodel import build_synthetic


@pytest.fixture(scope="module")
def fitresult(tmp_path_factory) -> Path:
    fi, _, _ = build_synthetic(nsyst=4, nnorm=2, neta=4, npt=4, signal_per_bin=500.0)
    d = tmp_path_factory.mktemp("plotfit")
    write_fit_input(fi, d / "fitinput.hdf5", {"stage": "setup_fit", "command": "setup"})
    rc = fit_main(
        [str(d / "fitinput.hdf5"), "-o", str(d), "--impacts", "--global-impacts",
         "--poi", "massShift100MeV",
         "--poi", "mu", "--scan", "massShift100MeV", "--scan-points", "5",
         "--scan2d", "massShift100MeV,mu", "--scan-range", "2"]
    )  # fmt: skip
    assert rc == 0
    return d / "fitresults.hdf5"


@pytest.fixture(scope="module")
def plots(fitresult: Path) -> Path:
    out = fitresult.parent / "plots"
    assert main([str(fitresult), "-o", str(out), "--page-size", "5"]) == 0
    return out


def test_every_plot_has_a_log(plots: Path, fitresult: Path) -> None:
    summary = json.loads((plots / "summary.json").read_text())
    names = set(summary["plots"])
    with h5py.File(fitresult) as f:
        channels = list(f["hists/postfit"])
        npulls = int(np.isfinite(f["parameters"]["pull"]).sum())
    expected = {"impacts_ranking_massShift100MeV.png", "impacts_grouped_massShift100MeV.png",
                "correlation.png", "scan_massShift100MeV.png", "scan2d_massShift100MeV_mu.png",
                "impacts_global_grouped_massShift100MeV.png"}  # fmt: skip
    for ch in channels:
        expected |= {f"prefit_{ch}_unrolled.png", f"postfit_{ch}_unrolled.png"}
    assert expected <= names, expected - names
    assert sum(n.startswith("pulls_") for n in names) == -(-npulls // 5)  # every parameter paged
    for n in names:
        assert (plots / n).stat().st_size > 5000, n
        log = (plots / n).with_suffix(".log").read_text()
        assert "command:" in log and "git:" in log and "stage=fit" in log, n
        assert "stage=setup_fit" in log, n  # the chain goes back past the fit
    assert "Wmunu" in (plots / f"postfit_{channels[0]}_eta.log").read_text()
    assert summary["band_source"]  # bands from the covariance, not per-bin quadrature
    assert (plots / "pulls_impacts.html").stat().st_size > 1000


def test_bands_match_fitter_and_finite_differences(fitresult: Path) -> None:
    """Unprojected post-fit band = the fitter's own per-bin total errors (independent code
    path, yield_variances); J = finite differences of the model's profiled (BB-lite) yields."""
    from wremnants_dask.fitting import Fitter, read_fit_input
    from wremnants_dask.fitting.yield_errors import bb_lite_factors
    from wremnants_dask.plotting.bands import projected_errors, yield_jacobian

    fin = fitresult.parent / "fitinput.hdf5"
    with h5py.File(fitresult) as f:
        x, cov = f["parameters"]["value"], f["covariance"][()]
        chs = {ch: read_hist(f[f"hists/postfit/{ch}/total"]) for ch in f["hists/postfit"]}
        per_ch = {ch: f[f"hists/postfit/{ch}/data/values"][()] for ch in f["hists/postfit"]}
    yj = yield_jacobian(fin, x, None, data=per_ch)
    fi, _ = read_fit_input(fin)
    data = np.asarray(fi.data, float)  # the fit was to the fit input's data
    fitter = Fitter(fi)

    def nu(v: np.ndarray) -> np.ndarray:
        tot = np.asarray(fitter._yields(v)).sum(1)
        return tot * bb_lite_factors(fitter.model, tot, data)[0]

    k = int(np.argmax(np.abs(yj.jac).sum(0)))
    h = 1e-6
    xp, xm = x.copy(), x.copy()
    xp[k] += h
    xm[k] -= h
    fd = (nu(xp) - nu(xm)) / (2 * h)
    np.testing.assert_allclose(yj.jac[:, k], fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    np.testing.assert_allclose(yj.total, nu(x), rtol=1e-10)
    for ch, total in chs.items():
        sub = yj.channel(ch)
        shape = total.values().shape
        keep = tuple(range(len(shape)))
        err = projected_errors(sub.jac, cov, shape, keep)
        np.testing.assert_allclose(err, np.sqrt(total.variances()).reshape(-1), rtol=1e-6)


def test_fit_result_missing_is_one_line(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "nope.hdf5"), "-o", str(tmp_path)]) == 2
    assert "nope.hdf5" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the page
class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v:
                self.refs.append(v)


def _check_refs(folder: Path, page_html: str) -> int:
    from urllib.parse import unquote, urlparse

    p = _Links()
    p.feed(page_html)
    for ref in p.refs:
        u = urlparse(ref)
        assert not u.scheme or u.scheme == "file", ref
        target = (folder / unquote(u.path)).resolve() if not u.scheme else Path(unquote(u.path))
        assert target.is_relative_to(folder.resolve()), ref  # nothing outside the folder
        assert target.is_file(), ref
    return len(p.refs)


def test_page_links_resolve_inside_folder(plots: Path) -> None:
    text = (plots / "index.html").read_text()
    n = _check_refs(plots, text)
    nplots = len(json.loads((plots / "summary.json").read_text())["plots"])
    assert n >= 3 * nplots  # image, thumbnail link and log of every plot
    assert "breakdown" in text or "gof" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _dump_dom(page: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180,
        )  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_interactive_page_draws(plots: Path) -> None:
    """plotly (loaded from the folder) draws the pulls and impacts: its SVG is in the DOM."""
    out = _dump_dom(plots / "pulls_impacts.html")
    assert "main-svg" in out.stdout and "massShift100MeV" in out.stdout, out.stderr[-2000:]


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_page_in_headless_chromium(plots: Path) -> None:
    """The page loads in chromium, every image decodes (naturalWidth > 0), and every link of
    the rendered DOM resolves to a file in the folder."""
    probe = plots / "_probe.html"
    script = (
        "<script>window.addEventListener('load', () => {"
        "const imgs = [...document.images];"
        "const bad = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src);"
        "document.body.setAttribute('data-probe', JSON.stringify({n: imgs.length, bad}));"
        "});</script>"
    )
    probe.write_text((plots / "index.html").read_text().replace("</body>", script + "</body>"))
    try:
        out = _dump_dom(probe)
    finally:
        probe.unlink()
    dom = out.stdout
    assert "<h1>" in dom and "Plots (" in dom, out.stderr[-2000:]
    start = dom.index("data-probe=") + len("data-probe=") + 1
    raw = dom[start : dom.index('"', start) if dom[start - 1] == '"' else dom.index("'", start)]
    probe_result = json.loads(raw.replace("&quot;", '"'))
    assert probe_result["n"] > 0 and probe_result["bad"] == [], probe_result
    _check_refs(plots, dom)
