"""The dqn verbs through rlsae.cli.main: one JSON object with --json (typed artifacts), one-line
errors with exit status 2 for every bad value, and options that agree with the config fields."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsae.agents.config import (
    DQNConfig,
    DQNTrainConfig,
    EnvConfig,
    EvalConfig,
    RecordConfig,
    SpliceConfig,
    train_config,
)
from rlsae.agents.results import AgentInfo, Evaluation
from rlsae.configs import field_default, field_docs, to_mapping


def test_layers_and_eval_print_one_json_object(poster_agent: Path, run_cli):
    code, out, _ = run_cli("dqn", "layers", "--agent", poster_agent, "--json")
    assert code == 0
    res = json.loads(out)
    assert res["layers"] == {"conv3": 960, "fc1": 512, "fc2": 512}
    ckpt = poster_agent / "checkpoints" / "step_100"
    code, out, _ = run_cli(
        "dqn", "eval", "--agent", ckpt, "--episodes", "1", "--max-episode-steps", "50", "--json"
    )
    assert code == 0 and len(out.strip().splitlines()) == 1
    res = json.loads(out)
    assert (res["format"], res["version"]) == ("rlsae.dqn_eval", 1)
    assert res["steps_trained"] == 100 and res["episodes"] == 1
    assert res["lengths"] == [50]
    saved = Evaluation.read(ckpt / "eval.json")  # the file and --json are the same artifact
    assert saved.to_json() == res
    assert saved.mean_return == res["mean_return"] == sum(res["returns"])


def test_record_and_replay_verbs(poster_agent: Path, run_cli, tmp_path: Path):
    out_dir = tmp_path / "acts"
    argv = ["dqn", "record", "--agent", poster_agent, "--layer", "fc2", "--steps", "30"]
    code, out, _ = run_cli(*argv, "--out", out_dir, "--n-envs", "1", "--json")
    assert code == 0
    assert json.loads(out)["rows"] == 30
    png = tmp_path / "s.png"
    code, out, _ = run_cli(
        "dqn", "replay", "--acts", out_dir, "--step", "7", "--out", png, "--verify", "--json"
    )
    res = json.loads(out)
    assert code == 0 and res["checked"] == 30 and res["mismatches"] == 0
    assert png.read_bytes()[:4] == b"\x89PNG"
    # --resume keeps the identical recording and refuses one with other settings
    before = (out_dir / "meta.json").stat().st_mtime_ns
    code, out, _ = run_cli(*argv, "--out", out_dir, "--n-envs", "1", "--resume", "--json")
    assert code == 0 and json.loads(out)["rows"] == 30
    assert (out_dir / "meta.json").stat().st_mtime_ns == before
    code, out, err = run_cli(
        *argv, "--out", out_dir, "--n-envs", "1", "--epsilon", "0.5", "--resume"
    )
    assert code == 2 and out == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "recorded with other settings: epsilon 0.2 (now 0.5)" in err
    assert (out_dir / "meta.json").stat().st_mtime_ns == before


_TRAIN = ["dqn", "train", "--arch", "poster", "--steps", "5", "--out", "{tmp}/o"]
_EVAL = ["dqn", "eval", "--agent", "{agent}"]
_RECORD = [
    "dqn",
    "record",
    "--agent",
    "{agent}",
    "--layer",
    "fc1",
    "--steps",
    "5",
    "--out",
    "{tmp}/o",
]
_SPLICE = ["dqn", "splice", "--agent", "{agent}", "--sae", "{tmp}/no_sae"]

BAD = [
    (["dqn", "layers", "--agent", "{tmp}/none"], "agent directory"),
    (["dqn", "record", "--agent", "{agent}", "--layer", "fc9", "--steps", "5", "--out", "{tmp}/o"],
     "valid layers: conv3 (960), fc1 (512), fc2 (512)"),
    ([*_RECORD[:-4], "--steps", "0", "--out", "{tmp}/o"], "dqn record: steps: must be at least 1, got 0"),
    ([*_TRAIN, "--set", "lr=1"], "unknown DQN setting 'lr'"),
    ([*_EVAL, "--episodes", "0"], "dqn eval: episodes: must be at least 1, got 0"),
    # issue 18: values a user can type, refused in one line before any work
    ([*_TRAIN, "--set", "learning_rate=abc"], "--set: learning_rate: expected a float, got 'abc'"),
    ([*_TRAIN, "--set", "learning_rate=-0.1"], "learning_rate: must be above 0, got -0.1"),
    ([*_TRAIN, "--set", "learning_rate=NaN"], "learning_rate: expected a finite number, got nan"),
    ([*_TRAIN, "--set", "learning_rate=1e400"], "learning_rate: expected a finite number, got inf"),
    ([*_TRAIN, "--set", "gamma=1.5"], "gamma: must be between 0 and 1, got 1.5"),
    ([*_TRAIN, "--set", "batch_size=2.5"], "batch_size: expected an integer, got 2.5"),
    ([*_TRAIN, "--set", "gradient_steps=0"], "gradient_steps: must be at least 1, got 0"),
    ([*_TRAIN, "--set", "exploration_final_eps=-0.05"], "exploration_final_eps: must be between 0 and 1"),
    ([*_TRAIN, "--set", "repeat_action_probability=2"], "repeat_action_probability: must be between 0 and 1"),
    ([*_TRAIN, "--set", "frameskip=0"], "frameskip: must be at least 1, got 0"),
    ([*_TRAIN, "--set", "reward_transform=log"], "--set: reward_transform: expected one of sign, scale, none, got 'log'"),
    ([*_TRAIN, "--set", "optimize_memory_usage=maybe"], "optimize_memory_usage: expected true or false"),
    ([*_TRAIN, "--set", "mode=nature"], "unknown DQN setting 'mode'"),
    ([*_TRAIN, "--set", "gamma"], "--set expects key=value, got 'gamma'"),
    ([*_TRAIN, "--checkpoint-every", "0"], "dqn train: checkpoint_every: must be at least 1, got 0"),
    ([*_TRAIN, "--batch-size", "0"], "dqn train: batch_size: must be at least 1, got 0"),
    ([*_TRAIN, "--buffer-size", "-5"], "dqn train: buffer_size: must be at least 1, got -5"),
    ([*_TRAIN, "--train-freq", "0"], "dqn train: train_freq: must be at least 1, got 0"),
    ([*_TRAIN, "--learning-starts", "-1"], "dqn train: learning_starts: must be at least 0, got -1"),
    ([*_TRAIN, "--n-envs", "0"], "dqn train: n_envs: must be at least 1, got 0"),
    ([*_TRAIN, "--seed", "-1"], "dqn train: seed: must be at least 0, got -1"),
    ([*_TRAIN[:5], "0", *_TRAIN[6:]], "dqn train: steps: must be at least 1, got 0"),
    ([*_TRAIN[:3], "impala", *_TRAIN[4:]], "unknown architecture 'impala'"),
    ([*_EVAL, "--n-envs", "0"], "dqn eval: n_envs: must be at least 1, got 0"),
    ([*_EVAL, "--n-envs", "100000"], "dqn eval: n_envs: must be between 1 and 1024, got 100000"),
    ([*_TRAIN, "--n-envs", "5000"], "dqn train: n_envs: must be between 1 and 1024, got 5000"),
    ([*_TRAIN, "--device", "gpu"], "dqn train: device: expected auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
    ([*_EVAL, "--max-episode-steps", "0"], "dqn eval: max_episode_steps: must be at least 1, got 0"),
    ([*_EVAL, "--epsilon", "-0.1"], "dqn eval: epsilon: must be between 0 and 1, got -0.1"),
    ([*_EVAL, "--epsilon", "nan"], "dqn eval: epsilon: expected a finite number, got nan"),
    ([*_EVAL, "--epsilon", "1e300"], "dqn eval: epsilon: must be between 0 and 1, got 1e+300"),
    ([*_EVAL, "--seed", "-3"], "dqn eval: seed: must be at least 0, got -3"),
    ([*_RECORD, "--epsilon", "1.5"], "dqn record: epsilon: must be between 0 and 1, got 1.5"),
    ([*_RECORD, "--n-envs", "0"], "dqn record: n_envs: must be at least 1, got 0"),
    ([*_RECORD, "--dtype", "float64"], "dqn record: dtype: expected one of float32, float16"),
    ([*_RECORD, "--max-episode-steps", "-2"], "dqn record: max_episode_steps: must be at least 1"),
    ([*_SPLICE, "--episodes", "0"], "dqn splice: episodes: must be at least 1, got 0"),
    ([*_SPLICE, "--n-envs", "0"], "dqn splice: n_envs: must be at least 1, got 0"),
    ([*_SPLICE, "--epsilon", "inf"], "dqn splice: epsilon: expected a finite number, got inf"),
    ([*_SPLICE, "--max-episode-steps", "0"], "dqn splice: max_episode_steps: must be at least 1"),
]  # fmt: skip


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a[1:2] + a[-2:]) for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    poster_agent, run_cli, tmp_path, argv, message
):
    argv = [a.format(tmp=tmp_path, agent=poster_agent) for a in argv]
    before = sorted(p.name for p in poster_agent.iterdir())
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # the output path untouched, nothing left behind
    assert sorted(p.name for p in poster_agent.iterdir()) == before  # no eval.json


def test_resume_into_a_foreign_directory_is_refused(run_cli, tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    argv = ["dqn", "train", "--arch", "poster", "--steps", "5", "--out", tmp_path, "--resume"]
    code, out, err = run_cli(*argv)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "is not a DQN training directory (no train.json); nothing to resume there" in err
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_resume_with_other_settings_is_refused_in_one_line(run_cli, tmp_path: Path):
    out = tmp_path / "agent"
    (out).mkdir()
    saved = to_mapping(train_config("poster", 100))  # what an interrupted run left
    (out / "train.json").write_text(json.dumps(saved))
    argv = ["dqn", "train", "--arch", "poster", "--steps", "200", "--out", out, "--resume"]
    code, _, err = run_cli(*argv, "--set", "learning_rate=0.001", "--seed", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was trained with other settings" in err
    assert "hyperparameters.learning_rate 0.0005 (now 0.001)" in err and "seed 0 (now 3)" in err
    assert sorted(p.name for p in out.iterdir()) == ["train.json"]
    assert json.loads((out / "train.json").read_text()) == saved


# option -> (config class, field) for every option that a config field backs
OPTIONS = {
    "train": {"--arch": (DQNTrainConfig, "arch"), "--steps": (DQNTrainConfig, "steps"),
              "--seed": (DQNTrainConfig, "seed"), "--n-envs": (DQNTrainConfig, "n_envs"),
              "--checkpoint-every": (DQNTrainConfig, "checkpoint_every"),
              "--buffer-size": (DQNConfig, "buffer_size"), "--batch-size": (DQNConfig, "batch_size"),
              "--learning-starts": (DQNConfig, "learning_starts"),
              "--train-freq": (DQNConfig, "train_freq")},
    "eval": {f"--{n.replace('_', '-')}": (EvalConfig, n)
             for n in ("episodes", "epsilon", "seed", "n_envs", "max_episode_steps")},
    "record": {f"--{n.replace('_', '-')}": (RecordConfig, n)
               for n in ("layer", "steps", "epsilon", "seed", "n_envs", "dtype",
                         "max_episode_steps")},
    "splice": {f"--{n.replace('_', '-')}": (SpliceConfig, n)
               for n in ("episodes", "epsilon", "seed", "n_envs", "max_episode_steps", "layer")},
}  # fmt: skip
ARCH_DEFAULT = {"--buffer-size", "--batch-size", "--learning-starts", "--train-freq"}


@pytest.mark.parametrize("verb", sorted(OPTIONS))
def test_options_take_defaults_and_help_from_the_config_fields(verb: str):
    import typer

    from rlsae.commands._apps import dqn_app

    cmd = typer.main.get_command(dqn_app).commands[verb]  # type: ignore[attr-defined]
    params = {opt: p for p in cmd.params for opt in p.opts}
    for opt, (cls, name) in OPTIONS[verb].items():
        p = params[opt]
        doc = field_docs(cls)[name]
        assert p.help is not None and p.help.startswith(doc), (verb, opt)
        if p.required:  # --arch, --steps, --layer: no default on the command line
            continue
        if opt in ARCH_DEFAULT:  # None on the command line: the arch's default applies
            assert p.default is None and p.help.endswith("(default: the arch's)")
        else:
            assert p.default == field_default(cls, name), (verb, opt)


def test_refusals_answer_before_torch_is_imported(tmp_path: Path):
    """Bad values and missing paths are refused without loading torch (fast errors, issue 18)."""
    import subprocess
    import sys

    (tmp_path / "file").write_text("not a directory")
    fake = tmp_path / "agent"  # an agent directory as far as the light checks can tell
    fake.mkdir()
    (fake / "model.zip").write_bytes(b"")
    AgentInfo(arch="nature", seed=0, steps_trained=1, n_envs=1, hyperparameters=DQNConfig(),
              env=EnvConfig(mode="nature")).write(fake / "agent.json")  # fmt: skip
    cases = [
        (["dqn", "record", "--agent", fake, "--layer", "fc2", "--steps", "5", "--out",
          tmp_path / "o"], "unknown layer 'fc2' for a nature agent; valid layers: conv3 (3136)"),
        (["dqn", "eval", "--agent", tmp_path, "--n-envs", "0"], "n_envs: must be at least 1"),
        (["dqn", "eval", "--agent", tmp_path / "none"], "agent directory"),
        (["dqn", "layers", "--agent", tmp_path], "model.zip not found"),
        (["dqn", "record", "--agent", tmp_path / "none", "--layer", "fc1", "--steps", "5",
          "--out", tmp_path / "o"], "agent directory"),
        (["dqn", "splice", "--agent", tmp_path / "none", "--sae", tmp_path], "agent directory"),
        (["dqn", "train", "--arch", "poster", "--steps", "5", "--out", tmp_path / "file"],
         "is a file; --out must be a directory"),
        (["dqn", "train", "--arch", "poster", "--steps", "5", "--out", tmp_path / "t",
          "--set", "learning_rate=abc"], "--set: learning_rate: expected a float, got 'abc'"),
        (["dqn", "replay", "--acts", tmp_path], "episodes.json not found"),
        (["dqn", "effects", "--agent", tmp_path, "--sae", tmp_path, "--feature", "-1"],
         "feature: must be at least 0, got -1"),
    ]  # fmt: skip
    code = (
        "import sys\n"
        "from rlsae.cli import main\n"
        f"for argv in {[[str(a) for a in argv] for argv, _ in cases]!r}:\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 2, (argv, e.code)\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    lines = res.stderr.strip().splitlines()
    assert len(lines) == len(cases)
    for line, (_, message) in zip(lines, cases, strict=True):
        assert line.startswith("error: ") and message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent", "file"]
    assert sorted(p.name for p in fake.iterdir()) == ["agent.json", "model.zip"]


def test_bad_values_are_refused_by_every_numeric_option(poster_agent, run_cli, tmp_path):
    """Property-style: negative, zero, NaN, infinite and huge values at every numeric option."""
    generated = {
        "--episodes": ["0", "-1", "-1000000"],
        "--epsilon": ["-1e-9", "1.0000001", "nan", "inf", "-inf", "1e308"],
        "--seed": ["-1", "-99999999"],
        "--n-envs": ["0", "-4"],
        "--max-episode-steps": ["0", "-7"],
    }
    cases = 0
    for base, verb in ((_EVAL, "eval"), (_SPLICE, "splice"), (_RECORD, "record")):
        for opt, values in generated.items():
            if opt == "--episodes" and verb == "record":
                opt = "--steps"
            for v in values:
                argv = [a.format(tmp=tmp_path, agent=poster_agent) for a in base]
                if opt in argv:
                    argv = argv[: argv.index(opt)] + argv[argv.index(opt) + 2 :]
                code, out, err = run_cli(*argv, opt, v)
                assert code == 2 and out == "", (verb, opt, v)
                assert err.startswith(f"error: dqn {verb}: "), (verb, opt, v, err)
                assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
                cases += 1
    assert cases == 3 * 15
    assert list(tmp_path.iterdir()) == []
    assert not (poster_agent / "eval.json").exists()


def test_replay_and_effects_refuse_states_the_recording_lacks(
    poster_agent, poster_recording, run_cli, tmp_path
):
    acts = ["--acts", poster_recording]
    sae = ["--agent", poster_agent, "--sae", tmp_path / "sae", "--feature", "0"]
    png = ["--out", tmp_path / "s.png"]
    cases = [
        (["dqn", "replay", *acts, *png, "--episode", "999"], "episode 999 not in the recording"),
        (["dqn", "replay", *acts, *png, "--step", "-1"], "dqn replay: step: must be at least 0"),
        (["dqn", "replay", *acts, *png, "--episode", "-2"], "dqn replay: episode: must be at least 0"),
        (["dqn", "replay", *acts, *png, "--step", "71"], "episode 0 has steps 0..70; cannot replay step 71"),
        (["dqn", "effects", *sae, *acts, "--step", "500"], "cannot replay step 500"),
    ]  # fmt: skip
    for argv, message in cases:
        code, out, err = run_cli(*argv)
        assert code == 2 and out == "" and message in err, (argv, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_values_are_refused_by_every_train_option_and_set_key(run_cli, tmp_path):
    """Property-style for ``dqn train``: every numeric option and every numeric --set key gets
    negative, zero, non-finite, huge, fractional and wrongly typed values."""
    import dataclasses

    base = ["dqn", "train", "--arch", "nature", "--steps", "5", "--out", tmp_path / "o"]
    options = {"--steps": ["0", "-1"], "--seed": ["-1"], "--checkpoint-every": ["0", "-5"],
               "--n-envs": ["0", "-2"], "--buffer-size": ["0", "-1"],
               "--learning-starts": ["-1"], "--batch-size": ["0", "-32"],
               "--train-freq": ["0", "-4"]}  # fmt: skip
    probability = {"gamma", "exploration_fraction", "exploration_initial_eps",
                   "exploration_final_eps", "repeat_action_probability"}  # fmt: skip
    at_least_0 = {"learning_starts", "noop_max"}
    fields = {f.name: f.type for c in (DQNConfig, EnvConfig) for f in dataclasses.fields(c)}
    sets = {}
    for name, tp in fields.items():
        if name == "mode" or "bool" in str(tp) or name == "reward_transform":
            continue
        bad = ["-1", "NaN", "Infinity", "-Infinity", '"abc"', "[1]", "{}"]
        if "float" in str(tp):
            bad += ["1e400"] + (["1.5", "1e300"] if name in probability or name == "tau" else [])
            bad += [] if name in probability else ["0"]
        else:
            bad += ["2.5", "true"] + ([] if name in at_least_0 else ["0"])
        sets[name] = bad
    assert len(sets) == 19  # every numeric DQN (13) and env (5) setting, and the game (a ROM name)
    cases = 0
    for opt, values in options.items():
        for v in values:
            argv = [*base[:5], v, *base[6:]] if opt == "--steps" else [*base, opt, v]
            code, out, err = run_cli(*argv)
            assert code == 2 and out == "" and err.startswith("error: dqn train: "), (opt, v, err)
            assert len(err.strip().splitlines()) == 1
            cases += 1
    for name, values in sets.items():
        for v in values:
            code, out, err = run_cli(*base, "--set", f"{name}={v}")
            assert code == 2 and out == "", (name, v)
            assert err.startswith(f"error: --set: {name}: "), (name, v, err)
            assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
            cases += 1
    assert cases > 150
    assert list(tmp_path.iterdir()) == []


def test_splice_and_effects_verbs_print_the_typed_results(nature_agent, run_cli, tmp_path):
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import direct_effect_grid
    from rlsae.agents.results import SpliceResult
    from rlsae.agents.splice import splice_metrics
    from rlsae.sae import SAE, SAEConfig

    sae = SAE(SAEConfig(d_in=512, d_sae=32, k=4, hook_name="fc1"), seed=3)
    sae_dir = sae.save(tmp_path / "sae")
    argv = ["--agent", nature_agent, "--sae", sae_dir]
    code, out, _ = run_cli("dqn", "splice", *argv, "--episodes", "1", "--max-episode-steps",
                           "20", "--json")  # fmt: skip
    assert code == 0 and len(out.strip().splitlines()) == 1
    res = SpliceResult.from_json(json.loads(out))
    assert res == splice_metrics(nature_agent, sae_dir, episodes=1, max_episode_steps=20)
    assert res.layer == "fc1" and res.states == 20 and res.sae == str(sae_dir)
    code, out, _ = run_cli("dqn", "effects", *argv, "--feature", "5", "--json")
    assert code == 0
    grid = direct_effect_grid(load_agent(nature_agent), sae, "fc1", 5)
    assert json.loads(out)["direct_effect_grid"] == grid.tolist()
