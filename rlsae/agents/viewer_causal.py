"""The causal parts of an agent feature's page: saliency overlays and the ablation result.

- **Saliency** (:func:`saliency_overlays`): for the first ``ExportConfig.saliency`` top states
  of each feature, gradient × input of the feature's activation with respect to the pixels
  (:mod:`rlsae.agents.saliency`, one backward pass per feature), reduced to a heat map over the
  screen and stored as a transparent PNG that the page lays over the state's frame (a toggle).
- **Ablation** (:func:`sweep_interventions`): the SAE folder's ``ablation_sweep.json``
  (``rlsae dqn sweep`` or the study's ``sweep`` stage) gives each swept feature's Δreturn with
  its interval, the action-distribution shift and the state where the greedy action changed
  most; that state is one of the sweep's spliced episodes, replayed from its seed and actions in
  the store's environment for a frame and a clip (:mod:`rlsae.agents.viewer_source` does the
  replay).
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rlsae.agents.results import AblationSweep, EpisodeLog, read_episodes
from rlsae.agents.sweep import ABLATION_FILE
from rlsae.errors import RlsaeError
from rlsae.viewer.source import ChangedAction, Intervention, StoreView, first_line

Overlays = dict[tuple[int, int], str]
"""{(feature, store row): URL of the state's saliency overlay}."""


def sae_tag(view: StoreView) -> str:
    """A short name of the SAE for asset file names (SAEs on one store share its asset folder)."""
    try:
        rel = view.sae_dir.resolve().relative_to(view.run_dir.resolve()).as_posix()
    except ValueError:
        rel = str(view.sae_dir.resolve())
    return hashlib.sha1(rel.encode()).hexdigest()[:8]


def saliency_overlays(
    view: StoreView,
    agent_dir: Path,
    layer: str,
    states: dict[int, list[tuple[int, tuple[int, int], np.ndarray]]],
    progress: bool = False,
) -> Overlays:
    """The overlay PNG of every ``(row, (episode, step), observation)`` of each feature in
    ``states``, put into the view's assets."""
    import torch
    from tqdm import tqdm

    from rlsae.agents.dqn import load_agent
    from rlsae.agents.saliency import (
        batch_gradient_x_input,
        feature_activation,
        heat_map,
        overlay_png,
    )

    agent = load_agent(agent_dir)
    tag, out = sae_tag(view), {}
    bar = tqdm(
        states.items(), desc="saliency", unit="feature", disable=not progress, leave=False,
        file=sys.stderr,
    )  # fmt: skip
    for f, items in bar:
        fn = feature_activation(agent, view.sae, layer, f)
        xs = torch.as_tensor(np.stack([o for _, _, o in items]), dtype=torch.float32)
        attr = batch_gradient_x_input(fn, xs).numpy()
        for (row, (ep, step), _), a in zip(items, attr, strict=True):
            screen, _ = heat_map(a, agent.arch)
            name = f"sal-{tag}-f{f}-e{ep}-s{step}.png"
            out[(f, row)] = view.assets.put(name, overlay_png(screen))
    return out


def sweep_interventions(
    view: StoreView, notes: list[str]
) -> tuple[dict[int, Intervention], EpisodeLog | None]:
    """Each swept feature's :class:`Intervention` from the SAE's ``ablation_sweep.json`` (none
    when it is absent; a note when it is unreadable or belongs to another SAE), and the sweep's
    spliced episodes as an :class:`EpisodeLog` in the store's environment, for replay (None
    when the store has no ``episodes.json``)."""
    path = view.sae_dir / ABLATION_FILE
    if not path.is_file():
        return {}, None
    try:
        sweep = AblationSweep.read(path)
    except (RlsaeError, OSError, ValueError) as e:
        notes.append(f"ablation sweep unavailable ({first_line(e)})")
        return {}, None
    bad = [r.feature for r in sweep.rows if not 0 <= r.feature < view.d_sae]
    if bad:
        notes.append(
            f"ablation sweep unavailable ({path.name} ablates feature {bad[0]}; "
            f"the SAE has {view.d_sae})"
        )
        return {}, None
    out: dict[int, Intervention] = {}
    for rank, r in enumerate(sweep.rows, 1):
        m = r.most_changed
        changed = None
        if m is not None:
            changed = ChangedAction(m.episode, m.step, m.action_spliced, m.action_ablated, m.q_gap)
        out[r.feature] = Intervention(
            kind="ablation", delta_return=r.delta_return, delta_return_ci=list(r.delta_return_ci),
            return_base=sweep.return_spliced, episodes=sweep.episodes,
            greedy_changed=r.greedy_changed, greedy_changed_firing=r.greedy_changed_firing,
            action_tv=r.action_tv, states_firing=r.states_firing, source=path.name, rank=rank,
            swept=len(sweep.rows), changed=changed,
        )  # fmt: skip
    doc = None
    if sweep.episodes_spliced:
        try:
            doc = replace(read_episodes(view.store.path), episodes=sweep.episodes_spliced)
        except RlsaeError as e:
            notes.append(f"ablation sweep: no frames of its episodes ({first_line(e)})")
    return out, doc


def changed_requests(interventions: dict[int, Intervention]) -> dict[int, set[int]]:
    """{episode: {steps}} of the sweep states to replay."""
    req: dict[int, set[int]] = {}
    for iv in interventions.values():
        if iv.changed is not None:
            req.setdefault(iv.changed.episode, set()).add(iv.changed.step)
    return req


def attach_frames(
    interventions: dict[int, Intervention], urls: dict[tuple[int, int], tuple[str, str]]
) -> None:
    """Set each changed state's frame and clip URLs (where the replay gave them)."""
    for iv in interventions.values():
        c: Any = iv.changed
        if c is not None and (c.episode, c.step) in urls:
            c.frame, c.clip = urls[(c.episode, c.step)]
