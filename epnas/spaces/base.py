"""The :class:`Space` interface: a family of architectures and its progressive actions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import ValidationError

from epnas.errors import GenomeError, SpaceError, validation_message
from epnas.spaces.genome import Action, ActionSpace, Genome, SpaceOptions, parse_genome_json

if TYPE_CHECKING:
    import torch.nn

    from epnas.costmodel import Cost


class Space(ABC):
    """A family of architectures.

    Subclasses set ``Options`` (a :class:`SpaceOptions` model whose fields are the
    space's tables and limits) and implement the abstract methods. Instances are
    cheap, immutable in practice, and compare equal when name and options are equal.
    """

    Options: ClassVar[type[SpaceOptions]] = SpaceOptions
    name: str = ""

    def __init__(self, **options: Any) -> None:
        try:
            self.options = self.Options(**options)
        except ValidationError as exc:
            raise SpaceError(validation_message(f"{type(self).__name__} options", exc)) from None

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Space) and (self.name, self.options) == (other.name, other.options)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.options))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- the contract ------------------------------------------------------------

    @abstractmethod
    def sample(self, rng: np.random.Generator, *, depth: int | None = None) -> Genome:
        """A random genome; ``depth`` asks for that many layers/branches/active edges."""

    @abstractmethod
    def validate(self, genome: Genome) -> None:
        """Raise :class:`GenomeError` naming the offending field if ``genome`` is invalid."""

    @abstractmethod
    def actions(self, genome: Genome) -> ActionSpace:
        """The progressive decisions that are legal for ``genome``."""

    @abstractmethod
    def decision_vocabulary(self) -> dict[str, tuple[Any, ...]]:
        """The fixed choices of every insert/remove/keep sub-decision, by name.

        Every :class:`Decision` that :meth:`actions` hands out has exactly these choices,
        so a policy can size its output layers once per space.
        """

    @abstractmethod
    def apply(self, genome: Genome, action: Action) -> Genome:
        """Apply one action; the result is valid, or :class:`ActionError` is raised."""

    @abstractmethod
    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """A random valid neighbour that differs from ``genome``."""

    @abstractmethod
    def encode(self, genome: Genome) -> list[int]:
        """Token ids, ``len(token_fields)`` per unit, each below ``vocab_size``."""

    @abstractmethod
    def decode(self, tokens: list[int]) -> Genome:
        """Invert :meth:`encode` (uids are renumbered in order)."""

    @property
    @abstractmethod
    def token_fields(self) -> tuple[str, ...]:
        """The fields each unit contributes to :meth:`encode`, in order."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """One more than the largest token id :meth:`encode` can produce."""

    @abstractmethod
    def from_structure(self, data: Mapping[str, Any]) -> Genome:
        """Build (and validate) a genome from the structure part of its JSON."""

    @abstractmethod
    def build(
        self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int
    ) -> torch.nn.Module:
        """The PyTorch network of ``genome``."""

    @abstractmethod
    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        """Analytic costs of ``genome`` (no torch modules are built)."""

    @abstractmethod
    def size(self, genome: Genome) -> int:
        """Number of units (layers, branches, or active edges) for tables."""

    def describe(self, genome: Genome) -> str:
        """A one-line human summary of ``genome`` (its key unless a space says more)."""
        return genome.key

    # --- shared helpers ----------------------------------------------------------

    def genome_from_dict(self, data: Mapping[str, Any]) -> Genome:
        """Load a genome from its parsed JSON, checking space and options match."""
        data = parse_genome_json(data)
        if data["space"] != self.name:
            raise GenomeError(f"space: genome is for {data['space']!r}, not {self.name!r}")
        structure = {k: v for k, v in data.items() if k not in ("format", "space", "options")}
        for annotation in ("cost", "key"):  # exported genomes may carry these; both derived
            structure.pop(annotation, None)
        return self.from_structure(structure)

    def _check_space(self, genome: Genome) -> None:
        if genome.space != self.name:
            raise GenomeError(f"space: genome is for {genome.space!r}, not {self.name!r}")
        if genome.options != self.options:
            raise GenomeError(f"options: genome was made under other {self.name} options")
