"""Steps/s of ``dqn eval`` and ``dqn record`` beside the floor (the bare batched forward).

For the poster network and NatureCNN (random weights, imported through ``dqn import`` so the
agents are ordinary agent directories), at 1, 4, 8 and 16 emulators: the steps/s of
``evaluate_agent`` (greedy) and ``record_activations`` (fc1, epsilon 0.2), and the steps/s of the
bare batched forward of the same network (``Agent.forward(obs, "fc1")``) at the same batch size
and thread count, measured in the same run; ``eval_vs_floor`` and ``record_vs_floor`` are the
ratios (issue 13's target: >= 0.7 at 8 envs). Beside them the emulator ceiling: steps/s of the
same ``AtariVectorEnv`` of ``n`` envs alone (random actions, no network), counted as the eval
pays it (``emulator_steps_per_s``: build, seeded reset, steps) and as a recording on kept
emulators pays it (``emulator_reused_steps_per_s``: seeded reset, steps); ``eval_vs_bound`` and
``record_vs_bound`` divide by the smaller of floor and ceiling, so a row bound by the emulators,
not the network (NatureCNN), shows it. Each row measures the plain play path (``plain_*``: a new
vector env per call, all envs stepped together, lockstep RAM emulators stepped inline) and then
the fast one (the default: the eval builds its emulators, the recording reuses them; two env
groups double-buffered, the lockstep RAM emulators in a helper process) side by side, both after
a warm-up that pays the one-time imports. Prints one line per figure and, last, one JSON
object. Never asserts on time.

Usage: ``python benchmarks/agent_play.py [--steps-per-env 150] [--envs 1 4 8 16]
[--arch poster nature] [--threads 1] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

warnings.filterwarnings("ignore")


def make_agent(arch: str, root: Path) -> Path:
    """A random-weight agent of ``arch`` imported from a state dict (rlsae's names)."""
    import torch

    from rlsae.agents.importer import import_agent, rlsae_shapes

    gen = torch.Generator().manual_seed(0)
    tensors = {k: torch.randn(s, generator=gen) * 0.05 for k, s in rlsae_shapes(arch).items()}
    torch.save(tensors, root / f"{arch}.pt")
    return import_agent(root / f"{arch}.pt", root / arch, arch=arch)


def floor_rate(agent: Any, n: int, seconds: float) -> float:
    """Rows/s of the bare batched forward (Q and fc1) at batch ``n``."""
    import numpy as np

    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, (n, *agent.env_config.obs_shape), dtype=np.uint8)
    agent.forward(obs, "fc1")  # warm-up
    rows, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        agent.forward(obs, "fc1")
        rows += n
    return rows / (time.perf_counter() - t0)


def emulator_rates(agent: Any, n: int, steps_per_env: int) -> tuple[float, float]:
    """Steps/s of ``n`` emulators alone (one ``AtariVectorEnv``, random actions, no network):
    counting build, seeded reset and steps (as a first eval pays them), and reset and steps
    (as a play on kept emulators)."""
    import numpy as np

    from rlsae.agents.envs import AleVecEnv
    from rlsae.agents.rollout import episode_seed

    t0 = time.perf_counter()
    env = AleVecEnv(agent.env_config, n, seed=None, autoreset=False)
    t1 = time.perf_counter()
    actions = np.random.default_rng(0).integers(0, int(env.action_space.n), (steps_per_env, n))
    env.reset_with_seeds([episode_seed(1, i) for i in range(n)])
    for a in actions:
        env.step(a)
    t2 = time.perf_counter()
    env.close()
    return n * steps_per_env / (t2 - t0), n * steps_per_env / (t2 - t1)


def set_path(fast: bool) -> None:
    """The fast play path (``rollout.REUSE_EMULATORS``, ``OVERLAP_RAM``, ``OVERLAP_ENVS``) or
    the plain one; both play the same games (``tests/agents/test_play_speed.py``)."""
    from rlsae.agents import rollout

    if not fast:
        rollout.close_idle_emulators()
    rollout.REUSE_EMULATORS = rollout.OVERLAP_RAM = rollout.OVERLAP_ENVS = fast


def play_rates(agent: Any, n: int, steps_per_env: int, root: Path, tag: str) -> tuple[float, float]:
    """Steps/s of ``evaluate_agent`` then ``record_activations`` (fc1) on ``n`` envs."""
    from rlsae.agents.evaluate import evaluate_agent
    from rlsae.agents.record import record_activations

    t0 = time.perf_counter()
    ev = evaluate_agent(agent, episodes=n, n_envs=n, max_episode_steps=steps_per_env)
    eval_rate = sum(ev.lengths) / (time.perf_counter() - t0)
    out = root / f"rec-{agent.arch}-{n}-{tag}"
    t0 = time.perf_counter()
    record_activations(
        agent, "fc1", n * steps_per_env, out, n_envs=n, max_episode_steps=steps_per_env,
        progress=False,
    )  # fmt: skip
    record_rate = n * steps_per_env / (time.perf_counter() - t0)
    return eval_rate, record_rate


def measure(
    arch: str, agent_dir: Path, n: int, steps_per_env: int, root: Path, repeat: int = 1
) -> dict:
    """The plain path, then the fast path (its eval builds the emulators, its record reuses
    them), ``repeat`` times in turn (the best rate of each), then the floor: side by side."""
    from rlsae.agents.dqn import load_agent

    agent = load_agent(agent_dir)
    floor_rate(agent, n, seconds=0.3)  # warm-up: torch's first forward at batch n is slow
    plain_eval = plain_record = eval_rate = record_rate = emu = emu_reused = 0.0
    for r in range(repeat):
        set_path(fast=False)
        pe, pr = play_rates(agent, n, steps_per_env, root, f"plain{r}")
        set_path(fast=True)
        fe, fr = play_rates(agent, n, steps_per_env, root, f"fast{r}")
        set_path(fast=False)  # the next fast eval builds its emulators again
        ef, er = emulator_rates(agent, n, steps_per_env)
        plain_eval, plain_record = max(plain_eval, pe), max(plain_record, pr)
        eval_rate, record_rate = max(eval_rate, fe), max(record_rate, fr)
        emu, emu_reused = max(emu, ef), max(emu_reused, er)
    floor = floor_rate(agent, n, seconds=2.0)
    return {
        "arch": arch,
        "n_envs": n,
        "eval_steps_per_s": round(eval_rate, 1),
        "record_steps_per_s": round(record_rate, 1),
        "floor_steps_per_s": round(floor, 1),
        "eval_vs_floor": round(eval_rate / floor, 3),
        "record_vs_floor": round(record_rate / floor, 3),
        "plain_eval_steps_per_s": round(plain_eval, 1),
        "plain_record_steps_per_s": round(plain_record, 1),
        "plain_eval_vs_floor": round(plain_eval / floor, 3),
        "plain_record_vs_floor": round(plain_record / floor, 3),
        "emulator_steps_per_s": round(emu, 1),
        "emulator_reused_steps_per_s": round(emu_reused, 1),
        "eval_vs_bound": round(eval_rate / min(floor, emu), 3),
        "record_vs_bound": round(record_rate / min(floor, emu_reused), 3),
    }


def warm_up(agent_dir: Path, root: Path) -> None:
    """One tiny eval and recording, so no row pays the one-time imports (pandas, pyarrow)."""
    from rlsae.agents.dqn import load_agent

    play_rates(load_agent(agent_dir), 1, 5, root, "warm-up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-per-env", type=int, default=150)
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--arch", nargs="+", default=["poster", "nature"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="plain/fast pairs per row (best of)")
    args = ap.parse_args()

    from rlsae.threads import torch_threads

    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch_threads(args.threads):
        root = Path(tmp)
        for arch in args.arch:
            agent_dir = make_agent(arch, root)
            warm_up(agent_dir, root)
            for n in args.envs:
                r = measure(arch, agent_dir, n, args.steps_per_env, root, args.repeat)
                rows.append(r)
                print(
                    f"{arch:6s} {n:3d} envs: eval {r['eval_steps_per_s']:8.1f}/s  record "
                    f"{r['record_steps_per_s']:8.1f}/s  floor {r['floor_steps_per_s']:8.1f}/s  "
                    f"(eval {r['eval_vs_floor']:.2f}, record {r['record_vs_floor']:.2f} of it; "
                    f"plain path: eval {r['plain_eval_steps_per_s']:.1f}/s "
                    f"{r['plain_eval_vs_floor']:.2f}, record {r['plain_record_steps_per_s']:.1f}/s "
                    f"{r['plain_record_vs_floor']:.2f}); emulators alone "
                    f"{r['emulator_steps_per_s']:.1f}/s, reused {r['emulator_reused_steps_per_s']:.1f}/s"
                    f" (eval {r['eval_vs_bound']:.2f}, record {r['record_vs_bound']:.2f} of "
                    "min(floor, emulators))",
                    flush=True,
                )
    print(
        json.dumps(
            {
                "benchmark": "agent_play",
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "threads": args.threads,
                "steps_per_env": args.steps_per_env,
                "repeat": args.repeat,
                "load_average": os.getloadavg(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
