"""The engine: a Processor mapped over file chunks with Dask, reduced into tensor histograms.

``plan`` builds the graph (after ``inputs.preprocess`` checked the files), ``execute`` runs it
locally or on a cluster, ``results`` is what comes back. The public entry points are re-exported
here: ``engine.run(datasets, processor, client=...)``.
"""

from wremnants_dask.engine.executor import (
    WORKER_CONFIG,
    execute,
    optimize_graph,
    run,
    warm_up,
)
from wremnants_dask.engine.plan import (
    DEFAULT_SPLIT_EVERY,
    DEFAULT_STEP_SIZE,
    DatasetPlan,
    Plan,
    build_plan,
    merge_results,
)
from wremnants_dask.engine.processor import Processor, ProcessorError
from wremnants_dask.engine.results import DatasetResult, RunResult
from wremnants_dask.engine.tracing import trace_columns
from wremnants_dask.inputs.files import BadInputError
from wremnants_dask.inputs.reader import ChunkReadError

__all__ = [
    "ChunkReadError",
    "DEFAULT_SPLIT_EVERY",
    "DEFAULT_STEP_SIZE",
    "BadInputError",
    "DatasetPlan",
    "DatasetResult",
    "Plan",
    "Processor",
    "ProcessorError",
    "RunResult",
    "build_plan",
    "execute",
    "merge_results",
    "optimize_graph",
    "run",
    "trace_columns",
    "warm_up",
    "WORKER_CONFIG",
]
