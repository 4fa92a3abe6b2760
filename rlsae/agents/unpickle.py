"""Read a whole pickled ``nn.Module`` (``torch.save(q)``) without running any code from the file.

A file written by ``torch.save(module)`` is a pickle that names the module's class and the
classes of its submodules; an ordinary ``torch.load`` imports and runs whatever the pickle names
(a ``__reduce__`` to ``os.system`` included). :func:`load_module_pickle` unpickles through a
restricted unpickler instead. It materialises only

- tensors and their storages (``torch._utils._rebuild_tensor_v2`` / ``_rebuild_parameter``; CUDA
  storages are mapped to the CPU),
- ``collections.OrderedDict`` and ``set`` (a module's hook and parameter tables),
- the plain state of ``torch.nn`` ``Conv2d``, ``MaxPool2d``, ``Linear``, ``ReLU``, ``Flatten``
  and ``Sequential`` modules, and of **one** unknown module class (the training script's own,
  e.g. ``__main__.AtariQnet``),

and refuses every other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, a second
unknown class, ...) in one line at the moment the pickle names it, before it can be called. The
modules are never built: each becomes a :class:`PickledModule` (its class name and its pickled
``__dict__``), so no module code runs either (not even ``__setstate__``).
"""

from __future__ import annotations

import collections
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError

_TORCH_NN = {
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.pooling", "MaxPool2d"),
    ("torch.nn.modules.linear", "Linear"),
    ("torch.nn.modules.activation", "ReLU"),
    ("torch.nn.modules.flatten", "Flatten"),
    ("torch.nn.modules.container", "Sequential"),
}
# module paths the one unknown class may never come from (the places code runs from)
_NEVER = re.compile(
    r"(builtins|__builtin__|os|posix|nt|sys|subprocess|shutil|socket|importlib|pickle|"
    r"_pickle|copyreg|codecs|io|runpy|ctypes|functools|operator|types|code|pty|signal|"
    r"multiprocessing|threading|torch|numpy|collections|typing|inspect|webbrowser|pathlib)(\..*)?"
)
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*")


@dataclass
class PickledModule:
    """A module as the pickle describes it: ``module.name`` of its class and its ``__dict__``."""

    cls: str
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def parameters(self) -> dict[str, Any]:
        """Its own parameters (``_parameters``; a None entry is an absent bias)."""
        return dict(self.state.get("_parameters") or {})

    @property
    def children(self) -> dict[str, PickledModule]:
        """Its direct submodules (``_modules``), in definition order."""
        mods = self.state.get("_modules") or {}
        return {k: v for k, v in mods.items() if isinstance(v, PickledModule)}


def _stub_class(qualname: str) -> type:
    """A stand-in class: ``cls.__new__`` (pickle's NEWOBJ) gives an empty stub whose state the
    pickle's BUILD fills in; calling it (a REDUCE to the class) is refused."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RlsaeError(f"the pickle calls {qualname} with arguments; refusing to load it")

    return type("Stub", (), {"__init__": __init__, "_rlsae_cls": qualname})


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` answers only the globals listed above."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unknown: str | None = None
        self._stubs: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        import torch._utils

        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_parameter"):
            return getattr(torch._utils, name)
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) in (("builtins", "set"), ("__builtin__", "set")):
            return set
        qualname = f"{module}.{name}"
        if (module, name) in _TORCH_NN:
            return self._stub(qualname)
        if _NEVER.fullmatch(module) or not _CLASS_NAME.fullmatch(name):
            raise RlsaeError(
                f"refusing to load: the pickle names {qualname}, which is not a tensor, a plain "
                "torch.nn layer or the network's own class"
            )
        if self.unknown is not None and self.unknown != qualname:
            raise RlsaeError(
                f"refusing to load: the pickle names a second unknown class {qualname} "
                f"(besides {self.unknown})"
            )
        self.unknown = qualname
        return self._stub(qualname)

    def _stub(self, qualname: str) -> type:
        if qualname not in self._stubs:
            self._stubs[qualname] = _stub_class(qualname)
        return self._stubs[qualname]


class _PickleModule:
    """What ``torch.load(pickle_module=...)`` needs: an ``Unpickler`` and ``load``."""

    Unpickler = _RestrictedUnpickler

    @staticmethod
    def load(f: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(f, **kwargs).load()


def _convert(obj: Any) -> Any:
    """Stubs (and stubs nested in dicts) -> :class:`PickledModule`."""
    cls = getattr(type(obj), "_rlsae_cls", None)
    if cls is not None:
        return PickledModule(cls, {k: _convert(v) for k, v in vars(obj).items()})
    if isinstance(obj, dict):
        return obj.__class__((k, _convert(v)) for k, v in obj.items())
    return obj


def load_module_pickle(path: str | os.PathLike) -> PickledModule:
    """The module a ``torch.save(module)`` file holds, read without running code from it.

    Every refusal and every unreadable file (truncated, not a torch file, no module inside) is
    one :class:`RlsaeError` line.
    """
    import zipfile

    import torch

    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise RlsaeError(
            f"{path} is not a torch.save zip file (truncated, or saved by torch < 1.6); "
            "cannot read it"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PickleModule)
    except RlsaeError as e:
        raise RlsaeError(f"{path}: {e}") from None
    except Exception as e:  # a damaged archive or pickle, of every kind
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RlsaeError(f"{path}: cannot read it ({type(e).__name__}: {first[:120]})") from None
    result = _convert(obj)
    if not isinstance(result, PickledModule):
        raise RlsaeError(
            f"{path} holds a {type(obj).__name__}, not a pickled module; "
            "a state dict is imported from a .pt saved with weights only"
        )
    return result


__all__ = ["PickledModule", "load_module_pickle"]
