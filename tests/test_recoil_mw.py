"""The recoil correction in the W histmaker (mw option ``recoil_calibration``) against truth.

The generator smears the recoil as u = R u_true + s N (per component) with u_true = -qT of the
boson. Simulation generated with the pseudo-data's recoil (R 0.94, s x 1.05) and the same seed
draws the same N, so the exact correction (k_R = 0.94/0.95, k_sigma = 1.05, simulation mean
-0.95 qT) must turn the default simulation's mT into that sample's, event by event: their mw
histograms agree. A wrong correction does not. The ``nominal_recoil`` eigen-variations, filled by
moving only the events that change mT bin, equal a run with the shifted calibration.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wremnants_dask import engine
from wremnants_dask.corrections.recoil_calibration import RecoilCalibration
from wremnants_dask.inputs.datasets import Dataset
from wremnants_dask.processors.registry import get_processor
from wremnants_dask.synth import PROCESSES, SynthParams, generate_sample

P = SynthParams(neg_weight_fraction=0.0)
DATA_RECOIL = dataclasses.replace(
    P,
    recoil_response=P.data_recoil_response,
    recoil_sigma0=P.recoil_sigma0 * P.data_recoil_sigma_scale,
    recoil_sigma_pu=P.recoil_sigma_pu * P.data_recoil_sigma_scale,
)
N = 30_000


def _cal(k_r, k_s, eigen=None):
    eig = np.zeros((3, 3, 1)) if eigen is None else eigen
    return RecoilCalibration(0, np.array([[k_r], [k_s], [k_s]]), np.array([P.recoil_response]),
                             eig, 100.0)  # fmt: skip


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("recoil_mw")
    out = {}
    for key, params in (("sim", P), ("data_recoil", DATA_RECOIL)):
        files = generate_sample("wplus_munu", N, root / key, seed=41, params=params)
        out[key] = Dataset(key, "Wmunu", tuple(map(str, files)), False,
                           PROCESSES["wplus_munu"].xsec_pb, "2018")  # fmt: skip
    return root, out


def _run(ds, systematics=False, abcd="extended", **opts):
    res = engine.run([ds], get_processor("mw", systematics=systematics, abcd=abcd, **opts))
    return res[ds.name].hists


def _mt_counts(h):
    return h.project("passIso", "mt").values()


_CACHE: dict[str, np.ndarray] = {}


def _uncorrected(samples) -> tuple[np.ndarray, np.ndarray]:
    """mT counts of the data-recoil sample and of the uncorrected simulation (run once)."""
    if not _CACHE:
        _, ds = samples
        _CACHE["target"] = _mt_counts(_run(ds["data_recoil"])["nominal"])
        _CACHE["plain"] = _mt_counts(_run(ds["sim"])["nominal"])
    return _CACHE["target"], _CACHE["plain"]


@pytest.mark.parametrize("k_r,k_s,agree", [(0.94 / 0.95, 1.05, True), (0.96 / 0.95, 1.05, False),
                                           (0.94 / 0.95, 1.0, False)])  # fmt: skip
def test_corrected_mt_equals_data_world(samples, tmp_path, k_r, k_s, agree):
    root, ds = samples
    path = _cal(k_r, k_s).save(tmp_path / "cal.json")
    target, plain = _uncorrected(samples)
    corrected = _mt_counts(_run(ds["sim"], recoil_calibration=str(path))["nominal"])
    # events that change bin: MET is stored as float32 (rounding moves an event at a bin edge
    # only if it lies within ~1e-5 GeV of it: expect none, allow 3 of ~2e4)
    moved = np.abs(corrected - target).sum() / 2
    assert np.abs(plain - target).sum() / 2 > 100  # the uncorrected simulation differs
    if agree:
        assert moved <= 3, (corrected, target)
    else:
        assert moved > 30, (corrected, target)


@pytest.mark.parametrize("abcd", ["extended", "simple"])  # mT in bins, Boolean passMT
def test_recoil_variations_equal_shifted_runs(samples, tmp_path, abcd):
    root, ds = samples
    rng = np.random.default_rng(2)
    eigen = rng.normal(0, 0.02, (3, 3, 1))
    base = _cal(0.99, 1.05, eigen)
    path = base.save(tmp_path / "base.json")
    hists = _run(ds["sim"], systematics=True, abcd=abcd, recoil_calibration=str(path))
    var = hists["nominal_recoil"]
    assert [a.name for a in var.axes][-2:] == ["recoilEig", "downUpVar"]
    moved = 0.0
    for k in range(3 if abcd == "extended" else 1):  # the fill is the same code for both
        for j, sign in enumerate((-1.0, 1.0)):
            shifted = dataclasses.replace(base, params=base.params + sign * eigen[k])
            p = shifted.save(tmp_path / f"s{k}{j}.json")
            ref = _run(ds["sim"], abcd=abcd, recoil_calibration=str(p))["nominal"]
            np.testing.assert_allclose(
                var.values(flow=True)[..., k, j], ref.values(flow=True), rtol=1e-9, atol=1e-9
            )
            moved += np.abs(ref.values(flow=True) - hists["nominal"].values(flow=True)).sum()
    assert moved > 10  # the shifts do move events across the mT edges (the check has teeth)
