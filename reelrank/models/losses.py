"""Training losses, kept out of the model modules (which only compute vectors and logits)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sampled_softmax_loss(
    user: torch.Tensor,  # (N, D) one query vector per training target
    target: torch.Tensor,  # (N,) long: the index of each query's positive in `candidates`
    candidates: torch.Tensor,  # (C, D) vectors: the batch's positives first, then sampled negatives
    candidate_ids: torch.Tensor,  # (C,) long: item index of each candidate (to mask accidental hits)
    log_q: torch.Tensor,  # (C,) log of each candidate's sampling probability
    temperature: float = 1.0,
    reduction: str = "mean",  # or "none": one loss per query
) -> torch.Tensor:
    """Softmax over a sampled candidate set with log-Q correction.

    Scoring only a sample of the catalog biases the softmax towards frequent items (they are
    sampled as negatives more often). Subtracting ``log Q(item)`` from each logit makes the
    sampled softmax an unbiased-in-expectation estimate of the full one (Bengio & Senecal; Yi et
    al. 2019). A negative that is the query's own positive item (an accidental hit) is masked.
    """
    logits = user @ candidates.T / temperature  # (N, C)
    logits = logits - log_q.unsqueeze(0)  # (N, C)
    positive_ids = candidate_ids[target]  # (N,)
    hit = candidate_ids.unsqueeze(0) == positive_ids.unsqueeze(1)  # (N, C)
    hit[torch.arange(len(target)), target] = False  # keep the true positive column
    logits = logits.masked_fill(hit, float("-inf"))
    return F.cross_entropy(logits, target, reduction=reduction)


def full_softmax_loss(user: torch.Tensor, items: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the whole catalog: (N, D) x (I, D) -> scalar. The reference the
    sampled loss approximates; affordable only for small catalogs."""
    return F.cross_entropy(user @ items.T, target)  # (N, I) logits
