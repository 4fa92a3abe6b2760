"""The typed-artifact base: round trips, strict JSON, and one-line refusals of foreign files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from rlsae.artifacts import Artifact
from rlsae.errors import RlsaeError


@dataclass
class Row:
    feature: int
    cosine: float | None = None


@dataclass
class Table(Artifact):
    FORMAT: ClassVar[str] = "rlsae.test-table"
    VERSION: ClassVar[int] = 2
    name: str
    rows: list[Row] = field(default_factory=list)
    by_layer: dict[str, list[int]] = field(default_factory=dict)
    ratio: float | None = None


@dataclass
class Other(Artifact):
    FORMAT: ClassVar[str] = "rlsae.test-other"
    n: int = 0


def test_round_trip_through_a_file_rebuilds_nested_dataclasses(tmp_path):
    t = Table("a", [Row(3, 0.5), Row(7)], {"2": [1, 2]}, ratio=2)
    path = t.write(tmp_path / "t.json")
    raw = json.loads(path.read_text())
    assert list(raw)[:2] == ["format", "version"]
    assert raw["format"] == "rlsae.test-table" and raw["version"] == 2
    back = Table.read(path)
    assert back == Table("a", [Row(3, 0.5), Row(7, None)], {"2": [1, 2]}, ratio=2.0)
    assert isinstance(back.rows[0], Row) and isinstance(back.ratio, float)


def test_non_finite_floats_are_written_as_null_and_the_file_is_standard_json(tmp_path):
    path = Table("x", [Row(1, math.inf)], ratio=math.nan).write(tmp_path / "t.json")
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard constant {c}"))
    back = Table.read(path)
    assert back.rows[0].cosine is None and back.ratio is None


@pytest.mark.parametrize(
    "data, message",
    [
        ({"format": "rlsae.test-other", "version": 1, "n": 1}, "is a 'rlsae.test-other' file"),
        ({"version": 2, "name": "a"}, "has no 'format' field"),
        (
            {"format": "rlsae.test-table", "version": 1, "name": "a"},
            "version 1; this rlsae reads version 2",
        ),
        ({"format": "rlsae.test-table", "version": 2}, "name: missing (required)"),
        (
            {"format": "rlsae.test-table", "version": 2, "name": "a", "extra": 1},
            "extra: unknown key",
        ),
        (
            {"format": "rlsae.test-table", "version": 2, "name": "a", "rows": [{"feature": "x"}]},
            "rows[0].feature: expected an integer",
        ),
        (
            {"format": "rlsae.test-table", "version": 2, "name": "a", "ratio": "big"},
            "ratio: expected a float",
        ),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_foreign_or_malformed_files_are_refused_in_one_line(tmp_path, data, message):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(RlsaeError) as e:
        Table.read(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_missing_and_corrupt_files_are_one_line(tmp_path):
    with pytest.raises(RlsaeError, match="not found"):
        Other.read(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(RlsaeError, match="not valid JSON"):
        Other.read(tmp_path / "bad.json")
