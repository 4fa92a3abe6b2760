"""Sampling completions and scoring tokens: the pieces PPO, RLOO and scoring share.

Sequences are ``[left-padded prefix | right-padded completion]``. Masks always come from the
attention mask (Pythia pads with EOS, which also ends completions), and position ids are
``cumsum(mask) - 1`` so a left-padded row is computed exactly as the unpadded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Rollout:
    """A batch of prefixes and their sampled completions."""

    query: torch.Tensor  # (B, P) prefix ids, left-padded
    query_mask: torch.Tensor  # (B, P) 1 on real prefix tokens
    response: torch.Tensor  # (B, T) completion ids, right-padded
    response_mask: torch.Tensor  # (B, T) 1 up to and including the first EOS

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query, self.response], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    def select(self, idx: torch.Tensor) -> Rollout:
        return Rollout(
            self.query[idx], self.query_mask[idx], self.response[idx], self.response_mask[idx]
        )


def left_pad(prefix_ids: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad lists of token ids into ``(ids, mask)`` tensors."""
    width = max(len(p) for p in prefix_ids)
    ids = torch.full((len(prefix_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prefix_ids), width), dtype=torch.long)
    for i, p in enumerate(prefix_ids):
        if p:
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
    return ids, mask


def completion_mask(response: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """1 on every completion token up to and including the first EOS, 0 after it."""
    if eos_id is None:
        return torch.ones_like(response)
    is_eos = (response == eos_id).long()
    before_or_at_first = (is_eos.cumsum(dim=1) - is_eos) == 0
    return before_or_at_first.long()


@torch.no_grad()
def sample_completions(
    model: Any,
    tokenizer: Any,
    prefix_ids: list[list[int]],
    max_new_tokens: int,
    *,
    top_k: int = 0,
    top_p: float = 1.0,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = 64,
) -> Rollout:
    """Sample one completion per prefix (``top_k=0, top_p=1``: plain sampling, as in the paper)."""
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    query, query_mask = left_pad(prefix_ids, pad_id)
    responses = []
    was_training = model.training
    model.eval()
    for s in range(0, len(prefix_ids), batch_size):
        q = query[s : s + batch_size].to(device)
        m = query_mask[s : s + batch_size].to(device)
        out = model.generate(
            input_ids=q,
            attention_mask=m,
            do_sample=True,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            min_new_tokens=1,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
        )
        r = out[:, q.shape[1] :].cpu()
        if r.shape[1] < max_new_tokens:  # every row finished early
            fill = torch.full((r.shape[0], max_new_tokens - r.shape[1]), pad_id, dtype=r.dtype)
            r = torch.cat([r, fill], dim=1)
        responses.append(r)
    model.train(was_training)
    response = torch.cat(responses, dim=0)
    return Rollout(query, query_mask, response, completion_mask(response, eos_id))


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding."""
    return (mask.cumsum(dim=-1) - 1).clamp(min=0)


def response_logits(
    model: Any, rollout: Rollout, *, output_hidden: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits predicting each completion token (B, T, V), and optionally the hidden states there."""
    ids = rollout.input_ids.to(next(model.parameters()).device)
    mask = rollout.attention_mask.to(ids.device)
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=position_ids(mask),
        output_hidden_states=output_hidden,
        use_cache=False,
    )
    t, p = rollout.response.shape[1], rollout.query.shape[1]
    logits = out.logits[:, p - 1 : p - 1 + t]
    hidden = out.hidden_states[-1][:, p - 1 : p - 1 + t] if output_hidden else None
    return logits, hidden


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` for each position (float32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1).to(logp.device)).squeeze(-1)


def decode_rollout(tokenizer: Any, rollout: Rollout) -> tuple[list[str], list[str]]:
    """Prefix texts and completion texts (completion without padding; EOS dropped)."""
    prefixes, completions = [], []
    for i in range(rollout.query.shape[0]):
        q = rollout.query[i][rollout.query_mask[i].bool()].tolist()
        r = rollout.response[i][rollout.response_mask[i].bool()].tolist()
        prefixes.append(tokenizer.decode(q, skip_special_tokens=True))
        completions.append(tokenizer.decode(r, skip_special_tokens=True))
    return prefixes, completions
