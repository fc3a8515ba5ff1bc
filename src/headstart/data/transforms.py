"""Pre-processing and augmentation with Pillow and NumPy (no torchvision on this torch)."""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to `size`, centre-crop a square, scale to [0,1], normalise.

    `mean`/`std` act on [0,1] pixels; EfficientNet-Lite's (x*255-127)/128 is mean=127/255,
    std=128/255.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def signature(self) -> str:
        return (f"shorter-side-resize+center-crop|{self.size}|{self.mean}|{self.std}|bicubic"
                "|jpeg-dct-3x")  # JPEGs decoded at a reduced scale (images.DRAFT_MARGIN)

    def resize(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        s = self.size / min(w, h)
        nw, nh = max(self.size, round(w * s)), max(self.size, round(h * s))
        if max(nw, nh) > 8 * self.size:  # a strip (say 1 x 100,000): crop first, then resize,
            side = min(w, h)             # never a resized strip of millions of pixels
            left, top = (w - side) / 2, (h - side) / 2
            return img.resize((self.size, self.size), Image.BICUBIC,
                              box=(left, top, left + side, top + side))
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), Image.BICUBIC, reducing_gap=3.0)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return img.crop((left, top, left + self.size, top + self.size))

    def to_array(self, img: Image.Image) -> np.ndarray:
        """A normalised CHW float32 array from an RGB image already at size."""
        out = np.empty((3, self.size, self.size), np.float32)
        self.normalise_into(np.asarray(img), out)
        return out

    def normalise_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """Write the uint8 RGB pixels (S, S, 3) into `out` (3, S, S) as (pixel / 255 - mean) /
        std in float32: a lookup of each byte in a table of those 256 values per channel, the
        same float32 arithmetic bit for bit, in one pass and no temporaries."""
        table = _normalising_table(tuple(self.mean), tuple(self.std))
        for c in range(3):
            np.take(table[c], pixels[..., c], out=out[c])

    def views_into(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """The views of one image resized to size, uint8 RGB (S, S, 3), written into `out`
        (views, 3, S, S): the image, then (a second view) its mirror image."""
        self.normalise_into(pixels, out[0])
        if len(out) > 1:
            np.copyto(out[1], out[0][:, :, ::-1])

    def __call__(self, img: Image.Image, *, flip: bool = False) -> np.ndarray:
        img = self.resize(img)
        if flip:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return self.to_array(img)


@functools.lru_cache(maxsize=16)
def _normalising_table(mean: tuple, std: tuple) -> np.ndarray:
    """(3, 256) float32: channel c's (v / 255 - mean[c]) / std[c] for every byte v, computed
    as the arithmetic of an array of pixels would (float32, in that order)."""
    v = np.arange(256, dtype=np.float32) * (1.0 / 255.0)
    return np.stack([(v - np.float32(m)) / np.float32(s) for m, s in zip(mean, std)])


@dataclass(frozen=True)
class Augment:
    """Training augmentation for fine-tuning on small data: random resized crop, horizontal
    flip, and mild colour jitter (brightness, contrast, saturation)."""

    pre: Preprocess
    scale: tuple[float, float] = (0.35, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.2

    def __call__(self, img: Image.Image, rng: random.Random) -> np.ndarray:
        img = self._crop(img, rng)
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.jitter > 0:
            for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                factor = rng.uniform(1 - self.jitter, 1 + self.jitter)
                img = enhancer(img).enhance(factor)
        return self.pre.to_array(img)

    def _crop(self, img: Image.Image, rng: random.Random) -> Image.Image:
        w, h = img.size
        area = w * h
        size = self.pre.size
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(self.ratio[0]), math.log(self.ratio[1])))
            cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                return img.resize((size, size), Image.BICUBIC, box=(x, y, x + cw, y + ch))
        return self.pre.resize(img)
