"""Coverage: POI pulls over vmapped toys (data fluctuation + constraint randomisation)."""

from __future__ import annotations

import numpy as np
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputWriter
from wremnants_dask.fitting.fitter import Fitter


def test_poi_pulls_are_standard_normal():
    ax = reg(4)
    w = FitInputWriter(bb_mode="none")
    for c, scale in (("A", 1.0), ("B", 0.5)):
        w.add_channel(c, [ax])
        w.add_data(hw(ax, np.zeros(4)), c)
        w.add_process(hw(ax, scale * np.array([20.0, 40.0, 30.0, 10.0])), "sig", c, signal=True)
        w.add_process(hw(ax, np.array([100.0, 80.0, 60.0, 50.0]) / scale), "bkg", c)
        w.add_shape_systematic(
            "tilt",
            "bkg",
            c,
            up=hw(ax, np.array([105.0, 82.0, 59.0, 47.0]) / scale),
            down=hw(ax, np.array([96.0, 79.0, 61.0, 52.5]) / scale),
        )
    w.add_norm_systematic("bnorm", "bkg", 1.05)
    fi = w.build()
    f = Fitter(fi)
    truth = f.model.x0.copy()
    truth[fi.param_index("mu")] = 1.2
    ntoys = 300
    t = f.toys(ntoys, x_true=truth, seed=7, batch=150)
    assert np.all(t["status"] == 0)
    i = fi.param_index("mu")
    pulls = (t["x"][:, i] - 1.2) / t["poi_errors"][:, 0]
    # mean 0 +- 1/sqrt(N), width 1 +- 1/sqrt(2N): 4 sigma windows
    assert abs(pulls.mean()) < 4 / np.sqrt(ntoys)
    assert abs(pulls.std(ddof=1) - 1) < 4 / np.sqrt(2 * ntoys)
    # constraint randomisation really moved the auxiliary data
    assert np.std(t["aux"][:, fi.param_index("bnorm")]) > 0.8
