"""Compare two runs of the analysis chain bit for bit: histograms, fit input and fit result.

    python scripts/compare_outputs.py RUN_A RUN_B [--files hists/mw.hdf5 ...]
                                      [--ignore-attr axes format format_version]

RUN_A and RUN_B are output folders of ``python ci/run_chain.py`` (or any folders holding the
same relative HDF5 paths). Every dataset is compared as raw bytes (so NaNs, signed zeros and
the last ulp count), every attribute except the provenance (``metadata``: time, git state,
command line differ by construction), stage timings (``time_*``) and the folders of input files
(JSON ``files`` lists are compared by file name). Used to show that a refactoring changed no number.
``--ignore-attr NAME ...`` also skips the named attributes, and the same keys inside JSON
attributes (``axes`` skips each histogram's ``axes`` and the ``axes`` of every fit channel in
the JSON ``channels``), for a change of file format that must leave every number alone.
Exit code 0 when everything is identical, 1 otherwise (the differences are listed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

DEFAULT_FILES = ("hists/mw.hdf5", "fitinput/fitinput_mw.hdf5", "fit/fitresults.hdf5")
#: Attributes that record how and when a file was made, not what it contains.
PROVENANCE_ATTRS = {"metadata"}
#: Attribute name prefixes of timings (wall-clock seconds of a stage).
TIMING_PREFIXES = ("time_",)
#: Keys of JSON attributes that hold input paths: compared by file name only, since the
#: content-keyed sample cache puts the same generated files under a new folder whenever the
#: generator's source changes (the histograms then show whether the events changed).
PATH_KEYS = {"files"}


def _drop_keys(obj: object, ignore: frozenset[str]) -> object:
    """``obj`` without the dict keys in ``ignore``, at any depth."""
    if isinstance(obj, dict):
        return {k: _drop_keys(v, ignore) for k, v in obj.items() if k not in ignore}
    if isinstance(obj, list):
        return [_drop_keys(v, ignore) for v in obj]
    return obj


def _normalise_json(text: str, ignore: frozenset[str] = frozenset()) -> object:
    obj = json.loads(text)
    if isinstance(obj, dict):
        for key in PATH_KEYS & set(obj):
            obj[key] = [Path(str(f)).name for f in obj[key]]
    return _drop_keys(obj, ignore) if ignore else obj


def _items(f: h5py.File) -> dict[str, h5py.Dataset | h5py.Group]:
    out: dict[str, h5py.Dataset | h5py.Group] = {"/": f}
    f.visititems(lambda name, obj: out.__setitem__(name, obj))
    return out


def _same_bytes(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtypes, shapes and bytes; object and string fields compared as values."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.names:
        return all(_same_bytes(a[n], b[n]) for n in a.dtype.names)
    if a.dtype.kind == "O":
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def _n_different(a: np.ndarray, b: np.ndarray) -> int:
    """Elements whose bytes differ (NaN equals NaN of the same bits), -1 for structured data."""
    if a.dtype.names or a.dtype.kind == "O":
        return -1
    width = a.dtype.itemsize
    ba = np.ascontiguousarray(a).view(np.uint8).reshape(-1, width)
    bb = np.ascontiguousarray(b).view(np.uint8).reshape(-1, width)
    return int(np.any(ba != bb, axis=1).sum())


def _same_attr(a: object, b: object, ignore: frozenset[str] = frozenset()) -> bool:
    if isinstance(a, str) and isinstance(b, str) and a[:1] in "{[" and b[:1] in "{[":
        try:
            return _normalise_json(a, ignore) == _normalise_json(b, ignore)
        except ValueError:
            return a == b
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    return type(a) is type(b) and a == b


def compare_files(
    path_a: Path, path_b: Path, ignore_attrs: frozenset[str] = frozenset()
) -> list[str]:
    """Differences between two HDF5 files (empty when identical up to provenance and the
    attributes, or JSON keys inside attributes, named in ``ignore_attrs``)."""
    diffs: list[str] = []
    with h5py.File(path_a, "r") as fa, h5py.File(path_b, "r") as fb:
        ia, ib = _items(fa), _items(fb)
        for name in sorted(set(ia) ^ set(ib)):
            diffs.append(f"{name}: only in {'A' if name in ia else 'B'}")
        for name in sorted(set(ia) & set(ib)):
            oa, ob = ia[name], ib[name]
            if isinstance(oa, h5py.Dataset) != isinstance(ob, h5py.Dataset):
                diffs.append(f"{name}: dataset in one file, group in the other")
                continue
            if isinstance(oa, h5py.Dataset):
                va, vb = oa[()], ob[()]
                if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
                    va, vb = np.asarray(va), np.asarray(vb)
                    if va.dtype != vb.dtype or va.shape != vb.shape:
                        diffs.append(f"{name}: {va.dtype}{va.shape} vs {vb.dtype}{vb.shape}")
                    elif not _same_bytes(va, vb):
                        n = _n_different(va, vb)
                        diffs.append(f"{name}: values differ ({n} elements)")
                elif va != vb:
                    diffs.append(f"{name}: {va!r} vs {vb!r}")
            keys = {
                k
                for k in (set(oa.attrs) | set(ob.attrs)) - PROVENANCE_ATTRS - ignore_attrs
                if not k.startswith(TIMING_PREFIXES)
            }
            for key in sorted(keys):
                if key not in oa.attrs or key not in ob.attrs:
                    diffs.append(f"{name}@{key}: only in {'A' if key in oa.attrs else 'B'}")
                elif not _same_attr(oa.attrs[key], ob.attrs[key], ignore_attrs):
                    diffs.append(f"{name}@{key}: differs")
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path)
    p.add_argument("run_b", type=Path)
    p.add_argument("--files", nargs="+", default=list(DEFAULT_FILES))
    p.add_argument(
        "--ignore-attr",
        nargs="+",
        default=[],
        metavar="NAME",
        help="attributes (and keys inside JSON attributes) not compared, e.g. axes format",
    )
    args = p.parse_args(argv)
    ignore = frozenset(args.ignore_attr)
    if ignore:
        print(f"ignoring attributes and JSON keys: {', '.join(sorted(ignore))}")
    bad = 0
    for rel in args.files:
        diffs = compare_files(args.run_a / rel, args.run_b / rel, ignore)
        print(f"{rel}: {'identical' if not diffs else f'{len(diffs)} difference(s)'}")
        for d in diffs[:50]:
            print(f"    {d}")
        bad += bool(diffs)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
