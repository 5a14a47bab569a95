"""Boson lineshape: the processor's mass/width weights and the generator's sampler against an
independent numerical integration (scipy quad) of the running-width Breit-Wigner written here:

    f(m; M, G) = 2m / ((m^2 - M^2)^2 + m^4 G^2 / M^2),   G(M') = G (M'/M)^3 for a mass shift.

Neither the weights nor the sampler are used to build the expectations.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from wremnants_dask.processors import theory
from wremnants_dask.synth import kinematics

MW, GW, W_WINDOW = 80.379, 2.085, (50.0, 110.0)
MZ, GZ, Z_WINDOW = 91.1876, 2.4952, (50.0, 130.0)


def f(m: float, mass: float, width: float) -> float:
    return 2 * m / ((m * m - mass**2) ** 2 + (m * m * width / mass) ** 2)


def _quad(g, lo: float, hi: float, peak: float) -> float:
    pts = [p for p in (peak - 3, peak, peak + 3) if lo < p < hi]
    return integrate.quad(g, lo, hi, points=pts, epsabs=0, epsrel=1e-12, limit=500)[0]


def bin_probs(mass: float, width: float, window, edges) -> np.ndarray:
    """P(m in bin) for the lineshape normalised on ``window``."""
    norm = _quad(lambda m: f(m, mass, width), *window, mass)
    return (
        np.array(
            [_quad(lambda m: f(m, mass, width), a, b, mass) for a, b in zip(edges[:-1], edges[1:])]
        )
        / norm
    )


def reweighted_probs(weight_col, mass0, width0, window, edges) -> np.ndarray:
    """P(m in bin) of the nominal lineshape times the weight column (a function of m)."""
    norm = _quad(lambda m: f(m, mass0, width0), *window, mass0)

    def g(m):
        return f(m, mass0, width0) * weight_col(np.array([m]))[0]

    return np.array([_quad(g, a, b, mass0) for a, b in zip(edges[:-1], edges[1:])]) / norm


EDGES_W = np.array([50.0, 70.0, 76.0, 78.0, 79.0, 80.0, 80.5, 81.0, 82.0, 84.0, 90.0, 110.0])


def test_density_normalised_by_quad():
    for mass, width, window in ((MW, GW, W_WINDOW), (MZ, GZ, Z_WINDOW)):
        val = _quad(
            lambda m, a=mass, g=width, w=window: theory.bw_density(m, a, g, *w), *window, mass
        )
        assert val == pytest.approx(1.0, rel=1e-9)
        m = np.array([60.0, mass, mass + 1.3, 100.0])
        ratio = theory.bw_density(m, mass, width, *window) / [f(x, mass, width) for x in m]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # same shape up to the norm


@pytest.mark.parametrize("shift_mev", [-100, -50, 10, 100])
def test_mass_weights_against_quad(shift_mev):
    """Bin probabilities of the reweighted nominal = those of the lineshape at M' with the
    width G (M'/M)^3, to the integration's precision (1e-9 relative)."""
    k = theory.MASS_SHIFTS_MEV.index(shift_mev)
    m1 = MW + shift_mev * 1e-3
    g1 = GW * (m1 / MW) ** 3

    def col(m):
        return theory.mass_weights(m, MW, GW, lo=W_WINDOW[0], hi=W_WINDOW[1])[:, k]

    got = reweighted_probs(col, MW, GW, W_WINDOW, EDGES_W)
    np.testing.assert_allclose(got, bin_probs(m1, g1, W_WINDOW, EDGES_W), rtol=1e-9)
    assert got.sum() == pytest.approx(1.0, rel=1e-9)  # the rate on the window is kept
    # the re-injected defect: a fixed width (or the wrong mass) is resolved at this precision
    fixed = bin_probs(m1, GW, W_WINDOW, EDGES_W)
    assert np.max(np.abs(got / fixed - 1)) > 1e-5 * abs(shift_mev) / 10


def test_fixed_width_form_is_resolved():
    """The running-width and fixed-width (M^2 G^2) forms differ far more than the tolerance."""

    def fixed(m, mass, width):
        return 2 * m / ((m * m - mass**2) ** 2 + (mass * width) ** 2)

    norm = _quad(lambda m: fixed(m, MW, GW), *W_WINDOW, MW)
    p_fixed = (
        np.array(
            [_quad(lambda m: fixed(m, MW, GW), a, b, MW) for a, b in zip(EDGES_W[:-1], EDGES_W[1:])]
        )
        / norm
    )
    p_run = bin_probs(MW, GW, W_WINDOW, EDGES_W)
    assert np.max(np.abs(p_fixed / p_run - 1)) > 1e-3
    dens = theory.bw_density(EDGES_W[1:-1], MW, GW, *W_WINDOW)
    run = np.array([f(x, MW, GW) for x in EDGES_W[1:-1]])
    np.testing.assert_allclose(dens / run, dens[0] / run[0], rtol=1e-12)


@pytest.mark.parametrize(
    ("boson", "mass", "width", "window", "delta"),
    [("W", MW, GW, W_WINDOW, 0.0006), ("Z", MZ, GZ, Z_WINDOW, 0.0008)],
)
def test_width_weights_default_and_quad(boson, mass, width, window, delta):
    assert theory.WIDTH_SHIFTS_GEV[boson] == delta  # the CMS choice, not the PDG +-42 MeV
    edges = np.linspace(mass - 6, mass + 6, 7)
    edges = np.concatenate([[window[0]], edges, [window[1]]])
    for k, g1 in enumerate((width - delta, width + delta)):

        def col(m, k=k):
            return theory.width_weights(m, mass, width, delta, lo=window[0], hi=window[1])[:, k]

        got = reweighted_probs(col, mass, width, window, edges)
        np.testing.assert_allclose(got, bin_probs(mass, g1, window, edges), rtol=1e-9)
    with pytest.raises(ValueError, match="width variation"):
        theory.width_weights(np.array([80.0]), mass, width, -0.001)


def test_width_option_reaches_processor():
    from wremnants_dask.engine.processor import ProcessorError
    from wremnants_dask.processors.common import _width_unc

    assert _width_unc(None) == {"W": 0.0006, "Z": 0.0008}
    assert _width_unc({"W": 0.042}) == {"W": 0.042, "Z": 0.0008}
    with pytest.raises(ProcessorError, match="width_unc_gev"):
        _width_unc({"H": 0.1})


def test_generator_sampler_against_quad():
    """The synthetic generator's masses follow the running-width lineshape (chi2 on bins)."""
    n = 400_000
    m = kinematics.sample_bw(np.random.default_rng(3), n, MW, GW, W_WINDOW)
    counts, _ = np.histogram(m, EDGES_W)
    expected = n * bin_probs(MW, GW, W_WINDOW, EDGES_W)
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert stats.chi2.sf(chi2, len(counts) - 1) > 1e-4, chi2
    # the test resolves a 50 MeV error of the sampler's mass
    shifted = n * bin_probs(MW + 0.05, GW, W_WINDOW, EDGES_W)
    chi2_wrong = float(np.sum((counts - shifted) ** 2 / shifted))
    assert stats.chi2.sf(chi2_wrong, len(counts) - 1) < 1e-6, chi2_wrong
