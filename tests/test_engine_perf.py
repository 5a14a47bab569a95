"""Correctness of the engine's fast paths (they must give exactly what the plain paths give)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest

from wremnants_dask.engine import tensorhist
from wremnants_dask.engine.event_weights import Weights
from wremnants_dask.engine.processor import ChunkOutput, _select
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.inputs import files, reader
from wremnants_dask.processors.muon_kinematics import kinematic_axes


class _Mc:
    name, is_data = "mc", False


def _values(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    return (
        rng.uniform(-2.6, 2.6, n),  # some events outside: eta has flow, charge has none
        rng.uniform(20, 60, n),
        rng.choice([-1.0, 1.0, 3.0], n),  # 3.0 is dropped (charge axis without flow)
        rng.random(n) > 0.3,
        rng.random(n) > 0.5,
    )


@pytest.mark.parametrize("storage", ["double", "weight"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rows_kernel_with_dropped_events_matches_bincount(storage: str, dtype: type) -> None:
    rng = np.random.default_rng(3)
    n = 20_000
    vals = _values(rng, n)
    w = rng.normal(1, 0.1, n)
    t = rng.normal(1, 0.05, (n, 7)).astype(dtype)
    ref = TensorHist(kinematic_axes(), [tensor_axis("v", 7)], storage=storage)
    ref.fill(*vals, weight=w, tensor=t, method="bincount")
    if not tensorhist.HAVE_NUMBA:
        pytest.skip("numba not installed")
    got = TensorHist(kinematic_axes(), [tensor_axis("v", 7)], storage=storage)
    got.fill(*vals, weight=w, tensor=t, method="rows")
    np.testing.assert_allclose(got.values(), ref.values(), rtol=1e-12, atol=1e-12)
    if storage == "weight":
        np.testing.assert_allclose(got.variances(), ref.variances(), rtol=1e-12, atol=1e-12)


def test_shared_bin_index_gives_the_same_histograms() -> None:
    """ChunkOutput computes the bin index once per value arrays; sums are unchanged."""
    rng = np.random.default_rng(4)
    n = 5_000
    vals = _values(rng, n)
    w = rng.normal(1, 0.1, n)
    pdf = rng.normal(1, 0.02, (n, 11)).astype(np.float32)
    hs = {
        "nominal": TensorHist(kinematic_axes(), storage="weight"),
        "pdf": TensorHist(kinematic_axes(), [tensor_axis("p", 11)], storage="weight"),
    }
    out = ChunkOutput(_Mc(), hs)
    out.fill("nominal", *vals, weight=w)
    out.fill("pdf", *vals, weight=w, tensor=pdf)
    # the same arrays as awkward arrays and as new numpy views hit the cache as well
    out.fill("nominal", *(ak.Array(v) for v in vals), weight=w)
    assert len(out._index_cache) == 1
    ref_n = TensorHist(kinematic_axes(), storage="weight")
    ref_n.fill(*vals, weight=w)
    ref_n.fill(*vals, weight=w)
    ref_p = TensorHist(kinematic_axes(), [tensor_axis("p", 11)], storage="weight")
    ref_p.fill(*vals, tensor=w[:, None] * pdf.astype(np.float64), method="bincount")
    np.testing.assert_array_equal(hs["nominal"].values(), ref_n.values())
    np.testing.assert_allclose(hs["pdf"].values(), ref_p.values(), rtol=1e-12)
    np.testing.assert_allclose(hs["pdf"].variances(), ref_p.variances(), rtol=1e-12)
    # different axes with the same values: a separate index
    other = TensorHist([kinematic_axes()[0]], storage="double")
    out.hists["eta"] = other
    out.fill("eta", vals[0])
    ref_e = TensorHist([kinematic_axes()[0]], storage="double")
    ref_e.fill(vals[0])
    np.testing.assert_array_equal(other.values(), ref_e.values())


def test_variation_parts_equal_variation() -> None:
    rng = np.random.default_rng(5)
    w = Weights()
    w.add("gen", rng.normal(1, 0.1, 50).astype(np.float32))
    w.add("sf", rng.normal(1, 0.1, 50), up=np.ones(50) * 1.1, down=np.ones(50) * 0.9)
    w.add_variation("pdf", rng.normal(1, 0.02, (50, 3)).astype(np.float32))
    for name in ("pdf", "sf"):
        base, factors = w.variation_parts(name)
        np.testing.assert_array_equal(
            np.asarray(base, np.float64)[:, None] * factors, w.variation(name)
        )


def test_jagged_mask_fast_path_matches_awkward() -> None:
    rng = np.random.default_rng(6)
    counts = rng.poisson(1.5, 2_000)
    pt = ak.unflatten(rng.exponential(20, counts.sum()).astype(np.float32), counts)
    charge = ak.unflatten(rng.choice(np.array([-1, 1], np.int32), counts.sum()), counts)
    mask = (pt > 15) & (charge > 0)
    cache: dict = {}
    for arr in (pt, charge, pt[100:]):
        m = mask if len(arr) == len(mask) else mask[100:]
        got = _select(arr, m, cache)
        want = arr[m]
        assert got.type == want.type and ak.array_equal(got, want)
    assert ak.array_equal(_select(pt, pt > 1e9, {}), pt[pt > 1e9])
    # event-level masks and other selections go through awkward unchanged
    ev = rng.random(2_000) > 0.5
    assert ak.array_equal(_select(pt, ak.Array(ev), {}), pt[ev])


def test_chunk_reader_reads_only_its_columns_and_caches_the_open_tree(tmp_path) -> None:
    import uproot

    path = tmp_path / "f.root"
    with uproot.recreate(path) as f:
        f.mktree("Events", {"a": np.float64, "b": np.int64, "c": np.float64})
        f["Events"].extend({"a": np.arange(10.0), "b": np.arange(10), "c": np.ones(10)})
    info = files.inspect_file(str(path), "Events", want_form=True)
    chunk_reader = reader.ChunkReader("Events", ["a", "b"], reader.sub_form(info.form, ["a", "b"]))
    arr = chunk_reader((str(path), 2, 6))
    assert arr.fields == ["a", "b"] and arr.a.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert arr.layout.form == chunk_reader.form
    assert chunk_reader.project_columns(frozenset({"b"})).columns == ["b"]
    tree = files.open_tree(str(path), "Events")
    assert files.open_tree(str(path), "Events") is tree
