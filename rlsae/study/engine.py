"""The study engine: a study is a config class, its presets and a table of stages.

A study declares *what* to compute; the engine decides *what is due* and runs it::

    STUDY = Study(
        kind="my-study",                       # run.json's kind: a run directory holds one study
        config=MyConfig,                       # a dataclass with docstrings (rlsae.configs)
        presets={"smoke": {...}, "demo": {...}},
        units=(Units("agent", list_agents, markers="analysis/agents/{unit}"),),
        stages=(
            Stage("eval", eval_agent, EvalResult, per="agent"),
            Stage("table", write_table, TableResult, after=("eval",)),
        ),
    )
    outcome = run(STUDY, cfg, "runs/x", resume=True)

A :class:`Stage` runs once per study (``per=None``) or once per unit of a :class:`Units` kind
(an agent, a model). Its function gets a :class:`Context` (and the unit) and returns a typed
result (an :class:`~rlsae.artifacts.Artifact`); the engine writes it into the stage's marker,
a :class:`StageMarker` at ``analysis/stages/STAGE.json`` (per-study) or under the unit's marker
directory. Later stages read earlier results with :meth:`Context.result`.

**When a stage runs.** A stage is done when its marker exists and the markers of the stages it
depends on (``after``) are the ones it was computed from (each marker has a fresh ``token``; a
marker records the tokens of its inputs). So a finished stage is never redone; deleting a marker
reruns that stage, and then the stages that consumed it; a finished study resumed runs nothing,
starts no worker pool and writes no file.

**The run directory** belongs to one study and config: ``run.json`` (a :class:`RunInfo`) holds
the kind, the config, its hash, versions and git commit. Resuming with another config is refused
in one line naming the differing keys; a directory that holds anything else is refused.

Per-unit stages that follow each other form one task per unit, run by an executor
(:mod:`rlsae.study.sweep`: serial, a local process pool, or Ray); everything is written into the
run directory, so the results are the same whichever executor ran them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from rlsae.artifacts import Artifact
from rlsae.configs import config_hash, differing_keys, from_mapping, load_mapping, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import read_json
from rlsae.provenance import git_commit, package_versions

C = TypeVar("C")
A = TypeVar("A", bound=Artifact)

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


class Unit(Protocol):
    """One unit of per-unit work (an agent, a model): picklable, with a unique ``name``."""

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class Stage:
    """One step of a study: ``run(ctx)`` (per study) or ``run(ctx, unit)`` returns ``result``."""

    name: str
    """Unique in its study; the marker's file name (``NAME.json``)."""
    run: Callable[..., Artifact]
    """``run(ctx)`` or ``run(ctx, unit)``: does the work and returns the typed result."""
    result: type[Artifact]
    """The result's class; its marker is read back as this."""
    after: tuple[str, ...] = ()
    """Stages whose results this one reads (it reruns when one of them was redone)."""
    per: str | None = None
    """``None``: once per study; else the name of a :class:`Units` kind."""
    skip_if: Callable[[Any], bool] | None = None
    """``skip_if(config)`` true: the stage is off for this config (no marker, no input)."""

    def off(self, cfg: Any) -> bool:
        return self.skip_if is not None and bool(self.skip_if(cfg))


@dataclass(frozen=True)
class Units:
    """A kind of unit: how to list them (when first needed) and where their markers go."""

    name: str
    """The kind's name (``agent``, ``model``), used in ``Stage.per`` and in messages."""
    list: Callable[[Context[Any]], Sequence[Unit]]
    """``list(ctx)``: the units, in order, once the stages before them are done."""
    markers: str = "analysis/stages/{kind}/{unit}"
    """Marker directory of a unit, relative to the run directory."""


@dataclass(frozen=True)
class Study(Generic[C]):
    """A study declared on the engine: its config class, presets, units and stages."""

    kind: str
    """What run.json calls it; a run directory holds one kind of study."""
    config: type[C]
    """The config dataclass (built and validated by :func:`rlsae.configs.from_mapping`)."""
    stages: tuple[Stage, ...]
    """In order; a stage may read only those before it."""
    units: tuple[Units, ...] = ()
    """The kinds of unit its per-unit stages run over."""
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Named configs, as mappings in the config file's format."""
    versions: tuple[str, ...] = ("rlsae", "torch", "numpy")
    """Distributions whose versions run.json records."""

    def __post_init__(self) -> None:
        seen: set[str] = set()
        kinds = {u.name for u in self.units}
        for s in self.stages:
            if s.name in seen:
                raise ValueError(f"{self.kind}: stage {s.name!r} declared twice")
            if s.per is not None and s.per not in kinds:
                raise ValueError(f"{self.kind}: stage {s.name!r} is per unknown kind {s.per!r}")
            for dep in s.after:
                if dep not in seen:
                    raise ValueError(f"{self.kind}: stage {s.name!r} after unknown {dep!r}")
            seen.add(s.name)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)

    def unit_kind(self, name: str) -> Units:
        return next(u for u in self.units if u.name == name)

    def with_stage(self, stage: Stage) -> Study[C]:
        """This study with ``stage`` replacing the one of the same name, or appended."""
        names = [s.name for s in self.stages]
        if stage.name in names:
            stages = tuple(stage if s.name == stage.name else s for s in self.stages)
        else:
            stages = (*self.stages, stage)
        return dataclasses.replace(self, stages=stages)

    def groups(self) -> list[tuple[str | None, list[Stage]]]:
        """Consecutive stages of the same ``per``: one task per unit runs a group's stages."""
        out: list[tuple[str | None, list[Stage]]] = []
        for s in self.stages:
            if out and out[-1][0] == s.per and s.per is not None:
                out[-1][1].append(s)
            else:
                out.append((s.per, [s]))
        return out


# --------------------------------------------------------------------------------------------
# Artifacts of the engine


@dataclass
class StageMarker(Artifact):
    """A finished stage: its typed result and what it was computed from."""

    FORMAT: ClassVar[str] = "rlsae.stage"
    VERSION: ClassVar[int] = 1

    stage: str
    unit: str | None
    token: str
    """Fresh for every run of the stage; dependents record it in their ``inputs``."""
    inputs: dict[str, str]
    """``{"stage" or "stage/unit": token}`` of the markers this result was computed from."""
    seconds: float
    finished: str
    result: dict[str, Any]
    """The stage's result artifact (its own ``format`` and ``version`` inside)."""
    cpu_seconds: float | None = None
    """CPU time of the process running the stage, all its threads (the emulators' and torch's)
    together (``time.process_time``); ``None`` in markers written before it was kept."""


@dataclass
class RunInfo(Artifact):
    """``run.json``: which study owns the run directory, with what config, from which code."""

    FORMAT: ClassVar[str] = "rlsae.run"
    VERSION: ClassVar[int] = 1

    kind: str
    study: str
    source: str
    """``preset:NAME``, a config file, or ``config`` (the Python API)."""
    config: dict[str, Any]
    config_hash: str
    versions: dict[str, str]
    git_commit: str | None
    created: str
    status: str = "running"
    finished: str | None = None
    units: dict[str, list[str]] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Configs: presets, files, printing


def resolve_config(study: Study[C], preset_or_path: Any) -> tuple[C, str]:
    """A preset name, a YAML/TOML file, or a config object -> (validated config, its source)."""
    if isinstance(preset_or_path, study.config):
        cfg = from_mapping(study.config, to_mapping(preset_or_path), "config")
        return cfg, "config"
    s = os.fspath(preset_or_path)
    if s in study.presets:
        return from_mapping(study.config, dict(study.presets[s]), f"preset {s}"), f"preset:{s}"
    path = Path(s)
    if path.suffix in CONFIG_SUFFIXES or path.exists():
        return from_mapping(study.config, load_mapping(path), str(path)), str(path)
    raise RlsaeError(
        f"unknown preset {s!r}; use one of {', '.join(study.presets)} or a YAML/TOML config file"
    )


def config_yaml(cfg: Any) -> str:
    """The config as YAML (what ``--print-config`` prints; loads back to the same config)."""
    import yaml

    return yaml.safe_dump(to_mapping(cfg), sort_keys=False).rstrip() + "\n"


# --------------------------------------------------------------------------------------------
# The run directory


def _same_with_defaults(recorded: Any, cfg: Any, want: str) -> bool:
    """True when ``recorded`` (an older ``run.json`` config) is ``cfg`` once the fields added
    since take their defaults: a run made before a new (default-preserving) option keeps
    resuming. A recorded config that no longer parses is simply different."""
    try:
        return config_hash(from_mapping(type(cfg), recorded, "run.json")) == want
    except (RlsaeError, TypeError, ValueError):
        return False


def open_run(
    study: Study[C], cfg: C, run_dir: str | os.PathLike, source: str, resume: bool
) -> RunInfo:
    """Create the run directory, or re-open one this study and config own; refuse anything else.

    Nothing is created or changed when refused.
    """
    run = Path(run_dir)
    path = run / "run.json"
    want = config_hash(cfg)
    if path.exists():
        raw = read_json(path)
        kind = raw.get("kind") if isinstance(raw, dict) else None
        if kind != study.kind:
            raise RlsaeError(
                f"{run} holds a {kind or 'different'!r} run, not a {study.kind}; "
                "choose another --out"
            )
        info = RunInfo.from_json(raw, str(path))
        if info.config_hash != want and not _same_with_defaults(info.config, cfg, want):
            keys = differing_keys(info.config, to_mapping(cfg))
            shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
            raise RlsaeError(
                f"{run} belongs to another study ({info.study!r} from {info.source}, config "
                f"{info.config_hash}); it differs in {shown or 'the config'}; choose another --out"
            )
        if not resume:
            raise RlsaeError(f"{run} already holds this study; pass --resume to continue it")
        return info
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        raise RlsaeError(f"{run} exists and is not a study run directory; choose another --out")
    info = RunInfo(
        kind=study.kind,
        study=str(getattr(cfg, "name", study.kind)),
        source=source,
        config=to_mapping(cfg),
        config_hash=want,
        versions=package_versions(*study.versions),
        git_commit=git_commit(),
        created=_now(),
    )
    run.mkdir(parents=True, exist_ok=True)
    info.write(path)
    return info


# --------------------------------------------------------------------------------------------
# Running stages


@dataclass
class Context(Generic[C]):
    """What a stage function sees: the study, its config and the run directory."""

    study: Study[C]
    config: C
    run_dir: Path
    progress: bool = True
    """Whether long stages show progress bars (never changes a result)."""
    _units: dict[str, list[Unit]] = field(default_factory=dict, repr=False)

    def units(self, kind: str) -> list[Unit]:
        """The units of ``kind`` (listed once, when first asked for)."""
        if kind not in self._units:
            self._units[kind] = list(self.study.unit_kind(kind).list(self))
        return self._units[kind]

    def marker_path(self, stage: str, unit: str | None = None) -> Path:
        st = self.study.stage(stage)
        if st.per is None:
            return self.run_dir / "analysis" / "stages" / f"{stage}.json"
        if unit is None:
            raise ValueError(f"stage {stage!r} is per {st.per}: name the unit")
        rel = self.study.unit_kind(st.per).markers.format(kind=st.per, unit=unit)
        return self.run_dir / rel / f"{stage}.json"

    def marker(self, stage: str, unit: str | None = None) -> StageMarker | None:
        path = self.marker_path(stage, unit)
        return StageMarker.read(path) if path.is_file() else None

    def result(self, cls: type[A], stage: str, unit: str | None = None) -> A:
        """The typed result of a finished stage (``unit``: for per-unit stages)."""
        st = self.study.stage(stage)
        if not issubclass(st.result, cls):
            raise TypeError(f"stage {stage!r} gives {st.result.__name__}, not {cls.__name__}")
        m = self.marker(stage, unit)
        if m is None:
            raise RlsaeError(f"stage {stage}{f' of {unit}' if unit else ''} has not run yet")
        return cls.from_json(m.result, str(self.marker_path(stage, unit)))

    def inputs(self, stage: Stage, unit: str | None) -> dict[str, str] | None:
        """Tokens of the markers ``stage`` reads (``None`` when one of them is missing)."""
        out: dict[str, str] = {}
        for dep in stage.after:
            if self.study.stage(dep).off(self.config):
                continue
            per = self.study.stage(dep).per
            keys: list[tuple[str, str | None]]
            if per is None:
                keys = [(dep, None)]
            elif per == stage.per:
                keys = [(dep, unit)]
            else:
                keys = [(dep, u.name) for u in self.units(per)]
            for d, u in keys:
                m = self.marker(d, u)
                if m is None:
                    return None
                out[d if u is None else f"{d}/{u}"] = m.token
        return out

    def is_done(self, stage: Stage, unit: str | None = None) -> bool:
        """Nothing due: off for this config, or its marker exists and was computed from the
        current inputs (callers that report what happened ask :meth:`Stage.off` first)."""
        if stage.off(self.config):
            return True
        m = self.marker(stage.name, unit)
        return m is not None and m.inputs == self.inputs(stage, unit)

    def run_stage(self, stage: Stage, unit: Unit | None = None) -> None:
        """Run ``stage`` (for ``unit``) and write its marker."""
        name = None if unit is None else unit.name
        inputs = self.inputs(stage, name)
        if inputs is None:
            raise RlsaeError(f"stage {stage.name}: an earlier stage has not finished")
        t0, c0 = time.perf_counter(), time.process_time()
        result = stage.run(self) if unit is None else stage.run(self, unit)
        if not isinstance(result, stage.result):
            raise TypeError(f"stage {stage.name} returned {type(result).__name__}")
        StageMarker(
            stage=stage.name,
            unit=name,
            token=uuid.uuid4().hex,
            inputs=inputs,
            seconds=time.perf_counter() - t0,
            finished=_now(),
            result=result.to_json(),
            cpu_seconds=time.process_time() - c0,
        ).write(self.marker_path(stage.name, name))


@dataclass
class UnitOutcome:
    """What one unit's task did (returned by a worker)."""

    name: str
    done: list[str]
    skipped: list[str]
    pid: int


def run_unit(
    study: Study[C], cfg: C, stages: Sequence[str], progress: bool, run_dir: str, unit: Unit
) -> UnitOutcome:
    """A group of per-unit stages for one unit, skipping those done: one executor task.
    Stages off for ``cfg`` are neither run nor skipped (the caller reports them as off)."""
    ctx = Context(study, cfg, Path(run_dir), progress)
    done, skipped = [], []
    for name in stages:
        stage = study.stage(name)
        if stage.off(cfg):
            continue
        if ctx.is_done(stage, unit.name):
            skipped.append(name)
            continue
        try:
            ctx.run_stage(stage, unit)
        except RlsaeError as e:
            raise RlsaeError(f"{stage.per} {unit.name}, stage {name}: {e}") from None
        done.append(name)
    return UnitOutcome(unit.name, done, skipped, os.getpid())


class Executor(Protocol):
    """Runs ``fn(run_dir, spec)`` for every spec (see :mod:`rlsae.study.sweep`)."""

    def map(
        self,
        fn: Callable[[str, Any], Any],
        run_dir: str | os.PathLike,
        specs: list[Any],
        label: str,
    ) -> list[Any]: ...

    def close(self) -> None: ...


@dataclass
class Outcome:
    """What a run of the engine did, per kind (``study`` or a unit kind): stages run, stages
    skipped (already done) and stages off (switched off by the config's ``skip_if``: not run and
    not counted as done). ``STAGE`` or ``STAGE/UNIT`` each."""

    run_dir: Path
    info: RunInfo
    ran: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    off: dict[str, list[str]] = field(default_factory=dict)
    worker_pids: dict[str, set[int]] = field(default_factory=dict)
    """Processes that ran each kind's tasks."""
    seconds: float = 0.0

    def count(self, kind: str, what: str = "ran") -> int:
        return len(getattr(self, what).get(kind, []))


def run(
    study: Study[C],
    cfg: C,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    source: str = "config",
    executor: Callable[[], Executor] | None = None,
    progress: bool = True,
    around_work: Callable[[], AbstractContextManager[Any]] | None = None,
) -> Outcome:
    """Run (or resume) ``study`` with ``cfg`` in ``run_dir``: every stage that is not done.

    ``executor`` makes the executor for per-unit tasks; it is called only when some unit has
    work to do (default: in this process, one unit after another). ``around_work`` makes a
    context entered before the first stage that runs and left at the end (e.g. a torch thread
    count); neither is made when nothing is due.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    info = open_run(study, cfg, run_dir, source, resume)
    ctx = Context(study, cfg, run_dir, progress)
    out = Outcome(run_dir, info)
    ex: Executor | None = None
    started: list[bool] = []
    with ExitStack() as work:

        def start() -> None:  # the work context, once, when the first stage is due
            if around_work is not None and not started:
                work.enter_context(around_work())
            started.append(True)

        for per, stages in study.groups():
            if per is None:
                if not stages[0].off(cfg) and not ctx.is_done(stages[0]):
                    start()
                _run_study_stage(ctx, stages[0], out)
                continue
            pending = _pending_units(ctx, per, stages, out)
            if pending:
                start()
                if ex is None:
                    ex = executor() if executor is not None else _InProcess()
                    work.callback(ex.close)
                names = [s.name for s in stages]
                task = functools.partial(run_unit, study, cfg, names, progress)
                for r in ex.map(task, str(run_dir), pending, per + "s"):
                    out.ran.setdefault(per, []).extend(f"{s}/{r.name}" for s in r.done)
                    out.skipped.setdefault(per, []).extend(f"{s}/{r.name}" for s in r.skipped)
                    out.worker_pids.setdefault(per, set()).add(r.pid)
    units = {k: [u.name for u in v] for k, v in ctx._units.items()}
    if out.ran or info.status != "finished" or info.units != units:
        info = dataclasses.replace(info, status="finished", finished=_now(), units=units)
        info.write(run_dir / "run.json")
        out.info = info
    out.seconds = time.perf_counter() - t0
    return out


def _run_study_stage(ctx: Context[Any], stage: Stage, out: Outcome) -> None:
    if stage.off(ctx.config):
        out.off.setdefault("study", []).append(stage.name)
        return
    if ctx.is_done(stage):
        out.skipped.setdefault("study", []).append(stage.name)
        return
    ctx.run_stage(stage)
    out.ran.setdefault("study", []).append(stage.name)


def _pending_units(ctx: Context[Any], per: str, stages: list[Stage], out: Outcome) -> list[Unit]:
    """The units with a stage of ``stages`` due; off stages are reported as off for every unit,
    the stages of units with nothing due as skipped."""
    pending = []
    off = [s for s in stages if s.off(ctx.config)]
    on = [s for s in stages if not s.off(ctx.config)]
    for unit in ctx.units(per):
        out.off.setdefault(per, []).extend(f"{s.name}/{unit.name}" for s in off)
        if all(ctx.is_done(s, unit.name) for s in on):
            out.skipped.setdefault(per, []).extend(f"{s.name}/{unit.name}" for s in on)
        else:
            pending.append(unit)
    return pending


class _InProcess:
    """The default executor: every task here, one after another."""

    def map(
        self,
        fn: Callable[[str, Any], Any],
        run_dir: str | os.PathLike,
        specs: list[Any],
        label: str,
    ) -> list[Any]:
        return [fn(str(run_dir), spec) for spec in specs]

    def close(self) -> None:
        pass


def load_config(study: Study[C], path: str | os.PathLike) -> C:
    """A study config from a YAML or TOML file (one-line errors naming the file and key)."""
    return from_mapping(study.config, load_mapping(path), str(path))
