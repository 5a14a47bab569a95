"""The parallel read of gzip-compressed fit-input tensors (``fitinput._read_deflate_parallel``):
the same array as HDF5's own read for edge chunks, chunks stored without the filter and any
shape; other layouts fall back to HDF5."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from wremnants_dask.fitting.fitinput import LARGE_ARRAY, _read_dataset, _read_deflate_parallel


@pytest.fixture
def h5(tmp_path):
    rng = np.random.default_rng(7)
    a = rng.normal(size=(301, 517))  # chunks do not divide the shape: partial edge chunks
    a[:, ::3] = 0.0  # compressible columns, as in a systematics tensor
    path = tmp_path / "t.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("gzip", data=a, compression="gzip", chunks=(40, 33))
        f.create_dataset("shuffle", data=a, compression="gzip", shuffle=True, chunks=(40, 33))
        f.create_dataset("plain", data=a)
        d = f.create_dataset(
            "sparse", shape=a.shape, dtype="f8", compression="gzip", chunks=(40, 33)
        )
        d[:40] = a[:40]  # the other chunks are never written (fill value)
    assert a.size > LARGE_ARRAY
    return path, a


def test_parallel_read_equals_hdf5(h5):
    path, a = h5
    with h5py.File(path) as f:
        out = np.empty_like(a)
        assert _read_deflate_parallel(f["gzip"], out)
        np.testing.assert_array_equal(out, a)
        for name in ("gzip", "shuffle", "plain"):
            got = _read_dataset(f[name])
            np.testing.assert_array_equal(got, a)
            assert got.ctypes.data % 64 == 0


def test_other_layouts_fall_back(h5):
    path, a = h5
    with h5py.File(path) as f:
        out = np.zeros_like(a)
        for name in ("shuffle", "plain", "sparse"):
            assert not _read_deflate_parallel(f[name], out)
        assert not out.any()  # nothing written before falling back
        np.testing.assert_array_equal(_read_dataset(f["sparse"]), f["sparse"][()])


def test_raw_chunk_stored_without_filter(tmp_path):
    """A chunk whose filter mask says 'not compressed' (HDF5 keeps a chunk raw when deflate
    does not shrink it) is copied as it is."""
    a = np.arange(200 * 400, dtype="f8").reshape(200, 400)
    path = tmp_path / "raw.hdf5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("t", shape=a.shape, dtype="f8", compression="gzip", chunks=(100, 400))
        d[100:] = a[100:]
        d.id.write_direct_chunk((0, 0), a[:100].tobytes(), filter_mask=1)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["t"][()], a)  # HDF5 agrees on what the file holds
        out = np.empty_like(a)
        assert _read_deflate_parallel(f["t"], out)
        np.testing.assert_array_equal(out, a)
