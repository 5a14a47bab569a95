"""The simulated processes: cross sections, generator filters, process groups.

``xsec_pb`` is the cross section that normalises a generated sample (weight = xsec * lumi /
sum genWeight). For filtered samples it already includes the generator filter efficiency, as in
CMS XSDB entries of filtered samples; the inclusive value and the filter are kept for reference.
"""

from __future__ import annotations

from dataclasses import dataclass

# Branching ratios (PDG) used for the filters.
BR_W_LNU = 0.1086  # W -> mu nu (per lepton flavour)
BR_W_TAUNU = 0.1138
BR_W_ENU = 0.1071
BR_Z_MUMU = 0.03366
BR_TAU_MU = 0.1739
BR_TAU_E = 0.1782

# Diboson sub-processes: (inclusive pythia8 LO xsec in pb, probability that at least one
# boson decays directly to a muon).
_DIBOSON_SUB = {
    "WW": (75.8, 1.0 - (1.0 - BR_W_LNU) ** 2),
    "WZ": (27.6, 1.0 - (1.0 - BR_W_LNU) * (1.0 - BR_Z_MUMU)),
    "ZZ": (12.14, 1.0 - (1.0 - BR_Z_MUMU) ** 2),
}
#: Effective (filtered) diboson sub-process cross sections, used to mix WW/WZ/ZZ events.
DIBOSON_FRACTIONS = {k: x * f for k, (x, f) in _DIBOSON_SUB.items()}


@dataclass(frozen=True)
class ProcessInfo:
    """One simulated process; ``xsec_pb`` normalises the sample (filter included)."""

    name: str
    xsec_pb: float
    group: str
    description: str
    inclusive_xsec_pb: float
    filter_eff: float
    neg_weight_fraction: float
    abs_gen_weight: float


def _info(name, group, desc, incl, filt, neg, absw) -> ProcessInfo:
    return ProcessInfo(name, incl * filt, group, desc, incl, filt, neg, absw)


_TAU_TO_MU_ANY = 1.0 - (1.0 - BR_TAU_MU) ** 2
_DIB_INCL = sum(x for x, _ in _DIBOSON_SUB.values())

PROCESSES: dict[str, ProcessInfo] = {
    p.name: p
    for p in (
        _info("wplus_munu", "Wmunu", "W+ -> mu+ nu (aMC@NLO-like, BW in mass window)",
              11800.0, 1.0, 0.10, 11800.0),
        _info("wminus_munu", "Wmunu", "W- -> mu- nu (aMC@NLO-like, BW in mass window)",
              8700.0, 1.0, 0.10, 8700.0),
        _info("zmumu", "Zmumu", "Z/gamma* -> mu mu, m in the Z window (50-130 GeV)",
              2000.0, 1.0, 0.08, 2000.0),
        _info("ztautau", "Ztautau", "Z -> tau tau with at least one tau -> mu nu nu",
              2000.0, _TAU_TO_MU_ANY, 0.08, 2000.0),
        _info("ttbar", "Top", "ttbar (833 pb inclusive) filtered: >= 1 W -> mu nu",
              833.0, 1.0 - (1.0 - BR_W_LNU) ** 2, 0.004, 1.0),
        _info("diboson", "Diboson", "WW/WZ/ZZ (pythia8 LO) filtered: >= 1 V -> mu",
              _DIB_INCL, sum(DIBOSON_FRACTIONS.values()) / _DIB_INCL, 0.0, 1.0),
        _info("qcd", "QCD",
              "QCD heavy-flavour (b/c -> mu X), muon pT > 15 GeV |eta| < 2.5 enriched; "
              "effective filtered cross section", 30000.0, 1.0, 0.0, 1.0),
    )
}  # fmt: skip

#: The group of (pseudo-)data samples; it has no simulated process.
DATA_GROUP = "Data"
#: The group of the simulated QCD multijet (non-prompt muons) process.
QCD_GROUP = "QCD"


def _groups() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for p in PROCESSES.values():
        out[p.group] = (*out.get(p.group, ()), p.name)
    out[DATA_GROUP] = ()
    return out


#: The process groups (docs/DESIGN.md): group -> simulated processes, in the order of
#: ``PROCESSES``, data last. The one table of groups: the dataset configs (``inputs.datasets``)
#: and the fit setup (``fitsetup``) take their group names from here.
GROUPS: dict[str, tuple[str, ...]] = _groups()
#: Groups whose muons are prompt (W, Z, top, diboson decays): simulated in the fit, while the
#: non-prompt background (QCD) is estimated from data.
PROMPT_GROUPS: tuple[str, ...] = tuple(g for g in GROUPS if g not in (QCD_GROUP, DATA_GROUP))


def process_info(name: str) -> ProcessInfo:
    """The ProcessInfo of ``name``; a clear error listing the known processes otherwise."""
    try:
        return PROCESSES[name]
    except KeyError:
        raise KeyError(f"unknown process {name!r}; known: {sorted(PROCESSES)}") from None
