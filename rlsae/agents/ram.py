"""Ms. Pac-Man's object-centric state decoded from the Atari 2600's 128 bytes of RAM.

``ale.getRAM()`` (ale-py's ``ALEInterface``) returns the console's RAM, addresses 0x80-0xFF,
as 128 bytes; index ``i`` below is address ``0x80 + i``. The addresses are published facts,
read from (and cited per address in :data:`MSPACMAN_RAM`):

- AtariARI, Anand et al. 2019, "Unsupervised State Representation Learning in Atari",
  ``mila-iqia/atari-representation-learning``, ``atariari/benchmark/ram_annotations.py``,
  entry ``"mspacman"``;
- OCAtari, Delfosse et al. 2023, "OCAtari: Object-Centric Atari 2600 Reinforcement Learning
  Environments", ``k4ntz/OC_Atari``, ``ocatari/ram/mspacman.py`` (the 2025 version, and the
  2023 version for the ghosts' edible bytes);
- the Arcade Learning Environment's own reward and lives code,
  ``Farama-Foundation/Arcade-Learning-Environment``, ``src/ale/games/supported/MsPacman.cpp``.

Neither the OCAtari package (it pins numpy < 2) nor its code is used. Two readings come from
this project's own frame check (``tests/agents/test_ram.py``), said so where they are used:
the edible flag is bit 7 of the ghost's state byte (OCAtari 2023 thresholded the same bytes at
124-140), and an eaten ghost whose eyes travel back to the house has that byte's high bits
``(byte & 0xD0) == 0x40`` (high nibble 4 or 6; its sprite shrinks from ~56 to <= 16 pixels).

Coordinates: RAM x/y are sprite positions in the game's own units. :func:`decode_ram` turns
them into screen pixels of the sprite's centre, ``(x + PIXEL_OFFSET_X, y + PIXEL_OFFSET_Y)``
on the 210x160 frame. The offsets were fitted on rendered frames (the centre of Ms. Pac-Man's
bounding box of colour (210, 164, 74) minus the RAM value; median over three seeded episodes,
every frame within 1 px) and agree with OCAtari's box, whose top-left corner is
``(x - 13, y + 1)`` for a 9x10 sprite.

Only Ms. Pac-Man has a table (:data:`GAMES_WITH_RAM_TABLE`); :func:`ram_decoder` refuses any
other game in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlsae.agents.results import EpisodeLog, read_episodes
from rlsae.errors import RlsaeError

GAME = "ms_pacman"
GAMES_WITH_RAM_TABLE: tuple[str, ...] = (GAME,)
"""The ALE games (ale-py ROM names) whose RAM this module can decode."""

PIXEL_OFFSET_X = -8.5
"""Screen x of a sprite's centre minus its RAM x (fitted on frames; see the module doc)."""
PIXEL_OFFSET_Y = 5.5
"""Screen y of a sprite's centre minus its RAM y (fitted on frames; see the module doc)."""

GHOSTS: tuple[str, ...] = ("orange", "cyan", "pink", "red")
"""Ghost order of every per-ghost array: AtariARI's sue, inky, pinky, blinky."""

DIRECTIONS: tuple[str, ...] = ("up", "right", "down", "left")
"""Ms. Pac-Man's heading, indexed by ``ram[56] & 3`` (OCAtari)."""

POWER_PILL_BITS: tuple[int, ...] = (2, 3, 4, 5)
"""Bits of ``ram[117]`` that mark a power pill still in the maze (OCAtari)."""

POWER_PILL_XY: tuple[tuple[float, float], ...] = ((150.0, 149.5), (150.0, 17.5),
                                                  (10.0, 150.5), (10.0, 18.5))  # fmt: skip
"""Screen centres of the four power pills, in :data:`POWER_PILL_BITS` order: OCAtari's 4x7
boxes at (148, 146), (148, 14), (8, 147), (8, 15) plus half their size (bottom-right,
top-right, bottom-left, top-left)."""

_AA = "mila-iqia/atari-representation-learning atariari/benchmark/ram_annotations.py"
_OC = "k4ntz/OC_Atari ocatari/ram/mspacman.py"
_ALE = "Farama-Foundation/Arcade-Learning-Environment src/ale/games/supported/MsPacman.cpp"
_OWN = "tests/agents/test_ram.py (frame check)"


@dataclass(frozen=True)
class RamAddress:
    """One documented RAM address (index into ``ale.getRAM()``)."""

    index: int
    """Index in the 128-byte RAM (address ``0x80 + index``)."""
    name: str
    """What it holds."""
    sources: str
    """Where it is published (repository and path), ``;``-separated."""


MSPACMAN_RAM: tuple[RamAddress, ...] = (
    RamAddress(0, "level / maze index 0-3", _OC),
    RamAddress(1, "orange ghost state: bit 7 edible; & 0xD0 == 0x40 eyes only",
               f"{_OC} (2023, enemy_eatable); bits: {_OWN}"),
    RamAddress(2, "cyan ghost state (as ram[1])", f"{_OC} (2023); bits: {_OWN}"),
    RamAddress(3, "pink ghost state (as ram[1])", f"{_OC} (2023); bits: {_OWN}"),
    RamAddress(4, "red ghost state (as ram[1])", f"{_OC} (2023); bits: {_OWN}"),
    RamAddress(6, "orange ghost x (enemy_sue_x)", f"{_AA}; {_OC}"),
    RamAddress(7, "cyan ghost x (enemy_inky_x)", f"{_AA}; {_OC}"),
    RamAddress(8, "pink ghost x (enemy_pinky_x)", f"{_AA}; {_OC}"),
    RamAddress(9, "red ghost x (enemy_blinky_x)", f"{_AA}; {_OC}"),
    RamAddress(10, "player x", f"{_AA}; {_OC}"),
    RamAddress(11, "fruit x (0 when no fruit)", f"{_AA}; {_OC}"),
    RamAddress(12, "orange ghost y (enemy_sue_y)", f"{_AA}; {_OC}"),
    RamAddress(13, "cyan ghost y (enemy_inky_y)", f"{_AA}; {_OC}"),
    RamAddress(14, "pink ghost y (enemy_pinky_y)", f"{_AA}; {_OC}"),
    RamAddress(15, "red ghost y (enemy_blinky_y)", f"{_AA}; {_OC}"),
    RamAddress(16, "player y", f"{_AA}; {_OC}"),
    RamAddress(17, "fruit y (0 when no fruit)", f"{_AA}; {_OC}"),
    RamAddress(19, "ghosts count (ghosts_count / enemy_amount)", f"{_AA}; {_OC}"),
    RamAddress(56, "player direction, & 3: 0 up, 1 right, 2 down, 3 left", f"{_AA}; {_OC}"),
    RamAddress(59, "dot bitmap, 42 bytes ram[59:101]; a set bit is a dot left", _OC),
    RamAddress(117, "power pills left, bits 2-5", _OC),
    RamAddress(119, "dots eaten (dots_eaten_count / pac-dots_collected)", f"{_AA}; {_OC}"),
    RamAddress(120, "score, BCD, ram[120:123] low to high", f"{_AA} (player_score); {_ALE}; {_OC}"),
    RamAddress(123, "spare lives in bits 0-2 (lives = that + 1); fruit kind in bits 4-6",
               f"{_AA} (num_lives); {_ALE}; {_OC}"),
)  # fmt: skip
"""The Ms. Pac-Man RAM table (every address :func:`decode_ram_batch` reads)."""

# The addresses as constants, each with its source (repository and path above):
_STATE = 1  # ram[1:5] ghost state bytes: OCAtari 2023 (k4ntz/OC_Atari ocatari/ram/mspacman.py)
_GHOST_X = 6  # ram[6:10]: AtariARI ram_annotations.py mspacman enemy_*_x; OCAtari ram[6..9]
_PLAYER_X = 10  # AtariARI player_x=10; OCAtari player ram[10]
_FRUIT_X = 11  # AtariARI fruit_x=11; OCAtari fruit ram[11]
_GHOST_Y = 12  # ram[12:16]: AtariARI enemy_*_y; OCAtari ram[12..15]
_PLAYER_Y = 16  # AtariARI player_y=16; OCAtari ram[16]
_FRUIT_Y = 17  # AtariARI fruit_y=17; OCAtari ram[17]
_GHOST_COUNT = 19  # AtariARI ghosts_count=19; OCAtari enemy_amount ram[19]
_DIRECTION = 56  # AtariARI player_direction=56; OCAtari orientation ram[56] & 3
_DOTS = slice(59, 101)  # OCAtari: pill grid, 14 rows x 3 bytes from ram[59]
_POWER_PILLS = 117  # OCAtari: ram[117] & 4, 8, 16, 32
_DOTS_EATEN = 119  # AtariARI dots_eaten_count=119; OCAtari pac-dots_collected ram[119]
_SCORE = 120  # AtariARI player_score=120; ALE getDecimalScore(0xF8, 0xF9, 0xFA); OCAtari
_LIVES = 123  # AtariARI num_lives=123; ALE lives = (ram[0xFB] & 7) + 1; OCAtari ram[123]
_LEVEL = 0  # OCAtari: ram[0], "a total of 4 levels 0-3" (the maze)


@dataclass(frozen=True)
class MsPacmanState:
    """Ms. Pac-Man's game state at one step (positions in screen pixels, sprite centres)."""

    player_x: float
    """Ms. Pac-Man's centre, screen x (0-159)."""
    player_y: float
    """Ms. Pac-Man's centre, screen y (0-209; the maze is rows 0-171)."""
    player_direction: int
    """Heading: 0 up, 1 right, 2 down, 3 left (:data:`DIRECTIONS`)."""
    ghost_x: tuple[float, float, float, float]
    """Each ghost's centre x, in :data:`GHOSTS` order."""
    ghost_y: tuple[float, float, float, float]
    """Each ghost's centre y."""
    ghost_edible: tuple[bool, bool, bool, bool]
    """The ghost is frightened (blue) and can be eaten."""
    ghost_eyes: tuple[bool, bool, bool, bool]
    """The ghost was eaten: only its eyes show, travelling back to the house."""
    ghosts_count: int
    """AtariARI's ghosts_count (``ram[19]``)."""
    power_pills: tuple[bool, bool, bool, bool]
    """Which power pills are left, in :data:`POWER_PILL_XY` order."""
    dots_left: int
    """Dots still in the maze (set bits of the dot bitmap)."""
    dots_eaten: int
    """Dots eaten in this maze (the game's counter)."""
    lives: int
    """Lives including the one being played (ALE's count)."""
    fruit_present: bool
    """A fruit is on the board."""
    fruit_x: float
    """The fruit's centre x (meaningless without ``fruit_present``)."""
    fruit_y: float
    """The fruit's centre y."""
    level: int
    """Level / maze index 0-3."""
    score: int
    """The game score (decoded from BCD)."""

    @property
    def power_pills_left(self) -> int:
        return sum(self.power_pills)


@dataclass(frozen=True)
class MsPacmanStates:
    """Decoded states of many steps as arrays (row ``i`` = step ``i``)."""

    player_x: np.ndarray
    """(n,) float32 screen x of Ms. Pac-Man's centre."""
    player_y: np.ndarray
    """(n,) float32 screen y."""
    player_direction: np.ndarray
    """(n,) int8, 0 up, 1 right, 2 down, 3 left."""
    ghost_x: np.ndarray
    """(n, 4) float32, :data:`GHOSTS` order."""
    ghost_y: np.ndarray
    """(n, 4) float32."""
    ghost_edible: np.ndarray
    """(n, 4) bool."""
    ghost_eyes: np.ndarray
    """(n, 4) bool."""
    ghosts_count: np.ndarray
    """(n,) int16."""
    power_pills: np.ndarray
    """(n, 4) bool, :data:`POWER_PILL_XY` order."""
    dots_left: np.ndarray
    """(n,) int16."""
    dots_eaten: np.ndarray
    """(n,) int16."""
    lives: np.ndarray
    """(n,) int8."""
    fruit_present: np.ndarray
    """(n,) bool."""
    fruit_x: np.ndarray
    """(n,) float32."""
    fruit_y: np.ndarray
    """(n,) float32."""
    level: np.ndarray
    """(n,) int8."""
    score: np.ndarray
    """(n,) int64."""

    def __len__(self) -> int:
        return int(self.player_x.shape[0])

    @property
    def power_pills_left(self) -> np.ndarray:
        """(n,) int16 number of power pills left."""
        return self.power_pills.sum(axis=1).astype(np.int16)

    def step(self, i: int) -> MsPacmanState:
        """The state of row ``i``."""

        def four(a: np.ndarray, kind: type) -> tuple:
            return tuple(kind(v) for v in a[i])

        return MsPacmanState(
            player_x=float(self.player_x[i]),
            player_y=float(self.player_y[i]),
            player_direction=int(self.player_direction[i]),
            ghost_x=four(self.ghost_x, float),
            ghost_y=four(self.ghost_y, float),
            ghost_edible=four(self.ghost_edible, bool),
            ghost_eyes=four(self.ghost_eyes, bool),
            ghosts_count=int(self.ghosts_count[i]),
            power_pills=four(self.power_pills, bool),
            dots_left=int(self.dots_left[i]),
            dots_eaten=int(self.dots_eaten[i]),
            lives=int(self.lives[i]),
            fruit_present=bool(self.fruit_present[i]),
            fruit_x=float(self.fruit_x[i]),
            fruit_y=float(self.fruit_y[i]),
            level=int(self.level[i]),
            score=int(self.score[i]),
        )


def _bcd(byte: np.ndarray) -> np.ndarray:
    b = byte.astype(np.int64)
    return (b >> 4) * 10 + (b & 0x0F)


def decode_ram_batch(ram: np.ndarray) -> MsPacmanStates:
    """Decode RAM rows ``(n, 128)`` (uint8) into :class:`MsPacmanStates` (vectorised)."""
    r = np.asarray(ram)
    if r.ndim != 2 or r.shape[1] != 128:
        raise RlsaeError(f"expected RAM rows of shape (n, 128), got {r.shape}")
    if r.dtype != np.uint8:
        if r.size and (r.min() < 0 or r.max() > 255):
            raise RlsaeError("RAM values must be bytes (0-255)")
        r = r.astype(np.uint8)
    ri = r.astype(np.int16)
    state = ri[:, _STATE : _STATE + 4]
    fruit_present = (ri[:, _FRUIT_X] > 0) & (ri[:, _FRUIT_Y] > 0)  # OCAtari's test
    pills = np.stack([(ri[:, _POWER_PILLS] >> b) & 1 for b in POWER_PILL_BITS], axis=1)
    return MsPacmanStates(
        player_x=(ri[:, _PLAYER_X] + PIXEL_OFFSET_X).astype(np.float32),
        player_y=(ri[:, _PLAYER_Y] + PIXEL_OFFSET_Y).astype(np.float32),
        player_direction=(ri[:, _DIRECTION] & 3).astype(np.int8),
        ghost_x=(ri[:, _GHOST_X : _GHOST_X + 4] + PIXEL_OFFSET_X).astype(np.float32),
        ghost_y=(ri[:, _GHOST_Y : _GHOST_Y + 4] + PIXEL_OFFSET_Y).astype(np.float32),
        ghost_edible=(state & 0x80) > 0,
        ghost_eyes=(state & 0xD0) == 0x40,
        ghosts_count=ri[:, _GHOST_COUNT].copy(),
        power_pills=pills.astype(bool),
        dots_left=np.unpackbits(r[:, _DOTS], axis=1).sum(axis=1).astype(np.int16),
        dots_eaten=ri[:, _DOTS_EATEN].copy(),
        lives=((ri[:, _LIVES] & 7) + 1).astype(np.int8),
        fruit_present=fruit_present,
        fruit_x=(ri[:, _FRUIT_X] + PIXEL_OFFSET_X).astype(np.float32),
        fruit_y=(ri[:, _FRUIT_Y] + PIXEL_OFFSET_Y).astype(np.float32),
        level=ri[:, _LEVEL].astype(np.int8),
        score=_bcd(r[:, _SCORE + 2]) * 10000 + _bcd(r[:, _SCORE + 1]) * 100 + _bcd(r[:, _SCORE]),
    )


def decode_ram(ram: np.ndarray | Sequence[int]) -> MsPacmanState:
    """Decode one RAM row (128 bytes) into a :class:`MsPacmanState`."""
    row = np.asarray(ram)
    if row.shape != (128,):
        raise RlsaeError(f"expected 128 RAM bytes, got shape {row.shape}")
    return decode_ram_batch(row[None]).step(0)


def ram_decoder(game: str) -> Callable[[np.ndarray], MsPacmanStates]:
    """The batch decoder for ``game`` (an ale-py ROM name); one-line error for other games."""
    key = game.strip().lower().replace("-", "_")
    if key in ("mspacman", "ms_pacman", "ale/mspacman_v5"):
        return decode_ram_batch
    have = ", ".join(GAMES_WITH_RAM_TABLE)
    raise RlsaeError(f"no RAM table for game {game!r}; games with one: {have}")


@dataclass(frozen=True)
class RamRollout:
    """RAM (and optionally screens) of one emulator run. Row ``t`` is the state the agent acts
    on at step ``t`` (row 0: after the reset), as in :func:`rlsae.agents.replay.replay_episode`;
    ``actions[t]`` leads from row ``t`` to row ``t + 1``."""

    ram: np.ndarray
    """(n + 1, 128) uint8 RAM of each state."""
    frames: np.ndarray | None
    """(n + 1, 210, 160, 3) uint8 screens of each state (None unless asked for)."""
    lives: np.ndarray
    """(n + 1,) int ALE's lives in each state (0 once the game is over)."""
    rewards: np.ndarray
    """(n,) int the game score gained by each action (ALE's reward)."""
    actions: np.ndarray
    """(n,) int the actions played (minimal-set indices); fewer than given at a game over."""


def rollout_ram(
    actions: Sequence[int] | np.ndarray,
    *,
    seed: int = 0,
    frameskip: int = 4,
    repeat_action_probability: float = 0.0,
    max_episode_frames: int = 108_000,
    frames: bool = False,
) -> RamRollout:
    """Play ``actions`` (indices into the 9-action minimal set) from a fresh game with
    ale-py's ``ALEInterface``; the RAM of every state (stops at game over).

    Each action is held for ``frameskip`` emulator frames, as the project's environments do;
    the RAM and screen are those of the last frame. With the episode's seed and the
    environment's sticky-action probability this is the game ``AtariVectorEnv`` plays when it
    starts without no-ops (``noop_max = 0``, the poster set-up): the screens are identical,
    step for step (``tests/agents/test_ram.py``), so :func:`replay_ram` regenerates the RAM
    of a recorded episode.
    """
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", int(seed))
    ale.setFloat("repeat_action_probability", float(repeat_action_probability))
    ale.setInt("max_num_frames_per_episode", int(max_episode_frames))
    ale.loadROM(str(roms.get_rom_path(GAME)))
    action_set = ale.getMinimalActionSet()
    acts = np.asarray(actions, dtype=np.int64).reshape(-1)
    if acts.size and (acts.min() < 0 or acts.max() >= len(action_set)):
        raise RlsaeError(f"actions must be in 0..{len(action_set) - 1}")
    rams, screens, lives, rewards = [ale.getRAM().copy()], [], [ale.lives()], []
    if frames:
        screens.append(ale.getScreenRGB().copy())
    for a in acts.tolist():
        if ale.game_over():
            break
        rewards.append(sum(int(ale.act(action_set[a])) for _ in range(frameskip)))
        rams.append(ale.getRAM().copy())
        lives.append(ale.lives())
        if frames:
            screens.append(ale.getScreenRGB().copy())
    n = len(rewards)
    return RamRollout(
        ram=np.asarray(rams, dtype=np.uint8).reshape(n + 1, 128),
        frames=np.asarray(screens, dtype=np.uint8) if frames else None,
        lives=np.asarray(lives, dtype=np.int64),
        rewards=np.asarray(rewards, dtype=np.int64),
        actions=acts[:n].copy(),
    )


def replay_ram(doc: EpisodeLog, episode: int, *, frames: bool = False) -> RamRollout:
    """The RAM of every step 0..len(actions) of a recorded episode (``episodes.json``).

    Only recordings that start without no-ops (``env.noop_max == 0``, the poster set-up)
    can be replayed this way: with no-ops the vector env draws their number itself.
    """
    ep = doc.episode(episode)
    env = doc.env
    if env.noop_max != 0:
        raise RlsaeError(
            f"cannot regenerate RAM for a recording with noop_max={env.noop_max} (the vector "
            "env draws the no-ops itself); record with noop_max 0 (the poster set-up)"
        )
    return rollout_ram(
        ep.actions,
        seed=ep.seed,
        frameskip=env.frameskip,
        repeat_action_probability=env.repeat_action_probability,
        max_episode_frames=env.max_episode_frames,
        frames=frames,
    )


def recording_ram(store_dir: str | os.PathLike, *, verify: bool = True) -> np.ndarray:
    """The RAM (rows, 128) of every row of an Atari activation store's ``context.parquet``,
    in row order, regenerated by :func:`replay_ram`.

    With ``verify`` each replayed screen's hash is compared with the row's ``obs_hash``; a
    mismatch (a recording from another emulator build, say) is a one-line error.
    """
    import pandas as pd

    # envs pulls in stable-baselines3 and torch: imported here so decoding stays light
    from rlsae.agents.envs import obs_hash

    path = Path(store_dir) / "context.parquet"
    if not path.is_file():
        raise RlsaeError(
            f"{path} not found; RAM replay needs a store written by `rlsae dqn record`"
        )
    ctx = pd.read_parquet(path, columns=["episode", "step", "obs_hash"])
    doc = read_episodes(store_dir)
    out = np.zeros((len(ctx), 128), dtype=np.uint8)
    for episode, rows in ctx.groupby("episode", sort=True):
        run = replay_ram(doc, int(episode), frames=verify)
        steps = rows["step"].to_numpy()
        if steps.max(initial=0) >= len(run.ram):
            raise RlsaeError(f"episode {episode}: step {steps.max()} is past the replayed game")
        out[rows.index.to_numpy()] = run.ram[steps]
        if verify and run.frames is not None:
            for step, want in zip(steps.tolist(), rows["obs_hash"].tolist(), strict=True):
                if obs_hash(run.frames[step].transpose(2, 0, 1)) != want:
                    raise RlsaeError(
                        f"episode {episode} step {step}: the replayed screen differs from the "
                        "recording; its RAM cannot be regenerated"
                    )
    return out


__all__ = [
    "DIRECTIONS",
    "GAMES_WITH_RAM_TABLE",
    "GHOSTS",
    "MSPACMAN_RAM",
    "MsPacmanState",
    "MsPacmanStates",
    "PIXEL_OFFSET_X",
    "PIXEL_OFFSET_Y",
    "POWER_PILL_XY",
    "RamAddress",
    "RamRollout",
    "decode_ram",
    "decode_ram_batch",
    "ram_decoder",
    "recording_ram",
    "replay_ram",
    "rollout_ram",
]
