"""Executors for a study's per-unit tasks: serially, on a local process pool, or on Ray.

A task is a picklable callable ``fn(run_dir, unit)`` (the engine's
:func:`rlsae.study.engine.run_unit` bound to a study, its config and a group of stages) that
writes its results into the run directory, so the results are the same whichever executor ran
them. On a Ray cluster the run directory must be on a file system every node sees (NFS, a shared
volume).

Example::

    eng = make_engine("ray", address="auto", resources=ResourcesConfig(cpus=2, gpus=0.25))
    results = eng.map(task, "runs/big", agents, label="agents")
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from rlsae.errors import RlsaeError

ENGINES = ("serial", "local", "ray")

Work = Callable[[str, Any], Any]


def _name(spec: Any) -> str:
    if isinstance(spec, dict):
        return str(spec.get("name", spec))
    return str(getattr(spec, "name", spec))


def _call(fn: Work, run_dir: str, spec: Any, cpus: float) -> Any:
    """What a worker runs: thread count from the resource request, then the work."""
    # rlsae.threads imports torch: only a worker needs it (a finished study resumed never does)
    from rlsae.threads import torch_threads

    with torch_threads(max(1, int(cpus))):
        return fn(run_dir, spec)


def _raise_failures(failures: list[tuple[str, str]], label: str) -> None:
    if failures:
        first = "; ".join(f"{n}: {m}" for n, m in failures[:3])
        more = f" (and {len(failures) - 3} more)" if len(failures) > 3 else ""
        raise RlsaeError(
            f"{len(failures)} {label} task(s) failed: {first}{more}; finished work is kept, "
            "re-run with --resume to continue"
        )


def _progress(total: int, label: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=label, file=sys.stderr, disable=total == 0, leave=False)


class SerialEngine:
    """Runs every task in this process, one after another."""

    name = "serial"

    def __init__(self, resources: Any = None) -> None:
        self.resources = resources

    def map(
        self,
        fn: Work,
        run_dir: str | os.PathLike,
        specs: list[Any],
        label: str = "tasks",
    ) -> list[Any]:
        results: list[Any] = []
        failures: list[tuple[str, str]] = []
        with _progress(len(specs), label) as bar:
            for spec in specs:
                try:
                    results.append(fn(str(run_dir), spec))
                except RlsaeError as e:
                    failures.append((_name(spec), str(e)))
                bar.update(1)
        _raise_failures(failures, label)
        return results

    def close(self) -> None:
        pass


def die_with_parent() -> None:
    """Pool-worker initializer: on Linux, ask the kernel to kill this worker when the study's
    process dies. Without it a ``kill -9``'d study leaves its workers running, and they keep
    writing into the run directory while ``--resume`` runs the same stages (issue 18)."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # pragma: no cover - no prctl: nothing to ask for
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


class LocalEngine:
    """A process pool (``spawn`` start method, so torch state is never forked)."""

    name = "local"

    def __init__(self, workers: int | None = None, resources: Any = None) -> None:
        import multiprocessing as mp

        cpus = getattr(resources, "cpus", 1.0) or 1.0
        self.cpus = cpus
        self.workers = workers or max(1, int((os.cpu_count() or 1) // max(1, int(cpus))))
        self._ctx = mp.get_context("spawn")
        self._pool: ProcessPoolExecutor | None = None

    @property
    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:  # started on first use: no idle workers for single tasks
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=self._ctx, initializer=die_with_parent
            )
        return self._pool

    def map(
        self,
        fn: Work,
        run_dir: str | os.PathLike,
        specs: list[Any],
        label: str = "tasks",
    ) -> list[Any]:
        if len(specs) <= 1:  # one task: run it here, with all of this process's threads
            return SerialEngine().map(fn, run_dir, specs, label)
        futs: dict[Future[Any], Any] = {
            self.pool.submit(_call, fn, str(run_dir), spec, self.cpus): spec for spec in specs
        }
        results: list[Any] = []
        failures: list[tuple[str, str]] = []
        with _progress(len(specs), label) as bar:
            for fut in as_completed(futs):
                try:
                    results.append(fut.result())
                except RlsaeError as e:
                    failures.append((_name(futs[fut]), str(e)))
                bar.update(1)
        _raise_failures(failures, label)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


class RayEngine:
    """One Ray task per unit of work, each asking for ``resources.cpus`` CPUs and ``.gpus`` GPUs.

    Connects to ``address`` (``"auto"`` or ``ray://host:10001``) or, without one, starts a local
    Ray instance and stops it again on :meth:`close`. If Ray is already initialised in this
    process it is used as it is and left running.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, resources: Any = None, workers: int | None = None
    ) -> None:
        try:
            import ray
        except ImportError:
            raise RlsaeError("the ray engine needs Ray: pip install 'rlsae[ray]'") from None
        self.ray = ray
        self.cpus = float(getattr(resources, "cpus", 1.0))
        self.gpus = float(getattr(resources, "gpus", 0.0))
        self.owns = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address:
                kw["address"] = address
            elif workers:
                kw["num_cpus"] = int(workers * max(1.0, self.cpus))
            try:
                ray.init(**kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RlsaeError(
                    f"cannot start or reach Ray at {address or 'local'}: {e}"
                ) from None
            self.owns = True
        self._remote = ray.remote(_call)

    def map(
        self,
        fn: Work,
        run_dir: str | os.PathLike,
        specs: list[Any],
        label: str = "tasks",
    ) -> list[Any]:
        ray = self.ray
        opts = {"num_cpus": self.cpus, "num_gpus": self.gpus, "max_retries": 0}
        refs = {
            self._remote.options(**opts).remote(
                fn, str(Path(run_dir).resolve()), spec, self.cpus
            ): spec
            for spec in specs
        }
        results: list[Any] = []
        failures: list[tuple[str, str]] = []
        pending = list(refs)
        with _progress(len(specs), label) as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayTaskError as e:
                        cause = e.cause if getattr(e, "cause", None) is not None else e
                        if not isinstance(cause, RlsaeError):
                            raise
                        failures.append((_name(refs[ref]), str(cause)))
                    bar.update(1)
        _raise_failures(failures, label)
        return results

    def close(self) -> None:
        if self.owns:
            self.ray.shutdown()


def check_engine(engine: str, address: str | None = None) -> None:
    """Refuse an unknown engine, or ``address`` without Ray, before anything is written."""
    if engine not in ENGINES:
        raise RlsaeError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if address and engine != "ray":
        raise RlsaeError("--address is for --engine ray")


def make_engine(
    engine: str, *, workers: int | None = None, address: str | None = None, resources: Any = None
) -> SerialEngine | LocalEngine | RayEngine:
    """``serial``, ``local`` (process pool) or ``ray``."""
    if engine == "serial":
        return SerialEngine(resources)
    if engine == "local":
        if workers == 1:
            return SerialEngine(resources)
        return LocalEngine(workers, resources)
    if engine == "ray":
        return RayEngine(address, resources, workers)
    raise RlsaeError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
