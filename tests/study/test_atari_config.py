"""The study config: presets, file formats, validation errors, the run directory's ownership."""

from __future__ import annotations

import json

import pytest
import yaml

from rlsae.study.presets import PRESETS, preset_config, preset_dict
from rlsae.study.atari import (
    StudyConfig,
    load_study_config,
    population,
    prepare_run_dir,
    resolve_config,
    training_runs,
)
from rlsae.cli import main
from rlsae.errors import RlsaeError


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_validate(name: str) -> None:
    cfg = preset_config(name)
    assert cfg.name == name
    assert cfg.recording.layer == "fc1" and cfg.population.arch == "poster"


def test_paper_preset_is_the_posters_scale() -> None:
    cfg = preset_config("paper")
    assert len(training_runs(cfg)) >= 24
    assert cfg.population.checkpoint_every is None  # one agent per run
    assert (cfg.sae.arch, cfg.sae.d_sae, cfg.sae.k) == ("topk", 2048, 50)
    assert cfg.recording.steps >= 1_500_000 and cfg.recording.epsilon == 0.2


def test_demo_preset_has_six_or_more_agents() -> None:
    p = preset_config("demo").population
    assert p.train_steps // p.checkpoint_every * len(p.seeds) >= 6


def test_yaml_and_toml_round_trip(tmp_path) -> None:
    d = preset_dict("demo")
    y = tmp_path / "s.yaml"
    y.write_text(yaml.safe_dump(d))
    assert load_study_config(y) == preset_config("demo")
    t = tmp_path / "s.toml"
    t.write_text(
        'name = "t"\n[population]\narch = "nature"\ntrain_steps = 1000\nseeds = [0, 1]\n'
        '[population.grid]\nlearning_rate = [0.001, 0.0001]\n[recording]\nlayer = "conv3"\n'
        "steps = 100\n[sae]\nd_sae = 64\nk = 4\n"
    )
    cfg = load_study_config(t)
    assert cfg.population.arch == "nature" and cfg.recording.layer == "conv3"
    runs = training_runs(cfg)
    assert [r.name for r in runs] == [
        "seed0-learning_rate=0.001",
        "seed1-learning_rate=0.001",
        "seed0-learning_rate=0.0001",
        "seed1-learning_rate=0.0001",
    ]
    assert runs[2].overrides == {"learning_rate": 0.0001}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"population": {"arch": "resnet"}}, "unknown architecture 'resnet'"),
        ({"recording": {"layer": "fc9"}}, "unknown layer 'fc9' for a poster agent"),
        ({"recording": {"layre": "fc1"}}, "unknown key 'recording.layre'"),
        ({"colour": 1}, "unknown key 'colour'"),
        ({"sae": {"k": 5000}}, "sae.k must be between 1 and 128, got 5000"),
        ({"sae": {"arch": "jumprelu"}}, "unknown SAE architecture 'jumprelu'"),
        ({"recording": {"epsilon": 1.5}}, "recording.epsilon must be between 0 and 1"),
        ({"evaluation": {"episodes": "ten"}}, "evaluation.episodes must be a number"),
        ({"population": {"seeds": [0, 0]}}, "duplicates"),
        ({"name": "a b"}, "may hold only"),
    ],
)
def test_validation_errors(tmp_path, patch: dict, message: str) -> None:
    d = preset_dict("smoke")
    for k, v in patch.items():
        if isinstance(v, dict):
            d[k].update(v)
        else:
            d[k] = v
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(d))
    with pytest.raises(RlsaeError, match=message.replace("(", r"\(")) as e:
        load_study_config(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_nature_has_no_fc2(tmp_path) -> None:
    d = preset_dict("smoke")
    d["population"]["arch"] = "nature"
    d["recording"]["layer"] = "fc2"
    with pytest.raises(RlsaeError, match="valid layers: conv3 \\(3136\\), fc1 \\(512\\)"):
        StudyConfig.from_dict(d)


def test_unknown_preset_and_bad_files(tmp_path) -> None:
    with pytest.raises(RlsaeError, match="unknown preset 'huge'; use one of smoke, demo, paper"):
        resolve_config("huge")
    with pytest.raises(RlsaeError, match="not found"):
        resolve_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("population: [unclosed\n")
    with pytest.raises(RlsaeError, match="is not valid yaml"):
        load_study_config(bad)


def test_run_dir_of_another_study_is_refused_and_untouched(tmp_path) -> None:
    run = tmp_path / "run"
    a = preset_config("smoke")
    prepare_run_dir(run, a, "preset:smoke", resume=False)
    before = (run / "run.json").read_bytes()
    (run / "analysis").mkdir()
    (run / "analysis" / "agents.csv").write_text("agent\nx\n")
    b = preset_config("demo")
    with pytest.raises(RlsaeError, match="belongs to another study \\('smoke'"):
        prepare_run_dir(run, b, "preset:demo", resume=True)
    with pytest.raises(RlsaeError, match="pass --resume"):
        prepare_run_dir(run, a, "preset:smoke", resume=False)
    assert (run / "run.json").read_bytes() == before
    assert (run / "analysis" / "agents.csv").read_text() == "agent\nx\n"
    assert prepare_run_dir(run, a, "preset:smoke", resume=True)["config_hash"] == a.config_hash()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RlsaeError, match="not a study run directory"):
        prepare_run_dir(other, a, "x", resume=True)
    (other / "run.json").write_text(json.dumps({"kind": "llm-study"}))
    with pytest.raises(RlsaeError, match="holds a 'llm-study' run"):
        prepare_run_dir(other, a, "x", resume=True)


def test_population_reads_checkpoints(tmp_path) -> None:
    cfg = preset_config("smoke")  # one run, 200 steps, checkpoint every 50
    ck = tmp_path / "agents" / "seed0" / "checkpoints"
    for step in (50, 100, 150, 200, 250):
        (ck / f"step_{step}").mkdir(parents=True)
        (ck / f"step_{step}" / "model.zip").write_bytes(b"")
    (ck / "step_75").mkdir()  # no model.zip: an unfinished checkpoint is not an agent
    agents = population(cfg, tmp_path)
    assert [(a.name, a.step) for a in agents] == [
        ("seed0-step50", 50),
        ("seed0-step100", 100),
        ("seed0-step150", 150),
        ("seed0-step200", 200),
    ]
    assert agents[0].agent_dir == "agents/seed0/checkpoints/step_50"


def test_external_agents_join_the_population(tmp_path) -> None:
    ext = tmp_path / "my_agent"
    ext.mkdir()
    (ext / "model.zip").write_bytes(b"")
    d = preset_dict("smoke")
    d["population"].update({"train_steps": 0, "agents": [str(ext)]})
    agents = population(StudyConfig.from_dict(d), tmp_path / "run")
    assert [(a.name, a.agent_dir) for a in agents] == [("my_agent", str(ext))]
    d["population"]["agents"] = [str(tmp_path)]
    with pytest.raises(RlsaeError, match="not an agent directory"):
        population(StudyConfig.from_dict(d), tmp_path / "run")


def test_cli_one_line_errors(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["pipeline", "atari", "--preset", "huge", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: unknown preset") and err.count("\n") == 1
    assert not (tmp_path / "r").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"population": {"arch": "resnet"}}))
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", str(bad), "--engine", "local", "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "unknown architecture 'resnet'" in err
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", "smoke", "--engine", "slurm", "--out", str(tmp_path / "s")])
    assert e.value.code == 2 and "unknown engine 'slurm'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_cli_print_config_round_trips(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["pipeline", "atari", "--preset", "paper", "--print-config"])
    assert e.value.code == 0
    p = tmp_path / "paper.yaml"
    p.write_text(capsys.readouterr().out)
    assert load_study_config(p) == preset_config("paper")
