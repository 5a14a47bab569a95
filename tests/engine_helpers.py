"""Shared helpers of the engine tests: datasets on the real NanoAOD files, an independent
numpy implementation of the muon-kinematics selection (the truth the engine is checked against),
and small ROOT files written with uproot."""

from __future__ import annotations

from pathlib import Path

import hist
import numpy as np
import uproot
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.muon_kinematics import kinematic_axes


def dy(files=None, name="dy") -> Dataset:
    return Dataset(
        name, "Zmumu", tuple(str(f) for f in (files or [NANOAOD_DY])), False, 2000.0, "2018"
    )


def data(files=None, name="data") -> Dataset:
    return Dataset(
        name, "Data", tuple(str(f) for f in (files or [NANOAOD_DATA])), True, None, "2018"
    )


def reference_muon_kinematics(paths, is_data: bool, pt_min=25.0, iso_max=0.15, mt_min=40.0):
    """Event-loop implementation of MuonKinematicsProcessor on plain numpy arrays."""
    cols = [
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_mediumId",
        "Muon_pfRelIso04_all",
        "MET_pt",
        "MET_phi",
        "HLT_IsoMu24",
    ]
    if not is_data:
        cols += ["genWeight", "LHEPdfWeight"]
    nominal = hist.Hist(*kinematic_axes(), storage=hist.storage.Weight())
    pdf_rows, rows, counts = [], [], [0, 0, 0]
    for p in paths:
        a = uproot.open(p)["Events"].arrays(cols, library="np")
        for i in range(len(a["MET_pt"])):
            counts[0] += 1
            if not a["HLT_IsoMu24"][i]:
                continue
            counts[1] += 1
            pt, eta = a["Muon_pt"][i], a["Muon_eta"][i]
            good = (pt > pt_min) & (np.abs(eta) < 2.4) & a["Muon_mediumId"][i]
            if good.sum() != 1:
                continue
            counts[2] += 1
            j = np.flatnonzero(good)[0]
            dphi = a["Muon_phi"][i][j] - a["MET_phi"][i]
            mt = np.sqrt(2 * pt[j] * a["MET_pt"][i] * (1 - np.cos(dphi)))
            w = 1.0 if is_data else float(a["genWeight"][i])
            rows.append(
                (
                    eta[j],
                    pt[j],
                    a["Muon_charge"][i][j],
                    a["Muon_pfRelIso04_all"][i][j] < iso_max,
                    mt > mt_min,
                    w,
                )
            )
            if not is_data:
                pdf_rows.append(w * np.asarray(a["LHEPdfWeight"][i], dtype=np.float64))
    cols_v = list(zip(*rows)) if rows else [[]] * 6
    nominal.fill(*[np.asarray(c) for c in cols_v[:5]], weight=np.asarray(cols_v[5], dtype=float))
    return nominal, rows, np.array(pdf_rows), counts


def write_tree(path: Path, branches: dict, *, runs: bool = True) -> Path:
    """A small ROOT file with an Events tree (and a Runs tree with genEventSumw)."""
    with uproot.recreate(path) as f:
        _write_events(f, branches)
        if runs:
            f["Runs"] = {
                "run": np.array([1], np.uint32),
                "genEventSumw": np.array([10.0]),
                "genEventSumw2": np.array([10.0]),
                "genEventCount": np.array([10], np.int64),
            }
    return path


def copy_nano_subset(path: Path, drop: str | None = None, entry_stop: int | None = None) -> Path:
    """Copy the branches the muon-kinematics processor needs from the DY file (minus ``drop``)."""
    src = uproot.open(NANOAOD_DY)
    t = src["Events"]
    names = [
        "Muon_pt",
        "Muon_eta",
        "Muon_phi",
        "Muon_charge",
        "Muon_mediumId",
        "Muon_pfRelIso04_all",
        "MET_pt",
        "MET_phi",
        "HLT_IsoMu24",
        "genWeight",
        "LHEPdfWeight",
        "LHEScaleWeight",
    ]
    a = t.arrays([n for n in names if n != drop], entry_stop=entry_stop)
    out = {}
    for coll in ("Muon", "LHEPdfWeight", "LHEScaleWeight"):
        fields = {n: a[n] for n in a.fields if n.startswith(coll)}
        if fields:
            import awkward as ak

            out["Muon" if coll == "Muon" else coll] = (
                ak.zip({k[len("Muon_") :]: v for k, v in fields.items()})
                if coll == "Muon"
                else fields[coll]
            )
    for n in a.fields:
        if not n.startswith(("Muon", "LHE")):
            out[n] = a[n]
    runs = src["Runs"].arrays(
        ["run", "genEventSumw_", "genEventSumw2_", "genEventCount_"], library="np"
    )
    with uproot.recreate(path) as f:
        _write_events(f, out)
        f["Runs"] = {k.rstrip("_"): v for k, v in runs.items()}
    return path


def _write_events(f, branches: dict) -> None:
    """NanoAOD naming: a record collection ``Muon`` becomes ``Muon_pt``... with counter ``nMuon``."""
    import awkward as ak

    arrays = {
        k: (v if isinstance(v, ak.Array) else ak.Array(np.asarray(v))) for k, v in branches.items()
    }
    f.mktree(
        "Events",
        {k: v.type for k, v in arrays.items()},
        field_name=lambda outer, inner: inner if outer == "" else f"{outer}_{inner}",
    ).extend(arrays)
