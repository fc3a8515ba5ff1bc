"""Peak memory and time of one text gradient step, whole and in pieces of a token budget.

    python benchmarks/step_memory.py                       # MiniLM, budgets 0 16384 4096 2048 1024
    python benchmarks/step_memory.py --budgets 0 2048 --steps 3 --kinds long

A step is what `Trainer._train_epoch` runs (training/steps.py `backward_pieces` on the pieces
of `TextModality.step_pieces`, that is `split_documents` at the budget), in training mode
(dropout on) with an Adam update, on MiniLM-L6 (the default text backbone, pre-trained) and
real BBC News articles of the training pool at the 256-token window:

- classify: a `--batch-size` (32) batch of whole articles, every window of each (the
  fine_tune and scratch steps);
- one_long: the classify batch with its last article swapped for the pool's first over
  1,024 tokens (5 or more windows; a random batch of 32 of all 1,427 training articles holds
  one or more in 58% of an epoch's batches): that one is cut between its windows, the
  others between documents;
- long: the same over the pool's `--batch-size` longest articles (up to 16 windows, 4,096
  tokens, each): a document over the budget is cut between its windows;
- pairs: a 16-article batch of first windows under the pair loss (the contrastive steps;
  the attention-probability dropout off, as the loop runs them).

Budget 0 is the batch whole (the step before pieces). Each (kind, budget) runs in a fresh
process: its peak is ru_maxrss at the end minus the RSS once the model, optimizer state and
batch exist (what the step adds), and the time is the median over --steps steps after one
untimed step. Ratios are against budget 0 in the same run.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time

import _common as C

KINDS = ("classify", "one_long", "long", "pairs")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=int, nargs="+", default=[0, 16384, 4096, 2048, 1024])
    p.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    p.add_argument("--batch-size", type=int, default=32, help="articles of a classify step")
    p.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    p.add_argument("--child", nargs=2, metavar=("KIND", "BUDGET"), help=argparse.SUPPRESS)
    return p.parse_args()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(kind: str, budget: int, steps: int, batch_size: int) -> dict:
    import torch

    from headstart import devices
    from headstart.backbones import create_backbone, get_config
    from headstart.data.shipped import bbc_split, load_bbc_news
    from headstart.data.tokenize import TextPreprocess
    from headstart.heads import LinearHead
    from headstart.heads.model import TransferModel
    from headstart.modalities.pieces import split_documents
    from headstart.training.steps import backward_pieces

    torch.manual_seed(0)
    texts, labels, _ = load_bbc_news()
    pool, _ = bbc_split(texts, labels)
    classes = sorted(set(labels))
    pairs = kind == "pairs"
    n = 16 if pairs else batch_size
    pre = TextPreprocess(get_config("minilm_l6").tokenizer, 256, truncate=pairs)
    pick = list(sorted(pool, key=lambda i: -len(texts[i]))[:n] if kind == "long" else pool[:n])
    if kind == "one_long":
        pick[-1] = next(i for i in pool if len(pre.windows([texts[i]])[0]) > 4)
    x = pre.collate(pre.windows([texts[i] for i in pick]))
    t = torch.tensor([classes.index(labels[i]) for i in pick])
    backbone = create_backbone("minilm_l6", input_size=256)
    model = TransferModel(backbone, LinearHead(backbone.feature_dim, len(classes))).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pieces = split_documents(x, t, budget) if budget else [(x, t)]
    scaler = devices.scaler(torch.device("cpu"), None)  # fp32: passes through

    def forward(px):
        return model(px, embed=pairs)

    def step():
        opt.zero_grad(set_to_none=True)
        with backbone.attention_dropout(0.0) if pairs else contextlib.nullcontext():
            backward_pieces(model, forward, pieces, pairs=pairs, scaler=scaler)
        opt.step()

    with torch.no_grad():  # Adam's moments exist before the baseline is read
        for p in model.parameters():
            p.grad = torch.zeros_like(p)
    opt.step()
    base = rss_mb()
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"windows": int(x["input_ids"].shape[0]), "pieces": len(pieces), "base": base,
            "longest": int(torch.bincount(x["doc"]).max()),
            "peak": peak, "step_mb": peak - base, "seconds": C.median(times)}


def main() -> None:
    args = parse_args()
    if args.child:
        kind, budget = args.child[0], int(args.child[1])
        print(json.dumps(child(kind, budget, args.steps, args.batch_size)))
        return
    print(C.machine_line())
    rows = []
    for kind in args.kinds:
        first = None
        for b in args.budgets:
            out = subprocess.run([sys.executable, __file__, "--child", kind, str(b), "--steps",
                                  str(args.steps), "--batch-size", str(args.batch_size)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first = first or r
            rows.append([kind, b or "whole", r["windows"], r["pieces"], f"{r['peak']:.0f}",
                         f"{r['step_mb']:.0f}", f"{r['step_mb'] / max(first['step_mb'], 1):.2f}",
                         f"{r['seconds']:.2f}", f"{r['seconds'] / first['seconds']:.2f}"])
            print(f"  {kind} budget {b or 'whole'}: step +{r['step_mb']:.0f} MB "
                  f"(peak {r['peak']:.0f}), {r['seconds']:.2f} s; {r['windows']} windows, the "
                  f"longest article {r['longest']}, {r['pieces']} pieces", flush=True)
    print()
    print(C.table(["step", "budget tokens", "windows", "pieces", "peak RSS MB", "step MB",
                   "x whole", "s/step", "x whole"], rows,
                  title="one MiniLM gradient step on BBC articles, whole and in pieces"))


if __name__ == "__main__":
    main()
