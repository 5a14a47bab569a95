"""Fit input errors (issue 17, defect 8): unreadable files name the path, a zero-nominal bin with
a non-zero variation is refused by the writer, and a bin with data but zero prediction is named."""

from __future__ import annotations

import numpy as np
import pytest
from fit_models import hw, reg

from wremnants_dask.fitting import FitInputError, FitInputWriter, read_fit_input
from wremnants_dask.fitting.fitinput import write_fit_input


def _writer(sig, systematic_type="log_normal", data=(10.0, 20.0, 30.0)):
    ax = reg(3)
    w = FitInputWriter(systematic_type=systematic_type)
    w.add_channel("c", [ax])
    w.add_data(hw(ax, list(data)), "c")
    w.add_process(hw(ax, list(sig), [1.0] * 3), "sig", "c", signal=True)
    return w, ax


@pytest.fixture
def good_file(tmp_path):
    w, ax = _writer([5.0, 10.0, 15.0])
    w.add_process(hw(ax, [5.0, 10.0, 10.0]), "bkg", "c")
    return write_fit_input(w.build(), tmp_path / "fi.hdf5", {"stage": "test"})


def test_good_file_reads(good_file):
    fi, meta = read_fit_input(good_file)
    assert fi.nbins == 3 and meta["stage"] == "test"


@pytest.mark.parametrize("damage", ["text", "truncated", "empty"])
def test_unreadable_fit_input_names_the_path(good_file, tmp_path, damage):
    bad = tmp_path / f"{damage}.hdf5"
    raw = good_file.read_bytes()
    bad.write_bytes(
        {"text": b"this is not HDF5\n" * 10, "truncated": raw[: len(raw) // 2], "empty": b""}[
            damage
        ]
    )
    with pytest.raises(FitInputError) as err:
        read_fit_input(bad)
    msg = str(err.value)
    assert str(bad) in msg and "\n" not in msg, msg


@pytest.mark.parametrize("systematic_type", ["log_normal", "normal"])
def test_zero_nominal_bin_with_a_variation_is_refused(systematic_type):
    w, ax = _writer([5.0, 10.0, 0.0], systematic_type)
    w.add_process(hw(ax, [5.0, 10.0, 10.0]), "bkg", "c")
    with pytest.raises(FitInputError, match=r"'s'.*'sig'.*'c'.*zero nominal.*bins \[2\]"):
        w.add_shape_systematic(
            "s", "sig", "c", up=hw(ax, [5.5, 11.0, 3.0]), down=hw(ax, [4.5, 9.0, 0.0])
        )
    # a variation that stays zero where the nominal is zero is fine
    w.add_shape_systematic(
        "s2", "sig", "c", up=hw(ax, [5.5, 11.0, 0.0]), down=hw(ax, [4.5, 9.0, 0.0])
    )


def test_data_in_a_bin_without_prediction_is_named():
    w, _ = _writer([5.0, 10.0, 0.0], data=(10.0, 20.0, 7.0))
    with pytest.raises(FitInputError, match=r"channel 'c' bin 2: 7 data events but zero"):
        w.build()
    w, _ = _writer([5.0, 10.0, 0.0], data=(10.0, 20.0, 0.0))
    assert np.isclose(w.build().data.sum(), 30.0)  # no data there: fine


@pytest.mark.parametrize("value", [np.nan, np.inf, 1e308])
def test_non_finite_variation_names_the_parameter(value):
    """A NaN or infinite tensor entry is refused naming its parameter; entries whose sum
    overflows but that are each finite (1e308) are accepted (``validate`` sums the tensor
    first and checks each entry only when the sum is not finite)."""
    w, ax = _writer([5.0, 10.0, 15.0])
    w.add_shape_systematic(
        "s1", "sig", "c", up=hw(ax, [6.0, 11.0, 16.0]), down=hw(ax, [4.0, 9.0, 14.0])
    )
    w.add_shape_systematic(
        "s2", "sig", "c", up=hw(ax, [5.5, 10.5, 15.5]), down=hw(ax, [4.5, 9.5, 14.5])
    )
    fi = w.build()
    col = list(fi.shape_param).index(fi.param_index("s2"))
    fi.shape_avg[:, col] = value
    if np.isfinite(value):
        fi.validate()
        return
    with pytest.raises(FitInputError, match="non-finite variation for parameter 's2'"):
        fi.validate()
