"""Agent feature pages: replayed colour frames, short clips, and 3×3 action-effect grids.

Frames are not stored per step: each episode that holds a top state is replayed once in the
deterministic emulator (``rlsae.agents.replay``) and the frames the pages need are written as
PNG (the state) and GIF (a clip around it). Frames belong to the activation store, so SAEs on
the same store share them.
"""

from __future__ import annotations

import io
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json
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


def episode_lengths(store_dir: Path) -> dict[int, int]:
    """Number of recorded actions per episode in the store's ``episodes.json`` (empty if none)."""
    p = store_dir / "episodes.json"
    if not p.is_file():
        return {}
    data = read_json(p)
    return {int(e["episode"]): len(e.get("actions", [])) for e in data.get("episodes", [])}


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
) -> tuple[dict[tuple[int, int], tuple[str, str]], dict[tuple[int, int], np.ndarray], list[str]]:
    """Replay each episode once and write ``e{E}_s{S}.png`` and ``clip_e{E}_s{S}.gif`` for every
    requested (episode, step). Returns ({(E, S): (png name, gif name)}, {(E, S): RGB frame},
    notes about what could not be replayed)."""
    from rlsae.agents.replay import replay_frames

    before, after = clip
    lengths = episode_lengths(store.path)
    names: dict[tuple[int, int], tuple[str, str]] = {}
    frames_at: dict[tuple[int, int], np.ndarray] = {}
    notes: list[str] = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for ep in sorted(requests):
        steps = sorted(requests[ep])
        n = lengths.get(ep)
        need = sorted(
            {
                t
                for s in steps
                for t in range(s - before, s + after + 1)
                if t >= 0 and (n is None or t <= n)
            }
            | set(steps)
        )
        try:
            frames = replay_frames(store.path, ep, need)
        except RlsaeError as e:
            notes.append(f"episode {ep} could not be replayed: {e}")
            continue
        got = dict(zip(need, frames, strict=False))
        for s in steps:
            if s not in got:
                continue
            png, gif = f"e{ep}_s{s}.png", f"clip_e{ep}_s{s}.gif"
            (out_dir / png).write_bytes(_png(got[s]))
            seq = [got[t] for t in range(s - before, s + after + 1) if t in got]
            (out_dir / gif).write_bytes(_gif(seq, clip_ms))
            names[(ep, s)] = (png, gif)
            frames_at[(ep, s)] = got[s]
    return names, frames_at, notes


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
    ({(feature, row): [activation or None per clip step]}); rows of the same episode are found
    next to the state's row."""
    before, after = clip
    keys, rows, feats, slots = [], [], [], []
    n = len(episodes)
    for f in range(scan.top_rows.shape[0]):
        for r in scan.top_rows[f][scan.top_rows[f] >= 0]:
            r = int(r)
            keys.append((f, r))
            for d in range(-before, after + 1):
                j = r + d
                ok = 0 <= j < n and episodes[j] == episodes[r] and steps[j] == steps[r] + d
                slots.append(len(rows) if ok else -1)
                if ok:
                    rows.append(j)
                    feats.append(f)
    vals = gather_activations(sae, store, np.array(rows), np.array(feats), batch_size)
    width = before + after + 1
    out = {}
    for i, key in enumerate(keys):
        out[key] = [None if s < 0 else _sig(vals[s]) for s in slots[i * width : (i + 1) * width]]
    return out


def effect_grids(
    agent_dir: Path,
    sae: Any,
    layer: str,
    states: dict[int, list[tuple[int, np.ndarray]]],
) -> dict[tuple[int, int], list[list[float]]]:
    """The 3×3 action-effect grid of feature f on each of its states' observations
    ({(feature, row): grid}), from ``rlsae.agents.effects.action_effect_grid``."""
    from rlsae.agents import load_agent
    from rlsae.agents.effects import action_effect_grid

    agent = load_agent(agent_dir)
    out = {}
    for f, items in states.items():
        for row, obs in items:
            g = np.asarray(action_effect_grid(agent, sae, layer, f, obs), dtype=np.float64)
            out[(f, row)] = [[_sig(v) for v in line] for line in g.reshape(3, 3)]
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
