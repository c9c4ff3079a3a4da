"""The :class:`Space` interface: a family of architectures and its progressive actions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from epnas.errors import GenomeError, SpaceError, validation_message
from epnas.spaces.genome import Action, ActionSpace, Genome, SpaceOptions, parse_genome_json

if TYPE_CHECKING:
    from torch import nn

    from epnas.costmodel import Cost
    from epnas.spaces.graph import Graph


# Random draws :meth:`Space.sample` makes before it gives up on a FLOPs range.
SAMPLE_TRIES = 2_000


class SamplingOptions(BaseModel):
    """Options of every space that steer :meth:`Space.sample` but not validity.

    They are not genome options: a genome sampled under a cap is an ordinary member of
    the space, so its JSON and key do not mention the cap.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Redraw random genomes until their forward FLOPs are at most this (None: no cap).
    sample_max_mflops: float | None = Field(None, gt=0.0)
    # ... and at least this (None: no floor); leaves out networks that are little more
    # than the stem and head, which tie with each other in any ranking.
    sample_min_mflops: float | None = Field(None, ge=0.0)
    # Input (C, H, W) at which the range is measured.
    sample_input_shape: tuple[int, int, int] = (3, 32, 32)
    # Classes of the classifier head at which the range is measured.
    sample_num_classes: int = Field(10, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> SamplingOptions:
        low, high = self.sample_min_mflops, self.sample_max_mflops
        if low is not None and high is not None and low > high:
            raise ValueError(f"sample_min_mflops ({low:g}) is above sample_max_mflops ({high:g})")
        return self

    def mflops_range(self) -> str:
        """The FLOPs range in words, e.g. ``between 0.5 and 5 MFLOPs``; '' when unbounded."""
        low, high = self.sample_min_mflops, self.sample_max_mflops
        if low is not None and high is not None:
            return f"between {low:g} and {high:g} MFLOPs"
        if high is not None:
            return f"of at most {high:g} MFLOPs"
        return f"of at least {low:g} MFLOPs" if low is not None else ""


class Space(ABC):
    """A family of architectures, and everything that depends on what its genomes are.

    Subclasses set ``Options`` (a :class:`SpaceOptions` model whose fields are the
    space's tables and limits) and implement the abstract methods. Instances are
    cheap, immutable in practice, and compare equal when name and options are equal.
    Every space also takes the :class:`SamplingOptions` (``sample_max_mflops``...).

    Besides the search contract (sampling, validation, actions, tokens), a space owns
    the hooks the rest of epnas reaches it through: :meth:`build` (the torch network),
    :meth:`cost` (the analytic costs), :meth:`sharing_keys` (weight sharing),
    :meth:`graph` (the report's drawing) and :attr:`steps_per_episode` (an EPNAS
    schedule hint). The last three have defaults, so a new space needs only the first two.
    """

    Options: ClassVar[type[SpaceOptions]] = SpaceOptions
    name: str = ""
    # EPNAS's steps per episode (T) when its options leave it open: how many
    # transformations of a network it takes to reach a different one worth ranking.
    steps_per_episode: ClassVar[int] = 5

    def __init__(self, **options: Any) -> None:
        sampling = {k: options.pop(k) for k in SamplingOptions.model_fields if k in options}
        try:
            self.sampling = SamplingOptions(**sampling)
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

    def sample(self, rng: np.random.Generator, *, depth: int | None = None) -> Genome:
        """A random genome; ``depth`` asks for that many layers/branches/active edges.

        Under ``sample_max_mflops`` / ``sample_min_mflops`` genomes are drawn until one
        fits the range (rejection keeps the distribution of :meth:`draw` restricted to it).

        Raises:
            SpaceError: No genome in the range in ``SAMPLE_TRIES`` draws.
        """
        s = self.sampling
        low = s.sample_min_mflops if s.sample_min_mflops is not None else -np.inf
        high = s.sample_max_mflops if s.sample_max_mflops is not None else np.inf
        bounded = np.isfinite(low) or np.isfinite(high)
        for _ in range(SAMPLE_TRIES if bounded else 1):
            genome = self.draw(rng, depth=depth)
            if not bounded or low <= self.cost(genome, s.sample_input_shape,
                                               s.sample_num_classes).mflops <= high:
                return genome
        shape = ",".join(map(str, s.sample_input_shape))
        raise SpaceError(f"no {self.name} genome {s.mflops_range()} (input {shape}) in "
                         f"{SAMPLE_TRIES} random draws; widen the range or resize the space "
                         "(other channel tables, layer limits or depth)")

    @abstractmethod
    def draw(self, rng: np.random.Generator, *, depth: int | None = None) -> Genome:
        """One random genome, ignoring the sampling options (see :meth:`sample`)."""

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

    def next_tokens(self, prefix: Sequence[int]) -> Sequence[int] | None:
        """The token ids that may follow ``prefix`` in the :meth:`encode` of a genome of
        this space (none once ``prefix`` is one), so that every sequence written token by
        token from them decodes; None (the default) when the space cannot say, as where
        encodings vary in length. The ``reinforce`` strategy searches the spaces that say.
        """
        return None

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
    def build(self, genome: Genome, input_shape: tuple[int, int, int],
              num_classes: int) -> nn.Module:
        """The PyTorch network of ``genome`` for inputs ``(C, H, W)``."""

    @abstractmethod
    def cost(self, genome: Genome, input_shape: tuple[int, int, int], num_classes: int) -> Cost:
        """Analytic costs of ``genome`` (no torch modules are built); they must agree with
        :meth:`build` (``epnas.testing.check_space`` compares them)."""

    @abstractmethod
    def size(self, genome: Genome) -> int:
        """Number of units (layers, branches, or active edges) for tables."""

    def scale_channels(self, genome: Genome, factor: float) -> Genome:
        """``genome`` with every channel count scaled by ``factor`` (EcoNAS's channel factor).

        The result belongs to this space with scaled channel options, so it builds and
        costs like any genome; counts are rounded and kept >= 1.

        Raises:
            SpaceError: The space has no channel counts to scale.
        """
        raise SpaceError(f"the {self.name} space has no channel counts to scale")

    def describe(self, genome: Genome) -> str:
        """A one-line human summary of ``genome`` (its key unless a space says more)."""
        return genome.key

    def sharing_keys(self, genome: Genome,
                     model: nn.Module) -> dict[str, dict[str, nn.Module]] | None:
        """The units of ``model`` (built by :meth:`build` from ``genome``) that share
        weights across candidates, by sharing key: ``{key: {name prefix: module}}``.

        A key names what a unit *is* across networks (its stable uid and op type), so a
        unit keeps its key when others are inserted or removed around it; the tensors of
        the prefixed modules' ``state_dict`` are shared. None (the default): the space's
        networks train without the parameter-sharing dictionary.
        """
        return None

    def graph(self, genome: Genome, input_shape: tuple[int, int, int] | None = None,
              num_classes: int | None = None) -> Graph | None:
        """The report's drawing of ``genome`` (shapes shown when ``input_shape`` is
        given); None (the default): the report shows :meth:`describe` instead."""
        return None

    # --- block-wise search (DNA) --------------------------------------------------
    #
    # A space whose networks split into a chain of blocks implements these seven hooks;
    # the ``dna`` strategy and the ``distill`` evaluator need nothing else of it. A
    # *part* is the genome of one block: itself a genome of this space, in which the
    # block's input plays the role of the network input. Shapes are ``(C, H, W)``.

    def blocks(self, genome: Genome) -> list[Genome]:
        """Split ``genome`` at its stage boundaries into parts (one or more), so that
        ``assemble(blocks(genome)) == genome``.

        Raises:
            SpaceError: The space has no blocks (the default).
        """
        raise self._no_blocks()

    def assemble(self, parts: Sequence[Genome]) -> Genome:
        """The genome whose blocks are ``parts``, in order (each part's input is the
        previous part's output); raises :class:`GenomeError` when it is not valid."""
        raise self._no_blocks()

    def block_outputs(self, genome: Genome) -> list[str]:
        """The names (``model.named_modules()``) of the modules of ``build(genome, ...)``
        whose outputs end each of ``blocks(genome)``: a trained network of this space
        serves as a teacher through them."""
        raise self._no_blocks()

    def sample_block(self, rng: np.random.Generator, index: int, count: int,
                     input_shape: tuple[int, int, int],
                     output_shape: tuple[int, int, int]) -> Genome:
        """A random part for block ``index`` of ``count`` whose output has the height and
        width of ``output_shape`` when its input is ``input_shape`` (block 0's input is
        the network input). Any choice of one such part per block must assemble into a
        valid genome. Its channels are free: ``output_shape``'s only tell a teacher's."""
        raise self._no_blocks()

    def block_cost(self, part: Genome, index: int,
                   input_shape: tuple[int, int, int]) -> Cost:
        """Analytic costs of block ``index`` built from ``part`` on ``input_shape``;
        the costs of an assembled genome are its blocks' plus those of its head."""
        raise self._no_blocks()

    def block_shape(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """The output shape of block ``index`` built from ``part`` on ``input_shape``."""
        raise self._no_blocks()

    def build_block(self, part: Genome, index: int,
                    input_shape: tuple[int, int, int]) -> nn.Module:
        """Block ``index`` as a module mapping ``input_shape`` features (the network
        input for block 0) to :meth:`block_shape` features."""
        raise self._no_blocks()

    def _no_blocks(self) -> SpaceError:
        return SpaceError(f"the {self.name} space does not split into blocks: block-wise "
                          "search needs the hooks blocks, assemble, block_outputs, "
                          "sample_block, block_cost, block_shape and build_block "
                          "(docs/spaces.md)")

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

    def check_member(self, genome: Genome) -> None:
        """Raise :class:`GenomeError` unless ``genome`` names this space and its options
        (the first check of every :meth:`validate`)."""
        if genome.space != self.name:
            raise GenomeError(f"space: genome is for {genome.space!r}, not {self.name!r}")
        if genome.options != self.options:
            raise GenomeError(f"options: genome was made under other {self.name} options")


def scaled_count(count: int, factor: float) -> int:
    """A channel count times ``factor``, rounded, at least 1."""
    return max(1, round(count * factor))
