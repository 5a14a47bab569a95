"""Dataset config validation (issue 17, defect 6): values YAML accepts but that make no sense
(.nan, .inf, negative masses, zero widths, inverted windows, negative seeds, more files than
events, a binary lumi CSV, one file in two samples) are ConfigErrors naming the key, and a
hypothesis fuzz test shows that any mutation of a valid config is either accepted or refused
with one line naming the config file and the key."""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import GOLDEN_JSON, LUMI_CSV, NANOAOD_DATA, NANOAOD_DY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wremnants_dask.inputs.datasets import ConfigError, check_config

FILES_CFG = {
    "era": "2018",
    "samples": [
        {"name": "dy", "group": "Zmumu", "files": [str(NANOAOD_DY)], "xsec_pb": 6077.2},
        {
            "name": "data",
            "group": "Data",
            "is_data": True,
            "files": [str(NANOAOD_DATA)],
            "lumi_csv": str(LUMI_CSV),
            "golden_json": str(GOLDEN_JSON),
        },
    ],
}
GEN_CFG = {
    "era": "2018",
    "scale": 1.0,
    "samples": [
        {
            "name": "wp",
            "generator": {
                "process": "wplus_munu",
                "n_events": 100,
                "n_files": 2,
                "seed": 1,
                "params": {"mW": 80.4, "GammaW": 2.1, "w_window": [50.0, 110.0]},
            },
        },
        {"name": "data", "generator": {"pseudodata": True, "lumi_pb": 1.0, "seed": 2}},
    ],
}


def _check(cfg: dict, folder: Path) -> Path:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    check_config(path)
    return path


def _sample(base: dict, **changes) -> dict:
    cfg = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = cfg["samples"][0]
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_valid_configs_pass(tmp_path):
    _check(FILES_CFG, tmp_path)
    _check(GEN_CFG, tmp_path)


@pytest.mark.parametrize(
    "base,changes,key",
    [
        (FILES_CFG, {"xsec_pb": math.nan}, "xsec_pb"),
        (FILES_CFG, {"xsec_pb": math.inf}, "xsec_pb"),
        (GEN_CFG, {"generator.params.mW": -80.4}, "mW"),
        (GEN_CFG, {"generator.params.GammaW": 0.0}, "GammaW"),
        (GEN_CFG, {"generator.params.w_window": [110.0, 50.0]}, "w_window"),
        (GEN_CFG, {"generator.params.w_window": [50.0, 70.0]}, "w_window"),  # mW outside
        (GEN_CFG, {"generator.params.fake_muon_rate": 1.5}, "fake_muon_rate"),
        (GEN_CFG, {"generator.params.mc_scale_offsets": [0.0] * 3}, "mc_scale_offsets"),
        (GEN_CFG, {"generator.seed": -1}, "seed"),
        (GEN_CFG, {"generator.n_files": 101}, "n_files"),
        (GEN_CFG, {"generator.n_events": math.inf}, "n_events"),
    ],
)
def test_values_that_make_no_sense_are_refused(tmp_path, base, changes, key):
    with pytest.raises(ConfigError) as err:
        _check(_sample(base, **changes), tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"'{key}'" in msg and "cfg.yaml" in msg


def test_binary_lumi_csv_is_refused(tmp_path):
    cfg = copy.deepcopy(FILES_CFG)
    cfg["samples"][1]["lumi_csv"] = str(NANOAOD_DY)  # a ROOT file given as the lumi CSV
    with pytest.raises(ConfigError, match=r"samples\[1\] \(data\): key 'lumi_csv': .* not a text"):
        _check(cfg, tmp_path)


def test_one_file_in_two_samples_is_refused(tmp_path):
    cfg = copy.deepcopy(FILES_CFG)
    cfg["samples"].append({**cfg["samples"][0], "name": "dy_again"})
    with pytest.raises(ConfigError, match=r"dy_again\): key 'files': .*nano_dy.root.* 'dy'"):
        _check(cfg, tmp_path)


# ----------------------------------------------------------------------------- fuzz
def _paths(node, prefix=()):
    """Every key path of a nested config (mappings and list elements)."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for k, v in items:
        yield (*prefix, k)
        if isinstance(v, (dict, list)) and not (isinstance(v, list) and k == "files"):
            yield from _paths(v, (*prefix, k))


VALUES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -1, 0, 0.0, -2.5, ""]),  # the edges
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True)), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
DELETE = object()


def _mutate(base, path, value):
    cfg = copy.deepcopy(base)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return cfg, node


def _nonfinite(node) -> bool:
    if isinstance(node, float):
        return not math.isfinite(node)
    if isinstance(node, dict):
        return any(_nonfinite(v) for v in node.values())
    if isinstance(node, list):
        return any(_nonfinite(v) for v in node)
    return False


PATHS = [(name, p) for name, base in (("files", FILES_CFG), ("gen", GEN_CFG)) for p in _paths(base)]


@pytest.mark.parametrize(
    "which,path", PATHS, ids=[f"{w}:{'.'.join(map(str, p))}" for w, p in PATHS]
)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.just(DELETE), VALUES))
def test_fuzz_every_invalid_config_is_one_line_naming_the_key(which, path, value):
    """Every key of two valid configs (files + data; generators), replaced by any value or
    deleted: accepted, or refused with one line naming the config file and the key."""
    base = FILES_CFG if which == "files" else GEN_CFG
    cfg, parent = _mutate(base, path, value)
    with tempfile.TemporaryDirectory() as d:
        try:
            _check(cfg, Path(d))
        except ConfigError as err:
            msg = str(err)
            assert "\n" not in msg, msg
            assert "cfg.yaml" in msg, msg
            named = {str(k) for k in path if isinstance(k, str)}
            siblings = {str(k) for k in parent} if isinstance(parent, dict) else set()
            assert any(k in msg for k in named | siblings), (path, msg)
            return
    # accepted: then no number in it may be NaN or infinite
    assert not _nonfinite(cfg), (path, value, "non-finite number accepted")
