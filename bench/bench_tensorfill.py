"""Tensor fill cost: nominal 5D fill vs. nominal + 103-entry PDF tensor, by fill method.

    python bench/bench_tensorfill.py [--events 1000000] [--repeat 5] [--rounds 5]

The headline goes through the engine's real fill path (``ChunkOutput.fill``, as a processor
calls it) with the storages the processors declare (``processors.common.declare``): "nominal"
fills the 5D Weight histogram with genWeight; "nominal + pdf" additionally fills the (5D x 103)
PDF tensor histogram with Double storage (as the CMS W-mass histmakers do: the fit takes the MC
statistical uncertainty from the nominal's sums of squares) from the same values, the nominal
weight and the raw float32 LHEPdfWeight factors (the bin index is shared). The same with a
Weight-storage tensor (sums of squares too) is printed next to it. The variants are timed
interleaved over several rounds (best of ``--repeat`` each) because the machine is shared.

Each is printed per event and as ratios to two nominal-only fills: ours (the engine path) and
``hist.Hist.fill`` of the same histogram (the standard fill; 103 of them is the "~100x" of the
target). The issue's target (< 2.5x the nominal-only fill) cannot hold against a fast nominal:
the tensor part must at least read the 412 bytes of float32 weights per event once, which alone
costs more than 1.5 nominal fills; the line "tensor part ... the floor" compares the tensor
part with one sequential read of the tensor. The per-method lines fill ``TensorHist`` directly.

"tensor kernel alone" splits the compiled fill's time: the kernel into the real histogram
(each event updates its bin's row, scattered over the histogram), the same with all
events in one bin (the row stays in L1: tensor read + arithmetic only), and one sequential read
of the float32 tensor (412 MB for 1M events), for Double (rows of 103 doubles, 10 MB) and
Weight storage (rows of 2 x 103, 20 MB). The first minus the second is the cost of the
histogram's cache misses.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.processors.muon_kinematics import kinematic_axes


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _column_sums(t: np.ndarray) -> np.ndarray:
    """Sum of the rows of ``t`` (compiled in main): the cost of streaming ``t`` once."""
    acc = np.zeros(t.shape[1], dtype=t.dtype)
    for e in range(t.shape[0]):
        for j in range(t.shape[1]):
            acc[j] += t[e, j]
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--npdf", type=int, default=103)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
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
    from wremnants_dask.engine.processor import ChunkOutput

    class _Mc:
        name, is_data = "bench", False

    def engine(pdf_storage: str | None) -> None:
        hs = {"nominal": TensorHist(kinematic_axes(), storage="weight")}
        if pdf_storage:
            hs["pdf"] = TensorHist(
                kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage=pdf_storage
            )
        out = ChunkOutput(_Mc(), hs)
        out.fill("nominal", *vals, weight=w)
        if pdf_storage:
            out.fill("pdf", *vals, weight=w, tensor=pdf_raw)

    def product_path() -> None:
        """What processors did before: fill with the materialised float64 product w * pdf
        (``Weights.variation``) and a second bin-index computation."""
        h = TensorHist(kinematic_axes(), storage="weight")
        h.fill(*vals, weight=w)
        t = TensorHist(kinematic_axes(), [tensor_axis("pdf", args.npdf)], storage="double")
        t.fill(*vals, tensor=w[:, None] * pdf_raw)

    import hist as hist_lib

    def hist_nominal() -> None:
        """The standard nominal fill: boost-histogram's own, same axes, values and weights."""
        h = hist_lib.Hist(*kinematic_axes(), storage=hist_lib.storage.Weight())
        h.fill(*vals, weight=w)

    engine("double")  # compile outside the timing
    engine("weight")
    keys = ("nominal", "hist", "double", "weight", "product")
    times: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(args.rounds):  # interleaved: the machine is shared
        times["nominal"].append(_best(lambda: engine(None), args.repeat))
        times["hist"].append(_best(hist_nominal, args.repeat))
        for storage in ("double", "weight"):
            times[storage].append(_best(lambda s=storage: engine(s), args.repeat))
        times["product"].append(_best(product_path, args.repeat))
        print("  round [ms]: " + ", ".join(f"{k} {1e3 * v[-1]:.1f}" for k, v in times.items()))

    def med(key: str) -> float:
        return float(np.median(times[key]))

    def ratio(num: str, den: str) -> str:
        r = np.asarray(times[num]) / np.asarray(times[den])
        return f"{np.median(r):5.2f}x (range {r.min():.2f}-{r.max():.2f})"

    per_event = 1e9 / n
    print(f"per event, median of {args.rounds} rounds (best of {args.repeat} each):")
    print(f"  nominal fill, ours (engine path)       {med('nominal') * per_event:6.1f} ns")
    print(f"  nominal fill, hist.Hist.fill           {med('hist') * per_event:6.1f} ns")
    labels = {
        "double": "Double PDF tensor (as processors declare it)",
        "weight": "Weight PDF tensor (sums of squares too)",
        "product": "product w*pdf + own index (the old processor path)",
    }
    for key, label in labels.items():
        print(
            f"  nominal + {args.npdf} {label}: {med(key) * per_event:6.1f} ns = "
            f"{ratio(key, 'nominal')} our nominal, {ratio(key, 'hist')} hist's nominal"
        )
    t_read = None
    print(
        f"{n} events, 5D histogram ({TensorHist(kinematic_axes()).nbins} bins incl. flow), weight storage"
    )
    from wremnants_dask.engine import tensorhist

    if tensorhist.HAVE_NUMBA:
        import numba

        # Where the tensor fill's time goes: the compiled kernel alone into the real histogram
        # (rows scattered over 20 MB), the same kernel with every event in one bin (histogram
        # row in L1: reading the tensor + arithmetic), and a plain sequential read of the tensor.
        nb = TensorHist(kinematic_axes()).nbins
        flat, _ = TensorHist(kinematic_axes()).bin_index(*vals)
        one_bin = np.zeros(n, dtype=np.int64)

        def kernel(flat_idx, nbins, nslots):
            fill = tensorhist._rows_add2 if nslots == 2 else tensorhist._rows_add
            fill(np.zeros((nbins, nslots, args.npdf)), flat_idx, w, pdf_raw)

        read = numba.njit(_column_sums)
        read(pdf_raw)
        t_read = _best(lambda: read(pdf_raw), args.repeat)
        for nslots, storage in ((1, "double"), (2, "weight")):
            t_k = _best(lambda s=nslots: kernel(flat, nb, s), args.repeat)
            t_k1 = _best(lambda s=nslots: kernel(one_bin, 1, s), args.repeat)
            print(
                f"[{storage}] tensor kernel alone {t_k:.3f} s; all events in one bin {t_k1:.3f} s; "
                f"one sequential read of the float32 tensor {t_read:.3f} s"
            )
    if t_read is not None:
        tensor_part = med("double") - med("nominal")
        print(
            f"tensor part of the Double fill {tensor_part * per_event:.1f} ns/event = "
            f"{tensor_part / t_read:.2f}x one sequential read of the float32 tensor (the floor)"
        )
    print(f"nominal fill:                    {t_nom:8.3f} s   1.00x")
    from wremnants_dask.engine.tensorhist import HAVE_NUMBA

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
