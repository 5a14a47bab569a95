"""The histograms and fit input stored in ``tests/data/*_v1.hdf5`` (format version 1).

The files were written once by the version-1 writers (histio ``wremnants_dask.histio/1``, fit
input ``format_version`` 1, fit result hists before the UHI axes, commit 3773d3e) from exactly
these objects; ``tests/test_legacy_formats.py`` checks that the current readers give them back.
"""

from __future__ import annotations

import hist
import numpy as np


def _fill(h: hist.Hist, seed: int) -> hist.Hist:
    """Deterministic contents in every bin, flow bins included (distinct per bin)."""
    view = h.view(flow=True)
    rng = np.random.default_rng(seed)
    shape = view.shape
    if h.storage_type is hist.storage.Weight:
        view.value = rng.uniform(0.0, 100.0, shape)
        view.variance = rng.uniform(0.0, 10.0, shape)
    elif h.storage_type is hist.storage.Int64:
        view[...] = rng.integers(0, 1000, shape)
    else:
        view[...] = rng.uniform(-5.0, 5.0, shape)
    return h


def histio_hists() -> dict[str, dict[str, hist.Hist]]:
    """{dataset: {name: hist}} of ``histio_v1.hdf5``: every axis type and storage histio writes."""
    a = {
        "pt": hist.axis.Regular(5, 26.0, 56.0, name="pt", label=r"$p_T$ (GeV)"),
        "eta": hist.axis.Variable([-2.4, -1.2, 0.0, 0.3, 2.4], name="eta", underflow=False),
        "nvtx": hist.axis.Integer(0, 4, name="nvtx", overflow=False),
        "charge": hist.axis.IntCategory([-1, 1], name="charge"),
        "syst": hist.axis.StrCategory(["nominal", "up", "down"], name="syst", growth=True),
        "pass": hist.axis.Boolean(name="pass"),
        "phi": hist.axis.Regular(4, -np.pi, np.pi, name="phi", circular=True),
        "run": hist.axis.Integer(0, 3, name="run", growth=True),
    }
    w = hist.storage.Weight()
    return {
        "wplus_munu": {
            "nominal": _fill(hist.Hist(a["eta"], a["pt"], a["charge"], storage=w,
                                       name="nominal", label="Events"), 1),
            "syst": _fill(hist.Hist(a["pt"], a["syst"], a["pass"], storage=w), 2),
        },
        "data": {
            "counts": _fill(hist.Hist(a["nvtx"], a["phi"], storage=hist.storage.Int64()), 3),
            "double": _fill(hist.Hist(a["run"], a["charge"], storage=hist.storage.Double()), 4),
        },
    }  # fmt: skip


def fitinput_axes() -> list[hist.axis.AxesMixin]:
    """The channel axes of ``fitinput_v1.hdf5`` (version 1 kept no flow bins)."""
    return [
        hist.axis.Regular(4, 26.0, 56.0, name="pt", underflow=False, overflow=False),
        hist.axis.Variable([-2.4, 0.0, 2.4], name="eta", underflow=False, overflow=False),
        hist.axis.IntCategory([-1, 1], name="charge"),
    ]


def fitinput_hists() -> dict[str, hist.Hist]:
    """Data, signal, background and the signal's up/down variation of ``fitinput_v1.hdf5``."""
    axes = fitinput_axes()
    out = {}
    for k, name in enumerate(("data", "sig", "bkg", "up", "down")):
        h = hist.Hist(*axes, storage=hist.storage.Weight())
        rng = np.random.default_rng(10 + k)
        h.view().value = rng.uniform(50.0, 150.0, h.view().shape).round()
        h.view().variance = h.view().value * 0.1
        out[name] = h
    out["up"].view().value = out["sig"].view().value * 1.05
    out["down"].view().value = out["sig"].view().value * 0.97
    return out


def fitresult_hist() -> hist.Hist:
    """The histogram stored under ``/hists/prefit/ch/sig`` of ``fitresult_v1.hdf5``."""
    return fitinput_hists()["sig"]
