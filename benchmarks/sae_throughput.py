"""SAE training throughput on CPU: rlsae's TopK step vs SAELens's SAETrainer step, side by side.

Same synthetic data (sparse non-negative combinations of planted unit directions), same shape
(d_in 512, d_sae 2048, k 32, batch 4096), same optimiser (Adam, same learning rate), same batches
in the same order. Steps of the two trainers are interleaved round by round so that load from
other processes hits both alike; the medians are reported. The floor is the plain encoder matmul
of the same shape, (4096, 512) @ (512, 2048). FVU of each SAE is measured on a held-out batch
after the same number of steps.

    python benchmarks/sae_throughput.py [--steps 12] [--threads N] [--kinds topk,batchtopk,...]

``--kinds`` adds, after the TopK table, one row pair per other kind (batchtopk, matryoshka,
jumprelu): rlsae's step next to SAELens's trainer of the same kind (BatchTopKTrainingSAE,
MatryoshkaBatchTopKTrainingSAE with the same prefixes, JumpReLUTrainingSAE), same sizes, data and
learning rate, interleaved the same way, with the FVU of both on the held-out batch and our step
against the encoder-matmul floor; one more JSON line per kind.

jumprelu gets a second row pair (``jumprelu_settled``): both trainers from the same settled state
(our SAE trained ``--settle-steps`` steps first, copied into SAELens's), where a run spends its
steps, with the L0, the fraction of entries within bandwidth/2 of their threshold and of the
sparse path's candidates printed; the first pair is JumpReLU's start, where nearly every entry
lies in the band and our step runs dense (see ``jumprelu_settled``).

Prints a table, then one JSON line: ours_rows_per_s, saelens_rows_per_s, ratio_vs_saelens,
floor_ratio (our step time / encoder matmul time), warm_floor_ratio (the same against the matmul
written into a buffer kept between calls), fvu_ours, fvu_saelens, the step's time by part
(breakdown_ms), whether rlsae's native kernels ran (native_kernels; RLSAE_NATIVE=0 times the
numba/torch fallback), and the settings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings

import torch


def make_data(
    n_batches: int, batch: int, d_in: int, n_true: int, active: int, seed: int = 0
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n_true, d_in, generator=g)
    truth /= truth.norm(dim=1, keepdim=True)
    out = []
    for _ in range(n_batches):
        idx = torch.randint(0, n_true, (batch, active), generator=g)
        coef = torch.rand(batch, active, generator=g)
        out.append(
            torch.nn.functional.embedding_bag(idx, truth, per_sample_weights=coef, mode="sum")
        )
    return out


def fvu(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


# torch ops of our step, by the part of the step they belong to (self time of each op)
PARTS = {
    "encoder matmul": ("aten::mm",),
    "TopK selection": (
        "aten::topk",
        "aten::amax",
        "aten::gather",
        "rlsae::topk_select",
    ),
    "sparse decode and backward": (
        "rlsae::residual",
        "aten::_embedding_bag",
        "aten::_embedding_bag_forward_only",
        "aten::sparse_sampled_addmm",
        "aten::sort",
        "aten::index",
        "aten::bincount",
        "aten::cumsum",
        "aten::index_add_",
        "aten::repeat_interleave",
    ),
    "Adam": ("aten::_fused_adam_",),
}


def profile_breakdown(step, steps: int) -> dict[str, float]:
    """Milliseconds per step in each part of PARTS (the rest under "other"), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            step(i)
    out = {name: 0.0 for name in PARTS}
    out["other (loss, decoder norm, bookkeeping)"] = 0.0
    for ev in prof.key_averages():
        part = next((p for p, ops in PARTS.items() if ev.key in ops), None)
        out[part or "other (loss, decoder norm, bookkeeping)"] += ev.self_cpu_time_total / 1e3
    return {k: v / steps for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps", type=int, default=12, help="timed steps per trainer (after 2 warm-up steps)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's choice)"
    )
    ap.add_argument("--d-in", type=int, default=512)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument(
        "--kinds",
        default="topk",
        help="comma-separated: topk and any of batchtopk, matryoshka, jumprelu",
    )
    ap.add_argument(
        "--jumprelu-l0",
        type=float,
        default=0.01,
        help="jumprelu's settled row: the L0 coefficient of both trainers",
    )
    ap.add_argument(
        "--settle-steps", type=int, default=300, help="jumprelu's settled row: steps to settle"
    )
    ap.add_argument(
        "--settle-lr-mult",
        type=float,
        default=10.0,
        help="jumprelu's settled row: learning rate of the settling steps / the benchmark's",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    d_in, d_sae, k, B = args.d_in, args.d_sae, args.k, args.batch
    warm = 2
    n = warm + args.steps
    data = make_data(n + 1, B, d_in, n_true=4 * d_sae, active=k // 2)
    held_out = data.pop()
    lr = 2e-4 / (d_sae / 16384) ** 0.5

    # --- rlsae -------------------------------------------------------------------------------
    from rlsae.sae import SAE, SAEConfig
    from rlsae.sae._fast import kernel_status
    from rlsae.sae.train import TrainConfig, TrainState, train_step

    cfg = TrainConfig(d_sae=d_sae, k=k, batch_size=B, lr=lr, steps=n)
    ours = SAE(SAEConfig(d_in=d_in, d_sae=d_sae, k=k), seed=0)
    with torch.no_grad():
        ours.b_dec.copy_(data[0].mean(0))
    # what rlsae's training loop carries from step to step (Adam, workspace, dead counters)
    state = TrainState.new(ours, cfg, total=n, base_lr=lr, aux_k=d_in // 2)

    def ours_step(i: int) -> None:
        state.step = i
        train_step(state, data[i])

    # --- SAELens -----------------------------------------------------------------------------
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    torch.manual_seed(0)
    theirs = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=n * B, train_batch_size_samples=B, lr=lr, lr_end=lr
        ),
        theirs,
        iter(data),
    )

    def theirs_step(i: int) -> None:
        trainer.step(data[i])
        trainer.n_training_steps += 1

    # --- floor: the encoder matmul of the same shape ------------------------------------------
    W = torch.randn(d_in, d_sae) / d_in**0.5
    b = torch.zeros(d_sae)

    def floor_step(i: int) -> None:
        torch.addmm(b, data[i], W)

    # the same matmul into a buffer kept between calls, as our step's encoder writes it: a fresh
    # 32 MiB result costs page faults on every call, so this is the floor a step can approach
    kept = torch.empty(B, d_sae)

    def warm_floor_step(i: int) -> None:
        torch.mm(data[i], W, out=kept).add_(b)

    times: dict[str, list[float]] = {"floor": [], "warm_floor": [], "ours": [], "saelens": []}
    for i in range(n):  # interleaved rounds
        for name, fn in (
            ("floor", floor_step),
            ("warm_floor", warm_floor_step),
            ("ours", ours_step),
            ("saelens", theirs_step),
        ):
            t0 = time.perf_counter()
            fn(i)
            dt = time.perf_counter() - t0
            if i >= warm:
                times[name].append(dt)
    med = {k_: statistics.median(v) for k_, v in times.items()}

    with torch.no_grad():
        fvu_ours = fvu(ours(held_out), held_out)
        fvu_theirs = fvu(theirs(held_out), held_out)

    breakdown = profile_breakdown(lambda i: ours_step(i % n), steps=3)

    res = {
        "ours_rows_per_s": B / med["ours"],
        "saelens_rows_per_s": B / med["saelens"],
        "ratio_vs_saelens": med["saelens"] / med["ours"],
        "floor_ratio": med["ours"] / med["floor"],
        "warm_floor_ratio": med["ours"] / med["warm_floor"],
        "fvu_ours": fvu_ours,
        "fvu_saelens": fvu_theirs,
        "ms_ours": 1e3 * med["ours"],
        "ms_saelens": 1e3 * med["saelens"],
        "ms_floor": 1e3 * med["floor"],
        "ms_warm_floor": 1e3 * med["warm_floor"],
        "breakdown_ms": breakdown,
        "steps": n,
        "d_in": d_in,
        "d_sae": d_sae,
        "k": k,
        "batch": B,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "native_kernels": kernel_status(),
    }
    print(
        f"SAE training step on CPU: d_in {d_in}, d_sae {d_sae}, k {k}, batch {B}, {torch.get_num_threads()} threads"
    )
    print(f"rlsae's native kernels: {res['native_kernels']}")
    print(f"{'':28}{'ms/step':>10}{'rows/s':>12}{'FVU after ' + str(n) + ' steps':>24}")
    print(
        f"{'encoder matmul (floor)':28}{res['ms_floor']:>10.1f}{B / med['floor']:>12.0f}{'-':>24}"
    )
    print(
        f"{'  into a kept buffer':28}{res['ms_warm_floor']:>10.1f}{B / med['warm_floor']:>12.0f}{'-':>24}"
    )
    print(
        f"{'rlsae TopK step':28}{res['ms_ours']:>10.1f}{res['ours_rows_per_s']:>12.0f}{fvu_ours:>24.4f}"
    )
    print(
        f"{'SAELens SAETrainer step':28}{res['ms_saelens']:>10.1f}{res['saelens_rows_per_s']:>12.0f}{fvu_theirs:>24.4f}"
    )
    print(
        f"ratio vs SAELens {res['ratio_vs_saelens']:.2f}x (target >= 2.5), floor ratio {res['floor_ratio']:.2f} (target <= 1.5; {res['warm_floor_ratio']:.2f} vs the kept-buffer matmul)"
    )
    print("where an rlsae step's time goes (torch profiler, self time, mean of 3 steps):")
    for name, ms in breakdown.items():
        print(f"  {name:38}{ms:>8.1f} ms  {ms / res['ms_floor']:>5.2f} x floor")
    print(json.dumps(res))
    for kind in args.kinds.split(","):
        if kind != "topk":
            compare_kind(kind, data, held_out, n, warm, lr, med["floor"], args)


def _saelens_sae(kind: str, d_in: int, d_sae: int, k: int, widths: list[int]):
    if kind == "batchtopk":
        from sae_lens.saes.batchtopk_sae import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig

        return BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k))
    if kind == "matryoshka":
        from sae_lens.saes.matryoshka_batchtopk_sae import (
            MatryoshkaBatchTopKTrainingSAE,
            MatryoshkaBatchTopKTrainingSAEConfig,
        )

        cfg = MatryoshkaBatchTopKTrainingSAEConfig(
            d_in=d_in, d_sae=d_sae, k=k, matryoshka_widths=widths
        )
        return MatryoshkaBatchTopKTrainingSAE(cfg)
    if kind == "jumprelu":
        from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig

        return JumpReLUTrainingSAE(
            JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l0_coefficient=1e-3)
        )
    raise SystemExit(f"unknown kind {kind!r}")


def _batch_fvu(sae, x: torch.Tensor) -> float:
    """FVU of a (Matryoshka) BatchTopK SAE with the batch-wide TopK over ``x``."""
    from rlsae.sae._fast import topk_loss

    sse, _, _, _ = topk_loss(
        x, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.cfg.k, None, 0, True, None, batch=True
    )
    return float(sse / ((x - x.mean(0)) ** 2).sum())


def interleave(state, trainer, data, n, warm) -> tuple[dict[str, float], list[dict]]:
    """``n`` steps of rlsae's trainer (``state``) and SAELens's (``trainer``) on the same
    batches, interleaved step by step: the median seconds of each after ``warm`` steps, and our
    steps' figures (``train_step``'s returns)."""
    from rlsae.sae.train import train_step

    times: dict[str, list[float]] = {"ours": [], "saelens": []}
    outs = []
    for i in range(n):
        for name in ("ours", "saelens"):
            t0 = time.perf_counter()
            if name == "ours":
                state.step = i
                outs.append(train_step(state, data[i]))
            else:
                trainer.step(data[i])
                trainer.n_training_steps += 1
            if i >= warm:
                times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, outs


def compare_kind(kind, data, held_out, n, warm, lr, floor_s, args) -> None:
    """One kind: rlsae's train_step against SAELens's trainer of the same kind."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from rlsae.sae import SAE
    from rlsae.sae.config import default_groups
    from rlsae.sae.step import prefix_widths
    from rlsae.sae.train import TrainConfig, TrainState, init_jumprelu

    d_in, d_sae, k, B = args.d_in, args.d_sae, args.k, args.batch
    extra = {"l0": 1e-3} if kind == "jumprelu" else {}
    cfg = TrainConfig(arch=kind, d_sae=d_sae, k=k, batch_size=B, lr=lr, steps=n, **extra)
    sae_cfg, _ = cfg.resolve(d_in)
    ours = SAE(sae_cfg, seed=0)
    with torch.no_grad():
        ours.b_dec.copy_(data[0].mean(0))
    if kind == "jumprelu":  # SAELens's start: thresholds, decoder rows at norm 0.1
        init_jumprelu(ours, cfg)
    state = TrainState.new(ours, cfg, total=n, base_lr=lr, aux_k=d_in // 2)
    torch.manual_seed(0)
    widths = prefix_widths(default_groups(d_sae))
    theirs = _saelens_sae(kind, d_in, d_sae, k, widths)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=n * B, train_batch_size_samples=B, lr=lr, lr_end=lr
        ),
        theirs,
        iter(data),
    )
    med, _ = interleave(state, trainer, data, n, warm)
    with torch.no_grad():
        # BatchTopK kinds in their training mode (the batch's TopK) on both sides: after a few
        # steps the inference threshold's moving average has not converged yet
        fvu_ours = (
            _batch_fvu(ours, held_out) if kind != "jumprelu" else fvu(ours(held_out), held_out)
        )
        fvu_theirs = fvu(theirs(held_out), held_out)
    res = {
        "kind": kind,
        "ms_ours": 1e3 * med["ours"],
        "ms_saelens": 1e3 * med["saelens"],
        "ratio_vs_saelens": med["saelens"] / med["ours"],
        "floor_ratio": med["ours"] / floor_s,
        "fvu_ours": fvu_ours,
        "fvu_saelens": fvu_theirs,
    }
    print(
        f"{'rlsae ' + kind + ' step':28}{res['ms_ours']:>10.1f}{B / med['ours']:>12.0f}{fvu_ours:>24.4f}"
    )
    print(
        f"{'SAELens ' + kind + ' step':28}{res['ms_saelens']:>10.1f}{B / med['saelens']:>12.0f}{fvu_theirs:>24.4f}"
    )
    print(
        f"{kind}: ratio vs SAELens {res['ratio_vs_saelens']:.2f}x (target >= 3), floor ratio {res['floor_ratio']:.2f}"
    )
    print(json.dumps(res))
    if kind == "jumprelu":
        jumprelu_settled(data, held_out, n, warm, lr, floor_s, args)


def _jumprelu_regime(sae, x: torch.Tensor, bandwidth: float) -> dict[str, float]:
    """L0 (latents above threshold per row), the fraction of all (row, latent) entries within
    bandwidth/2 of their threshold, and of those above threshold - bandwidth/2 (the sparse
    path's candidates)."""
    with torch.no_grad():
        pre = sae.pre_acts(x)
        t = sae.threshold
        return {
            "l0": float((pre > t).sum(1).double().mean()),
            "band_fraction": float(((pre - t).abs() < bandwidth / 2).double().mean()),
            "candidate_fraction": float((pre > t - bandwidth / 2).double().mean()),
        }


def jumprelu_settled(data, held_out, n, warm, lr, floor_s, args) -> None:
    """JumpReLU in the regime a run spends its steps in, not at its start: our SAE is first
    trained ``--settle-steps`` steps (SAELens's start, the same batches in turn, ``--jumprelu-l0``,
    the learning rate x ``--settle-lr-mult`` so the thresholds climb to the pre-activations'
    scale within the benchmark's time) until its L0 has settled; that state (weights, biases,
    thresholds) is copied into SAELens's JumpReLUTrainingSAE (which keeps the threshold itself,
    not its log), and both trainers then take the usual interleaved timed steps from it with
    fresh Adam states, the benchmark's learning rate, constant on both sides, and the same L0
    coefficient without warm-up. FVU of both on the held-out batch after those steps."""
    from sae_lens.config import SAETrainerConfig
    from sae_lens.saes.jumprelu_sae import JumpReLUTrainingSAE, JumpReLUTrainingSAEConfig
    from sae_lens.training.sae_trainer import SAETrainer

    from rlsae.sae import SAE
    from rlsae.sae.train import TrainConfig, TrainState, init_jumprelu, train_step

    d_in, d_sae, B = args.d_in, args.d_sae, args.batch
    l0, steps = args.jumprelu_l0, args.settle_steps
    settle_lr = lr * args.settle_lr_mult
    flat = dict(arch="jumprelu", d_sae=d_sae, batch_size=B, l0=l0, warmup_frac=0.0, decay_frac=0.0)
    settle_cfg = TrainConfig(lr=settle_lr, steps=steps, **flat)
    ours = SAE(settle_cfg.resolve(d_in)[0], seed=0)
    with torch.no_grad():
        ours.b_dec.copy_(data[0].mean(0))
    init_jumprelu(ours, settle_cfg)
    state = TrainState.new(ours, settle_cfg, total=steps, base_lr=settle_lr, aux_k=0)
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(state, data[i % n])
    settle_s = time.perf_counter() - t0
    bw = settle_cfg.bandwidth
    before = _jumprelu_regime(ours, held_out, bw)
    with torch.no_grad():
        fvu_start = fvu(ours(held_out), held_out)

    cfg = TrainConfig(lr=lr, steps=n, **flat)
    state = TrainState.new(ours, cfg, total=n, base_lr=lr, aux_k=0)
    theirs = JumpReLUTrainingSAE(
        JumpReLUTrainingSAEConfig(d_in=d_in, d_sae=d_sae, l0_coefficient=l0)
    )
    with torch.no_grad():
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
            getattr(theirs, name).copy_(getattr(ours, name))
        torch.testing.assert_close(theirs(held_out), ours(held_out), rtol=1e-4, atol=1e-5)
    trainer = SAETrainer(
        SAETrainerConfig(
            total_training_samples=n * B, train_batch_size_samples=B, lr=lr, lr_end=lr
        ),
        theirs,
        iter(data),
    )
    med, outs = interleave(state, trainer, data, n, warm)
    # the steps our trainer ran on the sparse path, and their candidates per entry
    densities = [o["candidates"] for o in outs if "candidates" in o]
    sparse_steps = len(densities)
    with torch.no_grad():
        fvu_ours, fvu_theirs = fvu(ours(held_out), held_out), fvu(theirs(held_out), held_out)
        l0_theirs = float((theirs.encode(held_out) > 0).sum(1).double().mean())
    after = _jumprelu_regime(ours, held_out, bw)
    res = {
        "kind": "jumprelu_settled",
        "ms_ours": 1e3 * med["ours"],
        "ms_saelens": 1e3 * med["saelens"],
        "ratio_vs_saelens": med["saelens"] / med["ours"],
        "floor_ratio": med["ours"] / floor_s,
        "fvu_start": fvu_start,
        "fvu_ours": fvu_ours,
        "fvu_saelens": fvu_theirs,
        "l0_coefficient": l0,
        "settle_steps": steps,
        "settle_lr": settle_lr,
        "settle_s": settle_s,
        "regime_start": before,
        "regime_end": after,
        "l0_saelens_end": l0_theirs,
        "sparse_steps": f"{sparse_steps}/{n}",
        "candidate_fraction_steps": [min(densities), max(densities)] if densities else None,
    }
    print(
        f"JumpReLU from a settled state ({steps} steps at lr {settle_lr:.2g}, l0 {l0}; "
        f"{settle_s:.0f} s): L0 {before['l0']:.1f} of {d_sae}, "
        f"{100 * before['band_fraction']:.2f} % of entries within bandwidth/2 of their "
        f"threshold, {100 * before['candidate_fraction']:.2f} % candidates; FVU {fvu_start:.4f}"
    )
    print(
        f"{'rlsae jumprelu (settled)':28}{res['ms_ours']:>10.1f}{B / med['ours']:>12.0f}{fvu_ours:>24.4f}"
    )
    print(
        f"{'SAELens jumprelu (settled)':28}{res['ms_saelens']:>10.1f}{B / med['saelens']:>12.0f}{fvu_theirs:>24.4f}"
    )
    print(
        f"jumprelu settled: ratio vs SAELens {res['ratio_vs_saelens']:.2f}x (target >= 3), "
        f"floor ratio {res['floor_ratio']:.2f}; our step sparse in {sparse_steps} of {n} steps; "
        f"after: L0 ours {after['l0']:.1f}, SAELens {l0_theirs:.1f}"
    )
    print(json.dumps(res))


if __name__ == "__main__":
    main()
