"""``dqn import``: agents trained elsewhere become ordinary agent directories.

Sources (the format is read from the file, not its name):

==========================  ===============================================================
format                      read with
==========================  ===============================================================
``torch-module-pickle``     :func:`rlsae.agents.unpickle.load_module_pickle` (a whole
                            ``torch.save(q)`` module, e.g. the poster's ``dqns/dqnN.pt``;
                            nothing in the file runs)
``torch-state-dict``        ``torch.load(weights_only=True)`` (a dict of tensors)
``safetensors``             ``safetensors.torch.load_file``
``sb3-zip``                 the ``policy.pth`` inside an SB3 ``model.zip``, weights only
                            (the zip's pickled ``data`` is not unpickled)
``sb3-qrdqn-zip``           the same for sb3-contrib's QR-DQN; the quantile head is averaged
                            over quantiles (:mod:`rlsae.agents.import_qrdqn`)
==========================  ===============================================================

Parameter names are the poster's (``conv1.weight`` ... ``fc3.bias``: its network takes raw
0-255 pixels) or rlsae's own, i.e. SB3's ``QNetwork`` names (``features_extractor.conv1.0.weight``
... ``q_net.0.bias``, with or without a ``q_net.``/``policy.q_net.`` prefix; inputs scaled to
[0, 1]). Poster-named weights get the input scale folded into ``conv1`` (weights x 255), so the
imported agent's Q-values equal the original's. Every check (unknown class, missing or extra
tensor, wrong shape, non-finite value, unreadable file) is one :class:`RlsaeError` line, made
before ``--out`` is created; the agent directory is published whole (``atomic_dir``).
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rlsae.agents.config import (
    ARCHS,
    DEFAULT_GAME,
    EnvConfig,
    check_choice,
    default_config,
    env_id_of,
)
from rlsae.agents.import_qrdqn import is_qrdqn, qrdqn_check, qrdqn_to_dqn
from rlsae.agents.networks import policy_kwargs
from rlsae.agents.results import AgentInfo, ImportSource
from rlsae.agents.unpickle import PickledModule, load_module_pickle
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir

# the poster's parameter shapes (its AtariQnet); the rlsae name each one loads into
POSTER_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1.weight": (16, 3, 9, 9),
    "conv1.bias": (16,),
    "conv2.weight": (32, 16, 9, 9),
    "conv2.bias": (32,),
    "conv3.weight": (64, 32, 6, 6),
    "conv3.bias": (64,),
    "fc1.weight": (512, 960),
    "fc1.bias": (512,),
    "fc2.weight": (512, 512),
    "fc2.bias": (512,),
    "fc3.weight": (9, 512),
    "fc3.bias": (9,),
}
_POSTER_TO_RLSAE = {
    "conv1": "features_extractor.conv1.0",
    "conv2": "features_extractor.conv2.0",
    "conv3": "features_extractor.conv3.0",
    "fc1": "features_extractor.fc1.0",
    "fc2": "features_extractor.fc2.0",
    "fc3": "q_net.0",
}
NATURE_SHAPES: dict[str, tuple[int, ...]] = {
    "features_extractor.cnn.0.weight": (32, 4, 8, 8),
    "features_extractor.cnn.0.bias": (32,),
    "features_extractor.cnn.2.weight": (64, 32, 4, 4),
    "features_extractor.cnn.2.bias": (64,),
    "features_extractor.cnn.4.weight": (64, 64, 3, 3),
    "features_extractor.cnn.4.bias": (64,),
    "features_extractor.linear.0.weight": (512, 3136),
    "features_extractor.linear.0.bias": (512,),
    "q_net.0.weight": (9, 512),
    "q_net.0.bias": (9,),
}
# the poster's submodules: class and the geometry its forward relies on
_POSTER_MODULES: dict[str, tuple[str, dict[str, Any]]] = {
    "conv1": ("Conv2d", {"kernel_size": (9, 9), "stride": (2, 2), "padding": (0, 0)}),
    "pool1": ("MaxPool2d", {"kernel_size": 2, "stride": 2, "padding": 0}),
    "conv2": ("Conv2d", {"kernel_size": (9, 9), "stride": (3, 3), "padding": (0, 0)}),
    "conv3": ("Conv2d", {"kernel_size": (6, 6), "stride": (2, 2), "padding": (0, 0)}),
    "fc1": ("Linear", {"in_features": 960, "out_features": 512}),
    "fc2": ("Linear", {"in_features": 512, "out_features": 512}),
    "fc3": ("Linear", {"in_features": 512}),  # out_features: the game's actions
}
FOLD = "conv1 weights x 255: the original took raw 0-255 pixels, rlsae feeds pixels / 255"


def rlsae_shapes(arch: str, n_actions: int = 9) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes of rlsae's Q-network (SB3 ``QNetwork`` names), with a
    head of ``n_actions`` (Ms. Pac-Man: 9)."""
    if arch == "nature":
        return _with_actions(NATURE_SHAPES, "q_net.0", n_actions)
    return {_rename(k): v for k, v in poster_shapes(n_actions).items()}


def poster_shapes(n_actions: int = 9) -> dict[str, tuple[int, ...]]:
    """The poster's parameter names and shapes, with a head of ``n_actions``."""
    return _with_actions(POSTER_SHAPES, "fc3", n_actions)


def _with_actions(
    shapes: dict[str, tuple[int, ...]], head: str, n: int
) -> dict[str, tuple[int, ...]]:
    out = dict(shapes)
    out[f"{head}.weight"], out[f"{head}.bias"] = (n, 512), (n,)
    return out


def _head_actions(tensors: dict[str, torch.Tensor]) -> int:
    """The action count of the file's Q head (its rows; 9 when it has no head to read)."""
    for key in ("fc3.weight", "q_net.0.weight"):
        t = tensors.get(key)
        if isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[0] >= 1:
            return int(t.shape[0])
    return 9


def _rename(poster_key: str) -> str:
    mod, kind = poster_key.rsplit(".", 1)
    return f"{_POSTER_TO_RLSAE[mod]}.{kind}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Reading a file into (format, named tensors)
# --------------------------------------------------------------------------------------------
def read_tensors(path: Path) -> tuple[str, dict[str, torch.Tensor], str | None]:
    """(format, name -> tensor, pickled module class or None) of a file to import."""
    if not path.is_file():
        raise RlsaeError(f"{path} not found")
    with open(path, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        names = _zip_names(path)
        if "policy.pth" in names and "data" in names:
            return "sb3-zip", _sb3_policy(path), None
        return _torch_file(path)
    if len(head) == 8 and not head.startswith(b"PK"):
        n = int.from_bytes(head, "little")
        if 0 < n < 100_000_000 and path.stat().st_size >= 8 + n:
            return "safetensors", _safetensors(path), None
    raise RlsaeError(
        f"{path} is not a torch file, an SB3 zip or a safetensors file (or it is truncated)"
    )


def _zip_names(path: Path) -> set[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return set(z.namelist())
    except (zipfile.BadZipFile, OSError) as e:
        raise RlsaeError(f"{path}: cannot read the zip archive ({e})") from None


def _torch_file(path: Path) -> tuple[str, dict[str, torch.Tensor], str | None]:
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # names a class: a whole pickled module (or worse)
        module = load_module_pickle(path)
        return "torch-module-pickle", _module_tensors(path, module), module.cls
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:120]
        raise RlsaeError(f"{path}: cannot read it ({type(e).__name__}: {first})") from None
    return "torch-state-dict", _tensor_dict(path, obj), None


def _tensor_dict(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RlsaeError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return {str(k): v for k, v in obj.items()}


def _safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(path), device="cpu"))
    except Exception as e:  # SafetensorError and friends
        raise RlsaeError(f"{path}: not a readable safetensors file ({e})") from None


def _sb3_policy(path: Path) -> dict[str, torch.Tensor]:
    import io

    with zipfile.ZipFile(path) as z:
        try:
            raw = z.read("policy.pth")
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise RlsaeError(f"{path}: cannot read policy.pth ({e})") from None
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:
        raise RlsaeError(f"{path}: policy.pth is not a weights-only state dict ({e})") from None
    return _tensor_dict(path, obj)


def _module_tensors(path: Path, module: PickledModule) -> dict[str, torch.Tensor]:
    """The poster-named tensors of a pickled AtariQnet, after checking its submodules."""
    children = module.children
    extra = [n for n in children if n not in _POSTER_MODULES]
    if extra:
        raise RlsaeError(
            f"{path}: {module.cls} has submodules the poster network does not "
            f"({', '.join(extra)}); expected {', '.join(_POSTER_MODULES)}"
        )
    out: dict[str, torch.Tensor] = {}
    for name, (kind, geometry) in _POSTER_MODULES.items():
        child = children.get(name)
        if child is None:
            continue  # its tensors are reported missing below
        if child.cls.rsplit(".", 1)[-1] != kind:
            raise RlsaeError(f"{path}: {name} is a {child.cls}, expected a torch.nn {kind}")
        for attr, want in geometry.items():
            got = child.state.get(attr)
            if attr in child.state and _norm(got) != _norm(want):
                raise RlsaeError(f"{path}: {name}.{attr} is {got}, the poster network has {want}")
        for pname, p in child.parameters.items():
            if p is not None:
                out[f"{name}.{pname}"] = p
    return out


def _norm(v: Any) -> Any:
    return tuple(v) if isinstance(v, list | tuple) else v


# --------------------------------------------------------------------------------------------
# Naming, checking and converting
# --------------------------------------------------------------------------------------------
def to_rlsae(
    where: str, arch: str, tensors: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """(rlsae-named tensors, whose names the file used, conversions applied); one line on a
    missing, extra, wrongly shaped or non-finite tensor."""
    check_choice(where, "arch", arch, ARCHS)
    tensors = _strip_prefix(tensors)
    n_actions = _head_actions(tensors)
    if arch == "poster" and any(k in POSTER_SHAPES for k in tensors):
        _check(where, tensors, poster_shapes(n_actions), "poster")
        out = {_rename(k): v.detach().float().clone() for k, v in tensors.items()}
        out["features_extractor.conv1.0.weight"] *= 255.0
        return out, "poster", [FOLD]
    _check(where, tensors, rlsae_shapes(arch, n_actions), f"rlsae {arch}")
    return {k: v.detach().float().clone() for k, v in tensors.items()}, "rlsae", []


def _strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """SB3 policy / rlsae names: keep the online network (``q_net.``), drop the target."""
    for prefix in ("policy.q_net.", "q_net."):
        if any(k.startswith(prefix + "features_extractor.") for k in tensors):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    return tensors


def _check(
    where: str, tensors: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], names: str
) -> None:
    missing = [k for k in shapes if k not in tensors]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise RlsaeError(
            f"{where}: missing tensors {', '.join(missing[:3])}{more} (expected the {names} "
            "network's parameters)"
        )
    extra = [k for k in tensors if k not in shapes]
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        raise RlsaeError(
            f"{where}: unexpected tensors {', '.join(extra[:3])}{more} for the {names} network"
        )
    for k, shape in shapes.items():
        got = tuple(tensors[k].shape)
        if got != shape:
            raise RlsaeError(
                f"{where}: {k} has shape {list(got)}, the {names} network needs {list(shape)}"
            )
        t = tensors[k]
        if not t.is_floating_point():
            raise RlsaeError(f"{where}: {k} holds {t.dtype} values, expected floating point")
        if not bool(torch.isfinite(t).all()):
            raise RlsaeError(f"{where}: {k} holds non-finite values (NaN or inf)")


# --------------------------------------------------------------------------------------------
# Reference forward passes (the original networks, for the import check)
# --------------------------------------------------------------------------------------------
def poster_forward(t: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(Q, fc1) of the poster's AtariQnet from poster-named tensors on raw 0-255 float input."""
    h = F.relu(F.conv2d(x, t["conv1.weight"], t["conv1.bias"], stride=2))
    h = F.max_pool2d(h, 2)
    h = F.relu(F.conv2d(h, t["conv2.weight"], t["conv2.bias"], stride=3))
    h = F.relu(F.conv2d(h, t["conv3.weight"], t["conv3.bias"], stride=2))
    fc1 = F.relu(F.linear(h.flatten(1), t["fc1.weight"], t["fc1.bias"]))
    fc2 = F.relu(F.linear(fc1, t["fc2.weight"], t["fc2.bias"]))
    return F.linear(fc2, t["fc3.weight"], t["fc3.bias"]), fc1


# --------------------------------------------------------------------------------------------
# The game and the environment the agent was trained in
# --------------------------------------------------------------------------------------------
_V5 = re.compile(r"ALE/([A-Za-z]+)-v5")
_V4 = re.compile(r"([A-Za-z]+)NoFrameskip-v4")
# rl-zoo3's AtariWrapper defaults: what an SB3 zip's agent saw (the zip does not store them)
ZOO_WRAPPER = (
    "rl-zoo3 AtariWrapper defaults (the zip does not store them): noop_max 30, frame_skip 4 "
    "with a max over the last two frames, 84x84 grayscale, 4 stacked frames, "
    "terminal_on_life_loss and clip_reward during training"
)


def game_actions(game: str) -> int:
    """Size of ``game``'s minimal action set (ROMs ship with ale-py); one line if unknown."""
    import warnings

    import ale_py
    from ale_py import roms

    try:
        with warnings.catch_warnings():  # ale-py warns, then returns None, for an unknown name
            warnings.simplefilter("ignore")
            rom = roms.get_rom_path(game)
    except Exception:  # older ale-py versions raise instead
        rom = None
    if rom is None:
        known = ", ".join(sorted(roms.get_all_rom_ids())[:8])
        raise RlsaeError(f"unknown game {game!r}; ale-py's ROMs are named like {known}, ...")
    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(str(rom))
    return len(ale.getMinimalActionSet())


def check_game(where: str, game: str, n_actions: int) -> None:
    """Refuse a game whose action set does not fit the network's head."""
    have = game_actions(game)
    if have != n_actions:
        raise RlsaeError(
            f"{where}: the network has {n_actions} actions, but {game} has {have}; "
            "pass the --game it was trained on"
        )


def _v4_id(game: str) -> str:
    """rl-zoo3's id of ``game`` (``ms_pacman`` -> ``MsPacmanNoFrameskip-v4``)."""
    return env_id_of(game)[len("ALE/") : -len("-v5")] + "NoFrameskip-v4"


def env_from_id(where: str, env_id: str, arch: str, game: str) -> tuple[EnvConfig, list[str]]:
    """The :class:`EnvConfig` (and notes for ``agent.json``) of the gymnasium id it trained in."""
    v5, v4 = _V5.fullmatch(env_id), _V4.fullmatch(env_id)
    m = v5 or v4
    if m is None:
        raise RlsaeError(
            f"{where}: env id {env_id!r}: expected ALE/<Game>-v5 or <Game>NoFrameskip-v4"
        )
    if re.sub(r"(?<!^)([A-Z])", r"_\1", m.group(1)).lower() != game:
        raise RlsaeError(f"{where}: env id {env_id!r} is not a {game} environment")
    if v5:
        env = EnvConfig(mode=arch, game=game)
        notes = [f"{env_id}: sticky actions 0.25, episodes cut at 108,000 frames"]
    else:
        env = EnvConfig(
            mode=arch, game=game, repeat_action_probability=0.0, max_episode_frames=400_000
        )
        notes = [f"{env_id}: no sticky actions, full episodes (gymnasium's 400,000-frame limit)"]
    if arch == "nature":
        notes.append(ZOO_WRAPPER)
    return env, notes


def sb3_data(path: Path) -> dict[str, Any]:
    """The plain JSON values of an SB3 zip's ``data`` (its pickled entries are not unpickled)."""
    import json

    with zipfile.ZipFile(path) as z:
        try:
            data = json.loads(z.read("data"))
        except (ValueError, KeyError, zipfile.BadZipFile, OSError) as e:
            raise RlsaeError(f"{path}: the zip's data is not readable ({e})") from None
    return {k: v for k, v in data.items() if isinstance(v, int | float | str)}


# --------------------------------------------------------------------------------------------
# Building and publishing the agent directory
# --------------------------------------------------------------------------------------------
def _dummy_env(arch: str, n_actions: int) -> Any:
    import gymnasium as gym

    shape = EnvConfig(mode=arch).obs_shape

    class _Spaces(gym.Env):  # only the spaces: SB3 builds the policy from them
        observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        action_space = gym.spaces.Discrete(n_actions)

    return _Spaces()


def build_model(arch: str, params: dict[str, torch.Tensor]) -> Any:
    """An SB3 DQN of ``arch`` whose online and target Q-networks hold ``params``."""
    from stable_baselines3 import DQN

    n_actions = int(params["q_net.0.weight"].shape[0])
    model = DQN(
        "CnnPolicy",
        _dummy_env(arch, n_actions),
        policy_kwargs=policy_kwargs(arch),
        buffer_size=1,
        learning_starts=0,
        device="cpu",
        verbose=0,
    )
    model.q_net.load_state_dict(params)
    model.q_net_target.load_state_dict(params)
    return model


def _check_batch(model: Any, arch: str, source: dict[str, torch.Tensor], names: str) -> float:
    """Largest |dQ| / max|Q| between the file's network and the built one on seeded frames."""
    gen = torch.Generator().manual_seed(0)
    shape = EnvConfig(mode=arch).obs_shape
    x = torch.randint(0, 256, (4, *shape), generator=gen, dtype=torch.uint8)
    with torch.no_grad():
        qn = model.q_net  # as Agent.q_values: features of pixels / 255, then the head
        q_new = qn.q_net(qn.features_extractor(x.float() / 255.0))
        if names == "poster":
            q_ref = poster_forward(_strip_prefix(source), x.float())[0]
        else:
            q_ref = q_new
    scale = float(q_ref.abs().max()) or 1.0
    return float((q_new - q_ref).abs().max()) / scale


def infer_arch(tensors: dict[str, torch.Tensor]) -> str:
    """``nature`` for NatureCNN names, else ``poster`` (the poster's or rlsae's poster names)."""
    keys = _strip_prefix(tensors)
    return "nature" if any(k.startswith("features_extractor.cnn.") for k in keys) else "poster"


def import_agent(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    arch: str | None = None,
    game: str = DEFAULT_GAME,
    env_id: str | None = None,
) -> Path:
    """Import an agent file into a new agent directory ``out``; returns ``out``.

    ``arch`` (default: read from the parameter names) must match the file. ``env_id`` says
    which environment it was trained in (default: ``ALE/<Game>-v5`` of ``game`` for the poster's
    files, rl-zoo3's ``<Game>NoFrameskip-v4`` for SB3 zips); v4 ids play without sticky actions
    for a full episode, v5 ids with sticky actions 0.25. Everything is read and checked before
    ``out`` exists; it is then published whole.
    """
    src, out = Path(src), Path(out)
    where = str(src)
    if arch is not None:
        check_choice("dqn import", "arch", arch, ARCHS)
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    fmt, tensors, module_class = read_tensors(src)
    quantile_tensors, qr_conversion = None, []
    if fmt == "sb3-zip" and is_qrdqn(tensors):
        quantile_tensors = tensors
        tensors, note = qrdqn_to_dqn(src, tensors)
        fmt, qr_conversion = "sb3-qrdqn-zip", [note]
    found = infer_arch(tensors)
    if arch is not None and arch != found and fmt.startswith("sb3-"):
        raise RlsaeError(f"{where}: the zip holds a {found} network, not {arch}")
    arch = arch or found
    params, names, conversion = to_rlsae(where, arch, tensors)
    check_game(where, game, int(params["q_net.0.weight"].shape[0]))
    env_id = env_id or (_v4_id(game) if fmt.startswith("sb3-") else env_id_of(game))
    env, env_notes = env_from_id(where, env_id, arch, game)
    sb3 = sb3_data(src) if fmt.startswith("sb3-") else {}
    model = build_model(arch, params)
    err = _check_batch(model, arch, tensors, names)
    if quantile_tensors is not None:
        shape = EnvConfig(mode=arch).obs_shape
        err = max(err, qrdqn_check(model, quantile_tensors, shape))
    if not math.isfinite(err) or err > 1e-4:
        raise RlsaeError(f"{where}: the imported network differs from the file's ({err:.2g})")
    info = AgentInfo(
        arch=arch,
        seed=int(sb3.get("seed") or 0),
        steps_trained=int(sb3.get("num_timesteps") or 0),
        n_envs=int(sb3.get("n_envs") or 1),
        hyperparameters=default_config(arch),
        env=env,
        env_id=env_id,
        source=ImportSource(
            file=src.name,
            sha256=file_sha256(src),
            format=fmt,
            key_names=names,
            conversion=qr_conversion + conversion,
            module_class=module_class,
            max_rel_error=err,
            notes=env_notes,
        ),
    )
    with atomic_dir(out) as tmp:
        model.save(str(tmp / "model.zip"))
        info.write(tmp / "agent.json")
    return out


AGENT_FILES = (".pt", ".pth", ".safetensors", ".zip")
"""The file names ``dqn import --from FOLDER`` takes (each becomes ``OUT/<stem>``)."""


def import_folder(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    arch: str | None = None,
    game: str = DEFAULT_GAME,
    env_id: str | None = None,
) -> list[Path]:
    """Import every agent file of a folder (e.g. the poster's ``dqns/``), in name order, into
    ``out/<file stem>``; ``out`` is published whole, only if every file imports."""
    src, out = Path(src), Path(out)
    files = sorted(p for p in src.iterdir() if p.is_file() and p.suffix in AGENT_FILES)
    if not files:
        raise RlsaeError(f"{src} holds no agent files ({', '.join(AGENT_FILES)})")
    stems = [p.stem for p in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise RlsaeError(f"{src}: several files are named {dup[0]}.*; import them one by one")
    if out.exists():
        raise RlsaeError(f"{out} already exists; choose another --out or remove it")
    with atomic_dir(out) as tmp:
        for p in files:
            import_agent(p, tmp / p.stem, arch=arch, game=game, env_id=env_id)
    return [out / s for s in stems]


__all__ = [
    "AGENT_FILES",
    "import_folder",
    "NATURE_SHAPES",
    "POSTER_SHAPES",
    "build_model",
    "check_game",
    "env_from_id",
    "import_agent",
    "infer_arch",
    "poster_forward",
    "read_tensors",
    "rlsae_shapes",
    "to_rlsae",
]
