"""Predict throughput of a trained run: its ONNX export in ONNX Runtime (fp32 and int8) against
PyTorch, on real inputs, decoding and tokenising included, rounds interleaved.

    python benchmarks/onnx_predict.py [--images 160] [--texts 40] [--rounds 2]

Image run: linear_probe, EfficientNet-Lite0 at 224 px on 10 animal-mnist images per class
(flip averaging on, so each image is two forward passes in every engine). Text run:
linear_probe, MiniLM-L6 on 8 BBC articles per topic; the hold-out articles average about two
256-token windows. Engines:
  - onnx: the whole exported classifier (`headstart export`), what predict/evaluate/serve use;
  - onnx int8: `--format onnx-int8`;
  - pytorch eager: the run's PyTorch model (engine torch);
  - images also: headstart without an export (backbone features through its cached ONNX
    backbone, head in PyTorch).
Accuracy on the same inputs is printed beside each, so a fast wrong engine shows.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import machine_line, table, temp_cache, temp_dir


def image_run(root: Path) -> tuple[Path, list[str], list[str]]:
    from headstart import api
    from headstart.data.shipped import write_animal_mnist

    data = write_animal_mnist(root / "am10", per_class=10)
    run = root / "img"
    api.train(data / "train", run, config=api.TrainConfig(
        backbone="efficientnet_lite0", strategy="linear_probe", input_size=224),
        progress=False, log=lambda *_: None)
    files = sorted((data / "test").glob("*/*.png"))
    return run, [str(f) for f in files], [f.parent.name for f in files]


def text_run(root: Path) -> tuple[Path, list[str], list[str]]:
    from headstart import api
    from headstart.data.shipped import write_bbc_news

    data = write_bbc_news(root / "bbc8", per_class=8)
    run = root / "txt"
    api.train(data / "train", run, config=api.TrainConfig(strategy="linear_probe"),
              progress=False, log=lambda *_: None)
    files = sorted((data / "test").glob("*/*.txt"))
    return run, [f.read_text(encoding="utf-8") for f in files], [f.parent.name for f in files]


def spread(xs: list, labels: list[str], n: int) -> tuple[list, list[str]]:
    order = np.random.default_rng(0).permutation(len(xs))[:n]
    return [xs[i] for i in order], [labels[i] for i in order]


def engines(run: Path, modality: str):
    """name -> function(inputs) -> logits."""
    from headstart import api
    from headstart.data.datasets import ImageDataset
    from headstart.data.texts import TextDataset
    from headstart.export import export_run
    from headstart.export.runtime import ExportedModel
    from headstart.training.predict import predict_logits

    trained = api.load(run)
    fp32 = export_run(trained, log=print).path
    int8 = export_run(trained, fmt="onnx-int8", heldout=40, max_drop=1.0, log=print).path
    onnx, q = ExportedModel(fp32), ExportedModel(int8)
    make = TextDataset if modality == "text" else ImageDataset

    def torch_engine(engine: str):
        return lambda xs: predict_logits(trained.model, make(xs, ["?"] * len(xs)),
                                         trained.preprocess, flip=trained.config.flip,
                                         engine=engine, progress=False)

    out = {"onnx (export)": lambda xs: onnx.predict_logits(xs)[0],
           "onnx int8": lambda xs: q.predict_logits(xs)[0],
           "pytorch eager": torch_engine("torch")}
    if modality == "image":
        out["no export (onnx backbone)"] = torch_engine("auto")
    return out, trained.classes


def measure(name: str, run: Path, inputs: list, labels: list[str], rounds: int, unit: str):
    fns, classes = engines(run, "text" if unit == "texts" else "image")
    y = np.array([classes.index(v) for v in labels])
    times = {k: [] for k in fns}
    acc = {}
    for fn in fns.values():  # warm-up: sessions, graph optimisation, tokenizer
        fn(inputs[:4])
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for k in order:
            t = time.perf_counter()
            logits = fns[k](inputs)
            times[k].append(time.perf_counter() - t)
            acc[k] = float((logits.argmax(1) == y).mean())
    base = min(times["pytorch eager"])
    rows = [[k, len(inputs) / min(ts), len(inputs) / float(np.median(ts)), base / min(ts),
             acc[k]] for k, ts in times.items()]
    return table(["engine", f"{unit}/s best", f"{unit}/s median", "x pytorch", "accuracy"],
                 rows, title=f"{name}: {len(inputs)} {unit}, {rounds} rounds")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=160)
    p.add_argument("--texts", type=int, default=40)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    print(machine_line())
    with temp_cache(), temp_dir() as root:
        out = []
        if args.images:
            run, xs, ys = image_run(root)
            xs, ys = spread(xs, ys, args.images)
            out.append(measure("EfficientNet-Lite0 224 px probe", run, xs, ys, args.rounds,
                               "images"))
        if args.texts:
            run, xs, ys = text_run(root)
            xs, ys = spread(xs, ys, args.texts)
            out.append(measure("MiniLM-L6 probe, BBC hold-out articles", run, xs, ys,
                               args.rounds, "texts"))
    print(machine_line())
    print("\n\n".join(out))


if __name__ == "__main__":
    main()
