"""Processor histograms against generator truth.

- Mass reweighting (W in mw, Z in mz_dilepton) against samples generated at mass + 100 MeV.
  Both samples use the same seed (the generator draws the line shape by inverse CDF, so the
  events are the same up to the mass shift): their difference is nearly noise-free, and the
  reweighted difference must match it within the reweighting's own statistical noise, which is
  measured from the spread over the 16 files of each sample.
- Weight-based momentum-scale variations against a direct pT shift of the same events.
- Scale factors (+ pileup, prefiring) applied to simulation reproduce pseudo-data generated
  with the data efficiencies; without them the prediction is off.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from wremnants_dask import engine
from wremnants_dask.corrections import build
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, SynthParams, generate_pseudodata, generate_sample

N_FILES = 16  # t^2 with 15 dof: light enough tails for the mean + 4 sd threshold
BASE = SynthParams(neg_weight_fraction=0.0)  # identical weights in paired samples


def _shifted(p: SynthParams, boson: str, dm: float) -> SynthParams:
    """A sample generated at mass + dm, with the width that goes with it: Gamma (M'/M)^3."""
    m, g = getattr(p, f"m{boson}"), getattr(p, f"Gamma{boson}")
    return dataclasses.replace(p, **{f"m{boson}": m + dm, f"Gamma{boson}": g * ((m + dm) / m) ** 3})


def _datasets(files, name, group, process):
    return [
        Dataset(f"{name}_{i}", group, (str(f),), False, PROCESSES[process].xsec_pb, "2018")
        for i, f in enumerate(files)
    ]


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("truth_samples")
    out = {}
    for key, proc, params, n in (
        ("w_nom", "wplus_munu", BASE, 64_000),
        ("w_shift", "wplus_munu", _shifted(BASE, "W", 0.1), 64_000),
        ("z_nom", "zmumu", BASE, 24_000),
        ("z_shift", "zmumu", _shifted(BASE, "Z", 0.1), 24_000),
    ):
        out[key] = generate_sample(proc, n, root / key, seed=2024, params=params, n_files=N_FILES)
    return out


def _per_file(result, names, hist_name, project):
    return np.stack([project(result[n].hists[hist_name]) for n in names])


def paired_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Sum over bins of t^2 for the per-file differences a_k - b_k (files k independent)."""
    d = a - b
    k = d.shape[0]
    sem2 = d.var(axis=0, ddof=1) / k
    ok = sem2 > 0
    return float(np.sum(d.mean(axis=0)[ok] ** 2 / sem2[ok])), int(ok.sum())


def threshold(nbins: int, k: int = N_FILES) -> float:
    """Mean + 4 sd of a sum of nbins F(1, k-1) variables (t^2 with k-1 dof)."""
    d2 = k - 1
    mean = d2 / (d2 - 2)
    var = 2 * d2**2 * (d2 - 1) / ((d2 - 2) ** 2 * (d2 - 4))
    return nbins * mean + 4 * np.sqrt(nbins * var)


@pytest.fixture(scope="module")
def w_result(samples):
    """mw histograms of the nominal W sample and the samples generated at other masses."""
    sets = {
        key: _datasets(samples[key], key, "Wmunu", "wplus_munu") for key in ("w_nom", "w_shift")
    }
    res = engine.run([d for ds in sets.values() for d in ds], get_processor("mw"))
    return res, {k: [d.name for d in ds] for k, ds in sets.items()}


def test_w_mass_weights_match_shifted_sample(w_result):
    res, names = w_result

    def pt_proj(h):  # pT spectrum, 3 GeV bins, all other axes summed
        v = h.values()
        v = v.sum(axis=(0, 2, 3, 4))
        return v.reshape(10, 3, *v.shape[1:]).sum(axis=1)

    names_n, names_s = names["w_nom"], names["w_shift"]
    mass = _per_file(res, names_n, "nominal_massWeightW", pt_proj)  # (k, 10, 21)
    shifted = _per_file(res, names_s, "nominal", pt_proj)
    nominal = _per_file(res, names_n, "nominal", pt_proj)
    np.testing.assert_allclose(mass[..., 10], nominal, rtol=1e-12)
    s_rw, nb = paired_statistic(mass[..., 20], shifted)
    s_nom, _ = paired_statistic(nominal, shifted)
    s_wrong, _ = paired_statistic(mass[..., 0], shifted)  # -100 MeV instead of +100 MeV
    # reweighted +100 MeV agrees with the +100 MeV sample; no reweighting, or the wrong
    # direction, does not (the 40 MeV muon-pT shift is resolved by the paired samples)
    assert s_rw < threshold(nb), (s_rw, s_nom)
    assert s_nom > threshold(nb) and s_wrong > 3 * threshold(nb), (s_rw, s_nom, s_wrong)
    # width variations change the spectrum; the nominal sum rule of every tensor
    r = res[names_n[0]]
    for name, idx in (
        ("nominal_pdf", (0,)),
        ("nominal_qcdScale", (1, 1)),
        ("nominal_massWeightW", (10,)),
    ):
        h = r.hists[name]
        np.testing.assert_allclose(h.values()[(..., *idx)], r.hists["nominal"].values(), rtol=1e-6)
    assert r.hists["nominal_pdf"].axes["pdfVar"].size == 103
    assert [a.name for a in r.hists["nominal_qcdScale"].axes][-2:] == ["muRfact", "muFfact"]
    assert list(r.hists["nominal_massWeightW"].axes["massShift"])[0] == "massShift-100MeV"
    assert not np.allclose(
        r.hists["nominal_widthWeightW"].values()[..., 1], r.hists["nominal"].values()
    )


def test_z_mass_weights_match_shifted_sample(samples):
    nom = _datasets(samples["z_nom"], "znom", "Zmumu", "zmumu")
    sh = _datasets(samples["z_shift"], "zsh", "Zmumu", "zmumu")
    res = engine.run(nom + sh, get_processor("mz_dilepton"))

    def mll_proj(h):  # 80-100 GeV in 1 GeV bins
        return h.values()[20:40]

    names_n, names_s = [d.name for d in nom], [d.name for d in sh]
    mass = _per_file(res, names_n, "mll_massWeightZ", mll_proj)
    shifted = _per_file(res, names_s, "mll", mll_proj)
    nominal = _per_file(res, names_n, "mll", mll_proj)
    s_rw, nb = paired_statistic(mass[..., 20], shifted)
    s_nom, _ = paired_statistic(nominal, shifted)
    s_wrong, _ = paired_statistic(mass[..., 0], shifted)
    assert s_rw < threshold(nb), (s_rw, s_nom)
    assert s_nom > threshold(nb) and s_wrong > 3 * threshold(nb), (s_rw, s_nom, s_wrong)
    r = res[names_n[0]]
    assert "mll_massWeightW" not in r.hists and "ptll_yll_massWeightZ" in r.hists


def test_scale_weights_match_direct_shift(samples, tmp_path):
    """Sum over eta slices of the per-slice +delta variations == pT of every muon x (1+delta)."""
    truth = json.loads(json.dumps(SynthParams().truth()))
    payload = build.write_payload(build.build_payload(truth, scale_var=0.01), tmp_path)
    nom = _datasets(samples["w_nom"], "wnom", "Wmunu", "wplus_munu")
    res_w = engine.run(nom, get_processor("mw", corrections=str(payload)))
    res_d = engine.run(
        nom, get_processor("mw", corrections=str(payload), systematics=False, mc_pt_shift=0.01)
    )

    def pt_proj(h):
        v = h.values()
        return v.sum(axis=(0, 2, 3, 4))

    names = [d.name for d in nom]
    nominal = _per_file(res_w, names, "nominal", pt_proj)
    scale = _per_file(res_w, names, "nominal_muonScale", pt_proj)  # (k, pt, slice, downUpVar)
    # one muon per event: shifting every slice = nominal + sum over slices of (up - nominal)
    predicted = nominal + (scale[..., 1] - nominal[..., None]).sum(axis=-1)
    direct = _per_file(res_d, names, "nominal", pt_proj)
    s_w, nb = paired_statistic(predicted, direct)
    s_nom, _ = paired_statistic(nominal, direct)
    assert s_w < threshold(nb), (s_w, s_nom)
    assert s_nom > 3 * threshold(nb), s_nom
    down = nominal + (scale[..., 0] - nominal[..., None]).sum(axis=-1)
    centres = np.arange(26.5, 56.0)

    def mean_pt(h):
        return np.sum(h.sum(axis=0) * centres) / h.sum()

    assert mean_pt(down) < mean_pt(nominal) < mean_pt(predicted)


def test_scale_factors_reproduce_pseudodata(samples, tmp_path):
    """W+ pseudo-data (data efficiencies, pileup, scale, prefiring) vs corrected simulation."""
    lumi = 8.0
    info = generate_pseudodata(tmp_path / "data", lumi_pb=lumi, seed=77, processes=("wplus_munu",))
    data = Dataset("data", "Data", tuple(str(f) for f in info.files), True, None, "2018",
                   lumi_csv=str(info.lumi_csv), golden_json=str(info.golden_json))  # fmt: skip
    mc = Dataset("wplus", "Wmunu", tuple(str(f) for f in samples["w_nom"]), False,
                 PROCESSES["wplus_munu"].xsec_pb, "2018")  # fmt: skip
    truth = json.loads(json.dumps(SynthParams().truth()))
    truth["efficiency"]["data"] = truth["efficiency"]["mc"]  # scale factors = 1
    no_sf = build.write_payload(build.build_payload(truth), tmp_path)
    res = engine.run([data, mc], get_processor("mw", systematics=False))
    res_nosf = engine.run([mc], get_processor("mw", systematics=False, corrections=str(no_sf)))

    def proj(h):  # 8 eta regions x passIso
        v = h.values(), h.variances()
        return [x.sum(axis=(1, 2, 4)).reshape(8, 6, 2).sum(axis=1) for x in v]

    d, _ = proj(res["data"].hists["nominal"])
    norm = info.lumi_pb * mc.xsec_pb / res["wplus"].sumw_processed
    chi2 = {}
    for key, r in (("sf", res), ("nosf", res_nosf)):
        p, pv = proj(r["wplus"].hists["nominal"])
        chi2[key] = float(np.sum((d - p * norm) ** 2 / (d + pv * norm**2)))
        chi2[key + "_total"] = float(
            (d.sum() - p.sum() * norm) ** 2 / (d.sum() + pv.sum() * norm**2)
        )
    assert stats.chi2.sf(chi2["sf"], 16) > 1e-3 and chi2["sf_total"] < 9, chi2
    # without scale factors the prediction is off (the data efficiencies are 1-4% lower)
    assert stats.chi2.sf(chi2["nosf"], 16) < 1e-5 and chi2["nosf_total"] > 9, chi2
