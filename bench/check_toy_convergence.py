"""Toy convergence of a W fit input as the CI closure test runs it (tests/test_chain.py,
test_mass_pulls_over_toys: 60 toys, seed 11, bb_mode none): converged fraction, edm and
iterations of the failures, pulls of the POI.

    python -m bench.check_toy_convergence OUT/fitinput/fitinput_mw.hdf5

Measured (session 10, ``ci/run_chain.py --recoil`` at CI size, same fit histograms): recoil
nuisances as filled 25/60 converged (35 at the 200-iteration limit, edm up to 2.6, 635 s);
symmetrised (configs/fit_mw.yaml) 60/60 (106 s), POI pull mean -0.03 sd 1.06.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from wremnants_dask.fitting import Fitter, read_fit_input
    from wremnants_dask.fitting.minimizer import CONVERGED

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("fitinput")
    p.add_argument("--ntoys", type=int, default=60)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    fi, meta = read_fit_input(args.fitinput)
    poi = meta["setup"]["mass_param"]
    fitter = Fitter(fi, pois=[poi], bb_mode="none")
    i = fi.param_index(poi)
    x_true = fitter.model.x0.copy()
    t0 = time.perf_counter()
    sigma = fitter.fit(fitter.asimov_obs(x_true)).errors[i]
    toys = fitter.toys(args.ntoys, x_true, seed=args.seed, errors=False, batch=20)
    ok = np.asarray(toys["status"]) == CONVERGED
    bad = ~ok
    print(f"converged {ok.sum()}/{ok.size} in {time.perf_counter() - t0:.0f} s")
    if bad.any():
        print(f"  failed: edm {np.round(np.asarray(toys['edm'])[bad], 3)}")
        print(f"  failed: iterations {np.asarray(toys['niter'])[bad]}")
    pulls = (toys["x"][ok, i] - x_true[i]) / sigma
    print(f"POI pull mean {pulls.mean():+.2f} sd {pulls.std(ddof=1):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
