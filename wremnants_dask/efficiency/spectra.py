"""Pass/fail mass spectra of the ``tnp`` histograms, flattened to one row per efficiency bin.

A bin is (step, probe pT, probe eta, probe charge); its spectra are the pair-mass histograms of
passing and failing probes. Data sums every data dataset; simulation sums the datasets of the
signal group (Z -> mu mu by default): it provides the signal templates and the MC efficiency.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.histograms.histio import HistFile


class SpectraError(ValueError):
    """The histmaker output lacks what the extraction needs (message names file and dataset)."""


@dataclass
class Spectra:
    """Spectra of one sample kind (data or simulation) for every bin.

    ``passing``/``failing``: (n_bins, n_mass) counts, ``*_var`` their variances; bins are
    the C-ordered (step, pt, eta, charge) grid (``shape``). ``probes``: (step, fine pt, fine
    eta) probe counts in the fit range on the generator's grid (``fine_pt``, ``fine_eta``).
    """

    steps: list[str]
    mass_edges: np.ndarray
    pt_edges: np.ndarray
    eta_edges: np.ndarray
    charge_edges: np.ndarray
    passing: np.ndarray
    failing: np.ndarray
    passing_var: np.ndarray
    failing_var: np.ndarray
    probes: np.ndarray
    fine_pt: np.ndarray
    fine_eta: np.ndarray
    datasets: list[str]

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (
            len(self.steps),
            self.pt_edges.size - 1,
            self.eta_edges.size - 1,
            self.charge_edges.size - 1,
        )

    @property
    def n_bins(self) -> int:
        return int(np.prod(self.shape))

    def bin_index(self) -> dict[str, np.ndarray]:
        """Per flat bin: its step, pt, eta and charge indices."""
        grids = np.meshgrid(*[np.arange(s) for s in self.shape], indexing="ij")
        return {k: g.ravel() for k, g in zip(("step", "pt", "eta", "charge"), grids)}


def _axis_edges(h: Any, name: str) -> np.ndarray:
    return np.asarray(h.axes[name].edges, dtype=np.float64)


def read_spectra(
    path: str | Path, *, data: bool, signal_group: str = "Zmumu", datasets: list[str] | None = None
) -> Spectra:
    """Sum the ``tnp`` and ``probes`` histograms of the data (``data=True``) or signal-group
    simulation datasets of a histmaker output (or exactly ``datasets``)."""
    with HistFile(path) as f:
        if datasets is None:
            datasets = [
                d
                for d in f.datasets
                if (f.info(d)["is_data"] if data else f.info(d)["group"] == signal_group)
            ]
        if not datasets:
            kind = "data" if data else f"simulation of group {signal_group!r}"
            raise SpectraError(f"{path}: no {kind} dataset among {f.datasets}")
        total = None
        for d in datasets:
            if "tnp" not in f.names(d):
                raise SpectraError(f"{path}: dataset {d!r} has no 'tnp' histogram (run -a tnp)")
            h, p = f.get(d, "tnp"), f.get(d, "probes")
            if total is None:
                total = [h, p]
            else:
                total = [total[0] + h, total[1] + p]
    return spectra_from_hists(total[0], total[1], datasets, str(path))


def spectra_from_result(result: Any, *, data: bool, signal_group: str = "Zmumu") -> Spectra:
    """The same from an in-memory ``engine.RunResult`` (datasets chosen by is_data / group)."""
    names = [
        n
        for n, r in result.datasets.items()
        if (r.dataset.is_data if data else r.dataset.group == signal_group)
    ]
    if not names:
        kind = "data" if data else f"simulation of group {signal_group!r}"
        raise SpectraError(f"run result: no {kind} dataset among {list(result.datasets)}")
    h = sum((result[n].hists["tnp"] for n in names[1:]), result[names[0]].hists["tnp"])
    p = sum((result[n].hists["probes"] for n in names[1:]), result[names[0]].hists["probes"])
    return spectra_from_hists(h, p, names, "run result")


def spectra_from_hists(h: Any, p: Any, datasets: list[str], where: str) -> Spectra:
    """Flatten the summed ``tnp`` (and ``probes``) histograms into per-bin spectra."""
    path = where
    axes = [ax.name for ax in h.axes]
    want = ["mass", "pt", "eta", "charge", "step", "passFail"]
    if axes != want:
        raise SpectraError(f"{path}: 'tnp' histogram axes {axes}, expected {want}")
    view = h.view(flow=False)
    # (mass, pt, eta, charge, step, passFail) -> (step, pt, eta, charge, passFail, mass)
    vals = np.moveaxis(np.asarray(view["value"]), [4, 1, 2, 3, 5, 0], range(6))
    var = np.moveaxis(np.asarray(view["variance"]), [4, 1, 2, 3, 5, 0], range(6))
    n_mass = vals.shape[-1]
    vals = vals.reshape(-1, 2, n_mass)
    var = var.reshape(-1, 2, n_mass)
    return Spectra(
        steps=list(h.axes["step"]),
        mass_edges=_axis_edges(h, "mass"),
        pt_edges=_axis_edges(h, "pt"),
        eta_edges=_axis_edges(h, "eta"),
        charge_edges=_axis_edges(h, "charge"),
        passing=vals[:, 1],
        failing=vals[:, 0],
        passing_var=var[:, 1],
        failing_var=var[:, 0],
        probes=np.moveaxis(np.asarray(p.values(flow=False)), 2, 0),
        fine_pt=_axis_edges(p, "pt"),
        fine_eta=_axis_edges(p, "eta"),
        datasets=list(datasets),
    )
