"""Sample drivers: simulation files per process and pseudo-data with its lumi files.

Randomness: every (file, chunk) draws from its own numpy Generator seeded with
SeedSequence([seed, crc32(process), kind, file, chunk]), so the same seed and chunk size give
identical files, and the files of one sample are independent. The muon reconstruction
efficiency and the IsoTrack content draw from a second stream (kind _RECO), so adding them left
every other quantity's draws unchanged.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wremnants_dask.utils import provenance
from wremnants_dask.utils.atomic import atomic_write_text

from .chunk import EventChunk
from .events import make_events
from .fillers import add_fillers
from .lumiplan import plan_lumisections, write_brilcalc_csv, write_golden_json
from .params import SynthParams
from .processes import PROCESSES, process_info
from .rootfile import NanoAODWriter

DEFAULT_CHUNK = 50_000
_MC, _DATA, _COUNT, _LUMI, _FILL, _RECO = 0, 1, 2, 3, 4, 5


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def _split(n: int, parts: int) -> list[int]:
    base, extra = divmod(int(n), parts)
    return [base + (i < extra) for i in range(parts)]


def write_truth(outdir: Path, params: SynthParams, **extra) -> Path:
    """truth.json beside the files: the tables applied, plus provenance."""
    truth = params.truth()
    truth["processes"] = {
        k: {"xsec_pb": p.xsec_pb, "group": p.group, "filter_eff": p.filter_eff}
        for k, p in PROCESSES.items()
    }
    truth["provenance"] = provenance.make_metadata(extra, stage="synth")
    return atomic_write_text(outdir / "truth.json", json.dumps(truth, indent=1) + "\n")


def generate_sample(
    process: str,
    n_events: int,
    outdir: str | Path,
    *,
    seed: int,
    params: SynthParams | None = None,
    n_files: int = 1,
    fillers: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> list[Path]:
    """Write ``n_events`` simulated events of ``process`` into ``n_files`` NanoAOD files.

    Files are ``outdir/{process}_{i}.root`` (Events + Runs), written chunk by chunk and
    atomically; truth.json is written beside them. Returns the file paths.
    """
    info = process_info(process)
    if n_events < 0 or n_files < 1 or chunk_size < 1:
        raise ValueError(f"need n_events >= 0, n_files >= 1, chunk_size >= 1 (got "
                         f"{n_events}, {n_files}, {chunk_size})")  # fmt: skip
    params = params or SynthParams()
    world = params.world(False)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    args = {"process": process, "n_events": n_events, "seed": seed, "n_files": n_files,
            "fillers": fillers, "chunk_size": chunk_size}  # fmt: skip
    write_truth(outdir, params, **args)
    paths, first = [], 0
    for ifile, n_file in enumerate(_split(n_events, n_files)):
        path = outdir / f"{process}_{ifile}.root"
        sums = _RunSums()
        n_chunks = max(1, -(-n_file // chunk_size))
        with NanoAODWriter(path, n_chunks=n_chunks) as out:
            for ichunk, m in enumerate(_split(n_file, n_chunks)):
                rng = _rng(seed, _key(process), _MC, ifile, ichunk)
                rng_reco = _rng(seed, _key(process), _RECO, _MC, ifile, ichunk)
                chunk, _ = make_events(
                    info, m, world, rng, params.neg_weight_fraction, rng_reco=rng_reco
                )
                idx = first + np.arange(m, dtype=np.uint64)
                chunk.scalars["run"] = np.ones(m, dtype=np.uint32)
                chunk.scalars["luminosityBlock"] = (1 + idx // 1000).astype(np.uint32)
                chunk.scalars["event"] = idx + np.uint64(1)
                if fillers:
                    add_fillers(chunk, _rng(seed, _key(process), _FILL, ifile, ichunk), False)
                sums.add(chunk)
                out.extend(chunk)
                first += m
            out.runs(sums.runs_chunk())
        paths.append(path)
    return paths


@dataclass
class _RunSums:
    count: int = 0
    sumw: float = 0.0
    sumw2: float = 0.0
    pdf: np.ndarray = field(default_factory=lambda: np.zeros(103))
    scale: np.ndarray = field(default_factory=lambda: np.zeros(9))

    def add(self, chunk: EventChunk) -> None:
        w = chunk.scalars["genWeight"].astype(np.float64)
        self.count += chunk.n
        self.sumw += float(w.sum())
        self.sumw2 += float((w * w).sum())
        for attr, name in (("pdf", "LHEPdfWeight"), ("scale", "LHEScaleWeight")):
            counts, fields = chunk.collections[name]
            vals = fields[""].astype(np.float64).reshape(chunk.n, -1)
            setattr(self, attr, getattr(self, attr) + w @ vals)

    def runs_chunk(self) -> EventChunk:
        """NanoAOD Runs entry; LHE sums are sum(w * w_i) / sum(w) as in NanoAOD >= v7."""
        c = EventChunk(1)
        c.scalars["run"] = np.array([1], dtype=np.uint32)
        c.scalars["genEventCount"] = np.array([self.count], dtype=np.int64)
        c.scalars["genEventSumw"] = np.array([self.sumw])
        c.scalars["genEventSumw2"] = np.array([self.sumw2])
        norm = self.sumw if self.sumw != 0 else 1.0
        c.add_collection("LHEScaleSumw", np.array([9]), {"": self.scale / norm})
        c.add_collection("LHEPdfSumw", np.array([103]), {"": self.pdf / norm})
        return c


@dataclass
class PseudoDataInfo:
    """What generate_pseudodata wrote, and the per-process event counts."""

    files: list[Path]
    lumi_csv: Path
    golden_json: Path
    lumi_pb: float  # certified recorded luminosity (= the requested one)
    lumi_all_pb: float  # recorded luminosity of all lumi sections, certified or not
    processes: dict[str, dict[str, float]]  # name -> xsec_pb, expected_all, expected_certified,
    # generated, written (after prefiring), written_certified


def generate_pseudodata(
    outdir: str | Path,
    *,
    lumi_pb: float,
    seed: int,
    params: SynthParams | None = None,
    n_files: int = 1,
    fillers: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    processes: tuple[str, ...] | None = None,
) -> PseudoDataInfo:
    """Pseudo-data: every process at ``lumi_pb`` (/pb), generated with the data parameters.

    Per process N ~ Poisson(xsec * L_all) events (L_all includes lumi sections outside the
    golden JSON, whose events a lumi mask must remove), spread over real-looking runs and lumi
    sections in proportion to their recorded luminosity; L1-prefired events are dropped. Writes
    ``data_{i}.root``, ``lumi.csv`` (brilcalc format), ``golden.json`` and truth.json.
    """
    params = params or SynthParams()
    world = params.world(True)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    procs = tuple(processes) if processes is not None else tuple(PROCESSES)
    for p in procs:
        process_info(p)
    args = {"lumi_pb": lumi_pb, "seed": seed, "n_files": n_files, "fillers": fillers,
            "chunk_size": chunk_size, "processes": procs}  # fmt: skip
    write_truth(outdir, params, **args)
    plan = plan_lumisections(lumi_pb, _rng(seed, _LUMI), params.data_pileup_mean)
    csv_path = write_brilcalc_csv(plan, outdir / "lumi.csv")
    golden_path = write_golden_json(plan, outdir / "golden.json")
    lumi_all = float(plan.recorded.sum())
    ls_prob = plan.recorded / plan.recorded.sum()
    stats: dict[str, dict[str, float]] = {}
    per_file: dict[str, list[int]] = {}
    for p in procs:
        xs = PROCESSES[p].xsec_pb
        n = int(_rng(seed, _key(p), _COUNT).poisson(xs * lumi_all))
        stats[p] = {"xsec_pb": xs, "expected_all": xs * lumi_all, "expected_certified": xs * lumi_pb,
                    "generated": n, "written": 0, "written_certified": 0}  # fmt: skip
        per_file[p] = _split(n, n_files)
    paths, event0 = [], 100_000_000
    for ifile in range(n_files):
        path = outdir / f"data_{ifile}.root"
        n_file = sum(per_file[p][ifile] for p in procs)
        n_rounds = max(1, -(-n_file // chunk_size))
        runs_seen: set[int] = set()
        with NanoAODWriter(path, n_chunks=n_rounds) as out:
            for r in range(n_rounds):
                parts = []
                for p in procs:
                    m = _split(per_file[p][ifile], n_rounds)[r]
                    rng = _rng(seed, _key(p), _DATA, ifile, r)
                    rng_reco = _rng(seed, _key(p), _RECO, _DATA, ifile, r)
                    chunk, prob = make_events(PROCESSES[p], m, world, rng, rng_reco=rng_reco)
                    keep = rng.uniform(size=m) >= prob
                    chunk = chunk.take(keep)
                    ils = rng.choice(ls_prob.size, size=chunk.n, p=ls_prob)
                    chunk.scalars["_ls_index"] = ils
                    stats[p]["written"] += chunk.n
                    stats[p]["written_certified"] += int(plan.certified[ils].sum())
                    parts.append(chunk)
                mixed = EventChunk.concat(parts)
                rng_mix = _rng(seed, _DATA, ifile, r, 99)
                ils = mixed.scalars.pop("_ls_index")
                order = np.lexsort((rng_mix.uniform(size=mixed.n), ils))
                mixed = mixed.take(order)
                ils = ils[order]
                mixed.scalars = {
                    "run": plan.run[ils].astype(np.uint32),
                    "luminosityBlock": plan.ls[ils].astype(np.uint32),
                    "event": (event0 + np.arange(mixed.n)).astype(np.uint64),
                    **mixed.scalars,
                }
                event0 += mixed.n
                if fillers:
                    add_fillers(mixed, _rng(seed, _FILL, ifile, r), True)
                runs_seen.update(np.unique(mixed.scalars["run"]).tolist())
                out.extend(mixed)
            runs = EventChunk(len(runs_seen))
            runs.scalars["run"] = np.array(sorted(runs_seen), dtype=np.uint32)
            out.runs(runs)
        paths.append(path)
    return PseudoDataInfo(paths, csv_path, golden_path, float(lumi_pb), lumi_all, stats)
