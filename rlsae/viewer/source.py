"""The viewer's source protocol: how a provider gives the exporter the pages of its stores.

The exporter (:mod:`rlsae.viewer.export`) knows SAEs, activation stores and the site; it knows
nothing of games or language models. What a feature page shows beyond the provider-neutral
statistics (frames of an agent's states, token contexts, logit effects, explanations) comes from
a :class:`ViewerSource`, which a provider implements (``rlsae.agents.viewer_source``,
``rlsae.llm.viewer_source``) and a caller passes to
``export_site(run_dir, sources=[...])``. Per SAE, the exporter

1. asks each source in turn to :meth:`~ViewerSource.claim` the SAE's activation store (from its
   ``meta.json``: ``provider``, ``source``, ``hook``, ``extra``); the first :class:`StoreClaim`
   says which page template the site uses (``"agent"`` or ``"lm"``), which context column groups
   rows (top rows come from distinct groups) and whether lower activation intervals are sampled;
   a store no source claims gets the generic page (its context columns in a table);
2. scans the store (:func:`rlsae.viewer.scan.scan_features`);
3. hands the source a :class:`StoreView` (the run, the SAE, the store, its context, the scan, the
   config, and an :class:`Assets` folder for image files) and renders the :class:`StorePages` it
   returns: per (feature, row) an :class:`AgentState` or a :class:`TokenContext`, per feature
   :class:`FeatureExtras`, an optional effect size that replaces the default one, fields of the
   SAE's index entry, and notes about what was unavailable.

This module imports only the viewer's scan and the SAE core, so providers depend on the viewer
and never the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from rlsae.viewer.config import ExportConfig
from rlsae.viewer.scan import FeatureScan, gather_activations

if TYPE_CHECKING:
    import pandas as pd

    from rlsae.sae.model import SAE
    from rlsae.sae.store import ActivationStore


@dataclass(frozen=True)
class StoreClaim:
    """A source's answer to "is this store yours?"."""

    kind: str
    """Page template of the site: ``"agent"`` (states, frames, effect grids) or ``"lm"``
    (token contexts, logit effects, explanations)."""
    group_column: str | None = None
    """Context column whose values group rows (episode, document): a feature's top rows come
    from distinct groups. None, or a column the store lacks: every row is its own group."""
    intervals: bool = False
    """Also sample rows from lower activation intervals (``ExportConfig.lm_intervals``)."""


@dataclass
class Assets:
    """A folder of the site for a store's binary files (frames, clips), shared by every SAE
    trained on that store. :meth:`put` writes one file and returns its site-relative URL."""

    root: Path
    """Where the files go on disk."""
    url: str
    """Site-relative URL of ``root`` (forward slashes)."""

    def put(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name`` (a plain file name) and return its URL in the site."""
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
            raise ValueError(f"asset name {name!r} is not a plain file name")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / name).write_bytes(data)
        return f"{self.url}/{name}"


@dataclass
class StoreView:
    """Everything a source may read to build the pages of one SAE on one store."""

    run_dir: Path
    sae_dir: Path
    sae: SAE
    store: ActivationStore
    context: pd.DataFrame | None
    """The store's per-row context table (None when it has none)."""
    scan: FeatureScan
    config: ExportConfig
    assets: Assets
    progress: bool = False
    """Whether the source may show progress bars (on stderr)."""

    @property
    def d_sae(self) -> int:
        return int(self.sae.cfg.d_sae)

    def top_rows(self, feature: int) -> list[int]:
        """The store rows of ``feature``'s top list, best first."""
        rows = self.scan.top_rows[feature]
        return [int(r) for r in rows[rows >= 0]]

    def sample_rows(self, feature: int) -> list[int]:
        """The rows sampled from ``feature``'s lower activation intervals (possibly none)."""
        rows = self.scan.interval_rows[feature]
        return [int(r) for r in rows[rows >= 0].ravel()]

    def column(self, name: str) -> np.ndarray | None:
        """One context column as an array, or None when the store lacks it."""
        if self.context is None or name not in self.context.columns:
            return None
        return self.context[name].to_numpy()

    def activations(self, rows: Any, features: Any) -> np.ndarray:
        """Activation of ``features[i]`` on store row ``rows[i]`` for every i (float32)."""
        return gather_activations(
            self.sae, self.store, np.asarray(rows), np.asarray(features), self.config.batch_size
        )


# ----------------------------------------------------------------------------- page data


@dataclass
class AgentState:
    """One top state of an agent feature (template ``"agent"``)."""

    episode: int
    step: int
    clip_acts: list[float | None]
    """The feature's activation on each step of the clip (None where the step is missing)."""
    frame: str | None = None
    """URL of the state's PNG frame (from :meth:`Assets.put`)."""
    clip: str | None = None
    """URL of the GIF clip around the state."""
    grid: list[list[float]] | None = None
    """The feature's 3×3 action-effect grid in this state (joystick layout)."""
    action: int | None = None
    """The action the agent took."""
    saliency: str | None = None
    """URL of a transparent PNG heat map of where in the frame the feature looks (an overlay
    of ``frame``, same size)."""

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {"episode": self.episode, "step": self.step}
        page["clip_acts"] = self.clip_acts
        for key in ("frame", "clip", "grid", "action", "saliency"):
            if getattr(self, key) is not None:
                page[key] = getattr(self, key)
        return page


@dataclass
class TokenContext:
    """The tokens around one activating token (template ``"lm"``)."""

    tokens: list[tuple[str, float, int]]
    """[token text, the feature's activation on it, 1 on the activating token else 0]."""
    doc: int | None = None
    pos: int | None = None

    def to_page(self) -> dict[str, Any]:
        return {"tokens": [list(t) for t in self.tokens], "doc": self.doc, "pos": self.pos}


@dataclass
class ContextRow:
    """A row of a store no source claimed (template ``"generic"``): its context values."""

    context: dict[str, Any]
    """Column name -> value (JSON scalars)."""

    def to_page(self) -> dict[str, Any]:
        return {"context": self.context}


RowPage = AgentState | TokenContext | ContextRow


@dataclass
class LogitEffects:
    """Tokens whose logits a feature's decoder direction raises most and lowers most."""

    promoted: list[tuple[str, float]]
    """[token text, logit change] of the most raised logits, largest first."""
    suppressed: list[tuple[str, float]]
    """Likewise for the most lowered, most negative first."""

    def to_page(self) -> dict[str, Any]:
        return {
            "promoted": [list(t) for t in self.promoted],
            "suppressed": [list(t) for t in self.suppressed],
        }


@dataclass
class Explanation:
    """A feature's explanation as the page shows it."""

    explanation: str
    utility: float | None = None
    """Its summed utility score, when scored."""
    method: str | None = None
    """How it was made (e.g. ``top-tokens``)."""
    scorer: str | None = None
    """Who scored it on held-out contexts, as outputs name it (the offline stand-in says so)."""
    detection: float | None = None
    """Detection balanced accuracy (0.5 = chance), when scored."""
    fuzzing: float | None = None
    """Fuzzing balanced accuracy, when scored."""
    simulation: float | None = None
    """Simulation correlation with the true activations, when scored."""

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {"explanation": self.explanation}
        for key in ("utility", "method", "scorer", "detection", "fuzzing", "simulation"):
            if getattr(self, key) is not None:
                page[key] = getattr(self, key)
        return page


@dataclass
class ConceptScore:
    """How well one named concept (ground truth, e.g. from a game's RAM) explains a feature."""

    concept: str
    kind: str
    """``bool`` (scored by AUROC) or ``scalar`` (by Spearman's rho)."""
    score: float | None
    """AUROC (of the concept's absence when ``negated``) or rho; None when undefined."""
    strength: float
    """0-1, what matches are ranked by (``2 |AUROC - 0.5|`` or ``|rho|``)."""
    negated: bool = False
    threshold: float | None = None
    """Activation at or above which the concept is predicted with the best F1 (bool)."""
    f1: float | None = None

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {"concept": self.concept, "kind": self.kind}
        page["score"] = None if self.score is None else sig(self.score)
        page["strength"] = sig(self.strength)
        if self.negated:
            page["negated"] = True
        for key in ("threshold", "f1"):
            v = getattr(self, key)
            if v is not None:
                page[key] = sig(v)
        return page


@dataclass
class ChangedAction:
    """The state where an intervention on a feature changed the greedy action most."""

    episode: int
    step: int
    action_before: int
    """Greedy action without the intervention."""
    action_after: int
    """Greedy action with it."""
    shift: float
    """How far the intervention moved the preference between the two actions (Q units)."""
    frame: str | None = None
    """URL of the state's frame (PNG)."""
    clip: str | None = None
    """URL of a clip around it (GIF)."""

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {
            "episode": self.episode, "step": self.step, "action_before": self.action_before,
            "action_after": self.action_after, "shift": sig(self.shift),
        }  # fmt: skip
        for key in ("frame", "clip"):
            if getattr(self, key) is not None:
                page[key] = getattr(self, key)
        return page


@dataclass
class Intervention:
    """A feature's causal effect in play: the agent with the feature ablated (or steered)
    against the spliced agent on the same seeded episodes."""

    kind: str
    """``ablation`` (the feature set to zero) or ``steering``."""
    delta_return: float
    """Mean return with the intervention minus without."""
    delta_return_ci: list[float]
    """95% bootstrap interval of ``delta_return``."""
    return_base: float
    """Mean return without the intervention (the spliced agent)."""
    episodes: int
    greedy_changed: float
    """Fraction of states where the greedy action changed."""
    greedy_changed_firing: float | None
    """The same over the states where the feature fires."""
    action_tv: float
    """Total variation between the greedy-action histograms."""
    states_firing: int
    source: str
    """The file it came from (shown on the page)."""
    rank: int | None = None
    """Rank by |delta_return| among the features swept (1: the largest)."""
    swept: int | None = None
    """Features swept."""
    changed: ChangedAction | None = None

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {
            "kind": self.kind, "delta_return": sig(self.delta_return),
            "ci": [sig(v) for v in self.delta_return_ci], "return_base": sig(self.return_base),
            "episodes": self.episodes, "greedy_changed": sig(self.greedy_changed),
            "greedy_changed_firing": None if self.greedy_changed_firing is None
            else sig(self.greedy_changed_firing),
            "action_tv": sig(self.action_tv), "states_firing": self.states_firing,
            "source": self.source, "rank": self.rank, "swept": self.swept,
        }  # fmt: skip
        if self.changed is not None:
            page["changed"] = self.changed.to_page()
        return page


@dataclass
class FeatureExtras:
    """What a source adds to one feature's page."""

    logits: LogitEffects | None = None
    explanation: Explanation | None = None
    label: str | None = None
    """Short text shown beside the feature in the feature table."""
    concepts: list[ConceptScore] | None = None
    """The concepts that best explain the feature, strongest first (the first also goes into
    the feature table, for filtering and sorting by concept and match quality)."""
    intervention: Intervention | None = None
    """Its causal effect in play, when a sweep or the study measured one (agents)."""

    def to_page(self) -> dict[str, Any]:
        page: dict[str, Any] = {}
        if self.intervention is not None:
            page["intervention"] = self.intervention.to_page()
        if self.logits is not None:
            page["logits"] = self.logits.to_page()
        if self.explanation is not None:
            page["explanation"] = self.explanation.to_page()
        if self.concepts:
            page["concepts"] = [c.to_page() for c in self.concepts]
        return page


@dataclass
class StorePages:
    """What a source returns for one SAE on one of its stores."""

    rows: dict[tuple[int, int], RowPage] = field(default_factory=dict)
    """Page data of (feature, row) for the feature's top rows and interval samples."""
    features: dict[int, FeatureExtras] = field(default_factory=dict)
    effect: np.ndarray | None = None
    """Per-feature effect size replacing the default (max activation × decoder norm)."""
    effect_label: str | None = None
    """What ``effect`` measures (shown on the pages)."""
    notes: list[str] = field(default_factory=list)
    """What was unavailable and why (shown on the index)."""
    actions: list[str] | None = None
    """Action names, indexed by action (agents)."""
    clip: tuple[int, int] | None = None
    """Steps before and after the state in each clip (agents)."""
    unembedding: bool | None = None
    """True when logit effects were computed through the model's unembedding (LMs)."""
    explained: int | None = None
    """Number of explained features (LMs)."""
    concept_coverage: float | None = None
    """Fraction of live features whose best concept match has AUROC >= 0.9 (agents)."""

    def entry_fields(self) -> dict[str, Any]:
        """The fields this adds to the SAE's entry of the site index."""
        out: dict[str, Any] = {}
        if self.clip is not None:
            out["clip"] = {"before": self.clip[0], "after": self.clip[1]}
        for key in ("actions", "unembedding", "explained", "concept_coverage"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


class ViewerSource(Protocol):
    """A provider of feature-page data for the activation stores it recognises."""

    def claim(self, store: ActivationStore) -> StoreClaim | None:
        """A claim on ``store`` (decided from its meta and context columns), or None."""
        ...

    def pages(self, view: StoreView) -> StorePages:
        """The page data of one SAE on a claimed store. Problems a user can fix (a missing
        agent or model, an episode that cannot be replayed) become ``notes``, not errors."""
        ...


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of an error's message, shortened, for a note."""
    text = str(e).splitlines()
    return (text[0] if text else type(e).__name__)[:limit]


def sig(x: float, digits: int = 4) -> float:
    """``x`` rounded to ``digits`` significant digits, for compact JSON."""
    return float(f"{float(x):.{digits}g}")
