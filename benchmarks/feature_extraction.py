"""Frozen-backbone feature extraction speed: eager PyTorch fp32 vs headstart's FeatureExtractor
(ONNX Runtime), on the same pre-processed animal-mnist batches (decoding excluded), against
this machine's measured fp32 matrix-multiply rate.

    python benchmarks/feature_extraction.py            # 5 rounds x 6 batches of 32 at 224 px
    python benchmarks/feature_extraction.py --quick    # 2 rounds x 2 batches

Every round times every engine and the matmul back to back (order rotated per round), so the
ratios compare like with like even when other work shares the CPU. Per engine the best round
is reported (the least disturbed), and the per-round ratios' median beside it.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import _common as C

ORT_VARIANTS = {  # name -> session options; headstart's own settings are the first
    "ort intra=T (headstart)": {},
    "ort intra=T no-spin": {"spin": False},
    "ort intra=T ENABLE_EXTENDED": {"level": "ORT_ENABLE_EXTENDED"},
    "ort intra=T ENABLE_BASIC": {"level": "ORT_ENABLE_BASIC"},
    "ort intra=1": {"threads": 1},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 rounds of 2 batches")
    p.add_argument("--rounds", type=int, default=None, help="timing rounds (default 5)")
    p.add_argument("--batches", type=int, default=None,
                   help="batches per engine per round (default 6)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="input size in pixels")
    p.add_argument("--matmul-n", type=int, default=2048, help="square matmul size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / ORT threads (default: torch's, normally all cores)")
    p.add_argument("--no-variants", action="store_true",
                   help="skip the extra ORT session-option and channels_last variants")
    a = p.parse_args()
    a.rounds = a.rounds or (2 if a.quick else 5)
    a.batches = a.batches or (2 if a.quick else 6)
    return a


def make_batches(n_batches: int, batch_size: int, size: int) -> list[np.ndarray]:
    """Real animal-mnist images, decoded and pre-processed exactly as headstart does."""
    from headstart.backbones import get_config
    from headstart.data.images import open_image
    from headstart.data.transforms import Preprocess

    b = get_config("efficientnet_lite0")
    pre = Preprocess(size, b.mean, b.std)
    images, labels = C.animal_mnist()
    order = C.stratified_order(labels)[: n_batches * batch_size]
    arrs = [pre(open_image(images[i])) for i in order]
    return [np.stack(arrs[k:k + batch_size]).astype(np.float32)
            for k in range(0, len(arrs), batch_size)]


def matmul_rate(n: int, reps: int = 3) -> dict[str, float]:
    """Best fp32 GFLOP/s of an n x n x n matmul (2 n^3 FLOPs) with torch and with numpy."""
    import torch
    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    for name, fn in (("torch", lambda: torch.matmul(a, b)), ("numpy", lambda: an @ bn)):
        fn()
        best = min(_timed(fn) for _ in range(reps))
        out[name] = 2 * n ** 3 / best / 1e9
    return out


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def ort_session(path, threads: int, *, level: str = "ORT_ENABLE_ALL", spin: bool = True):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    o.log_severity_level = 3
    if not spin:
        o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def build_engines(args, cache_root):
    import torch

    from headstart.backbones import create_backbone
    from headstart.training.features import FeatureExtractor

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    backbone = create_backbone("efficientnet_lite0", image_size=args.size).eval()
    t = time.perf_counter()
    extractor = FeatureExtractor(backbone, engine="onnxruntime", threads=threads)
    setup_s = time.perf_counter() - t

    def eager(x):
        with torch.inference_mode():
            return backbone(torch.from_numpy(x)).numpy()

    engines = {"torch eager fp32 (NCHW)": eager, "headstart FeatureExtractor (ORT)": extractor}
    if not args.no_variants:
        import copy
        cl = copy.deepcopy(backbone).to(memory_format=torch.channels_last)

        def eager_cl(x):
            with torch.inference_mode():
                return cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
        engines["torch eager fp32 channels_last"] = eager_cl
        onnx = sorted((cache_root / "onnx").glob("*.onnx"))[0]
        for name, opts in ORT_VARIANTS.items():
            sess = ort_session(onnx, opts.get("threads", threads), level=opts.get("level",
                               "ORT_ENABLE_ALL"), spin=opts.get("spin", True))
            engines[name.replace("=T", f"={threads}")] = \
                lambda x, s=sess: s.run(None, {"images": x})[0]
    return backbone, extractor, engines, threads, setup_s


def main() -> None:
    args = parse_args()
    with C.temp_cache() as cache_root:
        from headstart.backbones import count_flops
        print(f"machine: {C.machine_line()}")
        batches = make_batches(args.batches, args.batch_size, args.size)
        backbone, extractor, engines, threads, setup_s = build_engines(args, cache_root)
        flops = count_flops(backbone, args.size)
        print(f"efficientnet_lite0 at {args.size}px: {flops / 1e9:.3f} GFLOP per image "
              f"(2 per multiply-add); batch {args.batch_size}, {args.batches} batches x "
              f"{args.rounds} rounds per engine; {threads} threads")
        print(f"headstart extractor engine: {extractor.engine} (export + parity check "
              f"{setup_s:.1f}s, once per cache)")
        ref = engines["torch eager fp32 (NCHW)"](batches[0])
        diffs = {n: float(np.abs(e(batches[0]) - ref).max()) for n, e in engines.items()}
        for e in engines.values():  # warm-up beyond the first call
            e(batches[0])
        times = {n: [] for n in engines}
        mm = {"torch": [], "numpy": []}
        names = list(engines)
        for r in range(args.rounds):
            for k, name in enumerate(names[r % len(names):] + names[:r % len(names)]):
                if k == len(names) // 2:  # the matmul in the middle of the round
                    for lib, v in matmul_rate(args.matmul_n).items():
                        mm[lib].append(v)
                t = time.perf_counter()
                for x in batches:
                    engines[name](x)
                times[name].append((time.perf_counter() - t) / (len(batches) * len(x)))
            print(f"  round {r + 1}/{args.rounds}: " + ", ".join(
                f"{n.split(' (')[0] if n.startswith('torch eager fp32 (') else n}="
                f"{1 / times[n][-1]:.0f}" for n in names[:2]) + " img/s")
        report(args, flops, times, mm, diffs)


def report(args, flops, times, mm, diffs) -> None:
    peak_round = [max(t, n) for t, n in zip(mm["torch"], mm["numpy"])]
    bound = max(peak_round)
    eager = "torch eager fp32 (NCHW)"
    rows = []
    for name, ts in times.items():
        best = min(ts)
        gflops = flops / best / 1e9
        per_round_ratio = C.median([e / t for e, t in zip(times[eager], ts)])
        per_round_frac = C.median([flops / t / 1e9 / p for t, p in zip(ts, peak_round)])
        rows.append([name, 1 / best, gflops, f"{gflops / bound:.0%}", f"{per_round_frac:.0%}",
                     f"{times[eager][np.argmin(times[eager])] / best:.2f}x",
                     f"{per_round_ratio:.2f}x", f"{diffs[name]:.1e}"])
    print()
    print(f"compute bound: fp32 matmul {args.matmul_n}^3, best of rounds: torch "
          f"{max(mm['torch']):.0f} GFLOP/s, numpy {max(mm['numpy']):.0f} GFLOP/s -> "
          f"{bound:.0f} GFLOP/s (per round: {', '.join(f'{p:.0f}' for p in peak_round)})")
    print()
    print(C.table(["engine", "img/s", "GFLOP/s", "of bound", "of bound (rounds)", "vs eager",
                   "vs eager (rounds)", "max |diff|"], rows,
                  title=f"feature extraction, efficientnet_lite0 {args.size}px, batch "
                        f"{args.batch_size}, pre-processed input (best round; '(rounds)' = "
                        "median of per-round ratios)"))
    hs = "headstart FeatureExtractor (ORT)"
    frac = flops / min(times[hs]) / 1e9 / bound
    ratio = min(times[eager]) / min(times[hs])
    print()
    print(f"headstart ORT vs eager fp32: {ratio:.2f}x faster; ORT achieves {frac:.0%} of the "
          f"measured matmul bound (target >= 80%: {C.verdict(frac >= 0.8)})")
    fastest = min(times, key=lambda n: C.median(times[n]))
    if fastest != hs:
        gain = C.median(times[hs]) / C.median(times[fastest])
        print(f"fastest variant by median round: {fastest} ({gain:.2f}x headstart's extractor)")
    else:
        print("headstart's extractor is the fastest variant by median round")


if __name__ == "__main__":
    main()
