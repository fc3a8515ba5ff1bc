"""A collated text batch (TextPreprocess.collate: every document's windows are consecutive
rows) cut into the pieces of a gradient step (`TextModality.step_pieces`; training/steps.py
takes the whole batch's gradient over them): between documents, and a document longer than the
budget between its windows."""
from __future__ import annotations

import torch


def split_documents(batch: dict, targets: torch.Tensor, max_tokens: int) -> list[tuple]:
    """(batch, targets) pieces of a collated batch (TextPreprocess.collate: every document's
    windows are consecutive rows), cut between documents so a piece's windows x padded length
    stays within `max_tokens`; the batch itself when it fits. The documents whose windows alone
    are over it come first, cut between their windows (`split_windows`), then the others cut
    between documents; the first piece then holds `batch_order`, the batch's index of each
    document in the pieces' order."""
    doc, mask = batch["doc"], batch["attention_mask"]
    n_docs = int(batch.get("n_docs", int(doc.max()) + 1 if len(doc) else 0))
    if doc.numel() * mask.shape[1] <= max_tokens:
        return [(batch, targets)]
    counts = torch.bincount(doc, minlength=n_docs).tolist()
    lengths = mask.sum(1).tolist()
    over, r = torch.zeros(n_docs, dtype=torch.bool), 0
    for d, c in enumerate(counts):
        over[d] = c > 1 and c * max(lengths[r:r + c]) > max_tokens
        r += c
    if over.any():
        rows = over[doc]
        pieces = split_windows(_documents(batch, rows), targets[over], max_tokens)
        if not over.all():
            pieces += split_documents(_documents(batch, ~rows), targets[~over], max_tokens)
        pieces[0][0]["batch_order"] = torch.cat([over.nonzero(), (~over).nonzero()]).flatten()
        return pieces
    if n_docs < 2:
        return [(batch, targets)]
    bounds, first, row, width, r = [], 0, 0, 1, 0  # the open piece: documents first.., rows row..
    for d, c in enumerate(counts):
        w = max(lengths[r:r + c], default=1)
        if d > first and (r + c - row) * max(width, w) > max_tokens:
            bounds.append((first, d, row, r, width))
            first, row, width = d, r, 1
        width = max(width, w)
        r += c
    bounds.append((first, n_docs, row, r, width))
    return [({"input_ids": batch["input_ids"][r0:r1, :w], "attention_mask": mask[r0:r1, :w],
              "doc": doc[r0:r1] - d0, "n_docs": d1 - d0}, targets[d0:d1])
            for d0, d1, r0, r1, w in bounds]


def _documents(batch: dict, rows: torch.Tensor) -> dict:
    """The batch's documents of the windows `rows` (whole documents), numbered again from 0."""
    doc = torch.unique(batch["doc"][rows], return_inverse=True)[1]
    return {"input_ids": batch["input_ids"][rows], "attention_mask": batch["attention_mask"][rows],
            "doc": doc, "n_docs": int(doc.max()) + 1}


def split_windows(batch: dict, targets: torch.Tensor, max_tokens: int) -> list[tuple]:
    """Pieces of consecutive windows (at least one each) of at most `max_tokens` tokens
    (windows x their padded length), documents cut anywhere: each piece keeps the batch's
    document numbering and is marked `windows_of_batch` (training/steps.py pools a
    document's windows across pieces); the last piece carries every target, the others
    none."""
    ids, mask, doc = batch["input_ids"], batch["attention_mask"], batch["doc"]
    n_docs = int(batch.get("n_docs", int(doc.max()) + 1 if len(doc) else 0))
    lengths = mask.sum(1).tolist()
    bounds, start, width = [], 0, 1
    for r, n in enumerate(lengths):
        if r > start and (r + 1 - start) * max(width, n) > max_tokens:
            bounds.append((start, r, width))
            start, width = r, 1
        width = max(width, n)
    bounds.append((start, len(lengths), width))
    none = targets[:0]
    return [({"input_ids": ids[r0:r1, :w], "attention_mask": mask[r0:r1, :w], "doc": doc[r0:r1],
              "n_docs": n_docs, "windows_of_batch": True},
             targets if k == len(bounds) - 1 else none)
            for k, (r0, r1, w) in enumerate(bounds)]
