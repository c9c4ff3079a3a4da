"""Tabular evaluation: look NAS-Bench-201 cells up in a CSV instead of training them.

The table is NAS-Bench-201 CIFAR-10, shipped in the package (``data/nb201_cifar10.csv``;
its source and licence in ``data/nb201_cifar10.md``), or any CSV with its schema (an
``arch`` column of NAS-Bench-201 cell strings and accuracy columns in percent) given as
``--data`` / ``--csv`` or ``$EPNAS_NB201_CSV``. Fidelities:

* ``200ep`` (default): the objective column, ``test_acc_200ep`` unless chosen otherwise,
  so results compare with published optimizer benchmarks;
* ``12ep``: ``val_acc_12ep``, the cheap and noisy 12-epoch proxy.

Costs (``params``, ``flops``, ``bytes``, ``intensity``) come from the analytic cost
model of the ``nb201`` space, as for every other evaluator. The CSV has no training
times, so ``train_seconds`` is 0.0: time budgets are meaningless on tabular runs, count
queries (:attr:`TabularEvaluator.queries`) instead.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from epnas.errors import EpnasError, GenomeError
from epnas.evaluators.base import Evaluator
from epnas.spaces.genome import Genome
from epnas.spaces.nb201 import NB201_OPS, NB201Genome, NB201Options, parse_arch
from epnas.spaces.registry import cost
from epnas.spaces.registry import get as get_space
from epnas.trial import Candidate, Result

ENV_VAR = "EPNAS_NB201_CSV"
PACKAGED_CSV = Path(__file__).resolve().parent / "data" / "nb201_cifar10.csv"  # package data
PROXY_COLUMN = "val_acc_12ep"
SKELETON = NB201Options()  # NAS-Bench-201 trained every cell with C=16, N=5


@dataclass(frozen=True)
class Table:
    """A parsed benchmark table: accuracies in percent, one tuple per column, file order."""

    path: Path
    archs: tuple[str, ...]
    row: dict[str, int]
    columns: dict[str, tuple[float, ...]]


_TABLES: dict[tuple[str, int, int, tuple[str, ...]], Table] = {}


def default_path() -> Path:
    """``$EPNAS_NB201_CSV``, else the table shipped in the package."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    if PACKAGED_CSV.is_file():
        return PACKAGED_CSV
    raise EpnasError(f"no NAS-Bench-201 table: ${ENV_VAR} is not set and {PACKAGED_CSV} "
                     f"(package data) is missing; reinstall epnas, or pass --data PATH (or "
                     f"set {ENV_VAR}) to a CSV with columns arch,test_acc_200ep,{PROXY_COLUMN}")


def load_table(path: Path, columns: tuple[str, ...]) -> Table:
    """Parse (once per process, until the file changes) ``arch`` and ``columns`` of a CSV."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise EpnasError(f"cannot read tabular benchmark {path}: {exc.strerror}") from None
    cache_key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, columns)
    if cache_key not in _TABLES:
        _TABLES[cache_key] = _parse(path, columns)
    return _TABLES[cache_key]


def _parse(path: Path, columns: tuple[str, ...]) -> Table:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EpnasError(f"cannot read tabular benchmark {path}: {exc}") from None
    if not rows:
        raise EpnasError(f"tabular benchmark {path} is empty; expected a header with arch,"
                         f"{','.join(columns)}")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("arch", *columns) if name not in header]
    if missing:
        raise EpnasError(f"tabular benchmark {path} has no column(s) {', '.join(missing)}; "
                         f"its header is {','.join(header)}")
    arch_at = header.index("arch")
    value_at = [header.index(name) for name in columns]
    row: dict[str, int] = {}
    values: list[list[float]] = [[] for _ in columns]
    for line, fields in enumerate(rows[1:], start=2):
        if not fields:
            continue
        where = f"tabular benchmark {path} line {line}"
        if len(fields) != len(header):
            raise EpnasError(f"{where}: {len(fields)} fields, the header has {len(header)}")
        arch = fields[arch_at]
        try:
            ops = parse_arch(arch)
        except GenomeError as exc:
            raise EpnasError(f"{where}: {exc}") from None
        if not set(ops) <= set(NB201_OPS):
            raise EpnasError(f"{where}: unknown op(s) {sorted(set(ops) - set(NB201_OPS))} "
                             f"in {arch!r}")
        if arch in row:
            raise EpnasError(f"{where}: arch {arch!r} appears twice")
        row[arch] = len(row)
        for column, at, out in zip(columns, value_at, values):
            try:
                value = float(fields[at])
            except ValueError:
                value = math.nan
            if not 0 <= value <= 100:  # NaN fails this too
                raise EpnasError(f"{where}: {column} = {fields[at]!r} is not a percentage "
                                 "in 0..100")
            out.append(value)
    if not row:
        raise EpnasError(f"tabular benchmark {path} has a header but no rows")
    return Table(path, tuple(row), row, dict(zip(columns, map(tuple, values))))


class TabularEvaluator(Evaluator):
    """Answers nb201 candidates from a NAS-Bench-201-style CSV.

    Args:
        data: the CSV (`--data`); default ``$EPNAS_NB201_CSV``, else the NAS-Bench-201
            CIFAR-10 table shipped in the package.
        input_shape: (C, H, W) the analytic costs are computed for.
        num_classes: classifier outputs for the analytic costs.
        objective_column: the column behind fidelity ``200ep``.

    Attributes:
        queries: how many times :meth:`evaluate` was called (failures included). Each
            worker process of a parallel executor counts its own calls.

    Raises:
        EpnasError: the file is missing or malformed, or lacks a needed column.
    """

    fidelities = ("200ep", "12ep")
    default_fidelity = "200ep"

    def __init__(self, data: str | os.PathLike[str] | None = None,
                 input_shape: tuple[int, int, int] = (3, 32, 32), num_classes: int = 10,
                 objective_column: str = "test_acc_200ep") -> None:
        self.path = Path(data) if data is not None else default_path()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.columns = {"200ep": objective_column, "12ep": PROXY_COLUMN}
        self.table = load_table(self.path, tuple(dict.fromkeys(self.columns.values())))
        self.queries = 0

    def __len__(self) -> int:
        return len(self.table.archs)

    def evaluate(self, candidate: Candidate) -> Result:
        self.queries += 1
        genome = candidate.genome
        fidelity = candidate.fidelity or self.default_fidelity
        if fidelity not in self.columns:
            return Result.failure("error", f"tabular fidelity {fidelity!r} is unknown; use one "
                                           f"of {list(self.fidelities)}")
        if not isinstance(genome, NB201Genome):
            return Result.failure("error", f"the tabular evaluator answers nb201 genomes only, "
                                           f"not {genome.space!r} ones")
        if (genome.options.channels, genome.options.cells_per_stage) != (
                SKELETON.channels, SKELETON.cells_per_stage):
            return Result.failure(
                "error", f"the table was measured with channels={SKELETON.channels}, "
                         f"cells_per_stage={SKELETON.cells_per_stage}; this genome has "
                         f"channels={genome.options.channels}, "
                         f"cells_per_stage={genome.options.cells_per_stage}")
        at = self.table.row.get(genome.arch)
        if at is None:
            return Result.failure("error", f"arch {genome.arch} is not in {self.table.path}")
        accuracy = self.table.columns[self.columns[fidelity]][at] / 100
        return Result("done", {"accuracy": accuracy, **self._cost(genome), "train_seconds": 0.0})

    def costs(self, genome: Genome) -> dict[str, float]:
        return dict(self._cost(genome))

    def query_cost(self, fidelity: str | None) -> float:
        """Training epochs over the full 200: a ``12ep`` query costs 12/200 (an unknown
        fidelity, a failed query, costs 1)."""
        fidelity = fidelity or self.default_fidelity
        return int(fidelity.removesuffix("ep")) / 200 if fidelity in self.columns else 1.0

    def entries(self) -> list[tuple[NB201Genome, float]]:
        """Every cell of the table as a genome (the table's skeleton), with its
        objective-column accuracy as a fraction, in file order."""
        space = get_space("nb201", **SKELETON.model_dump())
        return [(space.from_arch(arch), accuracy) for arch, accuracy in self.items()]

    def accuracy_of(self, arch: str | NB201Genome, fidelity: str = "200ep") -> float:
        """The table's accuracy (a fraction) of an arch string or genome."""
        arch = arch.arch if isinstance(arch, NB201Genome) else arch
        at = self.table.row.get(arch)
        if at is None:
            raise EpnasError(f"arch {arch!r} is not in {self.table.path}")
        return self._column(fidelity)[at] / 100

    def items(self, fidelity: str = "200ep") -> list[tuple[str, float]]:
        """Every (arch, accuracy as a fraction) of the table, in file order."""
        return [(arch, value / 100) for arch, value in zip(self.table.archs,
                                                           self._column(fidelity))]

    def best(self, fidelity: str = "200ep") -> tuple[str, float]:
        """The optimum (arch, accuracy as a fraction); the first in file order on ties."""
        values = self._column(fidelity)
        at = max(range(len(values)), key=values.__getitem__)
        return self.table.archs[at], values[at] / 100

    def _column(self, fidelity: str) -> tuple[float, ...]:
        if fidelity not in self.columns:
            raise EpnasError(f"tabular fidelity {fidelity!r} is unknown; use one of "
                             f"{list(self.fidelities)}")
        return self.table.columns[self.columns[fidelity]]

    def _cost(self, genome: Genome) -> dict[str, float]:
        key = (genome.key, self.input_shape, self.num_classes)
        if key not in _COSTS:
            _COSTS[key] = cost(genome, self.input_shape, self.num_classes).as_dict()
        return _COSTS[key]


# analytic costs by (genome key, input shape, classes), shared by every evaluator of the
# process: a benchmark's feasible optimum costs each of the 15,625 cells once
_COSTS: dict[tuple[str, tuple[int, ...], int], dict[str, float]] = {}
