"""The chunk reader of the engine's input layer: one ``(path, start, stop)`` entry range ->
an awkward array of exactly the needed branches, from the per-process open-tree cache."""

from __future__ import annotations

from collections.abc import Sequence

import awkward as ak
from dask_awkward.lib.io.columnar import ColumnProjectionMixin

from wremnants_dask.inputs.files import open_tree
from wremnants_dask.utils.fast_zlib import use_isal_decompression

__all__ = ["LOST_ATTR", "PART_ATTR", "ZLIB_LIBRARY", "ChunkReadError", "ChunkReader", "sub_form"]

# Attribute of the empty array a skipping reader returns for a chunk it could not read: the
# chunk task moves it into the chunk's result (``ChunkResult.lost``).
LOST_ATTR = "wremnants_lost_chunks"
# Attribute naming the chunk an array was read from, ``(path, start, stop)``: an error while
# processing it then names the file and entry range (``engine.tracing.ChunkTask``).
PART_ATTR = "wremnants_chunk"

# Every process that reads chunks imports this module (workers unpickle ChunkReader from it),
# so ISA-L inflation is switched on wherever chunks are read.
ZLIB_LIBRARY = use_isal_decompression()


def sub_form(form: ak.forms.RecordForm, cols: list[str]) -> ak.forms.RecordForm:
    return ak.forms.RecordForm([form.content(c) for c in cols], cols)


class ChunkReadError(RuntimeError):
    """A chunk could not be read (corrupt basket, file changed or gone since planning).

    The message names the file, the branch (when one is at fault) and the entry range."""

    def __init__(self, path: str, start: int, stop: int, branch: str | None, reason: str):
        where = f"branch {branch!r}, " if branch else ""
        super().__init__(f"{path}: cannot read {where}entries [{start}, {stop}): {reason}")
        self.path, self.start, self.stop, self.branch, self.reason = (
            path,
            start,
            stop,
            branch,
            reason,
        )

    def __reduce__(self) -> tuple:  # raised on workers, re-raised on the client
        return (type(self), (self.path, self.start, self.stop, self.branch, self.reason))

    def record(self) -> dict:
        """JSON-able record of the lost chunk (for the output metadata)."""
        return {
            "file": self.path,
            "entry_start": self.start,
            "entry_stop": self.stop,
            "events": self.stop - self.start,
            "branch": self.branch,
            "reason": self.reason,
        }


class ChunkReader(ColumnProjectionMixin):
    """Picklable ``dak.from_map`` function: reads one ``(path, start, stop)`` entry range.

    It reads exactly ``columns`` with uproot from a per-process cache of open trees, which is
    what makes it cheaper than ``uproot.dask`` (that re-opens the file for every chunk).
    Column projection (``project_columns``) keeps dask-awkward's optimiser usable on it.
    """

    def __init__(
        self,
        treename: str,
        columns: Sequence[str],
        base_form: ak.forms.RecordForm,
        skip_bad: bool = False,
    ):
        self.treename = treename
        self.columns = list(columns)
        self.base_form = base_form
        # True (--skip-bad-files): a chunk that cannot be read becomes an empty chunk that
        # carries a record of what was lost, instead of failing the run.
        self.skip_bad = skip_bad

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
        return ChunkReader(self.treename, keep, self.base_form, self.skip_bad)

    def __call__(self, part: tuple[str, int, int]) -> ak.Array:
        path, start, stop = part
        try:
            tree = open_tree(path, self.treename)
        except Exception as err:
            return self._failed(ChunkReadError(path, start, stop, None, _why(err)))
        try:
            arr = tree.arrays(self.columns, entry_start=start, entry_stop=stop, library="ak")
        except Exception as err:
            return self._failed(self._diagnose(tree, path, start, stop, err))
        return ak.Array(arr, attrs={PART_ATTR: (path, start, stop)})

    def _diagnose(self, tree, path: str, start: int, stop: int, err: Exception) -> ChunkReadError:
        """Which branch fails (read one by one: only on the error path)."""
        for c in self.columns:
            try:
                tree[c].array(entry_start=start, entry_stop=stop, library="ak")
            except Exception as one:
                return ChunkReadError(path, start, stop, c, _why(one))
        return ChunkReadError(path, start, stop, None, _why(err))

    def _failed(self, err: ChunkReadError) -> ak.Array:
        if not self.skip_bad:
            raise err
        empty = self.form.length_zero_array()
        return ak.Array(empty, attrs={LOST_ATTR: [err.record()]})


def _why(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"
