"""DQN agents on Ms. Pac-Man with stable-baselines3: train (with checkpoints and resume), load.

An agent directory holds ``model.zip`` (SB3 DQN), ``agent.json`` (:class:`AgentInfo`: arch, env,
seed, steps trained, hyperparameters), ``checkpoints/step_N/`` (each a loadable agent directory),
``tensorboard/``, ``train.json`` (the run's :class:`DQNTrainConfig`, which a resume must match),
``train_log.json`` (:class:`~rlsae.agents.train_state.TrainLog`, every game finished in training)
and, while training is resumable, ``resume/step_S/`` (the run's whole state at its latest rollout
boundary after a checkpoint: see :mod:`rlsae.agents.train_state`; a killed run resumed from it
ends exactly as an uninterrupted one). ``agent.json`` at the top is written last: its presence
marks a finished run.

The hyperparameters and their per-arch defaults are in :mod:`rlsae.agents.config`. Every field
can be overridden per call (``train_dqn(..., buffer_size=5000)``), as can the environment's
(``repeat_action_probability``, ``noop_max``, ...).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from rlsae import threads as _threads
from rlsae.agents.agent_dir import (
    Checkpoint,
    check_agent_dir,
    claim_train_dir,
    list_checkpoints,
    read_agent_info,
)
from rlsae.agents.config import DQNTrainConfig, EnvConfig, check_device, train_config
from rlsae.agents.envs import make_vec_env
from rlsae.agents.layers import HEAD, check_layer, layer_widths
from rlsae.agents.networks import get_module, policy_kwargs
from rlsae.agents.results import AgentInfo
from rlsae.agents.train_state import (
    ActionLog,
    TrainEpisode,
    TrainLog,
    latest_state,
    load_finished_weights,
    restore_state,
    save_state,
)
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
class Agent:
    """A loaded DQN agent: the SB3 model plus named access to its layers.

    ``q_values(obs)`` gives Q for a batch of uint8 observations, ``forward(obs, layer)`` also
    returns the named layer's activations, and ``forward_from(layer, h)`` runs the rest of the
    network from a layer's activations.
    """

    def __init__(self, path: Path, info: AgentInfo, model: Any) -> None:
        self.path = path
        self.info = info
        self.arch: str = info.arch
        self.model = model
        self.env_config: EnvConfig = info.env
        self.q_network = model.q_net
        self.q_network.eval()

    def layers(self) -> dict[str, int]:
        """Hookable layer names and widths."""
        return layer_widths(self.arch)

    @property
    def head(self) -> torch.nn.Linear:
        """The linear Q head (512 -> 9)."""
        head = get_module(self.q_network, HEAD)
        linear = head[0] if isinstance(head, torch.nn.Sequential) else head
        assert isinstance(linear, torch.nn.Linear)
        return linear

    def _obs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        if t.dim() == 3:
            t = t.unsqueeze(0)
        return t.float() / 255.0

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Q-values (n, 9) for a batch (or one) of uint8 observations."""
        fe = self.q_network.features_extractor
        return get_module(self.q_network, HEAD)(fe(self._obs(obs)))

    def q_net(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Q-values for observations (the name CONTRACTS.md uses; same as :meth:`q_values`)."""
        return self.q_values(obs)

    @torch.no_grad()
    def forward(
        self, obs: np.ndarray | torch.Tensor, layer: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Q-values (n, 9), activations of ``layer`` (n, width))."""
        path, _, _ = check_layer(self.arch, layer)
        captured: list[torch.Tensor] = []
        handle = get_module(self.q_network, path).register_forward_hook(
            lambda _m, _i, out: captured.append(out)
        )
        try:
            q = self.q_values(obs)
        finally:
            handle.remove()
        return q, captured[0]

    @torch.no_grad()
    def forward_from(self, layer: str, h: torch.Tensor) -> torch.Tensor:
        """Q-values from ``layer``'s activations, through the modules after it and the head."""
        _, width, rest = check_layer(self.arch, layer)
        if h.shape[-1] != width:
            raise RlsaeError(
                f"layer {layer} has width {width}, got activations of width {h.shape[-1]}"
            )
        for path in rest:
            h = get_module(self.q_network, path)(h)
        return get_module(self.q_network, HEAD)(h)


def _load_model(zip_path: Path) -> Any:
    from stable_baselines3 import DQN

    try:
        return DQN.load(str(zip_path), device="cpu")
    except (zipfile.BadZipFile, KeyError, ValueError, EOFError, RuntimeError, OSError) as e:
        raise RlsaeError(
            f"cannot load {zip_path}: not a valid SB3 DQN model file ({type(e).__name__})"
        ) from None
    except Exception as e:  # unpickling errors of every kind
        raise RlsaeError(
            f"cannot load {zip_path}: corrupt model file ({type(e).__name__})"
        ) from None


def load_agent(agent_dir: str | os.PathLike, expect_arch: str | None = None) -> Agent:
    """Load an agent directory (or a checkpoint directory inside one).

    SB3 model files are unpickled: only load agents from sources you trust.
    """
    path = Path(agent_dir)
    info = check_agent_dir(path)
    arch = info.arch
    zip_path = path / "model.zip"
    if expect_arch is not None and arch != expect_arch:
        raise RlsaeError(f"{path} holds a {arch} agent, but a {expect_arch} agent was requested")
    model = _load_model(zip_path)
    want = EnvConfig(mode=arch).obs_shape
    got = tuple(model.observation_space.shape)
    if got != want:
        raise RlsaeError(
            f"{zip_path} was trained on observations {got}, but agent.json says {arch} "
            f"(observations {want}); the agent directory is inconsistent"
        )
    return Agent(path, info, model)


def agent_summary(agent_dir: str | os.PathLike) -> dict[str, Any]:
    """agent.json plus the layer table, for ``dqn layers``."""
    agent = load_agent(agent_dir)
    return {
        "agent": str(agent.path),
        "arch": agent.arch,
        "steps_trained": agent.info.steps_trained,
        "layers": agent.layers(),
        "checkpoints": [str(c.path) for c in list_checkpoints(agent_dir)],
    }


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def train_dqn(
    arch: str,
    steps: int,
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    checkpoint_every: int | None = None,
    n_envs: int = 1,
    resume: bool = False,
    progress: bool = True,
    torch_threads: int | None = 1,
    device: str = "cpu",
    **overrides: Any,
) -> Path:
    """Train an SB3 DQN on Ms. Pac-Man; returns the agent directory.

    ``overrides`` replace fields of :class:`~rlsae.agents.config.DQNConfig` or
    :class:`~rlsae.agents.config.EnvConfig` (e.g. ``buffer_size=5000, learning_starts=500``).
    ``checkpoint_every`` saves a loadable agent to ``checkpoints/step_N`` every N env steps.
    ``resume`` continues an interrupted run from its last checkpoint (or extends a finished one
    to ``steps``); it is refused, in one line naming the difference, when the settings differ
    from the run's ``train.json`` (only ``steps`` and ``checkpoint_every`` may change).
    Every setting is checked before anything is written.
    Training runs on ``torch_threads`` intra-op threads (default 1: on the 2-core machine,
    under load, one thread was 2-4x faster per gradient step and per action choice than two;
    ``None`` keeps torch's setting). ``device`` is passed to SB3 (e.g. ``"cuda"``); saved
    agents load on the CPU.
    """
    cfg = train_config(
        arch, steps, seed=seed, checkpoint_every=checkpoint_every, n_envs=n_envs, **overrides
    )
    check_device("train_dqn", device)
    out = Path(out_dir)
    cfg = claim_train_dir(cfg, out, resume)
    with _threads.torch_threads(torch_threads):
        return _train(cfg, out, resume, progress, device)


def _train(cfg: DQNTrainConfig, out: Path, resume: bool, progress: bool, device: str) -> Path:
    env = make_vec_env(cfg.env, cfg.n_envs, seed=cfg.seed)
    try:
        model, done_steps, log = _load_or_build_model(cfg, out, env, resume, device)
        if done_steps >= cfg.steps:
            if not (out / "agent.json").is_file():
                TrainLog(steps=done_steps, episodes=log.episodes).write(out / "train_log.json")
                _save_agent(model, out, _agent_info(cfg, done_steps))
            return out
        # a resumed finished run is being extended: it is no longer finished
        with contextlib.suppress(FileNotFoundError):
            (out / "agent.json").unlink()
        callback = _TrainCallback(out, cfg, done_steps, progress, log)
        try:
            model.learn(
                total_timesteps=cfg.steps - done_steps,
                callback=callback,
                reset_num_timesteps=done_steps == 0,
                tb_log_name="DQN",
                log_interval=4,
            )
        finally:
            callback.close()
    finally:
        env.close()
    steps = int(model.num_timesteps)
    TrainLog(steps=steps, episodes=log.episodes).write(out / "train_log.json")
    _save_agent(model, out, _agent_info(cfg, steps))
    shutil.rmtree(out / "resume", ignore_errors=True)
    return out


class _RunLog:
    """What the training callback carries across a resume: the actions sent to the emulators
    and the games finished so far."""

    def __init__(self, actions: ActionLog, episodes: list[TrainEpisode]) -> None:
        self.actions, self.episodes = actions, episodes


def _load_or_build_model(
    cfg: DQNTrainConfig, out: Path, env: Any, resume: bool, device: str
) -> tuple[Any, int, _RunLog]:
    """The model to train, the env steps it has done and the run's log so far.

    A new model is built the same way every time (same seeds); a resume then restores the
    latest ``resume/step_S`` state into it and replays the emulators to that point (exactly
    the uninterrupted run), or, for a finished run being extended, loads its weights (its
    emulators and replay buffer are gone: the extension starts them afresh). A resume with no
    state yet (killed before the first one) starts over, which gives the same run."""
    from stable_baselines3 import DQN

    hyper = asdict(cfg.hyperparameters)
    hyper.pop("save_replay_buffer")
    rb_kwargs = (
        {"handle_timeout_termination": False} if cfg.hyperparameters.optimize_memory_usage else None
    )
    state = latest_state(out) if resume else None
    finished = resume and (out / "agent.json").is_file() and (out / "model.zip").is_file()
    if resume and state is None and not finished:
        shutil.rmtree(out / "tensorboard", ignore_errors=True)  # the killed run's, redone now
    torch.manual_seed(cfg.seed)
    model = DQN(
        "CnnPolicy",
        env,
        policy_kwargs=policy_kwargs(cfg.arch),
        replay_buffer_kwargs=rb_kwargs,
        tensorboard_log=str(out / "tensorboard"),
        seed=cfg.seed,
        device=device,
        verbose=0,
        **hyper,
    )
    log = _RunLog(ActionLog(cfg.n_envs), [])
    if finished:
        done = load_finished_weights(model, out / "model.zip")
        if (out / "train_log.json").is_file():
            log.episodes = TrainLog.read(out / "train_log.json").episodes
        return model, done, log
    if state is not None:
        log.actions, log.episodes = restore_state(model, env, state)
        return model, int(model.num_timesteps), log
    return model, 0, log


def _agent_info(cfg: DQNTrainConfig, steps: int) -> AgentInfo:
    return AgentInfo(
        arch=cfg.arch,
        env_id=cfg.env.env_id,
        seed=cfg.seed,
        steps_trained=int(steps),
        n_envs=cfg.n_envs,
        hyperparameters=cfg.hyperparameters,
        env=cfg.env,
    )


def _save_agent(model: Any, dest: Path, info: AgentInfo) -> None:
    """Write model.zip then agent.json, each atomically (agent.json marks completion)."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".model.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, dest / "model.zip")
    info.write(dest / "agent.json")


class _TrainCallback(BaseCallback):
    """Logs actions and finished games, publishes a loadable agent every N env steps and, at
    the next rollout boundary, the run's whole state (``resume/step_S``); a tqdm bar on stderr."""

    def __init__(
        self, out: Path, cfg: DQNTrainConfig, start: int, progress: bool, log: _RunLog
    ) -> None:
        super().__init__(verbose=0)
        self.out, self.cfg, self.log = out, cfg, log
        every = cfg.checkpoint_every
        self.next_ckpt = ((start // every) + 1) * every if every else None
        self.state_due = False
        self.bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=cfg.steps, initial=start, desc="dqn train", unit="step", leave=False
            )
        self.last = start

    def _on_step(self) -> bool:
        n = int(self.model.num_timesteps)
        self.log.actions.append(self.locals["actions"])
        for i, info in enumerate(self.locals["infos"]):
            ep = info.get("episode")
            if ep is not None:
                self.log.episodes.append(TrainEpisode(n, i, float(ep["r"]), int(ep["l"])))
        if self.bar is not None:
            self.bar.update(n - self.last)
        self.last = n
        if self.next_ckpt is not None and n >= self.next_ckpt:
            self._checkpoint(n)
            every = self.cfg.checkpoint_every or 1
            while self.next_ckpt <= n:
                self.next_ckpt += every
        return True

    def _on_rollout_start(self) -> None:
        # SB3 has trained on the last rollout and collects the next one from here: the one
        # point where its whole state is saved (and restored) without a half-done rollout
        if self.state_due:
            save_state(
                self.model,
                self.out,
                self.log.actions,
                self.log.episodes,
                self.cfg.hyperparameters.save_replay_buffer,
            )
            self.state_due = False

    def _checkpoint(self, n: int) -> None:
        final = self.out / "checkpoints" / f"step_{n}"
        with atomic_dir(final, overwrite=True) as tmp:
            _save_agent(self.model, tmp, _agent_info(self.cfg, n))
        self.state_due = True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = [
    "Agent",
    "Checkpoint",
    "agent_summary",
    "list_checkpoints",
    "load_agent",
    "read_agent_info",
    "train_dqn",
]
