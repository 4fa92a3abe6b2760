"""A crosscoder's latents: shared, base-only, tuned-only, or an artefact of the sparsity loss.

Per latent j with decoder directions ``d_j^base`` and ``d_j^tuned``:

- **norm ratio** ``r_j = 1/2 ((|d_j^tuned| - |d_j^base|) / max(|d_j^base|, |d_j^tuned|) + 1)``
  (Minder et al. 2025's relative norm): 0 base only, 1/2 equal norms, 1 tuned only;
- **cosine** between ``d_j^base`` and ``d_j^tuned``;
- **Latent Scaling** (Minder et al. 2025, arXiv 2504.02922, section 3): with the latent's
  direction in its own model, ``v_j = d_j^tuned`` if r_j >= 1/2 else ``d_j^base``, the least
  squares scale of ``f_j(x) v_j`` to a target ``y(x)`` over all rows is
  ``beta = sum_x f_j(x) <v_j, y(x)> / (|v_j|^2 sum_x f_j(x)^2)``, fitted to four targets:
  each model's reconstruction (``beta_reconstruction_*``: the latents' sum, the decoder bias
  left out, since it is no latent) and each model's reconstruction error with the latent's own
  contribution in that model added back, ``h^m(x) - h_hat^m(x) + f_j(x) d_j^m``
  (``beta_error_*``). Then, for the other model o and the latent's own model s,
  ``nu_error = beta_error_o / beta_error_s`` and
  ``nu_reconstruction = beta_reconstruction_o / beta_reconstruction_s``.

A tuned-only latent that is truly absent from the base model has both nu near 0. A high
``nu_error`` says the base model holds the latent's direction in what the crosscoder failed to
reconstruct (Complete Shrinkage: its base decoder was shrunk to nothing); a high
``nu_reconstruction`` says the base reconstruction holds it through other latents (Latent
Decoupling). Both are artefacts of the sparsity loss, common with L1, rare with BatchTopK.

Classes (thresholds in ``LatentConfig``): ``dead`` (never fires over the rows analysed),
``tuned_only`` (r_j >= tuned_only_ratio and both nu at most their maxima), ``base_only``
(the mirror), ``artefact`` (a model-only candidate by its norm ratio that Latent Scaling
rejects) and ``shared`` (the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from rlsae.artifacts import Artifact
from rlsae.sae.crosscoder import Crosscoder
from rlsae.sae.crosscoder_config import LatentConfig
from rlsae.sae.paired import PairedStore

CLASSES = ("shared", "base_only", "tuned_only", "artefact", "dead")
"""The classes of latents, in the order counts are listed."""


@dataclass
class LatentRow:
    """One latent's figures (``None``: not defined, e.g. for a latent that never fires)."""

    latent: int
    """Index of the latent."""
    kind: str
    """Its class (one of ``CLASSES``; ``class`` in ``rlsae diff latents --json``)."""
    norm_base: float
    """Norm of its base decoder direction."""
    norm_tuned: float
    """Norm of its tuned decoder direction."""
    norm_ratio: float | None
    """Relative decoder norm: 0 base only, 0.5 equal, 1 tuned only (None: both norms 0)."""
    cosine: float | None
    """Cosine between its two decoder directions (None: one of them is 0)."""
    fires: int
    """Rows it fires on."""
    beta_error_base: float | None
    """Latent Scaling beta on the base model's error (with the latent's base part added back)."""
    beta_error_tuned: float | None
    """Latent Scaling beta on the tuned model's error (with its tuned part added back)."""
    beta_reconstruction_base: float | None
    """Latent Scaling beta on the base model's reconstruction."""
    beta_reconstruction_tuned: float | None
    """Latent Scaling beta on the tuned model's reconstruction."""
    nu_error: float | None
    """beta_error of the other model / of its own model (None: undefined)."""
    nu_reconstruction: float | None
    """beta_reconstruction of the other model / of its own model (None: undefined)."""


@dataclass
class LatentAnalysis(Artifact):
    """``rlsae diff latents``: every latent's figures, classes and their counts."""

    FORMAT: ClassVar[str] = "rlsae.crosscoder_latents"
    VERSION: ClassVar[int] = 1

    config: LatentConfig
    """The thresholds used."""
    n_latents: int
    """Latents in the crosscoder."""
    rows: int
    """Rows analysed."""
    counts: dict[str, int]
    """Latents per class (every class of ``CLASSES``)."""
    latents: list[LatentRow]
    """Per latent, in index order."""


@dataclass
class ScalingSums:
    """The sums Latent Scaling's betas are made of, over the rows analysed (float64, per
    latent): ``ff`` = sum f_j^2 and, for each model m, ``fr[m]`` = sum f_j <v_j, recon^m> and
    ``fe[m]`` = sum f_j <v_j, error^m + f_j d_j^m>; ``fires`` counts rows with f_j > 0."""

    ff: torch.Tensor
    fr: torch.Tensor
    fe: torch.Tensor
    fires: torch.Tensor
    rows: int


def own_directions(cc: Crosscoder) -> tuple[torch.Tensor, torch.Tensor]:
    """(v, own): each latent's direction in its own model (the one with the larger decoder
    norm; tuned on a tie), (d_sae, d_in), and that model's index (0 base, 1 tuned)."""
    norms = cc.decoder_norms()
    own = (norms[1] >= norms[0]).long()
    W = cc.W_dec.detach()
    v = torch.where(own.bool().unsqueeze(1), W[1], W[0])
    return v, own


@torch.no_grad()
def scaling_sums(
    cc: Crosscoder, pair: PairedStore, batch_size: int = 4096, max_rows: int | None = None
) -> ScalingSums:
    """One sequential pass over the pair accumulating ``ScalingSums`` in float64."""
    v, _ = own_directions(cc)
    v = v.double()
    W = cc.W_dec.detach().double()
    b = cc.b_dec.detach().double()
    n = cc.d_sae
    vd = torch.stack([(v * W[m]).sum(1) for m in (0, 1)])  # <v_j, d_j^m>
    ff = torch.zeros(n, dtype=torch.float64)
    fr = torch.zeros(2, n, dtype=torch.float64)
    fe = torch.zeros(2, n, dtype=torch.float64)
    fires = torch.zeros(n, dtype=torch.long)
    rows = 0
    limit = max_rows if max_rows is not None else pair.rows
    for x in pair.iter_sequential(batch_size):
        x = x[: limit - rows]
        if not x.shape[0]:
            break
        xb, xt = pair.split(x)
        f = cc.encode(xb, xt).double()
        f2 = f.pow(2)
        ff += f2.sum(0)
        fires += (f > 0).sum(0)
        for m, xm in enumerate((xb, xt)):
            recon = f @ W[m]  # the latents' part of the reconstruction
            err = xm.double() - recon - b[m]
            fr[m] += (f * (recon @ v.T)).sum(0)
            fe[m] += (f * (err @ v.T)).sum(0) + f2.sum(0) * vd[m]
        rows += x.shape[0]
    return ScalingSums(ff=ff, fr=fr, fe=fe, fires=fires, rows=rows)


def betas(cc: Crosscoder, sums: ScalingSums) -> dict[str, torch.Tensor]:
    """The four betas per latent from the sums (NaN for a latent that never fires)."""
    v, _ = own_directions(cc)
    denom = v.double().pow(2).sum(1) * sums.ff
    denom = torch.where(denom > 0, denom, torch.full_like(denom, float("nan")))
    return {
        "error_base": sums.fe[0] / denom,
        "error_tuned": sums.fe[1] / denom,
        "reconstruction_base": sums.fr[0] / denom,
        "reconstruction_tuned": sums.fr[1] / denom,
    }


def analyse_latents(
    cc: Crosscoder, pair: PairedStore, cfg: LatentConfig | None = None
) -> LatentAnalysis:
    """Norm ratios, cosines, Latent Scaling and classes of every latent of ``cc`` over the
    aligned stores ``pair`` (a ``PairedStore`` in ``concat`` mode)."""
    cfg = cfg or LatentConfig()
    cfg.validate()
    sums = scaling_sums(cc, pair, cfg.batch_size, cfg.max_rows)
    beta = betas(cc, sums)
    norms = cc.decoder_norms().double()
    nb, nt = norms[0], norms[1]
    big = torch.maximum(nb, nt)
    ratio = 0.5 * ((nt - nb) / big + 1)
    W = cc.W_dec.detach().double()
    cosine = (W[0] * W[1]).sum(1) / (nb * nt)
    _, own = own_directions(cc)
    tuned_own = own.bool()
    other_e = torch.where(tuned_own, beta["error_base"], beta["error_tuned"])
    self_e = torch.where(tuned_own, beta["error_tuned"], beta["error_base"])
    other_r = torch.where(tuned_own, beta["reconstruction_base"], beta["reconstruction_tuned"])
    self_r = torch.where(tuned_own, beta["reconstruction_tuned"], beta["reconstruction_base"])
    nu_e, nu_r = other_e / self_e, other_r / self_r
    rows = []
    for j in range(cc.d_sae):
        kind = classify(int(sums.fires[j]), _num(ratio[j]), _num(nu_e[j]), _num(nu_r[j]), cfg)
        rows.append(
            LatentRow(
                latent=j,
                kind=kind,
                norm_base=float(nb[j]),
                norm_tuned=float(nt[j]),
                norm_ratio=_num(ratio[j]),
                cosine=_num(cosine[j]),
                fires=int(sums.fires[j]),
                beta_error_base=_num(beta["error_base"][j]),
                beta_error_tuned=_num(beta["error_tuned"][j]),
                beta_reconstruction_base=_num(beta["reconstruction_base"][j]),
                beta_reconstruction_tuned=_num(beta["reconstruction_tuned"][j]),
                nu_error=_num(nu_e[j]),
                nu_reconstruction=_num(nu_r[j]),
            )
        )
    counts = {c: sum(r.kind == c for r in rows) for c in CLASSES}
    return LatentAnalysis(
        config=cfg, n_latents=cc.d_sae, rows=sums.rows, counts=counts, latents=rows
    )


def classify(
    fires: int,
    ratio: float | None,
    nu_error: float | None,
    nu_reconstruction: float | None,
    cfg: LatentConfig,
) -> str:
    """One latent's class (see the module docstring)."""
    if fires == 0 or ratio is None:
        return "dead"
    if cfg.base_only_ratio < ratio < cfg.tuned_only_ratio:
        return "shared"
    confirmed = (
        nu_error is not None
        and nu_reconstruction is not None
        and nu_error <= cfg.nu_error_max
        and nu_reconstruction <= cfg.nu_reconstruction_max
    )
    if not confirmed:
        return "artefact"
    return "tuned_only" if ratio >= cfg.tuned_only_ratio else "base_only"


def _num(t: torch.Tensor) -> float | None:
    value = float(t)
    return value if value == value and abs(value) != float("inf") else None
