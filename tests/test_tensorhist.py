"""TensorHist against plain hist fills of the same events (one fill per tensor component)."""

from __future__ import annotations

import pickle

import hist
import numpy as np
import pytest

from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis


def _axes():
    return [
        hist.axis.Regular(10, -2.0, 2.0, name="eta"),
        hist.axis.Variable([0, 1, 2.5, 4, 10], name="pt", underflow=False),
        hist.axis.Integer(-1, 2, name="q"),
        hist.axis.IntCategory([3, 7, 11], name="cat"),
        hist.axis.Boolean(name="pass"),
    ]


def _events(rng, n):
    eta = rng.normal(0, 1.5, n)
    eta[:5] = [np.nan, 2.0, -2.0, 1.999999, -2.0000001]
    pt = rng.exponential(3.0, n)
    pt[5:8] = [-1.0, 10.0, 0.0]  # underflow (dropped, no underflow bin), overflow, first edge
    q = rng.integers(-2, 3, n)
    cat = rng.choice([3, 7, 11, 5], n)  # 5 -> category overflow
    passed = rng.random(n) > 0.3
    return eta, pt, q, cat, passed


@pytest.mark.parametrize("storage", ["double", "weight"])
@pytest.mark.parametrize("method", ["auto", "bincount", "percomponent", "addat", "rows"])
def test_tensor_fill_matches_per_component_hist_fills(storage, method):
    from wremnants_dask.engine.tensorhist import HAVE_NUMBA

    if method == "rows" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    rng = np.random.default_rng(1)
    n = 5000
    vals = _events(rng, n)
    w = rng.normal(1.0, 0.5, n)
    tensor = rng.normal(1.0, 0.1, (n, 2, 3))
    th = TensorHist(
        _axes(), [tensor_axis("a", 2), tensor_axis("b", labels=["x", "y", "z"])], storage=storage
    )
    th.fill(*vals, weight=w, tensor=tensor, method=method)
    h = th.to_hist()
    assert [ax.name for ax in h.axes] == ["eta", "pt", "q", "cat", "pass", "a", "b"]
    assert list(h.axes["b"]) == ["x", "y", "z"]
    st = hist.storage.Weight() if storage == "weight" else hist.storage.Double()
    for i in range(2):
        for j in range(3):
            ref = hist.Hist(*_axes(), storage=st)
            ref.fill(*vals, weight=w * tensor[:, i, j])
            got = h[..., i, j]
            if storage == "weight":
                np.testing.assert_allclose(
                    got.view(flow=True).value, ref.view(flow=True).value, rtol=1e-12, atol=1e-12
                )
                np.testing.assert_allclose(
                    got.view(flow=True).variance,
                    ref.view(flow=True).variance,
                    rtol=1e-12,
                    atol=1e-12,
                )
            else:
                np.testing.assert_allclose(
                    got.view(flow=True), ref.view(flow=True), rtol=1e-12, atol=1e-12
                )


def test_nominal_fill_without_weights_counts_events():
    rng = np.random.default_rng(2)
    vals = _events(rng, 1000)
    th = TensorHist(_axes())
    th.fill(*vals)
    ref = hist.Hist(*_axes())
    ref.fill(*vals)
    np.testing.assert_array_equal(th.to_hist().view(flow=True), ref.view(flow=True))
    # the dropped pt underflow event is not counted
    assert th.to_hist().sum(flow=True) == ref.sum(flow=True) < 1000


def test_merge_equals_single_fill_and_pickles():
    rng = np.random.default_rng(3)
    vals = _events(rng, 3000)
    t = rng.random((3000, 4))
    whole = TensorHist(_axes(), [tensor_axis("k", 4)], storage="weight")
    whole.fill(*vals, tensor=t)
    parts = whole.empty_like()
    for sl in (slice(0, 1000), slice(1000, 1001), slice(1001, 3000)):
        p = whole.empty_like()
        p.fill(*(v[sl] for v in vals), tensor=t[sl])
        parts += pickle.loads(pickle.dumps(p))
    np.testing.assert_allclose(parts.values(), whole.values(), rtol=1e-13)
    np.testing.assert_allclose(parts.variances(), whole.variances(), rtol=1e-13)


def test_memory_layout_has_tensor_index_contiguous():
    th = TensorHist([hist.axis.Regular(4, 0, 1, name="x")], [tensor_axis("pdf", 103)])
    th.fill(np.array([0.5]), tensor=np.arange(103.0)[None, :])
    v = th.values()
    assert v.flags.c_contiguous and v.strides[-1] == 8
    np.testing.assert_array_equal(v[3], np.arange(103.0))  # bin 2 + underflow offset


@pytest.mark.parametrize("method", ["auto", "bincount", "addat", "percomponent"])
def test_weight_storage_keeps_values_and_squares_of_a_bin_adjacent(method):
    """Weight storage: one row of 2 x ntensor doubles per bin (values, then squares)."""
    th = TensorHist(
        [hist.axis.Regular(4, 0, 1, name="x")], [tensor_axis("pdf", 5)], storage="weight"
    )
    t = np.arange(10.0).reshape(2, 5)
    th.fill(np.array([0.5, 0.6]), weight=np.array([2.0, 3.0]), tensor=t, method=method)
    v, var = th.values(), th.variances()
    assert v.shape == var.shape == (6, 5)
    assert np.shares_memory(v, th._data) and np.shares_memory(var, th._data)
    # the squares of a bin follow its values in memory
    assert var.ctypes.data - v.ctypes.data == 5 * 8 and v.strides == (2 * 5 * 8, 8)
    np.testing.assert_array_equal(v[3], 2.0 * t[0] + 3.0 * t[1])
    np.testing.assert_array_equal(var[3], (2.0 * t[0]) ** 2 + (3.0 * t[1]) ** 2)
    assert v.sum() == v[3].sum() and var.sum() == var[3].sum()
    h = th.to_hist()
    np.testing.assert_array_equal(h.view(flow=True).value, v)
    np.testing.assert_array_equal(h.view(flow=True).variance, var)
    np.testing.assert_array_equal(th.values(flow=False), v[1:5])
    back = pickle.loads(pickle.dumps(th))
    back += th
    np.testing.assert_array_equal(back.values(), 2 * v)
    np.testing.assert_array_equal(back.variances(), 2 * var)
    empty = th.empty_like()
    assert empty.values().shape == (6, 5) and not empty.variances().any()


def test_errors_are_clear():
    x = hist.axis.Regular(4, 0, 1, name="x")
    with pytest.raises(ValueError, match="no flow"):
        TensorHist([x], [hist.axis.Integer(0, 3, name="t")])
    with pytest.raises(ValueError, match="growing"):
        TensorHist([hist.axis.StrCategory([], growth=True, name="s")])
    th = TensorHist([x], [tensor_axis("t", 3)], name="h")
    with pytest.raises(ValueError, match="tensor shape"):
        th.fill(np.zeros(2), tensor=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="pass tensor"):
        th.fill(np.zeros(2))
    with pytest.raises(ValueError, match="1 value arrays for 2 axes|value arrays"):
        TensorHist([x, hist.axis.Regular(2, 0, 1, name="y")]).fill(np.zeros(2))
