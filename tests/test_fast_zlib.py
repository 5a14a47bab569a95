"""ISA-L decompression of ZLIB baskets: switched on for the engine's reads, same arrays as zlib,
and the compression of written files untouched."""

from __future__ import annotations

import zlib

import awkward as ak
import pytest
import uproot
import uproot.compression
from conftest import NANOAOD_DATA, NANOAOD_DY

from wremnants_dask import runner
from wremnants_dask.fast_zlib import use_isal_decompression

pytest.importorskip("isal")


@pytest.fixture
def decompressor():
    d = uproot.compression._decompress_ZLIB
    before = d.library
    yield d
    d.library = before


def test_engine_reads_with_isal(decompressor):
    assert runner.ZLIB_LIBRARY == "isal"
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


def test_written_files_keep_zlib_compression():
    """The generator writes with ``uproot.ZLIB(1)``: still the standard library's bytes."""
    payload = bytes(range(256)) * 400
    assert uproot.ZLIB(1).library == "zlib"
    assert uproot.ZLIB(1).compress(payload) == zlib.compress(payload, level=1)
