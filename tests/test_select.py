"""``engine.select.SingleObject``: the one-object selection on flat numpy buffers must give
exactly what the awkward expression it replaces gives (the histograms of the light analysis
stay bit-identical, issue 17), on the fast path, on the fallbacks and on the column trace."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
from conftest import NANOAOD_DY
from engine_helpers import data, dy

from wremnants_dask import engine
from wremnants_dask.engine import select
from wremnants_dask.engine.event_weights import Weights
from wremnants_dask.engine.processor import Events, Processor
from wremnants_dask.engine.select import Rows, SingleObject, as_numpy
from wremnants_dask.engine.tracing import ChunkTask, trace_columns
from wremnants_dask.processors.muon_kinematics import MuonKinematicsProcessor

F32 = np.float32
PT_MIN = 25.1  # not a float32: the cut must compare in float32, as awkward (NEP 50) does
EDGE = F32(PT_MIN)
FIELDS = ("pt", "eta", "phi", "charge")


@pytest.fixture(params=["kernel", "numpy"])
def path(request, monkeypatch):
    """Both implementations of the per-event count: the numba kernel and the numpy one."""
    if request.param == "kernel" and not select.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(select, "USE_KERNEL", request.param == "kernel")
    return request.param


def chunk(seed: int = 1, n: int = 2000) -> ak.Array:
    """Random events of 0-4 muons; pt values include float32(25.1) and its neighbours and
    |eta| values at float32(2.4), where a float64 comparison would decide otherwise."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 5, n)
    m = int(counts.sum())
    pt = rng.choice(
        np.array([EDGE, np.nextafter(EDGE, F32(0)), np.nextafter(EDGE, F32(99)), 10, 40], F32),
        m,
    )
    eta = rng.choice(np.array([0.3, F32(2.4), -F32(2.4), np.nextafter(F32(2.4), F32(0))], F32), m)
    off = np.concatenate([[0], np.cumsum(counts)])

    def jag(x):
        return ak.Array(
            ak.contents.ListOffsetArray(ak.index.Index64(off), ak.contents.NumpyArray(x))
        )

    return ak.Array(
        {
            "nMuon": counts.astype(np.uint32),
            "Muon_pt": jag(pt),
            "Muon_eta": jag(eta),
            "Muon_phi": jag(rng.uniform(-3, 3, m).astype(F32)),
            "Muon_charge": jag(rng.choice(np.array([-1, 1], np.int32), m)),
            "Muon_mediumId": jag(rng.random(m) < 0.8),
            "MET_pt": rng.uniform(0, 80, n).astype(F32),
        }
    )


def cut(m):
    return (m.pt > PT_MIN) & (abs(m.eta) < 2.4) & m.mediumId


def awkward_truth(events: Events, sel_extra=None):
    """The awkward expression SingleObject replaces."""
    mu = events.Muon[cut(events.Muon)]
    one = ak.num(mu.pt, axis=1) == 1
    sel = one if sel_extra is None else one & sel_extra
    return one, sel, {f: ak.flatten(getattr(mu, f)[sel]) for f in FIELDS}


def check_same(events: Events, expect_fast: bool, sel_extra=None) -> None:
    one_obj = SingleObject(events.Muon, cut)
    assert one_obj.fast is expect_fast
    one, sel, want = awkward_truth(events, sel_extra)
    np.testing.assert_array_equal(as_numpy(one_obj.one), ak.to_numpy(one))
    mine = one_obj.one if sel_extra is None else one_obj.one & as_numpy(sel_extra)
    for f in FIELDS:
        got = one_obj.values(f, mine)
        assert np.asarray(got).dtype == ak.to_numpy(want[f]).dtype
        np.testing.assert_array_equal(np.asarray(got), ak.to_numpy(want[f]))


def test_fast_path_equals_awkward(path):
    ev = Events(chunk())
    check_same(ev, True)
    trig = ak.Array(np.random.default_rng(5).random(len(ev)) < 0.7)
    check_same(Events(chunk()), True, sel_extra=trig)


def test_offsets_not_from_zero(path):
    """A slice of a chunk (offsets starting inside the content) stays on the fast path."""
    check_same(Events(chunk()[317:1201]), True)


def test_masked_events_fall_back_to_awkward():
    arr = chunk()
    keep = np.random.default_rng(2).random(len(arr)) < 0.5
    check_same(Events(arr)[keep], False)


def test_fields_with_other_offsets_fall_back():
    """A field whose lists differ from the others' (broken input): the awkward expression,
    which raises the broadcasting error itself."""
    arr = chunk()
    eta = ak.to_numpy(ak.flatten(arr.Muon_eta))
    counts = np.roll(ak.to_numpy(ak.num(arr.Muon_eta)), 1)
    arr = ak.with_field(arr, ak.unflatten(eta, counts), "Muon_eta")
    with pytest.raises(ValueError):
        SingleObject(Events(arr).Muon, cut)


def test_mask_outside_one_is_an_error(path):
    ev = Events(chunk())
    s = SingleObject(ev.Muon, cut)
    with pytest.raises(ValueError, match="subset of .one"):
        s.values("pt", np.ones(len(s.one), bool))


def _float64_cut(m):
    """The mistake the fast path must not make: comparing float32 values in float64."""
    return (np.asarray(m.pt, dtype=np.float64) > PT_MIN) & (abs(m.eta) < 2.4) & m.mediumId


def test_float64_comparison_is_detected():
    """Injected error: a float64 comparison keeps muons at float32(25.1) the awkward
    expression drops, so the selection differs (the comparison above must see it)."""
    ev = Events(chunk())
    wrong = SingleObject(ev.Muon, _float64_cut)
    one, _, _ = awkward_truth(ev)
    assert not np.array_equal(as_numpy(wrong.one), ak.to_numpy(one))


class AwkwardMuonKinematics(MuonKinematicsProcessor):
    """The processor's selection written in plain awkward (its code before SingleObject)."""

    def process(self, events, out):
        muons = events.Muon
        mu = muons[(muons.pt > self.pt_min) & (abs(muons.eta) < 2.4) & muons.mediumId]
        weights = Weights()
        if not out.is_data:
            weights.add("genWeight", events.genWeight)
        nominal = weights.weight() if weights.factors else None
        cf = out.cutflow("main")
        cf.start(events.nMuon >= 0, nominal)
        cf.cut("trigger", events.branch(self.trigger))
        sel = cf.cut("one good muon", ak.num(mu.pt, axis=1) == 1)
        pt, eta, phi, charge, iso = (
            ak.flatten(getattr(mu, f)[sel])
            for f in ("pt", "eta", "phi", "charge", "pfRelIso04_all")
        )
        met_pt, met_phi = events.MET.pt[sel], events.MET.phi[sel]
        mt = np.sqrt(2.0 * pt * met_pt * (1.0 - np.cos(phi - met_phi)))
        w = nominal[sel] if nominal is not None else None
        out.fill("nominal", eta, pt, charge, iso < self.iso_max, mt > self.mt_min, weight=w)


@pytest.mark.parametrize("pt_min", [25.0, 26.3])
@pytest.mark.parametrize("make", [dy, data], ids=["dy", "data"])
def test_processor_bit_identical_to_awkward(pt_min, make, path):
    """The real CMS files (simulation and data), several chunks: histograms (sums and sums of
    squares), cut flows and traced columns identical to the awkward version, bit for bit
    (same machine, same ufuncs on the same values: any difference is a selection difference)."""
    ds = make()
    step = 13  # the file's 40 events in 4 chunks: offsets from inside the baskets
    got = engine.run(
        [ds], MuonKinematicsProcessor(systematics=False, pt_min=pt_min), step_size=step
    )
    ref = engine.run([ds], AwkwardMuonKinematics(systematics=False, pt_min=pt_min), step_size=step)
    g, r = got[ds.name], ref[ds.name]
    assert g.columns == r.columns
    np.testing.assert_array_equal(
        g.hists["nominal"].values(flow=True), r.hists["nominal"].values(flow=True)
    )
    np.testing.assert_array_equal(
        g.hists["nominal"].variances(flow=True), r.hists["nominal"].variances(flow=True)
    )
    assert g.cutflows["main"].to_dict() == r.cutflows["main"].to_dict()
    assert g.cutflows["main"].counts[-1] > 0  # something was selected


def test_trace_reads_the_same_columns():
    """On the typetracer SingleObject runs the awkward expression: the columns are those the
    cut and the values read, nothing more."""
    import uproot

    form = uproot.open(NANOAOD_DY)["Events"].arrays(entry_stop=1).layout.form

    class OnlyPt(Processor):
        def histograms(self, dataset):
            return {}

        def process(self, events, out):
            s = SingleObject(events.Muon, lambda m: m.pt > 25.0)
            s.values("phi", s.one)

    cols = trace_columns(ChunkTask(OnlyPt(), dy(), {}), form)
    # genWeight: the chunk task's own sum of weights (simulation)
    assert cols == {"Muon_pt", "Muon_phi", "genWeight"}


def test_rows_equal_boolean_indexing():
    rng = np.random.default_rng(3)
    sel = rng.random(1000) < 0.4
    flat, table = rng.random(1000).astype(F32), rng.random((1000, 9))
    rows = Rows(ak.Array(sel))  # an awkward mask too
    np.testing.assert_array_equal(rows(flat), flat[sel])
    np.testing.assert_array_equal(rows(table), table[sel])
    jag = ak.Array([[1.0]] * 1000)
    assert ak.to_list(rows(jag)) == ak.to_list(jag[sel])


def test_kernel_and_numpy_counts_agree():
    """Per event: exactly one good object, and the position of the first good one (-1 when
    none), from both implementations and from a plain loop; empty events included."""
    rng = np.random.default_rng(7)
    counts = rng.integers(0, 4, 500)
    off = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    good = rng.random(int(off[-1])) < 0.4
    one_np, first_np = select._one_and_first_numpy(off, good)
    want_one = [good[a:b].sum() == 1 for a, b in zip(off[:-1], off[1:])]
    want_first = [
        a + int(np.argmax(good[a:b])) if good[a:b].any() else -1 for a, b in zip(off[:-1], off[1:])
    ]
    np.testing.assert_array_equal(one_np, want_one)
    np.testing.assert_array_equal(first_np, want_first)
    if select.HAVE_NUMBA:
        one_k, first_k = select._one_and_first(off, good)
        np.testing.assert_array_equal(one_k, want_one)
        np.testing.assert_array_equal(first_k, want_first)
