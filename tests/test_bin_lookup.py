"""The compiled bin lookup agrees with boost-histogram's own fill on every axis kind."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from wremnants_dask.engine import bin_lookup
from wremnants_dask.engine.tensorhist import TensorHist

pytest.importorskip("numba")

FLOWS = [(True, True), (False, False), (True, False), (False, True)]


def _axes_of_kind(kind: str) -> list:
    out = []
    for under, over in FLOWS:
        if kind == "regular":
            out.append(hist.axis.Regular(7, -1.3, 2.9, underflow=under, overflow=over, name="x"))
        elif kind == "variable":
            edges = [-2.0, -0.5, 0.0, 0.1, 1.7, 3.0]
            out.append(hist.axis.Variable(edges, underflow=under, overflow=over, name="x"))
        elif kind == "integer":
            out.append(hist.axis.Integer(-2, 4, underflow=under, overflow=over, name="x"))
    if kind == "boolean":
        out.append(hist.axis.Boolean(name="x"))
    return out


def _values(ax, dtype, rng) -> np.ndarray:
    """Random values around the axis plus its edges, their neighbours and (floats) NaN."""
    e = np.asarray(ax.edges, dtype=np.float64)
    lo, hi = e[0] - 1.5, e[-1] + 1.5
    v = np.concatenate(
        [rng.uniform(lo, hi, 5000), e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf)]
    )
    if np.dtype(dtype).kind == "f":
        if not isinstance(ax, hist.axis.Integer):  # boost casts NaN to int there
            v = np.concatenate([v, [np.nan] * 3])
        return v.astype(dtype)
    if np.dtype(dtype) == np.bool_:
        return rng.random(len(v)) > 0.4
    return np.round(v).astype(dtype)


@pytest.mark.parametrize("path", ["compiled", "numpy"])
@pytest.mark.parametrize("kind", ["regular", "variable", "integer", "boolean"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int32, np.bool_])
def test_one_axis_fill_equals_hist(kind: str, dtype, path: str, monkeypatch) -> None:
    """Both lookups (the compiled one, and the numpy one used without numba) equal boost."""
    rng = np.random.default_rng(7)
    for ax in _axes_of_kind(kind):
        assert bin_lookup.cached([ax], [1]) is not None, ax
    if path == "numpy":
        monkeypatch.setattr(bin_lookup, "cached", lambda axes, strides: None)
    for ax in _axes_of_kind(kind):
        v = _values(ax, dtype, rng)
        w = rng.normal(1.0, 0.3, len(v))
        ours = TensorHist([ax], storage="weight")
        ours.fill(v, weight=w)
        ref = hist.Hist(ax, storage=hist.storage.Weight())
        if isinstance(ax, hist.axis.Integer | hist.axis.Boolean):
            # hist's fill takes only integers there; boost's ax.index casts the others
            with np.errstate(invalid="ignore"):
                v = np.asarray(ax.index(v), dtype=np.int64) + int(ax.edges[0])
        ref.fill(v, weight=w)
        got = ours.to_hist()
        np.testing.assert_allclose(got.values(flow=True), ref.values(flow=True), rtol=1e-12)
        np.testing.assert_allclose(got.variances(flow=True), ref.variances(flow=True), rtol=1e-12)


def test_five_axes_and_tensor_equal_hist() -> None:
    """A W-mass-like 5D histogram (float32 pt, a charge axis without flow, two booleans) and a
    tensor axis: each tensor slice equals a hist fill with weight * tensor[:, k]."""
    rng = np.random.default_rng(3)
    n = 20_000
    axes = [
        hist.axis.Regular(48, -2.4, 2.4, name="eta"),
        hist.axis.Variable([26, 30, 35, 40, 45, 55], name="pt"),
        hist.axis.Regular(2, -2, 2, underflow=False, overflow=False, name="charge"),
        hist.axis.Boolean(name="iso"),
        hist.axis.Integer(0, 3, name="njet"),
    ]
    vals = [
        rng.uniform(-2.6, 2.6, n),
        rng.uniform(20, 60, n).astype(np.float32),
        rng.choice([-1.0, 1.0, 3.0], n),
        rng.random(n) > 0.3,
        rng.integers(-1, 5, n),
    ]
    w = rng.normal(1, 0.1, n)
    t = rng.normal(1, 0.05, (n, 4)).astype(np.float32)
    from wremnants_dask.engine.tensorhist import tensor_axis

    ours = TensorHist(axes, [tensor_axis("pdf", 4)], storage="double")
    ours.fill(*vals, weight=w, tensor=t)
    got = ours.to_hist()
    for k in range(4):
        ref = hist.Hist(*axes, storage=hist.storage.Double())
        ref.fill(*vals, weight=w * t[:, k].astype(np.float64))
        np.testing.assert_allclose(got.values(flow=True)[..., k], ref.values(flow=True), rtol=1e-12)


@pytest.mark.parametrize(
    "ax",
    [
        hist.axis.StrCategory(["a", "b"], name="x"),
        hist.axis.IntCategory([3, 1, 7], name="x"),
        hist.axis.Regular(5, 1, 100, transform=hist.axis.transform.log, name="x"),
        hist.axis.Regular(6, 0, 6.3, circular=True, name="x"),
    ],
)
def test_axes_not_modelled_keep_the_numpy_path(ax) -> None:
    assert bin_lookup.cached([ax], [1]) is None
    rng = np.random.default_rng(5)
    if isinstance(ax, hist.axis.StrCategory):
        v = np.array(["a", "b", "c"] * 50)
    elif isinstance(ax, hist.axis.IntCategory):
        v = rng.choice([1, 3, 7, 9], 150)
    else:
        v = rng.uniform(-1, 120, 150)
    ours = TensorHist([ax])
    ours.fill(v)
    ref = hist.Hist(ax)
    ref.fill(v)
    np.testing.assert_array_equal(ours.to_hist().values(flow=True), ref.values(flow=True))


def test_lookup_is_faster_than_per_axis_numpy() -> None:
    """The reason the kernels exist, as a same-run ratio (never an absolute time)."""
    import time

    rng = np.random.default_rng(1)
    n = 300_000
    from wremnants_dask.processors.muon_kinematics import kinematic_axes

    axes = kinematic_axes()
    vals = [
        rng.uniform(-2.5, 2.5, n),
        rng.uniform(20, 60, n),
        rng.choice([-1.0, 1.0], n),
        rng.random(n) > 0.3,
        rng.random(n) > 0.5,
    ]
    h = TensorHist(axes)
    lookup = bin_lookup.cached(axes, h._strides)
    lookup(vals)

    def per_axis_numpy() -> None:
        flat = np.zeros(n, dtype=np.int64)
        for ax, v, s in zip(axes, vals, h._strides):
            flat += (np.asarray(ax.index(v)) + int(ax.traits.underflow)) * s

    def best(fn) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    assert best(lambda: lookup(vals)) < best(per_axis_numpy)
