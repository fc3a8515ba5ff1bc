"""Fine-tuning speed of EfficientNet-Lite0 (every layer group trainable, batch 32) under four
execution settings, and whether the fast ones still compute the same training run.

    python benchmarks/finetune_speed.py            # 224 and 112 px, 2 warm-up + 6 timed steps
    python benchmarks/finetune_speed.py --quick    # 1 warm-up + 2 timed steps

Settings: fp32 eager NCHW (the reference), channels_last fp32, bf16 autocast NCHW, and
channels_last + bf16 autocast (what headstart's Trainer uses with precision=auto on a CPU with
avx512_bf16 or AMX). Each setting has its own copy of the same initial model (pre-trained
backbone + fresh head, BatchNorm statistics kept as headstart does) and its own AdamW with
headstart's fine_tune rates, and sees the same real animal-mnist batches (augmented and
pre-processed beforehand, so decoding is excluded) with the same random seed per step
(dropout, drop-connect). The steps are interleaved: step k of every setting runs back to back
(order rotated) before step k+1, so the ratios are paired under the same machine load.
"""
from __future__ import annotations

import argparse
import copy
import random
import time

import numpy as np

import _common as C

SETTINGS = (  # name, channels_last, bf16 autocast
    ("fp32 eager NCHW", False, False),
    ("channels_last fp32", True, False),
    ("bf16 autocast NCHW", False, True),
    ("channels_last + bf16 (headstart auto)", True, True),
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 warm-up + 2 timed steps per size")
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 2)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 6)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    a = p.parse_args()
    a.warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    a.steps = a.steps or (2 if a.quick else 6)
    return a


def make_batches(n_batches: int, batch_size: int, size: int, seed: int = 0):
    """Real animal-mnist images through headstart's training augmentation, as tensors."""
    import torch

    from headstart.backbones import get_config
    from headstart.data.images import open_image
    from headstart.data.transforms import Augment, Preprocess

    b = get_config("efficientnet_lite0")
    aug = Augment(Preprocess(size, b.mean, b.std))
    images, labels = C.animal_mnist()
    order = C.stratified_order(labels, seed)[: n_batches * batch_size]
    rng = random.Random(seed)
    x = np.stack([aug(open_image(images[i]), rng) for i in order]).astype(np.float32)
    y = labels[order]
    return [(torch.from_numpy(x[k:k + batch_size]), torch.from_numpy(y[k:k + batch_size]))
            for k in range(0, len(order), batch_size)]


def build(size: int):
    """The model and optimiser groups headstart's fine_tune phase would use."""
    from headstart.training import build_model
    from headstart.backbones import get_config
    from headstart.strategies import build_plan
    from headstart.strategies.plan import apply_phase
    from headstart.training.config import TrainConfig

    cfg = TrainConfig(strategy="fine_tune", input_size=size)
    model = build_model(cfg, 10, pretrained=True)
    model.keep_bn_stats = True  # headstart's policy for pre-trained weights (bn_stats=auto)
    plan = build_plan("fine_tune", get_config(cfg.backbone).layer_groups)
    phase = plan.phases[-1]
    apply_phase(model, phase)
    return model, phase


class Setting:
    def __init__(self, name, channels_last, bf16, model, phase):
        import torch

        from headstart.strategies import param_groups
        self.name, self.cl, self.bf16 = name, channels_last, bf16
        self.model = copy.deepcopy(model)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.opt = torch.optim.AdamW(param_groups(self.model, phase))
        self.times: list[float] = []
        self.losses: list[float] = []

    def _loss(self, x, t, seed: int):
        import torch
        from torch import nn
        torch.manual_seed(seed)
        if self.cl:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(x)
        return nn.functional.cross_entropy(logits.float(), t)

    def step(self, x, t, seed: int) -> float:
        """One training step as headstart's Trainer does it; returns seconds."""
        start = time.perf_counter()
        loss = self._loss(x, t, seed)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        elapsed = time.perf_counter() - start
        self.losses.append(float(loss.detach()))
        return elapsed

    def probe(self, x, t, seed: int):
        """Loss and flattened gradient on the current (shared initial) weights, no update, with
        dropout and drop-connect off: their masks are drawn in the compute dtype, so bf16 and
        fp32 draw different masks from the same seed, which is not a numerical error."""
        import torch
        net, head = self.model.backbone.net, self.model.head
        gp, p_drop = net._global_params, head.dropout.p
        net._global_params, head.dropout.p = gp._replace(drop_connect_rate=None), 0.0
        try:
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss(x, t, seed)
            loss.backward()
        finally:
            net._global_params, head.dropout.p = gp, p_drop
        grad = torch.cat([p.grad.detach().double().reshape(-1) for p in self.model.parameters()
                          if p.grad is not None])
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), grad


def run_size(args, size: int) -> list[Setting]:
    import torch
    torch.manual_seed(0)  # the new head's initial weights
    model, phase = build(size)
    batches = make_batches(min(4, args.warmup + args.steps), args.batch_size, size)
    settings = [Setting(n, cl, bf, model, phase) for n, cl, bf in SETTINGS]
    x, t = batches[0]
    probes = [s.probe(x, t, seed=999) for s in settings]  # same weights, same batch, same seed
    for s, (loss, grad) in zip(settings, probes):
        ref_loss, ref_grad = probes[0]
        s.probe_result = (abs(loss - ref_loss),
                          float((grad @ ref_grad) / (grad.norm() * ref_grad.norm())),
                          float((grad - ref_grad).norm() / ref_grad.norm()))
    total = args.warmup + args.steps
    for k in range(total):
        x, t = batches[k % len(batches)]
        order = settings[k % len(settings):] + settings[:k % len(settings)]
        for s in order:
            dt = s.step(x, t, seed=1000 + k)
            if k >= args.warmup:
                s.times.append(dt)
        ref = settings[0]
        print(f"  {size}px step {k + 1}/{total}{' (warm-up)' if k < args.warmup else ''}: "
              + ", ".join(f"{s.name.split(' (')[0]} {s.times[-1] if k >= args.warmup else dt:.2f}s"
                          for s in settings[:1] + settings[-1:])
              + f", loss {ref.losses[-1]:.4f}", flush=True)
    return settings


def report(args, size: int, settings: list[Setting]) -> None:
    ref = settings[0]
    rows = []
    for s in settings:
        med = C.median(s.times)
        paired = C.median([a / b for a, b in zip(ref.times, s.times)])
        dl = np.abs(np.array(s.losses) - np.array(ref.losses))
        rel = float((dl / np.maximum(np.abs(ref.losses), 1e-8)).max())
        dloss, cos, gerr = s.probe_result
        rows.append([s.name, 1 / med, args.batch_size / med, 1 / min(s.times),
                     f"{C.median(ref.times) / med:.2f}x", f"{paired:.2f}x", f"{dloss:.1e}",
                     f"{cos:.5f}", f"{gerr:.1e}", f"{rel:.1%}"])
    print()
    print(C.table(["setting", "steps/s", "img/s", "steps/s best", "vs fp32", "vs fp32 paired",
                   "|dloss| same w", "grad cos", "grad rel err", "traj max rel"], rows,
                  title=f"fine-tuning efficientnet_lite0, all groups trainable, {size}px, batch "
                        f"{args.batch_size}; median of {args.steps} timed steps after "
                        f"{args.warmup} warm-up. Correctness vs fp32 eager: loss and gradient on the "
                        "same weights and batch, dropout and drop-connect off ('same w', 'grad'), and the largest relative "
                        f"loss gap along the {args.warmup + args.steps}-step trajectory"))
    print("loss trajectories: " + "; ".join(
        f"{s.name.split(' (')[0]}: " + " ".join(f"{v:.3f}" for v in s.losses) for s in settings))


def main() -> None:
    args = parse_args()
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    from headstart.training.batches import use_bf16
    with C.temp_cache():
        print(f"machine: {C.machine_line()}")
        print(f"CPU bf16 support: avx512_bf16={C.cpu_has('avx512_bf16')} "
              f"amx_bf16={C.cpu_has('amx_bf16')}; headstart precision=auto -> "
              f"{'bf16' if use_bf16('auto') else 'fp32'}")
        results = {}
        for size in args.sizes:
            results[size] = run_size(args, size)
        for size, settings in results.items():
            report(args, size, settings)
        print()
        for size, settings in results.items():
            ref, fast = settings[0], settings[-1]
            ratio = C.median([a / b for a, b in zip(ref.times, fast.times)])
            best = max(settings, key=lambda s: 1 / C.median(s.times))
            print(f"{size}px: headstart's setting (channels_last + bf16) runs {ratio:.2f}x the "
                  f"steps/s of fp32 eager (paired); fastest here: {best.name}")


if __name__ == "__main__":
    main()
