"""The whole state of a DQN training run between two rollouts, so a killed run resumes exactly.

``dqn train`` writes ``resume/step_S/`` at the first rollout boundary after each checkpoint
(SB3 trains between rollouts, so there the state is complete: nothing is half-collected):

::

    resume/step_S/
      state.json          ResumeState: SB3's counters, exploration rate, the python, numpy,
                          torch and action-space RNG states, the episodes logged so far
      torch.pt            the policy (online and target networks) and Adam's state, plus
                          torch's RNG state (read back with ``torch.load(weights_only=True)``)
      actions.npy         every action sent to the emulators so far, (steps, n_envs) uint8
      last_obs.npy        the observation the next action is chosen from
      replay_buffer/*.npy the filled rows of the replay buffer's arrays (``allow_pickle=False``)

Nothing in it is a pickle. ale-py's C++ vector env has no way to save or restore its emulators
(their RNGs, the frame stacks and max-pool buffers, the no-op starts), so a resume rebuilds them
by replaying: a fresh env seeded like the original is stepped through ``actions.npy``; the
emulators are deterministic given their seed and actions, and the last replayed observation
must equal ``last_obs.npy`` (else the resume is refused). Replaying runs at about 3,400 env
steps/s on one core, a small fraction of the training time it stands for.

Each state is published whole with :func:`rlsae.fsutil.atomic_dir`; older states are deleted
once a newer one is in place, and the temporary directories of a killed write are removed on
resume.
"""

from __future__ import annotations

import collections
import io
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir

_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


@dataclass
class TrainEpisode:
    """One finished game during training (the raw game score over all its lives)."""

    step: int
    """Env steps done (all envs) when the game ended."""
    env: int
    """Index of the emulator that played it."""
    score: float
    """Raw game score (before the training reward transform)."""
    length: int
    """Agent steps the game lasted."""


@dataclass
class TrainLog(Artifact):
    """``train_log.json``: every game finished during training, in order. An interrupted and
    resumed run writes the same log as an uninterrupted one."""

    FORMAT: ClassVar[str] = "rlsae.dqn_train_log"
    VERSION: ClassVar[int] = 1

    steps: int
    """Env steps trained."""
    episodes: list[TrainEpisode] = field(default_factory=list)
    """Finished games, in the order they ended."""


@dataclass
class RngStates:
    """The generators SB3 draws from: python's ``random``, numpy's global MT19937 (replay-buffer
    sampling, epsilon draws) and the action space's own generator (random actions)."""

    python: list[int]
    python_gauss: float | None
    numpy_keys: list[int]
    numpy_pos: int
    numpy_has_gauss: int
    numpy_gauss: float
    action_space: dict[str, str]
    """The action space's bit generator state, numbers as decimal strings (PCG64 holds 128-bit
    integers)."""


@dataclass
class ResumeState(Artifact):
    """``resume/step_S/state.json``: what SB3 keeps between rollouts beside the arrays."""

    FORMAT: ClassVar[str] = "rlsae.dqn_resume"
    VERSION: ClassVar[int] = 1

    step: int
    """SB3's ``num_timesteps`` (env steps, all envs)."""
    n_calls: int
    n_updates: int
    episode_num: int
    exploration_rate: float
    progress_remaining: float
    last_episode_starts: list[bool]
    ep_info: list[dict[str, float]]
    """SB3's window of recent episodes (for its logged means)."""
    rng: RngStates
    replay_buffer: bool
    """Whether the replay buffer is saved (``save_replay_buffer``); without it the resumed run
    starts with an empty buffer and is not the uninterrupted run."""
    buffer_pos: int = 0
    buffer_full: bool = False
    episodes: list[TrainEpisode] = field(default_factory=list)


class ActionLog:
    """Every action sent to the emulators, (steps, n_envs) uint8, grown by doubling."""

    def __init__(self, n_envs: int, rows: np.ndarray | None = None) -> None:
        self._a = np.zeros((1024, n_envs), dtype=np.uint8)
        self.n = 0
        if rows is not None:
            self._a = np.array(rows, dtype=np.uint8)
            self.n = len(rows)

    def append(self, actions: np.ndarray) -> None:
        if self.n == len(self._a):
            self._a = np.concatenate([self._a, np.zeros_like(self._a)])
        self._a[self.n] = actions
        self.n += 1

    @property
    def rows(self) -> np.ndarray:
        return self._a[: self.n]


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
def _rng_states(model: Any) -> RngStates:
    _, py_state, py_gauss = random.getstate()
    _, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    bitgen = model.action_space.np_random.bit_generator.state
    flat = {"bit_generator": str(bitgen["bit_generator"])}
    flat.update({k: str(v) for k, v in bitgen["state"].items()})
    flat.update({k: str(v) for k, v in bitgen.items() if k not in ("bit_generator", "state")})
    return RngStates(
        python=list(py_state),
        python_gauss=py_gauss,
        numpy_keys=[int(k) for k in keys],
        numpy_pos=int(pos),
        numpy_has_gauss=int(has_gauss),
        numpy_gauss=float(gauss),
        action_space=flat,
    )


def _buffer_rows(rb: Any) -> int:
    """Rows of the buffer's arrays that hold data (with ``optimize_memory_usage`` the next
    observation is written one row ahead of ``pos``)."""
    return int(rb.buffer_size) if rb.full else min(int(rb.pos) + 1, int(rb.buffer_size))


def save_state(
    model: Any, out: Path, actions: ActionLog, episodes: list[TrainEpisode], save_buffer: bool
) -> Path:
    """Publish the run's state as ``out/resume/step_S`` (whole, atomically); drop older ones."""
    step = int(model.num_timesteps)
    rb = model.replay_buffer
    state = ResumeState(
        step=step,
        n_calls=int(model._n_calls),
        n_updates=int(model._n_updates),
        episode_num=int(model._episode_num),
        exploration_rate=float(model.exploration_rate),
        progress_remaining=float(model._current_progress_remaining),
        last_episode_starts=[bool(x) for x in model._last_episode_starts],
        ep_info=[{k: float(v) for k, v in e.items()} for e in model.ep_info_buffer],
        rng=_rng_states(model),
        replay_buffer=save_buffer,
        buffer_pos=int(rb.pos),
        buffer_full=bool(rb.full),
        episodes=list(episodes),
    )
    root = out / "resume"
    final = root / f"step_{step}"
    with atomic_dir(final, overwrite=True) as tmp:
        torch.save(
            {
                "policy": model.policy.state_dict(),
                "optimizer": model.policy.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
            },
            tmp / "torch.pt",
        )
        np.save(tmp / "actions.npy", actions.rows)
        np.save(tmp / "last_obs.npy", np.asarray(model._last_obs))
        if save_buffer:
            (tmp / "replay_buffer").mkdir()
            n = _buffer_rows(rb)
            for name in _BUFFER_ARRAYS:
                arr = getattr(rb, name, None)
                if isinstance(arr, np.ndarray):
                    np.save(tmp / "replay_buffer" / f"{name}.npy", arr[:n])
        state.write(tmp / "state.json")
    for old in root.iterdir():
        if old.name != final.name:
            _remove(old)
    return final


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Restoring
# --------------------------------------------------------------------------------------------
def latest_state(out: Path) -> Path | None:
    """The newest complete ``resume/step_S`` of a run, after deleting what killed writes left
    there (``.step_S.tmp-*`` directories, a replaced state's ``.old-*``, older formats)."""
    root = out / "resume"
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit():
            if (p / "state.json").is_file():
                found.append((int(p.name[5:]), p))
                continue
        _remove(p)
    return max(found)[1] if found else None


def restore_state(model: Any, env: Any, src: Path) -> tuple[ActionLog, list[TrainEpisode]]:
    """Put a freshly built (same seed) model and env into the state saved in ``src``.

    The env is replayed through the saved actions; the replayed observation must equal the
    saved one. Returns the action log and the training log to continue."""
    state = ResumeState.read(src / "state.json")
    actions = ActionLog(env.num_envs, _load_npy(src / "actions.npy"))
    last = _replay(env, actions.rows)
    saved_obs = _load_npy(src / "last_obs.npy")
    if last.shape != saved_obs.shape or not np.array_equal(last, saved_obs):
        raise RlsaeError(
            f"{src}: replaying the {actions.n} saved actions did not reproduce the saved game "
            "state (another ale-py version?); cannot resume this run exactly"
        )
    # on the CPU: torch's RNG state must stay a CPU tensor; load_state_dict copies the
    # weights (and Adam's state) onto the model's device
    blob = torch.load(src / "torch.pt", map_location="cpu", weights_only=True)
    model.policy.load_state_dict(blob["policy"])
    model.policy.optimizer.load_state_dict(blob["optimizer"])
    if state.replay_buffer:
        _restore_buffer(model.replay_buffer, src / "replay_buffer", state)
    model.num_timesteps = state.step
    model._n_calls = state.n_calls
    model._n_updates = state.n_updates
    model._episode_num = state.episode_num
    model.exploration_rate = state.exploration_rate
    model._current_progress_remaining = state.progress_remaining
    model._last_obs = last
    model._last_episode_starts = np.array(state.last_episode_starts, dtype=bool)
    model.ep_info_buffer = collections.deque(state.ep_info, maxlen=model._stats_window_size)
    model.ep_success_buffer = collections.deque(maxlen=model._stats_window_size)
    _set_rngs(model, state.rng)
    torch.set_rng_state(blob["torch_rng"])
    return actions, list(state.episodes)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise RlsaeError(f"cannot read {path} ({e}); the resume state is damaged") from None


def _replay(env: Any, rows: np.ndarray) -> np.ndarray:
    obs = env.reset()
    for row in rows:
        obs, _, _, _ = env.step(np.asarray(row, dtype=np.int64))
    return np.asarray(obs)


def _restore_buffer(rb: Any, folder: Path, state: ResumeState) -> None:
    rb.pos, rb.full = state.buffer_pos, state.buffer_full
    n = _buffer_rows(rb)
    for name in _BUFFER_ARRAYS:
        arr = getattr(rb, name, None)
        if not isinstance(arr, np.ndarray):
            continue
        data = _load_npy(folder / f"{name}.npy")
        if data.shape != arr[:n].shape or data.dtype != arr.dtype:
            raise RlsaeError(
                f"{folder / name}.npy holds {data.dtype}{data.shape}, the run's buffer needs "
                f"{arr.dtype}{arr[:n].shape}; the resume state does not belong to this run"
            )
        arr[:n] = data


def _set_rngs(model: Any, rng: RngStates) -> None:
    random.setstate((3, tuple(rng.python), rng.python_gauss))
    keys = np.array(rng.numpy_keys, dtype=np.uint32)
    np.random.set_state(("MT19937", keys, rng.numpy_pos, rng.numpy_has_gauss, rng.numpy_gauss))
    a = dict(rng.action_space)
    name = a.pop("bit_generator")
    gen = model.action_space.np_random.bit_generator
    if type(gen).__name__ != name:
        raise RlsaeError(f"the saved action-space generator is {name}, not {type(gen).__name__}")
    inner = {k: int(a.pop(k)) for k in list(gen.state["state"])}
    gen.state = {"bit_generator": name, "state": inner, **{k: int(v) for k, v in a.items()}}


def load_finished_weights(model: Any, zip_path: Path) -> int:
    """Load a finished agent's networks and Adam state from its ``model.zip`` without
    unpickling (``policy.pth`` and ``policy.optimizer.pth`` weights-only, the step count from
    the JSON ``data``); returns the env steps it was trained for. For extending a finished run
    (its emulators and replay buffer are gone, so the extension starts them afresh)."""
    import json

    try:
        with zipfile.ZipFile(zip_path) as z:
            policy = torch.load(io.BytesIO(z.read("policy.pth")), weights_only=True)
            optim = torch.load(io.BytesIO(z.read("policy.optimizer.pth")), weights_only=True)
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, ValueError, RuntimeError) as e:
        raise RlsaeError(f"cannot load {zip_path}: not a valid SB3 DQN model file ({e})") from None
    model.policy.load_state_dict(policy)
    model.policy.optimizer.load_state_dict(optim)
    steps = data.get("num_timesteps")
    if not isinstance(steps, int) or steps < 0:
        raise RlsaeError(f"{zip_path}: its data has no valid num_timesteps")
    model.num_timesteps = steps
    for key in ("_n_calls", "_n_updates", "_episode_num"):
        if isinstance(data.get(key), int):
            setattr(model, key, data[key])
    if isinstance(data.get("exploration_rate"), float):
        model.exploration_rate = data["exploration_rate"]
    return steps


__all__ = [
    "ActionLog",
    "ResumeState",
    "TrainEpisode",
    "TrainLog",
    "latest_state",
    "load_finished_weights",
    "restore_state",
    "save_state",
]
