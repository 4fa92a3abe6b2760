"""Configs from dataclasses: docstrings, typed parsing with key paths, hashing and diffs."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from rlsae.configs import (
    check_range,
    config_hash,
    differing_keys,
    field_default,
    field_docs,
    from_mapping,
    load_mapping,
)
from rlsae.errors import RlsaeError


@dataclass
class Inner:
    lr: float = 1e-3
    """Learning rate of
    the optimiser."""
    k: int = 4
    """Active latents."""

    def validate(self, where: str = "config") -> None:
        check_range(where, "lr", self.lr, 0, lo_open=True)
        if self.k > 100:
            raise RlsaeError(f"{where}: k must be at most 100")


@dataclass
class Outer:
    name: str = "x"
    """Name."""
    sae: Inner = field(default_factory=Inner)
    seeds: list[int] = field(default_factory=lambda: [0])
    extra: dict[str, float] = field(default_factory=dict)
    limit: int | None = None


def test_field_docs_are_the_string_below_each_field_joined_on_one_line():
    assert field_docs(Inner) == {"lr": "Learning rate of the optimiser.", "k": "Active latents."}
    assert field_docs(Outer)["name"] == "Name."
    assert field_default(Outer, "seeds") == [0]


def test_from_mapping_builds_nested_configs_and_keeps_defaults():
    cfg = from_mapping(Outer, {"sae": {"lr": 1}, "seeds": [1, 2], "limit": 3.0}, "f.yaml")
    assert cfg == Outer(sae=Inner(lr=1.0, k=4), seeds=[1, 2], limit=3)
    assert isinstance(cfg.sae.lr, float) and isinstance(cfg.limit, int)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"sae": {"lr": "abc"}}, "f.yaml: sae.lr: expected a float, got 'abc'"),
        ({"sae": {"lr": True}}, "f.yaml: sae.lr: expected a float, got True"),
        ({"sae": {"lr": float("nan")}}, "f.yaml: sae.lr: expected a finite number"),
        ({"sae": {"kk": 1}}, "f.yaml: sae.kk: unknown key; known keys here: lr, k"),
        ({"sae": [1]}, "f.yaml: sae: expected a mapping, got a list"),
        ({"seeds": [1, "2"]}, "f.yaml: seeds[1]: expected an integer, got '2'"),
        ({"limit": 2.5}, "f.yaml: limit: expected an integer, got 2.5"),
        ({"sae": {"lr": -1}}, "f.yaml: sae.lr: must be above 0, got -1.0"),
        ({"sae": {"k": 101}}, "f.yaml: sae.k must be at most 100"),
        ([1, 2], "f.yaml: expected a mapping, got a list"),
    ],
)
def test_bad_values_are_one_line_naming_file_and_key_path(data, message):
    with pytest.raises(RlsaeError) as e:
        from_mapping(Outer, data, "f.yaml")
    assert str(e.value) == message or str(e.value).startswith(message)


def test_hash_and_differing_keys():
    a, b = Outer(), Outer(sae=Inner(k=8), seeds=[0, 1])
    assert config_hash(a) == config_hash(Outer()) != config_hash(b)
    assert differing_keys(a, b) == ["sae.k", "seeds"]
    assert differing_keys(a, Outer()) == []


def test_load_mapping_reads_yaml_and_toml_and_refuses_bad_syntax(tmp_path):
    (tmp_path / "a.yaml").write_text("sae:\n  lr: 0.5\n")
    (tmp_path / "a.toml").write_text("[sae]\nlr = 0.5\n")
    assert (
        load_mapping(tmp_path / "a.yaml")
        == load_mapping(tmp_path / "a.toml")
        == {"sae": {"lr": 0.5}}
    )
    (tmp_path / "b.toml").write_text("[sae\n")
    with pytest.raises(RlsaeError, match="b.toml is not valid TOML"):
        load_mapping(tmp_path / "b.toml")
    with pytest.raises(RlsaeError, match="not found"):
        load_mapping(tmp_path / "none.yaml")
