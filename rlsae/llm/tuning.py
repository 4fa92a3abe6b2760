"""What PPO and RLOO runs share: the reward, the prefixes, the log, the tuned model, the result.

Both :mod:`rlsae.llm.ppo_run` and :mod:`rlsae.llm.rloo` write a run directory through these
helpers (layout in :mod:`rlsae.llm.rlhf`); :class:`RLHFResult` is its ``result.json``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rlsae.artifacts import Artifact
from rlsae.configs import differing_keys, to_mapping
from rlsae.errors import RlsaeError
from rlsae.fsutil import atomic_dir, atomic_write_bytes, atomic_write_json, read_json
from rlsae.llm.configs import RLHFConfig
from rlsae.llm.data import check_data_source, check_fits_context, load_texts, make_prefixes
from rlsae.llm.models import quiet_loading, resolve_model_ref
from rlsae.llm.rewards import (
    ClassifierReward,
    ClassifierRewardConfig,
    RewardFn,
    UtilityReward,
    UtilityRewardConfig,
    UtilityTable,
)
from rlsae.provenance import package_versions

StepCallback = Callable[[int, dict[str, float]], None]
"""``callback(step, stats)``, called after every step of a run."""


@dataclass
class RLHFResult(Artifact):
    """A finished tuning run (``result.json``)."""

    FORMAT: ClassVar[str] = "rlsae.rlhf_result"
    VERSION: ClassVar[int] = 1

    model_dir: str
    """The tuned model (Hugging Face format)."""
    base_model: str
    """The base model it was tuned from."""
    algo: str
    """'ppo' or 'rloo'."""
    reward: str
    """'utility' or 'sentiment'."""
    steps: int
    """Updates run."""
    reward_first: float | None
    """Mean reward of step 1 (sampled from the untouched base model: the reward before tuning)."""
    reward_last: float | None
    """Mean reward over the last (up to) 5 steps, to smooth batch-to-batch noise."""
    kl_last: float | None
    """KL to the base model at the last step (nats per completion); None if not logged."""
    seconds: float
    """Wall time of the run (resumed parts included)."""
    log: str
    """The per-step log (log.json)."""
    curve: str
    """The plotly curve (curve.html)."""


RESUMABLE_CHANGES = ("steps", "checkpoint_every")
"""Settings a resumed run may change (more steps; another checkpoint interval)."""


def preflight(cfg: RLHFConfig, out: Path, resume: bool) -> None:
    """Every check of a run that needs no model: the config, ``out`` (and the resumed run's
    config), the model and data references, the utility table or classifier reference.
    Cheap and torch-free: the CLI calls it before importing torch; nothing is written."""
    cfg.validate()
    check_out(out, cfg, resume)
    resolve_model_ref(cfg.model)
    check_data_source(cfg.data)
    if cfg.reward == "utility":
        UtilityTable.load(cfg.table)
    else:
        resolve_model_ref(cfg.classifier)


def check_out(out: Path, cfg: RLHFConfig, resume: bool) -> None:
    """Refuse an ``out`` that holds another run, or (``resume``) a run of another config.

    Writes nothing: :func:`start_run` writes ``rlhf.json`` once the models have loaded.
    """
    if not (out.exists() and any(out.iterdir())):
        return
    if not out.is_dir():
        raise RlsaeError(f"{out} is a file, not a run directory; choose another --out")
    if not resume:
        raise RlsaeError(
            f"{out} already holds a run; pass --resume to continue it or another --out"
        )
    meta = out / "rlhf.json"
    if not meta.is_file():
        raise RlsaeError(f"{out} is not an RLHF run directory (no rlhf.json); choose another --out")
    run_meta = read_json(meta)
    old = run_meta.get("config")
    if not isinstance(old, dict):
        raise RlsaeError(f"{meta} has no config; it is not an RLHF run directory")
    new = to_mapping(cfg)
    keys = [k for k in differing_keys(old, new) if k not in RESUMABLE_CHANGES]
    if keys:
        what = "; ".join(f"{k} was {_at(old, k)!r}, now {_at(new, k)!r}" for k in keys)
        raise RlsaeError(f"cannot resume {out}: {what}; use the same options")
    inputs = run_meta.get("inputs") or {}
    now = input_fingerprints(cfg)
    changed = [k for k in now if k in inputs and inputs[k] != now[k]]
    if changed:
        raise RlsaeError(
            f"cannot resume {out}: the contents of {', '.join(changed)} changed since the run "
            "began; restore them or start a new run in another --out"
        )


def input_fingerprints(cfg: RLHFConfig) -> dict[str, str]:
    """What a run reads besides its config, fingerprinted: the base model (a directory's
    files, or the hub name), a data file, a utility table file, a classifier directory."""
    fps = {"model": fingerprint(cfg.model)}
    if cfg.data not in ("auto", "imdb"):
        fps["data"] = fingerprint(cfg.data)
    if cfg.reward == "utility" and cfg.table.lower() != "vader":
        fps["table"] = fingerprint(cfg.table)
    elif cfg.reward == "sentiment":
        fps["classifier"] = fingerprint(cfg.classifier)
    return fps


def fingerprint(ref: str, sample: int = 1 << 20) -> str:
    """A content fingerprint of a file or a directory's files (name, size, first and last MiB
    of each: fast on large weights), or ``hub:NAME`` for anything that is not a local path."""
    path = Path(ref).expanduser()
    if not path.exists():
        return f"hub:{ref}"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        if any(part.startswith(".") for part in f.relative_to(path.parent).parts):
            continue  # hidden files and the temp files of interrupted writes
        size = f.stat().st_size
        h.update(f"{f.relative_to(path)}\0{size}\0".encode())
        with open(f, "rb") as fh:
            h.update(fh.read(sample))
            if size > 2 * sample:
                fh.seek(size - sample)
                h.update(fh.read(sample))
    return h.hexdigest()[:16]


def _at(mapping: dict[str, Any], dotted: str) -> Any:
    value: Any = mapping
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def start_run(out: Path, cfg: RLHFConfig) -> None:
    """Create ``out``, clear what a killed run left half-written, write ``rlhf.json``."""
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.glob(".*"):  # .checkpoint.tmp-*, .model.old-*, .log.json.* of a kill -9
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    atomic_write_json(
        out / "rlhf.json",
        {
            "config": to_mapping(cfg),
            "inputs": input_fingerprints(cfg),
            "versions": package_versions("rlsae", "torch", "transformers", "trl"),
        },
    )


def make_reward_fn(cfg: RLHFConfig) -> RewardFn:
    """The reward callable ``(prefixes, completions) -> list[float]`` the config asks for.

    A utility table is read (and so checked) here: call it before anything is written.
    """
    if cfg.reward == "sentiment":
        return ClassifierReward(
            ClassifierRewardConfig(model=cfg.classifier, completion_only=cfg.completion_only)
        )
    return UtilityReward(
        UtilityRewardConfig(
            table=cfg.table,
            scale=cfg.reward_scale,
            clip=cfg.reward_clip,
            completion_only=cfg.completion_only,
        )
    )


def prefix_pool(cfg: RLHFConfig, tokenizer: Any, model: Any) -> list[list[int]]:
    """All train-split prefixes the run samples its batches from."""
    check_fits_context(model, cfg.prefix_tokens, cfg.ppo.max_new_tokens)
    texts = load_texts(cfg.data, "train", model=cfg.model)
    return make_prefixes(texts, tokenizer, 0, cfg.prefix_tokens, seed=cfg.seed)


def write_log(out: Path, log: list[dict[str, Any]], cfg: RLHFConfig) -> None:
    """log.json and curve.html (mean reward, KL and KL coefficient per step)."""
    atomic_write_json(out / "log.json", {"algo": cfg.algo, "steps": log})
    if not log:
        return
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    steps = [e["step"] for e in log]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("mean reward", "KL", "KL coefficient"))
    fig.add_trace(go.Scatter(x=steps, y=[e.get("reward_mean") for e in log], name="reward"), 1, 1)
    fig.add_trace(go.Scatter(x=steps, y=[e.get("kl") for e in log], name="KL"), 1, 2)
    fig.add_trace(go.Scatter(x=steps, y=[e.get("kl_coef") for e in log], name="KL coef"), 1, 3)
    fig.update_layout(
        title=f"{cfg.algo.upper()} on {cfg.model} ({cfg.reward} reward)",
        showlegend=False,
        height=380,
    )
    fig.update_xaxes(title_text="step")
    atomic_write_bytes(out / "curve.html", fig.to_html(include_plotlyjs=True).encode())


def save_tuned_model(out: Path, model: Any, tokenizer: Any, cfg: RLHFConfig) -> Path:
    """The tuned model, its tokenizer and rlhf.json in ``out/model`` (atomically)."""
    with atomic_dir(out / "model", overwrite=True) as tmp:
        with quiet_loading():
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / "rlhf.json", {"config": to_mapping(cfg), "base_model": cfg.model})
        # A tiny model's corpora travel with it, so 'auto' data still finds its prefixes.
        for name in ("corpus_train.txt", "corpus_test.txt"):
            src = Path(cfg.model) / name
            if src.is_file():
                shutil.copyfile(src, tmp / name)
    return out / "model"


def finish(out: Path, cfg: RLHFConfig, log: list[dict[str, Any]], seconds: float) -> RLHFResult:
    """Write result.json and return it."""
    tail = log[-max(1, min(5, len(log))) :]
    result = RLHFResult(
        model_dir=str(out / "model"),
        base_model=cfg.model,
        algo=cfg.algo,
        reward=cfg.reward,
        steps=len(log),
        reward_first=log[0]["reward_mean"] if log else None,
        reward_last=sum(e["reward_mean"] for e in tail) / len(tail) if log else None,
        kl_last=tail[-1].get("kl") if log else None,
        seconds=seconds,
        log=str(out / "log.json"),
        curve=str(out / "curve.html"),
    )
    result.write(out / "result.json")
    return result
