"""The tag-and-probe configuration (``configs/tnp.yaml``): tag, probe, steps, binning, extraction.

Read once and checked key by key, so that a typo in a working point is an error naming the file
and the key, not a silently ignored cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DEFAULT_CONFIG = "tnp.yaml"
CRITERIA = {"id", "dxy_max", "iso_max", "trigger_match", "muon_match"}
#: Criterion of the reconstruction step: a track-like probe (a Muon, or an IsoTrack that is no
#: Muon's track) passes when it is a reconstructed Muon, i.e. matched to one within this dR.
TRACK_CRITERION = "muon_match"


class TnPConfigError(ValueError):
    """A tag-and-probe config problem (the message names the file and the key)."""


@dataclass(frozen=True)
class Step:
    """One step of the factorised efficiency chain and its pass criteria."""

    name: str
    criteria: dict[str, Any]


@dataclass(frozen=True)
class TnPConfig:
    path: str
    tag: dict[str, Any]
    probe: dict[str, Any]
    trigger_bit: int
    trigger_dr: float
    opposite_charge: bool
    mass_bins: int
    mass_range: tuple[float, float]
    steps: tuple[Step, ...]
    pt_edges: np.ndarray
    eta_edges: np.ndarray
    charge_bins: bool
    fit_range: tuple[float, float]
    signal_window: tuple[float, float]
    sidebands: tuple[tuple[float, float], ...]
    min_probes: float
    chi2_prob_min: float
    # alternative fits of the data (their spread is a systematic): signal voigt/cb, bkg linear
    alternatives: tuple[str, ...] = ("voigt", "cb", "linear")

    @property
    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]

    @property
    def track_dr(self) -> float | None:
        """dR of the Muon match of the reconstruction step (the first step), None without it."""
        return self.steps[0].criteria.get(TRACK_CRITERION)

    def branches(self) -> set[str]:
        """The Muon_ branches the tag, probe and step criteria read."""
        out = {"Muon_pt", "Muon_eta", "Muon_phi", "Muon_charge"}
        for crit in [self.tag, *(s.criteria for s in self.steps)]:
            if "id" in crit:
                out.add(f"Muon_{crit['id']}")
            if "dxy_max" in crit:
                out.add("Muon_dxy")
            if "iso_max" in crit:
                out.add("Muon_pfRelIso04_all")
        return out


def _need(d: Any, key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise TnPConfigError(f"{where}: key {key!r} is required")
    return d[key]


def _keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise TnPConfigError(f"{where} must be a mapping")
    bad = sorted(set(d) - allowed)
    if bad:
        raise TnPConfigError(f"{where}: unknown key(s) {bad}; allowed: {sorted(allowed)}")
    return d


def _edges(values: Any, where: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size < 2 or np.any(np.diff(arr) <= 0):
        raise TnPConfigError(f"{where}: need at least two increasing edges, got {values!r}")
    return arr


def _interval(values: Any, where: str) -> tuple[float, float]:
    lo, hi = _edges(values, where)[[0, -1]]
    if len(values) != 2:
        raise TnPConfigError(f"{where}: expected [lo, hi], got {values!r}")
    return float(lo), float(hi)


def resolve(path: str | Path | None) -> Path:
    """A path, a packaged name (``tnp_chain`` = ``configs/tnp_chain.yaml``), or the packaged
    ``configs/tnp.yaml`` for None."""
    if path is None:
        return Path(str(resources.files("wremnants_dask.configs").joinpath(DEFAULT_CONFIG)))
    p = Path(path)
    if p.is_file():
        return p
    if p.parent == Path(".") and p.name.startswith("tnp"):
        packaged = resources.files("wremnants_dask.configs").joinpath(p.with_suffix(".yaml").name)
        if packaged.is_file():
            return Path(str(packaged))
    raise TnPConfigError(f"tag-and-probe config {p} does not exist (nor as a packaged name)")


def load_config(path: str | Path | None = None) -> TnPConfig:
    """Read and check a tag-and-probe YAML (None: the packaged default)."""
    p = resolve(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise TnPConfigError(f"{p}: not valid YAML ({err})") from err
    top = {"tag", "probe", "trigger", "pair", "steps", "binning", "extraction"}
    raw = _keys(raw, top, str(p))
    tag = _keys(_need(raw, "tag", str(p)), CRITERIA | {"pt_min", "eta_max"}, f"{p}: tag")
    probe = _keys(_need(raw, "probe", str(p)), {"pt_min", "eta_max"}, f"{p}: probe")
    trig = _keys(_need(raw, "trigger", str(p)), {"bit", "dr"}, f"{p}: trigger")
    pair = _keys(
        _need(raw, "pair", str(p)), {"opposite_charge", "mass_bins", "mass_range"}, f"{p}: pair"
    )
    steps_raw = _need(raw, "steps", str(p))
    if not isinstance(steps_raw, list) or not steps_raw:
        raise TnPConfigError(f"{p}: steps must be a non-empty list")
    steps = []
    for i, s in enumerate(steps_raw):
        where = f"{p}: steps[{i}]"
        s = _keys(s, {"name", "pass"}, where)
        crit = _keys(_need(s, "pass", where), CRITERIA, f"{where}.pass")
        if not crit:
            raise TnPConfigError(f"{where}.pass: no criteria")
        if TRACK_CRITERION in crit:
            if i != 0 or len(crit) != 1:
                raise TnPConfigError(
                    f"{where}.pass: {TRACK_CRITERION} (the reconstruction step, track probes) "
                    "must be the only criterion of the first step"
                )
            dr = crit[TRACK_CRITERION]
            if isinstance(dr, bool) or not isinstance(dr, (int, float)) or not 0 < dr < 1:
                raise TnPConfigError(
                    f"{where}.pass.{TRACK_CRITERION}: a dR in (0, 1) expected, got {dr!r}"
                )
            crit = {TRACK_CRITERION: float(dr)}
        steps.append(Step(str(_need(s, "name", where)), dict(crit)))
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise TnPConfigError(f"{p}: steps: duplicate names {names}")
    binning = _keys(_need(raw, "binning", str(p)), {"pt", "eta", "charge"}, f"{p}: binning")
    ext = _keys(
        _need(raw, "extraction", str(p)),
        {
            "fit_range",
            "signal_window",
            "sidebands",
            "min_probes",
            "chi2_prob_min",
            "alternatives",
        },
        f"{p}: extraction",
    )
    mass_range = _interval(_need(pair, "mass_range", f"{p}: pair"), f"{p}: pair.mass_range")
    fit_range = _interval(_need(ext, "fit_range", f"{p}: extraction"), f"{p}: fit_range")
    if fit_range[0] < mass_range[0] or fit_range[1] > mass_range[1]:
        raise TnPConfigError(f"{p}: extraction.fit_range {fit_range} outside pair.mass_range")
    sidebands = tuple(
        _interval(sb, f"{p}: extraction.sidebands") for sb in _need(ext, "sidebands", str(p))
    )
    return TnPConfig(
        path=str(p),
        tag=dict(tag),
        probe=dict(probe),
        trigger_bit=int(_need(trig, "bit", f"{p}: trigger")),
        trigger_dr=float(_need(trig, "dr", f"{p}: trigger")),
        opposite_charge=bool(pair.get("opposite_charge", True)),
        mass_bins=int(_need(pair, "mass_bins", f"{p}: pair")),
        mass_range=mass_range,
        steps=tuple(steps),
        pt_edges=_edges(_need(binning, "pt", f"{p}: binning"), f"{p}: binning.pt"),
        eta_edges=_edges(_need(binning, "eta", f"{p}: binning"), f"{p}: binning.eta"),
        charge_bins=bool(binning.get("charge", True)),
        fit_range=fit_range,
        signal_window=_interval(_need(ext, "signal_window", str(p)), f"{p}: signal_window"),
        sidebands=sidebands,
        min_probes=float(ext.get("min_probes", 20)),
        chi2_prob_min=float(ext.get("chi2_prob_min", 1e-3)),
        alternatives=_alternatives(ext.get("alternatives", list(ALTERNATIVES)), str(p)),
    )


ALTERNATIVES = ("voigt", "cb", "linear")


def _alternatives(values: Any, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or any(v not in ALTERNATIVES for v in values):
        raise TnPConfigError(
            f"{where}: extraction.alternatives must be a list of {list(ALTERNATIVES)}, got {values}"
        )
    return tuple(values)
