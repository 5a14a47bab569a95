"""Dataset configs: loading, validation errors, filters, path expansion and the sample cache."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import GOLDEN_JSON, LUMI_CSV, NANOAOD_DATA, NANOAOD_DY, SHARED

from wremnants_dask.inputs import samplecache as cache
from wremnants_dask.inputs.datasets import (
    PROCESSES,
    ConfigError,
    Dataset,
    _parse_config,
    config_path,
    load_datasets,
)

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_shared_config_resolves_real_files(monkeypatch) -> None:
    monkeypatch.delenv("WREMNANTS_SHARED", raising=False)
    if SHARED.resolve() != (CONFIGS / "../../shared").resolve():
        pytest.skip("shared data is not beside the checkout; covered by the env-var test")
    mc, data = load_datasets("nanoaod_shared")
    # compare file identity: shared/ may be reached through a symbolic link
    mc_files = tuple(str(Path(f).resolve()) for f in mc.files)
    assert dataclasses.replace(mc, files=mc_files) == Dataset(
        "dy_m50", "Zmumu", (str(NANOAOD_DY.resolve()),), False, 6077.22, "2018", "Events"
    )
    assert data.is_data and data.xsec_pb is None and data.group == "Data"
    assert tuple(Path(f).resolve() for f in data.files) == (NANOAOD_DATA.resolve(),)
    assert Path(data.lumi_csv).resolve() == LUMI_CSV.resolve()
    assert Path(data.golden_json).resolve() == GOLDEN_JSON.resolve()


def test_env_var_expansion(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WREMNANTS_SHARED", str(SHARED.resolve()))
    mc, data = load_datasets(CONFIGS / "datasets_nanoaod_shared.yaml")
    assert mc.files == (str(NANOAOD_DY.resolve()),)
    assert Path(data.lumi_csv) == LUMI_CSV.resolve()
    monkeypatch.setenv("WREMNANTS_SHARED", str(tmp_path / "elsewhere"))
    with pytest.raises(
        ConfigError,
        match=r"datasets_nanoaod_shared\.yaml: samples\[0\] \(dy_m50\): key 'files': no file matches '\$\{WREMNANTS_SHARED",
    ):
        load_datasets("nanoaod_shared")
    # only the selected samples' inputs must exist
    (tmp_path / "elsewhere" / "data" / "nanoaod").mkdir(parents=True)
    (tmp_path / "elsewhere" / "data" / "nanoaod" / "nano_dy.root").write_bytes(b"x")
    (dy,) = load_datasets("nanoaod_shared", filter_procs="dy*")
    assert dy.files == (str(tmp_path / "elsewhere" / "data" / "nanoaod" / "nano_dy.root"),)
    with pytest.raises(ConfigError, match=r"\(data_dimuon\): key 'files': no file matches"):
        load_datasets("nanoaod_shared")


def test_relative_paths_globs_max_files_and_filters(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mc").mkdir()
    for i in (2, 0, 1):
        (tmp_path / "mc" / f"f{i}.root").write_bytes(b"x")
    for other in ("w0", "o2"):  # a file in two samples is an error: each sample has its own
        (tmp_path / "mc" / f"{other}.root").write_bytes(b"x")
    cfg = write(
        tmp_path,
        """
        era: "2018"
        groups: [Extra]
        samples:
          - {name: zmm, group: Zmumu, files: "mc/f*.root", xsec_pb: 2000}
          - {name: wp, group: Wmunu, files: [mc/w0.root], xsec_pb: 10.5, era: "2017"}
          - {name: other, group: Extra, files: "${NOPE_NOT_SET:-mc}/o2.root", xsec_pb: 1}
        """,
    )
    monkeypatch.chdir(tmp_path / "mc")  # relative paths follow the config, not the cwd
    ds = load_datasets(cfg)
    assert [d.name for d in ds] == ["zmm", "wp", "other"]
    assert ds[0].files == tuple(str(tmp_path / "mc" / f"f{i}.root") for i in range(3))
    assert ds[1].era == "2017" and ds[1].xsec_pb == 10.5 and ds[0].era == "2018"
    assert ds[2].files == (str(tmp_path / "mc" / "o2.root"),)
    assert load_datasets(cfg, max_files=2)[0].files == ds[0].files[:2]
    assert [d.name for d in load_datasets(cfg, filter_procs="Zmumu")] == ["zmm"]
    assert [d.name for d in load_datasets(cfg, filter_procs=["w*", "Extra"])] == ["wp", "other"]
    assert [d.name for d in load_datasets(cfg, exclude_procs=["Wmunu", "oth*"])] == ["zmm"]
    with pytest.raises(ConfigError, match=r"cfg\.yaml: filter_procs pattern 'Zmumuu' matches no"):
        load_datasets(cfg, filter_procs="Zmumuu")
    with pytest.raises(ConfigError, match="max_files"):
        load_datasets(cfg, max_files=0)


MC = "{name: a, group: Zmumu, files: f.root, xsec_pb: 1.0}"
BAD_CONFIGS = [
    ("sampels: []", r"unknown key\(s\) 'sampels' \(did you mean 'samples'\?\)"),
    (f"samples: [{MC}, {MC}]", r"samples\[1\]: key 'name': duplicate sample name 'a'"),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1.0, xsecpb: 2}]",
        r"samples\[0\] \(a\): unknown key\(s\) 'xsecpb' \(did you mean 'xsec_pb'\?\)",
    ),
    (
        "samples: [{name: a, group: Zmumuu, files: f.root, xsec_pb: 1.0}]",
        r"samples\[0\] \(a\): key 'group': unknown group 'Zmumuu'",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root}]",
        r"samples\[0\] \(a\): key 'xsec_pb' is required for simulation",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: -3}]",
        r"key 'xsec_pb' must be positive",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: '12'}]",
        r"key 'xsec_pb' must be int or float, got str",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1, is_data: 'yes'}]",
        r"key 'is_data' must be bool",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1, era: 2018}]",
        r"key 'era' must be str, got int 2018 \(quote it\)",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: nothere*.root, xsec_pb: 1}]",
        r"samples\[0\] \(a\): key 'files': no file matches 'nothere\*\.root'",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: [f.root, ./f.root], xsec_pb: 1}]",
        r"key 'files': file .*f\.root is listed twice",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: '${UNSET_VAR_X}/f.root', xsec_pb: 1}]",
        r"key 'files': environment variable \$\{UNSET_VAR_X\} is not set",
    ),
    (
        "samples: [{name: d, group: Data, is_data: true, files: f.root}]",
        r"samples\[0\] \(d\): key 'lumi_csv' is required for data",
    ),
    (
        "samples: [{name: d, group: Data, is_data: true, files: f.root, lumi_csv: f.root, golden_json: g.json}]",
        r"key 'golden_json': file not found: 'g\.json'",
    ),
    (
        "samples: [{name: d, group: Data, is_data: true, files: f.root, xsec_pb: 3, lumi_csv: f.root, golden_json: f.root}]",
        r"key 'xsec_pb' must not be given for data",
    ),
    (
        "samples: [{name: d, group: Data, files: f.root, xsec_pb: 3}]",
        r"key 'is_data' must be true for a sample in group 'Data'",
    ),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1, lumi_csv: f.root}]",
        r"'lumi_csv'/'golden_json' are only for data",
    ),
    (
        "samples: [{name: a, group: Zmumu, xsec_pb: 1}]",
        r"give exactly one of 'files' or 'generator'",
    ),
    (
        "samples: [{name: a, generator: {process: wplus, n_events: 10, seed: 1}}]",
        r"key 'generator': key 'process': unknown process 'wplus'",
    ),
    (
        "samples: [{name: a, generator: {process: zmumu, n_events: 10}}]",
        r"key 'generator': key 'seed' is required",
    ),
    (
        "samples: [{name: a, generator: {process: zmumu, n_events: '10', seed: 1}}]",
        r"key 'generator': key 'n_events' must be int",
    ),
    (
        "samples: [{name: a, generator: {process: zmumu, n_events: 10, seed: 1, nfiles: 2}}]",
        r"key 'generator': unknown key\(s\) 'nfiles' \(did you mean 'n_files'\?\)",
    ),
    (
        "samples: [{name: a, generator: {pseudodata: true, seed: 1}}]",
        r"key 'lumi_pb' is required for pseudodata",
    ),
    (
        "samples: [{name: a, is_data: false, generator: {pseudodata: true, lumi_pb: 1, seed: 1}}]",
        r"'is_data' cannot be false for a pseudodata",
    ),
    (
        "samples: [{name: a, generator: {pseudodata: true, lumi_pb: 1, seed: 1}, lumi_csv: f.root}]",
        r"come from the pseudodata generator",
    ),
    ("samples:\n  - name: a\n    name: b\n", r"line 4: duplicate key 'name'"),
    (
        "samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1}]\nera: '1'\nscale: 0",
        r"key 'scale' must be positive",
    ),
    ("samples: [a, b]", r"samples\[0\] must be a mapping"),
    ("samples: [{name: a, group: Zmumu, files: f.root, xsec_pb: 1}", r"invalid YAML"),
]


@pytest.mark.parametrize(("body", "message"), BAD_CONFIGS)
def test_config_errors_name_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    (tmp_path / "f.root").write_bytes(b"x")
    text = body if "era:" in body else f"era: '2018'\n{body}"
    cfg = write(tmp_path, text, name="broken.yaml")
    with pytest.raises(ConfigError, match=message) as err:
        load_datasets(cfg)
    assert str(cfg) in str(err.value)


def test_missing_era_and_unknown_config(tmp_path: Path) -> None:
    (tmp_path / "f.root").write_bytes(b"x")
    cfg = write(tmp_path, f"samples: [{MC}]")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: samples\[0\] \(a\): key 'era' is required"):
        load_datasets(cfg)
    with pytest.raises(ConfigError, match=r"'no_such_config' not found .*datasets_synthetic\.yaml"):
        load_datasets("no_such_config")


def test_packaged_synthetic_configs() -> None:
    """The default and CI configs validate and hold the agreed sizes (CI ~1/10 of the default)."""
    assert config_path(None) == (CONFIGS / "datasets_synthetic.yaml").resolve()
    assert config_path("synthetic_small") == (CONFIGS / "datasets_synthetic_small.yaml").resolve()
    expected = {
        "wplus_munu": 300_000,
        "wminus_munu": 250_000,
        "zmumu": 100_000,
        "ztautau": 50_000,
        "ttbar": 50_000,
        "diboson": 20_000,
        "qcd": 200_000,
    }
    full = {s.name: s for s in _parse_config(config_path(None))[1]}
    small = {s.name: s for s in _parse_config(config_path("synthetic_small"))[1]}
    assert set(full) == set(small) == {*PROCESSES, "data"}
    for name, n in expected.items():
        assert full[name].generator["process"] == name and full[name].xsec is None
        assert full[name].generator["n_events"] == n
        assert small[name].generator["n_events"] == n // 10
    assert full["data"].generator["lumi_pb"] == 10.0 and full["data"].is_data
    assert small["data"].generator["lumi_pb"] == 1.0
    seeds = [s.generator["seed"] for s in [*full.values(), *small.values()]]
    assert len(set(seeds)) == len(seeds)
    assert all(yaml.safe_load(p.read_text()) for p in CONFIGS.glob("*.yaml"))


# ----------------------------------------------------------------------------- cache


def _build_counted(tmp: Path, marker: Path, payload: str) -> dict:
    with marker.open("a") as fh:
        fh.write("built\n")
    (tmp / "out.txt").write_text(payload)
    return {"files": ["out.txt"]}


def test_cache_builds_once_and_keys_on_spec(tmp_path: Path) -> None:
    marker = tmp_path / "count.txt"
    spec = {"process": "zmumu", "n_events": 10, "seed": 1}
    folder, manifest = cache.cached_build(
        spec, lambda t: _build_counted(t, marker, "A"), label="zmumu", root=tmp_path / "c"
    )
    assert (folder / "out.txt").read_text() == "A" and manifest["spec"] == spec
    again, _ = cache.cached_build(
        dict(reversed(spec.items())),
        lambda t: _build_counted(t, marker, "B"),
        root=tmp_path / "c",
        label="zmumu",
    )
    assert again == folder and (folder / "out.txt").read_text() == "A"
    other, _ = cache.cached_build(
        {**spec, "seed": 2},
        lambda t: _build_counted(t, marker, "C"),
        label="zmumu",
        root=tmp_path / "c",
    )
    assert other != folder and (other / "out.txt").read_text() == "C"
    assert marker.read_text().count("built") == 2


def test_interrupted_build_leaves_no_cache(tmp_path: Path) -> None:
    root = tmp_path / "c"

    def crash(tmp: Path) -> dict:
        (tmp / "half.root").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.cached_build({"x": 1}, crash, label="s", root=root)
    assert [p for p in root.iterdir() if not p.name.endswith(".lock")] == []
    # a stale temporary folder from a killed process and a manifest-less folder are rebuilt
    key = cache.spec_key({"x": 1})
    (root / f".s-{key}.tmpdead").mkdir()
    (root / f"s-{key}").mkdir()
    folder, _ = cache.cached_build(
        {"x": 1}, lambda t: _build_counted(t, tmp_path / "m", "ok"), label="s", root=root
    )
    assert (folder / "out.txt").read_text() == "ok"
    assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [f"s-{key}"]


def _concurrent_worker(root: str, marker: str) -> str:
    import time

    def build(tmp: Path) -> dict:
        time.sleep(0.5)
        return _build_counted(tmp, Path(marker), "P")

    folder, _ = cache.cached_build({"p": 1}, build, label="p", root=root)
    return str(folder)


def test_concurrent_builds_build_once(tmp_path: Path) -> None:
    marker = tmp_path / "m.txt"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        folders = pool.starmap(_concurrent_worker, [(str(tmp_path / "c"), str(marker))] * 2)
    assert folders[0] == folders[1]
    assert marker.read_text().count("built") == 1


def test_cache_dir_from_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WREMNANTS_DASK_CACHE", str(tmp_path / "env"))
    assert cache.cache_dir() == tmp_path / "env"
    assert cache.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("WREMNANTS_DASK_CACHE")
    assert cache.cache_dir() == Path(os.path.expanduser("~")) / ".cache" / "wremnants_dask"


# ----------------------------------------------------------------------------- generator path

GEN_CONFIG = """
era: "2018"
samples:
  - {name: zmm, generator: {process: zmumu, n_events: 2000, n_files: 2, seed: 5}}
  - {name: wp, group: Wmunu, xsec_pb: auto,
     generator: {process: wplus_munu, n_events: 1000, seed: 6, params: {mW: 80.5}}}
  - {name: data, generator: {pseudodata: true, lumi_pb: 0.1, seed: 9}}
"""


def _synth_or_skip():
    from wremnants_dask import synth

    if not hasattr(synth, "generate_sample"):
        pytest.skip("the synthetic generator is not available yet")
    return synth


def _plain_lumi(csv_path: str, golden_path: str, pairs: set[tuple[int, int]]) -> float:
    import json

    golden = json.loads(Path(golden_path).read_text())
    total = 0.0
    for line in Path(csv_path).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split(",")
        run, ls = int(f[0].split(":")[0]), int(f[1].split(":")[0])
        if (run, ls) in pairs and any(a <= ls <= b for a, b in golden.get(str(run), [])):
            total += float(f[6])
    return total


def test_generator_samples_end_to_end(tmp_path: Path) -> None:
    import numpy as np
    import uproot

    from wremnants_dask.inputs import lumi, normalization

    synth = _synth_or_skip()
    cfg = write(tmp_path, GEN_CONFIG)
    root = tmp_path / "cache"
    zmm, wp, data = load_datasets(cfg, cache_dir=root)
    assert (zmm.group, zmm.xsec_pb) == ("Zmumu", synth.PROCESSES["zmumu"].xsec_pb)
    assert (wp.group, wp.xsec_pb) == ("Wmunu", synth.PROCESSES["wplus_munu"].xsec_pb)
    assert len(zmm.files) == 2 and all(Path(f).parent.parent == root for f in zmm.files)

    # Runs sums of unskimmed synthetic files = sums over their events
    w = np.concatenate(
        [uproot.open(f)["Events"]["genWeight"].array(library="np") for f in zmm.files]
    ).astype(np.float64)
    sums = normalization.read_gen_sums(zmm.files)
    assert sums.count == len(w) == 2000 and sums.n_files == 2
    assert sums.sumw == pytest.approx(w.sum(), rel=1e-9)
    assert sums.sumw2 == pytest.approx((w * w).sum(), rel=1e-9)
    assert normalization.mc_scale(zmm, 0.1) == pytest.approx(2000.0 * 0.1 / w.sum(), rel=1e-9)

    # pseudo-data: the generator's lumi files; certified lumi = requested; processed lumi =
    # plain sum over the CSV rows of the pairs present in the files and in the golden JSON
    assert data.is_data and data.group == "Data" and data.xsec_pb is None
    assert Path(data.lumi_csv).is_file() and Path(data.golden_json).is_file()
    assert lumi.certified_lumi(data.lumi_csv, data.golden_json) == pytest.approx(0.1, rel=1e-6)
    ev = uproot.open(data.files[0])["Events"].arrays(["run", "luminosityBlock"], library="np")
    pairs = set(zip(ev["run"].tolist(), ev["luminosityBlock"].tolist()))
    expected = _plain_lumi(data.lumi_csv, data.golden_json, pairs)
    assert 0 < lumi.dataset_lumi(data) == pytest.approx(expected, rel=1e-12)

    # second load: served from the cache, nothing rewritten
    mtimes = {f: os.stat(f).st_mtime_ns for d in (zmm, wp, data) for f in d.files}
    assert load_datasets(cfg, cache_dir=root) == [zmm, wp, data]
    assert {f: os.stat(f).st_mtime_ns for f in mtimes} == mtimes
    # scale: a different spec, a different folder, scaled size
    (half,) = load_datasets(cfg, cache_dir=root, filter_procs="zmm", scale=0.5)
    assert Path(half.files[0]).parent != Path(zmm.files[0]).parent
    assert sum(uproot.open(f)["Events"].num_entries for f in half.files) == 1000


GEN_ERRORS = [
    (
        "{process: zmumu, n_events: 10, seed: 1}, xsec_pb: 1999",
        r"key 'xsec_pb': 1999.0 differs from the 2000.0 pb",
    ),
    (
        "{process: zmumu, n_events: 10, seed: 1}, group: Wmunu",
        r"key 'group': 'Wmunu' differs from the group 'Zmumu'",
    ),
    (
        "{process: zmumu, n_events: 10, seed: 1, params: {mWW: 80}}",
        r"key 'params': unknown SynthParams field\(s\) \['mWW'\]",
    ),
]


@pytest.mark.parametrize(("gen", "message"), GEN_ERRORS)
def test_generator_spec_checked_against_generator(tmp_path: Path, gen: str, message: str) -> None:
    _synth_or_skip()
    cfg = write(tmp_path, f"era: '2018'\nsamples: [{{name: z, generator: {gen}}}]\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_datasets(cfg, cache_dir=tmp_path / "cache")
    assert str(cfg) in str(err.value)
    assert not (tmp_path / "cache").exists()  # rejected before generating anything


def test_threaded_generation_equals_one_by_one(tmp_path: Path, monkeypatch) -> None:
    """Samples are generated in threads, largest first; the events are those of generating
    them one by one (each sample draws from its own seeded generator)."""
    import threading

    import awkward as ak
    import uproot

    from wremnants_dask.inputs import datasets as D

    _synth_or_skip()
    cfg = write(tmp_path, GEN_CONFIG)
    seen: list[tuple[str, int]] = []
    generate = D._generate

    def spy(s, *args):
        seen.append((s.name, threading.get_ident()))
        return generate(s, *args)

    monkeypatch.setattr(D, "_generate", spy)
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    one_by_one = load_datasets(cfg, cache_dir=tmp_path / "one")
    assert {t for _, t in seen} == {threading.get_ident()}
    seen.clear()
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    threaded = load_datasets(cfg, cache_dir=tmp_path / "threads")
    # Largest first (pseudodata counts as largest): two threads start data and zmm, and wp
    # waits for one of them.
    assert {n for n, _ in seen[:2]} == {"data", "zmm"} and seen[2][0] == "wp"
    assert threading.get_ident() not in {t for _, t in seen}
    assert [d.name for d in threaded] == ["zmm", "wp", "data"]  # the config's order
    for a, b in zip(one_by_one, threaded):
        assert len(a.files) == len(b.files)
        for fa, fb in zip(a.files, b.files):
            ea, eb = uproot.open(fa)["Events"].arrays(), uproot.open(fb)["Events"].arrays()
            assert ak.array_equal(ea, eb, equal_nan=True), (a.name, fa)
