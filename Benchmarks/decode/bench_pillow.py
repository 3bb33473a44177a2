# Pillow + torchvision reference for the decode+preprocess benchmark (Benchmarks/decode/run.sh runs it).
# Usage: /opt/refvenv/bin/python Benchmarks/decode/bench_pillow.py DIR [--preset imagenet|lite] [--workers 2] [--repeats 3]
# Per image: Image.open -> ImageOps.exif_transpose -> convert("RGB") -> Resize(256) -> CenterCrop(224)
# -> ToTensor -> Normalize, the same work `bottleneck preprocess --bench` does. Reports the best of
# --repeats passes, for a thread pool (Pillow releases the GIL while decoding/resampling) and for a
# process pool (like a DataLoader with num_workers), each with --workers workers.
import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import torch
from PIL import Image, ImageOps
from torchvision import transforms

PRESETS = {
    "imagenet": (transforms.InterpolationMode.BILINEAR, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lite": (transforms.InterpolationMode.BICUBIC, (127 / 255,) * 3, (128 / 255,) * 3),
}
_transform = None


def _init(preset):
    global _transform
    torch.set_num_threads(1)
    interp, mean, std = PRESETS[preset]
    _transform = transforms.Compose([transforms.Resize(256, interpolation=interp), transforms.CenterCrop(224),
                                     transforms.ToTensor(), transforms.Normalize(mean, std)])


def _work(paths):
    done = 0
    for p in paths:
        try:
            with Image.open(p) as im:
                _transform(ImageOps.exif_transpose(im).convert("RGB"))
            done += 1
        except Exception:
            pass
    return done


def files(root):
    out = []
    for d, _, names in os.walk(root):
        for n in names:
            if n.lower().endswith((".jpg", ".jpeg", ".png", ".ppm", ".pgm")):
                out.append(os.path.join(d, n))
    return sorted(out)


def run(pool_cls, paths, workers, repeats, preset):
    chunks = [paths[i::workers] for i in range(workers)]
    best, done = float("inf"), 0
    with pool_cls(max_workers=workers, initializer=_init, initargs=(preset,)) as pool:
        list(pool.map(_work, [[] for _ in range(workers)]))  # start workers before timing
        for _ in range(repeats):
            t = time.perf_counter()
            done = sum(pool.map(_work, chunks))
            best = min(best, time.perf_counter() - t)
    return done, best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--preset", default="imagenet", choices=sorted(PRESETS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    paths = files(a.dir)
    if not paths:
        sys.exit(f"no images under {a.dir}")
    for label, cls in (("threads", ThreadPoolExecutor), ("processes", ProcessPoolExecutor)):
        done, best = run(cls, paths, a.workers, a.repeats, a.preset)
        print(f"pillow {label}: {done} images on {a.workers} {label}, best of {a.repeats}: {best:.3f} s, {done / best:.1f} images/s")


if __name__ == "__main__":
    main()
