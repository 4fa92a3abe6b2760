"""The built-in presets of both studies: ``smoke`` (CI), ``demo`` (a laptop), ``paper``.

Each is a plain mapping in its study's config format (:mod:`rlsae.study.atari_config`,
:mod:`rlsae.study.llm_config`), built and validated by the engine like a config file; write one
out with ``rlsae pipeline atari --preset demo --print-config`` and edit it to make your own.
"""

from __future__ import annotations

from typing import Any

SMOKE: dict[str, Any] = {
    "name": "smoke",
    "population": {
        # four checkpoints along one tiny run (the fit needs at least four agents); the agents
        # barely differ: this preset checks the plumbing, not the science
        "arch": "poster",
        "train_steps": 200,
        "seeds": [0],
        "checkpoint_every": 50,
        "n_envs": 1,
        "hyperparameters": {
            "learning_starts": 50,
            "buffer_size": 500,
            "batch_size": 32,
            "train_freq": 8,
            "target_update_interval": 100,
            "save_replay_buffer": False,
        },
    },
    "recording": {"layer": "fc1", "steps": 128, "epsilon": 0.2},
    "sae": {"arch": "topk", "d_sae": 128, "k": 8, "train": {"epochs": 4, "batch_size": 32}},
    "evaluation": {
        "episodes": 1,
        "epsilon": 0.05,
        "live_threshold": 1,
        "splice_episodes": 1,
        "max_episode_steps": 100,
    },
    "fit": {"bootstrap": 200},
}

DEMO: dict[str, Any] = {
    "name": "demo",
    "population": {
        # eight checkpoints along one DQN run, from barely trained to the end of the run; sized
        # so that the whole study fits in about 15 minutes on a 2-core CPU machine
        "arch": "poster",
        "train_steps": 12_000,
        "seeds": [0],
        "checkpoint_every": 1_500,
        "hyperparameters": {
            "learning_starts": 500,
            "buffer_size": 10_000,
            "batch_size": 32,
            "train_freq": 4,
            "target_update_interval": 500,
            "exploration_initial_eps": 1.0,
            "exploration_final_eps": 0.05,
            "exploration_fraction": 0.25,
            "save_replay_buffer": False,
        },
    },
    "recording": {"layer": "fc1", "steps": 4_000, "epsilon": 0.2},
    "sae": {
        "arch": "topk",
        "d_sae": 2048,
        "k": 50,
        "train": {"epochs": 8, "batch_size": 256, "log_every": 5},
    },
    "evaluation": {"episodes": 4, "epsilon": 0.05, "live_threshold": 1, "splice_episodes": 1},
    "fit": {"bootstrap": 2000},
}

PAPER: dict[str, Any] = {
    "name": "paper",
    "population": {
        # 24 agents: 8 seeds x a 3-point learning-rate grid, each trained 2 M steps
        "arch": "poster",
        "train_steps": 2_000_000,
        "seeds": [0, 1, 2, 3, 4, 5, 6, 7],
        "grid": {"learning_rate": [0.0001, 0.00025, 0.0005]},
    },
    "recording": {"layer": "fc1", "steps": 1_500_000, "epsilon": 0.2},
    "sae": {"arch": "topk", "d_sae": 2048, "k": 50, "train": {"epochs": 3}},
    "evaluation": {"episodes": 30, "epsilon": 0.05, "live_threshold": 1, "splice_episodes": 10},
    # DQN training and SAE training run on CPU threads in this version: ask Ray for CPUs only
    "resources": {"cpus": 4, "gpus": 0},
    "fit": {"bootstrap": 5000},
}

ATARI_PRESETS: dict[str, dict[str, Any]] = {"smoke": SMOKE, "demo": DEMO, "paper": PAPER}


# --------------------------------------------------------------------------------------------
# The implicit-reward-model study

LLM_SMOKE: dict[str, Any] = {
    "name": "smoke",
    "models": ["tiny"],
    "tiny": {
        "steps": 30,
        "n_train_reviews": 400,
        "n_test_reviews": 100,
        "n_layers": 2,
        "d_model": 32,
        "d_mlp": 64,
        "vocab_size": 300,
    },
    "rlhf": {
        "reward": "utility",
        "algo": "ppo",
        "steps": 2,
        "ppo": {"batch_size": 8, "mini_batch_size": 4, "learning_rate": 1e-4, "max_new_tokens": 8},
    },
    "top_n_layers": 1,
    "prefixes": 60,
    "prefix_tokens": 16,
    "sae": {"l1": 3.0, "epochs": 1.0, "batch_size": 64},
    "top_k": 5,
    "utility_k": 8,
    "score_prefixes": 12,
    "score_prefix_tokens": 6,
    "score_new_tokens": 8,
    "threads": 1,
}

LLM_DEMO: dict[str, Any] = {
    "name": "demo",
    "models": ["tiny"],
    "tiny": {"steps": 300, "n_train_reviews": 4000, "n_test_reviews": 1000},
    "rlhf": {
        "reward": "utility",
        "algo": "ppo",
        "steps": 40,
        "ppo": {
            "batch_size": 32,
            "mini_batch_size": 8,
            "learning_rate": 3e-5,
            "init_kl_coef": 0.05,
            "max_new_tokens": 16,
        },
    },
    "top_n_layers": 2,
    "prefixes": 1000,
    "prefix_tokens": 32,
    # The paper's tied ReLU SAE, lr, batch and epochs; L1 3.0 instead of 0.001: the tiny model's
    # residual stream has norm ~30 and with 0.001 every latent fires on half the rows
    # (L0 = d_sae / 2); 3.0 gives L0 ~ 20 of 128 at FVU ~ 0.03.
    "sae": {"l1": 3.0, "epochs": 3.0, "batch_size": 32},
    "top_k": 10,
    "utility_k": 30,
    "score_prefixes": 100,
    "score_prefix_tokens": 8,
    "score_new_tokens": 20,
    "threads": 1,  # fastest on a busy shared CPU, and still well within budget when idle
}

LLM_PAPER: dict[str, Any] = {
    "name": "paper",
    "models": ["EleutherAI/pythia-70m", "EleutherAI/pythia-160m", "EleutherAI/pythia-410m"],
    "rlhf": {"reward": "utility", "algo": "ppo", "data": "imdb", "steps": 200},
    "top_n_layers": 5,
    "data": "imdb",
    "prefixes": 2000,
    "prefix_tokens": 50,
    "sae": {},  # the paper's section 5.2: the SAEPairConfig defaults
    "top_k": 10,
    "utility_k": 30,
    "explainer": "llm",
    "explainer_samples": 3,
    "explainer_temperature": 1.0,
    "explanation_scorer": "llm",
    "score_prefixes": 100,
    "score_prefix_tokens": 30,
}

LLM_PRESETS: dict[str, dict[str, Any]] = {"smoke": LLM_SMOKE, "demo": LLM_DEMO, "paper": LLM_PAPER}
