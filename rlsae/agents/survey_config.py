"""The live-feature survey's settings (:class:`SurveyConfig`), readable without torch so the CLI
can take its options' defaults and help from the fields and refuse a bad value at once. The
survey itself is :mod:`rlsae.agents.survey`."""

from __future__ import annotations

from dataclasses import dataclass

from rlsae.agents.config import DTYPES, check_choice, check_int
from rlsae.configs import check_range
from rlsae.errors import RlsaeError

POSTER_SKIP_STEPS = 66
"""Steps of start-of-game music at the start of every Ms. Pac-Man episode (the poster skips
them: Ms. Pac-Man cannot move, so every agent's activations there are the same)."""


@dataclass
class SurveyConfig:
    """The live-feature survey (defaults: the poster's protocol, except the episode count)."""

    layer: str = "fc1"
    """Layer surveyed (the poster: fc1, after its ReLU)."""
    episodes: int = 100
    """Whole episodes played (the poster: 2,500)."""
    epsilon: float = 0.2
    """Probability of a random action (the poster: 0.2)."""
    sticky_actions: float = 0.0
    """Sticky-action probability while surveying (the poster: 0, off)."""
    skip_first_steps: int = POSTER_SKIP_STEPS
    """Steps at the start of every episode not recorded (the poster: 66, the intro music)."""
    seed: int = 0
    """Seeds the episodes and the epsilon draws."""
    n_envs: int = 8
    """Emulators played side by side."""
    max_episode_steps: int | None = None
    """Cut episodes at this many steps (None: whole games, as the poster)."""
    dtype: str = "float32"
    """Activation dtype in the store."""

    def validate(self, where: str = "survey") -> None:
        if not isinstance(self.layer, str) or not self.layer:
            raise RlsaeError(f"{where}: layer: expected a layer name, got {self.layer!r}")
        check_int(where, "episodes", self.episodes, 1)
        check_range(where, "epsilon", self.epsilon, 0.0, 1.0)
        check_range(where, "sticky_actions", self.sticky_actions, 0.0, 1.0)
        check_int(where, "skip_first_steps", self.skip_first_steps, 0)
        check_int(where, "seed", self.seed, 0)
        check_int(where, "n_envs", self.n_envs, 1, 1024)
        check_choice(where, "dtype", self.dtype, DTYPES)
        if self.max_episode_steps is not None:
            check_int(where, "max_episode_steps", self.max_episode_steps, 1)
            if self.max_episode_steps <= self.skip_first_steps:
                raise RlsaeError(
                    f"{where}: max_episode_steps ({self.max_episode_steps}) must exceed "
                    f"skip_first_steps ({self.skip_first_steps}), or nothing is surveyed"
                )


__all__ = ["POSTER_SKIP_STEPS", "SurveyConfig"]
