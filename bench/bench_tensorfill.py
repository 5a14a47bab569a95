"""Tensor fill cost: nominal 5D fill vs. nominal + 103-entry PDF tensor, by fill method.

    python bench/bench_tensorfill.py [--events 1000000] [--repeat 5]

The headline ratio goes through the engine's real fill path (``ChunkOutput.fill``, as a
processor calls it): "nominal" fills the 5D Weight histogram with genWeight; "nominal + pdf"
additionally fills the (5D x 103) tensor histogram with the same values, the nominal weight and
the raw float32 LHEPdfWeight factors (the bin index is shared). Target: < 2.5x, where 103
separate fills cost ~100x. The per-method lines fill ``TensorHist`` directly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from wremnants_dask.muon_kinematics import kinematic_axes
from wremnants_dask.tensorhist import TensorHist, tensor_axis


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--npdf", type=int, default=103)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    n = args.events
    vals = (
        rng.uniform(-2.5, 2.5, n),
        rng.uniform(20, 60, n),
        rng.choice([-1.0, 1.0], n),
        rng.random(n) > 0.3,
        rng.random(n) > 0.5,
    )
    w = rng.normal(1, 0.1, n)
    pdf_raw = rng.normal(1, 0.02, (n, args.npdf)).astype(np.float32)  # ratios, as in NanoAOD
    pdf = (w[:, None] * pdf_raw).astype(np.float32)

    def nominal():
        h = TensorHist(kinematic_axes(), storage="weight")
        h.fill(*vals, weight=w)

    t_nom = _best(nominal, args.repeat)
    from wremnants_dask.processor import ChunkOutput

    class _Mc:
        name, is_data = "bench", False

    def engine(with_pdf: bool) -> None:
        hs = {"nominal": TensorHist(kinematic_axes(), storage="weight")}
        if with_pdf:
            hs["pdf"] = TensorHist(
                kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage="weight"
            )
        out = ChunkOutput(_Mc(), hs)
        out.fill("nominal", *vals, weight=w)
        if with_pdf:
            out.fill("pdf", *vals, weight=w, tensor=pdf_raw)

    def product_path() -> None:
        """What processors did before: fill with the materialised float64 product w * pdf
        (``Weights.variation``) and a second bin-index computation."""
        h = TensorHist(kinematic_axes(), storage="weight")
        h.fill(*vals, weight=w)
        t = TensorHist(kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage="weight")
        t.fill(*vals, tensor=w[:, None] * pdf_raw)

    engine(True)  # compile outside the timing
    for _ in range(2):  # interleaved: the machine is shared, take the best of each
        t_en = _best(lambda: engine(False), args.repeat)
        t_ep = _best(lambda: engine(True), args.repeat)
        t_pp = _best(product_path, args.repeat)
        print(
            f"engine path (ChunkOutput.fill): nominal {t_en:.3f} s; nominal + {args.npdf} PDF "
            f"tensor {t_ep:.3f} s = {t_ep / t_en:.2f}x  (product w*pdf + own index: "
            f"{t_pp:.3f} s = {t_pp / t_en:.2f}x)"
        )
    print(
        f"{n} events, 5D histogram ({TensorHist(kinematic_axes()).nbins} bins incl. flow), weight storage"
    )
    print(f"nominal fill:                    {t_nom:8.3f} s   1.00x")
    from wremnants_dask.tensorhist import HAVE_NUMBA

    methods = ("rows",) * HAVE_NUMBA + ("bincount", "percomponent", "addat")
    for storage in ("double", "weight"):

        def nominal_s(storage=storage):
            h = TensorHist(kinematic_axes(), storage=storage)
            h.fill(*vals, weight=w)

        t_nom_s = _best(nominal_s, args.repeat)
        for method in methods[:1]:

            def both_s(storage=storage, method=method):
                h = TensorHist(kinematic_axes(), storage=storage)
                h.fill(*vals, weight=w)
                t = TensorHist(kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage=storage)
                t.fill(*vals, tensor=pdf, method=method)

            tb = _best(both_s, args.repeat)
            print(
                f"[{storage:6s}] nominal {t_nom_s:.3f} s; nominal + {args.npdf} tensor ({method}): "
                f"{tb:.3f} s = {tb / t_nom_s:.2f}x"
            )
    for method in methods:
        if method == "addat" and n > 200_000:
            sub = 200_000
        else:
            sub = n

        def both(method=method, sub=sub):
            h = TensorHist(kinematic_axes(), storage="weight")
            h.fill(*(v[:sub] for v in vals), weight=w[:sub])
            t = TensorHist(kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage="weight")
            t.fill(*(v[:sub] for v in vals), tensor=pdf[:sub], method=method)

        t = _best(both, 1 if method != "bincount" else args.repeat) * n / sub
        print(
            f"nominal + {args.npdf} tensor ({method:12s}): {t:8.3f} s  {t / t_nom:5.2f}x"
            + ("  (extrapolated from 200k events)" if sub != n else "")
        )

    def separate():
        h = TensorHist(kinematic_axes(), storage="weight")
        idx = np.arange(10)
        for k in idx:
            h.fill(*vals, weight=pdf[:, k])

    t_sep = _best(separate, 1) * args.npdf / 10
    print(f"{args.npdf} separate fills (from 10):       {t_sep:8.3f} s  {t_sep / t_nom:5.2f}x")


if __name__ == "__main__":
    main()
