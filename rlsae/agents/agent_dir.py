"""The layout of an agent directory, readable without torch: its checkpoints and ``agent.json``.

::

    AGENT/
      model.zip              the SB3 DQN
      agent.json             AgentInfo; written last, so it marks a finished agent
      train.json             the run's DQNTrainConfig (a resume must match it)
      checkpoints/step_N/    each a loadable agent directory, published whole
      resume/step_S/         the run's whole state at the latest checkpoint (train_state.py),
                             while training is resumable
      tensorboard/
      eval.json              Evaluation, when ``dqn eval`` saved one
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

from rlsae.agents.config import DQNTrainConfig
from rlsae.agents.results import AgentInfo
from rlsae.configs import differing_keys, from_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json, read_json


class Checkpoint(NamedTuple):
    """One published checkpoint of a training run: its env step and its agent directory."""

    step: int
    path: Path


def list_checkpoints(agent_dir: str | os.PathLike) -> list[Checkpoint]:
    """The checkpoints of a training run (``checkpoints/step_N`` with a model), oldest first.

    Checkpoints are published whole (written in a temporary directory, then renamed), so every
    listed one is a loadable agent directory.
    """
    found = []
    ck = Path(agent_dir) / "checkpoints"
    if ck.is_dir():
        for p in ck.iterdir():
            m = re.fullmatch(r"step_(\d+)", p.name)
            if m and (p / "model.zip").is_file():
                found.append(Checkpoint(int(m.group(1)), p))
    return sorted(found)


def read_agent_info(agent_dir: str | os.PathLike) -> AgentInfo:
    """The ``agent.json`` of an agent directory (missing, foreign, bad arch: one-line error)."""
    return AgentInfo.read(Path(agent_dir) / "agent.json")


def check_agent_dir(agent_dir: str | os.PathLike) -> AgentInfo:
    """Refuse (one line) a path that is not an agent directory; its ``agent.json``."""
    path = Path(agent_dir)
    if not path.is_dir():
        raise RlsaeError(f"agent directory {path} not found")
    zip_path = path / "model.zip"
    if not zip_path.is_file():
        raise RlsaeError(f"{zip_path} not found; is {path} an agent directory (dqn train --out)?")
    return read_agent_info(path)


def buffer_bytes(cfg: DQNTrainConfig) -> int:
    """Bytes SB3's replay buffer allocates for ``cfg``: ``buffer_size`` transitions (split over
    the envs), each observation stored once with ``optimize_memory_usage``, else twice."""
    per_env = max(cfg.hyperparameters.buffer_size // cfg.n_envs, 1)
    copies = 1 if cfg.hyperparameters.optimize_memory_usage else 2
    return per_env * cfg.n_envs * int(math.prod(cfg.env.obs_shape)) * copies


def check_buffer_memory(cfg: DQNTrainConfig, where: str = "dqn train") -> None:
    """Refuse, in one line and before anything is written, a replay buffer or a training batch
    (its observations and next observations) larger than the machine's memory and swap: numpy
    cannot allocate it (a traceback after ``train.json`` was written) or the run would be
    killed once the buffer fills."""
    have = _memory_and_swap()
    hp = cfg.hyperparameters
    for name, count, need in (
        ("buffer_size", hp.buffer_size, buffer_bytes(cfg)),
        ("batch_size", hp.batch_size, hp.batch_size * 2 * int(math.prod(cfg.env.obs_shape))),
    ):
        if need > have:
            what = "replay buffer" if name == "buffer_size" else "training batch"
            raise RlsaeError(
                f"{where}: {name}: a {what} of {count} transitions of {cfg.env.obs_shape} "
                f"frames needs {need / 2**30:.1f} GiB, more than this machine's "
                f"{have / 2**30:.1f} GiB of memory and swap; lower --{name.replace('_', '-')}"
            )


def _memory_and_swap() -> int:
    """Physical memory plus swap, in bytes (swap from /proc/meminfo where there is one)."""
    have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("SwapTotal:"):
                have += int(line.split()[1]) * 1024
    return int(have)


def check_train_dir(cfg: DQNTrainConfig, out: Path, resume: bool) -> DQNTrainConfig:
    """Refuse an occupied ``out`` without ``resume``, or a resume with other settings than the
    run's ``train.json`` (one line naming each difference); writes nothing. Returns the config
    to train with (a resume keeps the saved checkpoint interval unless a new one is given)."""
    check_buffer_memory(cfg)
    out = Path(out)
    train_json = out / "train.json"
    if out.exists() and not out.is_dir():
        raise RlsaeError(f"{out} is a file; --out must be a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        what = "a finished agent" if (out / "agent.json").is_file() else "an interrupted run"
        raise RlsaeError(
            f"{out} already holds {what}; pass --resume to continue or choose another --out"
        )
    if resume and out.is_dir() and any(out.iterdir()) and not train_json.is_file():
        raise RlsaeError(
            f"{out} is not a DQN training directory (no train.json); nothing to resume there"
        )
    if resume and train_json.is_file():
        saved = from_mapping(DQNTrainConfig, read_json(train_json), str(train_json))
        if saved.arch != cfg.arch:
            raise RlsaeError(f"{out} holds a {saved.arch} run, cannot resume it as {cfg.arch}")
        _refuse_other_settings(out, saved, cfg)
        if cfg.checkpoint_every is None:
            return replace(cfg, checkpoint_every=saved.checkpoint_every)
    return cfg


def claim_train_dir(cfg: DQNTrainConfig, out: Path, resume: bool) -> DQNTrainConfig:
    """:func:`check_train_dir`, then make ``out`` ready: delete what writes a killed run left
    half-way and write ``train.json``. Returns the config to train with."""
    cfg = check_train_dir(cfg, out, resume)
    out = Path(out)
    if resume:
        _remove_interrupted_writes(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "train.json", to_mapping(cfg))
    return cfg


# what a write killed half-way leaves in an agent directory (atomic_dir, atomic_write_json and
# the model/replay-buffer renames all write under these names first)
_INTERRUPTED = (
    ".model.tmp.zip",
    ".*.json.*",
    "checkpoints/.step_*.tmp-*",
    "checkpoints/.step_*.old-*",
    "resume/.step_*.tmp-*",
    "resume/.replay_buffer.tmp.pkl",  # left by runs from before train_state.py
    "resume/.*.json.*",
)


def _remove_interrupted_writes(out: Path) -> None:
    """Delete the temporary files of writes a killed run left, so none reaches the finished
    agent directory."""
    for pattern in _INTERRUPTED:
        for p in out.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _refuse_other_settings(out: Path, saved: DQNTrainConfig, new: DQNTrainConfig) -> None:
    old_fp, new_fp = saved.fingerprint(), new.fingerprint()
    keys = differing_keys(old_fp, new_fp)
    if not keys:
        return

    def value(d: Any, key: str) -> Any:
        for part in key.split("."):
            d = d.get(part) if isinstance(d, dict) else None
        return d

    shown = ", ".join(f"{k} {value(old_fp, k)!r} (now {value(new_fp, k)!r})" for k in keys[:4])
    more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
    raise RlsaeError(
        f"{out} was trained with other settings: {shown}{more}; resume with the same settings "
        "or choose another --out"
    )
