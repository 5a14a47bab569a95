"""Dense correction tables give what correctionlib evaluates (to the ulp), for every variation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from wremnants_dask.corrections.payload import SF_STEPS, load_payload
from wremnants_dask.corrections.tables import build_table


def _probe(edges: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values across and beyond the grid, every edge and its neighbours, and NaN."""
    span = edges[-1] - edges[0]
    return np.concatenate(
        [
            rng.uniform(edges[0] - 0.2 * span, edges[-1] + 0.2 * span, 3000),
            edges,
            np.nextafter(edges, -np.inf),
            np.nextafter(edges, np.inf),
            [np.nan],
        ]
    )


def _category_keys(node: dict) -> list[dict]:
    """Every assignment of category inputs reaching a leaf of a correction's JSON tree."""
    if node.get("nodetype") != "category":
        return [{}]
    out = []
    for item in node["content"]:
        for rest in _category_keys(item["value"]):
            out.append({node["input"]: item["key"], **rest})
    return out


@pytest.mark.parametrize(
    "name",
    [
        "pileup",
        "muon_sf_idip",
        "muon_sf_iso",
        "muon_sf_trigger",
        "muon_eff_mc",
        "prefiring",
        "muon_scale_data",
        "muon_scale_unc",
    ],
)
def test_table_equals_correctionlib(name: str) -> None:
    payload = load_payload()
    table = payload.table(name)
    assert table is not None
    corr = payload._get()[1]["by_name"][name]
    cset = payload._get()[0]
    rng = np.random.default_rng(11)
    probes = [_probe(e, rng) for e in table.edges]
    size = max(len(p) for p in probes) + 5000
    # every probe value on each axis, paired at random with the other axes' values
    binned = {
        n: rng.permutation(np.concatenate([p, rng.choice(p, size - len(p))]))
        for n, p in zip(table.inputs, probes)
    }
    bins = table.bin_index(*binned.values())
    inputs = {i["name"]: i["type"] for i in corr["inputs"]}
    unused = {"real": 30.0, "int": 0, "string": ""}  # inputs the correction does not bin on
    for cats in _category_keys(corr["data"]):
        args = [binned.get(n, cats.get(n, unused[t])) for n, t in inputs.items()]
        want = cset[name].evaluate(*args)
        got = table.values(bins, **cats)
        # correctionlib's JSON parser (rapidjson, not full precision) may round the stored
        # decimals 1 ulp off the correctly rounded value Python's json reads
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0, err_msg=f"{name} {cats}")


def test_muon_sf_lookup_equals_muon_sf_for_every_variation() -> None:
    payload = load_payload()
    rng = np.random.default_rng(2)
    eta = rng.uniform(-2.6, 2.6, 2000)
    pt = rng.uniform(15.0, 80.0, 2000)
    variations = [("nominal", 0), ("syst_up", 0), ("syst_down", 0)] + [
        (v, k) for v, k in itertools.product(("stat_up", "stat_down"), range(payload.n_eigen))
    ]
    for step in SF_STEPS:
        lookup = payload.muon_sf_lookup(step, eta, pt)
        for var, k in variations:
            np.testing.assert_allclose(
                lookup(var, k), payload.muon_sf(step, eta, pt, var, k), rtol=1e-15, atol=0
            )


def _leaf(flow: str) -> dict:
    return {
        "nodetype": "multibinning",
        "inputs": ["x", "y"],
        "edges": [[0.0, 1.0, 2.0], [0.0, 5.0]],
        "content": [1.0, 2.0],
        "flow": flow,
    }


def _correction(data: dict) -> dict:
    return {
        "name": "c",
        "version": 1,
        "inputs": [
            {"name": "x", "type": "real"},
            {"name": "y", "type": "real"},
            {"name": "v", "type": "string"},
        ],
        "output": {"name": "w", "type": "real"},
        "data": data,
    }


def test_other_forms_are_not_tabled() -> None:
    cat = {"nodetype": "category", "input": "v", "content": []}
    assert build_table(_correction({**cat, "content": [{"key": "a", "value": _leaf("clamp")}]}))
    # other flow, a formula leaf, leaves on different grids: correctionlib evaluates those
    assert (
        build_table(_correction({**cat, "content": [{"key": "a", "value": _leaf("error")}]}))
        is None
    )
    formula = {"nodetype": "formula", "expression": "x", "parser": "TFormula", "variables": ["x"]}
    assert build_table(_correction({**cat, "content": [{"key": "a", "value": formula}]})) is None
    other = {**_leaf("clamp"), "edges": [[0.0, 1.5, 2.0], [0.0, 5.0]]}
    two = [{"key": "a", "value": _leaf("clamp")}, {"key": "b", "value": other}]
    assert build_table(_correction({**cat, "content": two})) is None
