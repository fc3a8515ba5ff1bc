"""headstart's default against the peers' usual recipes, side by side on the same splits.

    nice -n 10 python benchmarks/peers.py            # animal-mnist 10, 100 per class; seeds 0 1 2
    nice -n 10 python benchmarks/peers.py --quick    # 10 per class, seed 0, 64 px, 2 epochs
    nice -n 10 python benchmarks/peers.py --texts    # and SetFit on texts (setfit_compare.py)

Images. The peer is the PyTorch tutorial's fine-tuning loop ("Transfer learning for computer
vision", the "finetuning the ConvNet" part): the pre-trained network with its final layer
replaced (EfficientNet-Lite0 with the weights headstart ships, a new Linear(1280, classes)),
every layer trained with SGD (lr 1e-3, momentum 0.9) and StepLR(7, 0.1), batches of 4,
fp32 eager, no feature cache, 25 epochs; the tutorial's augmentation (RandomResizedCrop to
the input size and a horizontal flip for training, Resize(size * 256 / 224) + CenterCrop for
testing; written here with Pillow since torchvision is not installed), normalised as the
network expects. It trains on all of DATA/train (the tutorial picks its best epoch on a
validation set; here there is none to pick on, so its figure is its final epoch's). It runs
under headstart's thread policy (passive OpenMP waits, as many threads as there are free
cores: src/headstart/threads.py), so that the ratio measures the recipes, not thread settings.

headstart runs as a user runs it, through the command line with no options: `headstart train
DATA/train --out RUN` (then `headstart evaluate RUN DATA/test`), with a fresh HEADSTART_CACHE
per run, so nothing is cached before it starts.

Both get the same `headstart make-dataset animal-mnist DATA --per-class N --seed S` folder and
are scored on its 2,000-image hold-out. Printed per run: the peer's final test accuracy, its
training time and the time at which its test accuracy first reached that final figure
(scored off its clock: each epoch's weights are kept, the last epoch's scored first, then the
epochs in order up to the first that reaches it: the figure scoring every epoch would give, in
fewer passes over the 2,000 test images, each run by ONNX Runtime from the epoch's weights,
whose predictions are checked against eager PyTorch's on 256 of them); headstart's test accuracy and training time
(metrics.json `seconds`; its whole process time too); and the time ratio to reach the peer's
final accuracy, peer / headstart, where headstart reaches it (its whole training time counts,
so the ratio is a lower bound).

Texts: --texts runs benchmarks/setfit_compare.py (SetFit 1.2.0 in its own virtualenv against
headstart's few-shot default, 8 per class, bbc-news and bbc-headlines) with the same seeds.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

import _common as C

HERE = Path(__file__).resolve().parent


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, nargs="+", default=[10, 100])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=int, default=224, help="the peer's input size (tutorial: 224)")
    p.add_argument("--epochs", type=int, default=25, help="the peer's epochs (tutorial: 25)")
    p.add_argument("--batch-size", type=int, default=4, help="the peer's batch (tutorial: 4)")
    p.add_argument("--quick", action="store_true",
                   help="10 per class, seed 0, the peer at 64 px for 2 epochs (a smoke test: "
                   "its figures are not the comparison)")
    p.add_argument("--texts", action="store_true", help="also run setfit_compare.py")
    p.add_argument("--work", type=Path, help="keep data and runs here (default: temporary)")
    a = p.parse_args()
    if a.quick:
        a.per_class, a.seeds, a.size, a.epochs = [10], [0], 64, 2
    return a


# -- the tutorial's loop -----------------------------------------------------------------------
def random_resized_crop(img, size: int, rng: random.Random):
    """torchvision's RandomResizedCrop(size): scale (0.08, 1), ratio (3/4, 4/3), 10 tries, else
    the whole image clamped to the ratio range; bilinear."""
    from PIL import Image
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))
    cw, ch = (w, round(w / (4 / 3))) if w / h > 4 / 3 else \
        (round(h * 3 / 4), h) if w / h < 3 / 4 else (w, h)
    x, y = (w - cw) // 2, (h - ch) // 2
    return img.resize((size, size), Image.BILINEAR, box=(x, y, x + cw, y + ch))


def resize_center_crop(img, size: int):
    """Resize(size * 256 / 224) (shorter side) + CenterCrop(size), as the tutorial tests."""
    from PIL import Image
    short = round(size * 256 / 224)
    w, h = img.size
    img = img.resize((short, round(h * short / w)) if w <= h else (round(w * short / h), short),
                     Image.BILINEAR)
    w, h = img.size
    x, y = (w - size) // 2, (h - size) // 2
    return img.crop((x, y, x + size, y + size))


class Folder:
    """An ImageFolder: root/<class>/<image>, classes sorted; the tutorial's transforms."""

    def __init__(self, root: Path, size: int, mean, std, *, train: bool, seed: int = 0):
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.items = [(f, i) for i, c in enumerate(self.classes)
                      for f in sorted((root / c).iterdir()) if f.is_file()]
        self.size, self.train, self.seed = size, train, seed
        self.mean = np.array(mean, np.float32).reshape(3, 1, 1)
        self.std = np.array(std, np.float32).reshape(3, 1, 1)
        self.draws = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image
        path, label = self.items[i]
        img = Image.open(path).convert("RGB")
        if self.train:
            self.draws += 1
            rng = random.Random(hash((self.seed, i, self.draws)))
            img = random_resized_crop(img, self.size, rng)
            if rng.random() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            img = resize_center_crop(img, self.size)
        x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((x - self.mean) / self.std), label


def peer_run(data: Path, *, seed: int, args) -> dict:
    """The tutorial's loop on data/train. Each epoch's weights are kept (off the clock);
    afterwards the last epoch is scored on the test folder, then the epochs in order until the
    first whose accuracy reaches the last's: when the peer first had its final figure."""
    import copy

    import torch
    from torch import nn

    from headstart.backbones import create_backbone
    torch.manual_seed(seed)
    backbone = create_backbone("efficientnet_lite0", input_size=args.size)  # shipped weights
    cfg = backbone.config
    train = Folder(data / "train", args.size, cfg.mean, cfg.std, train=True, seed=seed)
    test = Folder(data / "test", args.size, cfg.mean, cfg.std, train=False)
    model = nn.Sequential(backbone, nn.Linear(cfg.feature_dim, len(train.classes)))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.1)
    workers = min(4, os.cpu_count() or 1)
    loader = torch.utils.data.DataLoader(train, batch_size=args.batch_size, shuffle=True,
                                         num_workers=workers,
                                         generator=torch.Generator().manual_seed(seed))
    loss_fn, clock, kept = nn.CrossEntropyLoss(), 0.0, []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
        sched.step()
        clock += time.perf_counter() - t0
        kept.append((clock, copy.deepcopy(model.state_dict())))
        print(f"    peer epoch {epoch + 1}/{args.epochs}: {clock:.0f}s", flush=True)

    scorer = Scorer(test)

    def score(i: int) -> float:
        model.load_state_dict(kept[i][1])
        return scorer.accuracy(model)

    final, curve = score(len(kept) - 1), []
    agree = scorer.parity(model)  # the last epoch's weights are loaded
    print(f"    peer's last epoch: test {final:.4f} (ONNX Runtime; its eager PyTorch predictions "
          f"agree on {agree[0]}/{agree[1]} test images)", flush=True)
    for i, (t, _) in enumerate(kept):
        acc = final if i == len(kept) - 1 else score(i)
        curve.append((t, acc))
        print(f"    peer epoch {i + 1}: test {acc:.4f} at {t:.0f}s", flush=True)
        if acc >= final:
            break
    return {"accuracy": final, "seconds": clock, "to_final": curve[-1][0], "curve": curve,
            "parity": agree}


class Scorer:
    """The peer's test accuracy, off its clock: the test images decoded and cropped once, each
    epoch's weights exported to ONNX and run by ONNX Runtime (about 13 s for 2,000 images at
    224 px where eager PyTorch takes 70-110 s on 2 cores: the scoring had made a full run take
    hours). The same weights; `parity` checks the predictions against eager PyTorch."""

    def __init__(self, folder: Folder, batch: int = 64):
        from PIL import Image
        self.crops = [np.asarray(resize_center_crop(Image.open(f).convert("RGB"), folder.size))
                      for f, _ in folder.items]  # uint8: 150 KB an image at 224 px
        self.y = np.array([label for _, label in folder.items])
        self.mean, self.std, self.batch = folder.mean, folder.std, batch

    def inputs(self, s: int, n: int) -> np.ndarray:
        """Test images s..s+batch (below n), as Folder's test transform gives them."""
        x = np.stack(self.crops[s:min(s + self.batch, n)]).astype(np.float32)
        return (x.transpose(0, 3, 1, 2) / 255.0 - self.mean) / self.std

    def predictions(self, model, n: int | None = None) -> np.ndarray:
        import tempfile

        import onnxruntime as ort
        import torch
        model.eval()
        n = len(self.y) if n is None else n
        with tempfile.TemporaryDirectory(prefix="headstart-peer-") as tmp:
            path = Path(tmp) / "peer.onnx"
            with warnings.catch_warnings():  # the TorchScript exporter's notices, each epoch
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (torch.from_numpy(self.inputs(0, 1)),), str(path),
                                  input_names=["x"], output_names=["y"], opset_version=17,
                                  dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            return np.concatenate([session.run(None, {"x": self.inputs(s, n)})[0].argmax(1)
                                   for s in range(0, n, self.batch)])

    def accuracy(self, model) -> float:
        return float((self.predictions(model) == self.y).mean())

    def parity(self, model, n: int = 256) -> tuple[int, int]:
        """(how many of the first n test images eager PyTorch and ONNX Runtime predict alike,
        n)."""
        import torch
        n = min(n, len(self.y))
        model.eval()
        with torch.inference_mode():
            eager = np.concatenate([model(torch.from_numpy(self.inputs(s, n))).argmax(1).numpy()
                                    for s in range(0, n, self.batch)])
        return int((eager == self.predictions(model, n)).sum()), n


# -- headstart, as a user runs it ----------------------------------------------------------------
def headstart_run(data: Path, *, work: Path) -> dict:
    run = work / "headstart-run"
    env = {**os.environ, "HEADSTART_CACHE": str(work / "headstart-cache")}
    t0 = time.perf_counter()
    C.headstart("train", data / "train", "--out", run, "--quiet", env=env)
    wall = time.perf_counter() - t0
    report = json.loads(C.headstart("evaluate", run, data / "test", "--json", env=env))
    metrics = json.loads((run / "metrics.json").read_text())
    return {"accuracy": report["accuracy"], "n_test": report["n"], "seconds": metrics["seconds"],
            "process_seconds": wall, "strategy": metrics.get("strategy"),
            "input_size": metrics.get("input_size")}


# -- the comparison ------------------------------------------------------------------------------
HEADERS = ["per class", "seed", "peer acc", "peer s", "peer s to final", "headstart acc",
           "headstart s", "process s", "reached", "ratio to peer's final"]


def one(per_class: int, seed: int, args, work: Path) -> list:
    data = work / f"animal-mnist-{per_class}-{seed}"
    C.headstart("make-dataset", "animal-mnist", data, "--per-class", per_class, "--seed", seed)
    sides = [lambda: headstart_run(data, work=work / f"hs-{per_class}-{seed}"),
             lambda: peer_run(data, seed=seed, args=args)]
    order = sides if seed % 2 == 0 else sides[::-1]  # alternate who runs first under load
    done = [f() for f in order]
    hs, peer = done if seed % 2 == 0 else done[::-1]
    reached = hs["accuracy"] >= peer["accuracy"]
    ratio = f">= {peer['to_final'] / hs['seconds']:.2g}x" if reached else "not reached"
    print(f"  {per_class}/class seed {seed}: peer {peer['accuracy']:.4f} after "
          f"{peer['seconds']:.0f}s (first at {peer['to_final']:.0f}s); headstart "
          f"{hs['accuracy']:.4f} in {hs['seconds']:.0f}s ({hs['strategy']} at "
          f"{hs['input_size']} px; process {hs['process_seconds']:.0f}s): {ratio}", flush=True)
    return [per_class, seed, f"{peer['accuracy']:.4f}", peer["seconds"], peer["to_final"],
            f"{hs['accuracy']:.4f}", float(hs["seconds"]), hs["process_seconds"],
            "yes" if reached else "no", ratio]


def run_all(args, work: Path) -> None:
    rows = [one(k, s, args, work) for k in args.per_class for s in args.seeds]
    print()
    print(C.table(HEADERS, rows, title=(
        f"animal-mnist, tested on the 2,000-image hold-out; peer: the PyTorch tutorial's loop "
        f"at {args.size} px, {args.epochs} epochs, batch {args.batch_size}; headstart: "
        "`headstart train` with no options")))
    print("ratio: the peer's time to its final accuracy / headstart's whole training time, "
          "where headstart's test accuracy is at least the peer's (a lower bound: headstart "
          "may have passed the peer's figure before its training ended)")


def main() -> None:
    args = parse_args()
    from headstart import threads  # first: headstart's OMP_WAIT_POLICY before torch loads
    print(f"the peer's threads: {threads.apply()}")
    print(C.machine_line(), flush=True)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        run_all(args, args.work)
    else:
        with C.temp_dir("headstart-peers-") as work:
            run_all(args, work)
    if args.texts:
        print("\ntexts: benchmarks/setfit_compare.py", flush=True)
        subprocess.run([sys.executable, str(HERE / "setfit_compare.py"), "--seeds",
                        *map(str, args.seeds)], check=True)


if __name__ == "__main__":
    main()
