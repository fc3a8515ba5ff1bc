"""Frozen-backbone feature extraction speed: eager PyTorch fp32 vs headstart's FeatureExtractor
(ONNX Runtime), on the same pre-processed animal-mnist batches (decoding excluded), against
this machine's measured fp32 matrix-multiply rate.

    python benchmarks/feature_extraction.py            # 16 rounds, batch 32, 224 px
    python benchmarks/feature_extraction.py --quick    # 4 rounds

Each round runs every engine on the same batch of 32, back to back in a rotated order, with a
2048^3 matmul (torch and numpy) in the middle, so the ratios compare like with like even when
other work shares the CPU. Reported per engine: the best round (least disturbed) and the
median round, and ratios both of best rounds and as the median of per-round ratios.
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
    "ort intra=1 no-spin": {"threads": 1, "spin": False},
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 rounds, 2 distinct batches")
    p.add_argument("--rounds", type=int, default=None,
                   help="timing rounds, each runs every engine on one batch (default 16)")
    p.add_argument("--batches", type=int, default=None,
                   help="distinct pre-processed batches, used in turn (default 4)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="input size in pixels")
    p.add_argument("--matmul-n", type=int, default=2048, help="square matmul size")
    p.add_argument("--threads", type=int, default=None,
                   help="torch / ORT threads (default: torch's, normally all cores)")
    p.add_argument("--no-variants", action="store_true",
                   help="skip the extra ORT session-option and channels_last variants")
    a = p.parse_args()
    a.rounds = a.rounds or (4 if a.quick else 16)
    a.batches = a.batches or (2 if a.quick else 4)
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


def matmul_rate(n: int, reps: int = 2) -> dict[str, float]:
    """Best fp32 GFLOP/s of an n x n x n matmul (2 n^3 FLOPs): torch with all its threads,
    numpy (its BLAS, all threads), and torch on one thread (which wins when another process
    keeps the other cores busy)."""
    import torch
    out = {}
    a, b = torch.randn(n, n), torch.randn(n, n)
    an, bn = a.numpy(), b.numpy()
    threads = torch.get_num_threads()

    def one_thread():
        torch.set_num_threads(1)
        try:
            torch.matmul(a, b)
        finally:
            torch.set_num_threads(threads)
    for name, fn in (("torch", lambda: torch.matmul(a, b)), ("numpy", lambda: an @ bn),
                     ("torch 1 thread", one_thread)):
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
    extractor.session  # ONNX export + parity check happen on first use; do them now
    setup_s = time.perf_counter() - t

    def eager(x):
        with torch.inference_mode():
            return backbone(torch.from_numpy(x)).numpy()

    def eager_1thread(x):
        torch.set_num_threads(1)
        try:
            return eager(x)
        finally:
            torch.set_num_threads(threads)

    engines = {"torch eager fp32 (NCHW)": eager, "headstart FeatureExtractor (ORT)": extractor}
    if not args.no_variants:
        import copy
        cl = copy.deepcopy(backbone).to(memory_format=torch.channels_last)

        def eager_cl(x):
            with torch.inference_mode():
                return cl(torch.from_numpy(x).contiguous(memory_format=torch.channels_last)).numpy()
        engines["torch eager fp32 channels_last"] = eager_cl
        if threads > 1:
            engines["torch eager fp32 1 thread"] = eager_1thread
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
              f"(2 per multiply-add); batch {args.batch_size}; {args.rounds} rounds, each runs "
              f"every engine on one batch; {threads} threads")
        print(f"headstart extractor engine: {extractor.engine} (export + parity check "
              f"{setup_s:.1f}s, once per cache)")
        ref = engines["torch eager fp32 (NCHW)"](batches[0])
        diffs = {n: float(np.abs(e(batches[0]) - ref).max()) for n, e in engines.items()}
        for e in engines.values():  # warm-up beyond the first call
            e(batches[0])
        times, mm = run_rounds(args, engines, batches)
        report(args, flops, times, mm, diffs)


def run_rounds(args, engines, batches):
    """Each round: every engine on one batch (order rotated) with a matmul pair in the middle.
    Returns seconds per image per engine per round, and GFLOP/s per library per round."""
    times = {n: [] for n in engines}
    mm = {"torch": [], "numpy": [], "torch 1 thread": []}
    names = list(engines)
    for r in range(args.rounds):
        x = batches[r % len(batches)]
        for k, name in enumerate(names[r % len(names):] + names[:r % len(names)]):
            if k == len(names) // 2:
                for lib, v in matmul_rate(args.matmul_n).items():
                    mm[lib].append(v)
            t = time.perf_counter()
            engines[name](x)
            times[name].append((time.perf_counter() - t) / len(x))
        if (r + 1) % max(1, args.rounds // 4) == 0 or r + 1 == args.rounds:
            print(f"  round {r + 1}/{args.rounds}: eager {1 / times[names[0]][-1]:.1f}, "
                  f"headstart ORT {1 / times[names[1]][-1]:.1f} img/s, matmul "
                  f"{max(v[-1] for v in mm.values()):.0f} GFLOP/s", flush=True)
    return times, mm


def report(args, flops, times, mm, diffs) -> None:
    peak_round = [max(v) for v in zip(*mm.values())]
    bound = max(peak_round)
    eager, hs = "torch eager fp32 (NCHW)", "headstart FeatureExtractor (ORT)"
    rows = []
    for name, ts in times.items():
        gflops = flops / min(ts) / 1e9
        paired_frac = C.median([flops / t / 1e9 / p for t, p in zip(ts, peak_round)])
        paired_speed = C.median([e / t for e, t in zip(times[eager], ts)])
        rows.append([name, 1 / min(ts), 1 / C.median(ts), gflops, f"{gflops / bound:.0%}",
                     f"{paired_frac:.0%}", f"{min(times[eager]) / min(ts):.2f}x",
                     f"{paired_speed:.2f}x", f"{diffs[name]:.1e}"])
    print()
    print(f"compute bound: fp32 matmul {args.matmul_n}^3, best round: " + ", ".join(
        f"{k} {max(v):.0f}" for k, v in mm.items()) + f" GFLOP/s -> bound {bound:.0f} GFLOP/s "
        f"(median round {C.median(peak_round):.0f})")
    print()
    print(C.table(["engine", "img/s best", "img/s median", "GFLOP/s best", "of bound",
                   "of bound paired", "vs eager", "vs eager paired", "max |diff|"], rows,
                  title=f"feature extraction, efficientnet_lite0 {args.size}px, batch "
                        f"{args.batch_size}, pre-processed input. 'paired' = median over rounds "
                        "of the ratio within a round"))
    frac = flops / min(times[hs]) / 1e9 / bound
    paired = C.median([flops / t / 1e9 / p for t, p in zip(times[hs], peak_round)])
    print()
    print(f"headstart ORT vs eager fp32: {min(times[eager]) / min(times[hs]):.2f}x (best rounds), "
          f"{C.median([e / t for e, t in zip(times[eager], times[hs])]):.2f}x (paired)")
    print(f"headstart ORT reaches {frac:.0%} of the best matmul rate ({paired:.0%} paired with "
          f"the matmul of its own round); target >= 80%: {C.verdict(max(frac, paired) >= 0.8)}")
    fastest = min(times, key=lambda n: C.median(times[n]))
    if fastest != hs:
        gain = C.median([a / b for a, b in zip(times[hs], times[fastest])])
        print(f"fastest by median round: {fastest}, {gain:.2f}x headstart's extractor (paired)")
    else:
        print("headstart's extractor is the fastest engine by median round")


if __name__ == "__main__":
    main()
