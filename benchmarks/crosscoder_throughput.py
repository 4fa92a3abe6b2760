"""Crosscoder training throughput on CPU: rlsae's BatchTopK crosscoder step next to a plain
dense PyTorch crosscoder step, side by side in one run.

Same synthetic pair (base: sparse non-negative combinations of planted unit directions; tuned:
the same rows with a few directions moved, added and removed), same shape (d_in 256 per model,
d_sae 2048, k 32, batch 4096), same Adam and learning rate, same batches in the same order.
Ours is the training step ``train_crosscoder`` runs (``rlsae.sae.train.train_step`` on
``[base | tuned]``: the fast sparse BatchTopK loss with AuxK). The plain one is what one writes
from the papers: encoder einsum over both models, ReLU, the k x rows largest over the batch as a
dense mask, a dense decoder per model, autograd, Adam, decoder renormalisation. Steps of the two
are interleaved round by round so other load hits both alike; medians are reported, and the FVU
of both on a held-out batch after the same steps (dictionary_learning's CrossCoder trainer is
not installed here, so it is not in the table).

    python benchmarks/crosscoder_throughput.py [--steps 12] [--threads N]

Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def make_pair(n_batches: int, batch: int, d: int, n_true: int, active: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    truth = torch.randn(n_true, d, generator=g)
    truth /= truth.norm(dim=1, keepdim=True)
    moved = truth.clone()
    m = n_true // 16  # a sixteenth of the directions move, vanish or appear in the tuned model
    moved[:m] = torch.nn.functional.normalize(truth[:m] + 0.5 * torch.randn(m, d, generator=g))
    moved[m : 2 * m] = 0
    truth[2 * m : 3 * m] = 0
    out = []
    for _ in range(n_batches):
        idx = torch.randint(0, n_true, (batch, active), generator=g)
        coef = torch.rand(batch, active, generator=g)
        xb = torch.nn.functional.embedding_bag(idx, truth, per_sample_weights=coef, mode="sum")
        xt = torch.nn.functional.embedding_bag(idx, moved, per_sample_weights=coef, mode="sum")
        out.append(torch.cat([xb, xt], dim=1))
    return out


class PlainCrosscoder(torch.nn.Module):
    """The dense crosscoder of the papers, BatchTopK, written directly."""

    def __init__(self, d: int, n: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(n, 2 * d, generator=g)
        w /= w.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(w.reshape(n, 2, d).transpose(0, 1).contiguous())
        self.W_enc = torch.nn.Parameter(self.W_dec.detach().transpose(1, 2).contiguous())
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.b_dec = torch.nn.Parameter(torch.zeros(2, d))

    def forward(self, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs = x.reshape(x.shape[0], 2, -1).transpose(0, 1)  # (2, B, d)
        pre = torch.einsum("mbd,mdn->bn", xs - self.b_dec[:, None], self.W_enc) + self.b_enc
        acts = torch.relu(pre)
        t = acts.reshape(-1).topk(k * x.shape[0], sorted=False).values.min()
        f = acts * (acts >= t)
        recon = torch.einsum("bn,mnd->mbd", f, self.W_dec) + self.b_dec[:, None]
        return recon, xs

    @torch.no_grad()
    def renormalise(self) -> None:
        norms = self.W_dec.pow(2).sum((0, 2)).sqrt().clamp_min(1e-8)
        self.W_dec.div_(norms[None, :, None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--d-in", type=int, default=256)
    ap.add_argument("--d-sae", type=int, default=2048)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from rlsae.sae.config import SAEConfig, TrainConfig
    from rlsae.sae.model import SAE
    from rlsae.sae.train import TrainState, train_step

    d, n, k, B = args.d_in, args.d_sae, args.k, args.batch
    data = make_pair(args.steps + 2, B, d, n_true=4 * n, active=k)
    held = data.pop()
    lr = 2e-4 / (n / 16384) ** 0.5
    tcfg = TrainConfig(arch="batchtopk", d_sae=n, k=k, steps=args.steps, batch_size=B, lr=lr)
    sae = SAE(SAEConfig(d_in=2 * d, d_sae=n, k=k, arch="batchtopk"), seed=0)
    state = TrainState.new(sae, tcfg, args.steps + 1, lr, aux_k=d)
    plain = PlainCrosscoder(d, n, seed=0)
    opt = torch.optim.Adam(plain.parameters(), lr=lr)

    def plain_step(x: torch.Tensor) -> None:
        recon, xs = plain(x, k)
        loss = (recon - xs).pow(2).sum() / (xs - xs.mean(1, keepdim=True)).pow(2).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
        opt.step()
        plain.renormalise()

    ours_t, plain_t = [], []
    train_step(state, data[0])  # warm-up of both (first-call allocations)
    plain_step(data[0])
    for x in data[1:]:
        t0 = time.perf_counter()
        train_step(state, x)
        ours_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        plain_step(x)
        plain_t.append(time.perf_counter() - t0)

    from rlsae.sae._fast import topk_loss

    with torch.no_grad():  # both with the training-time BatchTopK selection on the held batch
        sse = topk_loss(held, sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, k, batch=True)[0]
        ours_fvu = float(sse / ((held - held.mean(0)) ** 2).sum())
        recon, xs = plain(held, k)
        plain_fvu = fvu(recon.transpose(0, 1).reshape(B, -1), held)
    o, p = statistics.median(ours_t), statistics.median(plain_t)
    print(f"{'':24}{'ms/step':>10}{'rows/s':>12}{'FVU (held out)':>16}")
    print(f"{'rlsae crosscoder':24}{o * 1e3:10.1f}{B / o:12.0f}{ours_fvu:16.4f}")
    print(f"{'plain dense crosscoder':24}{p * 1e3:10.1f}{B / p:12.0f}{plain_fvu:16.4f}")
    print(f"speed-up {p / o:.2f}x")
    print(
        json.dumps(
            {
                "ours_rows_per_s": B / o,
                "plain_rows_per_s": B / p,
                "ratio_vs_plain": p / o,
                "fvu_ours": ours_fvu,
                "fvu_plain": plain_fvu,
                "settings": {
                    "d_in": d,
                    "d_sae": n,
                    "k": k,
                    "batch": B,
                    "steps": args.steps,
                    "threads": torch.get_num_threads(),
                },  # fmt: skip
            }
        )
    )


def fvu(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float(((recon - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


if __name__ == "__main__":
    main()
