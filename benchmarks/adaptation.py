"""Does adapting ever cost accuracy? Every recipe, on the shipped data at every size, through the
CLI as a user runs it, judged once on the held-out test split.

    python benchmarks/adaptation.py --work benchmark-work/adaptation          # everything
    python benchmarks/adaptation.py --datasets animal-mnist --sizes 5 10 20 --seeds 0 1 2
    python benchmarks/adaptation.py --work W --report                        # tables only
    python benchmarks/adaptation.py --dev 100 --sizes 20 --recipes probe default  # a dev set

Recipes (each a `headstart train` command, then `headstart evaluate` on the test split):

    probe      --strategy linear_probe --cut none    frozen features of the whole network
    fine_tune  --strategy fine_tune --cut none       LP-FT, then the mix validation prefers
    top_tune   --strategy top_tune --cut none        images: LP-FT of the top two groups on the
                                                     frozen groups' output computed once
    contrastive --strategy contrastive               texts: pairs (SetFit-style), then a head
    best_cut   --strategy linear_probe --backbone B@G for each default cut G; the cut whose
                                                     *validation* accuracy is best is reported
    default    (no options)                          what a user gets: strategy auto, cut auto
    refit_full --refit full                          the default, then trained again on train +
                                                     val for as long as validation chose

Nothing is chosen on the test split: a run's settings come from its own validation split, the
best cut from the runs' validation accuracies, and each configuration is evaluated on the test
split once. To choose a default without touching the test split, --dev N judges every run on
a dev split instead: N examples per class drawn from the rest of the training pool (the
images or texts not sampled for training), into results-dev.jsonl. Results go to results.jsonl under --work, one line per run, so an interrupted
benchmark resumes where it stopped and the tables can be printed at any time (--report).

The table per dataset: for each size (examples per class; 0 = all), each recipe's mean and
minimum test accuracy over the seeds and its mean training time (whole `headstart train`
process, seconds), then `default - probe` with the probe's standard error on the test split
(sqrt(p(1-p)/n), n test examples): the default must never be below the probe by more than
one standard error.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import _common as C

SIZES = {"animal-mnist": [5, 10, 20, 50, 100, 0], "bbc-news": [2, 4, 8, 16, 64, 0],
         "bbc-headlines": [8]}
RECIPES = {"animal-mnist": ["probe", "fine_tune", "top_tune", "best_cut", "default"],
           "bbc-news": ["probe", "fine_tune", "contrastive", "best_cut", "default", "refit_full"],
           "bbc-headlines": ["probe", "fine_tune", "contrastive", "best_cut", "default",
                             "refit_full"]}
BACKBONE = {"animal-mnist": "efficientnet_lite0", "bbc-news": "minilm_l6",
            "bbc-headlines": "minilm_l6"}
OPTIONS = {"probe": ["--strategy", "linear_probe", "--cut", "none"],
           "fine_tune": ["--strategy", "fine_tune", "--cut", "none"],
           "top_tune": ["--strategy", "top_tune", "--cut", "none"],
           "contrastive": ["--strategy", "contrastive"], "default": [],
           "refit_full": ["--refit", "full"]}


def done(results: Path) -> dict:
    if not results.is_file():
        return {}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return {(r["dataset"], r["per_class"], r["seed"], r["run"]): r for r in rows}


def dev_split(work: Path, dataset: str, data: Path, seed: int, per_class: int) -> Path:
    """`per_class` examples of each class from the training pool that `data/train` was not
    sampled from (linked, not copied): a dev split that is never the test."""
    dev = data / "dev"
    if dev.is_dir():
        return dev
    pool = work / "data" / f"{dataset}-pool"
    if not pool.is_dir():
        C.headstart("make-dataset", dataset, str(pool))
    rng = random.Random(f"dev-{dataset}-{seed}")
    partial = data / "dev.partial"
    shutil.rmtree(partial, ignore_errors=True)
    for cls in sorted(d.name for d in (pool / "train").iterdir() if d.is_dir()):
        used = {f.name for f in (data / "train" / cls).iterdir()}
        rest = sorted(f for f in (pool / "train" / cls).iterdir() if f.name not in used)
        if not rest:
            raise SystemExit(f"--dev: no {cls} examples left in the pool beside the training "
                             f"sample of {data}; use a smaller size than all")
        (partial / cls).mkdir(parents=True)
        for f in rng.sample(rest, min(per_class, len(rest))):
            os.link(f, partial / cls / f.name)
    partial.rename(dev)
    return dev


def train_and_test(work: Path, data: Path, name: str, options: list[str], seed: int,
                   extra: list[str], judge: str = "test") -> dict:
    out = work / ("runs" if judge == "test" else f"runs-{judge}") / name
    t0 = time.perf_counter()
    C.headstart("train", str(data / "train"), "--out", str(out), "--seed", str(seed), "--quiet",
              "--overwrite", *options, *extra)
    seconds = time.perf_counter() - t0
    metrics = json.loads((out / "metrics.json").read_text())
    report = json.loads(C.headstart("evaluate", str(out), str(data / judge), "--json"))
    with open(out / "history.csv", newline="") as f:
        losses = [float(r["train_loss"]) for r in csv.DictReader(f)
                  if r["phase"] in ("fine_tune", "top_tune") and r.get("train_loss")]
    return {"test": report["accuracy"], "n_test": report["n"], "seconds": round(seconds, 1),
            # fine-tuning epochs' mean training losses: none may rise above the first
            "ft_losses": [round(x, 4) for x in losses],
            "val": metrics.get("val_accuracy"), "backbone": metrics.get("backbone"),
            "strategy": metrics.get("strategy"), "image_size": metrics.get("input_size"),
            "mix": (metrics.get("mix") or {}).get("alpha")}


def run_one(args, dataset: str, n: int, seed: int, results: Path) -> None:
    have = done(results)
    data = args.work / "data" / f"{dataset}-{n or 'all'}-{seed}"
    C.headstart("make-dataset", dataset, str(data), "--seed", str(seed),
              *(["--per-class", str(n)] if n else []))
    extra = list(args.train_args)
    if args.dev:
        dev_split(args.work, dataset, data, seed, args.dev)
    if dataset == "animal-mnist" and args.image_size != "auto":
        extra += ["--image-size", args.image_size]
    runs = []
    for recipe in args.recipes or RECIPES[dataset]:
        if recipe not in RECIPES[dataset]:
            continue
        if recipe == "best_cut":
            from headstart.backbones import default_cuts
            runs += [(f"cut:{g}", ["--strategy", "linear_probe", "--backbone",
                                   f"{BACKBONE[dataset]}@{g}"])
                     for g in default_cuts(BACKBONE[dataset])]
        else:
            runs.append((recipe, OPTIONS[recipe]))
    for run, options in runs:
        key = (dataset, n, seed, run)
        if key in have:
            continue
        row = {"dataset": dataset, "per_class": n, "seed": seed, "run": run,
               **train_and_test(args.work, data, f"{dataset}-{n}-{seed}-{run}", options, seed,
                                extra, judge="dev" if args.dev else "test")}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{dataset} {n or 'all'}/class seed {seed} {run:<12} "
              f"{'dev' if args.dev else 'test'} {row['test']:.4f} "
              f"val {row['val'] if row['val'] is not None else float('nan'):.4f} "
              f"{row['seconds']:.0f}s  ({row['strategy']}, {row['backbone']}, mix {row['mix']})",
              flush=True)


def best_cut(rows: list[dict]) -> dict | None:
    """Of one (dataset, size, seed)'s cut probes, the one validation prefers."""
    cuts = [r for r in rows if r["run"].startswith("cut:")]
    return max(cuts, key=lambda r: (r["val"] or 0.0, r["run"])) if cuts else None


def report(results: Path, judged: str = "test") -> str:
    rows = list(done(results).values())
    out = []
    for dataset in sorted({r["dataset"] for r in rows}):
        recipes = RECIPES[dataset]
        table = []
        for n in sorted({r["per_class"] for r in rows if r["dataset"] == dataset},
                        key=lambda n: n or 10 ** 9):
            mine = [r for r in rows if r["dataset"] == dataset and r["per_class"] == n]
            by = {}
            for seed in sorted({r["seed"] for r in mine}):
                seed_rows = [r for r in mine if r["seed"] == seed]
                for r in seed_rows:
                    if not r["run"].startswith("cut:"):
                        by.setdefault(r["run"], []).append(r)
                cut = best_cut(seed_rows)
                if cut:
                    by.setdefault("best_cut", []).append(cut)
            cells = [n or "all", len({r["seed"] for r in mine})]
            for recipe in recipes:
                rs = by.get(recipe, [])
                accs = [r["test"] for r in rs]
                cells.append(f"{sum(accs) / len(accs):.4f} / {min(accs):.4f} "
                             f"({sum(r['seconds'] for r in rs) / len(rs):.0f}s)" if rs else "-")
            cells.append(_versus(by.get("default", []), by.get("probe", [])))
            table.append(cells)
        headers = ["per class", "seeds", *[f"{r} mean / min (time)" for r in recipes],
                   "default - probe (probe SE)"]
        out.append(C.table(headers, table, title=f"{dataset}: {judged} accuracy"))
        tuned = [r for r in rows if r["dataset"] == dataset and r.get("ft_losses")]
        rising = [f"{r['run']} {r['per_class'] or 'all'}/{r['seed']} "
                  f"{r['ft_losses'][0]:.4f} -> {max(r['ft_losses'][1:]):.4f}" for r in tuned
                  if max(r["ft_losses"][1:], default=0) > r["ft_losses"][0]]
        out.append(f"fine-tuning runs whose mean training loss of an epoch rose above the "
                   f"first epoch's: {len(rising)} of {len(tuned)}"
                   + (f" ({', '.join(rising)})" if rising else ""))
        chosen = [r for r in rows if r["dataset"] == dataset and r["run"] == "default"]
        out.append("default's choices: " + "; ".join(
            f"{r['per_class'] or 'all'}/{r['seed']}: {r['strategy']} {r['backbone']} "
            f"{r['image_size']}px mix {r['mix']}" for r in sorted(
                chosen, key=lambda r: (r["per_class"] or 10 ** 9, r["seed"]))))
    return "\n\n".join(out)


def _versus(default: list[dict], probe: list[dict]) -> str:
    pairs = {r["seed"]: r for r in probe}
    both = [(d, pairs[d["seed"]]) for d in default if d["seed"] in pairs]
    if not both:
        return "-"
    diff = sum(d["test"] - p["test"] for d, p in both) / len(both)
    p = sum(p["test"] for _, p in both) / len(both)
    se = math.sqrt(p * (1 - p) / both[0][1]["n_test"])
    flag = "" if diff >= -se else "  BELOW"
    return f"{diff * 100:+.2f} pt ({se * 100:.2f}){flag}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Other options go to every `headstart train`.")
    p.add_argument("--datasets", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="examples per class (0 = all); default: every size of the dataset")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--recipes", nargs="+", default=None, choices=sorted(
        {r for rs in RECIPES.values() for r in rs}))
    p.add_argument("--image-size", default="auto", help="animal-mnist: pixels or auto")
    p.add_argument("--work", type=Path, default=Path("benchmark-work/adaptation"))
    p.add_argument("--report", action="store_true", help="print the tables of --work and stop")
    p.add_argument("--dev", type=int, default=0, metavar="N",
                   help="judge on N per class from the rest of the training pool, not the test")
    args, args.train_args = p.parse_known_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.work / ("results-dev.jsonl" if args.dev else "results.jsonl")
    os.environ.setdefault("HEADSTART_CACHE", str(args.work / "cache"))
    if not args.report:
        print(C.machine_line(), flush=True)
        for dataset in args.datasets:
            for n in args.sizes or SIZES[dataset]:
                for seed in args.seeds:
                    run_one(args, dataset, n, seed, results)
    print(report(results, "dev (the rest of the training pool)" if args.dev else "test"))


if __name__ == "__main__":
    main()
