"""Histogram operations checked against loop-based references and exact formulas."""

from __future__ import annotations

import hist
import numpy as np
import pytest

from wremnants_dask.fitsetup import histops


def _weighted(axes, rng, scale=100.0):
    h = hist.Hist(*axes, storage=hist.storage.Weight())
    shape = h.view(flow=True).shape
    vals = rng.uniform(0.5, 1.5, size=shape) * scale
    h.view(flow=True).value = vals
    h.view(flow=True).variance = vals * rng.uniform(0.5, 2.0, size=shape)
    return h


def _nominal_and_var(rng, n_var=4):
    eta = hist.axis.Regular(6, -2.4, 2.4, name="eta")
    pt = hist.axis.Regular(5, 26, 56, name="pt")
    charge = hist.axis.Regular(2, -2, 2, name="charge", underflow=False, overflow=False)
    var = hist.axis.Integer(0, n_var, name="syst", underflow=False, overflow=False)
    nom = _weighted([eta, pt, charge], rng)
    h = hist.Hist(eta, pt, charge, var, storage=hist.storage.Weight())
    f = rng.uniform(0.9, 1.1, size=h.view(flow=True).shape)
    h.view(flow=True).value = nom.view(flow=True).value[..., None] * f
    h.view(flow=True).variance = nom.view(flow=True).variance[..., None] * f**2
    return nom, h


# --- rebinning ------------------------------------------------------------------------------
def _rebin_reference(vals, old_edges, new_edges, axis):
    """Loop reference on flow arrays of a Regular axis with under/overflow."""
    vals = np.moveaxis(vals, axis, 0)
    out = np.zeros((len(new_edges) + 1,) + vals.shape[1:])
    out[0] += vals[0]
    out[-1] += vals[-1]
    for i in range(len(old_edges) - 1):
        lo = old_edges[i]
        if lo < new_edges[0] - 1e-12:
            j = 0
        elif lo >= new_edges[-1] - 1e-12:
            j = len(new_edges)
        else:
            j = 1 + max(k for k in range(len(new_edges) - 1) if new_edges[k] <= lo + 1e-12)
        out[j] += vals[i + 1]
    return np.moveaxis(out, 0, axis)


@pytest.mark.parametrize(
    "kw",
    [
        {"factor": 3},
        {"edges": [26, 29, 35, 44, 56]},
        {"edges": [29, 35, 44]},  # partial range: the rest goes to under/overflow
    ],
)
def test_rebin_matches_loop_and_conserves(kw):
    rng = np.random.default_rng(3)
    eta = hist.axis.Regular(4, -2.4, 2.4, name="eta")
    pt = hist.axis.Regular(30, 26, 56, name="pt")
    h = _weighted([eta, pt], rng)
    r = histops.rebin(h, "pt", **kw)
    new_edges = r.axes["pt"].edges
    if "edges" in kw:
        np.testing.assert_allclose(new_edges, kw["edges"])
    else:
        assert isinstance(r.axes["pt"], hist.axis.Regular) and len(r.axes["pt"]) == 10
    old = h.axes["pt"].edges
    for field in ("value", "variance"):
        ref = _rebin_reference(getattr(h.view(flow=True), field), old, new_edges, 1)
        np.testing.assert_allclose(getattr(r.view(flow=True), field), ref, rtol=1e-12)
    total, rtotal = h.sum(flow=True), r.sum(flow=True)
    assert rtotal.value == pytest.approx(total.value, rel=1e-12)
    assert rtotal.variance == pytest.approx(total.variance, rel=1e-12)


def test_rebin_double_storage_and_errors():
    h = hist.Hist(hist.axis.Regular(6, 0, 6, name="x", underflow=False, overflow=False))
    h.fill(np.array([0.5, 1.5, 1.5, 4.2, 5.9]))
    r = histops.rebin(h, "x", factor=2)
    np.testing.assert_allclose(r.values(), [3, 0, 2])
    with pytest.raises(ValueError, match="'x'.*no flow bin"):
        histops.rebin(h, "x", edges=[1, 3, 6])
    with pytest.raises(ValueError, match="not edges of the old axis"):
        histops.rebin(h, "x", edges=[0, 2.5, 6])
    with pytest.raises(ValueError, match="factor 4 does not divide"):
        histops.rebin(h, "x", factor=4)
    with pytest.raises(KeyError, match="no axis 'pt'"):
        histops.rebin(h, "pt", factor=2)


# --- normalisation and grouping -------------------------------------------------------------
@pytest.mark.parametrize("mode", ["linear", "quadratic"])
def test_group_processes_scaling(mode):
    rng = np.random.default_rng(5)
    ax = [hist.axis.Regular(8, 0, 8, name="pt")]
    hists = {s: _weighted(ax, rng) for s in ("data", "wplus_munu", "wminus_munu", "zmumu")}
    groups = {"Data": ["data"], "Wmunu": ["wplus_munu", "wminus_munu"], "Zmumu": ["zmumu"]}
    norms = {
        "wplus_munu": 1000.0 * 50.0 / 2.0e4,
        "wminus_munu": 800.0 * 50.0 / 1.0e4,
        "zmumu": 0.3,
    }
    assert norms["wplus_munu"] == pytest.approx(2.5)
    lumi = 4.0
    out = histops.group_processes(
        hists, groups, norms=norms, lumi_scale_factor=lumi, lumi_scale_variance=mode
    )
    vpow = 1 if mode == "linear" else 2
    for g, samples in groups.items():
        ref_v = sum(norms.get(s, 1.0) * hists[s].view(flow=True).value for s in samples)
        ref_w = sum(norms.get(s, 1.0) ** 2 * hists[s].view(flow=True).variance for s in samples)
        np.testing.assert_allclose(out[g].view(flow=True).value, lumi * ref_v)
        np.testing.assert_allclose(out[g].view(flow=True).variance, lumi**vpow * ref_w)
    with pytest.raises(KeyError, match="'Top'.*ttbar"):
        histops.group_processes(hists, {"Top": ["ttbar"]})


def test_groups_from_datasets():
    class D:
        def __init__(self, name, group):
            self.name, self.group = name, group

    got = histops.groups_from_datasets([D("a", "W"), D("b", "W"), D("c", "Z")])
    assert got == {"W": ["a", "b"], "Z": ["c"]}


def test_select_regions_and_errors():
    h = hist.Hist(
        hist.axis.Regular(3, 0, 3, name="pt"),
        hist.axis.Boolean(name="passIso"),
        hist.axis.Integer(0, 2, name="passMT", underflow=False, overflow=False),
        storage=hist.storage.Weight(),
    )
    h.fill(pt=[0.5, 1.5, 2.5], passIso=[True, False, True], passMT=[1, 1, 0], weight=[2, 3, 5])
    sig = histops.select(h, {"passIso": True, "passMT": 1})
    np.testing.assert_allclose(sig.values(), [2, 0, 0])
    np.testing.assert_allclose(
        histops.select(h, {"passIso": False, "passMT": -1}).values(), [0, 3, 0]
    )
    with pytest.raises(KeyError, match="no axis 'iso'"):
        histops.select(h, {"iso": True})
    with pytest.raises(TypeError, match="'passMT' is not Boolean"):
        histops.select(h, {"passMT": True})
    with pytest.raises(IndexError, match="'passMT'"):
        histops.select(h, {"passMT": 2})


# --- variation axes ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("axis", "edges"), [("eta", None), ("eta", [-2.4, -0.8, 0.8, 2.4]), ("charge", None)]
)
def test_decorrelate_sums_back_to_correlated(axis, edges):
    rng = np.random.default_rng(7)
    nom, h = _nominal_and_var(rng)
    d = histops.decorrelate(h, nom, axis, edges=edges)
    name = f"{axis}Decorr"
    assert d.axes.name[-1] == name
    n_groups = len(d.axes[name])
    dv = d.values(flow=True)
    nv = nom.values(flow=True)[..., None, None]
    summed = (dv - nv).sum(axis=-1)
    np.testing.assert_allclose(summed, h.values(flow=True) - nv[..., 0], atol=1e-9)
    # element check with an explicit loop over groups and (flow) bins of the decorrelated axis
    ax = h.axes[axis]
    i_ax = list(h.axes.name).index(axis)
    uf, of = int(ax.traits.underflow), int(ax.traits.overflow)
    gedges = ax.edges if edges is None else np.asarray(edges)
    full = {f: getattr(h.view(flow=True), f) for f in ("value", "variance")}
    nom_full = {
        f: np.broadcast_to(getattr(nom.view(flow=True), f)[..., None], full[f].shape)
        for f in ("value", "variance")
    }
    for g in range(n_groups):
        for b in range(-uf, len(ax) + of):
            if b < 0 or b >= len(ax):  # flow bins belong to the first / last group
                gb = 0 if b < 0 else n_groups - 1
            else:
                c = ax.centers[b]
                inside = [k for k in range(n_groups) if gedges[k] <= c < gedges[k + 1]]
                gb = inside[0] if inside else (0 if c < gedges[0] else n_groups - 1)
            in_group = gb == g
            sl = [slice(None)] * 4
            sl[i_ax] = b + uf
            want = full if in_group else nom_full
            got = d.view(flow=True)[..., g]
            np.testing.assert_allclose(got.value[tuple(sl)], want["value"][tuple(sl)])
            np.testing.assert_allclose(got.variance[tuple(sl)], want["variance"][tuple(sl)])


def test_mirror_formulas():
    rng = np.random.default_rng(11)
    nom, h = _nominal_and_var(rng, n_var=1)
    up = h[{"syst": 0}]
    n, u = nom.values(flow=True), up.values(flow=True)
    uw = up.variances(flow=True)
    d_ratio = histops.mirror(up, nom, method="ratio")
    np.testing.assert_allclose(d_ratio.values(flow=True), n**2 / u)
    np.testing.assert_allclose(d_ratio.variances(flow=True), uw * (n / u) ** 4)
    d_diff = histops.mirror(up, nom, method="difference")
    np.testing.assert_allclose(d_diff.values(flow=True), 2 * n - u)
    np.testing.assert_allclose(d_diff.variances(flow=True), uw)
    both = histops.mirror_axis(h, nom, method="ratio")
    np.testing.assert_allclose(
        histops.select_up_down(both, "down").values(flow=True)[..., 0], n**2 / u
    )
    np.testing.assert_allclose(
        histops.select_up_down(both, "up").values(flow=True), h.values(flow=True)
    )
    with pytest.raises(ValueError, match="mirror method"):
        histops.mirror(up, nom, method="sqrt")


def test_to_up_down_pairings():
    rng = np.random.default_rng(13)
    nom, h = _nominal_and_var(rng, n_var=7)  # index 0 = a nominal replica, then 3 pairs
    v, n = h.values(flow=True), nom.values(flow=True)
    inter = histops.to_up_down(h, "syst", nom, pairing="interleaved", start=1)
    assert inter.axes.name[-2:] == ("syst", "downUpVar") and len(inter.axes["syst"]) == 3
    for k in range(3):
        np.testing.assert_allclose(inter.values(flow=True)[..., k, 1], v[..., 1 + 2 * k])
        np.testing.assert_allclose(inter.values(flow=True)[..., k, 0], v[..., 2 + 2 * k])
    halves = histops.to_up_down(h, "syst", nom, pairing="halves", start=1)
    np.testing.assert_allclose(halves.values(flow=True)[..., 2, 1], v[..., 3])
    np.testing.assert_allclose(halves.values(flow=True)[..., 2, 0], v[..., 6])
    mir = histops.to_up_down(h, "syst", nom, pairing="mirror", mirror_method="difference")
    np.testing.assert_allclose(mir.values(flow=True)[..., 4, 0], 2 * n - v[..., 4])
    sym = histops.to_up_down(h, "syst", nom, pairing="interleaved", start=1, symmetrize="average")
    delta = 0.5 * (v[..., 1] - v[..., 2])
    np.testing.assert_allclose(sym.values(flow=True)[..., 0, 1], n + delta)
    np.testing.assert_allclose(sym.values(flow=True)[..., 0, 0], n - delta)
    quad = histops.to_up_down(h, "syst", nom, start=1, symmetrize="quadratic")
    mag = np.sqrt(0.5 * ((v[..., 1] - n) ** 2 + (v[..., 2] - n) ** 2))
    np.testing.assert_allclose(np.abs(quad.values(flow=True)[..., 0, 1] - n), mag)
    with pytest.raises(ValueError, match="'syst'.*cannot be paired"):
        histops.to_up_down(h, "syst", nom)


def test_combine_and_concat_variation_axes():
    rng = np.random.default_rng(17)
    ax = [hist.axis.Regular(3, 0, 3, name="pt")]
    a = hist.axis.Integer(0, 4, name="pdfVar", underflow=False, overflow=False)
    b = hist.axis.StrCategory(["m10Up", "m10Down"], name="massShift", overflow=False)
    h = _weighted([*ax, a, b], rng)
    c = histops.combine_variation_axes(h, ["pdfVar", "massShift"], "combined")
    assert len(c.axes["combined"]) == 8 and list(c.axes["combined"])[3] == "pdfVar1_m10Down"
    for i in range(4):
        for j in range(2):
            np.testing.assert_allclose(
                c.view(flow=True).value[:, 2 * i + j], h.view(flow=True).value[:, i, j]
            )
            np.testing.assert_allclose(
                c.view(flow=True).variance[:, 2 * i + j], h.view(flow=True).variance[:, i, j]
            )
    h1 = _weighted([*ax, a], rng)
    h2 = _weighted(
        [*ax, hist.axis.StrCategory(["alphaSUp", "alphaSDown"], name="alphaS", overflow=False)], rng
    )
    cc = histops.concat_variation_axes([h1, h2], ["pdfVar", "alphaS"], "pdfAlphaS")
    assert list(cc.axes["pdfAlphaS"]) == [
        "pdfVar0",
        "pdfVar1",
        "pdfVar2",
        "pdfVar3",
        "alphaSUp",
        "alphaSDown",
    ]
    np.testing.assert_allclose(cc.values(flow=True)[:, 5], h2.values(flow=True)[:, 1])
    np.testing.assert_allclose(cc.variances(flow=True)[:, 2], h1.variances(flow=True)[:, 2])
