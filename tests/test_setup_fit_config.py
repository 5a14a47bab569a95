"""The declarative fit setup (configs/fit_<analysis>.yaml, ``fitsetup.config``).

- When the configs replaced the code path (session 9), the packaged configs were checked to
  reproduce that code path's fit inputs within 1e-12 on mw, mz_wlike and mz_dilepton (commit
  9b5ad2f); that frozen comparison is not kept, since every systematic added since changes them.
- Adding a systematic or a process is a config change: a YAML written here adds a log-normal
  systematic on one process, a shape systematic from an existing tensor restricted to one
  process, and a process made of two histmaker groups; each is checked in the fit input against
  values computed here from the histmaker file.
- Bad configs fail at load (or against the input) with one line naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

import hist
import numpy as np
import pytest
import yaml

from wremnants_dask.cli import histmaker
from wremnants_dask.cli.setup_fit import main as setup_fit_main
from wremnants_dask.fitsetup import histops
from wremnants_dask.fitsetup import setup as fs
from wremnants_dask.fitsetup.config import SetupError, load_fit_config, parse_fit_config
from wremnants_dask.histograms.histio import HistFile

#: A small synthetic sample (generated once into the sample cache): every process of the fit,
#: 0.1 /pb of pseudo-data, enough for the ABCD sidebands of the mw fit.
TINY = {
    "description": "fit-config tests: tiny synthetic samples",
    "era": "2018",
    "samples": [
        {"name": n, "generator": {"process": n, "n_events": k, "n_files": 1, "seed": s}}
        for n, k, s in [
            ("wplus_munu", 4000, 911),
            ("wminus_munu", 3000, 912),
            ("zmumu", 3000, 913),
            ("ztautau", 1000, 914),
            ("ttbar", 1000, 915),
            ("diboson", 1000, 916),
            ("qcd", 4000, 917),
        ]
    ]
    + [
        {
            "name": "data",
            "generator": {"pseudodata": True, "lumi_pb": 0.1, "n_files": 1, "seed": 907},
        }
    ],
}


def _histmaker(tmp: Path, analysis: str) -> Path:
    cfg = tmp / "datasets_tiny.yaml"
    if not cfg.exists():
        cfg.write_text(yaml.safe_dump(TINY))
    out = histmaker.main(
        ["-a", analysis, "--dataset-config", str(cfg), "--executor", "sync", "-o", str(tmp),
         "--no-progress"]
    )  # fmt: skip
    assert out is not None and out.exists()
    return out


@pytest.fixture(scope="module")
def mw_file(tmp_path_factory) -> Path:
    return _histmaker(tmp_path_factory.mktemp("fitcfg"), "mw")


def _packaged(name: str) -> dict[str, Any]:
    return yaml.safe_load(
        importlib.resources.files("wremnants_dask.configs").joinpath(name).read_text()
    )


def _norm(ds: str, hf: HistFile) -> float:
    """xsec x lumi / sum of generator weights, from the file's own records."""
    info = hf.info(ds)
    lumi = sum(float(hf.info(d)["lumi_pb"]) for d in hf.datasets if hf.info(d)["is_data"])
    return info["xsec_pb"] * lumi / (info["gen_sumw"] or info["sumw_processed"])


def test_systematic_and_process_added_by_config(mw_file: Path, tmp_path: Path) -> None:
    raw = _packaged("fit_mw.yaml")
    raw["processes"] = {
        "Wmunu": {"groups": ["Wmunu"]},
        "Zmumu": {},
        "EWK": {"groups": ["Ztautau", "Diboson"]},  # a new process: two histmaker groups
        "Top": {},
    }
    raw["nonprompt"] = None
    raw["ignore_groups"] = ["QCD"]
    raw["region"] = {"passIso": True, "mt": 2}  # isolated, the last mT bin
    raw["systematics"] = [
        s for s in raw["systematics"] if s["name"] in ("massW", "lumi")
    ] + [
        {"name": "topNormTest", "type": "lnN", "kappa": [0.9, 1.2], "processes": ["Top"],
         "group": "test_norm"},
        {"name": "scaleWOnly", "type": "shape", "tensor": "muonScale", "processes": ["Wmunu"],
         "group": "test_shape"},
        {"name": "pileupSym", "type": "shape", "tensor": "pileup", "processes": ["Zmumu"],
         "symmetrize": "average", "scale": 0.5, "group": "test_shape"},
    ]  # fmt: skip
    cfg = tmp_path / "fit_test.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    out = tmp_path / "fi"
    assert setup_fit_main([str(mw_file), "-o", str(out), "--fit-config", str(cfg)]) == 0
    from wremnants_dask.fitting.fitinput import read_fit_input

    fi, _ = read_fit_input(out / "fitinput_mw.hdf5")
    assert fi.processes == ["Wmunu", "Zmumu", "EWK", "Top"]
    assert fi.groups["test_norm"] == ["topNormTest"]

    # lnN: log kappa on Top only, asymmetric as given
    j = list(fi.norm_param).index(fi.param_names.index("topNormTest"))
    top = fi.processes.index("Top")
    np.testing.assert_allclose(fi.norm_logup[:, top, j], np.log(1.2), rtol=1e-14)
    np.testing.assert_allclose(fi.norm_logdn[:, top, j], np.log(0.9), rtol=1e-14)
    others = [i for i in range(len(fi.processes)) if i != top]
    assert np.all(fi.norm_logup[:, others, j] == 0)

    # the new process is the sum of its groups (negative bins clipped at 0), from the file
    with HistFile(mw_file) as hf:
        sel = {"passIso": True, "mt": 2}
        ewk = sum(
            _norm(ds, hf)
            * histops.select(hf.get(ds, "nominal"), sel)
            .project("eta", "pt", "charge")
            .values()
            .ravel()
            for ds in ("ztautau", "diboson")
        )
    assert np.count_nonzero(ewk) > 100
    np.testing.assert_allclose(
        fi.nominal[:, fi.processes.index("EWK")], np.maximum(ewk, 0), rtol=1e-12
    )

    # the shape systematics: one parameter per tensor entry, on their process only, whose
    # template is (scale x) half the log up/down ratio of the tensor, computed here from the file
    _check_template(fi, mw_file, "scaleWOnly", "Wmunu", ("wplus_munu", "wminus_munu"), "muonScale")
    shape_params = [n for n in fi.param_names if n.startswith(("scaleWOnly", "pileupSym"))]
    assert fi.groups["test_shape"] == shape_params
    # symmetrize "average": no asymmetric part; scale 0.5 halves the template
    _check_template(fi, mw_file, "pileupSym", "Zmumu", ("zmumu",), "pileup", 0.5, symmetric=True)
    with pytest.raises(AssertionError):  # the check sees a template 10 % off
        _check_template(fi, mw_file, "pileupSym", "Zmumu", ("zmumu",), "pileup", 0.55)


def _check_template(
    fi: Any,
    path: Path,
    name: str,
    proc: str,
    datasets: tuple[str, ...],
    tensor: str,
    scale: float = 1.0,
    symmetric: bool = False,
) -> None:
    sel = {"passIso": True, "mt": 2}
    up = dn = nom = var_nom = 0.0
    with HistFile(path) as hf:
        for ds in datasets:
            k = _norm(ds, hf)
            t = histops.select(hf.get(ds, f"nominal_{tensor}"), sel)
            extra = [a for a in t.axes.name if a not in ("eta", "pt", "charge", "downUpVar")]
            t = t.project("eta", "pt", "charge", *extra, "downUpVar")
            n = histops.select(hf.get(ds, "nominal"), sel).project("eta", "pt", "charge")
            v = t.values().reshape(n.values().size, -1, 2)
            up, dn = up + k * v[..., 1], dn + k * v[..., 0]
            nom, var_nom = nom + k * n.values().ravel(), var_nom + k**2 * n.variances().ravel()
    names = [n for n in fi.param_names if n == name or n.startswith(name + "_")]
    assert up.shape[1] == len(names) > 0
    reliable = nom > np.maximum(np.sqrt(var_nom), fs.EMPTY_BIN_FLOOR)  # else: no template
    i = fi.processes.index(proc)
    rows = np.arange(fi.nbins) * fi.nproc + i
    other = (np.arange(fi.nbins)[:, None] * fi.nproc + np.delete(np.arange(fi.nproc), i)).ravel()
    for k, pname in enumerate(names):
        col = list(fi.shape_param).index(fi.param_names.index(pname))
        with np.errstate(divide="ignore", invalid="ignore"):
            expect = np.where(reliable, 0.5 * scale * np.log(up[:, k] / dn[:, k]), 0.0)
        np.testing.assert_allclose(fi.shape_avg[rows, col], expect, rtol=1e-9, atol=1e-12)
        assert np.all(fi.shape_avg[other, col] == 0)
        if symmetric:
            assert fi.shape_hd is None or np.all(fi.shape_hd[:, col] == 0)
    hd = fi.shape_hd[rows][:, [list(fi.shape_param).index(fi.param_names.index(n)) for n in names]]
    assert symmetric or np.any(hd != 0)  # the unsymmetrised tensor has an asymmetric part


# ----------------------------------------------------------------------------- validation
def _config(**changes: Any) -> dict[str, Any]:
    raw = _packaged("fit_mw.yaml")
    raw.update(changes)
    return raw


#: Index of a systematic appended to the packaged mw list (the errors name its position).
NEW = f"systematics[{len(_packaged('fit_mw.yaml')['systematics'])}]"


def _syst(**entry: Any) -> dict[str, Any]:
    return _config(systematics=[*_packaged("fit_mw.yaml")["systematics"], entry])


@pytest.mark.parametrize(
    "raw, message",
    [
        (_config(fit_axis=["eta"]), "f.yaml: unknown key 'fit_axis'"),
        (_config(signal=3), "f.yaml.signal: expected string, got 3"),
        (_config(signal="Wmunus"), "f.yaml: signal: 'Wmunus' is not a process"),
        (_config(version=2), "f.yaml: version: 2"),
        (_config(processes={"Wmunu": {"group": ["Wmunu"]}}), "processes.Wmunu: unknown key 'group'"),
        (_syst(name="x", type="lnM", group="g", kappa=1.1), f"{NEW} (x).type: 'lnM'"),
        (_syst(name="x", type="lnN", group="g"), f"{NEW} (x): missing key 'kappa'"),
        (_syst(name="x", type="lnN", group="g", kappa=-1.0), f"{NEW} (x).kappa: expected a positive"),
        (_syst(name="x", type="lnN", group="g", kappa=1.1, processes=["Tops"]),
         f"{NEW} (x).processes: 'Tops' is not a process"),
        (_syst(name="x", type="lnN", group="g", kappa=1.1, tensor="pdf"),
         f"{NEW} (x).tensor: a lnN systematic takes no 'tensor'"),
        (_syst(name="x", type="shape", group="g"), f"{NEW} (x): missing key 'tensor'"),
        (_syst(name="x", type="shape", group="g", tensor="t", symmetrize="both"),
         f"{NEW} (x).symmetrize: 'both'"),
        (_syst(name="x", type="shape", group="g", tensor="t", decorrelate={"axes": "eta"}),
         f"{NEW} (x).decorrelate: unknown key 'axes'"),
        (_syst(name="x", type="shape", group="g", tensor="t", scale="2"),
         f"{NEW} (x).scale: expected number"),
        (_syst(name="lumi", type="lnN", group="g", kappa=1.1), "(lumi): name 'lumi' repeats"),
        (_config(nonprompt={"method": "extendedd"}), "f.yaml: nonprompt.method: 'extendedd'"),
        (_config(nonprompt={"smoothing": 2}), "f.yaml: nonprompt: unknown key 'smoothing'"),
    ],
)  # fmt: skip
def test_bad_config_names_file_and_key(raw: dict, message: str) -> None:
    with pytest.raises(SetupError) as e:
        parse_fit_config(raw, "f.yaml")
    assert message in str(e.value) and "\n" not in str(e.value)


def _against_input(mw_file: Path, raw: dict[str, Any]) -> str:
    cfg = parse_fit_config(raw, "f.yaml")
    with HistFile(mw_file) as hf, pytest.raises(SetupError) as e:
        fs.build_fit_input(hf, config=cfg)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_config_checked_against_the_input(mw_file: Path) -> None:
    procs = _packaged("fit_mw.yaml")["processes"]
    msg = _against_input(mw_file, _config(processes={**procs, "Zmumu": {"groups": ["Zmm"]}}))
    assert "f.yaml: processes.Zmumu.groups: 'Zmm' is not a process group of" in msg
    assert str(mw_file) in msg
    stray = {k: v for k, v in procs.items() if k != "Top"}
    lumi_only = [x for x in _packaged("fit_mw.yaml")["systematics"] if x["name"] == "lumi"]
    msg = _against_input(mw_file, _config(processes=stray, systematics=lumi_only))
    assert "f.yaml: processes: the group(s) ['Top'] of" in msg
    msg = _against_input(mw_file, _syst(name="x", type="shape", group="g", tensor="nosuch",
                                        processes=["Top"]))  # fmt: skip
    assert f"{NEW} (x).processes: 'Top' has no histogram 'nominal_nosuch'" in msg
    msg = _against_input(mw_file, _syst(name="x", type="shape", group="g", tensor="pdf"))
    assert f"{NEW} (x): 'nominal_pdf' in" in msg and "has no axis 'downUpVar'" in msg
    msg = _against_input(mw_file, _syst(name="x", type="shape", group="g", tensor="pileup",
                                        decorrelate={"axis": "mll"}))  # fmt: skip
    assert f"{NEW} (x).decorrelate.axis: 'mll' is not an axis of 'nominal'" in msg
    msg = _against_input(mw_file, _config(fit_axes=["eta", "ptll"]))
    assert "f.yaml: fit_axes[1]: 'ptll' is not an axis of 'nominal'" in msg
    np_cfg = {**_packaged("fit_mw.yaml")["nonprompt"], "mt_axis": ["passMT"]}
    msg = _against_input(mw_file, _config(nonprompt=np_cfg))
    assert "f.yaml: nonprompt.mt_axis" in msg and "passMT" in msg


def test_cli_bad_config_is_one_line(mw_file: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_config(histogramm="nominal")))
    assert setup_fit_main([str(mw_file), "-o", str(tmp_path), "--fit-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: unknown key 'histogramm'; known: ") and "\n" not in err
    assert load_fit_config("fit_mz_dilepton.yaml").histogram == "mll"
    with pytest.raises(SetupError, match="fit config 'fit_nope.yaml' not found"):
        load_fit_config("fit_nope.yaml")


def test_eff_stat_grouped_by_the_measured_eta_bins() -> None:
    """A tag-and-probe payload repeats each measured eta bin over its fine bins; the histmaker
    records the measured edges (analysis_metadata.eff_stat_eta_edges) and the mw config's
    ``decorrelate.edges_from`` gives one nuisance per measured bin that moves all its fine bins
    together. Without the record (truth payload) every fine bin is its own nuisance."""
    from wremnants_dask.fitsetup.systematics import SYSTEMATIC_TYPES, BuildContext

    fine = np.linspace(-2.4, 2.4, 13)
    coarse = [-2.4, -1.2, 0.0, 1.2, 2.4]
    eta = hist.axis.Variable(fine, name="eta", underflow=False, overflow=False)
    dn_up = hist.axis.Regular(2, -2.0, 2.0, name="downUpVar", underflow=False, overflow=False)
    nominal = hist.Hist(eta, storage=hist.storage.Double())
    nominal.view()[...] = 100.0
    var = hist.Hist(eta, dn_up, storage=hist.storage.Double())
    shift = np.arange(12) + 1.0  # a different variation in each fine bin
    var.view()[...] = np.stack([100.0 - shift, 100.0 + shift], axis=-1)
    cfg = parse_fit_config(_packaged("fit_mw.yaml"), "fit_mw.yaml")
    syst = next(s for s in cfg.systematics if s.name == "effStat")
    build = SYSTEMATIC_TYPES[syst.type].build
    setup = None  # the shape builder does not read the fit definition

    (grouped,) = build(
        syst, var, nominal, BuildContext(setup, "Wmunu", None, {"eff_stat_eta_edges": coarse})
    )
    (per_bin,) = build(syst, var, nominal, BuildContext(setup, "Wmunu", None, {}))
    g = grouped["variations"]
    assert g.axes[-1].size == 4 and per_bin["variations"].axes[-1].size == 12
    up = g.values()[:, 1, :]  # (fine eta, group)
    for k in range(4):
        inside = (fine[:-1] >= coarse[k] - 1e-9) & (fine[1:] <= coarse[k + 1] + 1e-9)
        np.testing.assert_allclose(up[inside, k], 100.0 + shift[inside])  # the group moves together
        np.testing.assert_allclose(up[~inside, k], 100.0)  # and nothing outside it


# ----------------------------------------------------------------------------- mass curvature
def _mass_input(mw_file: Path, tmp_path: Path, symmetrize: str | None) -> Any:
    """A fit input of the W templates alone (massW and lumi, no non-prompt), the mass entry
    of the packaged config with ``symmetrize`` set (None: the config's default)."""
    from wremnants_dask.fitting.fitinput import read_fit_input

    raw = _packaged("fit_mw.yaml")
    raw["nonprompt"] = None
    raw["ignore_groups"] = ["QCD"]
    raw["region"] = {"passIso": True, "mt": 2}
    mass = next(s for s in raw["systematics"] if s["name"] == "massW")
    if symmetrize is not None:
        mass = {**mass, "symmetrize": symmetrize}
    raw["systematics"] = [mass] + [s for s in raw["systematics"] if s["name"] == "lumi"]
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = tmp_path / "fit_mass.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert setup_fit_main([str(mw_file), "-o", str(tmp_path), "--fit-config", str(cfg)]) == 0
    return read_fit_input(tmp_path / "fitinput_mw.hdf5")[0]


def _mass_curvature_deviation(mw_file: Path, fi: Any) -> float:
    """Largest |observed / expected - 1| of the mass curvature d2(-log L)/d theta2 (theta in
    units of the 100 MeV step, the other parameters at their nominal), over theta in
    [-0.4, 0.4] and Poisson pseudo-data drawn at theta = 0 and +0.4 (10x the data luminosity).
    Expected: the Fisher information of log yields linear in the mass, sum_i nu_W'^2 / nu with
    nu_W = W e^(a theta), a = log(up/down)/2 of the histmaker's +-100 MeV W templates (read
    here from the file). Linear in the log, the data enter only through the other processes'
    share (< 0.1 % here); an asymmetric part interpolated by the blend adds
    sum (nu - n) hd phi''(theta) nu_W / nu, data-dependent: the issue-20 stat shift."""
    import jax
    import jax.numpy as jnp

    from wremnants_dask.fitting.model import FitModel

    sel = {"passIso": True, "mt": 2}
    up = dn = nom = var = 0.0
    with HistFile(mw_file) as hf:
        for ds in ("wplus_munu", "wminus_munu"):
            k = _norm(ds, hf)
            t = histops.select(hf.get(ds, "nominal_massWeightW"), sel)
            ax = t.axes["massShift"]
            t = t.project("eta", "pt", "charge", "massShift").values()
            t = t.reshape(-1, len(ax))
            n = histops.select(hf.get(ds, "nominal"), sel).project("eta", "pt", "charge")
            up = up + k * t[:, ax.index("massShift100MeV")]
            dn = dn + k * t[:, ax.index("massShift-100MeV")]
            nom, var = nom + k * n.values().ravel(), var + k**2 * n.variances().ravel()
    reliable = nom > np.maximum(np.sqrt(var), fs.EMPTY_BIN_FLOOR)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(reliable, 0.5 * np.log(up / dn), 0.0)
    w = fi.processes.index("Wmunu")
    other = np.delete(fi.nominal, w, axis=1).sum(1)
    filled = nom > 0  # empty signal bins are floored in the fit input
    np.testing.assert_allclose(fi.nominal[filled, w], nom[filled], rtol=1e-12)

    model = FitModel(fi, bb_mode="none")
    ip = fi.param_index("massShiftW100MeV")
    x0 = jnp.asarray(model.x0)
    rng = np.random.default_rng(20)
    worst = 0.0
    for t_true in (0.0, 0.4):
        mu = 10.0 * np.asarray(model.yields(x0.at[ip].set(t_true)).sum(1))
        obs = {"data": jnp.asarray(rng.poisson(mu).astype(float)), "aux": model.obs["aux"]}
        scaled = {**model.arrays, "nominal": 10.0 * model.arrays["nominal"]}
        for t in (-0.4, -0.2, 0.0, 0.14, 0.2, 0.38):
            nll = lambda y, o=obs, s=scaled: model.nll(x0.at[ip].set(y), o, s)  # noqa: E731
            h = jax.hessian(nll)(jnp.asarray(t))
            nu_w = 10.0 * fi.nominal[:, w] * np.exp(a * t)  # floored where empty: a = 0
            fisher = np.sum((nu_w * a) ** 2 / (nu_w + 10.0 * other))
            assert np.isfinite(fisher) and np.isfinite(float(h)) and fisher > 0
            worst = max(worst, abs(float(h) / fisher - 1.0))
    return worst


def test_mass_curvature_is_its_fisher_information(mw_file: Path, tmp_path: Path) -> None:
    """Issue 20: the mass's stat uncertainty (1/sqrt of its curvature) moved by 13 % between
    two fits whose templates carry the same information, because the asymmetric part of the
    mass templates, interpolated by the blend, makes the curvature depend on the data and on
    where they put the mass. The default (symmetrised) mass: curvature = Fisher information to
    1 %; the asymmetric one (symmetrize: none, the former default) is shown to fail it."""
    assert _mass_curvature_deviation(mw_file, _mass_input(mw_file, tmp_path / "avg", None)) < 0.01
    kept = _mass_input(mw_file, tmp_path / "none", "none")
    assert kept.shape_hd is not None and np.any(kept.shape_hd != 0)
    assert _mass_curvature_deviation(mw_file, kept) > 0.05


def test_mass_symmetrize_option_checked() -> None:
    with pytest.raises(SetupError) as e:
        parse_fit_config(_syst(name="m", type="mass", group="g", tensor="massWeightZ", boson="Z",
                               symmetrize="linear"),
                         "f.yaml")  # fmt: skip
    assert f"{NEW} (m).symmetrize: 'linear'" in str(e.value) and "\n" not in str(e.value)
