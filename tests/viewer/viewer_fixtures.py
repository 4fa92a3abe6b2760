"""Builders of fixture run directories built with the real APIs: a tiny GPT-NeoX (Pythia's architecture)
with a markup token in its vocabulary, its TransformerLens activations, trained SAEs (one
feature forced dead), explanations and base/tuned pairs."""

from __future__ import annotations

from pathlib import Path

import torch

MARKUP = "<img src=x onerror=alert(1)>"
HOOK = "blocks.1.hook_resid_post"
DEAD = 3  # feature forced dead in the base SAE


def _docs(n: int = 24) -> list[str]:
    words = ["great", "awful", "film", "plot", "actors", "boring", "superb", "the", "a", "was"]
    out = []
    for i in range(n):  # the markup token sits inside the recorded prefix of every document
        body = " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3))
        out.append(f"{words[i % len(words)]} {MARKUP} {body} ending {i}")
    return out


def build_lm_run(root: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlsae.analysis.mmcs import FeatureMatch, LayerShared, SAEPair, SharedFeatures, SizePair
    from rlsae.llm.explain import Explanations, ExplanationScores, FeatureExplanation
    from rlsae.llm.record import record_lm_activations
    from rlsae.llm.tiny import pretrain_tiny
    from rlsae.sae import load_sae
    from rlsae.sae.train import TrainConfig, train_sae

    run = root / "lmrun"
    base = run / "models" / "base"
    pretrain_tiny(
        base, steps=3, d_model=32, n_layers=2, n_heads=2, d_mlp=64, n_train_reviews=200,
        n_test_reviews=20, vocab_size=300, progress=False,
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(base, local_files_only=True)
    tok.add_tokens([MARKUP])  # one token whose text is markup
    model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(base)
    tok.save_pretrained(base)
    tuned = run / "models" / "tuned"
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.gpt_neox.layers[1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(tuned)
    tok.save_pretrained(tuned)
    data = root / "docs.txt"
    data.write_text("\n".join(_docs()) + "\n")
    for src, mdir in (("base", base), ("tuned", tuned)):
        record_lm_activations(
            mdir, [1], run / "acts" / src, data=data, prefixes=24, prefix_tokens=24,
            source=src, progress=False,
        )  # fmt: skip
        sae_dir = run / "saes" / src / HOOK / "relu_64"
        cfg = TrainConfig(arch="relu", d_sae=64, steps=20, batch_size=64, seed=0, l1=1e-4)
        train_sae(run / "acts" / src / HOOK, sae_dir, cfg, progress=False)
    sae_dir = run / "saes" / "base" / HOOK / "relu_64"
    sae = load_sae(sae_dir)
    with torch.no_grad():
        sae.b_enc[DEAD] = -1e4  # can never fire
    sae.save(sae_dir)
    expl = Explanations(
        features={
            "0": FeatureExplanation(
                f"mentions {MARKUP} markup",
                1.25,
                "top-tokens",
                scores=ExplanationScores("offline-token-set", 0.95, 0.75, None, 10, 10),
            ),
            "5": FeatureExplanation("film words", 0.5, "top-tokens"),
        }
    )
    expl.write(sae_dir / "explanations.json")
    # the layout rlsae.study.llm writes: small-vs-large per model, and base_vs_tuned
    base, tuned = f"saes/base/{HOOK}/relu_64", f"saes/tuned/{HOOK}/relu_64"
    shared = SharedFeatures(
        k=1,
        utility_k=1,
        layers=[
            LayerShared(
                layer=1,
                hook=HOOK,
                base_vs_tuned=SAEPair(base, tuned, 0.9, 0.9, [FeatureMatch(0, 7, 0.97)]),
                models={
                    "base": SizePair(
                        base,
                        f"saes/base/{HOOK}/large_missing",
                        0.5,
                        0.5,
                        [FeatureMatch(0, 2, 0.5)],
                        d_sae_a=64,
                        d_sae_b=128,
                        top_k_utility=[FeatureMatch(0, 2, 0.5)],
                    )  # fmt: skip
                },
            )
        ],
    )
    shared.write(run / "analysis" / "llm_shared_features.json")
    return run


def build_agent_run(root: Path) -> Path:
    """An (untrained) poster-CNN DQN on Ms. Pac-Man, a real recording of its fc1 layer with
    episodes.json, and a small TopK SAE trained on it."""
    from rlsae.agents.dqn import train_dqn
    from rlsae.agents.record import record_activations
    from rlsae.sae.train import TrainConfig, train_sae

    run = root / "agentrun"
    agent = train_dqn(
        "poster", 10, run / "agents" / "a0", seed=0, progress=False, buffer_size=100,
        learning_starts=1000, batch_size=32,
    )  # fmt: skip
    store = record_activations(
        agent, "fc1", 480, run / "acts" / "a0" / "fc1", epsilon=1.0, seed=0, n_envs=2,
        max_episode_steps=80, progress=False,
    )  # fmt: skip
    cfg = TrainConfig(arch="topk", d_sae=64, k=8, steps=30, batch_size=64, seed=0)
    train_sae(store, run / "saes" / "a0" / "fc1" / "topk_64", cfg, progress=False)
    return run
