"""An in-memory ``engine.run`` result read like a ``histio.HistFile``.

The calibrations measured from histograms (recoil, boson pT) read their inputs through the
``datasets`` / ``info`` / ``get`` of a histogram file; tests and notebooks hand them a run
result directly instead of writing it first.
"""

from __future__ import annotations

from typing import Any


class RunSource:
    """An in-memory ``engine.run`` result read like a ``histio.HistFile`` (for ``collect``)."""

    def __init__(self, result: Any, path: str = "<memory>") -> None:
        self.result = result
        self.path = path

    @property
    def datasets(self) -> list[str]:
        return list(self.result.datasets)

    def info(self, ds: str) -> dict[str, Any]:
        return self.result[ds].info()

    def get(self, ds: str, name: str) -> Any:
        try:
            return self.result[ds].hists[name]
        except KeyError:
            raise KeyError(f"{self.path}: {ds}/{name}") from None
