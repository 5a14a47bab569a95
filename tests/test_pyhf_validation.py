"""``validate_workspace`` (pyhf's schema applied in parts, for speed) accepts and rejects
exactly what pyhf's own validation does, with pyhf's message."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pyhf
import pytest

from wremnants_dask.fitting.fitinput import FitInputError
from wremnants_dask.fitting.pyhf_io import _valid_by_parts, validate_workspace

DATA = Path(__file__).parent / "data" / "pyhf"


def base() -> dict:
    """A small workspace with every modifier type."""
    mods = [
        {"name": "mu", "type": "normfactor", "data": None},
        {"name": "lumi", "type": "lumi", "data": None},
        {"name": "sf", "type": "shapefactor", "data": None},
        {"name": "n", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
        {
            "name": "n",
            "type": "histosys",
            "data": {"hi_data": [11.0, 21.0], "lo_data": [9.0, 19.0]},
        },
        {"name": "st", "type": "staterror", "data": [1.0, 2.0]},
        {"name": "ss", "type": "shapesys", "data": [1.5, 2.5]},
    ]
    return {
        "channels": [
            {"name": "c", "samples": [{"name": "b", "data": [10.0, 20.0], "modifiers": mods}]}
        ],
        "observations": [{"name": "c", "data": [12.0, 18.0]}],
        "measurements": [
            {
                "name": "m",
                "config": {
                    "poi": "mu",
                    "parameters": [{"name": "lumi", "auxdata": [1.0], "sigmas": [0.02]}],
                },
            }
        ],
        "version": "1.0.0",
    }


def test_published_workspace_valid_by_parts():
    with gzip.open(DATA / "ewk3l_rjmimic_bkgonly.json.gz", "rt") as f:
        assert _valid_by_parts(json.load(f))


def first(spec: dict, kind: str) -> dict:
    """The first modifier of type ``kind`` in the workspace."""
    for c in spec["channels"]:
        for s in c["samples"]:
            for m in s["modifiers"]:
                if m["type"] == kind:
                    return m
    raise LookupError(kind)


def set_key(d: dict, key: str, value) -> None:
    d[key] = value


CORRUPTIONS = {
    "none": lambda s: None,
    "unknown type": lambda s: set_key(first(s, "normsys"), "type", "foosys"),
    "histosys without hi_data": lambda s: first(s, "histosys")["data"].pop("hi_data"),
    "normsys extra key": lambda s: set_key(first(s, "normsys")["data"], "mid", 1.0),
    "staterror string": lambda s: set_key(first(s, "staterror"), "data", ["x"]),
    "staterror empty": lambda s: set_key(first(s, "staterror"), "data", []),
    "lumi renamed": lambda s: set_key(first(s, "lumi"), "name", "lumi2"),
    "modifier not a dict": lambda s: s["channels"][0]["samples"][0]["modifiers"].append("x"),
    "modifiers a dict": lambda s: set_key(s["channels"][0]["samples"][0], "modifiers", {}),
    "sample without modifiers": lambda s: s["channels"][0]["samples"][0].pop("modifiers"),
    "sample data empty": lambda s: set_key(s["channels"][0]["samples"][0], "data", []),
    "wrong version": lambda s: set_key(s, "version", "2.0.0"),
    "observation missing": lambda s: s.pop("observations"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_same_verdict_as_pyhf(case):
    spec = copy.deepcopy(base())
    CORRUPTIONS[case](spec)
    try:
        pyhf.schema.validate(spec, "workspace.json")
        pyhf_error = None
    except pyhf.exceptions.InvalidSpecification as err:
        pyhf_error = str(err)
    assert _valid_by_parts(spec) == (pyhf_error is None)
    if pyhf_error is None:
        validate_workspace(spec)
    else:
        with pytest.raises(FitInputError, match="invalid pyhf workspace") as info:
            validate_workspace(spec)
        assert pyhf_error in str(info.value)
