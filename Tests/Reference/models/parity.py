"""Model parity fixtures: PyTorch outputs at every stage (cut point) of every architecture, with the
deterministic synthetic weights of synthetic.py (identical to Swift's SyntheticWeights).

Rerun: /opt/refvenv/bin/python Tests/Reference/models/parity.py [model ...]
Writes Tests/BottleneckModelsTests/Fixtures/parity/<model>_<H>.json and .npy.

Input: synthetic_input("input", (N, 3, H, W)) in [-2, 2). For every stage output (PyTorch layout) the
fixture keeps max|output| over the whole tensor and the values at sample_indices("<model>.<stage>", n)
(all elements when n <= 2048); for the last spatial stage it also keeps the global avg and max pooled
outputs ("<stage>@avg", "<stage>@max"). EfficientNet-Lite models are built with image_size=None, i.e.
TF-SAME padding computed from the actual input (static padding for the native size gives the same
result at that size). MobileNetV2 is torchvision's mobilenet_v2() (symmetric padding 1 on its 3x3s).
"""
import json, os, sys
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from synthetic import apply_synthetic, synthetic_input, sample_indices  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "../../BottleneckModelsTests/Fixtures/parity")
RESNETS = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
VGGS = [f"vgg{d}{s}" for d in (11, 13, 16, 19) for s in ("", "_bn")]
LITES = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
MOBILENETS = ["mobilenet_v2"]
# (model, batch, size): every model at 64x64, one per family at 224x224.
CASES = [(m, 2, 64) for m in RESNETS + VGGS + LITES + MOBILENETS] + [
    ("resnet18", 1, 224), ("vgg11", 1, 224), ("efficientnet-lite0", 1, 224), ("mobilenet_v2", 1, 224)]


def resnet_stages(m, x):
    x = F.relu(m.bn1(m.conv1(x))); yield "conv1", x
    x = m.maxpool(x); yield "maxpool", x
    for i in range(1, 5):
        x = getattr(m, f"layer{i}")(x); yield f"layer{i}", x
    x = torch.flatten(m.avgpool(x), 1); yield "avgpool", x
    yield "fc", m.fc(x)


def vgg_stages(m, x):
    block, conv = 1, 0
    for layer in m.features:
        x = layer(x)
        if isinstance(layer, torch.nn.ReLU):
            conv += 1; yield f"conv{block}_{conv}", x
        elif isinstance(layer, torch.nn.MaxPool2d):
            yield f"pool{block}", x; block += 1; conv = 0
    x = torch.flatten(m.avgpool(x), 1)
    x = F.relu(m.classifier[0](x)); yield "fc6", x
    x = F.relu(m.classifier[3](x)); yield "fc7", x
    yield "fc8", m.classifier[6](x)


def lite_stages(m, x):
    x = m._swish(m._bn0(m._conv_stem(x))); yield "stem", x
    for i, b in enumerate(m._blocks):
        x = b(x); yield f"blocks.{i}", x
    x = m._swish(m._bn1(m._conv_head(x))); yield "head", x
    x = torch.flatten(m._avg_pooling(x), 1); yield "avgpool", x
    yield "fc", m._fc(x)


def mobilenet_v2_stages(m, x):
    # torchvision's forward: features, adaptive_avg_pool2d(1), flatten, classifier (Dropout, Linear).
    for i, layer in enumerate(m.features):
        x = layer(x); yield f"features.{i}", x
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1); yield "avgpool", x
    yield "classifier", m.classifier(x)


def build(name):
    if name.startswith("resnet"):
        return getattr(torchvision.models, name)(), resnet_stages
    if name.startswith("vgg"):
        return getattr(torchvision.models, name)(), vgg_stages
    if name == "mobilenet_v2":
        return torchvision.models.mobilenet_v2(), mobilenet_v2_stages
    from efficientnet_lite_pytorch import EfficientNet
    return EfficientNet.from_name(name, image_size=None), lite_stages


def run(name, batch, size):
    model, stages = build(name)
    model.eval(); apply_synthetic(model)
    x = torch.from_numpy(synthetic_input("input", (batch, 3, size, size)))
    meta, chunks, offset = [], [], 0
    with torch.no_grad():
        outs = list(stages(model, x))
    last_map = [n for n, t in outs if t.dim() == 4][-1]
    extra = []
    for n, t in outs:
        if n == last_map:
            extra += [(n + "@avg", t.mean(dim=(2, 3))), (n + "@max", t.amax(dim=(2, 3)))]
    for n, t in outs + extra:
        flat = t.detach().numpy().astype(np.float32).ravel()
        idx = sample_indices(f"{name}.{n}", flat.size)
        chunks.append(flat[idx])
        meta.append({"name": n, "shape": list(t.shape), "maxabs": float(np.abs(flat).max()),
                     "offset": offset, "count": int(idx.size)})
        offset += idx.size
    base = os.path.join(OUT, f"{name}_{size}")
    np.save(base + ".npy", np.concatenate(chunks).astype(np.float32))
    with open(base + ".json", "w") as f:
        json.dump({"model": name, "batch": batch, "height": size, "width": size, "input": "input",
                   "stages": meta}, f, indent=1)
    print(f"{name} {size}: {len(meta)} outputs, maxabs " + " ".join(f"{m['name']}={m['maxabs']:.3g}" for m in meta[-4:]))


if __name__ == "__main__":
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    only = set(sys.argv[1:])
    for name, batch, size in CASES:
        if not only or name in only:
            run(name, batch, size)
