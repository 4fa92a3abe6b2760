"""RLHF runs on the tiny model: outputs, resume after an interruption, bad input, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rlsae.errors import RlsaeError
from rlsae.llm.models import load_model
from rlsae.llm.rlhf import RLHFResult, rlhf_tune

SMALL = {
    "ppo": {"batch_size": 8, "mini_batch_size": 4, "max_new_tokens": 8, "learning_rate": 3e-4},
    "checkpoint_every": 1,
}


def _params(model_dir):
    model, _ = load_model(model_dir)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_ppo_run_writes_everything(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    res = rlhf_tune(tiny_model_dir, out, steps=2, progress=False, **SMALL)
    assert res.steps == 2 and res.algo == "ppo"
    on_disk = json.loads((out / "result.json").read_text())
    assert (on_disk["format"], on_disk["version"], on_disk["steps"]) == ("rlsae.rlhf_result", 1, 2)
    assert RLHFResult.read(out / "result.json") == res
    log = json.loads((out / "log.json").read_text())["steps"]
    assert [e["step"] for e in log] == [1, 2]
    for key in ("reward_mean", "kl", "kl_coef", "policy_loss", "value_loss", "loss"):
        assert all(isinstance(e[key], float) for e in log)
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # policy == reference at step 1
    assert log[0]["kl_coef"] == 0.5
    assert "plotly" in (out / "curve.html").read_text()[:5000].lower()
    cfg = json.loads((out / "model" / "rlhf.json").read_text())["config"]
    assert cfg["ppo"]["learning_rate"] == 3e-4 and cfg["ppo"]["batch_size"] == 8
    base, tuned = _params(tiny_model_dir), _params(out / "model")
    assert base.keys() == tuned.keys()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    assert (out / "model" / "corpus_test.txt").is_file()


def test_interrupted_run_resumes_to_the_same_model(tiny_model_dir, tmp_path):
    full = rlhf_tune(tiny_model_dir, tmp_path / "full", steps=3, progress=False, **SMALL)

    def crash(step, stats):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rlhf_tune(
            tiny_model_dir, tmp_path / "cut", steps=3, progress=False, callback=crash, **SMALL
        )
    assert not (tmp_path / "cut" / "model").exists()
    state = json.loads((tmp_path / "cut" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 2
    with pytest.raises(RlsaeError, match="pass --resume"):
        rlhf_tune(tiny_model_dir, tmp_path / "cut", steps=3, progress=False, **SMALL)
    resumed = rlhf_tune(
        tiny_model_dir, tmp_path / "cut", steps=3, progress=False, resume=True, **SMALL
    )
    assert resumed.steps == 3
    a = json.loads((tmp_path / "full" / "log.json").read_text())["steps"]
    b = json.loads((tmp_path / "cut" / "log.json").read_text())["steps"]
    assert [e["reward_mean"] for e in a] == pytest.approx([e["reward_mean"] for e in b])
    assert a[-1]["kl_coef"] == pytest.approx(b[-1]["kl_coef"])
    pa, pb = _params(tmp_path / "full" / "model"), _params(tmp_path / "cut" / "model")
    assert all(torch.allclose(pa[k], pb[k], atol=1e-6) for k in pa)
    assert full.reward_last == pytest.approx(resumed.reward_last)


def test_resume_refuses_changed_inputs(tiny_model_dir, tmp_path):
    """Same options, but the data file's contents changed: the resume would mix two runs."""
    data = tmp_path / "reviews.txt"
    data.write_text((tiny_model_dir / "corpus_train.txt").read_text())
    opts = {**SMALL, "data": str(data), "progress": False}
    rlhf_tune(tiny_model_dir, tmp_path / "r", steps=1, **opts)
    data.write_text("a different corpus\n" * 50)
    with pytest.raises(RlsaeError, match="the contents of data changed since the run began"):
        rlhf_tune(tiny_model_dir, tmp_path / "r", steps=2, resume=True, **opts)
    meta = json.loads((tmp_path / "r" / "rlhf.json").read_text())
    assert set(meta["inputs"]) == {"model", "data"}


def test_resume_refuses_changed_options(tiny_model_dir, tmp_path):
    rlhf_tune(tiny_model_dir, tmp_path / "r", steps=1, progress=False, **SMALL)
    with pytest.raises(RlsaeError, match="seed was 0, now 1"):
        rlhf_tune(
            tiny_model_dir, tmp_path / "r", steps=2, seed=1, resume=True, progress=False, **SMALL
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ppo": {"batch_size": 10, "mini_batch_size": 4}}, "not divisible by mini-batch size"),
        (
            {"prefix_tokens": 120, "ppo": {"max_new_tokens": 24}},
            "exceeds the model's context of 128",
        ),
        ({"algo": "dpo"}, "algo: expected one of ppo, rloo, got 'dpo'"),
        ({"reward": "vibes"}, "reward: expected one of utility, sentiment, got 'vibes'"),
        (
            {"algo": "rloo", "ppo": {"batch_size": 8, "mini_batch_size": 4}, "rloo_k": 3},
            "RLOO needs rloo_k",
        ),
        ({"lr_typo": 1}, "RLHF options: lr_typo: unknown key"),
        ({"ppo": {"lr": 1}}, "RLHF options: ppo.lr: unknown key"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_model_dir, tmp_path, options, message):
    with pytest.raises(RlsaeError, match=message) as e:
        rlhf_tune(tiny_model_dir, tmp_path / "x", steps=1, progress=False, **options)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "x" / "model").exists()


def test_malformed_table_fails_before_training(tiny_model_dir, tmp_path):
    table = tmp_path / "t.tsv"
    table.write_text("good\t1\nbad\n")
    with pytest.raises(RlsaeError, match="t.tsv:2: malformed"):
        rlhf_tune(
            tiny_model_dir, tmp_path / "x", steps=1, table=str(table), progress=False, **SMALL
        )


def test_rloo_run_writes_everything(tiny_model_dir, tmp_path):
    out = tmp_path / "rloo"
    res = rlhf_tune(tiny_model_dir, out, algo="rloo", steps=2, progress=False, rloo_k=4, **SMALL)
    assert res.algo == "rloo" and res.steps == 2
    log = json.loads((out / "log.json").read_text())["steps"]
    assert [e["step"] for e in log] == [1, 2]
    assert all(e["kl_coef"] == 0.5 for e in log)
    base, tuned = _params(tiny_model_dir), _params(out / "model")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)


def test_cli_entry_point_subprocess(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "rlsae", "llm", "score", "--model", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: model directory") and r.stderr.count("\n") == 1


def test_cli_score_json_and_errors(tiny_model_dir, tmp_path, run_cli):
    code, out, err = run_cli(
        "llm",
        "score",
        "--model",
        str(tiny_model_dir),
        "--prefixes",
        "6",
        "--prefix-tokens",
        "10",
        "--max-new-tokens",
        "8",
        "--threads",
        "1",
        "--json",
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["n"] == 6 and res["aggregate_abs_utility"] >= abs(res["aggregate_utility"])
    assert "mean_reward" in res

    bad = tmp_path / "bad.tsv"
    bad.write_text("great\tvery\n")
    code, out, err = run_cli(
        "llm",
        "rlhf",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o"),
        "--table",
        str(bad),
        "--steps",
        "1",
    )
    assert code == 2 and err.startswith("error: ") and "bad.tsv:1: malformed" in err
    assert err.count("\n") == 1  # fails before any model is loaded

    code, out, err = run_cli(
        "llm",
        "rlhf",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "o2"),
        "--batch-size",
        "64",
        "--mini-batch-size",
        "24",
        "--steps",
        "1",
    )
    assert code == 2 and err.startswith("error: ") and "not divisible" in err
    assert err.count("\n") == 1
    code, out, err = run_cli(
        "llm",
        "score",
        "--model",
        str(tiny_model_dir),
        "--prefix-tokens",
        "120",
    )
    assert code == 2 and err.splitlines()[-1].startswith("error: a 120-token prefix")
    assert "exceeds the model's context of 128" in err


def test_cli_rlhf_runs_and_resumes(tiny_model_dir, tmp_path, run_cli):
    args = [
        "llm",
        "rlhf",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "c"),
        "--batch-size",
        "4",
        "--mini-batch-size",
        "2",
        "--max-new-tokens",
        "4",
        "--lr",
        "1e-4",
        "--threads",
        "1",
        "--json",
    ]
    code, out, err = run_cli(*args, "--steps", "1")
    assert code == 0, err
    assert json.loads(out)["steps"] == 1
    code, out, err = run_cli(*args, "--steps", "2")
    assert code == 2 and "--resume" in err
    code, out, err = run_cli(*args, "--steps", "2", "--resume")
    assert code == 0, err
    assert json.loads(out)["steps"] == 2


def test_ppo_with_classifier_reward(tiny_model_dir, tiny_classifier, tmp_path):
    """The sentiment reward path: the logged mean reward is the classifier's positive logit."""
    from rlsae.llm.rewards import ClassifierReward, ClassifierRewardConfig

    clf_dir, _, _ = tiny_classifier
    out = tmp_path / "s"
    rlhf_tune(
        tiny_model_dir,
        out,
        reward="sentiment",
        classifier=str(clf_dir),
        steps=1,
        progress=False,
        **SMALL,
    )
    log = json.loads((out / "log.json").read_text())["steps"]
    # Re-score step 1's completions another way: the same seed regenerates them from the base.
    from rlsae.llm.data import load_texts, make_prefixes
    from rlsae.llm.generate import decode_rollout, sample_completions
    from rlsae.llm.ppo import sample_batch

    model, tok = load_model(tiny_model_dir)
    pool = make_prefixes(load_texts("auto", "train", model=tiny_model_dir), tok, 0, 8, seed=0)
    rollout = sample_completions(model, tok, sample_batch(pool, 8, 0), 8, seed=0)
    prefixes, completions = decode_rollout(tok, rollout)
    want = ClassifierReward(ClassifierRewardConfig(model=str(clf_dir)))(prefixes, completions)
    assert log[0]["reward_mean"] == pytest.approx(sum(want) / len(want), abs=1e-5)


def test_rloo_interrupted_run_resumes(tiny_model_dir, tmp_path):
    opts = {**SMALL, "algo": "rloo", "rloo_k": 4, "steps": 3}

    def crash(step, stats):
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rlhf_tune(tiny_model_dir, tmp_path / "r", progress=False, callback=crash, **opts)
    assert not (tmp_path / "r" / "model").exists()
    assert (tmp_path / "r" / "trl" / "checkpoint-1").is_dir()
    first = json.loads((tmp_path / "r" / "log.json").read_text())["steps"]
    res = rlhf_tune(tiny_model_dir, tmp_path / "r", progress=False, resume=True, **opts)
    assert res.steps == 3
    log = json.loads((tmp_path / "r" / "log.json").read_text())["steps"]
    assert [e["step"] for e in log] == [1, 2, 3]
    assert log[0]["reward_mean"] == first[0]["reward_mean"]  # step 1 kept, not re-run
    # TRL restores its own RNG and data-sampler state; the resumed run continues from
    # checkpoint-1 (step 1 kept) and ends at step 3 with a tuned model.
    base, tuned = _params(tiny_model_dir), _params(tmp_path / "r" / "model")
    assert any(not torch.equal(base[k], tuned[k]) for k in base)


def test_cli_pretrain_tiny(tmp_path, run_cli):
    code, out, err = run_cli(
        "llm",
        "pretrain-tiny",
        "--out",
        str(tmp_path / "t"),
        "--steps",
        "2",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--threads",
        "1",
        "--json",
    )
    assert code == 0, err
    res = json.loads(out)
    model, tok = load_model(res["model_dir"])
    assert model.config.num_hidden_layers == 1 and model.config.hidden_size == 16
    assert res["n_params"] == sum(p.numel() for p in model.parameters())
    code, out, err = run_cli("llm", "pretrain-tiny", "--out", tmp_path / "t")
    assert code == 2 and "already exists" in err


def _completion_logps(model, batches) -> torch.Tensor:
    """Σ_t log π(completion_t) of each recorded (prompt, completion), as TRL's loss sums them."""
    out = []
    with torch.no_grad():
        for b in batches:
            ids = torch.cat([b["prompt_ids"], b["completion_ids"]], dim=1)
            mask = torch.cat([b["prompt_mask"], b["completion_mask"]], dim=1)
            n = b["completion_ids"].shape[1]
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -n - 1 : -1].float()
            lp = torch.log_softmax(logits, -1).gather(-1, b["completion_ids"][..., None])[..., 0]
            out.append((lp * b["completion_mask"]).sum(1))
    return torch.cat(out)


def test_rloo_step_follows_the_leave_one_out_gradient(tiny_model_dir, tmp_path, monkeypatch):
    """One RLOO step, checked another way than "the weights changed":

    1. the advantages TRL trains on are the leave-one-out ones computed here by hand from the
       rewards our reward function returned, A_i = r_i - mean_{j != i in its group} r_j (the
       policy is the reference at step 1, so the KL penalty is 0);
    2. the update moves the policy along them: at step 1 the loss is -mean_i A_i log π(y_i|x_i)
       with ratio 1, and Adam's first step is lr * sign(gradient) (clipping only rescales), so
       Σ_i A_i (log π_tuned(y_i|x_i) - log π_base(y_i|x_i)) must be positive: completions with a
       positive advantage gained probability relative to those with a negative one.
    """
    import trl

    from rlsae.llm.configs import PPOConfig, RLHFConfig
    from rlsae.llm.rloo import run_rloo

    k = 4
    rewards: list[float] = []

    def vowels(prefixes, completions):
        out = [sum(ch in "aeiou" for ch in c) / 10.0 for c in completions]
        rewards.extend(out)
        return out

    seen: list[dict[str, torch.Tensor]] = []
    real = trl.RLOOTrainer._compute_loss

    def recording(self, model, inputs):
        keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")
        seen.append({key: inputs[key].detach().clone() for key in keys})
        return real(self, model, inputs)

    monkeypatch.setattr(trl.RLOOTrainer, "_compute_loss", recording)
    cfg = RLHFConfig(
        model=str(tiny_model_dir),
        algo="rloo",
        steps=1,
        rloo_k=k,
        ppo=PPOConfig(batch_size=8, mini_batch_size=4, max_new_tokens=8, learning_rate=1e-4),
    )
    run_rloo(cfg, tmp_path / "r", vowels, resume=False, progress=False, callback=None)

    assert len(rewards) == 8 and len(set(rewards)) > 1
    r = torch.tensor(rewards).view(-1, k)
    hand = (r - (r.sum(1, keepdim=True) - r) / (k - 1)).flatten()
    trl_adv = torch.cat([b["advantages"] for b in seen])
    assert sorted(trl_adv.tolist()) == pytest.approx(sorted(hand.tolist()), abs=1e-5)

    base, _ = load_model(tiny_model_dir)
    tuned, _ = load_model(tmp_path / "r" / "model")
    delta = _completion_logps(tuned, seen) - _completion_logps(base, seen)
    assert float((trl_adv * delta).sum()) > 0
    # and not by moving every completion the same way: the sign follows the advantage
    pos, neg = delta[trl_adv > 0].mean(), delta[trl_adv < 0].mean()
    assert float(pos) > float(neg)
