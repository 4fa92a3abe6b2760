"""Agent feature pages: replayed colour frames, short clips, and 3×3 action-effect grids.

Frames are not stored per step: each episode that holds a top state is replayed once in the
deterministic emulator (``rlsae.agents.replay``) and the frames the pages need are written as
PNG (the state) and GIF (a clip around it). Frames belong to the activation store, so SAEs on
the same store share them.
"""

from __future__ import annotations

import io
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.errors import RlsaeError
from rlsae.viewer.scan import FeatureScan, gather_activations


def _sig(x: float) -> float:
    """Four significant digits, for compact JSON."""
    return float(f"{float(x):.4g}")


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _gif(frames: list[np.ndarray], ms: int) -> bytes:
    from PIL import Image

    imgs = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    # one shared adaptive palette: Atari frames hold few colours, so this is close to lossless
    pal = imgs[len(imgs) // 2].quantize(colors=255)
    imgs = [im.quantize(palette=pal, dither=Image.Dither.NONE) for im in imgs]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms, loop=0)
    return buf.getvalue()


def find_agent_dir(run_dir: Path, source: str, extra: dict[str, Any]) -> Path | None:
    """The agent behind an atari store: ``extra.agent_dir`` (absolute or run-relative), else
    ``agents/SOURCE`` in the run."""
    cands = []
    if extra.get("agent_dir"):
        a = Path(str(extra["agent_dir"]))
        cands += [a, run_dir / a]
    cands.append(run_dir / "agents" / source)
    for c in cands:
        if (c / "model.zip").is_file() or (c / "agent.json").is_file():
            return c
    return None


def write_frames(
    store: Any,
    requests: dict[int, set[int]],
    clip: tuple[int, int],
    out_dir: Path,
    clip_ms: int = 120,
    progress: bool = False,
) -> tuple[dict[tuple[int, int], tuple[str, str]], dict[tuple[int, int], np.ndarray], list[str]]:
    """Replay each episode once and write ``e{E}_s{S}.png`` and ``clip_e{E}_s{S}.gif`` for every
    requested (episode, step). Returns ({(E, S): (png name, gif name)}, {(E, S): the agent's
    observation at that step}, notes about episodes that could not be replayed)."""
    from rlsae.agents.replay import read_episodes, replay_episode

    before, after = clip
    doc = read_episodes(store.path)
    lengths = {int(e["episode"]): len(e.get("actions", [])) for e in doc["episodes"]}
    names: dict[tuple[int, int], tuple[str, str]] = {}
    obs_at: dict[tuple[int, int], np.ndarray] = {}
    notes: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    for ep in tqdm(
        sorted(requests),
        desc="replay",
        unit="episode",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    ):
        n = lengths.get(ep, 0)
        steps = sorted(s for s in requests[ep] if 0 <= s < n)
        if len(steps) < len(requests[ep]):
            notes.append(
                f"episode {ep}: {len(requests[ep]) - len(steps)} steps not in episodes.json"
            )
        if not steps:
            continue
        need = {t for s in steps for t in range(max(0, s - before), min(n - 1, s + after) + 1)}
        frames: dict[int, np.ndarray] = {}
        try:
            for t, obs, frame in replay_episode(doc=doc, episode=ep, until=max(need)):
                if t in need:
                    frames[t] = frame
                if t in requests[ep]:
                    obs_at[(ep, t)] = np.array(obs, copy=True)
        except RlsaeError as e:
            notes.append(f"episode {ep} could not be replayed: {e}")
            continue
        for s in steps:
            png, gif = f"e{ep}_s{s}.png", f"clip_e{ep}_s{s}.gif"
            (out_dir / png).write_bytes(_png(frames[s]))
            seq = [frames[t] for t in range(s - before, s + after + 1) if t in frames]
            (out_dir / gif).write_bytes(_gif(seq, clip_ms))
            names[(ep, s)] = (png, gif)
    return names, obs_at, notes


def clip_activations(
    sae: Any,
    store: Any,
    scan: FeatureScan,
    episodes: np.ndarray,
    steps: np.ndarray,
    clip: tuple[int, int],
    batch_size: int,
) -> dict[tuple[int, int], list[float | None]]:
    """The feature's activation on each step of the clip around each of its top states
    ({(feature, row): [activation or None per clip step]}). Rows of one episode may be
    interleaved with others (vectorised recording), so they are found by (episode, step)."""
    before, after = clip
    key = episodes.astype(np.int64) * (1 << 32) + steps.astype(np.int64)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    keys, rows, feats, slots = [], [], [], []
    for f in range(scan.top_rows.shape[0]):
        for r in scan.top_rows[f][scan.top_rows[f] >= 0]:
            r = int(r)
            keys.append((f, r))
            want = key[r] + np.arange(-before, after + 1)
            pos = np.searchsorted(skey, want).clip(0, len(skey) - 1)
            for w, p in zip(want, pos, strict=True):
                ok = skey[p] == w and w >= key[r] - steps[r]  # same episode, step >= 0
                slots.append(len(rows) if ok else -1)
                if ok:
                    rows.append(int(order[p]))
                    feats.append(f)
    vals = gather_activations(sae, store, np.array(rows), np.array(feats), batch_size)
    width = before + after + 1
    out = {}
    for i, k in enumerate(keys):
        out[k] = [None if s < 0 else _sig(vals[s]) for s in slots[i * width : (i + 1) * width]]
    return out


def effect_grids(
    agent_dir: Path,
    sae: Any,
    layer: str,
    states: dict[int, list[tuple[int, np.ndarray]]],
    progress: bool = False,
) -> dict[tuple[int, int], list[list[float]]]:
    """The 3×3 action-effect grid of feature f on each of its states' observations
    ({(feature, row): grid}), from ``rlsae.agents.effects.action_effect_grid``: the change of
    each action's Q-value that the feature causes in that state (joystick layout, NOOP centre)."""
    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import action_effect_grid

    agent = load_agent(agent_dir)
    out = {}
    from tqdm import tqdm

    bar = tqdm(
        states.items(),
        desc="action effects",
        unit="feature",
        disable=not progress,
        leave=False,
        file=sys.stderr,
    )
    for f, items in bar:
        obs = np.stack([o for _, o in items])
        grids = np.asarray(action_effect_grid(agent, sae, layer, f, obs), dtype=np.float64)
        for (row, _), g in zip(items, grids.reshape(len(items), 3, 3), strict=True):
            out[(f, row)] = [[_sig(v) for v in line] for line in g]
    return out


def rel(path: Path, start: Path) -> str:
    """A forward-slash relative path for use in the site."""
    return os.path.relpath(path, start).replace(os.sep, "/")


def group_requests(
    scan: FeatureScan, episodes: np.ndarray, steps: np.ndarray
) -> dict[int, set[int]]:
    """{episode: {steps}} of every top state of every feature."""
    req: dict[int, set[int]] = defaultdict(set)
    for r in scan.top_rows[scan.top_rows >= 0].ravel():
        req[int(episodes[r])].add(int(steps[r]))
    return req
