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
  longer grows with the batch;
- a document whose windows alone are over the budget is cut between its windows: such
  documents come first (`windows_of_batch` pieces numbering their documents), the others
  follow as whole documents. The window pieces but the last are summed into their documents
  without a graph; the last piece, given those sums as a leaf, gives the documents' logits,
  their share of the loss, and the loss's gradient with respect to the sums; every other
  piece is re-run with its random state and backpropagated with it. One extra forward pass,
  over the long documents' windows only. When nothing follows them, the backward through the
  head must be the last (DDP synchronises on it), so the gradient with respect to the sums is
  taken on the head alone first (one more forward pass, of the last piece).

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
    loss, the batch's logits (detached, in the batch's order) for its accuracy."""
    first, n = pieces[0][0], sum(len(t) for _, t in pieces)
    cut = [x for x, _ in pieces if isinstance(x, dict) and x.get("windows_of_batch")]
    if cut:
        if pairs:
            raise ValueError("pair steps embed whole documents: cut them between documents")
        rest = pieces[len(cut):]
        value, out = _cached_windows(net, forward, pieces[:len(cut)], n=n, last=not rest,
                                     scaler=scaler, extra=None if rest else extra)
        if rest:
            more, tail = _accumulated(net, forward, rest, n=n, scaler=scaler, extra=extra)
            value, out = value + more, torch.cat([out, tail])
        order = first.get("batch_order")
        return value, out if order is None else out[torch.argsort(order)]
    if pairs and len(pieces) > 1:
        return _cached_pairs(net, forward, pieces, scaler=scaler, extra=extra)
    if pairs:  # a single piece: the whole batch
        with _sync(net, True):
            loss = pair_loss(forward(first), pieces[0][1])
            if extra is not None:
                loss = loss + extra()
            scaler.scale(loss).backward()  # the scaler passes through but for fp16
        return float(loss.detach()), None
    return _accumulated(net, forward, pieces, n=n, scaler=scaler, extra=extra)


def _accumulated(net, forward, pieces, *, n, scaler, extra) -> tuple[float, torch.Tensor]:
    """Each piece's share (of `n` examples) of the batch's mean cross-entropy backpropagated in
    turn; `extra()` with the last."""
    value, outs = 0.0, []
    for k, (x, t) in enumerate(pieces):
        last = k == len(pieces) - 1
        with _sync(net, last):
            out = forward(x)
            loss = nn.functional.cross_entropy(out.float(), t, reduction="sum") / n
            if last and extra is not None:
                loss = loss + extra()
            scaler.scale(loss).backward()  # the scaler passes through but for fp16
        value += float(loss.detach())
        outs.append(out.detach())
    return value, torch.cat(outs)


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


def _cached_windows(net, forward, pieces, *, n, last, scaler,
                    extra) -> tuple[float, torch.Tensor]:
    """The documents of `pieces` (cut between their windows; the last piece holds their
    targets) as their share of the mean cross-entropy over `n` examples."""
    t = pieces[-1][1]
    model = getattr(net, "module", net)  # the pooling and head alone, not through DDP
    # with the whole body frozen (a gradual plan's first epochs) only the head learns: no re-run
    body = any(p.requires_grad for p in model.backbone.parameters())
    states, sums = [], []
    with torch.no_grad():  # every piece's windows summed into their documents, no graph
        for x, _ in pieces if last else pieces[:-1]:
            states.append(_rng_state())
            sums.append(forward({**x, "partial_sums": True}).float())
    if last:  # the backward that synchronises must be the one through the head: it comes last
        total = sum(sums).detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model.logits_of_sums(total).float(), t,
                                           reduction="sum")
        (g,) = torch.autograd.grad(scaler.scale(loss / n), total)  # no weight gets a gradient
        others = sum(sums[:-1], torch.zeros_like(sums[-1]))
    else:  # the last piece first, given the others' sums: their gradient comes with its own
        others = sum(sums[1:], sums[0]).detach().requires_grad_(True) if sums else None
        with _sync(net, False):
            out = forward({**pieces[-1][0], "others": others})
            loss = nn.functional.cross_entropy(out.float(), t, reduction="sum") / n
            scaler.scale(loss).backward()
        g = None if others is None else others.grad
    end = _rng_state()
    for (x, _), state in zip(pieces[:-1] if body else [], states):
        _set_rng_state(state)  # the same dropout masks as the sums the loss saw
        with _sync(net, False):
            (forward({**x, "partial_sums": True}).float() * g).sum().backward()
    if not last:
        _set_rng_state(end)
        return float(loss.detach()), out.detach()
    _set_rng_state(states[-1])
    with _sync(net, True):  # every document's logits: the head and DDP's all-reduce
        out = forward({**pieces[-1][0], "others": others})
        loss = nn.functional.cross_entropy(out.float(), t, reduction="sum") / n
        if extra is not None:
            loss = loss + extra()
        scaler.scale(loss).backward()
    _set_rng_state(end)
    return float(loss.detach()), out.detach()


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
