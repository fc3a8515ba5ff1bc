"""A gradient step over a batch in pieces (training/steps.py, TextModality.step_pieces): long
texts' batches are cut between documents (or between windows, for a document over the
budget), and the step's gradient is the whole batch's, for the cross-entropy and for the pair
loss (whose pieces are re-run with the same dropout)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from headstart import devices
from headstart.backbones import create_backbone, get_config
from headstart.data.tokenize import TextPreprocess
from headstart.heads import LinearHead
from headstart.heads.model import TransferModel
from headstart.modalities.pieces import split_documents
from headstart.training.pairs import pair_loss
from headstart.training.steps import backward_pieces

WINDOW = 32
DOC_BUDGET = 20 * WINDOW  # over the fixture's longest document (19 windows)


def fp32_scaler():  # the scaler of an fp32 step (devices.scaler: disabled, it passes through)
    return devices.scaler(torch.device("cpu"), None)


@pytest.fixture
def batch(articles):
    """Ten real articles of 1 to ~30 windows of 32 tokens, some short: uneven documents."""
    texts, labels = articles
    texts = [texts[0][:80], *texts[1:5], texts[6][:200], *texts[7:10], texts[12][:40]]
    pre = TextPreprocess(get_config("tiny_text").tokenizer, WINDOW)
    x = pre.collate(pre.windows(texts))
    return x, torch.tensor([i % 3 for i in range(len(texts))])


def model() -> TransferModel:
    torch.manual_seed(0)
    backbone = create_backbone("tiny_text", input_size=WINDOW)
    return TransferModel(backbone, LinearHead(backbone.feature_dim, 3))


def grads(m) -> list[torch.Tensor]:
    return [p.grad.clone() for p in m.parameters() if p.grad is not None]


def test_pieces_hold_every_document_once_in_order_within_the_budget(batch):
    x, t = batch
    budget = DOC_BUDGET
    pieces = split_documents(x, t, budget)
    assert len(pieces) > 3
    assert torch.equal(torch.cat([pt for _, pt in pieces]), t)
    docs = torch.bincount(x["doc"]).tolist()
    seen = 0
    for px, pt in pieces:
        n = px["n_docs"]
        assert n == len(pt) and px["doc"].tolist() == sorted(px["doc"].tolist())
        assert set(px["doc"].tolist()) == set(range(n))
        assert px["input_ids"].numel() <= budget
        assert px["attention_mask"][:, -1].any()  # padding beyond the longest row trimmed
        assert len(px["doc"]) == sum(docs[seen:seen + n])
        seen += n
    assert seen == len(t)
    assert split_documents(x, t, x["input_ids"].numel()) == [(x, t)]  # it fits: as it is


def test_pieces_embed_exactly_as_the_whole_batch(batch):
    x, t = batch
    m = model().eval()
    with torch.no_grad():
        whole = m(x, embed=True)
        parts = torch.cat([m(px, embed=True) for px, _ in split_documents(x, t, DOC_BUDGET)])
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)


def test_cross_entropy_in_pieces_is_the_whole_batch_gradient(batch):
    x, t = batch
    m = model().eval()  # no dropout: the two steps see the same network
    nn.functional.cross_entropy(m(x), t).backward()
    want = grads(m)
    m.zero_grad()
    value, logits = backward_pieces(m, m, split_documents(x, t, DOC_BUDGET), pairs=False,
                                    scaler=fp32_scaler())
    for g, w in zip(grads(m), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert value == pytest.approx(float(nn.functional.cross_entropy(m(x), t).detach()), rel=1e-5)
    assert logits.shape == (len(t), 3)


def test_pair_loss_in_pieces_is_the_whole_batch_gradient(batch):
    x, t = batch
    m = model().eval()
    pair_loss(m(x, embed=True), t).backward()
    want = grads(m)
    m.zero_grad()
    embed = lambda px: m(px, embed=True)  # noqa: E731
    value, _ = backward_pieces(m, embed, split_documents(x, t, DOC_BUDGET), pairs=True,
                               scaler=fp32_scaler())
    for g, w in zip(grads(m), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert value == pytest.approx(float(pair_loss(m(x, embed=True), t).detach()), rel=1e-5)


def test_pair_pieces_are_re_run_with_the_dropout_masks_the_loss_saw(batch):
    """In training mode the second pass must draw the first pass's dropout masks: the result
    equals one graph over the pieces embedded in turn from the same random state."""
    x, t = batch
    pieces = split_documents(x, t, DOC_BUDGET)
    m = model().train()
    torch.manual_seed(5)
    pair_loss(torch.cat([m(px, embed=True) for px, _ in pieces]), t).backward()
    want = grads(m)
    m.zero_grad()
    torch.manual_seed(5)
    backward_pieces(m, lambda px: m(px, embed=True), pieces, pairs=True, scaler=fp32_scaler())
    for g, w in zip(grads(m), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    m.zero_grad()
    torch.manual_seed(6)  # other masks: another gradient (the test can tell them apart)
    backward_pieces(m, lambda px: m(px, embed=True), pieces, pairs=True, scaler=fp32_scaler())
    assert not all(torch.allclose(g, w, rtol=1e-4, atol=1e-6) for g, w in zip(grads(m), want))


def test_a_regulariser_is_added_once_whatever_the_pieces(batch):
    x, t = batch
    m = model().eval()
    first = next(m.parameters())
    extra = lambda: first.pow(2).sum()  # noqa: E731
    for pairs in (False, True):
        f = (lambda px: m(px, embed=True)) if pairs else m
        m.zero_grad()
        one, _ = backward_pieces(m, f, [(x, t)], pairs=pairs, scaler=fp32_scaler(), extra=extra)
        want = grads(m)
        m.zero_grad()
        split, _ = backward_pieces(m, f, split_documents(x, t, DOC_BUDGET), pairs=pairs,
                                   scaler=fp32_scaler(), extra=extra)
        assert split == pytest.approx(one, rel=1e-5)
        for g, w in zip(grads(m), want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


# -- under DistributedDataParallel: ranks with different numbers of pieces ---------------------
def _ddp_worker(r: int, port: str, tmp: str) -> None:
    import json
    import os
    from pathlib import Path

    from headstart.data.shipped import bbc_split, load_bbc_news
    from headstart.training import distributed as dist
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=port, OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    dist.init_from_env()
    texts, labels, _ = load_bbc_news()
    pool, _ = bbc_split(texts, labels)
    mine = pool[:4] if r == 0 else pool[4:11]  # 4 and 7 articles: different piece counts
    pre = TextPreprocess(get_config("tiny_text").tokenizer, WINDOW)
    x = pre.collate(pre.windows([texts[i] for i in mine]))
    # every other article cut to a window: short documents after the long ones' windows
    mixed = pre.collate(pre.windows([texts[i][:60] if k % 2 else texts[i]
                                     for k, i in enumerate(mine)]))
    t = torch.tensor([i % 3 for i in range(len(mine))])
    # a budget over every one of the 11 articles (cut between documents), and one under some
    # (cut between windows: cross-entropy only, pair steps read first windows)
    whole = max(len(w) for w in pre.windows([texts[i] for i in pool[:11]])) * WINDOW
    out = {}
    for case, pairs, budget, xb in (("docs", False, whole, x), ("pairs", True, whole, x),
                                    ("windows", False, 4 * WINDOW, x),
                                    ("mixed", False, 4 * WINDOW, mixed)):
        m = model().eval()
        m.head.requires_grad_(not pairs)  # the pair phase's head waits (DDP needs every
        # trained parameter to get a gradient)
        f = (lambda px, net: net(px, embed=True)) if pairs else (lambda px, net: net(px))
        loss = pair_loss(m(xb, embed=True), t) if pairs else nn.functional.cross_entropy(m(xb), t)
        loss.backward()  # this rank's whole batch, no DDP
        alone = [g.tolist() for g in grads(m)]
        m.zero_grad()
        net = dist.wrap(m)
        pieces = split_documents(xb, t, budget)
        kinds = [bool(px.get("windows_of_batch")) for px, _ in pieces]
        assert kinds[0] == (case in ("windows", "mixed")) and kinds[-1] == (case == "windows")
        backward_pieces(net, lambda px: f(px, net), pieces, pairs=pairs, scaler=fp32_scaler())
        out[case] = {"pieces": len(pieces), "alone": alone,
                     "ddp": [g.tolist() for g in grads(m)]}
    (Path(tmp) / f"rank{r}.json").write_text(json.dumps(out))


def test_pieces_under_ddp_average_the_ranks_whole_batch_gradients(tmp_path):
    """Only the last piece synchronises: with 4 articles on one rank and 7 on the other (other
    numbers of pieces), cut between documents, between windows, or long documents' windows
    then short documents, both end with the mean of the two ranks' whole-batch gradients."""
    import json
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for case in ("docs", "pairs", "windows", "mixed"):
        a, b = ranks[0][case], ranks[1][case]
        assert a["pieces"] != b["pieces"] and min(a["pieces"], b["pieces"]) > 1
        for ga, gb, da, db in zip(a["alone"], b["alone"], a["ddp"], b["ddp"]):
            mean = (torch.tensor(ga) + torch.tensor(gb)) / 2
            torch.testing.assert_close(torch.tensor(da), mean, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(torch.tensor(db), mean, rtol=1e-4, atol=1e-6)


# -- a document longer than the budget: cut between its windows ---------------------------------
CUT = 3 * WINDOW  # the longest articles hold many more windows; three of the ten fewer


@pytest.fixture
def long_batch(articles):
    """Four whole articles, every one over CUT: nothing but windows pieces."""
    texts, _ = articles
    pre = TextPreprocess(get_config("tiny_text").tokenizer, WINDOW)
    return pre.collate(pre.windows(texts[1:5])), torch.tensor([0, 1, 2, 0])


def in_turn(m, pieces) -> torch.Tensor:
    """The batch's cross-entropy as one graph over the pieces run in turn: the long
    documents' summed windows, then the others."""
    cut = [px for px, _ in pieces if px.get("windows_of_batch")]
    sums = sum(m({**px, "partial_sums": True}) for px in cut)
    logits = [m.logits_of_sums(sums), *(m(px) for px, _ in pieces[len(cut):])]
    return nn.functional.cross_entropy(torch.cat(logits), torch.cat([pt for _, pt in pieces]))


def test_a_document_over_the_budget_is_cut_between_its_windows(batch):
    x, t = batch
    pieces = split_documents(x, t, CUT)
    cut = [px for px, _ in pieces if px.get("windows_of_batch")]
    assert 1 < len(cut) < len(pieces)
    assert all(px.get("windows_of_batch") for px, _ in pieces[:len(cut)])  # they come first
    assert all(px["input_ids"].numel() <= CUT for px, _ in pieces)
    assert sum(len(px["doc"]) for px, _ in pieces) == len(x["doc"])  # every window once
    order = pieces[0][0]["batch_order"]
    assert sorted(order.tolist()) == list(range(len(t)))
    assert torch.equal(torch.cat([pt for _, pt in pieces]), t[order])  # the targets, once
    windows = torch.bincount(x["doc"]).tolist()
    widths = [int(x["attention_mask"][x["doc"] == d].sum(1).max()) for d in range(len(t))]
    over = [d for d in range(len(t)) if windows[d] > 1 and windows[d] * widths[d] > CUT]
    assert order[:len(over)].tolist() == over  # the documents over the budget, those alone
    m = model().eval()
    with torch.no_grad():  # the long documents' sums pool to their embeddings, in the order
        sums = sum(m({**px, "partial_sums": True}) for px in cut)
        parts = [m.backbone.pool_sums(sums), *(m(px, embed=True) for px, _ in pieces[len(cut):])]
        torch.testing.assert_close(torch.cat(parts)[torch.argsort(order)], m(x, embed=True),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("which", ["batch", "long_batch"])
def test_cross_entropy_cut_between_windows_is_the_whole_batch_gradient(which, request):
    """With short documents after the long ones (the window pieces' backward runs unsynced)
    and with long documents alone (the head's backward last)."""
    x, t = request.getfixturevalue(which)
    pieces = split_documents(x, t, CUT)
    assert bool(pieces[-1][0].get("windows_of_batch")) == (which == "long_batch")
    m = model().eval()
    first = next(m.parameters())
    extra = lambda: first.pow(2).sum()  # noqa: E731
    (nn.functional.cross_entropy(m(x), t) + extra()).backward()
    want = grads(m)
    m.zero_grad()
    value, logits = backward_pieces(m, m, pieces, pairs=False, scaler=fp32_scaler(), extra=extra)
    assert len(grads(m)) == len(want)  # the head's too
    for g, w in zip(grads(m), want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)
    assert value == pytest.approx(float((nn.functional.cross_entropy(m(x), t) + extra()).detach()),
                                  rel=1e-5)
    torch.testing.assert_close(logits, m(x).detach(), rtol=1e-4, atol=1e-5)  # the batch's order


@pytest.mark.parametrize("which", ["batch", "long_batch"])
def test_window_pieces_are_re_run_with_the_dropout_masks_the_loss_saw(which, request):
    """In training mode: the same gradient as one graph over the pieces drawn in turn from the
    same random state; another seed gives another one."""
    x, t = request.getfixturevalue(which)
    pieces = split_documents(x, t, CUT)
    m = model().train()
    torch.manual_seed(5)
    in_turn(m, pieces).backward()
    want = grads(m)
    for seed, same in ((5, True), (6, False)):
        m.zero_grad()
        torch.manual_seed(seed)
        backward_pieces(m, m, pieces, pairs=False, scaler=fp32_scaler())
        close = all(torch.allclose(g, w, rtol=1e-4, atol=1e-6) for g, w in zip(grads(m), want))
        assert close == same


def test_a_fine_tunes_training_accuracy_pairs_each_document_with_its_own_label(articles,
                                                                              monkeypatch):
    """Where a batch's long documents are cut between windows their pieces come first, and the
    step hands back the logits in the batch's order: the epoch's train_acc must compare them
    with the batch's targets in that same order (it compared them with the pieces' order,
    which counted documents against other documents' labels)."""
    from headstart import api
    from headstart.modalities import text as text_modality
    from headstart.training import TrainConfig, loop
    monkeypatch.setattr(text_modality, "STEP_TOKENS", 3 * 64)  # cut the long articles
    seen, reordered = [], []
    step_pieces = text_modality.TextModality.step_pieces

    def watched_pieces(self, x, t):
        pieces = step_pieces(self, x, t)
        order = pieces[0][0].get("batch_order")
        reordered.append(order is not None and not torch.equal(order, torch.arange(len(t))))
        seen.append([t.clone()])
        return pieces
    backward = loop.backward_pieces

    def watched_backward(*a, **kw):
        value, out = backward(*a, **kw)
        seen[-1].append(out.clone())
        return value, out
    monkeypatch.setattr(text_modality.TextModality, "step_pieces", watched_pieces)
    monkeypatch.setattr(loop, "backward_pieces", watched_backward)
    texts, labels = articles
    texts = [t if i % 2 else t[:150] for i, t in enumerate(texts)]  # long and short documents
    cfg = TrainConfig(backbone="tiny_text", strategy="fine_tune", epochs=1, lr=1e-4,
                      input_size=64, val_fraction=0.0, batch_size=8)
    result = api.train(texts, labels=labels, config=cfg, progress=False, log=lambda *_: None)
    assert any(reordered)  # batches whose cut documents' pieces came first, out of order
    row = next(r for r in result.history if r["phase"] == "fine_tune")
    right = sum(int((out.argmax(1) == t).sum()) for t, out in seen)
    assert row["train_acc"] == pytest.approx(right / sum(len(t) for t, _ in seen))
