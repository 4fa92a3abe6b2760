"""``rlsae diff train`` and ``rlsae diff latents`` (issue 14): the command line over the planted
pair, the JSON shape the issue asks for, the diff-SAE, and bad input refused in one line with
nothing written."""

from __future__ import annotations

import json

import pytest

from rlsae.sae.crosscoder_config import CrosscoderConfig, LatentConfig
from rlsae.sae.model import SAE, SAEConfig

from .crosscoder_planted import planted_pair


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_pair(tmp_path_factory.mktemp("cli"), n_rows=4000, d=48)


def test_train_then_latents_print_the_issues_json(planted, tmp_path, run_cli):
    out = tmp_path / "cc"
    code, stdout, err = run_cli(
        "diff", "train", "--base", planted.base, "--tuned", planted.tuned, "--out", out,
        "--d-sae", 64, "--k", 2, "--steps", 300, "--batch-size", 512, "--json",
    )  # fmt: skip
    assert code == 0, err
    trained = json.loads(stdout)
    assert trained["arch"] == "batchtopk" and trained["d_sae"] == 64 and trained["steps"] == 300
    assert 0 <= trained["fvu_base"] < 0.2 and 0 <= trained["fvu_tuned"] < 0.2
    html = tmp_path / "ratios.html"
    code, stdout, err = run_cli(
        "diff", "latents", "--crosscoder", out, "--base", planted.base, "--tuned", planted.tuned,
        "--json", "--html", html, "--save", tmp_path / "latents.json",
    )  # fmt: skip
    assert code == 0, err
    info = json.loads(stdout)
    assert info["n_latents"] == 64
    assert set(info["counts"]) == {"shared", "base_only", "tuned_only", "artefact", "dead"}
    assert sum(info["counts"].values()) == 64
    assert info["counts"]["tuned_only"] >= 3 and info["counts"]["base_only"] >= 3
    keys = {"latent", "norm_ratio", "cosine", "nu_error", "nu_reconstruction", "class"}
    assert all(keys <= set(row) for row in info["latents"])
    assert html.read_text().count("<script") >= 1
    assert json.loads((tmp_path / "latents.json").read_text())["format"] == (
        "rlsae.crosscoder_latents"
    )
    code, stdout, _ = run_cli(
        "diff", "latents", "--crosscoder", out, "--base", planted.base, "--tuned", planted.tuned
    )
    assert code == 0 and "tuned_only" in stdout.splitlines()[0]


def test_the_diff_sae_trains_on_tuned_minus_base(planted, tmp_path, run_cli):
    out = tmp_path / "dsae"
    code, stdout, err = run_cli(
        "diff", "train", "--arch", "diff-sae", "--base", planted.base, "--tuned", planted.tuned,
        "--out", out, "--d-sae", 32, "--k", 1, "--lr", 0.003, "--steps", 500, "--batch-size", 256,
        "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(stdout)["arch"] == "diff-sae"
    cfg = json.loads((out / "cfg.json").read_text())
    assert cfg["metadata"]["model_name"] == "tuned minus base" and cfg["d_in"] == 48
    sae = SAE.load(out)  # an ordinary SAE
    # the differences hold only the model-only and the trap directions: the SAE's live
    # decoder rows point along those (cosine >= 0.9), never along a plain shared direction
    W = sae.W_dec.detach()
    for kind in ("tuned_only", "base_only", "trap"):  # base_only: as -u (tuned - base < 0)
        cos = (planted.of(kind) @ W.T).abs().amax(1)
        assert (cos >= 0.9).all(), (kind, cos)
    assert (planted.of("shared") @ W.T).abs().max() < 0.5


def _refused(run_cli, tmp_path, *args):
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = run_cli(*args)
    assert code == 2 and stdout == "", (code, stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return lines[0]


def test_bad_input_is_refused_in_one_line_with_nothing_written(planted, tmp_path, run_cli):
    b, t, out = planted.base, planted.tuned, tmp_path / "cc"
    line = _refused(run_cli, tmp_path, "diff", "train", "--base", b, "--tuned", t, "--out", out,
                    "--d-sae", 16, "--k", 20)  # fmt: skip
    assert "k must be between 1 and d_sae=16" in line
    line = _refused(run_cli, tmp_path, "diff", "train", "--base", b, "--tuned", t, "--out", out,
                    "--arch", "topk")  # fmt: skip
    assert "--arch" in line
    line = _refused(run_cli, tmp_path, "diff", "train", "--base", b, "--tuned", b / "nope",
                    "--out", out)  # fmt: skip
    assert "--tuned" in line
    SAE(SAEConfig(d_in=48, d_sae=16, k=2)).save(tmp_path / "sae")
    line = _refused(run_cli, tmp_path, "diff", "latents", "--crosscoder", tmp_path / "sae",
                    "--base", b, "--tuned", t)  # fmt: skip
    assert "not a crosscoder" in line
    line = _refused(run_cli, tmp_path, "diff", "latents", "--crosscoder", tmp_path / "sae",
                    "--base", b, "--tuned", t, "--nu-error-max", 0)  # fmt: skip
    assert "nu_error_max" in line
    # a crosscoder given to an SAE-only command
    from rlsae.sae.crosscoder_train import train_crosscoder

    train_crosscoder(
        b, t, tmp_path / "cc2", CrosscoderConfig(d_sae=16, k=2, steps=2), progress=False
    )
    line = _refused(run_cli, tmp_path, "sae", "eval", "--sae", tmp_path / "cc2", "--acts", b)
    assert "'crosscoder' is not supported" in line


def test_options_take_their_defaults_and_help_from_the_configs():
    """A default or help text in commands/diff.py that drifts from its config field fails."""
    import typer

    from rlsae.commands._apps import app, plain_help
    from rlsae.commands.diff import LATENT_OPTIONS, TRAIN_OPTIONS
    from rlsae.configs import field_default, field_docs

    group = typer.main.get_command(app).commands["diff"]  # type: ignore[attr-defined]
    for verb, cls, flags in (("train", CrosscoderConfig, TRAIN_OPTIONS),
                             ("latents", LatentConfig, LATENT_OPTIONS)):  # fmt: skip
        params = {p.name: p for p in group.commands[verb].params}
        for name, flag in flags.items():
            opt = params[name]
            assert flag in opt.opts, (verb, name)
            assert opt.help.startswith(plain_help(field_docs(cls)[name])), (verb, name)
            if name == "expansion":  # None: it excludes --d-sae; the help names the default
                assert opt.default is None and "(default 4)" in opt.help
            else:
                assert opt.default == field_default(cls, name), (verb, name)
