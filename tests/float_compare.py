"""Comparison of JSON-like trees (dicts, lists, strings, numbers) with a float tolerance.

Used where a value stored in the repository (built on another machine) is compared with the same
value rebuilt here: structure, strings and integers must match exactly, floats within the caller's
tolerance, which must say why it is the size it is.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _is_float_list(x: list) -> bool:
    return (
        bool(x)
        and all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in x)
        and any(isinstance(v, float) for v in x)
    )


def assert_tree_close(got: Any, want: Any, rtol: float, atol: float, path: str = "") -> None:
    """Raise AssertionError naming the first differing path; floats compare as
    ``|got - want| <= atol + rtol * |want|`` (NaN equal to NaN), everything else exactly."""
    where = path or "<root>"
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{where}: {type(got).__name__} instead of a dict"
        assert list(got) == list(want), f"{where}: keys {list(got)} != {list(want)}"
        for k in want:
            assert_tree_close(got[k], want[k], rtol, atol, f"{path}/{k}")
    elif isinstance(want, list):
        assert isinstance(got, list), f"{where}: {type(got).__name__} instead of a list"
        assert len(got) == len(want), f"{where}: length {len(got)} != {len(want)}"
        if _is_float_list(want) and _is_float_list(got):
            np.testing.assert_allclose(
                np.asarray(got, np.float64),
                np.asarray(want, np.float64),
                rtol=rtol,
                atol=atol,
                equal_nan=True,
                err_msg=where,
            )
        else:
            for i, (g, w) in enumerate(zip(got, want)):
                assert_tree_close(g, w, rtol, atol, f"{path}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, numbers.Real) and not isinstance(got, bool), f"{where}: {got!r}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=where)
    else:
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"
