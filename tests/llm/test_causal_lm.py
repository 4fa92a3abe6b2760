"""Causal tools for language models (issue 16): splice faithfulness and steering.

Known answers: an exact SAE (relu(x) - relu(-x) = x, built by hand) recovers 100% of the CE loss
with KL 0; a zero SAE recovers 0%; on the tiny offline model the figures equal SAELens's own
``evals.get_recons_loss`` on the same SAE and tokens. Steering: the Hugging Face forward hook adds
exactly what TransformerLens's ``run_with_hooks`` adds at the same hook point; alpha 0 changes no
completion; the decoder direction most aligned with a strongly positive VADER word's unembedding
raises the mean reward.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlsae.commands._apps import app
from rlsae.commands.llm import STEER_OPTIONS, field_owner
from rlsae.configs import field_default, field_docs
from rlsae.errors import RlsaeError
from rlsae.llm.causal_configs import LMSteerConfig, SpliceEvalConfig, StudySteerConfig
from rlsae.llm.splice_eval import SpliceEval, hooked_model, splice_faithfulness
from rlsae.llm.steer import LMSteerResult, steer_model, steering
from rlsae.sae import SAE, SAEConfig
from rlsae.sae.metrics import FeatureStats

from .conftest import CORPUS

TINY_LAYER = 3  # the tiny model's last block
STEER_ALPHA = 24.0  # about the mean norm of the tiny model's resid_post (22.4)


def exact_sae(d: int, hook: str) -> SAE:
    """relu(x) - relu(-x) = x: an SAE whose reconstruction is its input, exactly."""
    sae = SAE(SAEConfig(d_in=d, d_sae=2 * d, arch="relu", hook_name=hook), seed=0)
    eye = torch.eye(d)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def zero_sae(d: int, hook: str) -> SAE:
    """Reconstruction 0 everywhere: the same as zero-ablating the hook."""
    sae = SAE(SAEConfig(d_in=d, d_sae=8, k=2, hook_name=hook), seed=0)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.zero_()
    return sae


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("causal_corpus") / "reviews.txt"
    path.write_text("\n".join(CORPUS * 3) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny_sae(tiny_model_dir, tmp_path_factory) -> Path:
    """A TopK SAE on the tiny model's last resid_post (200 test documents, 300 steps)."""
    from rlsae.llm.record import record_lm_activations
    from rlsae.sae.config import TrainConfig
    from rlsae.sae.train import train_sae

    root = tmp_path_factory.mktemp("causal_sae")
    (store,) = record_lm_activations(
        tiny_model_dir, [TINY_LAYER], root / "acts", prefixes=200, prefix_tokens=32, progress=False
    )
    cfg = TrainConfig(d_sae=256, k=16, steps=300, batch_size=256)
    train_sae(store, root / "sae", cfg, progress=False)
    return root / "sae"


# ------------------------------------------------------------------------ splice faithfulness


@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.0.hook_mlp_out"])
def test_exact_sae_recovers_everything_and_zero_sae_nothing(random_lm_dir, corpus, hook):
    cfg = SpliceEvalConfig(prefixes=12, data=str(corpus))
    exact = splice_faithfulness(random_lm_dir, exact_sae(32, hook), cfg)
    assert exact.ce_sae == pytest.approx(exact.ce_orig, abs=1e-9)
    assert exact.ce_recovered == pytest.approx(1.0, abs=1e-6)
    assert exact.kl_sae == pytest.approx(0.0, abs=1e-9) and exact.kl_zero > 1e-4
    assert exact.kl_recovered == pytest.approx(1.0, abs=1e-6)
    zero = splice_faithfulness(random_lm_dir, zero_sae(32, hook), cfg)
    assert zero.ce_sae == zero.ce_zero and zero.ce_recovered == 0.0
    assert zero.kl_sae == zero.kl_zero and zero.kl_recovered == 0.0
    # one CE term per next token and one KL term per position, over the 12 documents
    lens = [len(c.split()) for c in CORPUS * 3][:12]
    assert (zero.documents, zero.tokens, zero.positions) == (12, sum(lens) - 12, sum(lens))
    assert SpliceEval.from_json(json.loads(json.dumps(zero.to_json()))) == zero


def test_splice_figures_equal_saelens_on_the_tiny_model(tiny_model_dir, tiny_sae):
    import sae_lens
    from sae_lens.evals import ActivationScaler, get_recons_loss

    ht, tok, _ = hooked_model(tiny_model_dir)
    docs = (tiny_model_dir / "corpus_test.txt").read_text().splitlines()[:24]
    ids = [tok(d, add_special_tokens=False)["input_ids"][:24] for d in docs]
    ids = [t for t in ids if len(t) == 24]  # SAELens takes one (batch, context) tensor
    assert len(ids) >= 20
    theirs = get_recons_loss(
        sae_lens.SAE.load_from_disk(str(tiny_sae)),
        ht,
        ActivationScaler(),
        torch.tensor(ids),
        compute_kl=True,
        compute_ce_loss=True,
    )
    t = {k: float(v.mean()) for k, v in theirs.items()}
    ours = splice_faithfulness(ht, tiny_sae, SpliceEvalConfig(batch_size=7), token_lists=ids)
    assert ours.ce_orig == pytest.approx(t["ce_loss_without_sae"], abs=1e-4)
    assert ours.ce_sae == pytest.approx(t["ce_loss_with_sae"], abs=1e-4)
    assert ours.ce_zero == pytest.approx(t["ce_loss_with_ablation"], abs=1e-4)
    assert ours.kl_sae == pytest.approx(t["kl_div_with_sae"], abs=1e-4)
    assert ours.kl_zero == pytest.approx(t["kl_div_with_ablation"], abs=1e-4)
    score = (t["ce_loss_with_ablation"] - t["ce_loss_with_sae"]) / (
        t["ce_loss_with_ablation"] - t["ce_loss_without_sae"]
    )
    assert ours.ce_recovered == pytest.approx(score, abs=1e-4)
    assert ours.ce_zero > ours.ce_orig + 1  # the hook matters: the figure means something


def test_splice_refuses_an_sae_for_another_layer_or_width(random_lm_dir, corpus):
    cfg = SpliceEvalConfig(prefixes=2, data=str(corpus))
    with pytest.raises(RlsaeError, match="does not have"):
        splice_faithfulness(random_lm_dir, exact_sae(32, "blocks.7.hook_resid_post"), cfg)
    with pytest.raises(RlsaeError, match="d_in=16 .* 32 wide"):
        splice_faithfulness(random_lm_dir, exact_sae(16, "blocks.1.hook_resid_post"), cfg)
    with pytest.raises(RlsaeError, match="no hook_name"):
        splice_faithfulness(random_lm_dir, exact_sae(32, ""), cfg)


def test_cli_sae_eval_model(random_lm_dir, corpus, tmp_path, run_cli):
    exact_sae(32, "blocks.2.hook_resid_post").save(tmp_path / "sae")
    before = sorted(p.name for p in (tmp_path / "sae").iterdir())
    args = ["sae", "eval", "--sae", tmp_path / "sae", "--model", random_lm_dir]
    code, out, err = run_cli(*args, "--prefixes", "4", "--data", corpus, "--json")
    assert code == 0, err
    res = SpliceEval.from_json(json.loads(out))
    assert res.ce_recovered == pytest.approx(1.0, abs=1e-6) and res.documents == 4
    code, out, _ = run_cli(*args, "--prefixes", "4", "--data", corpus)
    assert code == 0 and "CE loss recovered 100.00%" in out
    for extra, message in [
        (["--prefixes", "0"], "--prefixes: must be at least 1"),
        (["--prefix-tokens", "1"], "--prefix-tokens: must be at least 2"),
        (["--acts", tmp_path], "give --acts STORE (reconstruction metrics) or --model M"),
        (["--ground-truth", corpus], "--ground-truth goes with --acts"),
    ]:
        code, out, err = run_cli(*args, *extra)
        assert code == 2 and out == "" and err.strip() == f"error: {message}" or message in err
        assert err.count("\n") == 1, err
    assert sorted(p.name for p in (tmp_path / "sae").iterdir()) == before  # nothing written


# ------------------------------------------------------------------------------- steering


@pytest.mark.parametrize(
    "point", ["resid_post", "resid_pre", "mlp_out", "attn_out"], ids=lambda p: p
)
def test_hf_steering_adds_what_transformer_lens_adds(random_lm_dir, point):
    from rlsae.llm.models import load_model

    model, tok = load_model(random_lm_dir)
    ht, _, _ = hooked_model(random_lm_dir)
    hook = f"blocks.1.hook_{point}"
    vec = torch.randn(32, generator=torch.Generator().manual_seed(1)) * 3
    ids = torch.tensor([tok(c, add_special_tokens=False)["input_ids"][:6] for c in CORPUS[:4]])
    with torch.no_grad(), steering(model, hook, vec):
        ours = model(input_ids=ids).logits
    theirs = ht.run_with_hooks(ids, fwd_hooks=[(hook, lambda a, hook: a + vec)])
    plain = model(input_ids=ids).logits  # the hook is gone after the block
    assert (ours - plain).abs().max() > 1e-3
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, ht(ids), atol=1e-4, rtol=1e-4)


def test_hf_ablation_removes_what_transformer_lens_removes(random_lm_dir):
    from rlsae.llm.models import load_model
    from rlsae.llm.steer import ablating

    model, tok = load_model(random_lm_dir)
    ht, _, _ = hooked_model(random_lm_dir)
    hook = "blocks.1.hook_resid_post"
    sae = SAE(SAEConfig(d_in=32, d_sae=64, arch="relu", hook_name=hook), seed=0)
    ids = torch.tensor([tok(c, add_special_tokens=False)["input_ids"][:6] for c in CORPUS[:4]])
    _, cache = ht.run_with_cache(ids, names_filter=hook)
    feature = int((sae.encode(cache[hook]) > 0).sum((0, 1)).argmax())  # fires most often

    def remove(a, hook):
        return a - sae.encode(a)[..., feature : feature + 1] * sae.W_dec[feature]

    with torch.no_grad(), ablating(model, hook, sae, feature):
        ours = model(input_ids=ids).logits
    with torch.no_grad():
        theirs = ht.run_with_hooks(ids, fwd_hooks=[(hook, remove)])
        plain = model(input_ids=ids).logits
    assert (ours - plain).abs().max() > 1e-4
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_ablating_a_feature_that_never_fires_changes_nothing(tiny_model_dir, tmp_path):
    sae = SAE(SAEConfig(d_in=128, d_sae=4, arch="relu", hook_name="blocks.2.hook_resid_post"))
    with torch.no_grad():
        sae.b_enc[1] = -1e6  # feature 1 never fires
    cfg = LMSteerConfig(ablate=True, prefixes=20, max_new_tokens=12)
    res = steer_model(tiny_model_dir, sae, 1, cfg)
    assert res.ablate and res.changed == 0 and res.delta == 0.0
    with pytest.raises(RlsaeError, match="alpha: not used with ablate"):
        LMSteerConfig(ablate=True, alpha=1.0).validate()


def test_alpha_zero_changes_no_completion(tiny_model_dir, tiny_sae):
    cfg = LMSteerConfig(alpha=0.0, prefixes=20, max_new_tokens=12)
    res = steer_model(tiny_model_dir, tiny_sae, 5, cfg)
    assert res.changed == 0 and res.delta == 0.0 and res.ci95 == [0.0, 0.0]
    assert all(c.steered == c.unsteered for c in res.completions) and res.n == 20
    assert LMSteerResult.from_json(json.loads(json.dumps(res.to_json()))) == res


def positive_feature(model_dir: Path, sae_dir: Path, word: str = "great") -> int:
    """The feature whose decoder row has the largest cosine with ``word``'s unembedding."""
    from rlsae.llm.models import load_model
    from rlsae.sae.model import load_sae

    model, tok = load_model(model_dir)
    (token,) = tok(" " + word, add_special_tokens=False)["input_ids"]
    u = model.get_output_embeddings().weight[token].detach()
    w_dec = load_sae(sae_dir).W_dec.detach()
    return int((torch.nn.functional.normalize(w_dec, dim=1) @ (u / u.norm())).argmax())


def test_steering_toward_a_positive_word_raises_the_reward(tiny_model_dir, tiny_sae):
    from rlsae.llm.rewards import UtilityTable

    assert UtilityTable.vader().get("great") >= 3  # strongly positive in VADER (3.1)
    feature = positive_feature(tiny_model_dir, tiny_sae)
    cfg = LMSteerConfig(alpha=STEER_ALPHA, prefixes=200, max_new_tokens=20)
    res = steer_model(tiny_model_dir, tiny_sae, feature, cfg)
    assert res.delta > 0.1 and res.ci95[0] > 0, res.summary()
    assert res.utility_steered > res.utility_unsteered
    down = steer_model(tiny_model_dir, tiny_sae, feature, LMSteerConfig(alpha=0.0, prefixes=200))
    assert down.delta == 0.0


def test_steer_refuses_bad_features_and_saes(tiny_model_dir, tiny_sae, tmp_path):
    cfg = LMSteerConfig(alpha=1.0, prefixes=2)
    with pytest.raises(RlsaeError, match="out of range; the SAE has features 0..255"):
        steer_model(tiny_model_dir, tiny_sae, 256, cfg)
    dead = tmp_path / "dead"
    sae = SAE(SAEConfig(d_in=128, d_sae=4, k=1, hook_name="blocks.1.hook_resid_post"), seed=0)
    sae.save(dead)
    counts = torch.tensor([5, 0, 3, 1])
    FeatureStats(counts, torch.ones(4), torch.ones(4), rows=9).write(dead)
    with pytest.raises(RlsaeError, match="--feature 1 is dead: it never fired over the 9 rows"):
        steer_model(tiny_model_dir, dead, 1, cfg)
    other = tmp_path / "other"
    SAE(SAEConfig(d_in=128, d_sae=4, k=1, hook_name="blocks.9.hook_resid_post")).save(other)
    with pytest.raises(RlsaeError, match="blocks 0..3"):
        steer_model(tiny_model_dir, other, 0, cfg)
    narrow = tmp_path / "narrow"
    SAE(SAEConfig(d_in=64, d_sae=4, k=1, hook_name="blocks.1.hook_resid_post")).save(narrow)
    with pytest.raises(RlsaeError, match="d_in=64 but blocks.1.hook_resid_post .* 128 wide"):
        steer_model(tiny_model_dir, narrow, 0, cfg)
    odd = tmp_path / "odd"
    SAE(SAEConfig(d_in=128, d_sae=4, k=1, hook_name="blocks.1.hook_q")).save(odd)
    with pytest.raises(RlsaeError, match="cannot steer at hook 'blocks.1.hook_q'"):
        steer_model(tiny_model_dir, odd, 0, cfg)


def test_cli_steer(tiny_model_dir, tiny_sae, tmp_path, run_cli):
    base = ["llm", "steer", "--model", tiny_model_dir, "--sae", tiny_sae]
    small = ["--prefixes", "6", "--max-new-tokens", "8", "--threads", "1"]
    code, out, err = run_cli(*base, "--feature", "3", "--alpha", "2", *small, "--json")
    assert code == 0, err
    res = LMSteerResult.from_json(json.loads(out))
    assert (res.feature, res.alpha, res.n, res.hook) == (3, 2.0, 6, "blocks.3.hook_resid_post")
    code, out, _ = run_cli(*base, "--feature", "3", "--alpha", "0", *small, "--show", "1")
    assert code == 0 and "completions changed: 0 of 6" in out and out.count("  steered:") == 1
    code, out, err = run_cli(*base, "--feature", "3", "--ablate", *small, "--show", "0")
    assert code == 0 and "ablated" in out and "steered:" not in out, err
    for extra, message in [
        (["--feature", "1"], "give --alpha A (add alpha x the feature's direction) or --ablate"),
        (["--feature", "1", "--alpha", "1", "--ablate"], "give --alpha A"),
        (["--feature", "256", "--alpha", "1"], "--feature 256 is out of range"),
        (["--feature", "-1", "--alpha", "1"], "--feature"),
        (["--feature", "1", "--alpha", "nan"], "--alpha: expected a finite number"),
        (["--feature", "1", "--alpha", "1e9"], "--alpha: must be between"),
        (["--feature", "1", "--alpha", "1", "--prefixes", "0"], "--prefixes: must be at least 1"),
        (["--feature", "1", "--alpha", "1", "--bootstrap", "0"], "--bootstrap"),
        (["--feature", "1", "--alpha", "1", "--reward", "x"], "--reward"),
        (["--feature", "1", "--alpha", "1", "--table", tmp_path / "no.tsv"], "not found"),
    ]:
        code, out, err = run_cli(*base, *extra)
        assert code == 2 and out == "" and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_steer_options_follow_the_config():
    """``llm steer``'s options take their defaults and help texts from LMSteerConfig."""
    import typer

    cmd = typer.main.get_command(app).commands["llm"].commands["steer"]  # type: ignore[attr-defined]
    params = {p.name: p for p in cmd.params}
    for param, (dotted, flag) in STEER_OPTIONS.items():
        owner, name = field_owner(LMSteerConfig, dotted)
        assert flag in params[param].opts
        assert params[param].default == field_default(owner, name), param
        assert params[param].help == field_docs(owner)[name], param


# ------------------------------------------------------------------ the IRM study's steer stage


def test_the_study_steer_stage_is_off_by_default_and_validated():
    from rlsae.configs import from_mapping
    from rlsae.study.llm import LLM
    from rlsae.study.llm_config import LLMStudyConfig

    (stage,) = [s for s in LLM.stages if s.name == "steer"]
    assert stage.per == "model" and "mmcs" in stage.after
    assert "steer" in LLM.stage("report").after  # the report shows the table when it is on
    assert stage.off(LLMStudyConfig()) and not stage.off(LLMStudyConfig(steer=StudySteerConfig()))
    cfg = from_mapping(LLMStudyConfig, {"steer": {"features": 2, "scale": 0.5}}, "study.yaml")
    assert cfg.steer == StudySteerConfig(features=2, scale=0.5)
    with pytest.raises(RlsaeError, match=r"^config: steer: scale: must be above 0"):
        LLMStudyConfig(steer=StudySteerConfig(scale=0)).validate()


def test_study_steer_rows_push_the_reward_both_ways(tiny_model_dir, tiny_sae):
    from rlsae.analysis.steer_table import SteerTable
    from rlsae.study.llm_steer import mean_norm, steer_rows

    store = tiny_sae.parent / "acts" / f"blocks.{TINY_LAYER}.hook_resid_post"
    alpha = mean_norm(store)
    assert 15 < alpha < 30  # the scale of STEER_ALPHA
    feature = positive_feature(tiny_model_dir, tiny_sae)
    cfg = LMSteerConfig(prefixes=200, max_new_tokens=20)
    rows = steer_rows(str(tiny_model_dir), "base", TINY_LAYER, tiny_sae, [feature], alpha, cfg)
    up, down, ablated = rows
    assert (up.alpha, down.alpha) == (alpha, -alpha) and up.feature == feature
    assert [r.intervention for r in rows] == ["add", "add", "ablate"]
    assert {r.latents for r in rows} == {"shared"} and ablated.alpha == 0.0
    removed = steer_model(
        tiny_model_dir,
        tiny_sae,
        feature,
        LMSteerConfig(ablate=True, prefixes=200, max_new_tokens=20),
    )
    assert (ablated.mean_steered, ablated.delta, ablated.changed) == (
        removed.mean_reward_steered, removed.delta, removed.changed
    )  # fmt: skip
    assert up.delta > 0.1 and up.ci95[0] > 0 and down.delta < 0, (up, down)
    direct = steer_model(
        tiny_model_dir,
        tiny_sae,
        feature,
        LMSteerConfig(alpha=-alpha, prefixes=200, max_new_tokens=20),
    )
    assert down.mean_unsteered == up.mean_unsteered == direct.mean_reward_unsteered
    assert down.mean_steered == direct.mean_reward_steered
    table = SteerTable(features=1, scale=1.0, prefixes=200, rows=rows)
    md = table.markdown("tiny")
    assert md.count("\n| base | 3 | shared |") == 3 and f"{up.delta:+.3f}" in md
    assert md.count("| ablate |") == 1 and f"| alpha {-alpha:+.3g} |" in md
    page = table.html()
    assert page.count("<tr><td class='l'>base</td>") == 3 and f"{up.delta:+.3f}" in page


def test_steering_a_direction_equals_steering_the_feature(tiny_model_dir, tiny_sae):
    """steer_direction with a feature's decoder row is steer_model on that feature; a
    crosscoder's tuned-only latent is steered along its unit tuned decoder direction, the
    most-firing one of its class first, both ways."""
    from rlsae.llm.steer import steer_direction
    from rlsae.sae.crosscoder import Crosscoder, CrosscoderSpec
    from rlsae.sae.crosscoder_config import LatentConfig
    from rlsae.sae.latents import LatentAnalysis, LatentRow
    from rlsae.sae.model import load_sae
    from rlsae.study.llm_steer import crosscoder_rows

    sae = load_sae(tiny_sae)
    feature = positive_feature(tiny_model_dir, tiny_sae)
    row, hook = sae.W_dec[feature].detach().float(), sae.cfg.hook_name
    cfg = LMSteerConfig(alpha=STEER_ALPHA, prefixes=40, max_new_tokens=12)
    by_feature = steer_model(tiny_model_dir, tiny_sae, feature, cfg)
    by_direction = steer_direction(tiny_model_dir, hook, row, cfg, label=feature)
    assert by_direction.completions == by_feature.completions
    assert by_direction.delta == by_feature.delta and by_direction.feature == feature
    with pytest.raises(RlsaeError, match="cannot ablate"):
        steer_direction(tiny_model_dir, hook, row, LMSteerConfig(ablate=True))
    with pytest.raises(RlsaeError, match="a direction of width 3"):
        steer_direction(tiny_model_dir, hook, row[:3], cfg)

    # a crosscoder whose tuned-only latents point along the feature (latent 2 fires most)
    cc = Crosscoder(CrosscoderSpec(d_in=row.numel(), d_sae=3, hook_name=hook))
    with torch.no_grad():
        cc.W_dec[1, 1] = -row
        cc.W_dec[1, 2] = 3.0 * row
        cc.W_dec[0, 0] = cc.W_dec[1, 0] = row
    out = cc.save(tiny_sae.parent / "cc")

    def latent(j: int, kind: str, fires: int) -> LatentRow:
        return LatentRow(j, kind, 1.0, 1.0, 0.5, 1.0, fires, *([None] * 6))

    LatentAnalysis(
        LatentConfig(), 3, 100, {"shared": 1, "tuned_only": 2},
        [latent(0, "shared", 50), latent(1, "tuned_only", 3), latent(2, "tuned_only", 9)],
    ).write(out / "latents.json")  # fmt: skip
    base_cfg = LMSteerConfig(prefixes=40, max_new_tokens=12)
    rows = crosscoder_rows(
        str(tiny_model_dir), "base", TINY_LAYER, hook, out, "tuned_only", 1, STEER_ALPHA, base_cfg
    )
    unit = steer_direction(tiny_model_dir, hook, row / row.norm(), cfg, label=2)
    assert [(r.feature, r.alpha, r.latents) for r in rows] == [
        (2, STEER_ALPHA, "tuned_only"), (2, -STEER_ALPHA, "tuned_only")
    ]  # fmt: skip
    assert (rows[0].delta, rows[0].changed) == (unit.delta, unit.changed)
    assert (
        crosscoder_rows(
            str(tiny_model_dir),
            "base",
            TINY_LAYER,
            hook,
            out,
            "base_only",
            1,
            STEER_ALPHA,
            base_cfg,
        )
        == []
    )


@pytest.mark.slow
def test_the_smoke_study_with_steer_runs_the_stage_and_resumes(tmp_path):
    import dataclasses

    from rlsae.analysis.steer_table import SteerTable
    from rlsae.study.llm import resolve_config, run_llm_study

    cfg, _ = resolve_config("smoke")
    cfg = dataclasses.replace(cfg, steer=StudySteerConfig(features=2, prefixes=10))
    run = tmp_path / "run"
    res = run_llm_study(cfg, run, progress=False)
    assert res["stages_run"] == 11
    table = SteerTable.read(run / "analysis" / "llm_steer.json")
    n_layers = len(res["layers"])
    assert len(table.rows) == 2 * n_layers * 2 * 3  # models x layers x features x (+, -, ablate)
    assert {r.model for r in table.rows} == {"base", "tuned"}
    for up, down, ablated in zip(*[iter(table.rows)] * 3, strict=True):  # per feature
        assert up.feature == down.feature == ablated.feature and up.alpha == -down.alpha > 0
        assert ablated.intervention == "ablate" and ablated.alpha == 0
    md = (run / "analysis" / "llm_steer.md").read_text()
    assert (
        "<h2>Steering the top shared features</h2>"
        in (run / "analysis" / "report.html").read_text()
    )
    assert md.count("\n| base |") == md.count("\n| tuned |") == 3 * n_layers * 2
    again = run_llm_study(cfg, run, resume=True, progress=False)
    assert again["stages_run"] == 0 and again["stages_skipped"] == 11
