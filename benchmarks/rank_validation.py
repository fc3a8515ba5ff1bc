"""Do transferability scores agree with the accuracy candidates really reach? And how long does
ranking take next to fine-tuning?

    python benchmarks/rank_validation.py --threads 1          # 3 animal-mnist tasks + BBC News
    python benchmarks/rank_validation.py --threads 1 --quick  # smaller samples

(On the shared 2-core reference machine: ~10 min with --threads 1, 16-20 min with torch's
default 2 threads, which stall whenever another job holds a core; --quick ~3-8 min.)

For every task: `headstart.transferability.rank` scores the candidates on at most 1,000
training examples; then each candidate's real accuracy is measured with a linear probe (the
L2 logistic regression of headstart's `linear_probe`, on frozen features of the same training
examples) on the task's held-out test split, never seen by the ranking. Printed per task:
Kendall's tau between each score and the accuracies, whether the top candidate by the
recommended score (LogME) is within MARGIN points of the best, and whether the random-init
control ranks last (by score, and in reality). Then ranking time next to fine-tuning one
candidate (efficientnet_lite0, `headstart train --strategy fine_tune --epochs 1`) on the first
task's training data, measured side by side in this process.

Images are the shipped animal-mnist silhouettes (28 px, upscaled) at --image-size (default
128 px, not the backbones' native 224-260 px, to keep the run short; every candidate, the
probes and the fine-tuning use the same size). Texts are the shipped BBC News articles, each
truncated to its first 256-token window (rank's truncate=True; all of an article's windows
would take ~2.4x longer).
Data and feature cache live under --workdir (default: a fresh temporary folder, deleted
afterwards); the cache is emptied first, so the ranking times are cold (ONNX exports included).
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np

import _common as C

MARGIN = 2.0  # accuracy points
IMAGE_CANDIDATES = ("efficientnet_lite0,efficientnet_lite1,efficientnet_lite2,"
                    "efficientnet_lite0@stage6,efficientnet_lite0@stage4,"
                    "random:efficientnet_lite0")
TEXT_CANDIDATES = "minilm_l6,minilm_l6@layer4,minilm_l6@layer2,random:minilm_l6,tiny_text"
IMAGE_TASKS = {  # name: (classes, training examples per class)
    "mammals5": (("cat", "cow", "dog", "horse", "sheep"), 200),
    "mixed5": (("bear", "bird", "elephant", "giraffe", "zebra"), 200),
    "all10": (None, 100),
}
SCORES = ("logme", "hscore", "leep", "nce")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="40 (all10: 20) images per class, "
                   "50 test images per class, 96 px, 30 texts per topic, 200 test texts")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default 128, quick 96)")
    p.add_argument("--text-per-class", type=int, default=None, help="default 100, quick 30")
    p.add_argument("--n-boot", type=int, default=10, help="half-samples for the intervals")
    p.add_argument("--no-text", action="store_true")
    p.add_argument("--no-finetune", action="store_true", help="skip the timing of fine-tuning")
    p.add_argument("--advice", action="store_true", help="also train what rank recommends, "
                   "fine_tune and the default on every task and compare their test accuracy "
                   "with the best recipe measured (several trainings per task)")
    p.add_argument("--timing-only", action="store_true", help="only the timing (first task)")
    p.add_argument("--threads", type=int, default=None, help="torch (and so ONNX Runtime) "
                   "threads; 1 makes timings on a shared machine far steadier")
    p.add_argument("--workdir", type=Path, default=None, help="data and cache (kept)")
    a = p.parse_args()
    a.image_size = a.image_size or (96 if a.quick else 128)
    a.text_per_class = a.text_per_class or (30 if a.quick else 100)
    a.scale = 0.2 if a.quick else 1.0  # of the training examples per class
    a.test_per_class = 50 if a.quick else None
    a.text_test = 200 if a.quick else None
    return a


# ----------------------------------------------------------------------------- data

def image_task(root: Path, classes, per_class: int, test_per_class: int | None, seed: int = 0):
    """(train, test) ImageDatasets of the chosen classes from the written animal-mnist folder."""
    from headstart.data.datasets import ImageDataset, from_folder

    out = []
    for split, n in (("train", per_class), ("test", test_per_class)):
        ds = from_folder(root / split)
        keep = [i for i, y in enumerate(ds.labels) if classes is None or y in classes]
        rng = np.random.default_rng(seed)
        chosen = []
        for c in sorted({ds.labels[i] for i in keep}):
            idx = [i for i in keep if ds.labels[i] == c]
            chosen += sorted(rng.permutation(idx)[:n].tolist()) if n else idx
        out.append(ImageDataset([ds.sources[i] for i in chosen], [ds.labels[i] for i in chosen]))
    return out


def text_task(per_class: int, test_n: int | None, seed: int = 0):
    from headstart.data.shipped import bbc_split, load_bbc_news
    from headstart.data.texts import TextDataset

    texts, labels, _ = load_bbc_news()
    pool, test = bbc_split(texts, labels)
    rng = np.random.default_rng(seed)
    train = []
    for c in sorted(set(labels)):
        train += rng.permutation([i for i in pool if labels[i] == c])[:per_class].tolist()
    if test_n:
        test = sorted(rng.permutation(test)[:test_n].tolist())
    make = lambda idx: TextDataset([texts[i] for i in idx], [labels[i] for i in idx])  # noqa
    return make(sorted(train)), make(test)


# ----------------------------------------------------------------------------- one task

def probe_accuracies(result, train, test, kw) -> dict[str, float]:
    """Test accuracy of a linear probe on each candidate's frozen features (train features
    come from the ranking's cache)."""
    from headstart.training.headfit import fit_linear_head, head_logits
    from headstart.transferability.candidates import by_network, network_features

    classes = train.classes
    ytr = np.array([classes.index(v) for v in train.labels])
    yte = np.array([classes.index(v) for v in test.labels])
    acc = {}
    for group in by_network([r.candidate for r in result.results]):
        ftr = network_features(group, train, **kw)
        fte = network_features(group, test, **kw)
        for cand, a, b in zip(group, ftr, fte):
            W, bias = fit_linear_head(a.features[:, None], ytr[a.kept], len(classes))
            pred = head_logits(b.features[:, None], W, bias).argmax(1)
            acc[cand.name] = 100.0 * float(np.mean(pred == yte[b.kept]))
    return acc


def run_task(name: str, train, test, candidates: str, args, **rank_kw) -> dict:
    from headstart.training.features import FeatureCache
    from headstart.transferability.rank import rank
    from headstart.transferability.recommend import recommend

    t0 = time.perf_counter()
    result = rank(train, candidates=candidates, n_boot=args.n_boot, progress=False,
                  log=lambda *_: None, **rank_kw)
    seconds = time.perf_counter() - t0
    kw = dict(image_size=rank_kw.get("image_size"), truncate=rank_kw.get("truncate", False),
              cache=FeatureCache(), progress=False)
    acc = probe_accuracies(result, train, test, kw)
    print(f"\n== {name}: {len(train)} training {train.unit} ({len(train.classes)} classes), "
          f"{len(test)} test; ranked in {seconds:.1f} s")
    print(result.table())
    rows = [[r.name, *[r.scores[s].value if r.scores[s] else "n/a" for s in SCORES],
             acc[r.name]] for r in result.results]
    print(C.table(["candidate (LogME order)", *SCORES, "probe acc %"], rows))
    rec = recommend(result)
    task = {"name": name, "result": result, "acc": acc, "seconds": seconds, "n": len(train)}
    if args.advice:
        task["recipes"] = recipe_accuracies(rec, train, test, rank_kw.get("image_size"),
                                            truncate=rank_kw.get("truncate", False))
    return task


def recipe_accuracies(rec, train, test, image_size, *, truncate: bool) -> dict[str, float]:
    """Test accuracy (%) of `headstart train` with what rank recommends, with fine_tune of the
    default backbone, with no options (the default), and for texts with contrastive, each on
    the task's training data."""
    from headstart import api
    from headstart.training.config import TrainConfig

    size = {"input_size": image_size} if image_size else {}
    recipes = {f"recommended ({rec.backbone}, {rec.strategy})":
               dict(backbone=rec.backbone, weights=rec.weights, strategy=rec.strategy),
               "fine_tune": dict(strategy="fine_tune", cut="none"), "default": {}}
    if train.modality == "text":  # pair training, SetFit's recipe, is a text recipe
        recipes["contrastive"] = dict(strategy="contrastive")
    out = {}
    for name, options in recipes.items():
        cfg = TrainConfig(truncate=truncate, **size, **options)
        model = api.train(train, config=cfg, progress=False, log=lambda *_: None)
        out[name] = 100.0 * api.evaluate(model, test, progress=False)[0]["accuracy"]
    return out


def advice_summary(tasks: list[dict], margin: float = 1.0) -> None:
    """Per task: the recommended recipe's realised accuracy next to the best recipe measured
    (every candidate's probe, fine_tune, the default), and whether it is within `margin`."""
    rows, hits = [], 0
    for t in tasks:
        measured = {**{f"probe {k}": v for k, v in t["acc"].items()}, **t["recipes"]}
        rec = next(k for k in t["recipes"] if k.startswith("recommended"))
        best = max(measured, key=measured.get)
        ok = measured[best] - t["recipes"][rec] <= margin
        hits += ok
        gap = measured[best] - t["recipes"][rec]
        rows.append([t["name"], f"{rec} {t['recipes'][rec]:.1f}",
                     f"{best} {measured[best]:.1f}", f"{gap:.1f}", "yes" if ok else "NO"])
    print("\n" + C.table(["task", "recommended (acc %)", "best measured (acc %)", "gap",
                          f"within {margin:g} pt"], rows,
                         title="Is rank's advice as good as the best recipe measured?"))
    print(f"recommendation within {margin:g} point of the best on {hits} of {len(tasks)} "
          "tasks")
    print("every recipe trained (test accuracy %): " + "; ".join(
        f"{t['name']}: " + ", ".join(f"{k} {v:.1f}" for k, v in t["recipes"].items())
        for t in tasks))


def agreement(task: dict, by: str = "logme") -> dict:
    """Kendall's tau of each score (and the domain column) with the probe accuracies; the
    top-1 margin; where the random control lands by score and in reality."""
    from scipy.stats import kendalltau

    res, acc = task["result"], task["acc"]
    taus = {}
    for s in SCORES + ("domain",):
        pts = [((r.domain if s == "domain" else r.scores[s]), acc[r.name]) for r in res.results]
        pts = [(v.value, a) for v, a in pts if v is not None]
        taus[s] = (float(kendalltau(*zip(*pts))[0]), len(pts)) if len(pts) >= 3 else (
            float("nan"), len(pts))
    order = [r for r in res.results if r.scores[by] is not None]
    top, best = order[0].name, max(acc, key=acc.get)
    ctrl = next((r for r in order if r.candidate.random), None)
    val = lambda r: r.scores[by].value  # noqa: E731
    return {"taus": taus, "top": top, "best": best, "margin": acc[best] - acc[top],
            "random_last": ctrl is not None and order[-1] is ctrl,
            "random_below_pretrained": ctrl is not None and all(
                val(r) > val(ctrl) for r in order
                if r.candidate.kind not in ("control", "untrained")),
            "random_acc_last": ctrl is not None and min(acc, key=acc.get) == ctrl.name}


# ----------------------------------------------------------------------------- fine-tuning time

def finetune_time(train, test, image_size: int) -> dict:
    """`headstart train --strategy fine_tune --epochs 1` of efficientnet_lite0 on the same
    training data (fresh cache, so its head phase extracts features too), and its accuracy."""
    from headstart import api
    from headstart.training.config import TrainConfig

    cfg = TrainConfig(backbone="efficientnet_lite0", strategy="fine_tune", epochs=1,
                      input_size=image_size, patience=5)
    t0 = time.perf_counter()
    model = api.train(train, config=cfg, progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    report, _ = api.evaluate(model, test, progress=False)
    ft = [h for h in model.history if h.get("phase") == "fine_tune"]
    epoch = float(ft[-1]["seconds"]) if ft and "seconds" in ft[-1] else float("nan")
    return {"wall": wall, "epoch": epoch, "acc": 100.0 * report["accuracy"]}


# ----------------------------------------------------------------------------- main

def summary(tasks: list[dict]) -> None:
    rows, agg = [], {s: [] for s in SCORES + ("domain",)}
    for t in tasks:
        a = agreement(t)
        for s, (tau, n) in a["taus"].items():
            if n >= 3:
                agg[s].append(tau)
        rows.append([t["name"], t["n"], len(t["acc"]),
                     *[f"{a['taus'][s][0]:+.2f} ({a['taus'][s][1]})" for s in agg],
                     f"{a['top']} {t['acc'][a['top']]:.1f}",
                     f"{a['best']} {t['acc'][a['best']]:.1f}",
                     f"{a['margin']:.1f} {'yes' if a['margin'] <= MARGIN else 'NO'}",
                     "yes" if a["random_last"] else "NO",
                     "yes" if a["random_below_pretrained"] else "NO",
                     "yes" if a["random_acc_last"] else "no", f"{t['seconds']:.0f}"])
    heads = ["task", "train", "cands", *[f"tau {s} (n)" for s in agg],
             "top-1 by LogME (acc)", "best (acc)", f"margin<={MARGIN:g}",
             "control last", "control < every pretrained", "control worst acc", "rank s"]
    print("\n" + C.table(heads, rows, title="Agreement with probe accuracy on the test splits"))
    print("mean tau over tasks: " + ", ".join(
        f"{s} {np.mean(v):+.2f}" for s, v in agg.items() if v))


def main() -> None:
    args = parse_args()
    from headstart.data.shipped import write_animal_mnist

    own = args.workdir is None
    work = args.workdir or Path(C.tempfile.mkdtemp(prefix="headstart-rankval-"))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    C.os.environ["HEADSTART_CACHE"] = str(cache)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    print(C.machine_line())
    try:
        root = write_animal_mnist(work / "animal-mnist")
        tasks, first = [], None
        for name, (classes, per_class) in IMAGE_TASKS.items():
            train, test = image_task(root, classes, max(4, round(per_class * args.scale)),
                                     args.test_per_class)
            first = first or (train, test)
            if not args.timing_only:
                tasks.append(run_task(name, train, test, IMAGE_CANDIDATES, args,
                                      image_size=args.image_size))
        if not (args.no_text or args.timing_only):
            train, test = text_task(args.text_per_class, args.text_test)
            tasks.append(run_task("bbc-news", train, test, TEXT_CANDIDATES, args, truncate=True))
        if tasks:
            summary(tasks)
            if args.advice:
                advice_summary(tasks)
        if not args.no_finetune:
            timing(first, args)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def timing(data, args) -> None:
    """Cold ranking, cold 1-epoch fine-tuning, cold ranking again, back to back: the two
    ranking times bracket the fine-tuning, so load from other jobs hits both sides alike.
    Wall and CPU seconds (this process, all threads) are both shown: on a shared machine the
    CPU time is the steadier measure of work."""
    from headstart.transferability.rank import rank

    train, test = data
    cache = Path(C.os.environ["HEADSTART_CACHE"])
    ranks = []
    for step in ("rank", "fine-tune", "rank"):
        shutil.rmtree(cache, ignore_errors=True)  # cold: features and ONNX exports
        t0, c0 = time.perf_counter(), time.process_time()
        if step == "rank":
            rank(train, candidates=IMAGE_CANDIDATES, image_size=args.image_size,
                 n_boot=args.n_boot, progress=False, log=lambda *_: None)
            ranks.append((time.perf_counter() - t0, time.process_time() - c0))
        else:
            ft = finetune_time(train, test, args.image_size)
            ft["cpu"] = time.process_time() - c0
    wall, cpu = (float(np.mean([r[i] for r in ranks])) for i in (0, 1))
    five = ft["wall"] + 4 * ft["epoch"]
    print(f"\ntime on {len(train)} animal-mnist images at {args.image_size} px, cold cache each "
          f"(wall s / CPU s):"
          f"\n  rank {len(IMAGE_CANDIDATES.split(','))} candidates, before and after: "
          f"{ranks[0][0]:.1f} / {ranks[0][1]:.1f}, {ranks[1][0]:.1f} / {ranks[1][1]:.1f}"
          f"\n  `train --strategy fine_tune --epochs 1` of efficientnet_lite0: "
          f"{ft['wall']:.1f} / {ft['cpu']:.1f} (of which the fine-tuning epoch {ft['epoch']:.1f} "
          f"wall; test accuracy {ft['acc']:.1f} %)"
          f"\n  ratio rank / fine-tuning epoch (wall): {wall / ft['epoch']:.2f}; "
          f"rank / 1-epoch train: wall {wall / ft['wall']:.2f}, CPU {cpu / ft['cpu']:.2f}; "
          f"rank / default 5-epoch train (extrapolated, {five:.0f} s wall): {wall / five:.2f}")


if __name__ == "__main__":
    main()
