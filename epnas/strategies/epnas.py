"""EPNAS: Efficient Progressive NAS (a REINFORCE policy that transforms networks).

Each episode runs ``branches`` (B) parallel branches for ``steps`` (T) steps. At every
step the policy reads each branch's current network and emits one progressive step
(a scale decision per layer group, then one insert / remove / keep decision with its
parameters); the B transformed networks are asked together so the executor trains
them in parallel, and each branch continues from its transformed network. At the end
of an episode one REINFORCE update uses every decision of every step of every branch,
and the ``top_k`` networks of the episode (by reward) seed the next episode's
branches. The first episode starts from random networks, or from the seed genomes
given to ``start_from`` (cycled over the branches, like the top-k seeds of later
episodes).

Critic (``screen`` > 1; by default on where the objective has no constraint and the
policy learns): each branch draws ``screen`` proposals and evaluates the one an ensemble
of small MLPs, fit on every network evaluated so far, ranks highest (mean + ``optimism``
x the members' spread); fresh networks likewise.

Reward: the Study fills ``Result.reward`` with the objective's soft-penalty reward
(``accuracy * prod p_i ** v_i``), so constraints shape the policy directly.

Baseline: an exponential moving average of the mean episode reward,
``b <- decay * b + (1 - decay) * mean(R)`` (``baseline_decay``, default 0.9), started at
the first episode's mean; the advantage of a decision sequence is ``R - b`` with the
baseline from before the update.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from epnas.spaces.base import Space
from epnas.spaces.genome import SCALE_CHOICES, ActionSpace, Decision, Genome
from epnas.spaces.registry import load_genome
from epnas.strategies.base import SearchContext, Strategy, StrategyOptions
from epnas.strategies.surrogate import Encoder, Surrogate
from epnas.trial import Candidate, Result

LEAF_BUDGET = 256  # decision-tree nodes counted per decision for the neighbour prior
WALK_TRIES = 100  # random steps tried from a parent whose neighbourhood is all known
PRIOR_LR_FACTOR = 50  # output biases learn this much faster than the rest by default
CRITIC_SCREEN = 4  # proposals per branch the critic ranks, where it is on by default
REPAIR_TRIES = 16  # random steps tried per repair step for one that lowers the violation


class EPNASOptions(StrategyOptions):
    """EPNAS hyper-parameters. ``None`` sizes a value from the study's budget and workers;
    ``--preset paper`` gives the paper's values (docs/epnas.md lists every departure)."""

    branches: int | None = Field(None, ge=1)  # B: networks transformed in parallel per step
    steps: int | None = Field(None, ge=1)  # T: steps per episode
    episodes: int | None = Field(None, ge=1)  # E (None: until the study's budget is spent)
    top_k: int | None = Field(None, ge=1)  # best networks that seed the next episode
    seeds_from: Literal["episode", "history"] = "history"  # where the top-k come from
    prefer_feasible: bool = True  # rank seeds feasible-first, then by reward
    start_depth: int | None = Field(None, ge=0)  # units of the first random networks
    evaluate_start: bool = True  # evaluate the first networks before transforming them
    explore: float = Field(0.25, ge=0, le=1)  # share of each step's branches given a new
    #                                          random network instead of a transformation
    neighbour_prior: bool = True  # weight each choice by the networks it leads to, so the
    #                                untrained policy draws every neighbour equally often
    fidelity: str | None = None  # evaluator fidelity (None: the evaluator's default)
    lr: float = Field(1e-3, ge=0)  # Adam learning rate (0: a frozen policy, the control)
    advantage: Literal["reward", "transform"] = "transform"  # R - b, or R - R(parent) - b
    baseline_decay: float = Field(0.9, ge=0, lt=1)  # moving-average baseline decay
    entropy_weight: float = Field(0.0, ge=0)  # entropy bonus in the policy loss
    normalize_advantages: bool = True  # divide advantages by their std per update
    update_every: Literal["episode", "step"] = "step"  # when REINFORCE updates
    prior_lr: float | None = Field(None, ge=0)  # learning rate of the output biases (each
    #         decision's preference regardless of the network; None: 50 x lr, so lr=0 freezes)
    avoid_repeats: int = Field(20, ge=0)  # re-sample a step up to N times if it proposes
    #                                       a network this search already evaluated
    avoid_infeasible: int = Field(20, ge=0)  # ... or one the cost model finds outside a
    #                                           constraint (before it costs an evaluation)
    repair: int = Field(4, ge=0)  # first walk such a proposal back inside the limits, by up
    #   to N random steps that each lower the violation (a move through a network over a
    #   limit: the way out of a basin a hard cap cuts); drawn again only if that fails
    screen: int | None = Field(None, ge=1)  # proposals drawn per branch; a critic fit on
    #   every result picks the one evaluated (1: no critic; None: 4 when the objective has
    #   no constraint and the policy learns, else 1)
    critic_after: int = Field(16, ge=2)  # networks evaluated before the critic screens
    optimism: float = Field(3.0, ge=0)  # the critic ranks by mean + optimism x its ensemble's std
    embed: int = Field(32, ge=1)  # token / decision embedding width
    encoder_hidden: int = Field(32, ge=1)  # LSTM over the layers (network embedding)
    head_hidden: int = Field(128, ge=1)  # scale and insert LSTM heads
    init_range: float = Field(0.1, gt=0)  # uniform initialisation U[-r, r]


PAPER = {"branches": 8, "episodes": 15, "top_k": 8, "seeds_from": "episode",
         "neighbour_prior": False,
         "prefer_feasible": False, "evaluate_start": False, "explore": 0.0, "lr": 6e-4,
         "prior_lr": 6e-4, "advantage": "reward", "normalize_advantages": False,
         "update_every": "episode", "avoid_repeats": 0, "avoid_infeasible": 0, "repair": 0,
         "screen": 1}


@dataclass(frozen=True)
class Schedule:
    """The schedule a search runs: the options, with the budget-sized values filled in."""

    branches: int
    steps: int
    episodes: int | None  # None: until the study's budget is spent
    top_k: int
    screen: int = 1  # proposals drawn per branch for the critic to rank (1: no critic)

    @classmethod
    def of(cls, options: EPNASOptions, space: Space, context: SearchContext) -> Schedule:
        """Values the options leave open, sized from the trial budget and the workers:
        B is a multiple of the workers near 8 (fewer on budgets under 64 queries, so
        that selection happens often), one step per episode, the best B/2 seed."""
        workers = max(1, context.workers)
        budget = context.trials
        wanted = 8 if budget is None else max(2, min(8, budget // 8))
        branches = options.branches or workers * max(1, round(wanted / workers))
        steps = options.steps or (1 if options.seeds_from == "history"
                                  else space.steps_per_episode)
        top_k = options.top_k or max(1, branches // 2)
        # the critic helps without constraints and traps searches in one basin of a hard
        # cap (docs/epnas.md); with lr=0 nothing learns: the frozen control has no critic
        screen = options.screen or (CRITIC_SCREEN if options.lr > 0
                                    and not context.objective.constraints else 1)
        return cls(branches, steps, options.episodes, top_k, screen)


class Policy(nn.Module):
    """Layer-embedding table -> LSTM over units -> scale and insert LSTM heads."""

    def __init__(self, vocab_size: int, fields: int, decisions: dict[str, int],
                 options: EPNASOptions) -> None:
        super().__init__()
        e, hidden = options.embed, options.head_hidden
        self.fields = fields
        self.names = list(decisions)
        self.tokens = nn.Embedding(vocab_size, e)
        self.encoder = nn.LSTM(e, options.encoder_hidden, batch_first=True)
        width = options.encoder_hidden + e
        self.scale_cell = nn.LSTMCell(width, hidden)
        self.scale_out = nn.Linear(hidden, len(SCALE_CHOICES))
        self.scale_in = nn.Embedding(len(SCALE_CHOICES) + 1, e)  # last row: start token
        self.insert_cell = nn.LSTMCell(width, hidden)
        self.heads = nn.ModuleDict({n: nn.Linear(hidden, k) for n, k in decisions.items()})
        self.choice_in = nn.ModuleDict({n: nn.Embedding(k, e) for n, k in decisions.items()})
        self.name_in = nn.Embedding(len(self.names), e)
        self.start = nn.Parameter(torch.zeros(e))

    def reset_parameters(self, init_range: float, generator: torch.Generator) -> None:
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-init_range, init_range, generator=generator)

    def network_embedding(self, token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """The final LSTM state over each genome's units: [N, encoder_hidden]."""
        units = [max(1, len(t) // self.fields) for t in token_lists]
        padded = torch.zeros(len(token_lists), max(units), self.fields, dtype=torch.long)
        for i, tokens in enumerate(token_lists):
            if tokens:
                padded[i, : units[i]] = torch.tensor(tokens).view(-1, self.fields)
        x = self.tokens(padded).sum(2)  # one embedding per unit: the sum of its fields
        packed = nn.utils.rnn.pack_padded_sequence(x, units, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.encoder(packed)
        return h[-1]


def _masked_log_probs(logits: torch.Tensor, masks: torch.Tensor,
                      priors: torch.Tensor | None = None) -> torch.Tensor:
    """log of softmax(logits) * prior restricted to legal choices, renormalised."""
    if priors is not None:
        logits = logits + priors.clamp_min(1e-12).log()
    return torch.log_softmax(logits.masked_fill(~masks, float("-inf")), dim=-1)


def _entropy(log_probs: torch.Tensor) -> torch.Tensor:
    # zero the masked (-inf) entries first: 0 * -inf would poison the gradient with NaN
    safe = log_probs.masked_fill(~torch.isfinite(log_probs), 0.0)
    return -(safe.exp() * safe).masked_fill(~torch.isfinite(log_probs), 0.0).sum(-1)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the tiny policy ops on one thread: across threads they are several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Novelty:
    """Decision paths from one parent known to lead to a rejected network (a repeat or a
    predicted-infeasible one), so re-sampling draws from the policy *without* them: a path
    is a tuple of choice indices (scale decisions, then insert sub-decisions); a prefix
    whose every legal continuation is dead is dead too, and a dead root means the parent's
    whole neighbourhood is known."""

    def __init__(self, dead: Sequence[Sequence[int]] = ()) -> None:
        self.dead: set[tuple[int, ...]] = {tuple(p) for p in dead}

    def mask(self, prefix: tuple[int, ...], mask: list[bool]) -> list[bool]:
        return [m and (*prefix, i) not in self.dead for i, m in enumerate(mask)]

    def kill(self, record: dict[str, Any]) -> None:
        """Mark the path of ``record`` (a sampled decision record) dead, and every prefix
        left without a live continuation."""
        masks = [m for m, _ in record["scale"]] + [d[1] for d in record["insert"]]
        path = tuple([i for _, i in record["scale"]] + [d[3] for d in record["insert"]])
        self.dead.add(path)
        for depth in range(len(path) - 1, -1, -1):
            prefix = path[:depth]
            if any(self.mask(prefix, masks[depth])):
                break
            self.dead.add(prefix)

    @property
    def exhausted(self) -> bool:
        return () in self.dead


class _Row:
    """One decision sequence: sampled from an action space (avoiding ``novelty``'s dead
    paths), or replayed from a record."""

    def __init__(self, tokens: list[int], record: dict[str, Any] | None = None,
                 actions: ActionSpace | None = None,
                 pick: Callable[[np.ndarray], int] | None = None,
                 novelty: _Novelty | None = None, neighbour_prior: bool = False) -> None:
        self.tokens = tokens
        self.neighbour_prior = neighbour_prior
        self.actions, self.pick = actions, pick
        self.novelty = novelty or _Novelty()
        self.record = record or {"tokens": tokens, "scale": [], "insert": []}
        self.replay = record is not None
        self.chosen: dict[str, Any] = {}
        self.path: tuple[int, ...] = ()
        self.position = 0

    def scale_mask(self, group: int) -> list[bool]:
        if self.replay:
            return self.record["scale"][group][0]
        return self.novelty.mask(self.path, list(self.actions.scale[group].mask))

    def next_decision(self) -> tuple[str, list[bool], list[float] | None, tuple] | None:
        if self.replay:
            if self.position >= len(self.record["insert"]):
                return None
            name, mask, prior, _ = self.record["insert"][self.position]
            return name, mask, prior, ()
        decision: Decision | None = self.actions.next_decision(self.chosen)
        if decision is None:
            return None
        prior = list(decision.prior) if decision.prior is not None else None
        if self.neighbour_prior:
            counts = _leaf_counts(self.actions, self.chosen, decision)
            if counts is not None:
                prior = [(1.0 if prior is None else prior[i]) * n for i, n in enumerate(counts)]
        return decision.name, self.novelty.mask(self.path, list(decision.mask)), prior, \
            decision.choices

    def choose_scale(self, group: int, probs: np.ndarray) -> int:
        if self.replay:
            return self.record["scale"][group][1]
        index = self.pick(probs)
        self.record["scale"].append([self.scale_mask(group), index])
        self.path += (index,)
        return index

    def choose(self, name: str, mask: list[bool], prior: list[float] | None, choices: tuple,
               probs: np.ndarray) -> int:
        if self.replay:
            index = self.record["insert"][self.position][3]
        else:
            index = self.pick(probs)
            self.record["insert"].append([name, mask, prior, index])
            self.chosen[name] = choices[index]
            self.path += (index,)
        self.position += 1
        return index


def _leaf_counts(actions: ActionSpace, chosen: dict[str, Any],
                 decision: Decision) -> list[int] | None:
    """How many complete decision sequences (networks) follow each choice of ``decision``;
    None when the tree below has more than ``LEAF_BUDGET`` nodes (a layerwise insert has
    tens of thousands of parameterisations: weighting by them would drown the other kinds)."""
    budget = LEAF_BUDGET

    def leaves(done: dict[str, Any]) -> int:
        nonlocal budget
        nxt = actions.next_decision(done)
        if nxt is None:
            return 1
        budget -= 1
        if budget < 0:
            raise OverflowError
        return sum(leaves({**done, nxt.name: c}) for c, ok in zip(nxt.choices, nxt.mask) if ok)

    try:
        return [leaves({**chosen, decision.name: c}) if ok else 0
                for c, ok in zip(decision.choices, decision.mask)]
    except OverflowError:
        return None


def run_policy(policy: Policy, rows: list[_Row], groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample or replay every row's decisions; (log-probability, entropy) per row."""
    n = len(rows)
    net = policy.network_embedding([r.tokens for r in rows])
    log_prob = torch.zeros(n)
    entropy = torch.zeros(n)
    hidden = policy.scale_cell.hidden_size
    state = (torch.zeros(n, hidden), torch.zeros(n, hidden))
    previous = torch.full((n,), len(SCALE_CHOICES), dtype=torch.long)
    for group in range(groups):
        state = policy.scale_cell(torch.cat([net, policy.scale_in(previous)], 1), state)
        masks = torch.tensor([r.scale_mask(group) for r in rows])
        lp = _masked_log_probs(policy.scale_out(state[0]), masks)
        probs = lp.detach().exp().double().numpy()
        chosen = [r.choose_scale(group, probs[i]) for i, r in enumerate(rows)]
        previous = torch.tensor(chosen)
        log_prob = log_prob + lp[torch.arange(n), previous]
        entropy = entropy + _entropy(lp)

    state = (torch.zeros(n, hidden), torch.zeros(n, hidden))
    inputs = [policy.start] * n
    name_ids = {name: i for i, name in enumerate(policy.names)}
    active = list(range(n))
    while True:
        pending = {i: d for i in active if (d := rows[i].next_decision()) is not None}
        if not pending:
            break
        active = list(pending)
        names = torch.tensor([name_ids[pending[i][0]] if i in pending else 0 for i in range(n)])
        step_in = torch.stack(inputs) + policy.name_in(names)
        state = policy.insert_cell(torch.cat([net, step_in], 1), state)
        by_name: dict[str, list[int]] = {}
        for i in active:
            by_name.setdefault(pending[i][0], []).append(i)
        for name, members in by_name.items():
            index = torch.tensor(members)
            masks = torch.tensor([pending[i][1] for i in members])
            priors = None
            if any(pending[i][2] is not None for i in members):
                priors = torch.tensor([pending[i][2] or [1.0] * len(pending[i][1])
                                       for i in members])
            lp = _masked_log_probs(policy.heads[name](state[0][index]), masks, priors)
            probs = lp.detach().exp().double().numpy()
            picks = [rows[i].choose(name, *pending[i][1:], probs[j])
                     for j, i in enumerate(members)]
            picked = torch.tensor(picks)
            gathered = lp[torch.arange(len(members)), picked]
            log_prob = log_prob.index_add(0, index, gathered)
            entropy = entropy.index_add(0, index, _entropy(lp))
            embedded = policy.choice_in[name](picked)
            for j, i in enumerate(members):
                inputs[i] = embedded[j]
    return log_prob, entropy


class EPNAS(Strategy):
    """Efficient Progressive NAS: a REINFORCE policy transforming B networks per step."""

    Options = EPNASOptions
    options: EPNASOptions
    # A step's B candidates are fixed when it starts and results act at its end, so a
    # batch may hold the whole step (``ask`` gives no more than what is left of it).
    lookahead = 8
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper's values: B = 8 random large networks, T = 10 / 5 steps, E = 15,
        # the episode's top 8 seed the next, one update per episode, no re-sampling.
        "paper": PAPER,
        # The command line's former default: 48 trainings, small start networks.
        "quick": {"branches": 4, "steps": 3, "episodes": 4, "start_depth": 3},
        # Former NAS-Bench-201 preset: one step per episode from the best 4 ever seen.
        "tabular": {"steps": 1, "top_k": 4, "lr": 5e-3},
    }
    auto_preset = False  # the defaults size themselves from the budget: no preset implied

    def __init__(self, space: Space, seed: int = 0, **options: Any) -> None:
        super().__init__(space, seed, **options)
        o = self.options
        self.groups = len(space.actions(space.sample(np.random.default_rng(0))).scale)
        vocab = {name: len(choices) for name, choices in space.decision_vocabulary().items()}
        self.policy = Policy(space.vocab_size, len(space.token_fields), vocab, o)
        self.policy.reset_parameters(o.init_range, torch.Generator().manual_seed(seed))
        self.optimizer = torch.optim.Adam(self._parameter_groups(), lr=o.lr)
        self.schedule = Schedule.of(o, space, self.context)
        self.episode = 0
        self.step = 0
        self.branches: list[Genome] | None = None  # current network of every branch
        self.parent_rewards: list[float | None] = []  # reward of every branch's network
        self.queue: list[Candidate] = []  # asked-for candidates of this step, not yet handed out
        self.pending: list[dict[str, Any] | None] = []  # per branch: trajectory + result
        self.records: list[dict[str, Any]] = []  # decisions and rewards awaiting an update
        self.episode_results: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []  # best results so far (seeds_from=history)
        self.rewards: dict[str, float] = {}  # reward of every network evaluated, by key
        self.encoded: dict[str, list[int]] = {}  # its tokens (the critic's inputs)
        self.novelty: dict[str, _Novelty] = {}  # rejected decision paths, by parent key
        self.seeds: list[Genome] = []  # start networks of the first episode (start_from)
        self.baseline: float | None = None
        self.starting = False  # the start networks' step is running
        self._stats: list[dict[str, float]] = []

    def _parameter_groups(self) -> list[dict[str, Any]]:
        """The output biases (each decision's prior, independent of the network) learn at
        ``prior_lr``; everything else at ``lr``."""
        o = self.options
        biases = [self.policy.scale_out.bias, *(h.bias for h in self.policy.heads.values())]
        ids = {id(p) for p in biases}
        rest = [p for p in self.policy.parameters() if id(p) not in ids]
        prior_lr = PRIOR_LR_FACTOR * o.lr if o.prior_lr is None else o.prior_lr
        return [{"params": rest, "lr": o.lr}, {"params": biases, "lr": prior_lr}]

    def attach(self, context: SearchContext) -> None:
        super().attach(context)
        if self.episode == 0 and self.step == 0 and self.branches is None:
            self.schedule = Schedule.of(self.options, self.space, context)

    def planned_trials(self) -> tuple[int, str] | None:
        s = self.schedule
        if s.episodes is None:
            return None
        first = 1 if self.options.evaluate_start else 0  # the start networks' own step
        return (s.branches * (s.episodes * s.steps + first),
                f"{s.episodes} episodes x {s.steps} steps x {s.branches} branches")

    extensible = True

    def extend(self, trials: int) -> None:
        """Add whole episodes to a fixed schedule (one the study's budget did not size)
        until it asks at least ``trials`` trials; the next episode starts from the last
        one's top-k, as every episode does."""
        s = self.schedule
        if s.episodes is not None:
            first = s.branches if self.options.evaluate_start else 0
            episodes = -(-(trials - first) // (s.branches * s.steps))
            if episodes > s.episodes:
                self.schedule = replace(s, episodes=episodes)

    # --- ask / tell ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        episodes = self.schedule.episodes
        return episodes is not None and self.episode >= episodes

    def start_from(self, genomes: Sequence[Genome]) -> None:
        self.seeds = self._check_seeds(genomes)

    def ask(self) -> Candidate | None:
        if self.done:
            return None
        if not self.queue and not any(p is not None for p in self.pending):
            self._prepare_step()
        return self.queue.pop(0) if self.queue else None

    def tell(self, candidate: Candidate, result: Result) -> None:
        info = candidate.info
        if (info.get("episode"), info.get("step")) != (self.episode, self.step):
            raise ValueError(f"result for episode {info.get('episode')} step {info.get('step')}"
                             f" told during episode {self.episode} step {self.step}")
        entry = self.pending[info["branch"]]
        if entry is None or entry["genome"]["key"] != candidate.key or "reward" in entry:
            raise ValueError(f"unexpected result for branch {info['branch']}")
        entry["reward"] = float(result.reward if result.reward is not None else result.accuracy)
        entry["feasible"] = bool(result.feasible if result.feasible is not None else result.ok)
        self.rewards[candidate.key] = entry["reward"]
        self.encoded[candidate.key] = self.space.encode(candidate.genome)
        if not self.queue and all(p is None or "reward" in p for p in self.pending):
            self._finish_step()

    # --- the schedule ------------------------------------------------------------------

    def _prepare_step(self) -> None:
        o, b_count = self.options, self.schedule.branches
        if self.branches is None:
            taken: set[str] = set()
            starts = [self.seeds[b % len(self.seeds)] for b in range(b_count)] if self.seeds \
                else [self._start_network(taken) for _ in range(b_count)]
            if o.evaluate_start:  # the start networks are evaluated in a step of their own
                self._queue([(g, None) for g in starts], [None] * b_count,
                            [None] * b_count)
                self.branches = starts
                self.starting = True
                return
            self.branches = starts
            self.parent_rewards = [None] * b_count
        parents: list[Genome | None] = list(self.branches)
        rewards = list(self.parent_rewards)
        for b, parent in enumerate(parents):
            parents[b], rewards[b] = self._live_parent(parent, rewards[b])
        screen = self.schedule.screen if len(self.encoded) >= o.critic_after else 1
        slots = [b for b in range(len(parents)) for _ in range(screen)]
        slot_parents = [parents[b] for b in slots]
        slot_rewards = [rewards[b] for b in slots]
        drawn = self._draw(slot_parents, slot_rewards, slots)
        critic = self._critic(drawn) if screen > 1 else None
        chosen = self._screen(critic, [d and d[0] for d in drawn], slots) if critic \
            else list(range(len(slots)))
        proposals: list[tuple[Genome, dict[str, Any] | None] | None] = [None] * len(parents)
        for i in chosen:
            b = slots[i]
            proposals[b], parents[b], rewards[b] = drawn[i], slot_parents[i], slot_rewards[i]
        taken = {p[0].key for p in proposals if p is not None}
        for b in range(len(proposals)):
            # a branch with no live parent, and a share ``explore`` of the others, start from
            # fresh random networks (these keep the elites from settling in one basin)
            if proposals[b] is None or (o.explore and self.rng.random() < o.explore):
                fresh = [self._start_network(taken) for _ in range(screen)]
                pick = self._screen(critic, fresh, [0] * screen)[0] if critic else 0
                for i, genome in enumerate(fresh):
                    if i != pick:
                        taken.discard(genome.key)
                proposals[b], parents[b], rewards[b] = (fresh[pick], None), None, None
        self._queue(proposals, [None if g is None else g.key for g in parents], rewards)

    def _draw(self, parents: list[Genome | None], rewards: list[float | None],
              groups: list[int]) -> list[tuple[Genome, dict[str, Any]] | None]:
        """One proposal per parent (None for a parent None), re-sampled while it is a repeat
        or predicted infeasible; ``parents`` and ``rewards`` change in place where a parent
        whose neighbourhood is known walks on. A proposal equal to an earlier one of its own
        ``groups`` entry (another draw for the same branch) is dropped, not re-sampled."""
        o = self.options
        tries = max(o.avoid_repeats, o.avoid_infeasible)
        proposals: list[tuple[Genome, dict[str, Any]] | None] = [None] * len(parents)
        live = [i for i, parent in enumerate(parents) if parent is not None]
        for attempt in range(tries + 1):
            for i, proposal in zip(live, self._propose([parents[i] for i in live])):
                proposals[i] = proposal
            if attempt == tries:
                break
            again, twins = self._rejects(proposals, groups)
            again = self._repair_all(proposals, again)
            for i in twins:
                proposals[i], parents[i] = None, None
            live = [i for i in again if parents[i] is not None]
            for i in live:  # draw again from the policy without the rejected path
                self.novelty.setdefault(parents[i].key, _Novelty()).kill(proposals[i][1])
            for i in live:  # (after every kill: branches may share a parent)
                parents[i], rewards[i] = self._live_parent(parents[i], rewards[i])
                if parents[i] is None:
                    proposals[i] = None
            live = [i for i in live if parents[i] is not None]
            if not live:
                break
        return proposals

    def _repair_all(self, proposals: list[tuple[Genome, dict[str, Any]] | None],
                    rejected: list[int]) -> list[int]:
        """Replace each predicted-infeasible proposal of ``rejected`` by its repair (a new
        network inside the limits, reached through it; the policy's decisions stay the
        record); the rejected ones left to draw again."""
        if not self.options.repair:
            return rejected
        proposed = {p[0].key for p in proposals if p is not None}
        left = []
        for i in rejected:
            genome, record = proposals[i]
            fixed = self._repair(genome)
            if fixed is None or fixed.key in self.rewards or fixed.key in proposed:
                left.append(i)
                continue
            proposals[i] = (fixed, record)
            proposed.add(fixed.key)
        return left

    def _repair(self, genome: Genome) -> Genome | None:
        """``genome`` walked by up to ``repair`` random steps, each lowering the total
        violation, until the cost model finds it inside every limit (None if it does not
        get there, or was inside already: a repeat, not a repair)."""
        violation = self._violation(genome)
        if violation == 0:
            return None
        for _ in range(self.options.repair):
            for _ in range(REPAIR_TRIES):
                step = self.space.apply(genome,
                                        self.space.actions(genome).sample_insert(self.rng))
                lower = self._violation(step)
                if lower < violation:
                    genome, violation = step, lower
                    break
            else:
                return None
            if violation == 0:
                return genome
        return None

    def _critic(self, drawn: list[tuple[Genome, dict[str, Any]] | None]
                ) -> Callable[[list[Genome]], np.ndarray]:
        """The reward predictor that screens proposals: an ensemble of small MLPs fit on
        every network evaluated so far."""
        known = [k for k in self.rewards if k in self.encoded]
        rows = [self.encoded[k] for k in known]
        drawn_tokens = {d[0].key: self.space.encode(d[0]) for d in drawn if d is not None}
        longest = max(map(len, [*rows, *drawn_tokens.values()]))
        encoder = Encoder(self.space, positions=longest, counts=True)
        surrogate = Surrogate(seed=int(self.rng.integers(2**31))).fit(
            encoder.tokens(rows), np.array([self.rewards[k] for k in known]))

        def predict(genomes: list[Genome]) -> np.ndarray:
            tokens = [drawn_tokens[g.key] if g.key in drawn_tokens else self.space.encode(g)
                      for g in genomes]
            return surrogate.predict(encoder.tokens(tokens), self.options.optimism)

        return predict

    @staticmethod
    def _screen(critic: Callable[[list[Genome]], np.ndarray], genomes: list[Genome | None],
                groups: list[int]) -> list[int]:
        """Per group (branch), the index of the genome ``critic`` predicts the highest
        reward for."""
        candidates = [i for i, g in enumerate(genomes) if g is not None]
        if not candidates:
            return []
        predicted = dict(zip(candidates, critic([genomes[i] for i in candidates]).tolist()))
        best: dict[int, int] = {}
        for i in candidates:
            if groups[i] not in best or predicted[i] > predicted[best[groups[i]]]:
                best[groups[i]] = i
        return sorted(best.values())

    def _live_parent(self, parent: Genome | None, reward: float | None
                     ) -> tuple[Genome | None, float | None]:
        """``parent``, or, when its whole neighbourhood is known, a known feasible network
        a few random steps away that still has unknown neighbours (None if none is found:
        the branch then starts from a fresh network)."""
        for _ in range(WALK_TRIES):
            if parent is None or parent.key not in self.novelty \
                    or not self.novelty[parent.key].exhausted:
                return parent, reward
            step = self.space.apply(parent, self.space.actions(parent).sample_insert(self.rng))
            if step.key in self.rewards and self._predicted_feasible(step):
                parent, reward = step, self.rewards[step.key]
        return None, None

    def _start_network(self, taken: set[str]) -> Genome:
        """A random network unlike the ``taken`` ones, predicted feasible where re-sampling
        allows."""
        o = self.options
        genome = self.space.sample(self.rng, depth=o.start_depth)
        for _ in range(max(o.avoid_repeats, o.avoid_infeasible)):
            if not self._reason(genome, taken):
                break
            genome = self.space.sample(self.rng, depth=o.start_depth)
        taken.add(genome.key)
        return genome

    def _queue(self, proposals: list[tuple[Genome, dict[str, Any] | None]],
               parents: list[str | None], parent_rewards: list[float | None]) -> None:
        self.pending = []
        for b, (genome, record) in enumerate(proposals):
            info = {"episode": self.episode, "step": self.step, "branch": b}
            if parents[b] is not None:
                info["parent"] = parents[b]
            self.queue.append(Candidate(genome, self.options.fidelity, info))
            self.pending.append({"genome": {"key": genome.key, "json": genome.to_json()},
                                 "record": record, "parent_reward": parent_rewards[b]})

    def _reason(self, genome: Genome, proposed: Collection[str]) -> str | None:
        """Why a proposal should be drawn again (None: it is worth an evaluation)."""
        o = self.options
        if o.avoid_repeats and (genome.key in self.rewards or genome.key in proposed):
            return "repeat"
        if o.avoid_infeasible and not self._predicted_feasible(genome):
            return "infeasible"
        return None

    def _rejects(self, proposals: list[tuple[Genome, Any] | None],
                 groups: list[int]) -> tuple[list[int], list[int]]:
        """(proposals to draw again: repeats of an evaluated network or of another group's
        proposal, or predicted infeasible; proposals equal to an earlier one of their own
        group)."""
        proposed: dict[str, int] = {}
        again, twins = [], []
        for i, proposal in enumerate(proposals):
            if proposal is None:
                continue
            reason = self._reason(proposal[0], proposed.keys())
            if reason == "repeat" and proposed.get(proposal[0].key) == groups[i] \
                    and proposal[0].key not in self.rewards:
                twins.append(i)
            elif reason is not None:
                again.append(i)
            proposed.setdefault(proposal[0].key, groups[i])
        return again, twins

    def _predicted_feasible(self, genome: Genome) -> bool:
        """Whether the analytic costs satisfy every constraint on a metric they give
        (constraints on other metrics, such as latency, are left to the reward)."""
        return self._violation(genome) == 0

    def _violation(self, genome: Genome) -> float:
        """The sum of the relative violations the analytic costs give (0: inside)."""
        objective, costs = self.context.objective, self.context.costs
        if costs is None or not objective.constraints:
            return 0.0
        metrics = costs(genome)
        return sum(c.violation(float(metrics[c.metric]))
                   for c in objective.constraints if c.metric in metrics)

    def _propose(self, parents: list[Genome]) -> list[tuple[Genome, dict[str, Any]]]:
        """Sample one progressive step per parent; (transformed genome, decision record)."""
        rows = [_Row(self.space.encode(parent), actions=self.space.actions(parent),
                     pick=self._pick, novelty=self.novelty.get(parent.key),
                     neighbour_prior=self.options.neighbour_prior) for parent in parents]
        with torch.no_grad(), _one_thread():
            run_policy(self.policy, rows, self.groups)
        out = []
        for parent, row in zip(parents, rows):
            actions = self.space.actions(parent)
            choices = [SCALE_CHOICES[index] for _, index in row.record["scale"]]
            genome = parent
            for action in [*actions.scale_actions(choices), actions.action(row.chosen)]:
                genome = self.space.apply(genome, action)
            out.append((genome, row.record))
        return out

    def _pick(self, probs: np.ndarray) -> int:
        return int(self.rng.choice(len(probs), p=probs / probs.sum()))

    def _finish_step(self) -> None:
        self.parent_rewards = []
        for b, entry in enumerate(self.pending):
            genome = load_genome(entry["genome"]["json"])
            self.branches[b] = genome  # type: ignore[index]
            self.parent_rewards.append(entry["reward"])
            if entry["record"] is not None:
                self.records.append({**entry["record"], "reward": entry["reward"],
                                     "parent_reward": entry["parent_reward"]})
            self.episode_results.append({"key": genome.key, "json": entry["genome"]["json"],
                                         "reward": entry["reward"],
                                         "feasible": entry["feasible"]})
        self.pending = []
        self.step += 1
        if self.options.update_every == "step" and self.records:
            self._update()
        if self.episode == 0 and self.options.evaluate_start and self.starting:
            self.starting = False  # the start networks' own step: select, then episode 0
            self.step = 0
            self._select(self.episode_results)
        elif self.step == self.schedule.steps:
            self._finish_episode()

    def _finish_episode(self) -> None:
        entropy = self._update() if self.records else self._last_entropy
        results = self.episode_results
        rewards = [r["reward"] for r in results]
        self._stats.append({
            "episode": self.episode,
            "models": len(results),
            "mean_reward": float(np.mean(rewards)),
            "max_reward": float(np.max(rewards)),
            "feasible_share": float(np.mean([r["feasible"] for r in results])),
            "entropy": entropy,
        })
        self._select(results)
        self.episode_results = []
        self.episode += 1
        self.step = 0

    def _select(self, results: list[dict[str, Any]]) -> None:
        """The next networks of the branches: the top-k of the history or of ``results``."""
        o, top_k = self.options, self.schedule.top_k
        self.history = _best_unique(self.history + results, top_k, o.prefer_feasible)
        pool = self.history if o.seeds_from == "history" else \
            _best_unique(results, top_k, o.prefer_feasible)
        self.branches = [load_genome(pool[b % len(pool)]["json"])
                         for b in range(self.schedule.branches)]
        self.parent_rewards = [pool[b % len(pool)]["reward"]
                               for b in range(self.schedule.branches)]

    _last_entropy = float("nan")

    def _update(self) -> float:
        """One REINFORCE step over every recorded decision sequence; the mean entropy.

        The advantage is the reward (``advantage="reward"``) or the reward minus the
        parent's (``"transform"``: what the transformation gained), minus a moving
        baseline of the same quantity, divided by its std when ``normalize_advantages``.
        """
        o = self.options
        records, self.records = self.records, []
        rewards = torch.tensor([r["reward"] for r in records])
        if o.advantage == "transform":
            parents = [r.get("parent_reward") for r in records]
            rewards = rewards - torch.tensor([0.0 if p is None else p for p in parents])
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantages = rewards - self.baseline
        if o.normalize_advantages and len(records) > 1:
            advantages = advantages / (advantages.std() + 1e-8)
        rows = [_Row(r["tokens"], record=r) for r in records]
        with _one_thread():
            log_prob, entropy = run_policy(self.policy, rows, self.groups)
            loss = -(advantages * log_prob).mean() - self.options.entropy_weight * entropy.mean()
            if o.lr > 0 or o.prior_lr:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
        decay = self.options.baseline_decay
        self.baseline = decay * self.baseline + (1 - decay) * float(rewards.mean())
        self._last_entropy = float(entropy.detach().mean())
        return self._last_entropy

    # --- reporting and resume ------------------------------------------------------------

    def stats(self) -> list[dict[str, float]]:
        return list(self._stats)

    def state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self._rng_state(),
            "schedule": asdict(self.schedule),
            "episode": self.episode,
            "step": self.step,
            "starting": self.starting,
            "branches": None if self.branches is None else [g.to_json() for g in self.branches],
            "parent_rewards": self.parent_rewards,
            "queue": [c.to_dict() for c in self.queue],
            "pending": self.pending,
            "records": self.records,
            "episode_results": self.episode_results,
            "history": self.history,
            "rewards": self.rewards,
            "encoded": self.encoded,
            "novelty": {k: sorted(n.dead) for k, n in self.novelty.items()},
            "baseline": self.baseline,
            "stats": self._stats,
            "last_entropy": self._last_entropy,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._set_rng_state(state["rng"])
        # the schedule sized at the start stays (a resumed run may have another budget;
        # with episodes sized by the budget it simply goes on)
        self.schedule = Schedule(**state["schedule"])
        self.episode, self.step = state["episode"], state["step"]
        self.starting = state["starting"]
        branches = state["branches"]
        self.branches = None if branches is None else [load_genome(g) for g in branches]
        self.parent_rewards = state["parent_rewards"]
        self.queue = [Candidate.from_dict(c) for c in state["queue"]]
        self.pending = state["pending"]
        self.records = state["records"]
        self.episode_results = state["episode_results"]
        self.history = state["history"]
        self.rewards = dict(state["rewards"])
        self.encoded = dict(state.get("encoded", {}))
        self.novelty = {k: _Novelty(dead) for k, dead in state.get("novelty", {}).items()}
        self.baseline = state["baseline"]
        self._stats = state["stats"]
        self._last_entropy = state["last_entropy"]


def _best_unique(results: list[dict[str, Any]], k: int,
                 feasible_first: bool) -> list[dict[str, Any]]:
    """The ``k`` best results by reward (feasible ones first if asked), one per genome key
    (stable on ties)."""
    best: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["key"] not in best or r["reward"] > best[r["key"]]["reward"]:
            best[r["key"]] = r

    def rank(r: dict[str, Any]) -> tuple[bool, float]:
        return (feasible_first and not r["feasible"], -r["reward"])

    return sorted(best.values(), key=rank)[:k]
