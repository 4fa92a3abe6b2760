"""Atomic writes: no half-written artifact is ever left at the final path."""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it is renamed to ``final``.

    On any exception the temporary directory is removed and ``final`` is untouched.
    With ``overwrite`` an existing ``final`` is replaced only after the new one is complete.
    Before the rename every file and directory inside gets the mode an ordinary ``open()`` /
    ``mkdir()`` would give under the user's umask: the one permission rule of every artifact,
    whatever wrote the files (safetensors and ``mkstemp`` create 0600, ``mkdtemp`` 0700).
    """
    final = Path(final)
    if final.exists() and not overwrite:
        raise RlsaeError(f"{final} already exists; choose another --out or remove it")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{glob.escape(final.name)}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # what a killed earlier write of it left
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    apply_umask(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes of the user's umask (0o666 / 0o777 less
    it); links are left alone."""
    mask = _umask()
    for dirpath, _dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o777 & ~mask)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; give the file the mode an ordinary open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (see :func:`dumps_json`), atomically."""
    atomic_write_bytes(path, (dumps_json(obj, indent=2) + "\n").encode())


def dumps_json(obj: Any, indent: int | None = None, ascii_only: bool = False) -> str:
    """Standard JSON text of ``obj``: the one JSON writer of rlsae (files and ``--json``).

    Non-finite floats (NaN, ±inf) are written as ``null`` (the JSON standard has no such
    numbers; a field that can be non-finite documents what its ``null`` means), numpy scalars
    and arrays as numbers and lists, paths as strings. Anything else raises ``TypeError``.
    """
    separators = (",", ":") if indent is None and ascii_only else None
    return json.dumps(
        jsonable(obj),
        indent=indent,
        allow_nan=False,
        ensure_ascii=ascii_only,
        separators=separators,
    )


def jsonable(obj: Any) -> Any:
    """A copy of ``obj`` made of JSON types only: the one JSON sanitiser (see :func:`dumps_json`).

    Mappings (keys become strings), lists and tuples are copied recursively; non-finite floats
    become ``None``; numpy scalars and arrays and 1-element torch tensors become numbers and
    lists; paths become strings. Anything else raises ``TypeError``.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, bool | int | str) or obj is None:
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return jsonable(json_default(obj))


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, turning a missing or corrupt file into an RlsaeError."""
    path = Path(path)
    if not path.is_file():
        raise RlsaeError(f"{path} not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RlsaeError(f"{path} is not valid JSON ({e})") from None


def json_default(o: Any) -> Any:
    """JSON for numpy scalars and arrays, torch tensors and paths; TypeError for anything else."""
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist") and type(o).__module__.split(".")[0] in ("numpy", "torch"):
        return o.tolist()  # numpy scalar or array, torch tensor (a 0-d one gives a number)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
