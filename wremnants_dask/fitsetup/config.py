"""The fit setup as data: ``configs/fit_<analysis>.yaml`` -> :class:`FitConfig`.

A fit setup says which histogram and axes are fitted, in which region, which process groups of
the histmaker output become which fit processes, every systematic (its type from the registry in
``fitsetup.systematics``, the processes it applies to, its impact group) and how the non-prompt
background is estimated. Adding a systematic or a process is an edit of that file.

Validation happens in two steps, each failing with one line that names the file and the key:
``load_fit_config`` checks the file on its own (unknown keys, wrong types, a systematic naming a
process that the config does not define), ``check_against_input`` checks it against a histmaker
output (a process, histogram or axis that the input lacks). The schema is in docs/DESIGN.md.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: Packaged fit configs are ``configs/fit_<analysis>.yaml``.
CONFIG_PATTERN = "fit_{analysis}.yaml"
FORMAT_VERSION = 1
#: ``processes: all`` in a systematic: every simulated process of the config.
ALL = "all"
NONPROMPT_METHODS = ("auto", "simple", "extended")


class SetupError(ValueError):
    """A fit config or a histmaker output that cannot become a fit input; the message names the
    file and the key (or the histogram)."""


@dataclass(frozen=True)
class AnalysisSetup:
    """The resolved fit definition the builders use: histogram, axes, region and signal.

    ``region`` maps axis -> selected bin (``True``/``False`` on a Boolean axis, else an index);
    with ``nonprompt`` its first two entries are the ABCD isolation and mT axes.
    """

    histogram: str
    fit_axes: tuple[str, ...]
    signal: str
    boson: str
    region: dict[str, Any] = field(default_factory=dict)
    nonprompt: bool = False
    channel: str = "ch0"


@dataclass(frozen=True)
class ProcessConfig:
    """One fit process: the sum of the histmaker's process groups ``groups``."""

    name: str
    groups: tuple[str, ...]


@dataclass(frozen=True)
class SystematicConfig:
    """One entry of ``systematics``; ``options`` are the keys specific to its type."""

    name: str
    type: str
    group: str
    processes: tuple[str, ...] | None  # None: every simulated process
    tensor: str | None
    nonprompt: bool
    options: dict[str, Any]
    where: str  # "file: systematics[i] (name)" for error messages


@dataclass(frozen=True)
class NonpromptConfig:
    """The non-prompt background from data (ABCD in isolation x mT, smoothed in pT)."""

    process: str
    method: str
    iso_axis: str
    iso_pass: Any
    mt_axis: tuple[str, ...]  # candidates: the first one the histogram has is used
    mt_signal: int
    eta_merge: int | None
    smoothing_order: int | None
    decorrelate: tuple[str, ...]
    closure_group: str | None
    norm_kappa: float
    norm_from_closure: bool
    eigen: bool
    eigen_name: str
    norm_name: str
    group: str


@dataclass(frozen=True)
class FitConfig:
    path: str
    analysis: str
    histogram: str
    fit_axes: tuple[str, ...]
    channel: str
    signal: str
    boson: str
    region: dict[str, Any]
    processes: tuple[ProcessConfig, ...]
    ignore_groups: tuple[str, ...]
    systematics: tuple[SystematicConfig, ...]
    nonprompt: NonpromptConfig | None

    @property
    def process_names(self) -> list[str]:
        return [p.name for p in self.processes]


# ----------------------------------------------------------------------------- key checks
def _type_name(t: Any) -> str:
    if isinstance(t, tuple):
        return " or ".join(_type_name(x) for x in t)
    return {type(None): "null", float: "number", int: "integer", str: "string"}.get(t, t.__name__)


def _check_type(value: Any, types: Any, where: str) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    ok = False
    for t in types:
        if t is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        elif t is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, t)
        if ok:
            break
    if not ok:
        raise SetupError(f"{where}: expected {_type_name(types)}, got {value!r}")
    return value


def check_keys(
    raw: Any, schema: Mapping[str, Any], where: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``raw`` must be a mapping whose keys are in ``schema`` (key -> accepted types), with
    every ``required`` key present; returns it with its values type-checked."""
    if not isinstance(raw, dict):
        raise SetupError(f"{where}: expected a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(schema), key=str)
    if unknown:
        raise SetupError(f"{where}: unknown key {unknown[0]!r}; known: {sorted(schema)}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise SetupError(f"{where}: missing key {missing[0]!r}")
    for k, v in raw.items():
        _check_type(v, schema[k], f"{where}.{k}")
    return raw


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    _check_type(value, list, where)
    for i, v in enumerate(value):
        _check_type(v, str, f"{where}[{i}]")
    return tuple(value)


# ----------------------------------------------------------------------------- schema
TOP_KEYS = {
    "version": int,
    "analysis": str,
    "histogram": str,
    "fit_axes": list,
    "channel": str,
    "signal": str,
    "boson": str,
    "region": dict,
    "processes": dict,
    "ignore_groups": list,
    "systematics": list,
    "nonprompt": (dict, type(None)),
}
TOP_REQUIRED = ("version", "analysis", "histogram", "fit_axes", "signal", "boson", "processes")
PROCESS_KEYS = {"groups": (list, str)}
#: Keys every systematic may carry; the type-specific ones are in systematics.SYSTEMATIC_TYPES.
SYSTEMATIC_KEYS = {
    "name": str,
    "type": str,
    "group": str,
    "processes": (list, str),
    "tensor": str,
    "nonprompt": bool,
}
NONPROMPT_KEYS = {
    "process": str,
    "method": str,
    "iso_axis": str,
    "iso_pass": (bool, int),
    "mt_axis": (list, str),
    "mt_signal": int,
    "eta_merge": (int, str),
    "smoothing_order": (int, type(None)),
    "decorrelate": list,
    "closure_group": (str, type(None)),
    "norm_kappa": float,
    "norm_from_closure": bool,
    "eigen": bool,
    "eigen_name": str,
    "norm_name": str,
    "group": str,
}


def _processes(raw: dict[str, Any], where: str) -> tuple[ProcessConfig, ...]:
    if not raw:
        raise SetupError(f"{where}: no process")
    out = []
    for name, spec in raw.items():
        w = f"{where}.{name}"
        spec = check_keys({} if spec is None else spec, PROCESS_KEYS, w)
        groups = _str_list(spec.get("groups", name), f"{w}.groups")
        if not groups:
            raise SetupError(f"{w}.groups: empty")
        out.append(ProcessConfig(str(name), groups))
    return tuple(out)


def _systematic(raw: Any, i: int, procs: list[str], file: str) -> SystematicConfig:
    from wremnants_dask.fitsetup.systematics import SYSTEMATIC_TYPES

    name = raw.get("name") if isinstance(raw, dict) else None
    where = f"{file}: systematics[{i}]" + (f" ({name})" if isinstance(name, str) else "")
    if not isinstance(raw, dict):
        raise SetupError(f"{where}: expected a mapping, got {type(raw).__name__}")
    kind = raw.get("type")
    if kind not in SYSTEMATIC_TYPES:
        raise SetupError(f"{where}.type: {kind!r} is not one of {sorted(SYSTEMATIC_TYPES)}")
    stype = SYSTEMATIC_TYPES[kind]
    schema = {**SYSTEMATIC_KEYS, **stype.keys}
    required = ("name", "type", "group", *(("tensor",) if stype.tensor else ()), *stype.required)
    check_keys(raw, schema, where, required)
    if not stype.tensor and ("tensor" in raw or "nonprompt" in raw):
        bad = "tensor" if "tensor" in raw else "nonprompt"
        raise SetupError(f"{where}.{bad}: a {kind} systematic takes no {bad!r}")
    sel = raw.get("processes", ALL)
    if sel == ALL:
        processes = None
    else:
        processes = _str_list(sel, f"{where}.processes")
        for p in processes:
            if p not in procs:
                raise SetupError(f"{where}.processes: {p!r} is not a process of the config {procs}")
    options = {k: v for k, v in raw.items() if k in stype.keys}
    stype.check(options, processes, procs, where)
    return SystematicConfig(
        name=raw["name"],
        type=kind,
        group=raw["group"],
        processes=processes,
        tensor=raw.get("tensor"),
        nonprompt=bool(raw.get("nonprompt", True)) and stype.tensor,
        options=options,
        where=where,
    )


def _nonprompt(raw: dict[str, Any], where: str) -> NonpromptConfig:
    check_keys(raw, NONPROMPT_KEYS, where)
    method = raw.get("method", "auto")
    if method not in NONPROMPT_METHODS:
        raise SetupError(f"{where}.method: {method!r} is not one of {NONPROMPT_METHODS}")
    merge = raw.get("eta_merge", "auto")
    if isinstance(merge, str) and merge != "auto":
        raise SetupError(f"{where}.eta_merge: expected an integer or 'auto', got {merge!r}")
    if raw.get("eigen", True) and raw.get("smoothing_order", 2) is None:
        raise SetupError(f"{where}.eigen: the eigen-variations need smoothing (smoothing_order)")
    kappa = float(raw.get("norm_kappa", 1.05))
    if not kappa > 0:
        raise SetupError(f"{where}.norm_kappa: must be positive, got {kappa}")
    return NonpromptConfig(
        process=raw.get("process", "Nonprompt"),
        method=method,
        iso_axis=raw.get("iso_axis", "passIso"),
        iso_pass=raw.get("iso_pass", True),
        mt_axis=_str_list(raw.get("mt_axis", "passMT"), f"{where}.mt_axis"),
        mt_signal=raw.get("mt_signal", -1),
        eta_merge=None if merge == "auto" else merge,
        smoothing_order=raw.get("smoothing_order", 2),
        decorrelate=_str_list(raw.get("decorrelate", []), f"{where}.decorrelate"),
        closure_group=raw.get("closure_group"),
        norm_kappa=kappa,
        norm_from_closure=raw.get("norm_from_closure", True),
        eigen=raw.get("eigen", True),
        eigen_name=raw.get("eigen_name", "nonpromptSmooth"),
        norm_name=raw.get("norm_name", "nonpromptNorm"),
        group=raw.get("group", "nonprompt"),
    )


def parse_fit_config(raw: Any, path: str) -> FitConfig:
    """A :class:`FitConfig` from the YAML content of ``path`` (named in every error)."""
    check_keys(raw, TOP_KEYS, path, TOP_REQUIRED)
    if raw["version"] != FORMAT_VERSION:
        raise SetupError(f"{path}: version: {raw['version']} (this code reads {FORMAT_VERSION})")
    fit_axes = _str_list(raw["fit_axes"], f"{path}: fit_axes")
    if not fit_axes:
        raise SetupError(f"{path}: fit_axes: empty")
    region = dict(raw.get("region") or {})
    for k, v in region.items():
        _check_type(v, (bool, int), f"{path}: region.{k}")
    procs = _processes(raw["processes"], f"{path}: processes")
    names = [p.name for p in procs]
    if raw["signal"] not in names:
        raise SetupError(f"{path}: signal: {raw['signal']!r} is not a process of {names}")
    nonprompt = None
    if raw.get("nonprompt") is not None:
        nonprompt = _nonprompt(raw["nonprompt"], f"{path}: nonprompt")
        if nonprompt.process in names:
            raise SetupError(
                f"{path}: nonprompt.process: {nonprompt.process!r} is also a simulated process"
            )
    syst = tuple(_systematic(s, i, names, path) for i, s in enumerate(raw.get("systematics") or []))
    seen: dict[tuple[str, str], str] = {}
    for s in syst:
        key = (s.type, s.name)
        if key in seen:
            raise SetupError(f"{s.where}: name {s.name!r} repeats {seen[key]}")
        seen[key] = s.where
    return FitConfig(
        path=path,
        analysis=raw["analysis"],
        histogram=raw["histogram"],
        fit_axes=fit_axes,
        channel=raw.get("channel", "ch0"),
        signal=raw["signal"],
        boson=raw["boson"],
        region=region,
        processes=procs,
        ignore_groups=_str_list(raw.get("ignore_groups", []), f"{path}: ignore_groups"),
        systematics=syst,
        nonprompt=nonprompt,
    )


def default_config(analysis: str) -> str:
    """The packaged config name of ``analysis`` (``fit_<analysis>.yaml``)."""
    return CONFIG_PATTERN.format(analysis=analysis)


def load_fit_config(config: str | os.PathLike) -> FitConfig:
    """Read and validate a fit config: a path, or the name of a packaged one (``fit_mw.yaml``)."""
    path = Path(config)
    packaged = importlib.resources.files("wremnants_dask.configs")
    if path.is_file():
        text, where = path.read_text(), str(path)
    elif path.parent in (Path("."), Path("configs")) and (packaged / path.name).is_file():
        # a packaged name, also as configs/<name> from outside the repository
        text, where = (packaged / path.name).read_text(), f"configs/{path.name}"
    else:
        known = sorted(p.name for p in packaged.iterdir() if p.name.startswith("fit_"))
        raise SetupError(f"fit config {str(config)!r} not found (packaged: {known})")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SetupError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_fit_config(raw, where)
