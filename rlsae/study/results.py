"""The typed results of the two studies' stages (each a stage marker's ``result``).

Every stage returns one of these (or a result type of the part it calls, e.g.
:class:`rlsae.agents.results.Evaluation`); the engine writes it into the stage's marker and
later stages read it back with :meth:`rlsae.study.engine.Context.result`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from rlsae.analysis.fit import FitResult
from rlsae.analysis.report import RLHFSummary
from rlsae.artifacts import Artifact
from rlsae.sae.config import TrainConfig

# --------------------------------------------------------------------------------------------
# The dead-features study (rlsae.study.atari)


@dataclass
class TrainRun(Artifact):
    """A finished training run."""

    FORMAT: ClassVar[str] = "rlsae.study_train"
    VERSION: ClassVar[int] = 1
    run: str
    seed: int
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class Recording(Artifact):
    """An agent's activation store."""

    FORMAT: ClassVar[str] = "rlsae.study_recording"
    VERSION: ClassVar[int] = 1
    path: str
    """Relative to the run directory."""
    rows: int
    d_in: int


@dataclass
class TrainedSAE(Artifact):
    """An agent's SAE, how it was trained and its final evaluation over the store."""

    FORMAT: ClassVar[str] = "rlsae.study_sae"
    VERSION: ClassVar[int] = 1
    path: str
    """Relative to the run directory."""
    train_config: TrainConfig
    """The settings it was trained with."""
    train_seconds: float
    """Seconds this stage spent training (0 when a finished SAE was found)."""
    final: dict[str, Any] = field(default_factory=dict)
    """Its final evaluation over the whole store (the fields of ``rlsae.sae_metrics``, kept as
    a mapping so that reading a marker never imports torch)."""


@dataclass
class LiveFeatures(Artifact):
    """Live and dead latents over every recorded row, with the SAE's reconstruction metrics."""

    FORMAT: ClassVar[str] = "rlsae.study_live"
    VERSION: ClassVar[int] = 1
    live: int
    dead: int
    d_sae: int
    live_threshold: int
    rows: int
    firing_counts_q10_q50_q90: list[float]
    source_of_counts: str
    """``feature_stats.safetensors`` (written by training) or ``evaluate_sae`` (recomputed)."""
    fvu: float | None = None
    """None when the activations do not vary."""
    explained_variance: float | None = None
    mse: float | None = None
    l0: float | None = None
    dense: int | None = None

    @classmethod
    def count(cls, counts: Any, threshold: int, metrics: Any, source: str) -> LiveFeatures:
        """From per-latent firing counts over ``metrics.rows`` rows (an ``SAEMetrics``): the
        latents firing at least ``threshold`` times are live; the counts' 10/50/90% quantiles
        and the reconstruction metrics are kept beside them."""
        import torch

        from rlsae.sae.metrics import live_feature_count

        c = torch.as_tensor(counts)
        live = live_feature_count(c, threshold)
        q = torch.quantile(c.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
        return cls(
            live=live, dead=int(c.numel() - live), d_sae=int(c.numel()),
            live_threshold=threshold, rows=metrics.rows,
            firing_counts_q10_q50_q90=[float(v) for v in q], source_of_counts=source,
            fvu=metrics.fvu, explained_variance=metrics.explained_variance, mse=metrics.mse,
            l0=metrics.l0, dense=metrics.dense,
        )  # fmt: skip


@dataclass
class AgentConcepts(Artifact):
    """How much of Ms. Pac-Man's game state an agent's SAE features capture: the summary of
    ``SAE_DIR/concepts.json`` (an :class:`rlsae.agents.concepts.ConceptMatches`)."""

    FORMAT: ClassVar[str] = "rlsae.study_concepts"
    VERSION: ClassVar[int] = 1
    path: str | None = None
    """The matches file, relative to the run directory (None when not matched: see ``note``)."""
    coverage: float | None = None
    """Fraction of live features whose best concept match has AUROC >= ``coverage_auroc``."""
    coverage_auroc: float = 0.9
    live_features: int | None = None
    """Features that fire on at least one of the matched rows."""
    rows: int | None = None
    """Rows matched."""
    note: str | None = None
    """Why the agent was not matched (e.g. a nature-mode recording, whose RAM cannot be
    regenerated)."""


@dataclass
class AgentsTable(Artifact):
    """``analysis/agents.csv``: one row per agent with every finished stage's numbers."""

    FORMAT: ClassVar[str] = "rlsae.study_table"
    VERSION: ClassVar[int] = 1
    path: str
    agents: list[str]
    columns: list[str]


@dataclass
class FitOutcome(Artifact):
    """The fit across agents (also ``analysis/fit_live_vs_return.json``), or why there is none."""

    FORMAT: ClassVar[str] = "rlsae.study_fit"
    VERSION: ClassVar[int] = 1
    fit: FitResult | None = None
    error: str | None = None
    coverage_fit: FitResult | None = None
    """``fit.y`` against the SAEs' concept coverage (``analysis/fit_coverage_vs_return.json``),
    when at least four agents have a coverage that varies."""
    coverage_error: str | None = None
    """Why there is no coverage fit."""


@dataclass
class Report(Artifact):
    """``analysis/report.html``."""

    FORMAT: ClassVar[str] = "rlsae.study_report"
    VERSION: ClassVar[int] = 1
    path: str


# --------------------------------------------------------------------------------------------
# The implicit-reward-model study (rlsae.study.llm)


@dataclass
class BaseModel(Artifact):
    """The base model and the documents the later stages read."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_base"
    VERSION: ClassVar[int] = 1
    ref: str
    """Hub name or model directory."""
    data: str
    """Documents for activations and scoring."""


@dataclass
class TunedModel(Artifact):
    """The RLHF-tuned model and what its run recorded."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_tuned"
    VERSION: ClassVar[int] = 1
    ref: str
    rlhf: RLHFSummary = field(default_factory=RLHFSummary)


@dataclass
class ChosenLayers(Artifact):
    """The most divergent layers (``analysis/divergence.json`` holds every layer's Δ)."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_layers"
    VERSION: ClassVar[int] = 1
    layers: list[int]


@dataclass
class Stores(Artifact):
    """The activation stores of the chosen layers, by layer: their directory names."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_stores"
    VERSION: ClassVar[int] = 1
    hooks: dict[str, str]


@dataclass
class SAEEntry:
    """One SAE of a pair."""

    source: str
    layer: int
    size: str
    path: str
    """Relative to the model's directory."""


@dataclass
class SAEPairs(Artifact):
    """Every SAE of the study's pairs (base and tuned x layer x large and small)."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_saes"
    VERSION: ClassVar[int] = 1
    saes: list[SAEEntry]

    def path(self, source: str, layer: int, size: str) -> str:
        return next(
            e.path for e in self.saes if (e.source, e.layer, e.size) == (source, layer, size)
        )


@dataclass
class FilesWritten(Artifact):
    """A stage whose result is files (paths relative to the model's directory)."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_files"
    VERSION: ClassVar[int] = 1
    files: list[str]


@dataclass
class Tables(Artifact):
    """Tables 3 and 4 of one model: summed |utility| of features and of completions."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_tables"
    VERSION: ClassVar[int] = 1
    table3: dict[str, float | None]
    table4: dict[str, float | None]


@dataclass
class Combined(Artifact):
    """The combined tables of a study of several models (None for one model)."""

    FORMAT: ClassVar[str] = "rlsae.llm_study_combined"
    VERSION: ClassVar[int] = 1
    utility_md: str | None = None
