"""Time the non-prompt (ABCD) prediction with 1000 prompt-MC variations against nominal only.

Histogram: eta 48 x pT 30 x charge 2 x passIso 2 x passMT (2 or 3), Weight storage; the prompt
MC carries a 1000-entry variation axis. Reports best-of-N wall times and the ratio.

    python -m bench.bench_abcd [--n-var 1000] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import hist
import numpy as np

from wremnants_dask.fitsetup import abcd, histops


def build(n_mt: int, n_var: int, seed: int = 1) -> tuple[hist.Hist, hist.Hist, hist.Hist]:
    """(data, nominal prompt MC, prompt MC with ``n_var`` variations)."""
    rng = np.random.default_rng(seed)
    axes = [
        hist.axis.Regular(48, -2.4, 2.4, name="eta"),
        hist.axis.Regular(30, 26, 56, name="pt"),
        hist.axis.Regular(2, -2, 2, name="charge", underflow=False, overflow=False),
        hist.axis.Boolean(name="passIso"),
        hist.axis.Integer(0, n_mt, name="passMT", underflow=False, overflow=False),
    ]
    pt = np.linspace(26.5, 55.5, 30)
    shape = (48, 30, 2, 2, n_mt)
    nonprompt = np.broadcast_to((5000 * np.exp(-(pt - 26) / 20))[None, :, None, None, None], shape)
    fr = (
        np.array([1.0, 0.4])[None, None, None, :, None]
        * np.exp(-0.03 * (pt - 26))[None, :, None, None, None]
    )
    prompt = np.broadcast_to((2000 + 0 * pt)[None, :, None, None, None], shape) * np.where(
        np.arange(2)[None, None, None, :, None] == 1, 0.5, 0.02
    )
    expected = nonprompt * fr + prompt
    data_v = rng.poisson(expected).astype(float)
    data = histops.make_hist(axes, data_v, data_v, flow=False)
    mc = histops.make_hist(axes, prompt.copy(), prompt / 100, flow=False)
    var_ax = hist.axis.Integer(0, n_var, name="syst", underflow=False, overflow=False)
    scales = 1 + 0.02 * rng.standard_normal(n_var)
    mc_var = histops.make_hist(
        [*axes, var_ax],
        prompt[..., None] * scales,
        (prompt / 100)[..., None] * scales**2,
        flow=False,
    )
    return data, mc, mc_var


def best_time(repeat: int, *args: object, **kw: object) -> float:
    """Best wall time of ``abcd.predict_nonprompt(*args, **kw)`` over ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        abcd.predict_nonprompt(*args, **kw)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-var", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    results = []
    for n_mt, label in ((2, "simple ABCD"), (3, "extended ABCD")):
        data, mc, mc_var = build(n_mt, args.n_var)
        for order in (2, None):
            t_nom = best_time(args.repeat, data, mc, smoothing_order=order)
            t_var = best_time(args.repeat, data, mc_var, smoothing_order=order)
            row = {
                "method": label,
                "smoothing_order": order,
                "n_var": args.n_var,
                "t_nominal_s": round(t_nom, 4),
                "t_variations_s": round(t_var, 4),
                "ratio": round(t_var / t_nom, 1),
                "ms_per_variation": round(1e3 * t_var / args.n_var, 3),
            }
            results.append(row)
            print(json.dumps(row))
        if n_mt > 2:  # the factorised fake rate (setup_fit's model): one fit over all sidebands
            kw = {"smoothing_order": 2, "mt_model": "factorised"}
            t_nom = best_time(args.repeat, data, mc, **kw)
            t_var = best_time(args.repeat, data, mc_var, **kw)
            row = {
                "method": label + " factorised",
                "smoothing_order": 2,
                "n_var": args.n_var,
                "t_nominal_s": round(t_nom, 4),
                "t_variations_s": round(t_var, 4),
                "ratio": round(t_var / t_nom, 1),
                "ms_per_variation": round(1e3 * t_var / args.n_var, 3),
            }
            results.append(row)
            print(json.dumps(row))
        t_eig = best_time(
            args.repeat, data, mc, eigen_axis="frParam", decorrelate=("eta", "charge")
        )
        row = {"method": label, "nominal_with_decorrelated_eigenvars_s": round(t_eig, 4)}
        results.append(row)
        print(json.dumps(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
