"""Fit input writer: variations, symmetrisation, storage, HDF5 provenance, bad input."""

from __future__ import annotations

import hist
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputError, FitInputWriter, read_fit_input
from wremnants_dask.fitting.hessian import make_hessian
from wremnants_dask.fitting.model import FitModel
from wremnants_dask.fitting.symmetrize import symmetrize
from wremnants_dask.fitting.synthmodel import build_synthetic


def _writer(**kw):
    ax = reg(3)
    w = FitInputWriter(**kw)
    w.add_channel("c", [ax])
    w.add_data(hw(ax, [10.0, 20.0, 30.0]), "c")
    w.add_process(hw(ax, [5.0, 10.0, 15.0], [1.0, 1.0, 1.0]), "sig", "c", signal=True)
    w.add_process(hw(ax, [5.0, 10.0, 10.0]), "bkg", "c")
    return w, ax


def test_variation_axis_gives_one_parameter_per_entry():
    w, ax = _writer()
    var = hist.Hist(
        ax,
        hist.axis.StrCategory(["a", "b"], name="pdf"),
        hist.axis.StrCategory(["dn", "up"], name="downUp"),
    )
    base = np.array([5.0, 10.0, 15.0])
    var.view()[:, 0, 0], var.view()[:, 0, 1] = base * 0.9, base * 1.2
    var.view()[:, 1, 0], var.view()[:, 1, 1] = base * 0.95, base * 1.05
    names = w.add_shape_systematic("pdf", "sig", "c", variations=var, updown_axis="downUp")
    assert names == ["pdf_a", "pdf_b"]
    fi = w.build()
    k = list(fi.shape_param).index(fi.param_index("pdf_a"))
    rows = np.arange(3) * 2  # sig is process 0
    np.testing.assert_allclose(fi.shape_avg[rows, k], 0.5 * (np.log(1.2) - np.log(0.9)))
    np.testing.assert_allclose(fi.shape_hd[rows, k], 0.5 * (np.log(1.2) + np.log(0.9)))
    # the model reproduces the templates exactly at theta = +-1
    m = FitModel(fi)
    for v, fac in ((1.0, 1.2), (-1.0, 0.9)):
        x = m.x0.copy()
        x[fi.param_index("pdf_a")] = v
        np.testing.assert_allclose(
            np.asarray(m.yields(jnp.asarray(x)))[:, 0], base * fac, rtol=1e-12
        )


def test_symmetrisation_options():
    vu, vd = np.array([0.3]), np.array([-0.1])
    assert symmetrize("s", vu, vd, "none")[0][1:] == pytest.approx((0.2, 0.1))
    assert symmetrize("s", vu, vd, "average")[0][1:] == pytest.approx((0.2, 0.0))
    assert symmetrize("s", vu, vd, "conservative")[0][1] == pytest.approx(0.3)
    lin = symmetrize("s", vu, vd, "linear")
    assert [n for n, *_ in lin] == ["sSymAvg", "sSymDiff"]
    assert lin[1][1] == pytest.approx(0.1)
    assert symmetrize("s", vu, vd, "quadratic")[1][1] == pytest.approx(0.1 * np.sqrt(3))
    # linear split keeps the variance (vu^2 + vd^2)/2
    assert sum(a[0] ** 2 for _, a, _ in lin) == pytest.approx(0.5 * (0.3**2 + 0.1**2))
    with pytest.raises(ValueError, match="symmetrize"):
        symmetrize("s", vu, vd, "bogus")


@pytest.mark.parametrize(
    "bad, match",
    [
        (
            lambda w, ax: w.add_process(hw(ax, [1.0, -2.0, 3.0]), "neg", "c"),
            "negative yield.*'neg'",
        ),
        (lambda w, ax: w.add_process(hw(ax, [1.0, np.nan, 3.0]), "nan", "c"), "non-finite.*'nan'"),
        (lambda w, ax: w.add_process(hw(reg(4), [1.0] * 4), "wide", "c"), "binning.*'c'"),
        (lambda w, ax: w.add_process(hw(ax, [1.0] * 3), "p", "nochan"), "unknown channel 'nochan'"),
        (lambda w, ax: w.add_norm_systematic("n", "nosuch", 1.1), "unknown process 'nosuch'"),
        (
            lambda w, ax: w.add_shape_systematic("s", "bkg", "c", up=hw(ax, [1.0, np.inf, 2.0])),
            "non-finite variation.*'s'",
        ),
        (lambda w, ax: w.add_data(hw(ax, [-1.0, 2.0, 3.0]), "c"), "negative.*data.*'c'"),
    ],
)
def test_bad_input_is_a_clear_error(bad, match):
    w, ax = _writer()
    with pytest.raises(FitInputError, match=match):
        bad(w, ax)


def test_unknown_parameter_names_are_errors():
    from wremnants_dask.fitting.fitter import Fitter

    w, _ = _writer()
    fi = w.build()
    with pytest.raises(FitInputError, match="unknown parameter 'nope'"):
        Fitter(fi, freeze=["nope"])
    w.add_group("g", ["ghost"])
    with pytest.raises(FitInputError, match="unknown parameter 'ghost'"):
        w.build()


def test_hdf5_roundtrip_with_provenance(tmp_path):
    w, _ = _writer()
    w.add_norm_systematic("bn", "bkg", (0.9, 1.15), groups=["norms"])
    path = w.write(tmp_path / "fi.hdf5", args={"x": 1}, inputs_metadata=[{"stage": "histmaker"}])
    fi, meta = read_fit_input(path)
    assert meta["stage"] == "fitinput" and meta["inputs"] == [{"stage": "histmaker"}]
    ref = w.build()
    np.testing.assert_array_equal(fi.nominal, ref.nominal)
    np.testing.assert_array_equal(fi.norm_logup, ref.norm_logup)
    assert fi.groups == {"norms": ["bn"]} and fi.param_names == ref.param_names


def test_sparse_equals_dense_and_chunked_hessian_is_exact():
    """Sparse and dense storage give the same likelihood, gradient and Hessian; the chunked
    Hessian equals jax.hessian; the structured Jacobian equals jax.jacfwd."""
    kw = dict(nsyst=12, nnorm=3, neta=6, npt=5, signal_per_bin=500.0, asymmetric=True)
    fd, truth, _ = build_synthetic(sparse=False, **kw)
    fs, _, _ = build_synthetic(sparse=True, **kw)
    md, ms = FitModel(fd), FitModel(fs)
    x = jnp.asarray(truth + 0.3)
    assert float(md.nll(x, md.obs)) == pytest.approx(float(ms.nll(x, ms.obs)), rel=1e-12)
    np.testing.assert_allclose(
        jax.grad(md.nll)(x, md.obs), jax.grad(ms.nll)(x, ms.obs), rtol=1e-9, atol=1e-9
    )
    H = jax.jit(jax.hessian(md.nll))(x, md.obs)
    Hc = make_hessian(ms, mem_bytes=8 * 12 * (fs.nbins * fs.nproc + fs.npar) * 7)(x, ms.obs)
    np.testing.assert_allclose(Hc, H, rtol=1e-9, atol=1e-8)
    J = jax.jacfwd(lambda y: md.yields(y).sum(1))(x)
    np.testing.assert_allclose(md.jacobian_totals(x), J, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(ms.jacobian_totals(x), J, rtol=1e-10, atol=1e-8)


def test_model_shares_large_tensors_without_copy(tmp_path):
    """Large tensors are handed to XLA without a copy: read_fit_input reads them aligned, and
    an unaligned in-memory tensor is moved once into aligned memory (same values)."""
    from wremnants_dask.fitting.fitinput import LARGE_ARRAY

    fi, _, w = build_synthetic(nsyst=40, nnorm=2, neta=12, npt=10)
    assert fi.shape_avg.size > LARGE_ARRAY
    unaligned = np.empty(fi.shape_avg.size + 1)[1:].reshape(fi.shape_avg.shape)
    unaligned[...] = fi.shape_avg
    fi.shape_avg = unaligned
    m = FitModel(fi)
    assert fi.shape_avg is not unaligned and fi.shape_avg.ctypes.data % 64 == 0
    np.testing.assert_array_equal(fi.shape_avg, unaligned)
    assert np.shares_memory(np.asarray(m.arrays["shape_avg"]), fi.shape_avg)

    path = w.write(tmp_path / "fi.hdf5")
    fr, _ = read_fit_input(path)
    before = fr.shape_avg
    mr = FitModel(fr)
    assert fr.shape_avg is before  # already aligned: nothing moved
    assert np.shares_memory(np.asarray(mr.arrays["shape_avg"]), fr.shape_avg)
