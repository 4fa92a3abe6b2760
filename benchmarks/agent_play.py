"""Steps/s of ``dqn eval`` and ``dqn record`` beside the floor (the bare batched forward).

For the poster network and NatureCNN (random weights, imported through ``dqn import`` so the agents
are ordinary agent directories), at 1, 4, 8 and 16 emulators: the steps/s of ``evaluate_agent``
(greedy) and ``record_activations`` (fc1, epsilon 0.2; the default records no RAM, ``record_ram*``
is ``dqn record --ram``, whose lockstep emulators play every game a second time, and
``ram_replay_rows_per_s`` the rows/s of regenerating a recording's RAM by replay afterwards), and
the steps/s of the bare batched forward of the same network (``Agent.forward(obs, "fc1")``) at the
same batch size and thread count, measured in the same run; ``eval_vs_floor`` and
``record_vs_floor`` are the ratios (issue 13's target: >= 0.7 at 8 envs). Beside them the emulator
ceiling: steps/s of the same ``AtariVectorEnv`` of ``n`` envs alone (random actions, no network),
counted as the eval pays it (``emulator_steps_per_s``: build, seeded reset, steps) and as a
recording on kept emulators pays it (``emulator_reused_steps_per_s``: seeded reset, steps);
``eval_vs_bound`` and ``record_vs_bound`` divide by the smaller of floor and ceiling, so a row
bound by the emulators, not the network (NatureCNN), shows it. Each row measures the plain play
path (``plain_*``: a new vector env per call, all envs stepped together) and then the fast one (the
default: the eval builds its emulators, the recording reuses them; two env groups double-buffered,
spare emulators reset ahead for restarted episodes; with ``--ram`` the lockstep RAM emulators in a
helper process) side by side, both after a warm-up that pays the one-time imports.

Two rates per fast play: over the whole call (``eval_steps_per_s``: building the emulators and
the first seeded resets included, ~75 ms of ale-py ROM loading per emulator) and in the steady
state (``eval_steady_steps_per_s``: from the first policy call to the end of the call, restarted
episodes and the recording's writes included), the regime a long eval, recording or survey
spends its time in, and the one the floor (a warmed-up forward) measures. The machine is noisy,
so each repeat times the floor right before and after its plays and divides by their mean; the
ratios are the medians over repeats (``*_vs_floor_runs`` lists each). Each env plays
``--episodes-per-env`` episodes of at most ``--steps-per-env`` steps (the recording: that many
steps in all). Prints one line per figure and, last, one JSON object. Never asserts on time.

The default workload is the one studies run: whole games (a random-weight agent's end after
400-900 steps; at most 1,000) and 3 per env, so episodes restart on every env, and the emulators'
build and first seeded resets (~75 ms of ale-py ROM loading per emulator) are a small part of
the call. ``--steps-per-env 150 --episodes-per-env 1`` shows a short call, most of which that
start is.

Usage: ``python benchmarks/agent_play.py [--steps-per-env 1000] [--episodes-per-env 3]
[--envs 1 4 8 16] [--arch poster nature] [--threads 1] [--repeat 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
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


class FirstStep:
    """Times the first policy call of every ``play`` the eval and the recording make (a wrapper
    around ``rollout.play`` in their modules): the emulators are built and reset, and the steady
    state starts there (not at the first batch yielded: a recording yields its steps once their
    RAM has come, up to 64 steps later)."""

    def __init__(self) -> None:
        from rlsae.agents import evaluate, record

        self.modules = (evaluate, record)
        self.play = evaluate.play
        self.at = 0.0

    def __enter__(self) -> FirstStep:
        def timed(cfg: Any, policy: Any, **kw: Any) -> Any:
            self.at = 0.0

            def first_timed(obs: Any) -> Any:
                self.at = self.at or time.perf_counter()
                return policy(obs)

            return self.play(cfg, first_timed, **kw)

        for m in self.modules:
            m.play = timed  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: object) -> None:
        for m in self.modules:
            m.play = self.play  # type: ignore[attr-defined]


def play_rates(
    agent: Any, n: int, steps_per_env: int, episodes_per_env: int, root: Path, tag: str,
    with_ram: bool = False,
) -> dict[str, float]:  # fmt: skip
    """Steps/s of ``evaluate_agent`` then ``record_activations`` (fc1) on ``n`` envs: over the
    whole call (``eval``, ``record``) and from its first policy call on (``*_steady``), and the
    seconds to that call (``*_start_s``). With ``with_ram`` also the recording with the RAM read
    in lockstep (``record_ram*``, ``dqn record --ram``) and the rows/s of regenerating the first
    recording's RAM by replay (``ram_replay``, what ``dqn concepts`` pays once per store)."""
    from rlsae.agents.evaluate import evaluate_agent
    from rlsae.agents.ram import recording_ram
    from rlsae.agents.record import record_activations

    out: dict[str, float] = {}
    with FirstStep() as first:
        t0 = time.perf_counter()
        ev = evaluate_agent(
            agent, episodes=episodes_per_env * n, n_envs=n, max_episode_steps=steps_per_env
        )
        t1 = time.perf_counter()
        steps = sum(ev.lengths)
        out["eval"], out["eval_start_s"] = steps / (t1 - t0), first.at - t0
        out["eval_steady"] = steps / (t1 - first.at)
        steps = episodes_per_env * n * steps_per_env
        t0 = time.perf_counter()
        store = record_activations(
            agent, "fc1", steps, root / f"rec-{agent.arch}-{n}-{tag}", n_envs=n,
            max_episode_steps=steps_per_env, progress=False,
        )  # fmt: skip
        t1 = time.perf_counter()
        out["record"], out["record_start_s"] = steps / (t1 - t0), first.at - t0
        out["record_steady"] = steps / (t1 - first.at)
        if not with_ram:
            return out
        t0 = time.perf_counter()
        record_activations(
            agent, "fc1", steps, root / f"rec-{agent.arch}-{n}-{tag}-ram", n_envs=n,
            max_episode_steps=steps_per_env, progress=False, ram=True,
        )  # fmt: skip
        t1 = time.perf_counter()
        out["record_ram"], out["record_ram_steady"] = steps / (t1 - t0), steps / (t1 - first.at)
    t0 = time.perf_counter()
    recording_ram(store)
    out["ram_replay"] = steps / (time.perf_counter() - t0)
    return out


def measure(
    arch: str, agent_dir: Path, n: int, steps_per_env: int, episodes_per_env: int, root: Path,
    repeat: int = 1,
) -> dict:  # fmt: skip
    """Per repeat: the floor, the plain path, the fast path (its eval builds the emulators, its
    record reuses them), the emulators alone, the floor again; the best rate of each over the
    repeats, and the median of each repeat's ratio to the mean of its two floors."""
    from rlsae.agents.dqn import load_agent

    agent = load_agent(agent_dir)
    floor_rate(agent, n, seconds=0.3)  # warm-up: torch's first forward at batch n is slow
    best: dict[str, float] = {}
    ratios: dict[str, list[float]] = {}
    for r in range(repeat):
        before = floor_rate(agent, n, seconds=1.0)
        set_path(fast=False)
        plain = play_rates(agent, n, steps_per_env, episodes_per_env, root, f"plain{r}")
        set_path(fast=True)
        fast = play_rates(agent, n, steps_per_env, episodes_per_env, root, f"fast{r}", True)
        set_path(fast=False)  # the next fast eval builds its emulators again
        emu, emu_reused = emulator_rates(agent, n, steps_per_env)
        floor = (before + floor_rate(agent, n, seconds=1.0)) / 2
        rates = {
            **fast, **{f"plain_{k}": v for k, v in plain.items()}, "floor": floor,
            "emulator": emu, "emulator_reused": emu_reused,
        }  # fmt: skip
        for k, v in rates.items():
            best[k] = max(best.get(k, 0.0), v) if not k.endswith("_start_s") else min(
                best.get(k, float("inf")), v
            )  # fmt: skip
        for k in ("eval", "record", "eval_steady", "record_steady", "plain_eval", "plain_record",
                  "record_ram", "record_ram_steady"):  # fmt: skip
            ratios.setdefault(k, []).append(rates[k] / floor)
        ratios.setdefault("eval_bound", []).append(fast["eval"] / min(floor, emu))
        ratios.setdefault("record_bound", []).append(fast["record"] / min(floor, emu_reused))

    def med(k: str) -> float:
        return round(statistics.median(ratios[k]), 3)

    return {
        "arch": arch,
        "n_envs": n,
        "eval_steps_per_s": round(best["eval"], 1),
        "record_steps_per_s": round(best["record"], 1),
        "eval_steady_steps_per_s": round(best["eval_steady"], 1),
        "record_steady_steps_per_s": round(best["record_steady"], 1),
        "eval_start_s": round(best["eval_start_s"], 3),
        "record_start_s": round(best["record_start_s"], 3),
        "floor_steps_per_s": round(best["floor"], 1),
        "eval_vs_floor": med("eval"),
        "record_vs_floor": med("record"),
        "eval_steady_vs_floor": med("eval_steady"),
        "record_steady_vs_floor": med("record_steady"),
        "eval_vs_floor_runs": [round(x, 3) for x in ratios["eval"]],
        "record_vs_floor_runs": [round(x, 3) for x in ratios["record"]],
        "eval_steady_vs_floor_runs": [round(x, 3) for x in ratios["eval_steady"]],
        "record_steady_vs_floor_runs": [round(x, 3) for x in ratios["record_steady"]],
        "record_ram_steps_per_s": round(best["record_ram"], 1),
        "record_ram_vs_floor": med("record_ram"),
        "record_ram_steady_vs_floor": med("record_ram_steady"),
        "ram_replay_rows_per_s": round(best["ram_replay"], 1),
        "plain_eval_steps_per_s": round(best["plain_eval"], 1),
        "plain_record_steps_per_s": round(best["plain_record"], 1),
        "plain_eval_vs_floor": med("plain_eval"),
        "plain_record_vs_floor": med("plain_record"),
        "emulator_steps_per_s": round(best["emulator"], 1),
        "emulator_reused_steps_per_s": round(best["emulator_reused"], 1),
        "eval_vs_bound": med("eval_bound"),
        "record_vs_bound": med("record_bound"),
    }


def warm_up(agent_dir: Path, root: Path) -> None:
    """One tiny eval and recording, so no row pays the one-time imports (pandas, pyarrow)."""
    from rlsae.agents.dqn import load_agent

    play_rates(load_agent(agent_dir), 1, 5, 1, root, "warm-up")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-per-env", type=int, default=1000)
    ap.add_argument("--episodes-per-env", type=int, default=3)
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
                r = measure(
                    arch, agent_dir, n, args.steps_per_env, args.episodes_per_env, root,
                    args.repeat,
                )  # fmt: skip
                rows.append(r)
                print(
                    f"{arch:6s} {n:3d} envs: eval {r['eval_steps_per_s']:8.1f}/s  record "
                    f"{r['record_steps_per_s']:8.1f}/s  floor {r['floor_steps_per_s']:8.1f}/s  "
                    f"(eval {r['eval_vs_floor']:.2f}, record {r['record_vs_floor']:.2f} of it; "
                    f"steady state: eval {r['eval_steady_steps_per_s']:.1f}/s "
                    f"{r['eval_steady_vs_floor']:.2f}, record {r['record_steady_steps_per_s']:.1f}/s "
                    f"{r['record_steady_vs_floor']:.2f}, after {r['eval_start_s']:.2f} s / "
                    f"{r['record_start_s']:.2f} s to the first forward; record --ram "
                    f"{r['record_ram_steps_per_s']:.1f}/s {r['record_ram_vs_floor']:.2f}, steady "
                    f"{r['record_ram_steady_vs_floor']:.2f}; RAM replayed at "
                    f"{r['ram_replay_rows_per_s']:.1f} rows/s; "
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
                "episodes_per_env": args.episodes_per_env,
                "repeat": args.repeat,
                "load_average": os.getloadavg(),
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
