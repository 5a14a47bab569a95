"""The chunk reader of the engine's input layer: one ``(path, start, stop)`` entry range ->
an awkward array of exactly the needed branches, from the per-process open-tree cache."""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
from dask_awkward.lib.io.columnar import ColumnProjectionMixin

from wremnants_dask.inputs.files import open_tree
from wremnants_dask.utils.fast_zlib import use_isal_decompression

__all__ = ["ZLIB_LIBRARY", "ChunkReader", "sub_form"]

# Every process that reads chunks imports this module (workers unpickle ChunkReader from it),
# so ISA-L inflation is switched on wherever chunks are read.
ZLIB_LIBRARY = use_isal_decompression()


def sub_form(form: ak.forms.RecordForm, cols: list[str]) -> ak.forms.RecordForm:
    return ak.forms.RecordForm([form.content(c) for c in cols], cols)


class ChunkReader(ColumnProjectionMixin):
    """Picklable ``dak.from_map`` function: reads one ``(path, start, stop)`` entry range.

    It reads exactly ``columns`` with uproot from a per-process cache of open trees, which is
    what makes it cheaper than ``uproot.dask`` (that re-opens the file for every chunk).
    Column projection (``project_columns``) keeps dask-awkward's optimiser usable on it.
    """

    def __init__(self, treename: str, columns: Sequence[str], base_form: ak.forms.RecordForm):
        self.treename = treename
        self.columns = list(columns)
        self.base_form = base_form

    @property
    def form(self) -> ak.forms.Form:
        return sub_form(self.base_form, self.columns)

    @property
    def common_keys(self) -> frozenset[str]:
        """The branches every chunk reads (same name as in ``uproot.dask``'s input layer)."""
        return frozenset(self.columns)

    @property
    def behavior(self) -> dict | None:
        return None

    @property
    def attrs(self) -> dict | None:
        return None

    def project_columns(self, columns: frozenset[str]) -> ChunkReader:
        keep = [c for c in self.columns if c in columns] or self.columns[:1]
        return ChunkReader(self.treename, keep, self.base_form)

    def __call__(self, part: tuple[str, int, int]) -> ak.Array:
        path, start, stop = part
        tree = open_tree(path, self.treename)
        return tree.arrays(self.columns, entry_start=start, entry_stop=stop, library="ak")
