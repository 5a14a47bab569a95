"""HDF5 round trip: every axis type, Double and Weight storage, metadata, atomic writes."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from wremnants_dask.histograms.histio import HistFile, write_hists
from wremnants_dask.utils.provenance import make_metadata


def _hists():
    rng = np.random.default_rng(5)
    axes = [
        hist.axis.Regular(7, -2.4, 2.4, name="eta", label=r"$\eta$"),
        hist.axis.Variable([0, 1, 3, 10], name="pt", label="pT", overflow=False),
        hist.axis.Integer(-2, 2, name="q", underflow=False),
        hist.axis.IntCategory([1, 5], name="ic"),
        hist.axis.StrCategory(["a", "b"], name="sc", label="cat"),
        hist.axis.Boolean(name="ok"),
    ]
    hw = hist.Hist(*axes, storage=hist.storage.Weight(), name="hw", label="weighted")
    vals = [
        rng.normal(0, 2, 500),
        rng.exponential(3, 500),
        rng.integers(-3, 3, 500),
        rng.choice([1, 5, 9], 500),
        rng.choice(["a", "b", "c"], 500),
        rng.random(500) > 0.5,
    ]
    hw.fill(*vals, weight=rng.normal(1, 1, 500))
    hd = hist.Hist(
        hist.axis.Regular(5, 0, 1, name="x", circular=True),
        hist.axis.Integer(0, 3, name="t", underflow=False, overflow=False),
    )
    hd.fill(rng.random(100) * 3, rng.integers(0, 3, 100))
    return {"hw": hw, "hd": hd}


def test_round_trip(tmp_path):
    hs = _hists()
    meta = make_metadata({"x": 1}, input_files=["a.root"], stage="test")
    path = write_hists(
        tmp_path / "out.hdf5", {"dsA": (hs, {"xsec_pb": 3.5}), "dsB": ({}, {})}, meta
    )
    with HistFile(path) as f:
        assert f.datasets == ["dsA", "dsB"]
        assert f.metadata["stage"] == "test" and f.metadata["input_files"] == ["a.root"]
        assert f.info("dsA") == {"xsec_pb": 3.5}
        assert sorted(f.names("dsA")) == ["hd", "hw"]
        for name, h in hs.items():
            got = f.get("dsA", name)
            assert got.axes == h.axes
            assert [a.label for a in got.axes] == [a.label for a in h.axes]
            assert got.storage_type is h.storage_type
            assert got.name == (h.name or name)
            if name == "hw":
                np.testing.assert_array_equal(got.view(flow=True).value, h.view(flow=True).value)
                np.testing.assert_array_equal(
                    got.view(flow=True).variance, h.view(flow=True).variance
                )
            else:
                np.testing.assert_array_equal(got.view(flow=True), h.view(flow=True))
        with pytest.raises(KeyError, match="no histogram 'nope'"):
            f.get("dsA", "nope")
        with pytest.raises(KeyError, match="no dataset 'dsC'"):
            f.get("dsC", "hw")


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = write_hists(tmp_path / "out.hdf5", {"a": (_hists(), {})}, {"v": 1})

    class Bad:
        axes = ()

    with pytest.raises(AttributeError):
        write_hists(path, {"a": ({"bad": Bad()}, {})}, {"v": 2})
    with HistFile(path) as f:
        assert f.metadata == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.hdf5"]


def test_not_a_histfile(tmp_path):
    p = tmp_path / "x.hdf5"
    p.write_bytes(b"nothing")
    with pytest.raises(OSError, match="x.hdf5"):
        HistFile(p)
