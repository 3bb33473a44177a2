"""Pillow reference for BottleneckTraining's random-resized-crop resampler.

Rerun (from the repository root):
    /opt/refvenv/bin/python Tests/Reference/training/make_augment.py

Image: 41x29 RGB, byte i = SplitMix64(301).next() >> 56 in row-major HWC order. Crop box (left 5, top 3,
width 31, height 23) resized to 16x16 with Image.BILINEAR (downscale, antialiased) and, separately, box
(left 2, top 4, width 9, height 7) resized to 20x20 (upscale). Writes augment_down.npy / augment_up.npy,
uint8 values as float32 HWC.
"""
import os

import numpy as np
from PIL import Image

MASK = (1 << 64) - 1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "BottleneckTrainingTests", "Fixtures")


def splitmix(seed, n):
    s = seed
    out = []
    for _ in range(n):
        s = (s + 0x9E3779B97F4A7C15) & MASK
        z = s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        out.append((z ^ (z >> 31)) >> 56)
    return out


W, H = 41, 29
img = Image.fromarray(np.array(splitmix(301, W * H * 3), dtype=np.uint8).reshape(H, W, 3), "RGB")
for name, (l, t, w, h), size in [("augment_down", (5, 3, 31, 23), 16), ("augment_up", (2, 4, 9, 7), 20)]:
    out = img.resize((size, size), Image.BILINEAR, box=(l, t, l + w, t + h))
    np.save(os.path.join(OUT, name + ".npy"), np.asarray(out, dtype=np.float32))
