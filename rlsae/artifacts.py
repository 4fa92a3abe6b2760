"""Typed artifacts: every result that crosses a seam is a dataclass written and read one way.

A stage writes its result with :meth:`Artifact.write`; every reader (the viewer, the reports,
the CLI) reads it back with :meth:`Artifact.read`, so the keys are declared once, in the
dataclass. Each file carries ``format`` (what kind of result it is) and ``version`` (its
layout); a reader given a file of another kind or version says so in one line::

    @dataclass
    class FitResult(Artifact):
        FORMAT: ClassVar[str] = "rlsae.fit"
        VERSION: ClassVar[int] = 1
        n: int
        r2: float | None = None

    FitResult(n=8, r2=0.3).write(path)
    FitResult.read(path).r2

Fields may be JSON scalars, nested dataclasses, ``list``/``tuple``/``dict[str, ...]`` of those,
and ``X | None``. JSON is strict (:func:`rlsae.fsutil.dumps_json`): a non-finite float is
written as ``null``, so a float field that can be non-finite is typed ``float | None`` and its
docstring says what ``None`` means.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar, Self

from rlsae.configs import from_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_write_json, jsonable, read_json


class Artifact:
    """Base of the typed artifacts (subclasses are dataclasses with ``FORMAT`` and ``VERSION``)."""

    FORMAT: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this result, ``format`` and ``version`` first."""
        body = jsonable(_plain(self))
        return {"format": self.FORMAT, "version": self.VERSION, **body}

    @classmethod
    def from_json(cls, data: Any, where: str = "") -> Self:
        """Rebuild the result; a file of another format or version is one-line RlsaeError."""
        where = where or cls.FORMAT
        if not isinstance(data, dict):
            raise RlsaeError(f"{where}: expected a JSON object ({cls.FORMAT}), got {_kind(data)}")
        fmt, ver = data.get("format"), data.get("version")
        if fmt != cls.FORMAT:
            raise RlsaeError(
                f"{where} is a {fmt!r} file, not {cls.FORMAT!r}"
                if fmt
                else f"{where} has no 'format' field; it is not a {cls.FORMAT!r} file"
            )
        if ver != cls.VERSION:
            raise RlsaeError(
                f"{where} is {cls.FORMAT} version {ver!r}; this rlsae reads version "
                f"{cls.VERSION} (re-run the stage that wrote it)"
            )
        body = {k: v for k, v in data.items() if k not in ("format", "version")}
        return from_mapping(cls, body, where)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the result atomically as strict JSON; returns the path."""
        atomic_write_json(path, self.to_json())
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Self:
        """Read a result written by :meth:`write` (missing, corrupt or foreign: one line)."""
        return cls.from_json(read_json(path), where=str(path))


def _plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null"}.get(
        type(v), type(v).__name__
    )
