"""Per-family fine-tuning references: loss, input and parameter gradients, and 3 SGD steps of the trainable
top of ResNet-18, VGG-11 and EfficientNet-Lite0 with deterministic synthetic weights, computed with PyTorch.

Rerun (from the repository root):
    /opt/refvenv/bin/python Tests/Reference/training/make_family_grads.py [resnet18 vgg11 efficientnet-lite0]

Writes Tests/BottleneckTrainingTests/Fixtures/family_<name>.{json,input,labels,loss,dinput,grads,after3,losses}.npy
(the .json is the index). FAMILY_FIXTURES.md in this folder describes every file; in short:

- weights: the full torchvision / efficientnet_lite_pytorch model filled by ../models/synthetic.py
  (`apply_synthetic`, identical to Swift's `SyntheticWeights`: SplitMix64 seeded with FNV-1a of the state-dict
  key); the new head `head.weight` [classes, features] (kind weight) and `head.bias` (kind bias) by the same fill.
- the whole model in eval mode: BatchNorm uses its running statistics (gamma and beta trainable), dropout and
  drop-connect are off.
- input: synthetic_input("family.<name>.input", prefix output shape, scale) (scale 0.5, VGG 0.1), NCHW;
  labels: SplitMix64 seeded with FNV-1a("family.<name>.labels"), outputs 1..N modulo `classes`.
- loss: mean softmax cross-entropy of the head's logits.
- large tensors are sampled: a parameter (or its gradient) with n elements keeps the values at
  synthetic.sample_indices(key, n, SAMPLE) (all of them, in order, when n <= SAMPLE).
- SGD: torch.optim.SGD(lr 0.01, momentum 0.9, weight decay 1e-4 on every trainable parameter), three steps
  on the same batch.
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from synthetic import apply_synthetic, fill, fnv1a64, sample_indices, splitmix, synthetic_input  # noqa: E402

OUT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "BottleneckTrainingTests", "Fixtures"))
SAMPLE = 1024  # values kept per large tensor: enough for a 1e-4 parity check, keeps each family < 300 KB
CLASSES = 3
BATCH = 2
LR, MOMENTUM, WEIGHT_DECAY, STEPS = 0.01, 0.9, 1e-4, 3


class ResNet18Top(nn.Module):
    """layer3 + layer4 + global average pool + head; input = layer2's output [N, 128, H, W]."""
    stages = ["layer3", "layer4", "avgpool", "head"]
    prefix_stage = "layer2"

    def __init__(self, m):
        super().__init__()
        self.modules_by_key = {"layer3": m.layer3, "layer4": m.layer4}
        self.m = m

    def forward(self, x):
        x = self.m.layer4(self.m.layer3(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class VGG11Top(nn.Module):
    """conv5_1 + conv5_2 + pool5 (features.16..20) + fc6 (adaptive avg pool 7x7, classifier.0, ReLU) + fc7
    (classifier.3, ReLU) + head; input = pool4's output [N, 512, H, W]. Dropout (classifier.2/.5) is off."""
    stages = ["conv5_1", "conv5_2", "pool5", "fc6", "fc7", "head"]
    prefix_stage = "pool4"

    def __init__(self, m):
        super().__init__()
        self.modules_by_key = {"features.16": m.features[16], "features.18": m.features[18],
                               "classifier.0": m.classifier[0], "classifier.3": m.classifier[3]}
        self.m = m

    def forward(self, x):
        for i in range(16, 21):
            x = self.m.features[i](x)
        x = torch.flatten(self.m.avgpool(x), 1)
        x = F.relu(self.m.classifier[0](x))
        return F.relu(self.m.classifier[3](x))


class Lite0Top(nn.Module):
    """blocks.14 (MBConv6 5x5/1 192->192 + skip) + blocks.15 (MBConv6 3x3/1 192->320) + head stage (_conv_head
    + _bn1 + ReLU6) + global average pool + head; input = blocks.13's output [N, 192, H, W]. TF-SAME padding
    from the actual input size (image_size=None)."""
    stages = ["blocks.14", "blocks.15", "head", "avgpool", "head(new)"]
    prefix_stage = "blocks.13"

    def __init__(self, m):
        super().__init__()
        self.modules_by_key = {"_blocks.14": m._blocks[14], "_blocks.15": m._blocks[15],
                               "_conv_head": m._conv_head, "_bn1": m._bn1}
        self.m = m

    def forward(self, x):
        x = self.m._blocks[15](self.m._blocks[14](x))
        x = self.m._swish(self.m._bn1(self.m._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def build(name):
    """(model, top class, input shape NCHW, input scale). Spatial sizes are the smallest that keep every 3x3
    tap of every convolution in use (ResNet 6 -> 3 -> 2, VGG 4 -> 2 -> adaptive 7x7, Lite0 4x4 with 5x5 SAME).
    The input scale keeps the three lr-0.01 steps in the stable regime (loss decreasing smoothly, no saturated
    softmax), so float32 rounding differences are not amplified by overshooting steps."""
    if name == "resnet18":
        return torchvision.models.resnet18(), ResNet18Top, (BATCH, 128, 6, 6), 0.5
    if name == "vgg11":
        return torchvision.models.vgg11(), VGG11Top, (BATCH, 512, 4, 4), 0.1
    if name == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet
        return EfficientNet.from_name(name, image_size=None), Lite0Top, (BATCH, 192, 4, 4), 0.5
    raise SystemExit(f"unknown family {name} (resnet18, vgg11, efficientnet-lite0)")


def trainable(top, head):
    """(key, parameter) of the top in forward order (the modules' own parameter order), then the head."""
    out = []
    for prefix, module in top.modules_by_key.items():
        out += [(f"{prefix}.{k}", p) for k, p in module.named_parameters()]
    return out + [("head.weight", head.weight), ("head.bias", head.bias)]


def save(base, suffix, arr):
    np.save(f"{base}.{suffix}.npy", np.ascontiguousarray(np.asarray(arr, dtype=np.float32)))


def run(name):
    model, top_class, shape, scale = build(name)
    model.eval()
    apply_synthetic(model)
    for p in model.parameters():
        p.requires_grad_(False)
    top = top_class(model)
    features = top(torch.zeros((1,) + shape[1:])).shape[1]
    head = nn.Linear(features, CLASSES)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(fill("head.weight", "weight", (CLASSES, features))))
        head.bias.copy_(torch.from_numpy(fill("head.bias", "bias", (CLASSES,))))
    params = trainable(top, head)
    for _, p in params:
        p.requires_grad_(True)
    samples = {k: sample_indices(k, p.numel(), SAMPLE) for k, p in params}

    x = torch.from_numpy(synthetic_input(f"family.{name}.input", shape, scale)).requires_grad_(True)
    labels = torch.from_numpy((splitmix(fnv1a64(f"family.{name}.labels"), BATCH) % np.uint64(CLASSES)).astype(np.int64))
    loss = F.cross_entropy(head(top(x)), labels)
    loss.backward()

    def sampled(values):
        return np.concatenate([values(p).detach().numpy().ravel()[samples[k]] for k, p in params])

    base = os.path.join(OUT, f"family_{name}")
    save(base, "input", x.detach().numpy())
    save(base, "labels", labels.numpy())
    save(base, "loss", [loss.item()])
    save(base, "dinput", x.grad.numpy())
    save(base, "grads", sampled(lambda p: p.grad))

    opt = torch.optim.SGD([p for _, p in params], lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    losses = []
    xs = x.detach()
    for _ in range(STEPS):
        opt.zero_grad()
        step_loss = F.cross_entropy(head(top(xs)), labels)
        step_loss.backward()
        opt.step()
        losses.append(step_loss.item())
    save(base, "after3", sampled(lambda p: p))
    save(base, "losses", losses)

    index, offset = [], 0
    for k, p in params:
        count = int(samples[k].size)
        index.append({"key": k, "shape": list(p.shape), "offset": offset, "count": count,
                      "sampled": bool(p.numel() > SAMPLE)})
        offset += count
    meta = {"model": name, "prefix_stage": top_class.prefix_stage, "trainable_stages": top_class.stages,
            "layout": "NCHW (PyTorch); parameters in state-dict layout (conv OIHW, linear [out, in])",
            "input_shape": list(shape), "classes": CLASSES, "features": features, "sample": SAMPLE,
            "sample_rule": "synthetic.sample_indices(key, n, sample) = SyntheticFill.sampleIndices(name: key, count: n, k: sample)",
            "input_name": f"family.{name}.input", "input_scale": scale, "labels_name": f"family.{name}.labels",
            "sgd": {"lr": LR, "momentum": MOMENTUM, "weight_decay": WEIGHT_DECAY, "nesterov": False, "steps": STEPS,
                    "same_batch_every_step": True},
            "mode": "eval (BatchNorm running statistics, no dropout / drop-connect)",
            "total": offset, "parameters": index}
    with open(base + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT) if f.startswith(f"family_{name}."))
    print(f"{name}: loss {loss.item():.6f}, losses {[round(v, 6) for v in losses]}, {len(params)} tensors, "
          f"{offset} sampled values, {size / 1024:.0f} KB", file=sys.stderr)


if __name__ == "__main__":
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    for family in sys.argv[1:] or ["resnet18", "vgg11", "efficientnet-lite0"]:
        run(family)
