"""The study configuration: one validated model for YAML files, flags and the Python API.

``epnas search --config study.yaml`` reads a YAML mapping with the fields of
:class:`StudyConfig` (``space_options`` or ``space-options``: both spellings work);
command-line flags override file values (``--space-opt``-style option dicts are merged
key by key, everything else is replaced). An unknown key or a bad value is an
:class:`~epnas.errors.EpnasError` naming the key and what is allowed.

A ``strategy`` may be a spec, ``NAME[KEY=VALUE,...][+filter]``
(:mod:`epnas.strategies.spec`): the plain name is stored, the bracket options go under
``strategy_options`` (whose own values win) and ``+filter`` adds the constraints as
early-exit ``filters``. All of that happens in the one validation of the settings, so a
config is parsed once on its way from the command line to the Study.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from epnas.errors import EpnasError
from epnas.objective import Constraint, Objective, parse_size

# Settings a resumed run may change: extending a finished run's budget is how users buy
# more search, and the executor does not change what is searched.
RESUMABLE = ("trials", "time", "workers", "workers_per_gpu", "ray", "trial_timeout",
             "max_consecutive_failures", "elastic_threads", "out")

# In ``filters`` (put there by a ``+filter`` strategy spec): the limits of the constraints.
_CONSTRAINT_LIMITS = object()
_OBJECTIVE_FIELDS = ("constraints", "max_params", "max_mflops", "min_intensity", "max_memory")

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_PART = r"([0-9]*\.?[0-9]+)\s*([smhd]?)"


def parse_duration(text: str | float | int) -> float:
    """Seconds from ``90``, ``90s``, ``30m``, ``2h``, ``1h30m`` or ``1.5d``."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        spec = text.strip().lower()
        parts = re.findall(_DURATION_PART, spec)
        if not re.fullmatch(f"(?:{_DURATION_PART}\\s*)+", spec):
            raise EpnasError(f"cannot read duration {text!r}: use seconds or a number with "
                             "s/m/h/d, e.g. 90, 30m, 2h or 1h30m")
        seconds = sum(float(n) * _DURATION_UNITS[u or "s"] for n, u in parts)
    if seconds <= 0:
        raise EpnasError(f"duration {text!r} must be positive")
    return seconds


def default_strategy() -> str:
    """``epnas`` (the method this package is about), ``random`` where it is not installed."""
    from epnas import strategies

    return "epnas" if "epnas" in strategies.names() else "random"


def default_evaluator(space: str) -> str:
    """The evaluator a study uses when none is named: the one place this choice is made.

    The tabular NAS-Bench-201 lookup for ``nb201`` (its cells are benchmarked; training
    them needs CIFAR-10), real training (``training``) for every other space.
    """
    from epnas import evaluators

    if space == "nb201":
        return "tabular"
    return "training" if "training" in evaluators.names() else "synthetic"


def default_preset(strategy: str, evaluator: str) -> str | None:
    """The strategy's preset for a study that names none: ``tabular`` for table lookups,
    ``quick`` otherwise (the default command-line run), when the strategy has them and its
    defaults do not size themselves from the budget (``auto_preset``)."""
    from epnas.strategies import STRATEGIES

    _, cls = STRATEGIES.resolve(strategy)
    if not cls.auto_preset:
        return None
    wanted = "tabular" if evaluator == "tabular" else "quick"
    return wanted if wanted in cls.presets else None


class StudyConfig(BaseModel):
    """Everything that defines a study; ``epnas search --print-config`` shows it as YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    space: str | None = Field(
        None, description="registered space or package.module:Class (None: the evaluator's "
                          "own space where it has one, a supernet's, else layerwise)")
    space_options: dict[str, Any] = Field(
        default_factory=dict, description="space options (tables, limits), as --space-opt")
    strategy: str | None = Field(
        None, description="registered strategy or package.module:Class (None: epnas)")
    strategy_options: dict[str, Any] = Field(
        default_factory=dict, description="strategy options, as --strategy-opt")
    preset: str | None = Field(
        None, description="the strategy's named option set (paper, tabular, quick, ...); "
                          "strategy_options override its values")
    evaluator: str | None = Field(
        None, description="registered evaluator or package.module:Class "
                          "(None: see epnas.config.default_evaluator)")
    evaluator_options: dict[str, Any] = Field(
        default_factory=dict, description="evaluator options, as --evaluator-opt")
    dataset: str | None = Field(
        None, description="data set name, for evaluators that take a `dataset` argument")
    data: str | None = Field(
        None, description="data path, for evaluators that take a `data` argument")
    fidelity: str | None = Field(
        None, description="fidelity of candidates that name none (None: the evaluator's)")
    constraints: list[str] = Field(
        default_factory=list, description="soft constraints METRIC:LOW:HIGH[:PENALTY]")
    max_params: float | None = Field(None, gt=0, description="shorthand: params::VALUE")
    max_mflops: float | None = Field(None, gt=0, description="shorthand: flops::VALUE*1e6")
    min_intensity: float | None = Field(
        None, gt=0, description="shorthand: intensity:VALUE: (FLOPs per byte)")
    max_memory: float | None = Field(None, gt=0, description="shorthand: memory::VALUE (bytes)")
    filters: list[str] = Field(
        default_factory=list, description="early-exit limits max-METRIC=VALUE or "
                                          "min-METRIC=VALUE: candidates outside are replaced "
                                          "before evaluation")
    trials: int | None = Field(
        100, ge=1, description="trial budget; cached repeats count (None: no limit)")
    time: float | None = Field(
        None, gt=0, description="wall-time budget in seconds ('2h', '30m' accepted)")
    workers: int = Field(1, ge=1, description="parallel evaluations (1: inline; with ray, "
                                              "1 means one per CPU, or GPU, of the cluster)")
    workers_per_gpu: int | Literal["auto"] | None = Field(
        None, description="on a machine with GPUs, this many local workers per GPU (auto: "
                          "as many as its free memory holds at the largest estimated trial, "
                          "at most one per core); None: --workers decides, round-robin "
                          "over the GPUs")
    ray: str | None = Field(
        None, description="evaluate on Ray: 'local' starts a Ray instance, 'auto' or an "
                          "address (ray://host:10001, host:6379) joins a cluster")
    trial_timeout: float | None = Field(
        None, gt=0, description="seconds before a trial fails with 'timeout'")
    elastic_threads: bool = Field(
        True, description="local CPU workers lend idle cores to the trials still running "
                          "at the end of a batch (false: parallel runs repeat bit for bit)")
    max_consecutive_failures: int = Field(
        20, ge=1, description="stop the run when more trials than this fail in a row")
    seed: int = Field(0, description="seed of the strategy (and of evaluators taking one)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast precision of evaluators that train; auto is decided "
                            "once per run, before its first trial, and recorded here "
                            "(see decide_precision)")
    precision_note: str | None = Field(
        None, description="why auto chose the recorded precision (set by the run)")
    init_from: str | None = Field(
        None, description="run directory whose best genomes (up to 8, feasible first) the "
                          "strategy starts from; its space and options must match")
    out: str | None = Field(
        None, description="run directory (CLI default runs/<space>-<strategy>-<time>)")

    @field_validator("workers_per_gpu", mode="before")
    @classmethod
    def _per_gpu(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, int) and value < 1:
            raise ValueError("workers per GPU must be at least 1 or auto")
        return value

    @field_validator("max_params", "max_mflops", "min_intensity", "max_memory", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        return _as_value_error(parse_size, value) if isinstance(value, str) else value

    @field_validator("time", "trial_timeout", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return _as_value_error(parse_duration, value) if isinstance(value, str) else value

    @field_validator("out", "data", "init_from", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return str(value) if isinstance(value, PathLike) else value

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraints(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        return [str(_as_value_error(Constraint.parse, v)) if isinstance(v, str) else v
                for v in value]

    @field_validator("filters", mode="before")
    @classmethod
    def _filters(cls, value: Any, info: ValidationInfo) -> Any:
        from epnas.strategies.filters import Limit, constraint_limits

        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            return value
        filters = [str(_as_value_error(Limit.parse, v)) if isinstance(v, str) else v
                   for v in value if v is not _CONSTRAINT_LIMITS]
        if len(filters) == len(value):
            return filters
        if not all(k in info.data for k in _OBJECTIVE_FIELDS):
            return filters  # a constraint setting is invalid: that error is the one to show
        limits = constraint_limits(_objective(*(info.data[k] for k in _OBJECTIVE_FIELDS)))
        return list(dict.fromkeys([*filters, *(str(limit) for limit in limits)]))

    @model_validator(mode="before")
    @classmethod
    def _strategy_spec(cls, data: Any) -> Any:
        """A ``strategy`` written as a spec becomes its name, options and filters."""
        from epnas.strategies import spec as strategy_spec

        if not isinstance(data, dict) or not _is_spec(data.get("strategy")):
            return data
        spec = strategy_spec.parse(data["strategy"])
        data = {**data, "strategy": spec.name}
        options = data.get("strategy_options")
        if spec.options and isinstance(options, dict | None):
            data["strategy_options"] = {**spec.options, **(options or {})}
        if spec.filter:
            filters = data.get("filters") or []
            data["filters"] = [*([filters] if isinstance(filters, str) else filters),
                               _CONSTRAINT_LIMITS]
        return data

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> StudyConfig:
        """Validate ``data``; errors become one :class:`EpnasError` naming the keys."""
        try:
            return cls(**{_field_name(k): v for k, v in data.items()})
        except ValidationError as exc:
            raise EpnasError(_explain(exc)) from None

    def resolved(self) -> StudyConfig:
        """This config with the default strategy, evaluator and preset filled in (no space
        is decided where the evaluator's own is the default:
        :func:`epnas.study.with_evaluator_space`)."""
        strategy = self.strategy or default_strategy()
        evaluator = self.evaluator or default_evaluator(self.space or "layerwise")
        preset = self.preset or default_preset(strategy, evaluator)
        return self.model_copy(update={"strategy": strategy, "evaluator": evaluator,
                                       "preset": preset})

    def objective(self) -> Objective:
        """The objective: ``constraints`` plus the shorthands."""
        return _objective(*(getattr(self, k) for k in _OBJECTIVE_FIELDS))

    def search_identity(self) -> dict[str, Any]:
        """The settings that define what is searched (all but :data:`RESUMABLE` and the
        note on the precision)."""
        return self.model_dump(mode="json", exclude={*RESUMABLE, "precision_note"})

    def differences(self, other: StudyConfig) -> list[str]:
        """``key: this vs other`` for every search-defining setting that differs (a run
        recorded before precisions were decided, ``auto``, takes any)."""
        mine, theirs = self.search_identity(), other.search_identity()
        if "auto" in (mine["precision"], theirs["precision"]):
            mine["precision"] = theirs["precision"]
        return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in mine if mine[k] != theirs[k]]

    def decide_precision(self, previous: StudyConfig | None, device: str | None,
                         searched: Callable[[], float | None] | None = None) -> StudyConfig:
        """This config with ``precision`` decided, once per run, in the Study's process.

        A run that recorded a decision (``previous``, its stored config) keeps it when
        this config says ``auto`` or the same, so a resumed run, its workers and every
        user who resumes it train as its first session did. Otherwise ``auto`` is decided
        here for ``device`` (None: CUDA when available) by
        :func:`epnas.train.trainer.decide_precision` (``searched``: the bf16 speedup of
        the networks the run will train, measured when it is asked for) and recorded
        with the reason in ``precision_note``. An explicit precision is kept as given.
        """
        if previous is not None and previous.precision != "auto" and \
                self.precision in ("auto", previous.precision):
            return self.model_copy(update={"precision": previous.precision,
                                           "precision_note": previous.precision_note})
        if self.precision != "auto":
            return self
        from epnas.train.trainer import decide_precision

        precision, note = decide_precision(device, searched)
        return self.model_copy(update={"precision": precision, "precision_note": note})

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping of a YAML config file (not yet validated: flags may override it)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise EpnasError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise EpnasError(f"config file {path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EpnasError(f"config file {path} must hold a mapping of settings, "
                         f"not a {type(data).__name__}")
    return {_field_name(str(k)): v for k, v in data.items()}


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` applied; ``*_options`` dicts are merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        if key.endswith("_options") and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _objective(constraints: list[str], max_params: float | None, max_mflops: float | None,
               min_intensity: float | None, max_memory: float | None) -> Objective:
    extra = []
    if max_params is not None:
        extra.append(Constraint("params", high=max_params))
    if max_mflops is not None:
        extra.append(Constraint("flops", high=max_mflops * 1e6))
    if min_intensity is not None:
        extra.append(Constraint("intensity", low=min_intensity))
    if max_memory is not None:
        extra.append(Constraint("memory", high=max_memory))
    return Objective.of([*constraints, *extra])


def _is_spec(strategy: Any) -> bool:
    """Whether ``strategy`` is more than a name (a plain name is taken as it is, so the
    ``module:Class`` name of a strategy instance never goes through the spec syntax)."""
    from epnas.strategies.spec import FILTER_SUFFIX

    return isinstance(strategy, str) and ("[" in strategy or
                                          strategy.rstrip().endswith(FILTER_SUFFIX))


def _field_name(key: str) -> str:
    return key.replace("-", "_")


def _as_value_error(parse: Any, value: Any) -> Any:
    # pydantic reports ValueErrors with the field's name; EpnasError is not one.
    try:
        return parse(value)
    except EpnasError as exc:
        raise ValueError(str(exc)) from None


def _explain(exc: ValidationError) -> str:
    allowed = ", ".join(StudyConfig.model_fields)
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown setting {key!r} (allowed: {allowed})")
        else:
            message = err["msg"].removeprefix("Value error, ")
            parts.append(f"{key}: {message} (got {err['input']!r})")
    return "study config: " + "; ".join(parts)
