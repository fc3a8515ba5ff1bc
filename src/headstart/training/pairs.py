"""The pair objective of the `contrastive` strategy, in the spirit of SetFit (Tunstall et al.,
2022): the cosine similarity of two examples' embeddings is regressed to 1 when they share a
class and to 0 when they do not.

SetFit samples pairs one by one; here every pair inside a batch counts, so each example is
embedded once per step and contributes to batch_size - 1 pairs. Positive and negative pairs get
equal weight (with many classes most pairs are negative), and batches are built from small
same-class chunks so every batch holds positive pairs whatever the number of classes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

CHUNK = 4  # examples of one class placed next to each other in the epoch's order


def pair_loss(emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error of cosine similarities against same-class (1) / other-class (0)."""
    e = nn.functional.normalize(emb.float(), dim=-1)
    sim = e @ e.T
    same = (targets[:, None] == targets[None, :]).float()
    off_diag = 1.0 - torch.eye(len(targets), device=emb.device)
    pos, neg = same * off_diag, 1.0 - same
    terms = []
    if pos.sum() > 0:
        terms.append(((sim - 1.0) ** 2 * pos).sum() / pos.sum())
    if neg.sum() > 0:
        terms.append((sim ** 2 * neg).sum() / neg.sum())
    if not terms:  # a batch of one example: nothing to compare
        return emb.sum() * 0.0
    return sum(terms) / len(terms)


def pair_order(indices: list[int], y: np.ndarray, seed: int, chunk: int = CHUNK) -> list[int]:
    """The indices in an order whose consecutive batches mix classes yet hold same-class pairs:
    each class's examples are shuffled and cut into chunks of `chunk`, and the chunks are
    shuffled. Every index appears exactly once."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(y)[np.asarray(indices, np.int64)] if len(indices) else np.zeros(0)
    chunks: list[list[int]] = []
    for c in np.unique(labels):
        members = [indices[j] for j in rng.permutation(np.flatnonzero(labels == c))]
        chunks += [members[k:k + chunk] for k in range(0, len(members), chunk)]
    return [i for j in rng.permutation(len(chunks)) for i in chunks[j]]
