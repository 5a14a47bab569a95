"""Known PDF sets (``configs/pdf_sets.yaml``): how LHEPdfWeight members become uncertainties.

The histmaker labels the ``pdfVar`` tensor axis with the set's name (found from the first LHA
ID in the branch title, or the processor option ``pdf_set``); the fit setup reads the label and
treats the members as the set's metadata says: symmetric Hessian eigenvectors, or Monte Carlo
replicas (their covariance), and an alphaS pair scaled to the CMS convention of +-0.0015.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

#: alphaS(mZ) variation the fit's alphaS nuisance stands for (CMS convention).
ALPHAS_UNC = 0.0015
CONFIG = "pdf_sets.yaml"
ERROR_TYPES = ("hessian", "replicas")


class PdfSetError(ValueError):
    """An unknown PDF set or an invalid entry of configs/pdf_sets.yaml (names the key)."""


@dataclass(frozen=True)
class PdfSet:
    """One entry of the table; member indices count LHEPdfWeight entries (0 = central)."""

    name: str
    members: int
    error_type: str
    eigenvectors: tuple[int, int]
    lhaid: int | None = None
    alphas: tuple[int, int] | None = None
    alphas_step: float | None = None
    scale: float = 1.0
    untitled_default: bool = False
    #: LHEPdfWeight entry of the central member; None: not stored (a title starting at member
    #: 1, e.g. "LHA IDs 292201 - 292302"): the nominal weight is the central one
    central: int | None = 0

    @property
    def eigen_members(self) -> range:
        return range(self.eigenvectors[0], self.eigenvectors[1] + 1)

    @property
    def alphas_scale(self) -> float:
        """Factor bringing the set's alphaS pair to +-ALPHAS_UNC."""
        if self.alphas_step is None:
            raise PdfSetError(f"PDF set {self.name!r} has no alphaS members")
        return ALPHAS_UNC / self.alphas_step


_KEYS = {
    "name",
    "lhaid",
    "members",
    "error_type",
    "eigenvectors",
    "alphas",
    "alphas_step",
    "scale",
    "untitled_default",
    "central",
}


def _parse(entry: Any, where: str) -> PdfSet:
    if not isinstance(entry, dict):
        raise PdfSetError(f"{where}: expected a mapping, got {entry!r}")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise PdfSetError(f"{where}: unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    for key in ("name", "members", "error_type", "eigenvectors"):
        if key not in entry:
            raise PdfSetError(f"{where}: key {key!r} missing")
    where = f"{where} ({entry['name']})"
    if entry["error_type"] not in ERROR_TYPES:
        raise PdfSetError(f"{where}: key 'error_type' must be one of {ERROR_TYPES}")
    n = int(entry["members"])
    first, last = (int(x) for x in entry["eigenvectors"])
    central = entry.get("central", 0)
    if central not in (0, None):
        raise PdfSetError(f"{where}: key 'central' must be 0 or null (not stored)")
    lo = 0 if central is None else 1
    if not lo <= first <= last < n:
        raise PdfSetError(
            f"{where}: key 'eigenvectors' {entry['eigenvectors']} not in {lo}..{n - 1}"
        )
    alphas = entry.get("alphas")
    if alphas is not None:
        alphas = tuple(int(x) for x in alphas)
        if len(alphas) != 2 or not all(last < a < n for a in alphas):
            raise PdfSetError(
                f"{where}: key 'alphas' {list(alphas)} must be 2 members after the eigenvectors"
            )
        if not float(entry.get("alphas_step") or 0) > 0:
            raise PdfSetError(f"{where}: key 'alphas_step' must be > 0 with 'alphas'")
    return PdfSet(
        name=str(entry["name"]),
        members=n,
        error_type=str(entry["error_type"]),
        eigenvectors=(first, last),
        lhaid=None if entry.get("lhaid") is None else int(entry["lhaid"]),
        alphas=alphas,
        alphas_step=None if alphas is None else float(entry["alphas_step"]),
        scale=float(entry.get("scale", 1.0)),
        untitled_default=bool(entry.get("untitled_default", False)),
        central=central,
    )


def parse_table(raw: Any, where: str = CONFIG) -> dict[str, PdfSet]:
    """The table from its YAML content; errors name the file, the entry and the key."""
    if not isinstance(raw, dict) or not isinstance(raw.get("sets"), list):
        raise PdfSetError(f"{where}: key 'sets' must be a list of PDF sets")
    out: dict[str, PdfSet] = {}
    for i, entry in enumerate(raw["sets"]):
        s = _parse(entry, f"{where}: sets[{i}]")
        if s.name in out:
            raise PdfSetError(f"{where}: sets[{i}]: duplicate name {s.name!r}")
        out[s.name] = s
    if sum(s.untitled_default for s in out.values()) > 1:
        raise PdfSetError(f"{where}: more than one set has 'untitled_default'")
    return out


@functools.lru_cache(maxsize=1)
def known_sets() -> dict[str, PdfSet]:
    """The packaged table, by name."""
    text = resources.files("wremnants_dask.configs").joinpath(CONFIG).read_text()
    return parse_table(yaml.safe_load(text))


def by_name(name: str) -> PdfSet:
    sets = known_sets()
    if name not in sets:
        raise PdfSetError(f"unknown PDF set {name!r} (known in configs/{CONFIG}: {sorted(sets)})")
    return sets[name]


def identify(lhaid: int | None, n_members: int, where: str) -> PdfSet:
    """The set of an LHEPdfWeight branch: by the first LHA ID of its title, or, for a title
    without LHA IDs, the table's ``untitled_default``; its member count must match."""
    sets = known_sets().values()
    if lhaid is not None:
        found = [s for s in sets if s.lhaid == lhaid]
        if not found:
            raise PdfSetError(
                f"{where}: LHEPdfWeight starts at LHA ID {lhaid}, not a set of configs/{CONFIG}; "
                "add it there or give the processor option pdf_set"
            )
    else:
        found = [s for s in sets if s.untitled_default]
        if not found:
            raise PdfSetError(f"{where}: LHEPdfWeight title names no LHA IDs; give option pdf_set")
    pdf = found[0]
    if pdf.members != n_members:
        raise PdfSetError(
            f"{where}: LHEPdfWeight has {n_members} entries, PDF set {pdf.name!r} has {pdf.members}"
        )
    return pdf
