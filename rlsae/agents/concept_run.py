"""Match an SAE's features against Ms. Pac-Man's game-state concepts over a recorded store.

Used by ``rlsae dqn concepts`` and the Atari study's ``concepts`` stage. The inputs are checked
by :func:`check_concept_inputs` before torch or the emulator is loaded (every bad input is one
line); :func:`sae_concepts` then reads the RAM the recording stored with every row, or for an
older store regenerates it by replay (:func:`rlsae.agents.concepts.store_concepts`), encodes
the rows with the SAE in batches and matches (:func:`rlsae.agents.concepts.match_concepts`),
with a ridge probe from the raw layer per concept (episodes kept on one side of its split).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlsae.agents.agent_dir import check_agent_dir
from rlsae.agents.concepts import ConceptMatches, compute_concepts
from rlsae.agents.layers import check_layer
from rlsae.agents.ram import decode_ram_batch, has_recorded_ram, ram_decoder
from rlsae.agents.results import read_episodes
from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json

CONCEPTS_FILE = "concepts.json"
"""The file name of an SAE's concept matches, written beside its weights by default."""


def concept_names() -> list[str]:
    """Every concept's name (actions included), in the library's order."""
    one = decode_ram_batch(np.zeros((1, 128), dtype=np.uint8))
    return compute_concepts(one, np.zeros(1, dtype=np.int64)).names


@dataclass(frozen=True)
class ConceptInputs:
    """What :func:`check_concept_inputs` found: the store's layer and width, the SAE's width."""

    layer: str
    d_in: int
    d_sae: int
    rows: int
    concepts: tuple[str, ...] | None


def _read_meta(path: Path, what: str) -> dict:
    if not path.is_file():
        raise RlsaeError(f"{path} not found; is {path.parent} {what}?")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RlsaeError(f"{path} is not a JSON object")
    return meta


def check_concept_inputs(
    agent: str | os.PathLike | None,
    sae_dir: str | os.PathLike,
    acts_dir: str | os.PathLike,
    concepts: Sequence[str] | None = None,
) -> ConceptInputs:
    """Refuse, in one line and without torch or the emulator, inputs that cannot be matched:
    a game with no RAM table, an older nature recording without RAM (its no-ops were drawn by
    the vector env, so it cannot be replayed), an SAE of another width than the store, an
    unknown concept name, a layer the agent does not have."""
    acts, sae = Path(acts_dir), Path(sae_dir)
    doc = read_episodes(acts)  # one line when the store is not a `dqn record` store
    ram_decoder(str(doc.ale.get("game", "")))  # names the games that have a RAM table
    if doc.env.noop_max != 0 and not has_recorded_ram(acts):
        raise RlsaeError(
            f"{acts} was recorded with noop_max={doc.env.noop_max} (nature mode: the vector env "
            "draws the no-ops itself) by an older `rlsae dqn record` that stored no RAM, so its "
            "RAM cannot be regenerated; record it again (the RAM is now stored with every row)"
        )
    meta = _read_meta(acts / "meta.json", "an activation store")
    cfg = _read_meta(sae / "cfg.json", "an SAE directory")
    try:
        d_in, rows, sae_in, d_sae = (
            int(meta["d_in"]), int(meta["rows"]), int(cfg["d_in"]), int(cfg["d_sae"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise RlsaeError(f"{acts / 'meta.json'} or {sae / 'cfg.json'}: bad field ({e})") from None
    layer = str(meta.get("hook", ""))
    if sae_in != d_in:
        raise RlsaeError(
            f"the SAE {sae} encodes width {sae_in} but the store {acts} holds width {d_in} "
            f"(layer {layer or '?'}); pass the SAE trained on this store"
        )
    if agent is not None:
        check_layer(check_agent_dir(agent).arch, layer)
    names = None
    if concepts is not None:
        known = concept_names()
        for name in concepts:
            if name not in known:
                raise RlsaeError(
                    f"no concept named {name!r}; there are {len(known)}, e.g. "
                    f"{', '.join(known[:6])} (see docs/agents.md)"
                )
        if not concepts:
            raise RlsaeError("--concepts names no concept")
        names = tuple(concepts)
    return ConceptInputs(layer=layer, d_in=d_in, d_sae=d_sae, rows=rows, concepts=names)


def _row_subset(n: int, max_rows: int | None) -> np.ndarray:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_rows).round().astype(np.int64))


def sae_concepts(
    agent: str | os.PathLike | None,
    sae_dir: str | os.PathLike,
    acts_dir: str | os.PathLike,
    *,
    concepts: Sequence[str] | None = None,
    top_k: int = 5,
    max_rows: int | None = None,
    batch_rows: int = 4096,
    verify: bool = True,
) -> ConceptMatches:
    """The concept matches of the SAE's features over the store's rows (``max_rows`` evenly
    spaced rows when the store has more; the RAM of every row is regenerated and, with
    ``verify``, every replayed screen checked against the recording)."""
    import pandas as pd
    import torch

    from rlsae.agents.concepts import match_concepts, store_concepts
    from rlsae.sae import ActivationStore, load_sae

    inputs = check_concept_inputs(agent, sae_dir, acts_dir, concepts)
    if max_rows is not None and max_rows < 1:
        raise RlsaeError(f"max_rows must be at least 1, got {max_rows}")
    cv = store_concepts(acts_dir, verify=verify)
    if inputs.concepts is not None:
        cv = cv.select(inputs.concepts)
    store = ActivationStore(acts_dir)
    rows = _row_subset(store.rows, max_rows)
    model = load_sae(sae_dir)
    raw = np.zeros((len(rows), store.d_in), dtype=np.float32)
    latents = np.zeros((len(rows), model.d_sae), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(rows), batch_rows):
            x = store.read_rows(rows[start : start + batch_rows]).float()
            raw[start : start + len(x)] = x.numpy()
            latents[start : start + len(x)] = model.encode(x).float().numpy()
    episodes = pd.read_parquet(Path(acts_dir) / "context.parquet", columns=["episode"])
    cv_rows = type(cv)(cv.concepts, cv.values[rows])
    return match_concepts(
        latents, cv_rows, top_k=top_k, raw=raw, groups=episodes["episode"].to_numpy()[rows]
    )


__all__ = [
    "CONCEPTS_FILE",
    "ConceptInputs",
    "check_concept_inputs",
    "concept_names",
    "sae_concepts",
]
