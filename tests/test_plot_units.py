"""Plot helpers against independent results: covariance bands of projections (explicit
projection matrices), scan crossings (analytic parabola), ratio ranges, provenance chain."""

from __future__ import annotations

import numpy as np
import pytest

from wremnants_dask.plotting import draw, plotlog
from wremnants_dask.plotting.bands import project, projected_errors


def _explicit_projection(shape: tuple[int, ...], keep: tuple[int, ...]) -> np.ndarray:
    """P[out, in] with a 1 where input bin (C order over shape) lands in output bin."""
    idx = np.array(list(np.ndindex(*shape)))
    kept_shape = [shape[k] for k in keep]
    out = np.ravel_multi_index(tuple(idx[:, k] for k in keep), kept_shape) if keep else 0
    P = np.zeros((int(np.prod(kept_shape)) if keep else 1, len(idx)))
    P[out, np.arange(len(idx))] = 1.0
    return P


@pytest.mark.parametrize("keep", [(0,), (1,), (2,), (2, 0, 1), (1, 2), ()])
def test_projected_errors_match_explicit_matrix(keep: tuple[int, ...]) -> None:
    rng = np.random.default_rng(3)
    shape, npar = (3, 4, 2), 5
    jac = rng.normal(size=(int(np.prod(shape)), npar))
    a = rng.normal(size=(npar, npar))
    cov = a @ a.T  # correlated parameters
    P = _explicit_projection(shape, keep)
    truth = np.sqrt(np.diag(P @ jac @ cov @ jac.T @ P.T))
    np.testing.assert_allclose(projected_errors(jac, cov, shape, keep), truth, rtol=1e-12)
    if keep and len(keep) < 3:
        # summing per-bin errors in quadrature (what the band replaces) is wrong here
        naive = np.sqrt(P @ np.diag(jac @ cov @ jac.T))
        assert not np.allclose(naive, truth, rtol=1e-3)


def test_project_orders_axes_as_asked() -> None:
    a = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(project(a, (2, 0), 3), a.sum(axis=1).T)
    np.testing.assert_array_equal(project(a, (1,), 3), a.sum(axis=(0, 2)))


def test_scan_crossings_of_a_parabola() -> None:
    # q = ((x - 1) / 0.5)^2 crosses 1 at 0.5 and 1.5, and 4 at 0 and 2
    x = np.linspace(-1, 3, 401)
    q = ((x - 1) / 0.5) ** 2
    np.testing.assert_allclose(draw.crossings(x, q, 1.0), [0.5, 1.5], atol=1e-3)
    np.testing.assert_allclose(draw.crossings(x, q, 4.0), [0.0, 2.0], atol=1e-3)
    assert draw.crossings(x, q, -1.0) == []


def test_ratio_limits_hold_every_point() -> None:
    ratio = np.array([0.7, 1.0, 1.4, np.nan])
    err = np.array([0.1, 0.05, 0.2, np.nan])
    lo, hi = draw.ratio_limits(ratio, err)
    assert lo <= 0.6 and hi >= 1.6 and hi - lo < 1.6
    # a bin floored to 1e-3 expected events does not blow the range up
    total = np.array([100.0, 120.0, 90.0, 1e-3])
    lo, hi = draw.ratio_limits(np.array([0.9, 1.0, 1.1, 1e3]), np.full(4, 0.05), total=total)
    assert hi < 2
    # unrolled (many bins): a handful of few-event outliers do not set the range
    rng = np.random.default_rng(1)
    r = 1 + 0.05 * rng.normal(size=1000)
    r[:5] = 50.0
    lo, hi = draw.ratio_limits(r, np.full(1000, 0.05))
    assert 0.7 < lo < 0.95 and 1.05 < hi < 1.3


def test_metadata_chain_follows_both_spellings() -> None:
    meta = {
        "stage": "fit",
        "inputs": [{"stage": "setup_fit", "inputs_metadata": [{"stage": "histmaker"}]}],
    }
    assert [m["stage"] for m in plotlog.metadata_chain(meta)] == ["fit", "setup_fit", "histmaker"]


def test_log_names_command_git_and_chain() -> None:
    text = plotlog.log_text(
        "a plot", input_file="x.hdf5",
        input_metadata={"stage": "fit", "command": "python -m fit", "inputs": [{"stage": "histmaker"}]},
        yields=plotlog.yields_table([("Wmunu", 10.0, 1.0)]),
    )  # fmt: skip
    for needle in (
        "command:",
        "git:",
        "time:",
        "Wmunu",
        "stage=fit",
        "stage=histmaker",
        "python -m fit",
    ):
        assert needle in text


@pytest.mark.parametrize(
    "lumi_fb, text",
    [(0.001, "1 $\\mathrm{pb^{-1}}$"), (0.0365, "36.5 $\\mathrm{pb^{-1}}$"),
     (16.8, "16.8 $\\mathrm{fb^{-1}}$"), (138.0, "138 $\\mathrm{fb^{-1}}$"),
     (1.0, "1 $\\mathrm{fb^{-1}}$")],
)  # fmt: skip
def test_lumi_label_unit(lumi_fb: float, text: str) -> None:
    """Below 1 fb^-1 the label is in pb^-1 (the CI's reduced sample read "0.001 fb^-1")."""
    assert draw.lumi_text(lumi_fb) == text
