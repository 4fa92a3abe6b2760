"""Configs as dataclasses: one source of truth for fields, defaults, help, parsing and hashing.

Every config in rlsae (SAE training, DQN, RLHF, recording, the studies) is a dataclass whose
fields carry a docstring right below them (the sparsify convention: the config *is* the
documentation). This module turns such a dataclass into everything else:

- :func:`field_docs` reads those docstrings (for ``--help`` texts and ``--print-config``);
- :func:`from_mapping` builds a config, nested dataclasses included, from parsed YAML/TOML/JSON
  or ``--set`` values, and reports the first problem as one line
  ``FILE: key.path: expected a float, got 'abc'`` (unknown keys list the known ones);
- :func:`load_mapping` reads a YAML (``.yaml``/``.yml``/``.json``) or TOML file;
- :func:`to_mapping`, :func:`config_hash` and :func:`differing_keys` serialise a config, hash
  it, and name the keys in which two configs differ (a resume with another config is refused
  with those names);
- :func:`check_range` is the one range check that ``validate()`` methods use.

A config class may define ``validate(self, where: str) -> None`` for cross-field rules; it is
called by :func:`from_mapping` after the fields are built.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import math
import os
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from rlsae.errors import RlsaeError
from rlsae.fsutil import jsonable

T = TypeVar("T")


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal right below each field (and base classes)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        body = _class_node(klass)
        if body is None:  # pragma: no cover - class defined without source
            continue
        stmts = body.body
        for a, b in zip(stmts, stmts[1:], strict=False):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = " ".join(inspect.cleandoc(b.value.value).split())
    return docs


def _class_node(klass: type) -> ast.ClassDef | None:
    """The class's syntax tree, from its module parsed once (``inspect.getsource`` parses the
    whole module again for every class: half of the CLI's start-up went there)."""
    try:
        filename = inspect.getsourcefile(klass)
    except TypeError:  # pragma: no cover - a built-in class
        return None
    if filename and os.path.isfile(filename):
        node = _module_classes(filename).get(klass.__qualname__)
        if node is not None:
            return node
    try:  # a class made in a function (tests) or from a module without its file
        src = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return None
    body = ast.parse(src).body[0]
    return body if isinstance(body, ast.ClassDef) else None


@cache
def _module_classes(filename: str) -> dict[str, ast.ClassDef]:
    """``{qualified name: ClassDef}`` for the classes at module level (and nested in them)."""
    with open(filename, "rb") as f:
        tree = ast.parse(f.read(), filename)
    out: dict[str, ast.ClassDef] = {}

    def walk(nodes: list[ast.stmt], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                out.setdefault(prefix + node.name, node)
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return out


def field_default(cls: type, name: str) -> Any:
    """The default value of field ``name`` of dataclass ``cls`` (factories are called)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise KeyError(f"{cls.__name__}.{name} has no default")
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def to_mapping(cfg: Any) -> dict[str, Any]:
    """The config as plain JSON types (nested dataclasses as mappings)."""
    return jsonable(dataclasses.asdict(cfg))


def config_hash(cfg: Any) -> str:
    """A short stable hash of the config's values."""
    blob = json.dumps(to_mapping(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def differing_keys(a: Any, b: Any) -> list[str]:
    """Dotted paths of the leaves in which two configs (or mappings) differ."""
    da = a if isinstance(a, dict) else to_mapping(a)
    db = b if isinstance(b, dict) else to_mapping(b)
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str):
                walk(x.get(k, _ABSENT), y.get(k, _ABSENT), f"{path}.{k}" if path else str(k))
        elif x != y:
            out.append(path or "(root)")

    walk(da, db, "")
    return out


_ABSENT = object()


def load_mapping(path: str | os.PathLike) -> Any:
    """Parse a YAML (``.yaml``, ``.yml``, ``.json``) or TOML (``.toml``) file; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise RlsaeError(f"config file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError, tomllib.TOMLDecodeError, UnicodeDecodeError
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = "TOML" if path.suffix == ".toml" else "YAML"
        raise RlsaeError(f"{path} is not valid {kind}: {first}") from None


def from_mapping(cls: type[T], data: Any, where: str = "config", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (missing keys keep their defaults), then validate.

    Values are checked against the field types (``int``, ``float``, ``str``, ``bool``, nested
    dataclasses, ``list[...]``, ``dict[str, ...]``, ``X | None``, ``Literal[...]``); an int is
    accepted for a float, a string is never accepted for a number. The first problem raises
    :class:`RlsaeError` ``"{where}: {key.path}: {what is wrong}"``.
    """
    cfg = _build(cls, {} if data is None else data, where, prefix)
    return typing.cast(T, cfg)


def describe(value: Any) -> str:
    """How a wrong value is shown in an error: ``'abc'``, ``a list``, ``null``."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37] + "...")
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return repr(value)


def _err(where: str, path: str, what: str) -> RlsaeError:
    return RlsaeError(f"{where}: {path}: {what}" if path else f"{where}: {what}")


def _build(tp: Any, value: Any, where: str, path: str) -> Any:
    """``value`` as type ``tp``: dispatch on the kind of type (each kind is a function below)."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        return _build_union(tp, value, where, path)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise _err(
            where, path, f"expected one of {', '.join(map(str, allowed))}, got {describe(value)}"
        )
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _build_dataclass(tp, value, where, path)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise _err(where, path, f"expected a list, got {describe(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        items = [_build(item, v, where, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise _err(where, path, f"expected a mapping, got {describe(value)}")
        args = typing.get_args(tp)
        item = args[1] if len(args) == 2 else Any
        return {str(k): _build(item, v, where, f"{path}.{k}") for k, v in value.items()}
    if tp in (float, int, bool, str):
        return _build_scalar(tp, value, where, path)
    return value


def _build_union(tp: Any, value: Any, where: str, path: str) -> Any:
    """``X | Y | None``: null where allowed, else the first member type that accepts it."""
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise _err(where, path, "must not be null")
    first: RlsaeError | None = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _build(arg, value, where, path)
        except RlsaeError as e:
            first = first or e
    assert first is not None
    raise first


def _build_dataclass(tp: type, value: Any, where: str, path: str) -> Any:
    """A nested config: known keys only, required ones present, then its ``validate``."""
    if not isinstance(value, dict):
        raise _err(where, path, f"expected a mapping, got {describe(value)}")
    hints = typing.get_type_hints(tp)
    known = {f.name: f for f in dataclasses.fields(tp) if f.init}
    kwargs: dict[str, Any] = {}
    for key, v in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in known:
            names = ", ".join(known)
            raise _err(where, sub, f"unknown key; known keys here: {names}")
        kwargs[key] = _build(hints[key], v, where, sub)
    missing = [
        n
        for n, f in known.items()
        if n not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        sub = f"{path}.{missing[0]}" if path else missing[0]
        raise _err(where, sub, "missing (required)")
    obj = tp(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate(where)
        except RlsaeError as e:  # name the nested section: "FILE: lr" -> "FILE: sae.lr"
            msg = str(e)
            if path and msg.startswith(f"{where}: "):
                msg = f"{where}: {path}.{msg[len(where) + 2 :]}"
            raise RlsaeError(msg) from None
    return obj


def _build_scalar(tp: type, value: Any, where: str, path: str) -> Any:
    """A float (finite; an int is accepted), an int (a whole float is accepted), bool or str."""
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise _err(where, path, f"expected a finite number, got {value!r}")
            return float(value)
        raise _err(where, path, f"expected a float, got {describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _err(where, path, f"expected an integer, got {describe(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _err(where, path, f"expected true or false, got {describe(value)}")
    if isinstance(value, str):
        return value
    raise _err(where, path, f"expected a string, got {describe(value)}")


INT64_MAX = 2**63 - 1
"""The largest integer setting anything accepts (torch and numpy count in 64 bits)."""


def check_range(
    where: str,
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
) -> None:
    """Refuse ``value`` outside ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``) or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _err(where, name, f"expected a finite number, got {describe(value)}")
    if isinstance(value, int) and hi is None and abs(value) > INT64_MAX:
        hi = INT64_MAX  # no setting is beyond 64 bits; torch and numpy would overflow later
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and value > hi
    if below or above:
        if hi is None:
            rng = f"{'above' if lo_open else 'at least'} {lo:g}"
        elif lo is None:
            rng = f"at most {hi:g}"
        else:
            rng = f"{'above' if lo_open else 'between'} {lo:g}{' and at most' if lo_open else ' and'} {hi:g}"
        raise _err(where, name, f"must be {rng}, got {value!r}")
