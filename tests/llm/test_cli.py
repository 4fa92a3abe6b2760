"""``rlsae llm``: options follow their configs, and every bad input is one line that leaves
nothing behind (issue 18), all through the real entry point :func:`rlsae.cli.main`."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import typing

import pytest
import typer

from rlsae.commands._apps import app
from rlsae.commands.llm import CONFIG_OPTIONS, field_owner
from rlsae.configs import field_default, field_docs


def _command(verb: str):
    group = typer.main.get_command(app)
    return group.commands["llm"].commands[verb]  # type: ignore[attr-defined]


@pytest.mark.parametrize("verb", sorted(CONFIG_OPTIONS))
def test_cli_defaults_and_help_follow_the_configs(verb):
    """A literal default or help text in commands/llm.py that drifts from its field fails."""
    cls, spec = CONFIG_OPTIONS[verb]
    params = {p.name: p for p in _command(verb).params}
    for param, (dotted, flag) in spec.items():
        owner, name = field_owner(cls, dotted)
        opt = params[param]
        assert flag in opt.opts, (verb, param)
        assert opt.default == field_default(owner, name), (verb, param)
        assert opt.help == field_docs(owner)[name], (verb, param)


def test_rlhf_option_defaults_are_the_papers():
    """Spot check against the paper's Table 1 (and the hub names of the defaults)."""
    params = {p.name: p.default for p in _command("rlhf").params}
    assert params["model"] == "EleutherAI/pythia-70m"
    assert params["classifier"] == "lvwerra/distilbert-imdb"
    assert (params["batch_size"], params["mini_batch_size"]) == (64, 16)
    assert (params["lr"], params["init_kl_coef"]) == (1e-6, 0.5)


RLHF_BAD = [
    (["--lr", "-1"], "--lr: must be above 0, got -1.0"),
    (["--lr", "0"], "--lr: must be above 0, got 0.0"),
    (["--lr", "nan"], "--lr: expected a finite number"),
    (["--lr", "inf"], "--lr: expected a finite number"),
    (["--lr", "abc"], "--lr"),
    (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
    (["--batch-size", "-8"], "--batch-size: must be at least 1, got -8"),
    (["--batch-size", "8", "--mini-batch-size", "32"], "--mini-batch-size: 32 exceeds"),
    (["--batch-size", "64", "--mini-batch-size", "24"], "not divisible by mini-batch size 24"),
    (["--steps", "0"], "--steps: must be at least 1, got 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every: must be at least 1, got 0"),
    (["--kl-coef", "-0.5"], "--kl-coef: must be between 0 and 1e+06, got -0.5"),
    (["--kl-coef", "1e7"], "--kl-coef: must be between 0 and 1e+06, got 10000000.0"),
    (["--ppo-epochs", "0"], "--ppo-epochs: must be at least 1"),
    (["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
    (["--prefix-tokens", "-3"], "--prefix-tokens: must be at least 1"),
    (["--seed", "-1"], "--seed: must be between 0 and"),
    (["--algo", "dpo"], "--algo: expected one of ppo, rloo, got 'dpo'"),
    (["--reward", "vibes"], "--reward: expected one of utility, sentiment"),
    (["--algo", "rloo", "--rloo-k", "1"], "--rloo-k: must be at least 2"),
    (["--algo", "rloo", "--batch-size", "8", "--mini-batch-size", "4", "--rloo-k", "3"], "RLOO"),
    (["--threads", "0"], "--threads: must be at least 1, got 0"),
    (["--model", "/no/such/model"], "model directory /no/such/model not found"),
    (["--data", "/no/reviews.txt"], "data file /no/reviews.txt not found"),
    (["--table", "/no/table.tsv"], "utility table /no/table.tsv not found"),
]


def _refused(code: int, out: str, err: str, message: str) -> None:
    assert code == 2, err
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize(("args", "message"), RLHF_BAD)
def test_rlhf_bad_values_are_refused_before_anything(
    tiny_model_dir, tmp_path, run_cli, args, message
):
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        "llm", "rlhf", "--model", tiny_model_dir, "--out", out, "--steps", "1", *args
    )
    _refused(code, stdout, err, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("verb", "args", "message"),
    [
        ("score", ["--prefixes", "0"], "--prefixes: must be at least 1, got 0"),
        ("score", ["--prefix-tokens", "-5"], "--prefix-tokens: must be at least 1"),
        ("score", ["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
        ("score", ["--threads", "-2"], "--threads: must be at least 1"),
        ("score", ["--table", "/no/table.tsv"], "utility table /no/table.tsv not found"),
        ("score", ["--data", "/no/reviews.txt"], "data file /no/reviews.txt not found"),
        ("record", ["--layers", "0", "--data", "/no/d.txt"], "data file /no/d.txt not found"),
        ("record", ["--layers", "0", "--prefixes", "0"], "--prefixes: must be at least 1"),
        ("record", ["--layers", "0", "--batch-size", "-1"], "--batch-size: must be at least 1"),
        ("record", ["--layers", "0", "--dtype", "int8"], "--dtype: expected one of float32"),
        ("record", ["--layers", "-1"], "--layers: indices must not be negative, got -1"),
        ("record", ["--layers", "a,b"], "--layers must be comma-separated integers"),
    ],
)
def test_score_and_record_bad_values(random_lm_dir, tmp_path, run_cli, verb, args, message):
    out = tmp_path / "acts"
    extra = ["--out", out] if verb == "record" else []
    code, stdout, err = run_cli("llm", verb, "--model", random_lm_dir, *extra, *args)
    _refused(code, stdout, err, message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--steps", "0"], "--steps: must be at least 1, got 0"),
        (["--layers", "0"], "--layers: must be at least 1, got 0"),
        (["--d-model", "30"], "--d-model: 30 is not divisible by n_heads 4"),
        (["--seed", "-4"], "--seed: must be between 0 and"),
    ],
)
def test_pretrain_tiny_bad_values(tmp_path, run_cli, args, message):
    out = tmp_path / "tiny"
    code, stdout, err = run_cli("llm", "pretrain-tiny", "--out", out, *args)
    _refused(code, stdout, err, message)
    assert not out.exists()


def test_divergence_bad_top_n(tmp_path, run_cli):
    code, out, err = run_cli("llm", "divergence", "--base", "a/b", "--tuned", "a/c", "--top-n", "0")
    _refused(code, out, err, "--top-n: must be at least 1, got 0")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickled_weights_are_refused_in_one_line(random_lm_dir, tmp_path, run_cli, monkeypatch):
    """A pytorch_model.bin holding more than tensors is refused without running it."""
    bad = tmp_path / "bad"
    shutil.copytree(random_lm_dir, bad)
    (bad / "model.safetensors").unlink()
    (bad / "pytorch_model.bin").write_bytes(pickle.dumps({"w": _Evil()}))
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("llm", "score", "--model", bad, "--prefixes", "2")
    _refused(code, out, err, "pickled weights file (pytorch_model.bin)")
    assert not (tmp_path / "PWNED").exists()
    code, out, err = run_cli("llm", "rlhf", "--model", bad, "--out", tmp_path / "o")
    _refused(code, out, err, "refused without running it")
    assert not (tmp_path / "o").exists() and not (tmp_path / "PWNED").exists()


SMALL = ["--batch-size", "4", "--mini-batch-size", "2", "--max-new-tokens", "4", "--lr", "1e-4"]


def test_rlhf_refusals_leave_nothing_and_resume_names_the_keys(tiny_model_dir, tmp_path, run_cli):
    """A malformed table is refused before rlhf.json exists, so the fixed command needs no
    --resume; a resume with another config is refused naming every differing key."""
    out = tmp_path / "run"
    bad = tmp_path / "bad.tsv"
    bad.write_text("great\t1\nawful\n")
    base = ["llm", "rlhf", "--model", tiny_model_dir, "--out", out, "--threads", "1", *SMALL]
    code, stdout, err = run_cli(*base, "--steps", "1", "--table", bad)
    _refused(code, stdout, err, "bad.tsv:2: malformed")
    assert not out.exists()
    code, stdout, err = run_cli(*base, "--steps", "1", "--json")
    assert code == 0, err
    res = json.loads(stdout)
    assert (res["format"], res["steps"]) == ("rlsae.rlhf_result", 1)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    code, stdout, err = run_cli(
        *base, "--steps", "2", "--resume", "--batch-size", "8", "--kl-coef", "0.1", "--seed", "3"
    )
    _refused(code, stdout, err, f"cannot resume {out}: ")
    for key in ("ppo.batch_size was 4, now 8", "ppo.init_kl_coef was 0.5, now 0.1", "seed was 0"):
        assert key in err
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before  # nothing rewritten
    code, stdout, err = run_cli(*base, "--steps", "2", "--resume", "--json")
    assert code == 0, err
    assert json.loads(stdout)["steps"] == 2


BAD_NUMBERS = ["-1", "nan", "inf", "-inf", "1e400", "abc", ""]


def _numeric_options():
    """(verb, flag) of every numeric option of every config-backed llm verb, and --threads."""
    for verb in sorted(CONFIG_OPTIONS):
        cls, spec = CONFIG_OPTIONS[verb]
        for dotted, flag in spec.values():
            owner, name = field_owner(cls, dotted)
            if typing.get_type_hints(owner)[name] in (int, float, int | None, float | None):
                yield verb, flag
        if any(p.name == "threads" for p in _command(verb).params):
            yield verb, "--threads"


REQUIRED = {
    "pretrain-tiny": ["--out", "{out}"],
    "rlhf": ["--model", "{model}", "--out", "{out}", "--steps", "1"]
    + ["--batch-size", "2", "--mini-batch-size", "1"],
    "score": ["--model", "{model}", "--prefixes", "2"],
    "record": ["--model", "{model}", "--layers", "0", "--out", "{out}", "--prefixes", "2"],
    "explain": ["--sae", "{out}/sae", "--acts", "{out}/acts", "--features", "0"],
    "score-explanations": ["--sae", "{out}/sae", "--acts", "{out}/acts"],
}


@pytest.mark.parametrize(("verb", "flag"), list(_numeric_options()))
def test_generated_bad_numbers_for_every_numeric_option(
    random_lm_dir, tmp_path, run_cli, verb, flag
):
    """Negative, NaN, infinite, huge, non-numeric and empty values: each refused in one line
    naming the option, before anything is written."""
    out = tmp_path / "out"
    base = [a.format(out=out, model=random_lm_dir) for a in REQUIRED[verb]]
    for value in BAD_NUMBERS:
        code, stdout, err = run_cli("llm", verb, *base, flag, value)
        assert code == 2 and stdout == "", (flag, value, err)
        assert err.startswith("error: ") and err.count("\n") == 1, (flag, value, err)
        assert flag in err and "Traceback" not in err, (flag, value, err)
        assert not out.exists(), (flag, value)
