"""Property-style sweep (issue 18): every numeric option of every command refuses bad values.

The test walks the typer app (as ``benchmarks/cli_startup.py`` does), so a command added later
is covered without editing this file. For every ``int``/``float`` option it throws generated bad
values -- negative, zero, NaN, infinities, huge, fractional for an integer, wrong type -- with
otherwise valid arguments that point at small real fixtures (an activation store, a trained SAE,
an agent directory, a language-model directory, a table, a run directory), and checks:

- exit status 2, nothing on stdout, exactly one ``error:`` line on stderr and no traceback;
- the line names the option (so it is the value that was refused, not a fixture);
- no file or directory under the fixtures or the output path changed (names, sizes, mtimes).

A value a command legitimately accepts is listed in :data:`ALLOWED` with the reason; nothing is
skipped wholesale. Refusals come before any heavy work, so each case takes milliseconds; a case
that runs past :data:`CASE_LIMIT_S` fails (the value was not checked before the work).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from rlsae.cli import main
from rlsae.commands._apps import app

CASE_LIMIT_S = 20

INT_VALUES = ["-1", "0", "-99999999999999999999", "99999999999999999999", "1.5", "abc", "nan"]
FLOAT_VALUES = ["-1", "0", "nan", "inf", "-inf", "1e308", "-1e308", "abc"]

_SEED = "any integer seeds the generators; 0 is the default"
_INDEX = "an index: 0 is the first"
_ZERO_OK = "0 is a meaningful setting"
HUGE = "99999999999999999999"
# (command or "*", option) -> {value: why it is accepted}
ALLOWED: dict[tuple[str, str], dict[str, str]] = {
    ("*", "--seed"): {"0": _SEED},
    ("analyze fit", "--bootstrap"): {"0": "--bootstrap 0 skips the bootstrap intervals"},
    ("analyze dead", "--threshold"): {"0": _ZERO_OK + ": a feature firing 0 times is dead"},
    ("*", "--epsilon"): {"0": "greedy play (eval's and splice's default)"},
    ("dqn survey", "--sticky-actions"): {"0": "no sticky actions: the deterministic emulator"},
    ("dqn survey", "--skip-first-steps"): {"0": "skip nothing"},
    ("llm explain", "--temperature"): {"0": "greedy sampling of the explainer (the default)"},
    ("sae train", "--l1"): {
        "0": "no sparsity penalty, an ablation (top-k SAEs ignore it)",
        "1e308": "top-k SAEs ignore l1; a ReLU SAE with it learns all-dead latents, not an error",
    },
    ("sae train", "--aux-k"): {
        "0": "0 turns the auxiliary dead-latent loss off",
        HUGE: "capped at d_sae: all dead latents get the auxiliary loss",
    },
    # Upper ends that mean "all of it", or whose range depends on data read later (checked
    # there, in one line, by the data-dependent tests of each part):
    ("acts import", "--shard-rows"): {HUGE: "one shard holds the whole (smaller) input"},
    ("sae eval", "--batch-size"): {HUGE: "a batch larger than the store is the whole store"},
    ("analyze dead", "--batch-size"): {HUGE: "a batch larger than the store is the whole store"},
    ("sae eval", "--max-rows"): {HUGE: "more rows than the store holds means all of them"},
    ("sae train", "--batch-size"): {HUGE: "capped at the store's rows"},
    ("sae train", "--checkpoint-every"): {HUGE: "no checkpoint before the final one"},
    ("dqn train", "--checkpoint-every"): {HUGE: "no checkpoint before the final one"},
    ("dqn train", "--learning-starts"): {
        "0": "learn from the first step (SB3 allows it)",
        HUGE: "never learns within --steps: a random-policy baseline run",
    },
    ("analyze mmcs", "--top-k"): {
        "0": "--top-k 0 lists no pairs (the score is still printed)",
        HUGE: "more than the features lists them all",
    },
    ("analyze fit", "--seed"): {"0": _SEED, HUGE: "numpy's generators take any seed >= 0"},
    ("viewer export", "--top"): {HUGE: "more than the contexts shows them all"},
    ("llm divergence", "--top-n"): {HUGE: "more than the vocabulary lists it all"},
    ("dqn effects", "--feature"): {"0": _INDEX, HUGE: "checked against the SAE's width once read"},
    ("dqn effects", "--step"): {"0": _INDEX, HUGE: "checked against the recording once read"},
    ("dqn replay", "--step"): {"0": _INDEX, HUGE: "checked against the recording once read"},
    ("dqn replay", "--episode"): {"0": _INDEX, HUGE: "checked against the recording once read"},
    ("dqn effects", "--episode"): {"0": _INDEX, HUGE: "checked against the recording once read"},
    ("dqn saliency", "--feature"): {"0": _INDEX},
    ("dqn saliency", "--step"): {"0": _INDEX},
    ("dqn saliency", "--episode"): {"0": _INDEX},
    ("dqn steer", "--scale"): {
        "0": "sets the features to zero (the same as --ablate)",
        "-1": "a negative scale pushes the features the other way",
    },
    ("llm explain", "--layer"): {"0": _INDEX, HUGE: "checked against the store once read"},
    ("llm steer", "--feature"): {"0": _INDEX},
    ("llm steer", "--alpha"): {
        "0": "adds nothing: the unsteered completions (a known-answer check)",
        "-1": "a negative alpha pushes the feature the other way",
    },
    ("llm steer", "--show"): {"0": "print no completions (the --json result has them all)"},
    ("llm amplify", "--alpha"): {
        "0": "samples the tuned model itself",
        "-1": "samples the base model (negative alphas move toward it)",
    },
    ("llm amplify", "--show"): {"0": "print no completions (the --json result has them all)"},
    ("llm explain", "--samples"): {HUGE: "capped by the store's contexts"},
    ("dqn concepts", "--show"): {"0": "print no features (the --json result is complete)"},
    ("dqn concepts", "--top-k"): {HUGE: "more than the concepts keeps them all"},
    ("dqn concepts", "--max-rows"): {HUGE: "more rows than the store holds means all of them"},
    ("llm rlhf", "--kl-coef"): {
        "0": "RLHF without the KL penalty, an ablation",
    },
    ("sae train", "--l0-warmup-frac"): {"0": "no warm-up of the L0 penalty"},
    ("acts synth", "--zipf-exponent"): {
        "0": "uniform feature frequencies",
        "1e308": "all the frequency on the first feature: a degenerate but valid store",
    },
    ("acts synth", "--parents"): {"0": "no feature hierarchy"},
    ("acts synth", "--correlated-groups"): {"0": "no correlated features (the default)"},
    ("acts synth", "--child-prob"): {"0": "children never fire with their parent"},
}

# Cases not yet refused (issue 18 left open; each says what happens). They are not run: each
# would start the work. The test fails when an entry names no existing case, so fixing one
# means deleting its line here.
KNOWN_GAPS: dict[tuple[str, str, str], str] = {}


# ---------------------------------------------------------------------------------------------
# The command tree and the arguments that are valid apart from the value under test


def commands() -> Iterator[tuple[str, Any]]:
    """``("group verb", click command)`` for every leaf of the app."""
    root = typer.main.get_command(app)

    def walk(cmd: Any, path: list[str]) -> Iterator[tuple[str, Any]]:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in sorted(subs.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(root, [])


def kind(param: Any) -> str:
    """``int``, ``float``, ``path`` or ``text``: the annotation of the option."""
    annotation = param.get_runtime_param().annotation
    text = str(annotation).lower()
    for k in ("int", "float", "path"):
        if k in text:
            return k
    return "text"


def numeric_options(cmd: Any) -> list[tuple[str, str]]:
    return [(p.opts[0], kind(p)) for p in cmd.params if p.opts and kind(p) in ("int", "float")]


# A required option of one of these names gets this fixture (keys of the ``fixtures`` dict) or
# this literal; a new command with other required options fails below, naming them.
BY_OPTION = {
    "--acts": "{store}",
    "--sae": "{sae}",
    "--crosscoder": "{sae}",
    "--agent": "{agent}",
    "--model": "{lm}",
    "--base": "{lm}",
    "--tuned": "{lm}",
    "--table": "{table}",
    "--run": "{run}",
    "--from": "{npy}",
    "--out": "{out}",
    "--config": "smoke",
    "--x": "x",
    "--y": "y",
    "--arch": "poster",
    "--steps": "10",
    "--feature": "0",
    "--features": "0",
    "--layer": "fc1",
    "--layers": "0",
}
# Options worth giving though not required, so that the command gets past its path checks.
EXTRA = {
    "llm explain": ["--out", "{out}/explanations.json"],
    "dqn replay": ["--out", "{out}/state.png"],
    "dqn effects": ["--acts", "{store}"],
    "dqn eval": ["--no-save"],
    "viewer export": ["--out", "{out}"],
    "sweep": ["--out", "{out}"],
    "llm divergence": ["--html", "{out}/divergence.html"],
    "llm rlhf": ["--model", "{lm}"],
    "analyze fit": ["--html", "{out}/fit.html"],
}
# Integer --layer of llm explain is a layer index, not dqn's layer name.
OVERRIDE = {("llm explain", "--layer"): "0"}


def base_argv(name: str, cmd: Any, skip: str) -> list[str]:
    argv = name.split()
    for p in cmd.params:
        if not p.required or not p.opts or p.opts[0] == skip:
            continue
        opt = p.opts[0]
        assert opt in BY_OPTION, f"{name}: no fixture for required {opt}; add it to BY_OPTION"
        value = OVERRIDE.get((name, opt), BY_OPTION[opt])
        argv += [opt, value] * (2 if name == "analyze mmcs" and opt == "--sae" else 1)
    return argv + [a for a in EXTRA.get(name, [])]


def cases() -> list[tuple[str, str, str]]:
    out = []
    for name, cmd in commands():
        for opt, k in numeric_options(cmd):
            for value in INT_VALUES if k == "int" else FLOAT_VALUES:
                out.append((name, opt, value))
    return out


def allowed(name: str, opt: str, value: str) -> str | None:
    for key in ((name, opt), ("*", opt)):
        if value in ALLOWED.get(key, {}):
            return ALLOWED[key][value]
    return None


# ---------------------------------------------------------------------------------------------
# Fixtures: small and real


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import numpy as np
    import torch

    from rlsae.agents.config import DQNConfig, EnvConfig
    from rlsae.agents.dqn import AgentInfo
    from rlsae.sae import SAE, SAEConfig
    from rlsae.sae.store import ActivationWriter

    root = tmp_path_factory.mktemp("bad_values")
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    with ActivationWriter(root / "store", 16, shard_rows=100, hook="fc1", source="toy") as w:
        w.append(x)
    SAE(SAEConfig(d_in=16, d_sae=32, k=4, hook_name="fc1"), seed=0).save(root / "sae")
    np.save(root / "acts.npy", x.numpy())
    agent = root / "agent"  # an agent directory as far as the light checks can tell
    agent.mkdir()
    (agent / "model.zip").write_bytes(b"")
    AgentInfo(arch="poster", seed=0, steps_trained=1, n_envs=1, hyperparameters=DQNConfig(),
              env=EnvConfig(mode="poster")).write(agent / "agent.json")  # fmt: skip
    lm = root / "lm"  # a model directory as far as the light checks can tell
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    (lm / "model.safetensors").write_bytes(b"")
    (root / "table.csv").write_text("x,y\n" + "".join(f"{i},{i * i % 7}\n" for i in range(8)))
    run = root / "run"
    (run / "saes").mkdir(parents=True)
    return {
        "store": root / "store",
        "sae": root / "sae",
        "agent": agent,
        "lm": lm,
        "table": root / "table.csv",
        "run": run,
        "npy": root / "acts.npy",
        "out": root / "out",
        "root": root,
    }


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (st.st_mode, st.st_size, st.st_mtime_ns)
        for p in sorted(root.rglob("*"))
        for st in [p.lstat()]
    }


def _remove_new(root: Path, before: dict[str, Any]) -> None:
    for p in sorted(root.rglob("*"), reverse=True):
        if str(p.relative_to(root)) not in before:
            p.unlink() if not p.is_dir() or p.is_symlink() else shutil.rmtree(p)


class _TooSlow(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _TooSlow(f"no refusal within {CASE_LIMIT_S} s: the value reached the work")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_LIMIT_S)
    code = 0
    try:
        main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except _TooSlow:
        raise
    except Exception as e:  # noqa: BLE001 - reported as the traceback the user would see
        code = -1
        print(f"Traceback (most recent call last): {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def names(opt: str) -> set[str]:
    """How an error line may name the option ``--n-envs``: ``--n-envs``, ``n_envs``, ``n-envs``."""
    bare = opt.lstrip("-")
    return {opt, bare, bare.replace("-", "_"), bare.replace("-", " ")} | ALIASES.get(opt, set())


ALIASES = {"--lr": {"learning_rate"}, "--top": {"top"}}


def test_every_numeric_option_of_every_command_refuses_bad_values(fixtures, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root = fixtures["root"]
    before = snapshot(root)
    fmt = {k: str(v) for k, v in fixtures.items()}
    failures: list[str] = []
    n_refused = n_allowed = 0
    slowest: list[tuple[float, str]] = []
    cmds = dict(commands())  # building the click tree once, not per case
    for name, opt, value in cases():
        reason = allowed(name, opt, value) or KNOWN_GAPS.get((name, opt, value))
        if reason is not None:
            n_allowed += 1
            continue
        cmd = cmds[name]
        argv = [a.format(**fmt) for a in base_argv(name, cmd, skip=opt)] + [opt, value]
        t0 = time.perf_counter()
        try:
            code, out, err = run(argv, capsys)
            slowest.append((time.perf_counter() - t0, f"{name} {opt} {value}"))
        except _TooSlow as e:
            capsys.readouterr()
            failures.append(f"{name} {opt} {value}: {e}")
            _remove_new(root, before)
            continue
        lines = err.strip().splitlines()
        ok = (
            code == 2
            and out == ""
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and "Traceback" not in err
            and any(n in lines[0] for n in names(opt))
        )
        if not ok:
            failures.append(f"{name} {opt} {value}: exit {code}, {err.strip()[-300:]!r}")
        after = snapshot(root)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            failures.append(f"{name} {opt} {value}: changed files {changed[:3]}")
            _remove_new(root, before)  # so that later cases see the fixtures as they were
            before = snapshot(root)
        n_refused += 1
    worst = max(slowest)
    assert worst[0] < CASE_LIMIT_S / 4, f"slowest refusal {worst[0]:.1f} s: {worst[1]}"
    assert not failures, f"{len(failures)} of {n_refused} cases:\n" + "\n".join(failures)
    assert n_refused > 300 and n_allowed >= len(ALLOWED)


def test_the_allowed_table_names_real_options():
    """Every entry of :data:`ALLOWED` is an existing numeric option and one of the generated
    values, so the table cannot silently excuse nothing (or a removed option)."""
    options = {name: dict(numeric_options(cmd)) for name, cmd in commands()}
    for (name, opt), values in ALLOWED.items():
        where = [n for n in options if name in ("*", n) and opt in options[n]]
        assert where, (name, opt)
        for v in values:
            assert v in INT_VALUES + FLOAT_VALUES, (name, opt, v)
            assert values[v], (name, opt, v)


@pytest.mark.slow
def test_refusals_come_before_torch_in_a_fresh_process(fixtures):
    """One bad value per command in a fresh interpreter: refused before torch is imported."""
    fmt = {k: str(v) for k, v in fixtures.items()}
    argvs = []
    for name, cmd in commands():
        opts = numeric_options(cmd)
        if opts:
            opt = opts[0][0]
            value = "-1" if allowed(name, opt, "-1") is None else "abc"
            argvs.append([a.format(**fmt) for a in base_argv(name, cmd, skip=opt)] + [opt, value])
    code = (
        "import sys\n"
        "from rlsae.cli import main\n"
        "late = []\n"
        f"for argv in {argvs!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 2, (argv, e.code)\n"
        "    if 'torch' in sys.modules:\n"
        "        late.append(' '.join(argv[:2]))\n"
        "        break\n"
        "print(late)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", res.stdout
