"""Shared machinery of the muon analyses (mw, mz_dilepton, mz_wlike).

What is common: classifying a sample (W / Z / other, prompt-muon matching, which LHE weights
and prefiring branches its files carry), declaring the variation histograms that go with a set of
ordinary axes, computing the nominal event weight and the relative variation tensors for the
selected muons, and filling them chunk-sized (batched so a 864-cell tensor never needs more than
a few tens of MB). The per-analysis modules only select events and choose the observables.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import awkward as ak
import hist
import numpy as np

from wremnants_dask.corrections.payload import CorrectionsPayload
from wremnants_dask.engine.processor import ChunkOutput, Events, Processor, ProcessorError, touch
from wremnants_dask.engine.tensorhist import TensorHist, tensor_axis
from wremnants_dask.inputs.nanoaod_eras import EraTable, Resolution, evaluate, leaves, load_table
from wremnants_dask.processors import pdfsets, theory
from wremnants_dask.processors.muon_scale import scale_tensor_per_muon
from wremnants_dask.processors.muon_weights import muon_sf_weights
from wremnants_dask.processors.tensors import bin_index, scatter_slots
from wremnants_dask.utils.provenance import file_sha256

log = logging.getLogger(__name__)

#: Boson parameters (GeV) used as the reweighting reference when the truth payload has none.
PDG = {"W": (80.379, 2.085), "Z": (91.1876, 2.4952)}
BOSON_PDGID = {"W": (24,), "Z": (23,)}
DOWN_UP = ("down", "up")
PREFIRE_BRANCHES = ("L1PreFiringWeight_Nom", "L1PreFiringWeight_Up", "L1PreFiringWeight_Dn")
TRIGOBJ_INPUTS = ("TrigObj_id", "TrigObj_filterBits", "TrigObj_eta", "TrigObj_phi")
#: Maximum number of cells (events x tensor entries) per fill call.
FILL_CELLS = 4_000_000


@dataclass(frozen=True)
class SampleInfo:
    """What a dataset is and which optional inputs its files carry (see eras.py for the names)."""

    name: str
    is_data: bool
    boson: str | None  # "W", "Z" or None: which mass/width variations apply
    prompt_flavours: tuple[int, ...] | None  # Muon_genPartFlav values required; None: no match
    n_pdf: int | None  # LHEPdfWeight entries, None if absent
    has_scale: bool  # LHEScaleWeight present
    has_prefire: bool  # L1PreFiringWeight_* present
    has_pileup: bool  # Pileup_nTrueInt present
    branches: frozenset[str]
    inputs: Resolution | None = None  # input -> the branch (or expression) of this dataset's files
    pdf_set: str | None = None  # name in configs/pdf_sets.yaml (labels the pdfVar axis)


#: Inputs of simulation used for weights and variations when the files carry them.
MC_INPUTS = (
    "genWeight",
    "Muon_genPartFlav",
    "Muon_genPartIdx",
    "GenPart_pt",
    "GenPart_pdgId",
    "GenPart_statusFlags",
    "GenPart_mass",
    "Pileup_nTrueInt",
    *PREFIRE_BRANCHES,
    "LHEPdfWeight",
    "LHEScaleWeight",
)
#: Inputs read when present, for data and simulation.
EVENT_INPUTS = ("run", "luminosityBlock", "event", *TRIGOBJ_INPUTS)


def _boson(group: str, name: str) -> str | None:
    g, n = group.lower(), name.lower()
    if g.startswith("w") or n.startswith(("wplus", "wminus", "wjets", "w_")):
        return "W"
    if g.startswith(("z", "dy")) or n.startswith(("zmumu", "ztautau", "dy")):
        return "Z"
    return None


def _prompt_flavours(group: str, boson: str | None) -> tuple[int, ...] | None:
    if boson is None:
        return None
    return (15,) if "tautau" in group.lower() else (1,)


@functools.lru_cache(maxsize=64)
def _file_branches(
    path: str, treename: str, pdf_branch: str = "LHEPdfWeight"
) -> tuple[frozenset[str], int | None, int | None]:
    """Branch names of a file's tree, the length of the PDF weights ``pdf_branch`` and their
    first LHA ID (from the branch title).

    The tree comes from the engine's per-process cache (``engine.open_tree``): the plan has
    just opened this file to check it, and parsing the metadata of ~1500 NanoAOD branches
    again costs as much. The length is read from the first entry of the counter branch
    ``n<pdf_branch>`` (a few bytes), else parsed from the branch title, else read from the
    first entry of the weights (which decompresses a whole basket of 103-float rows).
    """
    from wremnants_dask.inputs.files import open_tree

    try:
        tree = open_tree(path, treename)
        names = frozenset(tree.keys())
        n_pdf = lhaid = None
        if pdf_branch in names:
            n_pdf = _pdf_length(tree, names, pdf_branch)
            lhaid = theory.first_lhaid_from_title(tree[pdf_branch].title)
    except (OSError, KeyError, ValueError) as exc:
        raise ProcessorError(f"cannot read the branch list of {path} ({treename}): {exc}") from exc
    return names, n_pdf, lhaid


def _pdf_length(tree: Any, names: frozenset[str], branch: str = "LHEPdfWeight") -> int | None:
    """Entries of the PDF weights in the first event (see ``_file_branches``)."""
    if tree.num_entries == 0:
        return theory.n_pdf_from_title(tree[branch].title)
    if f"n{branch}" in names:
        return int(tree[f"n{branch}"].array(entry_stop=1, library="np")[0])
    from_title = theory.n_pdf_from_title(tree[branch].title)
    if from_title is not None:
        return from_title
    first = tree[branch].array(entry_stop=1, library="ak")
    return int(ak.num(first, axis=1)[0])


_WARNED: set[tuple[str, str]] = set()


def warn_once(dataset: str, what: str) -> None:
    """Log a message once per (dataset, topic) and process."""
    if (dataset, what) not in _WARNED:
        _WARNED.add((dataset, what))
        log.warning("dataset %s: %s", dataset, what)


def sample_info(
    dataset: Any,
    required: Sequence[str] = (),
    table: EraTable | None = None,
    pdf_set: str | None = None,
) -> SampleInfo:
    """Classify ``dataset`` from its name/group, and find its inputs in its first file.

    ``required``: the inputs the analysis cannot run without (a file lacking one stops the run
    with one line, see eras.py); data with a golden JSON also needs run and luminosityBlock.
    Optional inputs the file lacks are switched off with a note. The PDF set of the PDF weights
    is ``pdf_set`` if given, else found from the branch title's first LHA ID in
    configs/pdf_sets.yaml (``processors.pdfsets``).
    """
    if not dataset.files:
        raise ProcessorError(f"dataset {dataset.name!r} has no files")
    table = table if table is not None else load_table()
    first = str(dataset.files[0])
    treename = getattr(dataset, "treename", "Events")
    era = getattr(dataset, "era", None)
    if not era:
        raise ProcessorError(f"dataset {dataset.name!r} has no era (needed for the branch names)")
    branches = _file_branches(first, treename)[0]
    is_data = bool(dataset.is_data)
    need = list(required)
    if is_data and getattr(dataset, "golden_json", None):
        need += ["run", "luminosityBlock"]
    optional = [*EVENT_INPUTS, *([] if is_data else MC_INPUTS)]
    inputs = table.resolve(era, branches, need, optional, file=first)
    n_pdf = lhaid = None
    pdf_branch = inputs.branch_of("LHEPdfWeight")
    if not is_data and pdf_branch is not None:
        _, n_pdf, lhaid = _file_branches(first, treename, pdf_branch)
    pdf_name = None
    if n_pdf:
        where = f"dataset {dataset.name!r} ({first})"
        try:
            if pdf_set is not None:
                pdf = pdfsets.by_name(pdf_set)
                if pdf.members != n_pdf:
                    raise pdfsets.PdfSetError(
                        f"{where}: {pdf_branch} has {n_pdf} entries, PDF set {pdf.name!r} "
                        f"(option pdf_set) has {pdf.members}"
                    )
            else:
                pdf = pdfsets.identify(lhaid, n_pdf, where)
        except pdfsets.PdfSetError as err:
            raise ProcessorError(str(err)) from None
        pdf_name = pdf.name
    boson = None if is_data else _boson(dataset.group, dataset.name)
    info = SampleInfo(
        name=dataset.name,
        is_data=is_data,
        boson=boson,
        prompt_flavours=_prompt_flavours(dataset.group, boson),
        n_pdf=n_pdf,
        has_scale=(not is_data) and inputs.has("LHEScaleWeight"),
        has_prefire=(not is_data) and all(inputs.has(b) for b in PREFIRE_BRANCHES),
        has_pileup=(not is_data) and inputs.has("Pileup_nTrueInt"),
        branches=branches,
        inputs=inputs,
        pdf_set=pdf_name,
    )
    _notes(dataset, info, table, first)
    return info


def _notes(dataset: Any, info: SampleInfo, table: EraTable, first: str) -> None:
    """Print once per dataset what the era table changed and which optional inputs are off."""
    era = str(dataset.era)
    if era in table.notes:
        warn_once(dataset.name, f"era {era}: {table.notes[era]}")
    if info.inputs is not None and info.inputs.notes:
        warn_once(dataset.name, f"era {era} inputs: {'; '.join(info.inputs.notes)}")
    if info.is_data:
        return
    off = []
    if not info.has_prefire:
        off.append("no L1PreFiringWeight_Nom/Up/Dn: prefiring weight 1, no prefire variation")
    if not info.has_pileup:
        off.append("no Pileup_nTrueInt: pileup weight 1, no pileup variation")
    if info.n_pdf is None:
        off.append("no LHEPdfWeight: no pdf variation")
    if not info.has_scale:
        off.append("no LHEScaleWeight: no qcdScale variation")
    if info.inputs is not None and not info.inputs.has("genWeight"):
        off.append("no genWeight: generator weight 1")
    for what in off:
        warn_once(dataset.name, f"{what} ({first})")


# ------------------------------------------------------------------------------ axes
def down_up_axis() -> Any:
    """The team's up/down axis (histops.DOWN_UP_AXIS): ``downUpVar``, bin 0 down, bin 1 up."""
    return hist.axis.Regular(2, -2.0, 2.0, underflow=False, overflow=False, name="downUpVar")


def mass_axis() -> Any:
    return tensor_axis("massShift", labels=[f"massShift{s}MeV" for s in theory.MASS_SHIFTS_MEV])


def variation_tensor_axes(
    info: SampleInfo, payload: CorrectionsPayload, *, eff_stat_diagonal: bool
) -> dict[str, tuple[Any, ...]]:
    """Suffix -> tensor axes of every variation histogram that applies to this sample."""
    if info.is_data:
        return {}
    step = tensor_axis("effStep", labels=list(payload.sf_steps))
    eig = tensor_axis("effStatEig", payload.n_eigen)
    n_eta = payload.sf_stat_slots().size - 1
    out: dict[str, tuple[Any, ...]] = {}
    if eff_stat_diagonal:
        out["effStat"] = (step, eig, down_up_axis())
    else:
        out["effStat"] = (step, tensor_axis("effStatEta", n_eta), eig, down_up_axis())
    out["effSyst"] = (step, down_up_axis())
    if info.has_pileup:
        out["pileup"] = (down_up_axis(),)
    if info.has_prefire:
        out["prefire"] = (down_up_axis(),)
    out["muonScale"] = (tensor_axis("scaleEta", payload.scale_slices().size - 1), down_up_axis())
    if info.n_pdf:
        # the axis label names the PDF set: the fit setup reads how to combine the members
        labels = [f"pdf{i}" for i in range(info.n_pdf)]
        out["pdf"] = (tensor_axis("pdfVar", labels=labels, label=info.pdf_set),)
    if info.has_scale:
        factors = [str(f) for f in theory.SCALE_FACTORS]
        out["qcdScale"] = (
            tensor_axis("muRfact", labels=factors),
            tensor_axis("muFfact", labels=factors),
        )
    if info.boson is not None:
        out[f"massWeight{info.boson}"] = (mass_axis(),)
        out[f"widthWeight{info.boson}"] = (down_up_axis(),)
    return out


def declare(
    base: str,
    axes: Sequence[Any],
    info: SampleInfo,
    payload: CorrectionsPayload,
    systematics: bool,
    *,
    eff_stat_diagonal: bool = False,
) -> dict[str, TensorHist]:
    """The nominal histogram ``base`` (Weight storage) and its ``base_<variation>`` tensors."""
    out = {base: TensorHist(axes, storage="weight", name=base)}
    if systematics:
        for suffix, taxes in variation_tensor_axes(
            info, payload, eff_stat_diagonal=eff_stat_diagonal
        ).items():
            name = f"{base}_{suffix}"
            out[name] = TensorHist(axes, taxes, storage="double", name=name)
    return out


# ------------------------------------------------------------------------------ columns
def read_columns(
    events: Events, info: SampleInfo, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, Any]:
    """The inputs an analysis needs, under their NanoAODv6 names whatever the file calls them.

    ``info.inputs`` (resolved from the era table when the histograms were declared) says which
    branch or expression holds each input; a required input the resolution lacks is an error
    naming the input (normally caught earlier, with the file, by ``sample_info``).
    """
    res = info.inputs
    cols: dict[str, Any] = {}
    for name in dict.fromkeys([*required, *optional]):
        expr = name if res is None else res.exprs.get(name)
        if expr is None or (res is None and not events.has(name)):
            if name in required:
                raise ProcessorError(
                    f"dataset {info.name!r}: input {name!r} missing in the input files"
                )
            continue
        cols[name] = evaluate(expr, events.branch)
        if events.tracing:
            touch(*(events.branch(b) for b in leaves(expr)))
    return cols


def mc_columns(info: SampleInfo) -> list[str]:
    """Optional inputs used for weights and variations of simulation."""
    if info.is_data:
        return []
    out = ["genWeight", "Muon_genPartFlav", "Muon_genPartIdx", "GenPart_pt", "GenPart_pdgId"]
    if info.has_pileup:
        out.append("Pileup_nTrueInt")
    if info.has_prefire:
        out += list(PREFIRE_BRANCHES)
    if info.n_pdf:
        out.append("LHEPdfWeight")
    if info.has_scale:
        out.append("LHEScaleWeight")
    if info.boson is not None:
        out += ["GenPart_statusFlags", "GenPart_mass"]
    return out


def np1(x: Any) -> np.ndarray:
    return np.asarray(ak.to_numpy(x) if isinstance(x, ak.Array) else x)


def gen_pt_of(cols: dict[str, Any], idx: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Generator pT of muons with Muon_genPartIdx ``idx`` in events ``event`` (NaN: no match)."""
    if "GenPart_pt" not in cols or "Muon_genPartIdx" not in cols:
        return np.full(idx.shape, np.nan)
    gp = cols["GenPart_pt"]
    counts = np1(ak.num(gp, axis=1))
    flat = np1(ak.flatten(gp, axis=1)).astype(np.float64)
    starts = np.cumsum(counts) - counts
    ok = (idx >= 0) & (idx < counts[event])
    out = np.full(idx.shape, np.nan)
    out[ok] = flat[starts[event[ok]] + idx[ok]]
    return out


# ------------------------------------------------------------------------------ weights
@dataclass
class EventWeights:
    """Nominal weight per selected event and the relative variation tensors (name -> array)."""

    nominal: np.ndarray
    tensors: dict[str, Callable[[slice], np.ndarray]]


@dataclass
class SelectedMuons:
    """Flattened muons entering the weights, for the selected events (``counts`` per event)."""

    eta: np.ndarray
    pt: np.ndarray
    gen_pt: np.ndarray
    counts: np.ndarray
    fail: dict[str, np.ndarray] | None = None  # step -> per muon: inefficiency SF instead
    trigger_used: np.ndarray | None = None  # per muon: does the trigger step apply at all


def boson_reference(payload: CorrectionsPayload, boson: str) -> tuple[float, float]:
    """(mass, width) in GeV the simulation was generated with (payload truth params or PDG)."""
    params = payload.metadata.get("truth_params") or {}
    m, g = PDG[boson]
    return float(params.get(f"m{boson}", m)), float(params.get(f"Gamma{boson}", g))


def boson_window(payload: CorrectionsPayload, boson: str) -> tuple[float | None, float | None]:
    """Generated mass window (GeV) of the boson lineshape from the payload's truth, else open."""
    params = payload.metadata.get("truth_params") or {}
    window = params.get(f"{boson.lower()}_window")
    return (float(window[0]), float(window[1])) if window else (None, None)


def event_weights(
    cols: dict[str, Any],
    sel: np.ndarray,
    muons: SelectedMuons,
    info: SampleInfo,
    payload: CorrectionsPayload,
    *,
    systematics: bool,
    eff_stat_diagonal: bool,
    bw_window: tuple[float | None, float | None] | None = None,
    width_unc_gev: dict[str, float] | None = None,
) -> EventWeights:
    """Nominal weight and lazily evaluated variation tensors for the events ``sel`` (bool mask).

    ``width_unc_gev``: boson-width variations {"W": GeV, "Z": GeV}; default
    ``theory.WIDTH_SHIFTS_GEV`` (the CMS choice)."""
    n = int(sel.sum())
    if info.is_data:
        return EventWeights(np.ones(n), {})
    w = np1(cols["genWeight"])[sel].astype(np.float64) if "genWeight" in cols else np.ones(n)
    tensors: dict[str, Callable[[slice], np.ndarray]] = {}

    if info.has_pileup:
        ntrue = np1(cols["Pileup_nTrueInt"])[sel].astype(np.float64)
        pu = payload.pileup(ntrue)
        w = w * pu
        if systematics:
            with np.errstate(divide="ignore", invalid="ignore"):
                pu_rel = np.stack([payload.pileup(ntrue, v) for v in DOWN_UP], axis=-1)
                pu_rel = np.where(pu[:, None] > 0, pu_rel / pu[:, None], 1.0)
            tensors["pileup"] = lambda s, a=pu_rel: a[s]

    if info.has_prefire:
        nom = np1(cols["L1PreFiringWeight_Nom"])[sel].astype(np.float64)
        w = w * nom
        if systematics:
            var = np.stack(
                [np1(cols[b])[sel].astype(np.float64) for b in PREFIRE_BRANCHES[:0:-1]], axis=-1
            )  # [Dn, Up]
            with np.errstate(divide="ignore", invalid="ignore"):
                pf_rel = np.where(nom[:, None] > 0, var / nom[:, None], 1.0)
            tensors["prefire"] = lambda s, a=pf_rel: a[s]

    sf = muon_sf_weights(
        payload,
        muons.eta,
        muons.pt,
        muons.counts,
        steps_mask=None if muons.trigger_used is None else {"trigger": muons.trigger_used},
        fail=muons.fail,
        variations=systematics,
    )
    w = w * sf.nominal
    if systematics:
        tensors["effStat"] = sf.stat_diagonal if eff_stat_diagonal else sf.stat_full
        tensors["effSyst"] = lambda s, a=sf.syst: a[s]

        slices = payload.scale_slices()
        sigma = payload.resolution(muons.eta, np.nan_to_num(muons.gen_pt, nan=1.0)) * muons.gen_pt
        delta = payload.scale_unc(muons.eta)
        per_mu = scale_tensor_per_muon(muons.pt, muons.gen_pt, sigma, delta)
        slot = bin_index(muons.eta, slices)
        scale = scatter_slots(per_mu, slot, muons.counts, slices.size - 1)
        tensors["muonScale"] = lambda s, a=scale: a[s]

        if info.n_pdf:
            pdf = theory.pdf_weights(cols["LHEPdfWeight"][sel], info.n_pdf)
            tensors["pdf"] = lambda s, a=pdf: a[s]
        if info.has_scale:
            qcd = theory.scale_weights(cols["LHEScaleWeight"][sel])
            tensors["qcdScale"] = lambda s, a=qcd: a[s]
        if info.boson is not None:
            m = theory.last_copy_boson_mass(
                cols["GenPart_pdgId"][sel],
                cols["GenPart_statusFlags"][sel],
                cols["GenPart_mass"][sel],
                BOSON_PDGID[info.boson],
            )
            m0, g0 = boson_reference(payload, info.boson)
            lo, hi = bw_window or boson_window(payload, info.boson)
            mw = theory.mass_weights(m, m0, g0, lo=lo, hi=hi)
            dg = (width_unc_gev or theory.WIDTH_SHIFTS_GEV)[info.boson]
            ww = theory.width_weights(m, m0, g0, dg, lo=lo, hi=hi)
            tensors[f"massWeight{info.boson}"] = lambda s, a=mw: a[s]
            tensors[f"widthWeight{info.boson}"] = lambda s, a=ww: a[s]
    return EventWeights(w, tensors)


def fill_all(
    out: ChunkOutput,
    base: str,
    values: Sequence[np.ndarray],
    weights: EventWeights,
) -> None:
    """Fill ``base`` and every declared ``base_<variation>`` histogram, in bounded batches."""
    out.fill(base, *values, weight=weights.nominal)
    n = len(weights.nominal)
    for suffix, tensor_of in weights.tensors.items():
        name = f"{base}_{suffix}"
        h = out.hists.get(name)
        if h is None:
            raise ProcessorError(
                f"dataset {out.dataset.name!r}: variation {suffix!r} computed but histogram "
                f"{name!r} not declared (input files differ in their branches?)"
            )
        step = max(1, FILL_CELLS // max(1, h.ntensor))
        for start in range(0, n, step):
            s = slice(start, min(n, start + step))
            out.fill(name, *(v[s] for v in values), weight=weights.nominal[s], tensor=tensor_of(s))


def _width_unc(option: Any) -> dict[str, float]:
    """The width variations of the option ``width_unc_gev`` merged over the defaults."""
    out = dict(theory.WIDTH_SHIFTS_GEV)
    if option is None:
        return out
    if not isinstance(option, dict) or set(option) - set(out):
        raise ProcessorError(
            f"option width_unc_gev must map 'W'/'Z' to a width variation in GeV, got {option!r}"
        )
    for boson, value in option.items():
        if not (isinstance(value, (int, float)) and value > 0):
            raise ProcessorError(f"option width_unc_gev[{boson!r}] must be > 0 GeV, got {value!r}")
        out[boson] = float(value)
    return out


class MuonAnalysis(Processor):
    """Base class: options, correction payload, sample classification shared by the analyses.

    Options: ``corrections`` (payload path; default the shipped one), ``bw_window`` (mass
    window (lo, hi) in GeV of the generated lineshape, for the Breit-Wigner normalisation;
    default the window recorded in the payload's truth for the sample's boson), ``eras`` (the
    NanoAOD era table; default configs/nanoaod_eras.yaml), ``width_unc_gev`` (boson-width
    variations {"W": GeV, "Z": GeV}; default ``theory.WIDTH_SHIFTS_GEV``, the CMS +-0.6 /
    +-0.8 MeV), ``pdf_set`` (name of the PDF-weight set in configs/pdf_sets.yaml; default: from
    the branch title's LHA IDs).
    """

    eff_stat_diagonal: bool = False
    #: Inputs (era-table names) without which the analysis cannot run.
    required_inputs: tuple[str, ...] = ()

    def __init__(self, *, systematics: bool = True, **options: Any) -> None:
        super().__init__(systematics=systematics, **options)
        self.payload = CorrectionsPayload(options.get("corrections"))
        window = options.get("bw_window")
        self.bw_window = (window[0], window[1]) if window else None
        self.eras = load_table(options.get("eras"))
        self.width_unc_gev = _width_unc(options.get("width_unc_gev"))

    def sample_info(self, dataset: Any) -> SampleInfo:
        return sample_info(dataset, self.required_inputs, self.eras, self.options.get("pdf_set"))

    def dataset_metadata(self, dataset: Any) -> dict[str, Any]:
        """The era, the era table and the branch (or expression) read for each input."""
        inputs = self.sample_info(dataset).inputs
        return {
            "era": str(dataset.era),
            "nanoaod_era_table": self.eras.path,
            "nanoaod_inputs": {} if inputs is None else inputs.mapping(),
        }

    def analysis_metadata(self) -> dict[str, Any]:
        """The boson masses and widths (GeV) of the payload this run used: the fit setup reads
        the reference of the mass templates from here, not from a default payload."""
        ref = {b: boson_reference(self.payload, b) for b in ("W", "Z")}
        return {
            "reference_mass_gev": {b: m for b, (m, _) in ref.items()},
            "reference_width_gev": {b: g for b, (_, g) in ref.items()},
            "corrections": str(self.payload.path),
            "corrections_sha256": file_sha256(self.payload.path),
            "eff_stat_eta_edges": self.payload.sf_stat_eta_edges,
        }

    def event_weights(
        self, cols: dict[str, Any], sel: np.ndarray, muons: SelectedMuons, info: SampleInfo
    ) -> EventWeights:
        """The nominal weight and variation tensors of the selected events, with this
        analysis's payload, systematics switch, eff-stat treatment and mass window."""
        return event_weights(
            cols,
            sel,
            muons,
            info,
            self.payload,
            systematics=self.systematics,
            eff_stat_diagonal=self.eff_stat_diagonal,
            bw_window=self.bw_window,
            width_unc_gev=self.width_unc_gev,
        )

    def declare(self, base: str, axes: Sequence[Any], dataset: Any) -> dict[str, TensorHist]:
        return declare(
            base,
            axes,
            self.sample_info(dataset),
            self.payload,
            self.systematics,
            eff_stat_diagonal=self.eff_stat_diagonal,
        )


# ------------------------------------------------------------------------------ axes
def eta_pt_charge_axes(payload: CorrectionsPayload) -> list[Any]:
    """eta (the scale-factor eta bins, 48 in [-2.4, 2.4]), pT (30 in [26, 56]), charge (2)."""
    eta_edges = payload.sf_eta_edges()
    return [
        hist.axis.Variable(
            eta_edges, name="eta", label="muon eta", underflow=False, overflow=False
        ),
        hist.axis.Regular(
            30, 26.0, 56.0, name="pt", label="muon pT (GeV)", underflow=False, overflow=False
        ),
        hist.axis.Regular(
            2, -2.0, 2.0, name="charge", label="muon charge", underflow=False, overflow=False
        ),
    ]


def expand_eff_stat(diag: hist.Hist, nominal: hist.Hist, eta_axis: str = "eta") -> hist.Hist:
    """Full efficiency-stat tensor from the diagonal one written by ``mw``.

    ``diag`` has axes (ordinary..., effStep, effStatEig, downUpVar) and holds, in eta bin i,
    the yield with the scale factors of eta bin i varied. The result adds an ``effStatEta``
    axis after ``effStep``: entry j equals ``diag`` in eta bin j and ``nominal`` elsewhere.
    Only for single-muon histograms whose ``eta_axis`` is the scale-factor eta binning.
    """
    names = [a.name for a in diag.axes]
    n_ord = len(nominal.axes)
    ieta = names.index(eta_axis)
    n_eta = diag.axes[eta_axis].size
    dv = diag.values()  # (*ord, step, eig, 2)
    nv = nominal.values()
    extra = dv.ndim - n_ord
    nv_b = nv.reshape(nv.shape + (1,) * extra)
    # (*ord, step, eta_j, eig, 2): nominal, with the diagonal eta_i == eta_j replaced
    full = np.broadcast_to(
        np.expand_dims(nv_b, n_ord + 1), dv.shape[: n_ord + 1] + (n_eta,) + dv.shape[n_ord + 1 :]
    ).copy()
    idx = np.arange(n_eta)
    sel: list[Any] = [slice(None)] * full.ndim
    sel[ieta] = idx
    sel[n_ord + 1] = idx
    # two separated index arrays put the diagonal dimension first
    full[tuple(sel)] = np.moveaxis(dv, ieta, 0)
    axes = [*diag.axes[: n_ord + 1], tensor_axis("effStatEta", n_eta), *diag.axes[n_ord + 1 :]]
    out = hist.Hist(*axes, storage=hist.storage.Double())
    out.view(flow=False)[...] = full
    return out
