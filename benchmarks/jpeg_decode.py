"""Phone photos: decoding a large JPEG at the scale its use needs, against decoding it whole.

    python benchmarks/jpeg_decode.py [--photos 24] [--rounds 3] [--size 224]

A user's own photos are 12-megapixel JPEGs, where animal-mnist's are 28-pixel PNGs: there the
decoder, not the network, is the cost of a frozen-feature pass. headstart decodes a JPEG that
will be shrunk to a shorter side of S at the smallest libjpeg DCT scale (1/1, 1/2, 1/4, 1/8)
whose shorter side stays at least 3 x S (src/headstart/data/images.py, DRAFT_MARGIN).

The photos: 4032 x 3024 JPEGs (quality 92) made from scikit-learn's two sample photos
(china.jpg, flower.jpg), each a different crop, flip and upscale, so that no two are alike.
Per photo, in rounds that alternate the two ways (Pillow decodes on one thread, as each
decoding thread of the frozen-feature pass does): read the file, decode (`open_image` with and without `fit=S`) and
resize to S x S as the frozen-feature pass does (`Preprocess.resize`). Printed: the median ms
per photo of each way, their ratio, and how far the S x S pixels of the two ways are apart
(mean and max over every pixel, in grey levels of 255).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import _common as C


def photos(folder, n: int) -> list:
    from PIL import Image
    from sklearn.datasets import load_sample_image
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        src = load_sample_image(("china.jpg", "flower.jpg")[i % 2])  # 427 x 640
        h, w = src.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        img = Image.fromarray(src[y:y + ch, x:x + cw])
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"photo{i:03d}.jpg"
        img.resize((4032, 3024), Image.BICUBIC).save(path, quality=92)
        out.append(path)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args()
    from headstart.data import Preprocess, open_image
    pre = Preprocess(args.size, (0.5,) * 3, (0.5,) * 3)
    print(C.machine_line())
    with C.temp_dir() as folder:
        files = photos(folder, args.photos)
        ways = {"whole": None, f"fit={args.size}": args.size}
        times = {w: [] for w in ways}
        for r in range(args.rounds):
            for name, fit in (ways.items() if r % 2 == 0 else reversed(ways.items())):
                for f in files:
                    t0 = time.perf_counter()
                    pre.resize(open_image(f, fit=fit))
                    times[name].append(time.perf_counter() - t0)
        diffs = [np.abs(np.asarray(pre.resize(open_image(f)), int)
                        - np.asarray(pre.resize(open_image(f, fit=args.size)), int))
                 for f in files]
        decoded = open_image(files[0], fit=args.size).size
    med = {w: statistics.median(t) * 1000 for w, t in times.items()}
    rows = [[w, f"{med[w]:.1f}", f"{med['whole'] / med[w]:.2f}x"] for w in ways]
    print(C.table(["decode + resize", "ms per photo (median)", "speed-up"], rows,
                  title=f"{args.photos} photos 4032x3024 JPEG -> {args.size}x{args.size}, "
                        f"{args.rounds} rounds; fit decodes them at {decoded[0]}x{decoded[1]}"))
    print(f"pixels at {args.size}x{args.size}: mean |difference| "
          f"{float(np.mean([d.mean() for d in diffs])):.3f}, max {max(int(d.max()) for d in diffs)}"
          " grey levels of 255")


if __name__ == "__main__":
    main()
