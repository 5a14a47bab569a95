"""Operations on ``hist.Hist`` objects between the histmaker and the fit.

Everything works on whole numpy arrays (values and, for Weight storage, variances) including
the flow bins, so sums over an axis are conserved exactly. Axes are always addressed by name and
every error names the histogram axis involved. Weight storage in gives Weight storage out; any
other storage is treated as plain values (Double storage out, no variances propagated).

Conventions shared with the fit set-up:
- variation ("tensor") axes are extra axes of a histogram; a nominal histogram lacks them and is
  broadcast against a varied one by axis name;
- up/down pairs live on a ``downUpVar`` axis with bin 0 = down and bin 1 = up (``DOWN_UP_AXIS``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import hist
import numpy as np

from wremnants_dask.synth.processes import DATA_GROUP, GROUPS

__all__ = [
    "DEFAULT_PROCESS_GROUPS",
    "DOWN_UP_AXIS",
    "NONPROMPT_GROUP",
    "axis_index",
    "combine_variation_axes",
    "concat_variation_axes",
    "decorrelate",
    "groups_from_datasets",
    "group_processes",
    "hist_arrays",
    "lumi_scale",
    "make_hist",
    "mirror",
    "mirror_axis",
    "rebin",
    "scale",
    "select",
    "select_up_down",
    "to_up_down",
]

#: Group -> sample names of the synthetic datasets (configs/datasets_synthetic.yaml): the
#: simulated samples are named after their process (synth.processes.GROUPS), pseudo-data "data".
DEFAULT_PROCESS_GROUPS: dict[str, tuple[str, ...]] = {
    DATA_GROUP: ("data",),
    **{g: procs for g, procs in GROUPS.items() if g != DATA_GROUP},
}
#: Name of the data-driven non-prompt process produced by ``abcd.predict_nonprompt``.
NONPROMPT_GROUP = "Nonprompt"
#: The WRemnants convention for up/down pairs: bin 0 (centre -1) = down, bin 1 (centre +1) = up.
DOWN_UP_AXIS = hist.axis.Regular(2, -2.0, 2.0, underflow=False, overflow=False, name="downUpVar")

MirrorMethod = Literal["ratio", "difference"]


# ----------------------------------------------------------------------------------------------
# array access
# ----------------------------------------------------------------------------------------------
def axis_index(h: hist.Hist, name: str) -> int:
    """Position of axis ``name`` in ``h``; a clear KeyError lists the axes that exist."""
    names = list(h.axes.name)
    if name not in names:
        raise KeyError(f"histogram has no axis {name!r}; its axes are {names}")
    return names.index(name)


def _is_weighted(h: hist.Hist) -> bool:
    return isinstance(h.storage_type(), hist.storage.Weight)


def hist_arrays(h: hist.Hist, *, flow: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Copies of (values, variances); variances is None unless the storage is Weight."""
    view = h.view(flow=flow)
    if _is_weighted(h):
        return np.array(view.value, dtype=float), np.array(view.variance, dtype=float)
    if view.dtype.names:
        raise TypeError(f"unsupported storage {h.storage_type.__name__} (use Weight or Double)")
    return np.array(view, dtype=float), None


def make_hist(
    axes: Sequence[hist.axis.AxesMixin],
    values: np.ndarray,
    variances: np.ndarray | None,
    *,
    flow: bool = True,
) -> hist.Hist:
    """New histogram (Weight storage if ``variances`` is given, else Double) filled by arrays."""
    storage = hist.storage.Weight() if variances is not None else hist.storage.Double()
    out = hist.Hist(*axes, storage=storage)
    view = out.view(flow=flow)
    if values.shape != view.shape:
        raise ValueError(
            f"array shape {values.shape} does not match axes {list(out.axes.name)} "
            f"(expected {view.shape}, flow={flow})"
        )
    if variances is not None:
        view.value = values
        view.variance = variances
    else:
        view[...] = values
    return out


def _same_binning(a: hist.axis.AxesMixin, b: hist.axis.AxesMixin) -> bool:
    if type(a) is not type(b) or len(a) != len(b):
        return False
    if a.traits.discrete and not isinstance(a, (hist.axis.Integer, hist.axis.Boolean)):
        return list(a) == list(b)
    return bool(np.allclose(a.edges, b.edges)) and a.traits == b.traits


def _aligned(
    src: hist.Hist, target: hist.Hist, *, flow: bool = True, what: str = "nominal"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays of ``src`` transposed to ``target``'s axis order, size 1 where ``src`` lacks an axis.

    This is how a nominal histogram broadcasts through the variation axes of a varied one.
    """
    tnames = list(target.axes.name)
    for ax in src.axes:
        if ax.name not in tnames:
            raise ValueError(
                f"{what} histogram has axis {ax.name!r} that the target lacks {tnames}"
            )
        if not _same_binning(ax, target.axes[ax.name]):
            raise ValueError(f"axis {ax.name!r} of the {what} histogram has a different binning")
    vals, vars_ = hist_arrays(src, flow=flow)
    snames = list(src.axes.name)
    order = sorted(range(len(snames)), key=lambda i: tnames.index(snames[i]))
    shape = [1] * len(tnames)
    for i in order:
        shape[tnames.index(snames[i])] = vals.shape[i]
    vals = np.transpose(vals, order).reshape(shape)
    if vars_ is not None:
        vars_ = np.transpose(vars_, order).reshape(shape)
    return vals, vars_


# ----------------------------------------------------------------------------------------------
# normalisation and grouping
# ----------------------------------------------------------------------------------------------
def scale(h: hist.Hist, factor: float, *, variance_factor: float | None = None) -> hist.Hist:
    """``h`` times ``factor``; variances times ``variance_factor`` (default ``factor**2``)."""
    vals, vars_ = hist_arrays(h)
    vf = factor**2 if variance_factor is None else variance_factor
    return make_hist(list(h.axes), vals * factor, None if vars_ is None else vars_ * vf)


def lumi_scale(
    h: hist.Hist, factor: float, *, variance: Literal["linear", "quadratic"] = "linear"
) -> hist.Hist:
    """Emulate ``factor`` times more luminosity.

    ``linear`` pretends there really are ``factor`` times more events (variance x factor, so the
    relative statistical uncertainty shrinks by sqrt(factor)); ``quadratic`` is a pure reweighting
    (variance x factor**2, relative uncertainty unchanged).
    """
    if variance not in ("linear", "quadratic"):
        raise ValueError(f"variance must be 'linear' or 'quadratic', got {variance!r}")
    return scale(h, factor, variance_factor=factor if variance == "linear" else factor**2)


def groups_from_datasets(datasets: Sequence[object]) -> dict[str, list[str]]:
    """Group -> sample names from objects with ``name`` and ``group`` (``datasets.Dataset``)."""
    out: dict[str, list[str]] = {}
    for d in datasets:
        out.setdefault(d.group, []).append(d.name)
    return out


def group_processes(
    hists: Mapping[str, hist.Hist],
    groups: Mapping[str, Sequence[str]] | None = None,
    *,
    norms: Mapping[str, float] | None = None,
    lumi_scale_factor: float = 1.0,
    lumi_scale_variance: Literal["linear", "quadratic"] = "linear",
    allow_missing: bool = False,
) -> dict[str, hist.Hist]:
    """Sum per-sample histograms into process groups.

    Each sample is multiplied by ``norms[sample]`` (e.g. ``inputs.normalization.info_scale``; default 1, as for
    data) with variances x norm**2, then every group is scaled by ``lumi_scale_factor`` as in
    ``lumi_scale`` (data and simulation alike, so the expectation of data stays consistent).
    """
    groups = DEFAULT_PROCESS_GROUPS if groups is None else groups
    norms = {} if norms is None else norms
    out: dict[str, hist.Hist] = {}
    for group, samples in groups.items():
        present = [s for s in samples if s in hists]
        missing = [s for s in samples if s not in hists]
        if missing and not allow_missing:
            raise KeyError(f"group {group!r}: no histogram for samples {missing}")
        if not present:
            continue
        ref = hists[present[0]]
        vals = np.zeros(ref.view(flow=True).shape)
        vars_ = np.zeros_like(vals) if _is_weighted(ref) else None
        for s in present:
            h = hists[s]
            if list(h.axes.name) != list(ref.axes.name) or not all(
                _same_binning(a, b) for a, b in zip(h.axes, ref.axes)
            ):
                raise ValueError(f"group {group!r}: sample {s!r} has axes unlike {present[0]!r}")
            v, w = hist_arrays(h)
            f = norms.get(s, 1.0)
            vals += f * v
            if vars_ is not None:
                vars_ += f**2 * (w if w is not None else v)
        summed = make_hist(list(ref.axes), vals, vars_)
        out[group] = (
            lumi_scale(summed, lumi_scale_factor, variance=lumi_scale_variance)
            if lumi_scale_factor != 1.0
            else summed
        )
    return out


# ----------------------------------------------------------------------------------------------
# rebinning and selection
# ----------------------------------------------------------------------------------------------
def _flow_layout(ax: hist.axis.AxesMixin) -> tuple[int, int]:
    return int(ax.traits.underflow), int(ax.traits.overflow)


def rebin(
    h: hist.Hist,
    axis: str,
    *,
    edges: Sequence[float] | None = None,
    factor: int | None = None,
) -> hist.Hist:
    """Merge bins of ``axis`` by new ``edges`` (a subset of the old ones) or by ``factor``.

    Values and variances are summed. Old bins outside the new range go to the under/overflow bin
    (an error if the axis has none, since events would be lost), so flow-inclusive sums are kept.
    """
    idx = axis_index(h, axis)
    ax = h.axes[axis]
    if not ax.traits.continuous and not isinstance(ax, hist.axis.Integer):
        raise TypeError(f"axis {axis!r} is categorical ({type(ax).__name__}); cannot rebin it")
    old = np.asarray(ax.edges, dtype=float)
    if (edges is None) == (factor is None):
        raise ValueError(f"rebin {axis!r}: give exactly one of edges= or factor=")
    if factor is not None:
        if factor < 1 or len(ax) % factor:
            raise ValueError(f"rebin {axis!r}: factor {factor} does not divide {len(ax)} bins")
        new = old[::factor]
    else:
        new = np.asarray(edges, dtype=float)
        if new.ndim != 1 or len(new) < 2 or np.any(np.diff(new) <= 0):
            raise ValueError(f"rebin {axis!r}: edges must be increasing, got {list(new)}")
    tol = 1e-9 * max(1.0, float(np.max(np.abs(old))))
    pos = np.searchsorted(old, new)
    pos = np.clip(pos, 0, len(old) - 1)
    close = np.abs(old[pos] - new) <= tol
    close |= np.abs(old[np.clip(pos - 1, 0, len(old) - 1)] - new) <= tol
    if not np.all(close):
        bad = list(new[~close])
        raise ValueError(f"rebin {axis!r}: new edges {bad} are not edges of the old axis")
    uf, of = _flow_layout(ax)
    lo_bins = old[:-1] < new[0] - tol
    hi_bins = old[:-1] >= new[-1] - tol
    if (lo_bins.any() and not uf) or (hi_bins.any() and not of):
        raise ValueError(
            f"rebin {axis!r}: edges {list(new)} do not cover the axis range "
            f"[{old[0]}, {old[-1]}] and the axis has no flow bin to receive the rest"
        )
    # old regular bin i -> new flow index
    n_new = len(new) - 1
    target = np.searchsorted(new, old[:-1] + tol, side="right") - 1 + uf
    target = np.where(lo_bins, 0, np.where(hi_bins, n_new + uf, target))
    n_old_flow, n_new_flow = len(ax) + uf + of, n_new + uf + of
    mapping = np.zeros((n_old_flow, n_new_flow))
    mapping[np.arange(len(ax)) + uf, target] = 1.0
    if uf:
        mapping[0, 0] = 1.0
    if of:
        mapping[-1, -1] = 1.0
    kw = dict(name=ax.name, label=ax.label, underflow=bool(uf), overflow=bool(of))
    if factor is not None and isinstance(ax, hist.axis.Regular) and ax.transform is None:
        new_ax = hist.axis.Regular(n_new, new[0], new[-1], **kw)
    else:
        new_ax = hist.axis.Variable(new, **kw)

    def apply(a: np.ndarray) -> np.ndarray:
        return np.moveaxis(np.tensordot(a, mapping, axes=([idx], [0])), -1, idx)

    vals, vars_ = hist_arrays(h)
    axes = list(h.axes)
    axes[idx] = new_ax
    return make_hist(axes, apply(vals), None if vars_ is None else apply(vars_))


def select(h: hist.Hist, selection: Mapping[str, object]) -> hist.Hist:
    """``h[selection]`` with axis names checked; a ``bool`` on a Boolean axis is a value."""
    sel: dict[str, object] = {}
    for name, what in selection.items():
        ax = h.axes[axis_index(h, name)]
        if isinstance(what, (bool, np.bool_)):
            if not isinstance(ax, hist.axis.Boolean):
                raise TypeError(f"axis {name!r} is not Boolean; select it by index or hist.loc")
            what = hist.loc(bool(what))
        elif isinstance(what, (int, np.integer)) and not -len(ax) <= what < len(ax):
            raise IndexError(f"bin {what} out of range for axis {name!r} with {len(ax)} bins")
        sel[name] = what
    return h[sel]


# ----------------------------------------------------------------------------------------------
# variation axes
# ----------------------------------------------------------------------------------------------
def _group_matrix(ax: hist.axis.AxesMixin, edges: Sequence[float] | None) -> np.ndarray:
    """(flow bins of ``ax``, groups) 0/1 matrix.

    Underflow (and bins below ``edges[0]``) join the first group, overflow (and bins above
    ``edges[-1]``) the last, so that every bin belongs to exactly one group.
    """
    uf, of = _flow_layout(ax)
    n = len(ax)
    if edges is None:
        groups = np.arange(n)
        n_groups = n
    else:
        e = np.asarray(edges, dtype=float)
        if e.ndim != 1 or len(e) < 2 or np.any(np.diff(e) <= 0):
            raise ValueError(f"decorrelation edges for {ax.name!r} must increase: {list(e)}")
        n_groups = len(e) - 1
        centers = np.asarray(ax.centers, dtype=float)
        groups = np.clip(np.searchsorted(e, centers, side="right") - 1, 0, n_groups - 1)
    flow_groups = np.concatenate([[0] * uf, groups, [n_groups - 1] * of]).astype(int)
    m = np.zeros((n + uf + of, n_groups))
    m[np.arange(n + uf + of), flow_groups] = 1.0
    return m


def _decorr_axis(
    ax: hist.axis.AxesMixin, edges: Sequence[float] | None, name: str
) -> hist.axis.AxesMixin:
    """A flow-less copy of ``ax`` (or of its ``edges`` grouping) named ``name``."""
    if edges is not None:
        if not ax.traits.continuous:
            raise TypeError(f"axis {ax.name!r} is not continuous; decorrelate it bin by bin")
        return hist.axis.Variable(edges, name=name, underflow=False, overflow=False)
    if isinstance(ax, hist.axis.Boolean):
        return hist.axis.Boolean(name=name)
    if isinstance(ax, hist.axis.Integer):
        lo, hi = int(ax.edges[0]), int(ax.edges[-1])
        return hist.axis.Integer(lo, hi, name=name, underflow=False, overflow=False)
    if ax.traits.continuous:
        return hist.axis.Variable(ax.edges, name=name, underflow=False, overflow=False)
    if isinstance(ax, hist.axis.IntCategory):
        return hist.axis.IntCategory(list(ax), name=name, overflow=False)
    return hist.axis.StrCategory(list(ax), name=name, overflow=False)


def decorrelate(
    h: hist.Hist,
    nominal: hist.Hist,
    axis: str,
    *,
    edges: Sequence[float] | None = None,
    new_name: str | None = None,
) -> hist.Hist:
    """Split a variation into one variation per bin (or per ``edges`` group) of ``axis``.

    The result gets a new last axis ``new_name`` (default ``axis + "Decorr"``); its entry ``g``
    equals the variation inside group ``g`` of ``axis`` and the nominal elsewhere, so the
    deviations from nominal summed over the new axis give back the correlated deviation (flow
    bins count with the first/last group).
    ``nominal`` lacks the variation axes and is broadcast by name.
    """
    idx = axis_index(h, axis)
    ax = h.axes[axis]
    nom_v, nom_w = _aligned(nominal, h)
    if nom_v.shape[idx] == 1 and h.view(flow=True).shape[idx] != 1:
        raise ValueError(f"nominal histogram must have the decorrelated axis {axis!r}")
    vals, vars_ = hist_arrays(h)
    m = _group_matrix(ax, edges)
    mb = np.moveaxis(m.reshape(m.shape + (1,) * (vals.ndim - 1)), 1, -1)
    mb = np.moveaxis(mb, 0, idx)  # (..., n_axis at idx, ..., groups)
    out_v = nom_v[..., None] + (vals - nom_v)[..., None] * mb
    out_w = None
    if vars_ is not None:
        nw = nom_w if nom_w is not None else nom_v
        out_w = nw[..., None] + (vars_ - nw)[..., None] * mb
    new_ax = _decorr_axis(ax, edges, new_name or f"{axis}Decorr")
    return make_hist([*h.axes, new_ax], out_v, out_w)


def _bin_labels(ax: hist.axis.AxesMixin) -> list[str]:
    if isinstance(ax, (hist.axis.StrCategory, hist.axis.IntCategory)):
        return [f"{ax.name}{c}" if isinstance(c, int | np.integer) else str(c) for c in ax]
    if isinstance(ax, hist.axis.Integer):
        return [f"{ax.name}{int(c)}" for c in ax.edges[:-1]]
    return [f"{ax.name}{i}" for i in range(len(ax))]


def _regular_bins(h: hist.Hist, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Arrays with flow, except on axes ``names`` where only the regular bins are kept."""
    vals, vars_ = hist_arrays(h)
    sl: list[slice] = [slice(None)] * vals.ndim
    for n in names:
        i = axis_index(h, n)
        uf, _ = _flow_layout(h.axes[i])
        sl[i] = slice(uf, uf + len(h.axes[i]))
    t = tuple(sl)
    return vals[t], None if vars_ is None else vars_[t]


def combine_variation_axes(h: hist.Hist, axes: Sequence[str], new_name: str) -> hist.Hist:
    """Flatten several variation axes into one StrCategory axis (last, C order of ``axes``).

    Labels join the bin labels, e.g. ``"pdfVar3_massShift10"``; flow bins of these axes are
    dropped (variation axes carry no flow content).
    """
    if len(axes) < 1:
        raise ValueError("combine_variation_axes needs at least one axis name")
    idxs = [axis_index(h, a) for a in axes]
    vals, vars_ = _regular_bins(h, axes)
    keep = [i for i in range(vals.ndim) if i not in idxs]
    shape = [vals.shape[i] for i in keep] + [-1]

    def flat(a: np.ndarray) -> np.ndarray:
        return np.transpose(a, keep + idxs).reshape(shape)

    labels = [""]
    for a in axes:
        labels = [f"{p}_{q}" if p else q for p in labels for q in _bin_labels(h.axes[a])]
    new_ax = hist.axis.StrCategory(labels, name=new_name, overflow=False)
    out_axes = [h.axes[i] for i in keep] + [new_ax]
    return make_hist(out_axes, flat(vals), None if vars_ is None else flat(vars_))


def concat_variation_axes(
    hists: Sequence[hist.Hist], axes: Sequence[str], new_name: str
) -> hist.Hist:
    """Concatenate the variation axis ``axes[i]`` of ``hists[i]`` into one StrCategory axis.

    E.g. a 101-entry PDF axis and a 2-entry alphaS axis from two histograms become one 103-entry
    axis. All other axes must agree; the new axis is last.
    """
    if len(hists) != len(axes) or not hists:
        raise ValueError("concat_variation_axes needs one axis name per histogram")
    ref = hists[0]
    others = [a for a in ref.axes.name if a != axes[0]]
    pieces_v, pieces_w, labels = [], [], []
    for h, a in zip(hists, axes):
        rest = [n for n in h.axes.name if n != a]
        if rest != others or not all(_same_binning(h.axes[n], ref.axes[n]) for n in rest):
            raise ValueError(
                f"histogram with variation axis {a!r} has other axes {rest} != {others}"
            )
        v, w = _regular_bins(h, [a])
        i = axis_index(h, a)
        pieces_v.append(np.moveaxis(v, i, -1))
        pieces_w.append(None if w is None else np.moveaxis(w, i, -1))
        labels += _bin_labels(h.axes[a])
    if len(set(labels)) != len(labels):
        raise ValueError(f"concat_variation_axes: duplicate bin labels in {new_name!r}")
    weighted = all(w is not None for w in pieces_w)
    new_ax = hist.axis.StrCategory(labels, name=new_name, overflow=False)
    return make_hist(
        [ref.axes[n] for n in others] + [new_ax],
        np.concatenate(pieces_v, axis=-1),
        np.concatenate(pieces_w, axis=-1) if weighted else None,
    )


def _mirror_arrays(
    nom: np.ndarray, up: np.ndarray, up_var: np.ndarray | None, method: MirrorMethod
) -> tuple[np.ndarray, np.ndarray | None]:
    """down (and its variance, nominal held fixed) from nominal and up."""
    if method == "ratio":
        ok = up != 0
        r = np.divide(nom, up, out=np.ones(np.broadcast_shapes(nom.shape, up.shape)), where=ok)
        down = np.where(ok, nom * r, nom)
        var = None if up_var is None else up_var * r**4  # |d down / d up| = (nom/up)**2
    elif method == "difference":
        down = 2.0 * nom - up
        var = None if up_var is None else up_var * np.ones_like(down)
    else:
        raise ValueError(f"mirror method must be 'ratio' or 'difference', got {method!r}")
    return down, var


def mirror(up: hist.Hist, nominal: hist.Hist, *, method: MirrorMethod = "ratio") -> hist.Hist:
    """The down variation of a one-sided ``up`` variation.

    ``ratio``: down = nominal**2 / up (symmetric in log space; nominal where up == 0);
    ``difference``: down = 2 * nominal - up (symmetric in linear space).
    Variances are those of ``up`` propagated with the nominal held fixed.
    """
    nom_v, _ = _aligned(nominal, up)
    vals, vars_ = hist_arrays(up)
    down, var = _mirror_arrays(nom_v, vals, vars_, method)
    return make_hist(list(up.axes), down, var)


def mirror_axis(
    up: hist.Hist,
    nominal: hist.Hist,
    *,
    method: MirrorMethod = "ratio",
    updown_name: str = "downUpVar",
) -> hist.Hist:
    """``up`` with an extra last axis ``updown_name`` = (mirrored down, up)."""
    down = mirror(up, nominal, method=method)
    dv, dw = hist_arrays(down)
    uv, uw = hist_arrays(up)
    w = None if uw is None else np.stack([dw, uw], axis=-1)
    ax = hist.axis.Regular(2, -2.0, 2.0, underflow=False, overflow=False, name=updown_name)
    return make_hist([*up.axes, ax], np.stack([dv, uv], axis=-1), w)


def select_up_down(
    h: hist.Hist, which: Literal["up", "down"], *, axis: str = "downUpVar"
) -> hist.Hist:
    """The ``up`` or ``down`` slice of an up/down axis (bin 1 = up, bin 0 = down)."""
    axis_index(h, axis)
    if which not in ("up", "down"):
        raise ValueError(f"which must be 'up' or 'down', got {which!r}")
    return h[{axis: 1 if which == "up" else 0}]


def to_up_down(
    h: hist.Hist,
    axis: str,
    nominal: hist.Hist,
    *,
    pairing: Literal["interleaved", "halves", "mirror"] = "interleaved",
    start: int = 0,
    symmetrize: Literal["average", "quadratic"] | None = None,
    mirror_method: MirrorMethod = "ratio",
    updown_name: str = "downUpVar",
) -> hist.Hist:
    """Turn a variation axis into (N variations) x (down, up) relative to ``nominal``.

    Entries before ``start`` (e.g. a nominal replica at index 0) are skipped. ``pairing``:
    ``interleaved`` = up0, down0, up1, down1, ...; ``halves`` = N ups then N downs; ``mirror`` =
    N one-sided ups, downs made by ``mirror``. ``symmetrize`` replaces each pair by
    nominal +- delta with delta = (up - down)/2 (``average``) or
    sign(up - down) * sqrt(((up-nom)**2 + (down-nom)**2) / 2) (``quadratic``); variances are then
    the mean of the pair's. The variation axis becomes an Integer axis of N entries, followed by
    ``updown_name``; both are moved to the end.
    """
    idx = axis_index(h, axis)
    vals, vars_ = _regular_bins(h, [axis])
    nom_v, _ = _aligned(nominal, h)
    nom_v = np.moveaxis(nom_v, idx, -1)
    vals = np.moveaxis(vals, idx, -1)[..., start:]
    vars_ = None if vars_ is None else np.moveaxis(vars_, idx, -1)[..., start:]
    n = vals.shape[-1]
    if pairing == "mirror":
        up, up_w = vals, vars_
        down, down_w = _mirror_arrays(nom_v, up, up_w, mirror_method)
    elif pairing in ("interleaved", "halves"):
        if n % 2:
            raise ValueError(f"axis {axis!r}: {n} entries after start={start} cannot be paired")
        iu, idn = (
            (np.arange(0, n, 2), np.arange(1, n, 2))
            if pairing == "interleaved"
            else (np.arange(n // 2), np.arange(n // 2, n))
        )
        up, down = vals[..., iu], vals[..., idn]
        up_w = None if vars_ is None else vars_[..., iu]
        down_w = None if vars_ is None else vars_[..., idn]
    else:
        raise ValueError(f"unknown pairing {pairing!r}")
    if symmetrize is not None:
        if symmetrize == "average":
            delta = 0.5 * (up - down)
        elif symmetrize == "quadratic":
            delta = np.sign(up - down) * np.sqrt(0.5 * ((up - nom_v) ** 2 + (down - nom_v) ** 2))
        else:
            raise ValueError(f"symmetrize must be 'average', 'quadratic' or None: {symmetrize!r}")
        up, down = nom_v + delta, nom_v - delta
        if up_w is not None:
            up_w = down_w = 0.5 * (up_w + down_w)
    out_v = np.stack(np.broadcast_arrays(down, up), axis=-1)
    out_w = None if up_w is None else np.stack(np.broadcast_arrays(down_w, up_w), axis=-1)
    n_pairs = out_v.shape[-2]
    rest = [a for i, a in enumerate(h.axes) if i != idx]
    var_ax = hist.axis.Integer(0, n_pairs, name=axis, underflow=False, overflow=False)
    ud_ax = hist.axis.Regular(2, -2.0, 2.0, underflow=False, overflow=False, name=updown_name)
    return make_hist([*rest, var_ax, ud_ax], out_v, out_w)
