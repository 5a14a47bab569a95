"""PDF sets: the table in configs/pdf_sets.yaml, the set found from the LHEPdfWeight title,
Hessian vs Monte Carlo replica treatment and the alphaS scaling to the CMS +-0.0015.

The replica treatment is tested on toys with a known covariance: the Hessian-equivalent
eigenvectors must reproduce the spread (and the cross-process correlation) the replicas were
drawn with; treating the replicas as Hessian eigenvectors (the defect) would not.
"""

from __future__ import annotations

import hist
import numpy as np
import pytest
import uproot
from conftest import NANOAOD_DY

from wremnants_dask.fitsetup import histops
from wremnants_dask.fitsetup import setup as fs
from wremnants_dask.processors import pdfsets, theory


def test_table_and_lookup():
    sets = pdfsets.known_sets()
    nn = sets["NNPDF31_nnlo_hessian_pdfas"]
    assert (nn.lhaid, nn.members, nn.error_type, nn.alphas) == (306000, 103, "hessian", (101, 102))
    assert nn.alphas_scale == pytest.approx(0.75)  # +-0.002 -> +-0.0015
    assert sets["PDF4LHC15_nnlo_30_pdfas"].alphas_scale == pytest.approx(1.0)
    assert sets["NNPDF40_nnlo_as_01180"].error_type == "replicas"
    # the synthetic generator (no LHA title): nominal + 100 Hessian + 2 alphaS
    synth = pdfsets.identify(None, 103, "synthetic")
    assert synth.error_type == "hessian" and synth.eigenvectors == (1, 100)
    with pytest.raises(pdfsets.PdfSetError, match="has 101 entries"):
        pdfsets.identify(None, 101, "x")
    with pytest.raises(pdfsets.PdfSetError, match="LHA ID 12345"):
        pdfsets.identify(12345, 33, "x")


def test_real_nanoaod_title_names_the_set():
    title = uproot.open(NANOAOD_DY)["Events"]["LHEPdfWeight"].title
    lhaid = theory.first_lhaid_from_title(title)
    assert lhaid == 91400
    assert pdfsets.identify(lhaid, 33, NANOAOD_DY).name == "PDF4LHC15_nnlo_30_pdfas"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (
            {"sets": [{"name": "a", "members": 3, "error_type": "mc", "eigenvectors": [1, 2]}]},
            "error_type",
        ),
        (
            {
                "sets": [
                    {"name": "a", "members": 3, "error_type": "hessian", "eigenvectors": [1, 3]}
                ]
            },
            "eigenvectors",
        ),
        (
            {
                "sets": [
                    {
                        "name": "a",
                        "members": 5,
                        "error_type": "hessian",
                        "eigenvectors": [1, 2],
                        "alphas": [3, 4],
                    }
                ]
            },
            "alphas_step",
        ),
        (
            {
                "sets": [
                    {
                        "name": "a",
                        "members": 3,
                        "error_type": "hessian",
                        "eigenvectors": [1, 2],
                        "colour": 1,
                    }
                ]
            },
            "colour",
        ),
        ({"sets": [{"members": 3}]}, "name"),
    ],
)
def test_table_errors_name_the_key(raw, key):
    with pytest.raises(pdfsets.PdfSetError, match=key):
        pdfsets.parse_table(raw, "t.yaml")


def _tensor(values: np.ndarray, label: str) -> hist.Hist:
    """(bins, members) -> a histogram eta x pdfVar labelled with the set, as the histmaker."""
    n_bins, n = values.shape
    axes = [
        hist.axis.Regular(n_bins, 0, 1, name="pt"),
        hist.axis.StrCategory(
            [f"pdf{i}" for i in range(n)], name="pdfVar", label=label, overflow=False
        ),
    ]
    return histops.make_hist(axes, values, None, flow=False)


def _replica_toy(n_rep: int, seed: int = 1):
    """Two processes whose replicas share 3 PDF directions with known sigmas."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 1, 30)
    shapes = np.stack([np.ones_like(x), x - 0.5, np.cos(3 * x)])  # (3, bins)
    sig = np.array([0.02, 0.03, 0.01])
    cw, cz = 1e4 * (1 + x), 5e3 * (2 - x)
    z = rng.normal(size=(3, n_rep))
    rel_w = (sig[:, None, None] * shapes[:, :, None] * z[:, None, :]).sum(axis=0)
    rel_z = (sig[:, None, None] * (shapes[::-1])[:, :, None] * z[:, None, :]).sum(axis=0)
    w = np.concatenate([cw[:, None], cw[:, None] * (1 + rel_w)], axis=1)
    zz = np.concatenate([cz[:, None], cz[:, None] * (1 + rel_z)], axis=1)
    true_w = cw**2 * (sig[:, None] ** 2 * shapes**2).sum(axis=0)
    true_wz = cw * cz * (sig[:, None] ** 2 * shapes * shapes[::-1]).sum(axis=0)
    return w, zz, true_w, true_wz


def _as_replica_set(monkeypatch, n_rep):
    sets = dict(pdfsets.known_sets())
    sets["toy_replicas"] = pdfsets.PdfSet("toy_replicas", n_rep + 1, "replicas", (1, n_rep))
    monkeypatch.setattr(pdfsets, "known_sets", lambda: sets)


def test_replicas_reproduce_known_spread(monkeypatch):
    n_rep = 1000
    _as_replica_set(monkeypatch, n_rep)
    w, z, true_w, true_wz = _replica_toy(n_rep)
    hw, hz = _tensor(w, "toy_replicas"), _tensor(z, "toy_replicas")
    pdf = fs.pdf_set_of(hw)

    def dev(v):
        r = v[:, 1:]
        return (r - r.mean(axis=1, keepdims=True)) / np.sqrt(v[:, :1])

    coeffs = fs.replica_coefficients([dev(w), dev(z)])
    assert coeffs.shape[1] == 3  # rank 3: three directions hold all the variance
    ew = fs.replica_variations(hw, pdf, coeffs).values() - w[:, :1]
    ez = fs.replica_variations(hz, pdf, coeffs).values() - z[:, :1]
    # the eigenvectors reproduce the replicas' sample covariance (exactly, rank 3) ...
    np.testing.assert_allclose((ew**2).sum(axis=1), w[:, 1:].var(axis=1, ddof=1), rtol=1e-6)
    # ... which matches the known one within its sampling error (sqrt(2/1000) = 4.5 %)
    np.testing.assert_allclose((ew**2).sum(axis=1), true_w, rtol=0.15)
    np.testing.assert_allclose(
        (ew * ez).sum(axis=1),
        true_wz,
        rtol=0.2,
        atol=0.05 * np.sqrt(true_w * (ez**2).sum(axis=1)).max(),
    )
    # the defect: replicas taken as Hessian eigenvectors give ~N times the variance
    as_hessian = ((w[:, 1:] - w[:, :1]) ** 2).sum(axis=1)
    assert np.all(as_hessian > 100 * true_w)


def test_fit_setup_transform(monkeypatch):
    """_pdf: Hessian members as they are, alphaS scaled by 0.0015 / step; replicas mapped."""
    n_rep = 200
    _as_replica_set(monkeypatch, n_rep)
    w, _, _, _ = _replica_toy(n_rep, seed=2)
    hw = _tensor(w, "toy_replicas")
    coeffs = fs.replica_coefficients([(w[:, 1:] - w[:, 1:].mean(axis=1, keepdims=True))])
    [spec] = fs._pdf(coeffs)(hw, None, None)
    assert len(spec["variations"].axes["pdfVar"]) == coeffs.shape[1]
    with pytest.raises(fs.SetupError, match="replica coefficients"):
        fs._pdf(None)(hw, None, None)

    rng = np.random.default_rng(3)
    vals = 100 * (1 + 0.01 * rng.normal(size=(30, 103)))
    h = _tensor(vals, "synthetic_hessian100_pdfas")
    eig, alphas = fs._pdf(None)(h, None, None)
    np.testing.assert_array_equal(eig["variations"].values(), vals[:, 1:101])
    assert alphas["scale"] == pytest.approx(0.75)
    np.testing.assert_array_equal(alphas["up"].values(), vals[:, 102])
    np.testing.assert_array_equal(alphas["down"].values(), vals[:, 101])
    with pytest.raises(fs.SetupError, match="labelled 'pdfVar'"):
        fs._pdf(None)(_tensor(vals, "pdfVar"), None, None)


def test_sets_of_the_public_nanoaod_files():
    """The PDF sets of tests/data/nanoaod (written by others): NNPDF3.0 NLO with alphaS stored
    without its central member (2015 Open Data: "LHA IDs 292201 - 292302"), NNPDF3.0 LO
    replicas (2016 LO MC). A replica set without a stored central member is centred on the
    replica average (NNPDF's definition of the central member)."""
    nlo = pdfsets.identify(292201, 102, "opendata2015")
    assert nlo.central is None and nlo.eigenvectors == (0, 99) and nlo.alphas == (100, 101)
    assert nlo.alphas_scale == pytest.approx(1.5)  # +-0.001 -> +-0.0015
    assert pdfsets.identify(262000, 101, "nano2016").error_type == "replicas"
    rng = np.random.default_rng(2)
    vals = rng.normal(100.0, 3.0, (4, 102))  # 4 bins x (100 replicas + 2 alphaS)
    h = hist.Hist(
        hist.axis.Integer(0, 4, name="x", flow=False),
        hist.axis.StrCategory([str(i) for i in range(102)], name="pdfVar", overflow=False),
        data=vals,
    )
    coeffs = np.eye(100)[:, :1]  # one "eigenvector": replica 0's deviation
    got = fs.replica_variations(h, nlo, coeffs).values()[:, 0]
    mean = vals[:, :100].mean(axis=1)
    np.testing.assert_allclose(got, mean + (vals[:, 0] - mean), rtol=1e-12)
    with pytest.raises(pdfsets.PdfSetError, match="'eigenvectors'"):
        pdfsets.parse_table({"sets": [{"name": "x", "members": 3, "error_type": "replicas",
                                       "eigenvectors": [0, 2]}]})  # fmt: skip
