"""The typed results the Atari part writes or returns across a seam.

Each is an :class:`rlsae.artifacts.Artifact`: its writer and every reader (the CLI's ``--json``,
the study, the viewer) use the same dataclass, and a file of another kind or version is refused
in one line.

==================  =====================  ==================================================
class               format                 written as
==================  =====================  ==================================================
:class:`AgentInfo`  ``rlsae.dqn_agent``    ``AGENT/agent.json`` (marks a finished agent;
                                           ``source``: :class:`ImportSource` if imported)
:class:`Evaluation` ``rlsae.dqn_eval``     ``AGENT/eval.json``, ``dqn eval --json``
:class:`SpliceResult` ``rlsae.dqn_splice`` ``dqn splice --json``, the study's splice stage
:class:`SteerResult` ``rlsae.dqn_steer``   ``dqn steer --json``
:class:`SaliencyResult` ``rlsae.dqn_saliency`` ``dqn saliency --json``
:class:`AblationSweep` ``rlsae.dqn_ablation_sweep`` the Atari study's ``ablation`` stage
:class:`EpisodeLog` ``rlsae.atari_episodes`` ``STORE/episodes.json`` (replays a recording)
==================  =====================  ==================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from rlsae.agents.config import ARCHS, DQNConfig, EnvConfig, RecordConfig, check_choice
from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError


@dataclass
class ImportSource:
    """The file an agent was imported from (``dqn import``) and what was done to it."""

    file: str
    """The imported file's name (no directory)."""
    sha256: str
    """Its SHA-256 (hex)."""
    format: str
    """``torch-module-pickle``, ``torch-state-dict``, ``safetensors``, ``sb3-zip`` or
    ``sb3-qrdqn-zip``."""
    key_names: str
    """Whose parameter names it used: ``poster`` (``conv1.weight`` ...) or ``rlsae``."""
    conversion: list[str] = field(default_factory=list)
    """Each change made to its weights, in words (e.g. the 0-255 input scale folded into conv1)."""
    module_class: str | None = None
    """The pickled module's class (``__main__.AtariQnet``), for a whole-module pickle."""
    max_rel_error: float | None = None
    """Largest |dQ| / max |Q| between the file's network and the imported agent on a check
    batch of frames, measured at import."""
    notes: list[str] = field(default_factory=list)
    """What the agent's environment is taken to be and why (env id semantics, wrapper
    settings the file does not store)."""


@dataclass
class AgentInfo(Artifact):
    """What an agent directory holds (``agent.json``; written last, so it marks completion)."""

    FORMAT: ClassVar[str] = "rlsae.dqn_agent"
    VERSION: ClassVar[int] = 1

    arch: str
    """``nature`` or ``poster``."""
    seed: int
    """Seed of the training run."""
    steps_trained: int
    """Environment steps the agent was trained for."""
    n_envs: int
    """Emulators stepped side by side during training."""
    hyperparameters: DQNConfig
    """The SB3 ``DQN`` hyperparameters it was trained with."""
    env: EnvConfig
    """The environment it was trained on."""
    env_id: str = "ALE/MsPacman-v5"
    """The gymnasium id whose settings the environment follows."""
    source: ImportSource | None = None
    """Where an imported agent came from (None: trained by rlsae; then the fields above are
    its training run's; for an imported agent ``hyperparameters`` are the arch's defaults)."""

    def validate(self, where: str = "agent.json") -> None:
        check_choice(where, "arch", self.arch, ARCHS)
        if self.env.mode != self.arch:
            raise RlsaeError(
                f"{where}: env.mode: {self.env.mode!r} does not match arch {self.arch!r}; "
                "the agent directory is inconsistent"
            )


@dataclass
class Evaluation(Artifact):
    """Mean game score of an agent over seeded episodes (raw points, no clipping or scaling)."""

    FORMAT: ClassVar[str] = "rlsae.dqn_eval"
    VERSION: ClassVar[int] = 1

    agent: str
    """The agent directory."""
    arch: str
    """``nature`` or ``poster``."""
    steps_trained: int | None
    """Environment steps the agent was trained for (None: unknown)."""
    episodes: int
    """Episodes played."""
    epsilon: float
    """Probability of a random action."""
    seed: int
    """Seed of the episodes and the epsilon draws."""
    mean_return: float
    """Mean raw return over the episodes."""
    std_return: float
    """Population standard deviation of the returns."""
    min_return: float
    """Lowest return."""
    max_return: float
    """Highest return."""
    median_return: float
    """Median return."""
    human_normalized: float | None
    """(mean - random) / (human - random), DQN-Zoo's constants of the game (Ms. Pac-Man: 307.3
    and 6951.6; None for a game without them)."""
    mean_length: float
    """Mean episode length in agent steps."""
    returns: list[float] = field(default_factory=list)
    """Each episode's return, in episode order."""
    lengths: list[int] = field(default_factory=list)
    """Each episode's length in agent steps."""
    return_ci_low: float | None = None
    """Lower end of the 95% percentile bootstrap interval of the mean return (episodes
    resampled; None in files written before it was recorded)."""
    return_ci_high: float | None = None
    """Upper end of that interval."""
    bootstrap: int | None = None
    """Bootstrap resamples of the interval."""


@dataclass
class SpliceResult(Artifact):
    """An SAE spliced into an agent: returns, greedy-action agreement and Q-value FVU."""

    FORMAT: ClassVar[str] = "rlsae.dqn_splice"
    VERSION: ClassVar[int] = 1

    agent: str
    """The agent directory."""
    sae: str
    """The SAE directory ("" for an SAE given as an object)."""
    layer: str
    """The layer the SAE's reconstruction replaced."""
    episodes: int
    """Episodes per variant."""
    seed: int
    """Seed of the episodes."""
    epsilon: float
    """Probability of a random action."""
    return_original: float
    """Mean return of the original agent."""
    return_sae: float
    """Mean return with the SAE's reconstruction in place of the layer."""
    return_ablated: float
    """Mean return with the layer replaced by its mean activation."""
    return_recovered: float | None
    """(R_sae - R_ablated) / (R_orig - R_ablated); None when R_orig equals R_ablated."""
    action_agreement: float
    """Fraction of the original agent's states where the spliced greedy action agrees."""
    action_agreement_spliced: float
    """The same on the states the spliced agent visits itself."""
    q_fvu: float | None
    """Fraction of Q-value variance unexplained; None when the Q-values do not vary."""
    states: int
    """States of the original agent's episodes."""
    returns_original: list[float] = field(default_factory=list)
    """Each episode's return, original agent."""
    returns_sae: list[float] = field(default_factory=list)
    """Each episode's return, spliced agent."""
    returns_ablated: list[float] = field(default_factory=list)
    """Each episode's return, mean-ablated agent."""
    prefix: int | None = None
    """The SAE's first ``prefix`` latents only were spliced in (None: all of them)."""


@dataclass
class RecordedEpisode:
    """One recorded episode: enough to replay it in the emulator."""

    episode: int
    """Episode index within the recording."""
    seed: int
    """The emulator seed it was reset with."""
    actions: list[int] = field(default_factory=list)
    """The actions taken, in order."""
    complete: bool = False
    """True when the recording saw the episode end (game over, truncation or the step cap)."""
    score: float = 0.0
    """Raw game score over the recorded steps (the episode's return so far)."""
    noops: int | None = None
    """The one-frame no-ops its reset played (the vector env draws them in nature mode; 0 in
    poster mode). None in logs written before it was kept: :func:`rlsae.agents.ram.drawn_noops`
    draws them again from the seed."""


@dataclass
class SteerResult(Artifact):
    """SAE features steered or ablated in play, against the spliced agent on the same seeds.

    The action-distribution figures compare the two networks' greedy actions on the same states
    (every state of the spliced agent's episodes, and those where any of the features fires):
    ``P`` the spliced network's action histogram, ``Q`` the steered one's; KL(P || Q) with half a
    count added to each action (so it is finite).
    """

    FORMAT: ClassVar[str] = "rlsae.dqn_steer"
    VERSION: ClassVar[int] = 1

    agent: str
    """The agent directory."""
    sae: str
    """The SAE directory ("" for an SAE given as an object)."""
    layer: str
    """The layer the SAE's reconstruction replaced."""
    features: list[int]
    """The features set."""
    scale: float | None
    """Each feature set to scale x its maximum (x its own value with ``relative``); None: ablated."""
    relative: bool
    """True: the scale multiplied each feature's own activation in each state."""
    values: list[float | None]
    """The value each feature was set to (None with ``relative``: it varies by state)."""
    feature_max: list[float | None]
    """Each feature's maximum over the recorded store (None: not known, not needed)."""
    episodes: int
    """Episodes per variant."""
    seed: int
    """Seed of the episodes."""
    epsilon: float
    """Probability of a random action."""
    return_spliced: float
    """Mean return of the spliced agent (no intervention)."""
    return_steered: float
    """Mean return of the steered agent."""
    delta_return: float
    """return_steered - return_spliced."""
    delta_return_ci: list[float]
    """95% bootstrap interval [low, high] of delta_return (paired by episode seed)."""
    states: int
    """States of the spliced agent's episodes."""
    states_firing: int
    """Those where any of the features fires."""
    greedy_changed: float
    """Fraction of the states where the steered network's greedy action differs."""
    greedy_changed_firing: float | None
    """The same over the states where a feature fires (None: none)."""
    changed_states: int
    """States where the greedy action differs."""
    changed_states_firing: int
    """Of those, states where a feature fires."""
    action_tv: float
    """Total variation between the two greedy-action histograms over all states."""
    action_kl: float
    """KL(spliced || steered) of the histograms over all states (nats)."""
    action_tv_firing: float | None
    """Total variation over the states where a feature fires (None: none)."""
    action_kl_firing: float | None
    """KL over the states where a feature fires (None: none)."""
    returns_spliced: list[float] = field(default_factory=list)
    """Each episode's return, spliced agent."""
    returns_steered: list[float] = field(default_factory=list)
    """Each episode's return, steered agent."""
    episodes_spliced: list[RecordedEpisode] = field(default_factory=list)
    """The spliced agent's episodes (seed and actions: replayable)."""
    episodes_steered: list[RecordedEpisode] = field(default_factory=list)
    """The steered agent's episodes (seed and actions: replayable)."""


@dataclass
class ChangedState:
    """The state where an ablation changed the greedy action most (of the spliced agent's)."""

    episode: int
    """Episode of the sweep (its seed and actions are in ``AblationSweep.episodes_spliced``)."""
    step: int
    """Step within the episode."""
    action_spliced: int
    """The spliced network's greedy action there."""
    action_ablated: int
    """The ablated network's greedy action there."""
    q_gap: float
    """How far the ablation moved the preference between the two actions: the spliced
    network's Q margin of its action over the ablated one's, plus the ablated network's margin
    of its action over the spliced one's."""


@dataclass
class AblationRow:
    """One feature of an ablation sweep: the agent with that feature set to zero."""

    feature: int
    """The feature ablated."""
    delta_return: float
    """Ablated - spliced mean return."""
    delta_return_ci: list[float]
    """95% bootstrap interval [low, high] (paired by episode seed)."""
    greedy_changed: float
    """Fraction of the spliced agent's states where the greedy action changes."""
    greedy_changed_firing: float | None
    """The same over the states where the feature fires (None: none)."""
    action_tv: float
    """Total variation between the greedy-action histograms on the spliced agent's states."""
    states_firing: int
    """Spliced-agent states where the feature fires."""
    returns: list[float] = field(default_factory=list)
    """Each episode's return with the feature ablated."""
    most_changed: ChangedState | None = None
    """The state where the greedy action changed most (None: it never changed)."""


@dataclass
class AblationSweep(Artifact):
    """Every live feature ablated in turn, ranked by |delta_return| (largest first)."""

    FORMAT: ClassVar[str] = "rlsae.dqn_ablation_sweep"
    VERSION: ClassVar[int] = 1

    agent: str
    """The agent directory."""
    sae: str
    """The SAE directory."""
    layer: str
    """The layer the SAE's reconstruction replaced."""
    episodes: int
    """Episodes per variant."""
    seed: int
    """Seed of the episodes."""
    epsilon: float
    """Probability of a random action."""
    return_spliced: float
    """Mean return of the spliced agent (no intervention)."""
    states: int
    """States of the spliced agent's episodes."""
    seconds: float
    """Wall time of the sweep."""
    features_per_minute: float
    """Features ablated per minute of wall time."""
    returns_spliced: list[float] = field(default_factory=list)
    """Each episode's return, spliced agent."""
    rows: list[AblationRow] = field(default_factory=list)
    """One per feature swept, largest |delta_return| first."""
    episodes_spliced: list[RecordedEpisode] = field(default_factory=list)
    """The spliced agent's episodes (seed and actions: replayable)."""


@dataclass
class SaliencyResult(Artifact):
    """Where in the frame a feature looks on one recorded state (``dqn saliency``)."""

    FORMAT: ClassVar[str] = "rlsae.dqn_saliency"
    VERSION: ClassVar[int] = 1

    agent: str
    """The agent directory."""
    sae: str
    """The SAE directory."""
    layer: str
    """The layer the SAE reads."""
    feature: int
    """The feature."""
    episode: int
    """The recorded episode."""
    step: int
    """The step within it."""
    method: str
    """``ig`` or ``gxi``."""
    baseline: str | None
    """``black`` or ``mean`` (integrated gradients); None for ``gxi``."""
    steps: int | None
    """Integrated gradients' path points; None for ``gxi``."""
    activation: float
    """The feature's activation on the state."""
    baseline_activation: float | None
    """Its activation on the baseline frame (integrated gradients)."""
    attribution_sum: float
    """Sum of the attributions over every input pixel."""
    completeness_error: float | None
    """|attribution_sum - (activation - baseline_activation)| (integrated gradients)."""
    out: str
    """The PNG written (the heat map over the replayed RGB frame)."""


@dataclass
class EpisodeLog(Artifact):
    """``episodes.json`` of an Atari activation store: the env and each episode's seed and actions."""

    FORMAT: ClassVar[str] = "rlsae.atari_episodes"
    VERSION: ClassVar[int] = 1

    env: EnvConfig
    """The environment the agent played in."""
    ale: dict[str, object]
    """The exact ``ale_py.vector_env.AtariVectorEnv`` settings (``game`` included)."""
    config: RecordConfig
    """The recording's settings."""
    episodes: list[RecordedEpisode] = field(default_factory=list)
    """The recorded episodes, in episode order."""

    def episode(self, index: int) -> RecordedEpisode:
        """The recorded episode ``index`` (one-line error naming the range when absent)."""
        for e in self.episodes:
            if e.episode == int(index):
                return e
        ids = [e.episode for e in self.episodes]
        have = f"episodes {min(ids)}..{max(ids)}" if ids else "no episodes"
        raise RlsaeError(f"episode {index} not in the recording ({have})")


def read_episodes(store_dir: str | os.PathLike) -> EpisodeLog:
    """The :class:`EpisodeLog` (``episodes.json``) of an Atari activation store."""
    path = Path(store_dir) / "episodes.json"
    if not path.is_file():
        raise RlsaeError(f"{path} not found; replay needs a store written by `rlsae dqn record`")
    return EpisodeLog.read(path)
