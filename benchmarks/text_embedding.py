"""Text embedding with the shipped sentence encoder (minilm_l6) on real BBC News articles:
throughput, the gain of length-sorted batching, and the warm-cache speed-up of a re-run.

    python benchmarks/text_embedding.py            # 400 articles
    python benchmarks/text_embedding.py --quick    # 120 articles

Every article is embedded whole: split into 256-token windows whose embeddings are pooled.
1. Throughput, side by side in one process: documents grouped by length (what headstart does)
   against the same documents in their file order, both at 32 windows per batch.
2. Warm cache: `linear_probe` on the same articles twice with one fresh HEADSTART_CACHE: cold
   (tokenise and encode everything) then warm (hash the texts, read the vectors, fit the head).
"""
from __future__ import annotations

import argparse
import time

import _common as C


def throughput(texts: list[str]) -> list[list]:
    from headstart.training import preprocess_for
    from headstart.backbones import create_backbone
    from headstart.data.tokenize import doc_batches
    from headstart.training import TrainConfig
    from headstart.modalities.text import embed_texts
    import torch

    cfg = TrainConfig(backbone="minilm_l6", input_size=256)
    pre = preprocess_for(cfg)
    backbone = create_backbone("minilm_l6").eval()
    windows = pre.windows(texts)
    n_windows = sum(len(w) for w in windows)
    tokens = sum(len(x) for w in windows for x in w)
    embed_texts(backbone, pre, texts[:8])  # warm-up: oneDNN kernels, tokenizer

    def file_order() -> None:
        with torch.inference_mode():
            for idx in doc_batches(windows, list(range(len(texts))), 32):
                backbone(pre.collate([windows[i] for i in idx]))

    rows = []
    for label, fn in (("grouped by length (headstart)", lambda: embed_texts(backbone, pre,
                                                                            texts)),
                      ("file order", file_order)):
        t = time.perf_counter()
        fn()
        s = time.perf_counter() - t
        rows.append([label, s, len(texts) / s, n_windows / s, tokens / s])
    print(f"{len(texts)} articles, {n_windows} windows, {tokens} tokens")
    return rows


def warm_cache(data) -> list[list]:
    from headstart import api
    from headstart.training import TrainConfig

    rows = []
    with C.temp_cache():
        for label in ("cold cache", "warm cache"):
            t = time.perf_counter()
            r = api.train(data, config=TrainConfig(strategy="linear_probe"), progress=False,
                          log=lambda *_: None)
            rows.append([label, time.perf_counter() - t, r.metrics["val_accuracy"]])
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--n", type=int, default=None, help="articles (default 400, quick 120)")
    a = p.parse_args()
    n = a.n or (120 if a.quick else 400)
    print(f"machine: {C.machine_line()}")
    from headstart.data.shipped import write_bbc_news
    with C.temp_dir() as tmp:
        root = write_bbc_news(tmp / "bbc", per_class=n // 5)
        files = sorted((root / "train").rglob("*.txt"))
        texts = [f.read_text(encoding="utf-8") for f in files]
        rows = throughput(texts)
        print(C.table(["batching", "seconds", "texts/s", "windows/s", "tokens/s"], rows))
        print(f"length grouping speed-up: {rows[1][1] / rows[0][1]:.2f}x")
        cache = warm_cache(root / "train")
        print(C.table(["linear_probe run", "seconds", "val accuracy"], cache))
        print(f"warm-cache speed-up: {cache[0][1] / cache[1][1]:.1f}x")


if __name__ == "__main__":
    main()
