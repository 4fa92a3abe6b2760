"""Ms. Pac-Man throughput: our C++ vector env vs SB3's make_atari_env + VecFrameStack.

Measured side by side in one run:

1. environment steps/s with random actions (alternating measurement windows), same game,
   same number of envs, nature
   observations (84x84 gray, 4 stacked), ours vs SB3's path  -> ``env_ratio``; the same for
   poster observations (RGB 210x160) against SB3's ``make_vec_env``  -> ``env_ratio_poster``;
2. DQN training steps/s (SB3 DQN, NatureCNN, identical hyperparameters) on both env paths
   -> ``train_ratio``; plus the poster network's training rate (env steps/s and gradient
   steps/s) at batch 32 and at the poster's batch 256, for planning budgets;
3. recording steps/s (poster agent, fc1, epsilon 0.2)  -> ``record_steps_per_s``.

Prints one line per figure on stderr-free stdout and, last, one JSON object. Never asserts
on time. Usage: ``python benchmarks/atari_throughput.py [--n-envs 2] [--seconds 8]``.
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

import numpy as np

warnings.filterwarnings("ignore")


def env_rates(ours, ref, n_envs: int, seconds: float, windows: int = 4) -> tuple[float, float]:
    """Steps/s of two envs measured in alternating windows (so load from other processes on a
    shared machine hits both alike); returns the totals' rates."""
    rng = np.random.default_rng(0)
    totals = {"ours": [0, 0.0], "ref": [0, 0.0]}
    ours.reset()
    ref.reset()
    for _ in range(windows):
        for name, env in (("ours", ours), ("ref", ref)):
            steps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / windows:
                env.step(rng.integers(0, 9, n_envs))
                steps += n_envs
            totals[name][0] += steps
            totals[name][1] += time.perf_counter() - t0
    ours.close()
    ref.close()
    return totals["ours"][0] / totals["ours"][1], totals["ref"][0] / totals["ref"][1]


def train_rate(env, arch: str, steps: int, **kw) -> tuple[float, float]:
    """(env steps/s, gradient steps/s) of SB3 DQN learning after a short warm-up."""
    import torch
    from stable_baselines3 import DQN

    from rlsae.agents.networks import policy_kwargs

    torch.set_num_threads(1)
    hp = dict(buffer_size=2000, learning_starts=200, batch_size=32, train_freq=4,
              target_update_interval=500, optimize_memory_usage=True,
              replay_buffer_kwargs={"handle_timeout_termination": False})  # fmt: skip
    hp.update(kw)
    model = DQN("CnnPolicy", env, policy_kwargs=policy_kwargs(arch), device="cpu", seed=0, **hp)
    model.learn(hp["learning_starts"] + 2 * hp["train_freq"])  # fill the buffer, warm up
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    dt = time.perf_counter() - t0
    env.close()
    n_envs = env.num_envs
    grad_steps = (
        steps / (hp["train_freq"] * n_envs) * n_envs
    )  # SB3: one update per train_freq calls
    return steps / dt, grad_steps / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=12.0, help="per env and per env path")
    ap.add_argument("--train-steps", type=int, default=600, help="env steps per training figure")
    ap.add_argument("--record-steps", type=int, default=1000)
    args = ap.parse_args()

    from rlsae.agents.dqn import train_dqn
    from rlsae.agents.envs import EnvConfig, make_reference_env, make_vec_env
    from rlsae.agents.record import record_activations

    n = args.n_envs
    res: dict = {"machine": f"{platform.machine()} {os.cpu_count()} cpu", "n_envs": n}

    res["env_steps_per_s_ours"], res["env_steps_per_s_sb3"] = env_rates(
        make_vec_env("nature", n, seed=0), make_reference_env("nature", n, seed=0), n, args.seconds
    )
    res["env_ratio"] = res["env_steps_per_s_ours"] / res["env_steps_per_s_sb3"]
    print(
        f"env nature  ours {res['env_steps_per_s_ours']:.0f}/s  sb3 {res['env_steps_per_s_sb3']:.0f}/s  ratio {res['env_ratio']:.2f}"
    )

    res["env_steps_per_s_ours_poster"], res["env_steps_per_s_sb3_poster"] = env_rates(
        make_vec_env("poster", n, seed=0), make_reference_env("poster", n, seed=0), n, args.seconds
    )
    res["env_ratio_poster"] = res["env_steps_per_s_ours_poster"] / res["env_steps_per_s_sb3_poster"]
    print(
        f"env poster  ours {res['env_steps_per_s_ours_poster']:.0f}/s  sb3 {res['env_steps_per_s_sb3_poster']:.0f}/s  ratio {res['env_ratio_poster']:.2f}"
    )

    ours, _ = train_rate(
        make_vec_env(EnvConfig(mode="nature"), n, seed=0), "nature", args.train_steps
    )
    ref, _ = train_rate(make_reference_env("nature", n, seed=0), "nature", args.train_steps)
    res["train_steps_per_s_ours"], res["train_steps_per_s_sb3"] = ours, ref
    res["train_ratio"] = ours / ref
    print(
        f"train nature (batch 32, train_freq 4)  ours {ours:.1f}/s  sb3 {ref:.1f}/s  ratio {res['train_ratio']:.2f}"
    )

    for batch in (32, 256):
        steps = args.train_steps // 2 if batch == 32 else 40
        es, gs = train_rate(make_vec_env("poster", 1, seed=0), "poster", steps, batch_size=batch)
        res[f"poster_train_env_steps_per_s_b{batch}"] = es
        res[f"poster_grad_steps_per_s_b{batch}"] = gs
        print(
            f"train poster 1 env, batch {batch}, train_freq 4: {es:.1f} env steps/s, {gs:.2f} gradient steps/s"
        )

    with tempfile.TemporaryDirectory() as tmp:
        agent = train_dqn("poster", 300, Path(tmp) / "a", seed=0, progress=False,
                          buffer_size=500, learning_starts=100, batch_size=8, train_freq=50)  # fmt: skip
        t0 = time.perf_counter()
        record_activations(agent, "fc1", args.record_steps, Path(tmp) / "acts", epsilon=0.2,
                           n_envs=4, progress=False)  # fmt: skip
        res["record_steps_per_s"] = args.record_steps / (time.perf_counter() - t0)
    print(f"record poster fc1 (4 envs, epsilon 0.2): {res['record_steps_per_s']:.0f} steps/s")
    res["load_avg_1min"] = os.getloadavg()[0]
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items()}))


if __name__ == "__main__":
    main()
