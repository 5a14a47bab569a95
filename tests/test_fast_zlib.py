"""ISA-L for ZLIB: the engine's reads inflate with it (same arrays as zlib), and the files we
write deflate with it into standard ZLIB streams that the standard library inflates."""

from __future__ import annotations

import zlib

import awkward as ak
import numpy as np
import pytest
import uproot
import uproot.compression
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask.inputs import reader
from wremnants_dask.synth.rootfile import NanoAODWriter
from wremnants_dask.utils.fast_zlib import IsalZLIB, use_isal_decompression, zlib_compression

pytest.importorskip("isal")


@pytest.fixture
def decompressor():
    d = uproot.compression._decompress_ZLIB
    before = d.library
    yield d
    d.library = before


def test_engine_reads_with_isal(decompressor):
    assert reader.ZLIB_LIBRARY == "isal"
    assert decompressor.library == "isal"
    assert use_isal_decompression() == "isal"  # idempotent


@pytest.mark.parametrize("path", [NANOAOD_DY, NANOAOD_DATA], ids=["dy", "data"])
def test_same_arrays_as_zlib(decompressor, path, monkeypatch):
    """Every branch of a real NanoAOD file (ZLIB-compressed) reads the same with both."""
    from isal import isal_zlib

    calls = []
    inflate = isal_zlib.decompress
    monkeypatch.setattr(
        isal_zlib, "decompress", lambda *a, **k: calls.append(1) or inflate(*a, **k)
    )
    arrays = {}
    for library in ("zlib", "isal"):
        decompressor.library = library
        with uproot.open(path, array_cache=None) as f:
            assert f.file.compression.name == "ZLIB"
            arrays[library] = f["Events"].arrays(library="ak")
    assert len(arrays["isal"].fields) > 1000
    assert len(calls) > 1000  # the baskets of the second read went through ISA-L
    assert ak.array_equal(arrays["zlib"], arrays["isal"], equal_nan=True)


def test_uproot_zlib_compression_unchanged():
    """Only the decompressor is switched: ``uproot.ZLIB`` still deflates with zlib."""
    payload = bytes(range(256)) * 400
    assert uproot.ZLIB(1).library == "zlib"
    assert uproot.ZLIB(1).compress(payload) == zlib.compress(payload, level=1)


def test_isal_written_file_reads_with_zlib(decompressor, tmp_path):
    """A file deflated by ISA-L is a plain ZLIB(1) file: the standard library inflates it to
    the arrays that were written (what ROOT itself would do)."""
    assert isinstance(zlib_compression(1), IsalZLIB)
    assert isinstance(NanoAODWriter(tmp_path / "x.root").compression, IsalZLIB)
    rng = np.random.default_rng(5)
    counts = rng.integers(0, 6, 20_000)
    written = {
        "x": rng.normal(size=20_000).astype(np.float32),
        "n": rng.integers(0, 1000, 20_000),
        "v": ak.unflatten(rng.exponential(size=counts.sum()).astype(np.float32), counts),
    }
    path = tmp_path / "isal.root"
    with uproot.recreate(path, compression=zlib_compression(1)) as f:
        f.mktree("Events", {k: v.type.content if k == "v" else v.dtype for k, v in written.items()})
        f["Events"].extend(written)
    decompressor.library = "zlib"
    with uproot.open(path) as f:
        assert f.file.compression == uproot.ZLIB(1)
        got = f["Events"].arrays(library="ak")
        assert f["Events"]["v"].compressed_bytes < 0.9 * f["Events"]["v"].uncompressed_bytes
    for k, v in written.items():
        assert ak.array_equal(got[k], v), k
