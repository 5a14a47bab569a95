"""Theory weight tensors: Breit-Wigner mass/width reweighting, PDF and QCD-scale tensors."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot
from conftest import NANOAOD_DY
from scipy import integrate, stats

from wremnants_dask.processors import theory


def test_bw_density_normalised_on_window():
    for lo, hi in ((60.0, 120.0), (50.0, 110.0), (None, None)):
        a = 1.0 if lo is None else lo
        b = 400.0 if hi is None else hi
        val, _ = integrate.quad(
            theory.bw_density, a, b, args=(91.1876, 2.4952, lo, hi), points=[91.2]
        )
        # the open window misses only the far tails (m < 1, m > 400): < 1e-3
        assert val == pytest.approx(1.0, abs=1e-3 if lo is None else 1e-9)


def test_mass_weights_reweight_a_sampled_lineshape():
    """Events drawn at M0 and reweighted to M0+100 MeV match events drawn at M0+100 MeV."""
    rng = np.random.default_rng(1)
    m0, g0, lo, hi = 80.379, 2.085, 60.0, 100.0

    def sample(mass: float, width: float, n: int) -> np.ndarray:
        # inverse CDF of the running-width BW in s = m^2 on [lo, hi] (a Lorentzian in s)
        g2 = (width / mass) ** 2
        s0, b = mass**2 / (1 + g2), mass**2 * np.sqrt(g2) / (1 + g2)
        a0, a1 = np.arctan((lo**2 - s0) / b), np.arctan((hi**2 - s0) / b)
        return np.sqrt(s0 + b * np.tan(a0 + rng.random(n) * (a1 - a0)))

    n = 400_000
    nominal = sample(m0, g0, n)
    shifted = sample(m0 + 0.1, g0 * ((m0 + 0.1) / m0) ** 3, n)
    w = theory.mass_weights(nominal, m0, g0, lo=lo, hi=hi)
    assert w.shape == (n, 21)
    np.testing.assert_array_equal(w[:, 10], 1.0)
    edges = np.linspace(76.0, 85.0, 19)
    h_rw, _ = np.histogram(nominal, edges, weights=w[:, 20])
    h_rw2, _ = np.histogram(nominal, edges, weights=w[:, 20] ** 2)
    h_sh, _ = np.histogram(shifted, edges)
    chi2 = np.sum((h_rw - h_sh) ** 2 / (h_rw2 + h_sh))
    assert stats.chi2.sf(chi2, len(h_sh)) > 1e-3
    # and the shift is resolved: the unweighted nominal is incompatible with the shifted sample
    h_nom, _ = np.histogram(nominal, edges)
    chi2_nom = np.sum((h_nom - h_sh) ** 2 / (h_nom + h_sh))
    assert stats.chi2.sf(chi2_nom, len(h_sh)) < 1e-6
    # the weights conserve the total rate on the window (normalised lineshape)
    assert w[:, 0].mean() == pytest.approx(1.0, abs=5e-3)


def test_width_weights_order_and_normalisation():
    m = np.linspace(70, 110, 4001)
    w = theory.width_weights(m, 91.1876, 2.4952, 0.1, lo=70.0, hi=110.0)
    dens = theory.bw_density(m, 91.1876, 2.4952, 70.0, 110.0)
    for k in range(2):
        assert integrate.trapezoid(w[:, k] * dens, m) == pytest.approx(1.0, rel=1e-4)
    peak = np.argmin(abs(m - 91.1876))
    assert w[peak, 0] > 1 > w[peak, 1]  # narrower width -> higher peak


def test_boson_mass_from_real_nanoaod():
    ev = uproot.open(NANOAOD_DY)["Events"].arrays(
        ["GenPart_pdgId", "GenPart_statusFlags", "GenPart_mass"]
    )
    m = theory.last_copy_boson_mass(ev.GenPart_pdgId, ev.GenPart_statusFlags, ev.GenPart_mass, [23])
    assert m.shape == (40,) and np.all((m > 50) & (m < 150))
    none = theory.last_copy_boson_mass(
        ev.GenPart_pdgId, ev.GenPart_statusFlags, ev.GenPart_mass, [24]
    )
    assert np.all(np.isnan(none))
    assert np.all(theory.mass_weights(none, 80.4, 2.1) == 1.0)


def test_pdf_and_scale_tensors_real_nanoaod():
    tree = uproot.open(NANOAOD_DY)["Events"]
    ev = tree.arrays(["LHEPdfWeight", "LHEScaleWeight"])
    n_pdf = theory.n_pdf_from_title(tree["LHEPdfWeight"].title)
    assert n_pdf == 33  # this file: LHA IDs 91400 - 91432
    pdf = theory.pdf_weights(ev.LHEPdfWeight, n_pdf)
    assert pdf.shape == (40, 33)
    np.testing.assert_allclose(pdf[:, 0], ak.to_numpy(ev.LHEPdfWeight[:, 0]))
    with pytest.raises(ValueError, match="LHEPdfWeight has \\[33\\] entries"):
        theory.pdf_weights(ev.LHEPdfWeight, 103)
    sc = theory.scale_weights(ev.LHEScaleWeight)
    assert sc.shape == (40, 3, 3)
    # title: [1] is muR=0.5 muF=1, [5] is muR=1 muF=2, [4] nominal
    np.testing.assert_allclose(sc[:, 0, 1], ak.to_numpy(ev.LHEScaleWeight[:, 1]))
    np.testing.assert_allclose(sc[:, 1, 2], ak.to_numpy(ev.LHEScaleWeight[:, 5]))
    np.testing.assert_allclose(sc[:, 1, 1], 1.0, atol=1e-3)
    eight = ak.concatenate([ev.LHEScaleWeight[:, :4], ev.LHEScaleWeight[:, 5:]], axis=1)
    sc8 = theory.scale_weights(eight)
    np.testing.assert_array_equal(sc8[:, 1, 1], 1.0)
    np.testing.assert_allclose(sc8[:, 2, 2], sc[:, 2, 2])
