"""DQN agents on Ms. Pac-Man with stable-baselines3: train (with checkpoints and resume), load.

An agent directory holds ``model.zip`` (SB3 DQN), ``agent.json`` (arch, env, seed, steps trained,
hyperparameters), ``checkpoints/step_N/`` (each a loadable agent directory), ``tensorboard/`` and,
while training is resumable, ``resume/`` (the latest replay buffer). ``agent.json`` at the top
is written last: its presence marks a finished run.

Hyperparameters (:class:`DQNConfig`):

- ``nature``: rl-zoo3's Atari DQN (``hyperparams/dqn.yml``, ``atari``): lr 1e-4, buffer 100k,
  learning starts 100k, batch 32, gamma 0.99, train every 4 steps, target sync every 1000 steps,
  epsilon 1.0 -> 0.01 over the first 10% of training.
- ``poster``: the poster's: Adam lr 5e-4, gamma 0.98, buffer 50k, batch 256, epsilon
  0.2 -> 0.05, rewards divided by 100 (env), smooth-L1 loss (SB3's DQN loss), hard target
  sync. The poster does not give the sync interval, learning start, train frequency or the
  epsilon decay length: we use 2000, 10k, 4 and 10% of training. A replay buffer of raw RGB
  frames is large (100,800 bytes per frame): ``optimize_memory_usage`` stores each frame once,
  so 50k transitions take about 5.0 GB (10 GB without it).

Every field can be overridden per call (``train_dqn(..., buffer_size=5000)``), as can the
environment's (``repeat_action_probability``, ``noop_max``, ...).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlsae import threads as _threads
from rlsae.agents.envs import ENV_ID, EnvConfig, make_vec_env
from rlsae.agents.networks import (
    HEAD,
    LAYERS,
    check_layer,
    get_module,
    layer_widths,
    policy_kwargs,
)
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_json, read_json

ARCHS = ("nature", "poster")


@dataclass
class DQNConfig:
    """SB3 ``DQN`` hyperparameters (defaults per arch from :func:`default_config`)."""

    learning_rate: float = 1e-4
    """Adam learning rate."""
    buffer_size: int = 100_000
    """Replay buffer capacity in transitions."""
    learning_starts: int = 100_000
    """Env steps of random play before the first gradient step."""
    batch_size: int = 32
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 1.0
    """Target update coefficient (1.0 = hard sync)."""
    train_freq: int = 4
    """Env steps (per env) between gradient updates."""
    gradient_steps: int = 1
    """Gradient steps per update."""
    target_update_interval: int = 1000
    """Env steps between target-network syncs."""
    exploration_fraction: float = 0.1
    """Fraction of training over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the start."""
    exploration_final_eps: float = 0.01
    """Epsilon after the decay."""
    max_grad_norm: float = 10.0
    """Gradient clipping (SB3 default)."""
    optimize_memory_usage: bool = False
    """Store each frame once in the replay buffer (halves its memory)."""
    save_replay_buffer: bool = True
    """Keep the latest replay buffer in ``resume/`` at each checkpoint, for an exact resume."""


def default_config(arch: str) -> DQNConfig:
    """The documented defaults: rl-zoo3 Atari for ``nature``, the poster's for ``poster``."""
    if arch == "nature":
        return DQNConfig()
    if arch == "poster":
        return DQNConfig(
            learning_rate=5e-4,
            buffer_size=50_000,
            learning_starts=10_000,
            batch_size=256,
            gamma=0.98,
            target_update_interval=2000,
            exploration_fraction=0.1,
            exploration_initial_eps=0.2,
            exploration_final_eps=0.05,
            optimize_memory_usage=True,
        )
    raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")


_ENV_OVERRIDES = {f.name for f in fields(EnvConfig)} - {"mode"}
_DQN_FIELDS = {f.name for f in fields(DQNConfig)}


def build_configs(arch: str, overrides: dict[str, Any]) -> tuple[DQNConfig, EnvConfig]:
    """Defaults for ``arch`` with ``overrides`` applied; unknown names raise a listing error."""
    cfg = default_config(arch)
    env_kw: dict[str, Any] = {}
    for key, value in overrides.items():
        if key in _DQN_FIELDS:
            setattr(cfg, key, type(getattr(cfg, key))(value))
        elif key in _ENV_OVERRIDES:
            env_kw[key] = value
        else:
            valid = ", ".join(sorted(_DQN_FIELDS | _ENV_OVERRIDES))
            raise RlsaeError(f"unknown DQN setting {key!r}; valid: {valid}")
    if cfg.buffer_size < 1 or cfg.batch_size < 1 or cfg.train_freq < 1:
        raise RlsaeError("buffer_size, batch_size and train_freq must be positive")
    return cfg, EnvConfig(mode=arch, **env_kw)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
class Agent:
    """A loaded DQN agent: the SB3 model plus named access to its layers.

    ``q_values(obs)`` gives Q for a batch of uint8 observations, ``forward(obs, layer)`` also
    returns the named layer's activations, ``forward_from(layer, h)`` runs the rest of the
    network from a layer's activations, and ``patched(layer, fn)`` replaces a layer's output
    (``fn(acts) -> acts``) inside the network for as long as the context is open.
    """

    def __init__(self, path: Path, info: dict[str, Any], model: Any) -> None:
        self.path = path
        self.info = info
        self.arch: str = info["arch"]
        self.model = model
        self.env_config = EnvConfig.from_dict({**info.get("env", {}), "mode": self.arch})
        self.q_network = model.q_net
        self.q_network.eval()

    def layers(self) -> dict[str, int]:
        """Hookable layer names and widths."""
        return layer_widths(self.arch)

    @property
    def head(self) -> torch.nn.Linear:
        """The linear Q head (512 -> 9)."""
        return get_module(self.q_network, HEAD)[0]

    def _obs(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(obs) if not isinstance(obs, torch.Tensor) else obs)
        if t.dim() == 3:
            t = t.unsqueeze(0)
        return t.float() / 255.0

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
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

    @contextlib.contextmanager
    def patched(self, layer: str, fn: Any) -> Iterator[None]:
        """Replace ``layer``'s output by ``fn(output)`` within the block."""
        path, _, _ = check_layer(self.arch, layer)
        handle = get_module(self.q_network, path).register_forward_hook(lambda _m, _i, out: fn(out))
        try:
            yield
        finally:
            handle.remove()


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
    if not path.is_dir():
        raise RlsaeError(f"agent directory {path} not found")
    zip_path = path / "model.zip"
    if not zip_path.is_file():
        raise RlsaeError(f"{zip_path} not found; is {path} an agent directory (dqn train --out)?")
    info = read_json(path / "agent.json")
    arch = info.get("arch") if isinstance(info, dict) else None
    if arch not in ARCHS:
        raise RlsaeError(f"{path / 'agent.json'} has no valid arch (nature or poster)")
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


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------
def _checkpoints(out: Path) -> list[tuple[int, Path]]:
    found = []
    ck = out / "checkpoints"
    if ck.is_dir():
        for p in ck.iterdir():
            m = re.fullmatch(r"step_(\d+)", p.name)
            if m and (p / "model.zip").is_file() and (p / "agent.json").is_file():
                found.append((int(m.group(1)), p))
    return sorted(found)


def list_checkpoints(agent_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint agent directories of a training run, oldest first."""
    return [p for _, p in _checkpoints(Path(agent_dir))]


def _agent_info(
    arch: str, seed: int, steps: int, cfg: DQNConfig, env: EnvConfig, n_envs: int
) -> dict:
    return {
        "arch": arch,
        "env_id": ENV_ID,
        "seed": seed,
        "steps_trained": int(steps),
        "n_envs": n_envs,
        "hyperparameters": asdict(cfg),
        "env": env.to_dict(),
    }


def _save_agent(model: Any, dest: Path, info: dict) -> None:
    """Write model.zip then agent.json, each atomically (agent.json marks completion)."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".model.tmp.zip"
    model.save(str(tmp))
    os.replace(tmp, dest / "model.zip")
    atomic_write_json(dest / "agent.json", info)


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

    ``overrides`` replace fields of :class:`DQNConfig` or :class:`EnvConfig` (e.g.
    ``buffer_size=5000, learning_starts=500, batch_size=32``). ``checkpoint_every`` saves a
    loadable agent to ``checkpoints/step_N`` every N env steps. ``resume`` continues an
    interrupted run from its last checkpoint (or extends a finished one to ``steps``).
    Training runs on ``torch_threads`` intra-op threads (default 1: on the 2-core machine,
    under load, one thread was 2-4x faster per gradient step and per action choice than two;
    ``None`` keeps torch's setting). ``device`` is passed to SB3 (e.g. ``"cuda"``); saved
    agents load on the CPU.
    """
    with _threads.torch_threads(torch_threads):
        return _train(
            arch, steps, out_dir, seed, checkpoint_every, n_envs, resume, progress, overrides,
            device,
        )  # fmt: skip


def _train(
    arch, steps, out_dir, seed, checkpoint_every, n_envs, resume, progress, overrides, device
) -> Path:
    from stable_baselines3 import DQN

    if arch not in ARCHS:
        raise RlsaeError(f"unknown architecture {arch!r}; use nature or poster")
    if steps < 1:
        raise RlsaeError(f"steps must be at least 1, got {steps}")
    if checkpoint_every is not None and checkpoint_every < 1:
        raise RlsaeError(f"checkpoint_every must be positive, got {checkpoint_every}")
    out = Path(out_dir)
    train_json = out / "train.json"
    started = train_json.is_file()
    if out.exists() and any(out.iterdir()) and not resume:
        what = "a finished agent" if (out / "agent.json").is_file() else "an interrupted run"
        raise RlsaeError(
            f"{out} already holds {what}; pass --resume to continue or choose another --out"
        )

    if resume and started:
        saved = read_json(train_json)
        if saved.get("arch") != arch:
            raise RlsaeError(f"{out} holds a {saved.get('arch')} run, cannot resume it as {arch}")
        cfg = DQNConfig(**saved["hyperparameters"])
        env_cfg = EnvConfig.from_dict(saved["env"])
        seed, n_envs = int(saved["seed"]), int(saved["n_envs"])
        checkpoint_every = (
            saved.get("checkpoint_every") if checkpoint_every is None else checkpoint_every
        )
    else:
        cfg, env_cfg = build_configs(arch, overrides)
    if n_envs < 1:
        raise RlsaeError(f"n_envs must be at least 1, got {n_envs}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        train_json,
        {
            "arch": arch,
            "steps": int(steps),
            "seed": seed,
            "n_envs": n_envs,
            "checkpoint_every": checkpoint_every,
            "hyperparameters": asdict(cfg),
            "env": env_cfg.to_dict(),
        },
    )

    env = make_vec_env(env_cfg, n_envs, seed=seed)
    sb3_kwargs = {k: v for k, v in asdict(cfg).items() if k != "save_replay_buffer"}
    rb_kwargs = {"handle_timeout_termination": False} if cfg.optimize_memory_usage else None
    model = None
    done_steps = 0
    if resume:
        final_info = out / "agent.json"
        ckpts = _checkpoints(out)
        src = out if final_info.is_file() else (ckpts[-1][1] if ckpts else None)
        if src is not None:
            model = DQN.load(str(src / "model.zip"), env=env, device=device)
            done_steps = int(model.num_timesteps)
            rb = out / "resume" / "replay_buffer.pkl"
            rb_meta = out / "resume" / "replay_buffer.json"
            if rb.is_file() and rb_meta.is_file() and read_json(rb_meta).get("step") == done_steps:
                model.load_replay_buffer(str(rb))
    if model is None:
        torch.manual_seed(seed)
        model = DQN(
            "CnnPolicy",
            env,
            policy_kwargs=policy_kwargs(arch),
            replay_buffer_kwargs=rb_kwargs,
            tensorboard_log=str(out / "tensorboard"),
            seed=seed,
            device=device,
            verbose=0,
            **sb3_kwargs,
        )
    if done_steps >= steps:
        env.close()
        if not (out / "agent.json").is_file():
            _save_agent(model, out, _agent_info(arch, seed, done_steps, cfg, env_cfg, n_envs))
        return out
    # a resumed finished run is being extended: it is no longer finished
    with contextlib.suppress(FileNotFoundError):
        (out / "agent.json").unlink()

    callback = _TrainCallback(
        out, arch, seed, cfg, env_cfg, n_envs, checkpoint_every, steps, done_steps, progress
    )
    try:
        model.learn(
            total_timesteps=steps - done_steps,
            callback=callback,
            reset_num_timesteps=done_steps == 0,
            tb_log_name="DQN",
            log_interval=4,
        )
    finally:
        callback.close()
        env.close()
    _save_agent(model, out, _agent_info(arch, seed, model.num_timesteps, cfg, env_cfg, n_envs))
    shutil.rmtree(out / "resume", ignore_errors=True)
    return out


def _make_callback_base() -> type:
    from stable_baselines3.common.callbacks import BaseCallback

    return BaseCallback


class _TrainCallback(_make_callback_base()):  # type: ignore[misc]
    """Checkpoints every N env steps (agent dir + replay buffer) and a tqdm bar on stderr."""

    def __init__(self, out, arch, seed, cfg, env_cfg, n_envs, every, total, start, progress):
        super().__init__(verbose=0)
        self.out, self.arch, self.seed = out, arch, seed
        self.cfg, self.env_cfg, self.n_envs = cfg, env_cfg, n_envs
        self.every = every
        self.next_ckpt = ((start // every) + 1) * every if every else None
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc="dqn train", unit="step", leave=False)
        self.last = start

    def _on_step(self) -> bool:
        n = int(self.model.num_timesteps)
        if self.bar is not None:
            self.bar.update(n - self.last)
        self.last = n
        if self.next_ckpt is not None and n >= self.next_ckpt:
            self._checkpoint(n)
            while self.next_ckpt <= n:
                self.next_ckpt += self.every
        return True

    def _checkpoint(self, n: int) -> None:
        final = self.out / "checkpoints" / f"step_{n}"
        with atomic_dir(final, overwrite=True) as tmp:
            info = _agent_info(self.arch, self.seed, n, self.cfg, self.env_cfg, self.n_envs)
            _save_agent(self.model, tmp, info)
        if self.cfg.save_replay_buffer:
            res = self.out / "resume"
            res.mkdir(exist_ok=True)
            tmp_rb = res / ".replay_buffer.tmp.pkl"
            self.model.save_replay_buffer(str(tmp_rb))
            os.replace(tmp_rb, res / "replay_buffer.pkl")
            atomic_write_json(res / "replay_buffer.json", {"step": n})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def agent_summary(agent_dir: str | os.PathLike) -> dict[str, Any]:
    """agent.json plus the layer table, for ``dqn layers``."""
    agent = load_agent(agent_dir)
    return {
        "agent": str(agent.path),
        "arch": agent.arch,
        "steps_trained": agent.info.get("steps_trained"),
        "layers": agent.layers(),
        "checkpoints": [str(p) for p in list_checkpoints(agent_dir)],
    }


__all__ = [
    "Agent",
    "DQNConfig",
    "LAYERS",
    "agent_summary",
    "build_configs",
    "default_config",
    "evaluate_agent",
    "list_checkpoints",
    "load_agent",
    "train_dqn",
]


def evaluate_agent(
    agent_dir: Any, episodes: int = 10, epsilon: float = 0.0, seed: int = 0, **kw: Any
) -> dict:
    """Re-export of :func:`rlsae.agents.evaluate.evaluate_agent`."""
    from rlsae.agents.evaluate import evaluate_agent as _evaluate

    return _evaluate(agent_dir, episodes=episodes, epsilon=epsilon, seed=seed, **kw)
