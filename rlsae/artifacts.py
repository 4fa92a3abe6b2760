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
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self

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
        return typing.cast(Self, _build(cls, body, where))

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


def _build(tp: Any, value: Any, where: str) -> Any:
    """``value`` (parsed JSON) as type ``tp``; a mismatch is one RlsaeError naming the key."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, where)
            except RlsaeError as e:
                errors.append(str(e))
        raise RlsaeError(errors[0] if errors else f"{where}: unexpected null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise RlsaeError(f"{where}: expected an object, got {_kind(value)}")
        hints = typing.get_type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp) if f.init}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise RlsaeError(f"{where}: unknown key {unknown[0]!r}")
        kwargs = {}
        for name, f in known.items():
            if name in value:
                kwargs[name] = _build(hints[name], value[name], f"{where}: {name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RlsaeError(f"{where}: missing key {name!r}")
        return tp(**kwargs)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RlsaeError(f"{where}: expected a list, got {_kind(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_build(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise RlsaeError(f"{where}: expected an object, got {_kind(value)}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {k: _build(item, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise RlsaeError(f"{where}: expected a number, got {_kind(value)}")
    if tp in (int, str, bool):
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        raise RlsaeError(f"{where}: expected {tp.__name__}, got {_kind(value)}")
    return value
