"""The backward pass of one optimizer step, over a batch the modality may cut into pieces.

A text batch of long documents holds every window of each (32 articles of 3-4 windows of 256
tokens are ~120 windows), and a gradient step keeps every layer's activations of all of them:
the memory of a step grows with the length of the texts. The modality cuts such a batch into
pieces of a bounded number of tokens (`Modality.step_pieces`, whole documents each), and the
step is taken over the pieces with the gradient of the whole batch:

- a per-example loss (cross-entropy) is summed over the pieces, each piece's share of the
  batch mean backpropagated in turn (gradient accumulation: the same gradient);
- the pair loss couples every example of the batch with every other, so it is computed on the
  whole batch's embeddings: the pieces are embedded without a graph, the loss's gradient with
  respect to the embeddings is taken, and each piece is embedded again, with the same random
  state (the same dropout masks), and backpropagated with its rows of that gradient (the
  "gradient cache" of Gao et al. 2021). One extra forward pass per step buys memory that no
  longer grows with the batch.

Under DistributedDataParallel only the last piece's backward synchronises gradients (the
others run under `no_sync`), so ranks with different numbers of pieces stay in step. A
regulariser (L2-SP) is added once, to the last piece.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from .pairs import pair_loss


def backward_pieces(net, forward: Callable, pieces: list[tuple], *, pairs: bool, scaler,
                    extra: Callable | None = None) -> tuple[float, torch.Tensor | None]:
    """Backpropagate the batch's loss (the mean over its examples, plus `extra()`) through
    `forward(x)` for every (x, targets) piece. Returns the loss's value and, for a per-example
    loss, the batch's logits (detached, in order) for its accuracy."""
    if pairs and len(pieces) > 1:
        return _cached_pairs(net, forward, pieces, scaler=scaler, extra=extra)
    n = sum(len(t) for _, t in pieces)
    value, outs = 0.0, []
    for k, (x, t) in enumerate(pieces):
        last = k == len(pieces) - 1
        with _sync(net, last):
            out = forward(x)
            if pairs:  # a single piece: the whole batch
                loss = pair_loss(out, t)
            else:  # this piece's share of the batch's mean
                loss = nn.functional.cross_entropy(out.float(), t, reduction="sum") / n
            if last and extra is not None:
                loss = loss + extra()
            scaler.scale(loss).backward()  # the scaler passes through but for fp16
        value += float(loss.detach())
        outs.append(out.detach())
    return value, None if pairs else torch.cat(outs)


def _cached_pairs(net, forward, pieces, *, scaler, extra) -> tuple[float, None]:
    states, embs = [], []
    with torch.no_grad():
        for x, _ in pieces:
            states.append(_rng_state())
            embs.append(forward(x))
    emb = torch.cat(embs).detach().requires_grad_(True)
    loss = pair_loss(emb, torch.cat([t for _, t in pieces]))
    scaler.scale(loss).backward()
    grads = emb.grad.split([len(e) for e in embs])
    value = float(loss.detach())
    end = _rng_state()
    for k, ((x, _), g, state) in enumerate(zip(pieces, grads, states)):
        last = k == len(pieces) - 1
        _set_rng_state(state)  # the same dropout masks as the embeddings the loss saw
        with _sync(net, last):
            # the gradient of <embeddings, g> with respect to the weights is the piece's share
            surrogate = (forward(x).float() * g.float()).sum()
            if last and extra is not None:
                penalty = extra()
                value += float(penalty.detach())
                surrogate = surrogate + scaler.scale(penalty)
            surrogate.backward()
    _set_rng_state(end)
    return value, None


def _sync(net, last: bool):
    """DDP's gradient all-reduce on the last piece only (nothing to do without DDP)."""
    no_sync = getattr(net, "no_sync", None)
    return contextlib.nullcontext() if last or no_sync is None else no_sync()


def _rng_state() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
