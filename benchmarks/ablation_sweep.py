"""Ablation-sweep throughput: live features ablated per minute (``rlsae dqn sweep``).

A poster agent (``--agent``, or a tiny one trained here for 200 steps), its ``fc1`` recorded for
``--rows`` rows, a TopK SAE trained on them, then every live feature ablated in turn over
``--episodes`` episodes of at most ``--steps`` steps (each feature is one more set of episodes;
the spliced pass computes every ablation's greedy action in one batch). Prints one JSON line.

    python benchmarks/ablation_sweep.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agent", type=Path, default=None, help="poster agent (default: tiny)")
    ap.add_argument("--rows", type=int, default=240)
    ap.add_argument("--d-sae", type=int, default=64)
    ap.add_argument("--episodes", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from rlsae.agents.dqn import train_dqn
    from rlsae.agents.record import record_activations
    from rlsae.agents.sweep import ablation_sweep
    from rlsae.sae.config import TrainConfig
    from rlsae.sae.train import train_sae

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        agent = args.agent
        if agent is None:
            agent = train_dqn(
                "poster", 200, root / "agent", seed=0, progress=False, buffer_size=400,
                learning_starts=100, batch_size=4, train_freq=40, target_update_interval=50,
            )  # fmt: skip
        acts = record_activations(
            agent, "fc1", args.rows, root / "acts", epsilon=0.3, seed=5, progress=False
        )
        sae = root / "sae"
        cfg = TrainConfig(d_sae=args.d_sae, k=8, steps=50, batch_size=64)
        train_sae(acts, sae, cfg, progress=False)
        t0 = time.perf_counter()
        res = ablation_sweep(
            agent, sae, acts, episodes=args.episodes, max_episode_steps=args.steps,
            torch_threads=args.threads,
        )  # fmt: skip
        wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "features": len(res.rows),
                "episodes": res.episodes,
                "states": res.states,
                "seconds": round(wall, 1),
                "features_per_minute": round(res.features_per_minute, 2),
                "threads": args.threads,
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
