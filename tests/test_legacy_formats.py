"""One axis serialisation (UHI, ``histograms.axes``) for histogram files, fit inputs and fit
results; the version-1 files in ``tests/data`` (written by the old writers) still read back to
the same axes and values."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hist
import numpy as np
import pytest
from legacy_formats import fitinput_axes, fitinput_hists, fitresult_hist, histio_hists

from wremnants_dask.fitting.fitinput import FORMAT_VERSION, read_fit_input
from wremnants_dask.fitting.fitinput_writer import FitInputWriter
from wremnants_dask.fitting.output import read_hist
from wremnants_dask.histograms import axes as uhi_axes
from wremnants_dask.histograms import histio
from wremnants_dask.plotting import bands
from wremnants_dask.plotting.axes import axis_info

DATA = Path(__file__).parent / "data"

AXES = [
    hist.axis.Regular(5, 26.0, 56.0, name="pt", label=r"$p_T$"),
    hist.axis.Regular(3, 0.1, 0.7, name="r", growth=True),
    hist.axis.Regular(4, -np.pi, np.pi, name="phi", circular=True),
    hist.axis.Variable([-2.4, -0.3, 0.0, 1.7], name="eta", overflow=False),
    hist.axis.Integer(0, 5, name="nvtx", underflow=False),
    hist.axis.Integer(-2, 2, name="run", growth=True),
    hist.axis.IntCategory([-1, 1], name="charge"),
    hist.axis.StrCategory(["a", "b"], name="syst", growth=True),
    hist.axis.Boolean(name="pass"),
]


def _same_hist(a: hist.Hist, b: hist.Hist, key: str) -> None:
    assert a.axes == b.axes  # types, edges, flow and growth traits, names and labels
    assert a.storage_type is b.storage_type and a.name == (b.name or key)  # histio names it
    va, vb = a.view(flow=True), b.view(flow=True)
    if va.dtype.names:
        for field in va.dtype.names:
            assert np.array_equal(va[field], vb[field])
    else:
        assert np.array_equal(va, vb)


@pytest.mark.parametrize("ax", AXES, ids=lambda a: f"{type(a).__name__}-{a.name}")
def test_uhi_round_trip_through_json(ax):
    d = json.loads(json.dumps(uhi_axes.axis_to_uhi(ax)))
    back = uhi_axes.axis_from_uhi(d)
    assert back == ax and type(back) is type(ax)
    assert np.array_equal(back.edges, ax.edges)  # bit for bit, Regular rebuilt from lower/upper


def test_axis_helpers():
    regular, variable = AXES[0], hist.axis.Variable(np.linspace(26.0, 56.0, 6), name="pt")
    assert uhi_axes.same_binning(regular, variable)  # edges agree to rounding
    assert not uhi_axes.same_binning(regular, hist.axis.Regular(5, 26.0, 56.1, name="pt"))
    assert not uhi_axes.same_binning(AXES[6], hist.axis.IntCategory([1, -1], name="charge"))
    assert uhi_axes.same_binning(AXES[4], uhi_axes.flowless(AXES[4]))
    noflow = uhi_axes.flowless(AXES[0])
    assert not noflow.traits.underflow and not noflow.traits.overflow and noflow.name == "pt"
    assert not uhi_axes.flowless(AXES[6]).traits.overflow
    edges = {a.name: uhi_axes.axis_edges(uhi_axes.axis_to_uhi(a)) for a in AXES}
    assert np.array_equal(edges["pt"], AXES[0].edges)
    assert np.array_equal(edges["nvtx"], np.arange(6) - 0.5)  # centred on the integers
    assert np.array_equal(edges["syst"], [-0.5, 0.5, 1.5])
    assert np.array_equal(edges["pass"], [-0.5, 0.5, 1.5])


@pytest.mark.parametrize("reader", ["uhi", "v1"])
def test_histio_v1_file_reads_back(reader):
    """The version-1 file gives the original histograms; read as UHI its axes would not parse
    (the reader must pick the dialect by the file's format)."""
    path = DATA / "histio_v1.hdf5"
    if reader == "uhi":
        with h5py.File(path) as f:
            d = json.loads(f["datasets/data/hists/counts"].attrs["axes"])[0]
        with pytest.raises(ValueError, match="not a UHI axis"):
            uhi_axes.axis_from_uhi(d)
        return
    with histio.HistFile(path) as hf:
        assert hf.format == "wremnants_dask.histio/1"
        for ds, hists in histio_hists().items():
            assert sorted(hf.names(ds)) == sorted(hists)
            for name, h in hists.items():
                _same_hist(hf.get(ds, name), h, name)


def test_histio_v2_writes_uhi_axes(tmp_path):
    payload = {ds: (hs, {}) for ds, hs in histio_hists().items()}
    path = histio.write_hists(tmp_path / "h.hdf5", payload, {})
    with histio.HistFile(path) as hf:
        assert hf.format == histio.FORMAT == "wremnants_dask.histio/2"
        for ds, hists in histio_hists().items():
            for name, h in hists.items():
                _same_hist(hf.get(ds, name), h, name)
    with h5py.File(path) as f:
        axes = json.loads(f["datasets/wplus_munu/hists/nominal"].attrs["axes"])
    assert [a["type"] for a in axes] == ["variable", "regular", "category_int"]


def _writer(hs: dict[str, hist.Hist]) -> FitInputWriter:
    w = FitInputWriter()
    w.add_channel("ch", fitinput_axes())
    w.add_data(hs["data"], "ch")
    w.add_process(hs["sig"], "sig", "ch", signal=True)
    w.add_process(hs["bkg"], "bkg", "ch")
    w.add_shape_systematic("shape", "sig", "ch", up=hs["up"], down=hs["down"])
    w.add_norm_systematic("lumi", ["sig", "bkg"], 1.02, groups=["luminosity"])
    return w


def test_fit_input_v1_file_reads_as_the_current_writer_builds(tmp_path):
    """Old fit input: the same channel axes (now UHI dicts) and the same tensors (to rounding)
    as the same input written today (version 2)."""
    old, _ = read_fit_input(DATA / "fitinput_v1.hdf5")
    new, _ = read_fit_input(_writer(fitinput_hists()).write(tmp_path / "fi.hdf5"))
    with h5py.File(tmp_path / "fi.hdf5") as f:
        assert int(f.attrs["format_version"]) == FORMAT_VERSION == 2
    for ch_old, ch_new in zip(old.channels, new.channels):
        assert [a["type"] for a in ch_old.axes] == ["regular", "variable", "category_int"]
        for d_old, d_new, ax in zip(ch_old.axes, ch_new.axes, fitinput_axes()):
            a_old, a_new = uhi_axes.axis_from_uhi(d_old), uhi_axes.axis_from_uhi(d_new)
            assert np.array_equal(a_old.edges, ax.edges) and a_old.name == ax.name
            assert uhi_axes.same_binning(a_old, a_new) and type(a_old) is type(a_new)
            assert not a_new.traits.underflow and not a_new.traits.overflow
        assert (ch_old.start, ch_old.stop) == (ch_new.start, ch_new.stop) == (0, 16)
    # the stored file was written on another machine: tensors computed from the same inputs
    # agree to rounding (shape_hd differed by 3.5e-18 of 9e-3 after a numpy update), not bits
    for name in ("data", "nominal", "sumw2", "shape_avg", "shape_hd", "norm_logup"):
        a, b = getattr(old, name), getattr(new, name)
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15, err_msg=name)
    assert np.array_equal(old.nominal[:, 0], fitinput_hists()["sig"].values().reshape(-1))
    assert old.param_names == new.param_names


def test_fit_result_v1_hist_reads_back():
    with h5py.File(DATA / "fitresult_v1.hdf5") as f:
        h = read_hist(f["hists/prefit/ch/sig"])
    ref = fitresult_hist()
    assert [a.name for a in h.axes] == [a.name for a in ref.axes]
    assert all(uhi_axes.same_binning(a, b) for a, b in zip(h.axes, ref.axes))
    assert np.array_equal(h.values(), ref.values())
    assert np.array_equal(h.variances(), ref.variances())


def test_plotting_reads_fit_input_axes():
    """A version-1 fit input's channel axes reach the plots as the same binning: the plots'
    axis reader gives the edges, and a projection on pT keeps every event."""
    fi, _ = read_fit_input(DATA / "fitinput_v1.hdf5")
    axes = [uhi_axes.axis_from_uhi(a) for a in fi.channels[0].axes]
    infos = [axis_info(a) for a in axes]
    names = [i.name for i in infos]
    ref = fitinput_axes()
    assert names == [a.name for a in ref]
    for info, a in zip(infos, ref):
        if a.traits.continuous:
            np.testing.assert_array_equal(info.edges, np.asarray(a.edges, dtype=float))
        else:  # categories: unit-width bins labelled by the category values
            assert info.categories == [str(c) for c in a]
    shape = tuple(len(i.edges) - 1 for i in infos)
    nominal = fi.nominal.reshape(*shape, -1)
    per_pt = bands.project(nominal, (names.index("pt"),), len(shape))
    assert per_pt.shape == (4, 2)
    np.testing.assert_allclose(per_pt.sum(0), fi.nominal.sum(0), rtol=1e-12)
