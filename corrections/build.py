"""Build the correctionlib payload (data/simulation corrections) from a generator ``truth.json``.

    python -m wremnants_dask.corrections.build --truth DIR/truth.json -o corrections/

writes ``corrections/wremnants_corrections.json.gz``: one correctionlib CorrectionSet holding

- ``pileup``            (nTrueInt, variation: nominal|up|down) -> weight, data/sim nTrueInt
  profiles; up/down from the data profile with the minimum-bias cross section scaled +-4.6%.
- ``muon_sf_<step>``    (eta, pt, variation, eigen) -> scale factor for step reco (where the
  truth has it), idip, iso, trigger (conditional efficiencies data/sim). variation: nominal | syst_up | syst_down | stat_up |
  stat_down; ``eigen`` picks the statistical eigen-variation (ignored otherwise). The
  statistical errors are those of the probes the Z sample gives (``probe_counts``).
- ``muon_eff_mc``       (step, eta, pt) -> simulation efficiency (for anti-isolation SFs).
- ``prefiring``         (eta, pt, variation) -> per-muon L1 prefiring probability.
- ``muon_resolution``   (eta, pt) -> sigma(pT)/pT of the Gaussian resolution model.
- ``muon_scale_data``   (eta) -> relative momentum-scale offset of data (for its calibration).
- ``muon_scale_unc``    (eta) -> size of the per-eta-slice momentum-scale variation.

The provenance (truth file, its hash, build options, git state) is stored as JSON in the
CorrectionSet description, so a payload can always be traced back to the truth that made it.
The tag-and-probe stage later writes measured scale factors in exactly this format.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.corrections import muon_models, probe_counts
from wremnants_dask.corrections.sf_eigen import ratio_error, scaled_pt, smooth_and_decompose
from wremnants_dask.utils.atomic import atomic_path
from wremnants_dask.utils.provenance import make_metadata

PAYLOAD_NAME = "wremnants_corrections.json.gz"
SF_STEPS = ("idip", "iso", "trigger")  # required in every payload
CHAIN_STEPS = ("reco", *SF_STEPS)  # reco: optional (a payload without it applies no reco SF)


def sf_steps(eff: dict) -> tuple[str, ...]:
    """The scale-factor steps of a truth (or measured) efficiency record, in chain order."""
    missing = [s for s in SF_STEPS if s not in eff["mc"] or s not in eff["data"]]
    if missing:
        raise ValueError(f"efficiency tables lack the steps {missing} (need {SF_STEPS})")
    return tuple(s for s in CHAIN_STEPS if s in eff["mc"] and s in eff["data"])


SF_VARIATIONS = ("nominal", "syst_up", "syst_down", "stat_up", "stat_down")
SCHEMA_VERSION = 2
FORMAT_VERSION = 1


def _multibinning(inputs: list[str], edges: list, content: np.ndarray, flow: str = "clamp") -> dict:
    return {
        "nodetype": "multibinning",
        "inputs": inputs,
        "edges": [list(map(float, e)) for e in edges],
        "content": [float(v) for v in np.asarray(content, dtype=np.float64).ravel()],
        "flow": flow,
    }


def _binning(inp: str, edges, content: np.ndarray, flow: str = "clamp") -> dict:
    return {
        "nodetype": "binning",
        "input": inp,
        "edges": list(map(float, edges)),
        "content": [float(v) for v in np.asarray(content, dtype=np.float64).ravel()],
        "flow": flow,
    }


def _category(inp: str, items: dict) -> dict:
    return {
        "nodetype": "category",
        "input": inp,
        "content": [{"key": k, "value": v} for k, v in items.items()],
    }


def _correction(
    name: str, description: str, inputs: list[tuple[str, str, str]], data: dict, output: str
) -> dict:
    return {
        "name": name,
        "description": description,
        "version": FORMAT_VERSION,
        "inputs": [{"name": n, "type": t, "description": d} for n, t, d in inputs],
        "output": {"name": output, "type": "real"},
        "data": data,
    }


# ----------------------------------------------------------------------------- pileup
def scaled_profile(edges: np.ndarray, prob: np.ndarray, scale: float) -> np.ndarray:
    """Bin probabilities of nTrueInt * ``scale`` for a binned profile (piecewise-linear CDF)."""
    cdf = np.concatenate([[0.0], np.cumsum(prob)])
    cdf /= cdf[-1]
    shifted = np.interp(edges / scale, edges, cdf)
    out = np.diff(shifted)
    # whatever moved beyond the last edge stays in the last bin (the table is clamped there)
    out[-1] += 1.0 - shifted[-1]
    return out


def pileup_correction(truth: dict, minbias_var: float) -> dict:
    pu = truth["pileup"]
    edges = np.asarray(pu["edges"], dtype=np.float64)
    mc = np.asarray(pu["mc"], dtype=np.float64)
    data = np.asarray(pu["data"], dtype=np.float64)
    if mc.shape != data.shape or mc.size != edges.size - 1:
        raise ValueError(
            f"pileup profiles in truth have {mc.size}/{data.size} bins for {edges.size} edges"
        )
    mc = mc / mc.sum()
    items = {}
    for var, scale in (("nominal", 1.0), ("up", 1.0 + minbias_var), ("down", 1.0 - minbias_var)):
        prof = scaled_profile(edges, data / data.sum(), scale)
        weight = np.divide(prof, mc, out=np.ones_like(mc), where=mc > 0)
        items[var] = _binning("nTrueInt", edges, weight)
    return _correction(
        "pileup",
        f"data/simulation nTrueInt weight; up/down: minimum-bias xsec x (1 +- {minbias_var})",
        [("nTrueInt", "real", "Pileup_nTrueInt"), ("variation", "string", "nominal|up|down")],
        _category("variation", items),
        "weight",
    )


# ----------------------------------------------------------------------------- muon SFs
#: Fewest probes a bin is given (bins the Z sample does not reach still get a finite error).
MIN_PROBES = 1.0


def _probes(n: float | dict[str, np.ndarray], step: str, shape: tuple[int, int]) -> np.ndarray:
    arr = np.broadcast_to(np.asarray(n[step] if isinstance(n, dict) else n, float), shape)
    return np.maximum(arr, MIN_PROBES)


def sf_tables(
    truth: dict,
    degree: int,
    n_probes_data: float | dict[str, np.ndarray],
    n_probes_mc: float | dict[str, np.ndarray],
    syst_rel: float,
    fit_pt_min: float = 24.0,
) -> dict[str, dict[str, np.ndarray]]:
    """Nominal (binned truth ratio), stat eigen-variations and syst shift per step.

    ``n_probes_*``: probes per (eta, pT) bin, one number for all bins or per step an
    (n_eta, n_pt) array (``probe_counts``: what the Z sample gives). The smoothing polynomial
    is fitted above ``fit_pt_min`` (the trigger turn-on below is not polynomial); below it the
    fitted variations are extrapolated, the nominal stays binned.
    """
    eff = truth["efficiency"]
    eta_edges = np.asarray(eff["eta_edges"], dtype=np.float64)
    pt_edges = np.asarray(eff["pt_edges"], dtype=np.float64)
    centres = 0.5 * (pt_edges[1:] + pt_edges[:-1])
    out = {}
    for step in sf_steps(eff):
        mc = np.asarray(eff["mc"][step], dtype=np.float64)
        data = np.asarray(eff["data"][step], dtype=np.float64)
        shape = (eta_edges.size - 1, pt_edges.size - 1)
        if mc.shape != shape or data.shape != shape:
            raise ValueError(
                f"efficiency table '{step}' has shape mc {mc.shape} / data {data.shape}, "
                f"expected {shape} from the eta/pt edges"
            )
        fit = centres >= fit_pt_min
        if np.any(mc[:, fit] <= 0) or np.any(data[:, fit] <= 0):
            raise ValueError(
                f"efficiency table '{step}' has non-positive entries above {fit_pt_min} GeV"
            )
        # bins where the simulation never passes (deep in a turn-on) carry SF 1: no events
        sf = np.divide(data, mc, out=np.ones_like(mc), where=mc > 0)
        n_d, n_m = (_probes(n, step, shape)[:, fit] for n in (n_probes_data, n_probes_mc))
        err = ratio_error(data[:, fit], mc[:, fit], n_d, n_m)
        rng = (fit_pt_min, pt_edges[-1])
        smooth = smooth_and_decompose(sf[:, fit], err, centres[fit], degree, rng)
        # the eigen-variations as polynomials, evaluated at every pT bin centre
        x = scaled_pt(centres, *rng)
        design = np.vander(x, degree + 1, increasing=True)
        stat = np.einsum("ejk,ek,ij->eki", smooth.eigvec, np.sqrt(smooth.eigval), design)
        poly = smooth.params @ design.T
        # systematic: the smoothing non-closure in quadrature with a flat relative uncertainty
        syst = np.hypot(np.where(fit, sf - poly, 0.0), syst_rel * sf)
        out[step] = {"nominal": sf, "stat": stat, "syst": syst}
    return out


def sf_correction(step: str, eta_edges, pt_edges, tab: dict[str, np.ndarray]) -> dict:
    nom = tab["nominal"]
    stat = tab["stat"]  # (n_eta, n_eig, n_pt)
    n_eig = stat.shape[1]
    edges = [eta_edges, pt_edges]
    inputs = ["eta", "pt"]
    items = {
        "nominal": _multibinning(inputs, edges, nom),
        "syst_up": _multibinning(inputs, edges, nom + tab["syst"]),
        "syst_down": _multibinning(inputs, edges, nom - tab["syst"]),
    }
    for sign, name in ((1.0, "stat_up"), (-1.0, "stat_down")):
        items[name] = _category(
            "eigen",
            {k: _multibinning(inputs, edges, nom + sign * stat[:, k, :]) for k in range(n_eig)},
        )
    return _correction(
        f"muon_sf_{step}",
        f"muon {step} efficiency scale factor data/simulation; {n_eig} statistical "
        "eigen-variations per eta bin (pT polynomial), syst = smoothing non-closure (+) flat",
        [
            ("eta", "real", "muon eta"),
            ("pt", "real", "muon pT (GeV)"),
            ("variation", "string", "|".join(SF_VARIATIONS)),
            ("eigen", "int", f"eigen-variation index 0..{n_eig - 1} (stat_up/stat_down only)"),
        ],
        _category("variation", items),
        "sf",
    )


def mc_eff_correction(truth: dict) -> dict:
    """Simulation efficiencies per step: anti-isolation SFs (1 - e SF) / (1 - e) need them."""
    eff = truth["efficiency"]
    edges = [eff["eta_edges"], eff["pt_edges"]]
    steps = [s for s in CHAIN_STEPS if s in eff["mc"]]
    items = {s: _multibinning(["eta", "pt"], edges, np.asarray(eff["mc"][s])) for s in steps}
    return _correction(
        "muon_eff_mc",
        "muon efficiency of simulation per step (conditional: idip|reco, iso|idip, trigger|iso)",
        [
            ("step", "string", "|".join(steps)),
            ("eta", "real", "muon eta"),
            ("pt", "real", "muon pT (GeV)"),
        ],
        _category("step", items),
        "eff",
    )


# ----------------------------------------------------------------------------- assembly
def build_payload(
    truth: dict[str, Any],
    *,
    truth_path: str | None = None,
    degree: int = 2,
    n_probes_data: float | None = None,
    n_probes_mc: float | None = None,
    probe_lumi_pb: float = probe_counts.DEFAULT_LUMI_PB,
    mc_z_events: float = probe_counts.DEFAULT_MC_Z_EVENTS,
    syst_rel: float = 5.0e-4,
    minbias_var: float = 0.046,
    scale_var: float = 1.0e-4,
    fit_pt_min: float = 24.0,
) -> dict[str, Any]:
    """The CorrectionSet (as a JSON-ready dict) derived from a truth record, with provenance.

    Scale-factor statistics: the probes a Z sample of ``probe_lumi_pb`` (data) and
    ``mc_z_events`` (simulation) gives per bin (``corrections.probe_counts``), unless a flat
    ``n_probes_data`` / ``n_probes_mc`` per bin is given.
    """
    eff = truth["efficiency"]
    eta_edges = np.asarray(eff["eta_edges"], dtype=np.float64)
    pt_edges = np.asarray(eff["pt_edges"], dtype=np.float64)
    counts = None
    if n_probes_data is None or n_probes_mc is None:
        counts = probe_counts.probe_counts(truth, probe_lumi_pb, mc_z_events)
    n_data = n_probes_data if n_probes_data is not None else {s: c[0] for s, c in counts.items()}
    n_mc = n_probes_mc if n_probes_mc is not None else {s: c[1] for s, c in counts.items()}
    tables = sf_tables(truth, degree, n_data, n_mc, syst_rel, fit_pt_min)
    corrs = [pileup_correction(truth, minbias_var)]
    corrs += [sf_correction(s, eta_edges, pt_edges, tables[s]) for s in tables]
    corrs.append(mc_eff_correction(truth))
    corrs += muon_models.model_corrections(truth, scale_var)
    options = {
        "degree": degree,
        "n_probes_data": n_probes_data,
        "n_probes_mc": n_probes_mc,
        "probe_lumi_pb": probe_lumi_pb,
        "mc_z_events": mc_z_events,
        "syst_rel": syst_rel,
        "minbias_var": minbias_var,
        "scale_var": scale_var,
        "fit_pt_min": fit_pt_min,
    }
    digest = None
    if truth_path:
        digest = hashlib.sha256(Path(truth_path).read_bytes()).hexdigest()
    meta = make_metadata(
        options,
        input_files=[str(truth_path)] if truth_path else [],
        stage="corrections.build",
        source="generator truth (data/simulation truth ratios)",
        truth_sha256=digest,
        truth_params=truth.get("params"),
        truth_data_params=truth.get("data_params"),
        format_version=FORMAT_VERSION,
        n_eigen=int(degree + 1),
    )
    meta["git"].pop("diff", None)  # keep the payload small; hash + dirty flag stay
    cset = {
        "schema_version": SCHEMA_VERSION,
        "description": json.dumps(meta, sort_keys=True),
        "corrections": corrs,
    }
    import correctionlib.schemav2 as schema

    schema.CorrectionSet.model_validate(cset)  # fail at build time, not at evaluation time
    return cset


def write_payload(cset: dict[str, Any], outdir: str | Path) -> Path:
    """Write the payload gzipped and atomically into ``outdir``; returns its path."""
    target = Path(outdir) / PAYLOAD_NAME
    with atomic_path(target) as tmp, gzip.open(tmp, "wt") as f:
        json.dump(cset, f)
    return target


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--truth", help="truth.json written by the generator")
    src.add_argument(
        "--default", action="store_true", help="truth of the generator's default SynthParams"
    )
    p.add_argument("-o", "--outdir", required=True, help="output folder")
    p.add_argument("--degree", type=int, default=2, help="pT polynomial degree (n_eigen-1)")
    p.add_argument(
        "--probe-lumi-pb",
        type=float,
        default=probe_counts.DEFAULT_LUMI_PB,
        help="luminosity of the Z sample giving the data probes (see corrections/probe_counts.py)",
    )
    p.add_argument(
        "--mc-z-events",
        type=float,
        default=probe_counts.DEFAULT_MC_Z_EVENTS,
        help="events of the simulated Z sample giving the simulated probes",
    )
    p.add_argument("--n-probes-data", type=float, default=None, help="flat probes per bin instead")
    p.add_argument("--n-probes-mc", type=float, default=None, help="flat probes per bin instead")
    p.add_argument("--syst-rel", type=float, default=5.0e-4)
    p.add_argument("--minbias-var", type=float, default=0.046)
    p.add_argument("--scale-var", type=float, default=1.0e-4)
    p.add_argument("--fit-pt-min", type=float, default=24.0)
    args = p.parse_args(argv)
    if args.default:
        from wremnants_dask.synth.params import SynthParams

        truth = json.loads(json.dumps(SynthParams().truth()))
    else:
        try:
            truth = json.loads(Path(args.truth).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"cannot read truth file {args.truth}: {exc}") from exc
    cset = build_payload(
        truth,
        truth_path=args.truth,
        degree=args.degree,
        n_probes_data=args.n_probes_data,
        n_probes_mc=args.n_probes_mc,
        probe_lumi_pb=args.probe_lumi_pb,
        mc_z_events=args.mc_z_events,
        syst_rel=args.syst_rel,
        minbias_var=args.minbias_var,
        scale_var=args.scale_var,
        fit_pt_min=args.fit_pt_min,
    )
    out = write_payload(cset, args.outdir)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
