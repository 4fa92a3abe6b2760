"""The viewer's pages of agent stores: replayed colour frames, short clips, 3×3 action-effect grids.

Implements :class:`rlsae.viewer.source.ViewerSource` for activation stores recorded from an
Atari agent (``provider: atari``). Frames are not stored per step: each episode that holds a top
state is replayed once in the deterministic emulator (:mod:`rlsae.agents.replay`) and the frames
the pages need are handed to the site as PNG (the state) and GIF (a clip around it). Frames
belong to the activation store, so SAEs on the same store share them. Use::

    from rlsae.agents.viewer_source import viewer_source
    export_site(run_dir, sources=[viewer_source()])
"""

from __future__ import annotations

import io
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.agents.concept_run import CONCEPTS_FILE
from rlsae.agents.concepts import ConceptMatches
from rlsae.agents.results import EpisodeLog
from rlsae.agents.viewer_causal import (
    attach_frames,
    changed_requests,
    sae_tag,
    saliency_overlays,
    sweep_interventions,
)
from rlsae.errors import RlsaeError
from rlsae.viewer.source import (
    AgentState,
    ConceptScore,
    FeatureExtras,
    StoreClaim,
    StorePages,
    StoreView,
    first_line,
    sig,
)

StateKey = tuple[int, int]
"""(episode, step) of a recorded state."""


class AgentViewerSource:
    """Feature pages of activation stores recorded from an agent (``rlsae dqn record``)."""

    def claim(self, store: Any) -> StoreClaim | None:
        if store.provider != "atari":
            return None
        return StoreClaim(kind="agent", group_column="episode")

    def pages(self, view: StoreView) -> StorePages:
        out = StorePages()
        add_concepts(view, out)
        add_interventions(view, out)
        episodes, steps = view.column("episode"), view.column("step")
        if episodes is None or steps is None:
            out.notes.append("the store has no episode/step context; no frames")
            return out
        eps, stp = episodes.astype(np.int64), steps.astype(np.int64)
        cfg = view.config
        clip_acts = clip_activations(view, eps, stp, (cfg.clip_before, cfg.clip_after))
        urls: dict[StateKey, tuple[str, str]] = {}
        obs_at: dict[StateKey, np.ndarray] = {}
        if cfg.frames:
            urls, obs_at = _frames(view, eps, stp, out.notes)
        grids = _grids(view, eps, stp, obs_at, out.notes)
        overlays = _saliency(view, eps, stp, obs_at, out.notes)
        if grids:
            out.effect = grid_effect(grids, view.scan.top_rows)
            out.effect_label = "mean max |Δ| of the action-effect grid over top states"
        actions = view.column("action")
        for f in range(view.d_sae):
            for r in view.top_rows(f):
                key = (int(eps[r]), int(stp[r]))
                state = AgentState(episode=key[0], step=key[1], clip_acts=clip_acts[(f, r)])
                if key in urls:
                    state.frame, state.clip = urls[key]
                state.grid = grids.get((f, r))
                state.saliency = overlays.get((f, r))
                state.action = int(actions[r]) if actions is not None else None
                out.rows[(f, r)] = state
        out.clip = (cfg.clip_before, cfg.clip_after)
        out.actions = _action_names(view)
        return out


def add_concepts(view: StoreView, out: StorePages) -> None:
    """Each feature's best game-state concepts from ``SAE_DIR/concepts.json`` (written by
    ``rlsae dqn concepts`` or the study's ``concepts`` stage), as page data; a note when the
    file is unreadable or belongs to an SAE of another width."""
    path = view.sae_dir / CONCEPTS_FILE
    if not path.is_file():
        return
    try:
        matches = ConceptMatches.read(path)
    except (RlsaeError, OSError, ValueError) as e:
        out.notes.append(f"concepts unavailable ({first_line(e)})")
        return
    if matches.n_features != view.d_sae:
        out.notes.append(
            f"concepts unavailable ({path.name} matches {matches.n_features} features, "
            f"the SAE has {view.d_sae})"
        )
        return
    out.concept_coverage = matches.coverage
    for fc in matches.features:
        scores = [
            ConceptScore(m.concept, m.kind, m.score, m.strength, m.negated, m.threshold, m.f1)
            for m in fc.matches
        ]
        out.features[fc.feature] = FeatureExtras(label=fc.explanation, concepts=scores or None)


def add_interventions(view: StoreView, out: StorePages) -> None:
    """Each swept feature's ablation result from ``SAE_DIR/ablation_sweep.json``, with a frame
    and a clip of the state where the greedy action changed most (replayed from the sweep's
    spliced episodes when frames are on)."""
    ivs, doc = sweep_interventions(view, out.notes)
    if doc is not None and view.config.frames:
        try:
            urls, _ = write_frames(
                view, changed_requests(ivs), out.notes, doc=doc, prefix=f"sweep-{sae_tag(view)}-"
            )
            attach_frames(ivs, urls)
        except (ImportError, RlsaeError) as e:
            out.notes.append(f"ablation sweep: no frames ({first_line(e)})")
    for f, iv in ivs.items():
        out.features.setdefault(f, FeatureExtras()).intervention = iv


def store_row_frames(store_dir: str | Path, rows: Sequence[int]) -> dict[int, bytes]:
    """The PNG game frame of each store row, replayed from the store's ``episodes.json`` (each
    episode once, :func:`rlsae.agents.replay.replay_frames`): the ``frames`` of
    ``rlsae.viewer.crosscoder.export_crosscoder_pages`` for agent crosscoders (bind the store
    with ``functools.partial``). Raises RlsaeError when the store has no episode/step context."""
    from rlsae.agents.replay import replay_frames
    from rlsae.sae.store import ActivationStore

    context = ActivationStore(store_dir).context()
    if context is None or not {"episode", "step"} <= set(context.columns):
        raise RlsaeError(f"{store_dir}: the store has no episode/step context to replay")
    eps, stp = context["episode"].to_numpy(), context["step"].to_numpy()
    by_episode: dict[int, list[int]] = defaultdict(list)
    for r in rows:
        by_episode[int(eps[r])].append(int(r))
    out: dict[int, bytes] = {}
    for ep, rs in sorted(by_episode.items()):
        shots = replay_frames(store_dir, ep, [int(stp[r]) for r in rs])
        out.update((r, png_bytes(shot)) for r, shot in zip(rs, shots, strict=True))
    return out


def viewer_source() -> AgentViewerSource:
    """The agents' viewer source, for ``export_site(..., sources=[...])``."""
    return AgentViewerSource()


# ----------------------------------------------------------------------------- images


def png_bytes(frame: np.ndarray) -> bytes:
    """One RGB frame as PNG (lossless)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes(frames: list[np.ndarray], ms: int) -> bytes:
    """RGB frames as a looping GIF, ``ms`` milliseconds each."""
    from PIL import Image

    imgs = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    # one shared adaptive palette: Atari frames hold few colours, so this is close to lossless
    pal = imgs[len(imgs) // 2].quantize(colors=255)
    imgs = [im.quantize(palette=pal, dither=Image.Dither.NONE) for im in imgs]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms, loop=0)
    return buf.getvalue()


# ----------------------------------------------------------------------------- replay


def group_requests(
    top_rows: np.ndarray, episodes: np.ndarray, steps: np.ndarray
) -> dict[int, set[int]]:
    """{episode: {steps}} of every top state of every feature."""
    req: dict[int, set[int]] = defaultdict(set)
    for r in top_rows[top_rows >= 0].ravel():
        req[int(episodes[r])].add(int(steps[r]))
    return req


def _frames(
    view: StoreView, eps: np.ndarray, steps: np.ndarray, notes: list[str]
) -> tuple[dict[StateKey, tuple[str, str]], dict[StateKey, np.ndarray]]:
    """Replayed frames of every top state (a note instead when replay is impossible)."""
    requests = group_requests(view.scan.top_rows, eps, steps)
    try:
        return write_frames(view, requests, notes)
    except (ImportError, RlsaeError) as e:
        notes.append(f"frames unavailable ({first_line(e)})")
        return {}, {}


def write_frames(
    view: StoreView,
    requests: dict[int, set[int]],
    notes: list[str],
    clip_ms: int = 120,
    *,
    doc: EpisodeLog | None = None,
    prefix: str = "",
) -> tuple[dict[StateKey, tuple[str, str]], dict[StateKey, np.ndarray]]:
    """Replay each episode once and put ``{prefix}e{E}_s{S}.png`` and
    ``{prefix}clip_e{E}_s{S}.gif`` for every requested (episode, step) into the view's assets.
    Returns ({(E, S): (png URL, gif URL)}, {(E, S): the agent's observation at that step});
    episodes that cannot be replayed and steps the recording lacks are added to ``notes``.
    ``doc``: other episodes to replay than the store's ``episodes.json``."""
    from tqdm import tqdm

    from rlsae.agents.replay import read_episodes

    doc = doc if doc is not None else read_episodes(view.store.path)
    lengths = {e.episode: len(e.actions) for e in doc.episodes}
    before, after = view.config.clip_before, view.config.clip_after
    urls: dict[StateKey, tuple[str, str]] = {}
    obs_at: dict[StateKey, np.ndarray] = {}
    bar = tqdm(
        sorted(requests), desc="replay", unit="episode", disable=not view.progress,
        leave=False, file=sys.stderr,
    )  # fmt: skip
    for ep in bar:
        n = lengths.get(ep, 0)
        steps = sorted(s for s in requests[ep] if 0 <= s < n)
        if len(steps) < len(requests[ep]):
            notes.append(
                f"episode {ep}: {len(requests[ep]) - len(steps)} steps not in episodes.json"
            )
        if not steps:
            continue
        need = {t for s in steps for t in range(max(0, s - before), min(n - 1, s + after) + 1)}
        try:
            frames = _replay(doc, ep, need, requests[ep], obs_at)
        except RlsaeError as e:
            notes.append(f"episode {ep} could not be replayed: {e}")
            continue
        for s in steps:
            seq = [frames[t] for t in range(s - before, s + after + 1) if t in frames]
            urls[(ep, s)] = (
                view.assets.put(f"{prefix}e{ep}_s{s}.png", png_bytes(frames[s])),
                view.assets.put(f"{prefix}clip_e{ep}_s{s}.gif", gif_bytes(seq, clip_ms)),
            )
    return urls, obs_at


def _replay(
    doc: EpisodeLog,
    ep: int,
    need: set[int],
    wanted: set[int],
    obs_at: dict[StateKey, np.ndarray],
) -> dict[int, np.ndarray]:
    """The RGB screens of episode ``ep`` at the ``need`` steps; the agent's observation at each
    ``wanted`` step goes into ``obs_at``."""
    from rlsae.agents.replay import replay_episode

    frames: dict[int, np.ndarray] = {}
    for t, obs, frame in replay_episode(doc=doc, episode=ep, until=max(need)):
        if t in need and frame is not None:
            frames[t] = frame
        if t in wanted:
            obs_at[(ep, t)] = np.array(obs, copy=True)
    return frames


# ----------------------------------------------------------------------------- activations


def clip_activations(
    view: StoreView, episodes: np.ndarray, steps: np.ndarray, clip: tuple[int, int]
) -> dict[tuple[int, int], list[float | None]]:
    """The feature's activation on each step of the clip around each of its top states
    ({(feature, row): [activation or None per clip step]}). Rows of one episode may be
    interleaved with others (vectorised recording), so they are found by (episode, step)."""
    before, after = clip
    key = episodes.astype(np.int64) * (1 << 32) + steps.astype(np.int64)
    order = np.argsort(key, kind="stable")
    skey = key[order]
    keys: list[tuple[int, int]] = []
    rows: list[int] = []
    feats: list[int] = []
    slots: list[int] = []
    for f in range(view.d_sae):
        for r in view.top_rows(f):
            keys.append((f, r))
            want = key[r] + np.arange(-before, after + 1)
            pos = np.searchsorted(skey, want).clip(0, len(skey) - 1)
            for w, p in zip(want, pos, strict=True):
                ok = skey[p] == w and w >= key[r] - steps[r]  # same episode, step >= 0
                slots.append(len(rows) if ok else -1)
                if ok:
                    rows.append(int(order[p]))
                    feats.append(f)
    vals = view.activations(np.array(rows, dtype=np.int64), np.array(feats, dtype=np.int64))
    width = before + after + 1
    out: dict[tuple[int, int], list[float | None]] = {}
    for i, k in enumerate(keys):
        out[k] = [None if s < 0 else sig(vals[s]) for s in slots[i * width : (i + 1) * width]]
    return out


# ----------------------------------------------------------------------------- action effects


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


def _grids(
    view: StoreView,
    eps: np.ndarray,
    steps: np.ndarray,
    obs_at: dict[StateKey, np.ndarray],
    notes: list[str],
) -> dict[tuple[int, int], list[list[float]]]:
    """The action-effect grid of every top state whose observation was replayed (a note
    instead when the agent is missing or cannot be loaded)."""
    if not view.config.effects:
        return {}
    store, sae = view.store, view.sae
    agent_dir = find_agent_dir(view.run_dir, store.source, store.extra)
    if agent_dir is None:
        notes.append("agent not found; no action-effect grids")
        return {}
    if not obs_at:
        return {}
    states: dict[int, list[tuple[int, np.ndarray]]] = {}
    for f in range(view.d_sae):
        for r in view.top_rows(f):
            key = (int(eps[r]), int(steps[r]))
            if key in obs_at:
                states.setdefault(f, []).append((r, obs_at[key]))
    try:
        layer = str(store.extra.get("layer") or sae.cfg.hook_name or store.hook)
        return effect_grids(agent_dir, sae, layer, states, view.progress)
    except (ImportError, RlsaeError) as e:
        notes.append(f"action effects unavailable ({first_line(e)})")
        return {}


def _saliency(
    view: StoreView,
    eps: np.ndarray,
    steps: np.ndarray,
    obs_at: dict[StateKey, np.ndarray],
    notes: list[str],
) -> dict[tuple[int, int], str]:
    """Saliency overlays of the first ``config.saliency`` top states of every feature whose
    observation was replayed (a note instead when the agent is missing or fails)."""
    n = view.config.saliency
    if n == 0 or not obs_at:
        return {}
    store = view.store
    agent_dir = find_agent_dir(view.run_dir, store.source, store.extra)
    if agent_dir is None:
        notes.append("agent not found; no saliency overlays")
        return {}
    states: dict[int, list[tuple[int, StateKey, np.ndarray]]] = {}
    for f in range(view.d_sae):
        for r in view.top_rows(f)[:n]:
            key = (int(eps[r]), int(steps[r]))
            if key in obs_at:
                states.setdefault(f, []).append((r, key, obs_at[key]))
    try:
        layer = str(store.extra.get("layer") or view.sae.cfg.hook_name or store.hook)
        return saliency_overlays(view, agent_dir, layer, states, view.progress)
    except (ImportError, RlsaeError) as e:
        notes.append(f"saliency unavailable ({first_line(e)})")
        return {}


def effect_grids(
    agent_dir: Path,
    sae: Any,
    layer: str,
    states: dict[int, list[tuple[int, np.ndarray]]],
    progress: bool = False,
) -> dict[tuple[int, int], list[list[float]]]:
    """The action-effect grid of feature f on each of its states' observations
    ({(feature, row): grid}), from :func:`rlsae.agents.effects.action_effect_grid`: the change
    of each action's Q-value that the feature causes in that state (joystick layout, NOOP
    centre: 3×3, or 3×6 with the button; one row in action order for another action set)."""
    from tqdm import tqdm

    from rlsae.agents.dqn import load_agent
    from rlsae.agents.effects import action_effect_grid

    agent = load_agent(agent_dir)
    out = {}
    bar = tqdm(
        states.items(), desc="action effects", unit="feature", disable=not progress,
        leave=False, file=sys.stderr,
    )  # fmt: skip
    for f, items in bar:
        obs = np.stack([o for _, o in items])
        grids = np.asarray(action_effect_grid(agent, sae, layer, f, obs), dtype=np.float64)
        grids = grids.reshape(len(items), *grids.shape[-2:])  # (3, 3), (3, 6) or (1, actions)
        for (row, _), g in zip(items, grids, strict=True):
            out[(f, row)] = [[sig(v) for v in line] for line in g]
    return out


def grid_effect(
    grids: dict[tuple[int, int], list[list[float]]], top_rows: np.ndarray
) -> np.ndarray:
    """Per feature, the mean over its top states of the largest |Δ| in the state's grid."""
    effect = np.zeros(top_rows.shape[0])
    for (f, _), g in grids.items():
        effect[f] += np.abs(np.asarray(g)).max()
    return effect / np.maximum((top_rows >= 0).sum(1), 1)


def _action_names(view: StoreView) -> list[str] | None:
    """The action names of the store's game (``episodes.json``), in action order."""
    try:
        from rlsae.agents.envs import action_meanings
        from rlsae.agents.replay import read_episodes

        return [str(n) for n in action_meanings(read_episodes(view.store.path).env.game)]
    except Exception:  # noqa: BLE001 - names are a nicety; the page falls back to numbers
        return None
