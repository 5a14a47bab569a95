"""Signal patches of published workspaces: a JSON patch or one patch of a pyhf patchset applied
to the background-only workspace (``read_patch``, ``apply_patches``, the CLI's ``--patch``),
giving the same model as pyhf's ``Workspace.model(patches=...)``."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import h5py
import numpy as np
import pyhf
import pytest

from wremnants_dask.fitting.fitinput import FitInputError
from wremnants_dask.fitting.fitter import Fitter
from wremnants_dask.fitting.pyhf_io import apply_patches, from_pyhf, read_patch

DATA = Path(__file__).parent / "data" / "pyhf"
BKG = DATA / "ewk3l_rjmimic_bkgonly.json.gz"
PATCH = DATA / "ewk3l_rjmimic_ERJR_200p0_100p0.patch.json.gz"


def read(path: Path):
    with gzip.open(path, "rt") as f:
        return json.load(f)


def write(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_patch_gives_pyhfs_model():
    """Same parameters, POI and expected data as pyhf's own patching, at a point off nominal."""
    spec = read(BKG)
    patch = read_patch(PATCH)
    fi = from_pyhf(apply_patches(spec, [patch]))
    assert fi.pois == ["mu_SIG"]
    pyhf.set_backend("numpy")
    model = pyhf.Workspace(spec).model(patches=[patch])
    assert model.config.poi_name == "mu_SIG"
    assert sorted(fi.param_names) == sorted(model.config.par_names)
    assert spec == read(BKG)  # the published workspace itself is not modified
    # total yields per bin: ours (channels sorted by name) against pyhf's at mu_SIG = 2
    fitter = Fitter(fi)
    x = fitter.model.x0.copy()
    x[fi.param_index("mu_SIG")] = 2.0
    ours = np.asarray(fitter._yields(x)).sum(1)
    pars = np.asarray(model.config.suggested_init(), float)
    pars[model.config.par_slice("mu_SIG")] = 2.0
    theirs = np.asarray(model.expected_actualdata(pars))
    assert np.sort(ours) == pytest.approx(np.sort(theirs), rel=1e-12)
    assert np.sort(ours) != pytest.approx(
        np.sort(np.asarray(fitter._yields(fitter.model.x0)).sum(1))
    )


def test_patchset_by_name(tmp_path):
    """A patchset (HEPData's form) needs the patch's name; errors name the file and the patch."""
    patch = read(PATCH)
    pset = {
        "metadata": {"description": "test"},
        "patches": [
            {"metadata": {"name": "ERJR_200p0_100p0", "values": [200, 100]}, "patch": patch},
            {"metadata": {"name": "other", "values": [1, 1]}, "patch": []},
        ],
        "version": "1.0.0",
    }
    path = write(tmp_path / "patchset.json", pset)
    assert read_patch(f"{path}:ERJR_200p0_100p0") == patch
    with pytest.raises(FitInputError, match="patchset of 2 patches: name one"):
        read_patch(path)
    with pytest.raises(FitInputError, match="no patch 'missing'"):
        read_patch(f"{path}:missing")
    with pytest.raises(FitInputError, match="is a JSON patch, not a patchset"):
        read_patch(f"{PATCH}:x")


def test_patch_that_does_not_apply():
    bad = [{"op": "add", "path": "/channels/9/samples/0", "value": {}}]
    with pytest.raises(FitInputError, match="signal patch 0 does not apply"):
        apply_patches(read(BKG), [bad])


def test_cli_fits_a_patched_workspace(tmp_path, capsys):
    """``wremnants-fit BkgOnly.json.gz -p patch.json.gz``: a fit with the signal's POI."""
    from wremnants_dask.fitting.cli import main

    assert main([str(BKG), "-p", str(PATCH), "-o", str(tmp_path)]) == 0
    with h5py.File(tmp_path / "fitresults.hdf5") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f["parameters"]["name"]]
    assert "mu_SIG" in names
    capsys.readouterr()
    assert main([str(BKG), "-p", str(tmp_path / "missing.json"), "-o", str(tmp_path)]) == 2
    assert "missing.json" in capsys.readouterr().err
