"""Scale factors smoothed in pT per eta bin, with independent statistical eigen-variations.

Per step and eta bin (charges combined), the measured SFs of the coarse pT bins from
``pt_min`` up are fitted by a polynomial in pT (weighted least squares on the statistical
errors, ``corrections.sf_eigen``); the fit covariance C = V diag(lambda) V^T gives the
variations delta_k = sqrt(lambda_k) V_k, each eigenvector signed so that its largest-|component|
is positive (a reproducible convention: the sign of an eigenvector is otherwise arbitrary), so
sum_k delta_k delta_k^T = C. Coarse bins below ``pt_min`` (the trigger turn-on, which no
low-order polynomial follows) keep their measured SF and get one variation each (their stat
error), so the eigen axis is (polynomial parameters, then the unsmoothed bins). Evaluated on
the payload's fine pT grid these are the efficiency-statistics tensor the W-mass processor reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from scipy import stats

from wremnants_dask.corrections.sf_eigen import scaled_pt, smooth_and_decompose
from wremnants_dask.utils.atomic import atomic_path


@dataclass
class SmoothSF:
    """One step: per coarse eta bin the smoothing and its variations on a pT grid."""

    pt_edges: np.ndarray  # coarse pT edges of the measurement
    pt_range: tuple[float, float]  # the polynomial's scaled-pT range
    first: int  # first coarse pT bin in the smoothing
    degree: int
    params: np.ndarray  # (n_eta, degree + 1)
    cov: np.ndarray  # (n_eta, degree + 1, degree + 1)
    eigvec: np.ndarray  # (n_eta, n_par, n_par) columns signed: largest |component| positive
    eigval: np.ndarray  # (n_eta, n_par)
    binned: np.ndarray  # (n_eta, first) measured SF of the unsmoothed bins
    binned_err: np.ndarray  # (n_eta, first)
    chi2: np.ndarray  # (n_eta,)
    ndf: int

    @property
    def n_eigen(self) -> int:
        return self.degree + 1 + self.first

    @property
    def chi2_prob(self) -> np.ndarray:
        return stats.chi2.sf(self.chi2, self.ndf) if self.ndf > 0 else np.ones_like(self.chi2)

    def evaluate(self, pt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(nominal (n_eta, n), variations (n_eta, n_eigen, n)) at the pT values ``pt``."""
        pt = np.asarray(pt, dtype=np.float64)
        k = np.clip(np.searchsorted(self.pt_edges, pt, side="right") - 1, 0, None)
        low = k < self.first
        design = np.vander(scaled_pt(pt, *self.pt_range), self.degree + 1, increasing=True)
        nom = self.params @ design.T
        var = np.zeros((nom.shape[0], self.n_eigen, pt.size))
        var[:, : self.degree + 1] = np.einsum(
            "ejk,ek,ij->eki", self.eigvec, np.sqrt(self.eigval), design
        )
        var[:, : self.degree + 1, low] = 0.0
        for b in range(self.first):
            at = low & (k == b)
            nom[:, at] = self.binned[:, b, None]
            var[:, self.degree + 1 + b, at] = self.binned_err[:, b, None]
        return nom, var


def sign_convention(eigvec: np.ndarray) -> np.ndarray:
    """Each eigenvector (columns of ``(..., n, n_eig)``) with its largest-|component| positive."""
    k = np.argmax(np.abs(eigvec), axis=-2)[..., None, :]
    sign = np.sign(np.take_along_axis(eigvec, k, axis=-2))
    return eigvec * np.where(sign == 0, 1.0, sign)


def smooth_step(
    sf: np.ndarray, err: np.ndarray, pt_edges: np.ndarray, degree: int = 2, pt_min: float = 0.0
) -> SmoothSF:
    """Smooth one step's SFs ``(n_pt, n_eta)`` (charges combined) with errors ``err``."""
    pt_edges = np.asarray(pt_edges, dtype=np.float64)
    first = int(np.searchsorted(pt_edges, pt_min - 1e-9))
    first = min(max(first, 0), pt_edges.size - 2)
    centres = 0.5 * (pt_edges[1:] + pt_edges[:-1])
    rng = (float(pt_edges[first]), float(pt_edges[-1]))
    if np.any(~np.isfinite(sf[first:])) or np.any(~(err[first:] > 0)):
        raise ValueError("smoothing needs finite scale factors with positive errors in every bin")
    sm = smooth_and_decompose(sf[first:].T, err[first:].T, centres[first:], degree, rng)
    cov = np.einsum("epk,ek,eqk->epq", sm.eigvec, sm.eigval, sm.eigvec)
    return SmoothSF(
        pt_edges=pt_edges,
        pt_range=rng,
        first=first,
        degree=degree,
        params=sm.params,
        cov=cov,
        eigvec=sign_convention(sm.eigvec),
        eigval=sm.eigval,
        binned=np.asarray(sf[:first]).T.copy(),
        binned_err=np.asarray(err[:first]).T.copy(),
        chi2=sm.chi2,
        ndf=sm.ndf,
    )


def combine_charges(val: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-variance average over the last (charge) axis."""
    w = 1.0 / err**2
    return (val * w).sum(-1) / w.sum(-1), 1.0 / np.sqrt(w.sum(-1))


def smooth_all(ex, degree: int = 2, pt_min: float = 0.0) -> dict[str, SmoothSF]:
    """Every step of an Extraction's scale factors; a bin without any (no probes, or no usable
    measurement) is an error naming it. Bins at a bound enter with their one-sided errors."""
    from wremnants_dask.efficiency.extract import missing_bins

    if bad := missing_bins(ex):
        raise ValueError(f"no scale factor to smooth in {len(bad)} bins: {'; '.join(bad)}")
    spec = ex.spectra["mc"]
    sf = ex.sf["sf"].reshape(spec.shape)
    st = ex.sf["stat"].reshape(spec.shape)
    out = {}
    for s, step in enumerate(spec.steps):
        v, e = combine_charges(sf[s], st[s])
        out[step] = smooth_step(v, e, spec.pt_edges, degree, pt_min)
    return out


def write_smooth(smooth: dict[str, SmoothSF], path: str | Path, n_grid: int = 131) -> Path:
    """smooth_sf.hdf5: per step the parameters, covariance, signed eigenvectors, chi2 and the
    curve with its band (sqrt of the summed squared variations) on a pT grid (for the plots)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for step, sm in smooth.items():
            g = f.create_group(step)
            grid = np.linspace(sm.pt_edges[0], sm.pt_edges[-1], n_grid)
            nom, var = sm.evaluate(grid)
            for k in ("params", "cov", "eigvec", "eigval", "chi2", "pt_edges"):
                g[k] = getattr(sm, k)
            g["chi2_prob"] = sm.chi2_prob
            g.attrs.update(degree=sm.degree, first=sm.first, ndf=sm.ndf)
            g["pt_grid"] = grid
            g["curve"] = nom
            g["curve_err"] = np.sqrt((var**2).sum(1))
    return path
