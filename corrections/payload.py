"""Loading, validating and evaluating the correctionlib payload inside the dask graph.

``CorrectionsPayload`` wraps one CorrectionSet file. It pickles as its path only (workers
re-open the file through a per-process cache), checks at load time that every correction the
processors need exists with the expected inputs, and evaluates with correctionlib on flat numpy
arrays (callers flatten jagged muon collections with ``ak.flatten`` and unflatten the result).
A missing or inconsistent payload raises ``CorrectionError`` naming the file and the correction.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from wremnants_dask.corrections.tables import BinnedTable, build_table

PAYLOAD_NAME = "wremnants_corrections.json.gz"
SF_STEPS: tuple[str, ...] = ("idip", "iso", "trigger")  # required in every payload
#: Scale-factor steps a payload may carry besides SF_STEPS, applied when present (payloads
#: built before the reconstruction step, or measured on files without IsoTrack, lack it).
OPTIONAL_SF_STEPS: tuple[str, ...] = ("reco",)
CHAIN_STEPS: tuple[str, ...] = ("reco", "idip", "iso", "trigger")  # the order of the chain
SF_INPUTS = ("eta", "pt", "variation", "eigen")

#: correction name -> expected input names, in order
REQUIRED: dict[str, tuple[str, ...]] = {
    "pileup": ("nTrueInt", "variation"),
    "muon_sf_idip": ("eta", "pt", "variation", "eigen"),
    "muon_sf_iso": ("eta", "pt", "variation", "eigen"),
    "muon_sf_trigger": ("eta", "pt", "variation", "eigen"),
    "muon_eff_mc": ("step", "eta", "pt"),
    "prefiring": ("eta", "pt", "variation"),
    "muon_resolution": ("eta", "pt"),
    "muon_scale_data": ("eta",),
    "muon_scale_unc": ("eta",),
}


class CorrectionError(RuntimeError):
    """A correction payload is missing, unreadable or inconsistent."""


def default_payload_path() -> Path:
    """The payload shipped as package data (built from the generator's default parameters)."""
    return Path(str(resources.files("wremnants_dask.corrections").joinpath(PAYLOAD_NAME)))


def _read_json(path: Path) -> dict[str, Any]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise CorrectionError(
            f"correction payload {path} not found; build one with "
            "`python -m wremnants_dask.corrections.build --truth DIR/truth.json -o OUTDIR`"
        ) from exc
    except (OSError, json.JSONDecodeError, EOFError) as exc:
        raise CorrectionError(f"correction payload {path} is unreadable: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(correctionlib CorrectionSet, raw JSON, provenance) for a file, validated; cached per process."""
    import correctionlib

    p = Path(path)
    raw = _read_json(p)
    for key in ("corrections", "schema_version"):
        if key not in raw:
            raise CorrectionError(f"correction payload {p} is not a CorrectionSet (no '{key}')")
    by_name = {c.get("name"): c for c in raw["corrections"]}
    for name, inputs in REQUIRED.items():
        if name not in by_name:
            raise CorrectionError(
                f"correction payload {p} lacks correction '{name}' (has: {sorted(by_name)})"
            )
        got = tuple(i["name"] for i in by_name[name]["inputs"])
        if got != inputs:
            raise CorrectionError(
                f"correction payload {p}: correction '{name}' has inputs {got}, expected {inputs}"
            )
    for s in OPTIONAL_SF_STEPS:
        corr = by_name.get(f"muon_sf_{s}")
        got = None if corr is None else tuple(i["name"] for i in corr["inputs"])
        if got is not None and got != SF_INPUTS:
            raise CorrectionError(
                f"correction payload {p}: correction 'muon_sf_{s}' has inputs {got}, "
                f"expected {SF_INPUTS}"
            )
    steps = tuple(s for s in CHAIN_STEPS if f"muon_sf_{s}" in by_name)
    n_eig = {s: _n_eigen(by_name[f"muon_sf_{s}"], p) for s in steps}
    if len(set(n_eig.values())) != 1:
        raise CorrectionError(
            f"correction payload {p}: muon_sf_* steps have different eigen counts {n_eig}"
        )
    try:
        cset = correctionlib.CorrectionSet.from_string(json.dumps(raw))
    except Exception as exc:
        raise CorrectionError(
            f"correction payload {p} fails correctionlib validation: {exc}"
        ) from exc
    try:
        meta = json.loads(raw.get("description") or "{}")
    except json.JSONDecodeError:
        meta = {"description": raw.get("description")}
    info = {"n_eigen": next(iter(n_eig.values())), "by_name": by_name, "sf_steps": steps}
    return cset, info, meta


@functools.lru_cache(maxsize=64)
def _table(path: str, mtime_ns: int, name: str) -> BinnedTable | None:
    return build_table(_load(path, mtime_ns)[1]["by_name"][name])


def _n_eigen(corr: dict, path: Path) -> int:
    items = {it["key"]: it["value"] for it in corr["data"]["content"]}
    if "stat_up" not in items or items["stat_up"].get("nodetype") != "category":
        raise CorrectionError(
            f"correction payload {path}: correction '{corr['name']}' has no stat_up eigen category"
        )
    return len(items["stat_up"]["content"])


def _binning_of(node: dict) -> dict:
    """First (multi)binning node below ``node`` (categories are walked through)."""
    while node.get("nodetype") == "category":
        node = node["content"][0]["value"]
    return node


class CorrectionsPayload:
    """One correction payload file: validated on construction, evaluated on flat numpy arrays."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_payload_path()
        self._get()  # validate now, with a clear error, rather than inside a dask task

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = Path(state["path"])

    def _mtime(self) -> int:
        try:
            return self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return -1

    def _get(self) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        return _load(str(self.path), self._mtime())

    def table(self, name: str) -> BinnedTable | None:
        """Correction ``name`` as a dense table (constants on one clamped grid), else None."""
        mtime = self._mtime()
        _load(str(self.path), mtime)  # validated (and a clear error) first
        return _table(str(self.path), mtime, name)

    @property
    def metadata(self) -> dict[str, Any]:
        """Provenance stored in the payload (truth file, options, git state)."""
        return self._get()[2]

    @property
    def sf_stat_eta_edges(self) -> list[float] | None:
        """Eta edges of the measurement behind the SF stat eigen-variations (a tag-and-probe
        payload records them: its fine bins repeat each measured bin), else None: the truth
        payload's variations are independent in every fine eta bin."""
        edges = self.metadata.get("sf_stat_eta_edges")
        return None if edges is None else [float(x) for x in edges]

    def sf_stat_slots(self) -> np.ndarray:
        """Eta edges that index the SF stat nuisances: the measurement's bins where recorded,
        else the payload's own eta bins."""
        edges = self.sf_stat_eta_edges
        return self.sf_eta_edges() if edges is None else np.asarray(edges, dtype=np.float64)

    @property
    def n_eigen(self) -> int:
        return self._get()[1]["n_eigen"]

    @property
    def sf_steps(self) -> tuple[str, ...]:
        """The scale-factor steps this payload carries, in chain order (SF_STEPS, plus the
        optional reco step when present): what the processors apply and vary."""
        return self._get()[1]["sf_steps"]

    def edges(self, name: str) -> list[np.ndarray]:
        """Bin edges of a binned correction, e.g. the (eta, pt) grid of ``muon_sf_iso``."""
        node = _binning_of(self._get()[1]["by_name"][name]["data"])
        if node["nodetype"] == "binning":
            return [np.asarray(node["edges"], dtype=np.float64)]
        return [np.asarray(e, dtype=np.float64) for e in node["edges"]]

    def evaluate(self, name: str, *args: Any) -> np.ndarray:
        """correctionlib evaluation with numpy broadcasting; errors name file and correction."""
        cset = self._get()[0]
        arrays = [
            a if isinstance(a, (str, int)) else np.ascontiguousarray(a, dtype=np.float64)
            for a in args
        ]
        try:
            return np.asarray(cset[name].evaluate(*arrays), dtype=np.float64)
        except Exception as exc:
            raise CorrectionError(f"evaluating '{name}' from {self.path} failed: {exc}") from exc

    # ---- convenience wrappers -------------------------------------------------------------
    def pileup(self, n_true_int: np.ndarray, variation: str = "nominal") -> np.ndarray:
        return self.evaluate("pileup", n_true_int, variation)

    def muon_sf(
        self, step: str, eta: np.ndarray, pt: np.ndarray, variation: str = "nominal", eigen: int = 0
    ) -> np.ndarray:
        return self.evaluate(f"muon_sf_{step}", eta, pt, variation, int(eigen))

    def muon_sf_lookup(
        self, step: str, eta: np.ndarray, pt: np.ndarray
    ) -> Callable[..., np.ndarray]:
        """``f(variation="nominal", eigen=0)`` = ``muon_sf(step, eta, pt, variation, eigen)``,
        with the (eta, pt) bins looked up once for all variations when the correction is a
        plain table (``corrections.tables``); correctionlib otherwise."""
        table = self.table(f"muon_sf_{step}")
        if table is None or table.inputs != ["eta", "pt"]:
            return lambda variation="nominal", eigen=0: self.muon_sf(
                step, eta, pt, variation, eigen
            )
        bins = table.bin_index(eta, pt)
        return lambda variation="nominal", eigen=0: table.values(
            bins, variation=variation, eigen=int(eigen)
        )

    def mc_efficiency(self, step: str, eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
        return self.evaluate("muon_eff_mc", step, eta, pt)

    def muon_sf_total(self, eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
        """Product of the nominal scale factors of all steps, per muon."""
        out = np.ones(np.shape(eta))
        for step in self.sf_steps:
            out = out * self.muon_sf(step, eta, pt)
        return out

    def prefiring_prob(
        self, eta: np.ndarray, pt: np.ndarray, variation: str = "nominal"
    ) -> np.ndarray:
        return self.evaluate("prefiring", eta, pt, variation)

    def resolution(self, eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
        return self.evaluate("muon_resolution", eta, pt)

    def scale_data(self, eta: np.ndarray) -> np.ndarray:
        return self.evaluate("muon_scale_data", eta)

    def scale_unc(self, eta: np.ndarray) -> np.ndarray:
        return self.evaluate("muon_scale_unc", eta)

    def scale_slices(self) -> np.ndarray:
        """Eta edges of the momentum-scale slices."""
        return self.edges("muon_scale_unc")[0]

    def sf_eta_edges(self) -> np.ndarray:
        return self.edges("muon_sf_idip")[0]


def load_payload(path: str | os.PathLike | None = None) -> CorrectionsPayload:
    """Open and validate a payload (``None``: the shipped default)."""
    return CorrectionsPayload(path)
